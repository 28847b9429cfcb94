//! `echo-upstream --port 9001`: answers every request with a JSON description of it, until
//! killed. Prints its URL on stdout.

use testkit::echo::Echo;

#[tokio::main]
async fn main() {
    let port = testkit::cli::port_arg("echo-upstream", 9001);
    let echo = Echo::start_on(port).await;
    println!("{}", echo.url(""));
    tokio::signal::ctrl_c().await.expect("wait for Ctrl-C");
}
