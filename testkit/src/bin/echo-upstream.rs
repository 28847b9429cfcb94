//! `echo-upstream --port 9001`: answers every request with a JSON description of it, header
//! names also as they came on the wire (`raw_header_names`: the demo shows `Issuer_Header`'s
//! case), until killed. Prints its URL on stdout.

use testkit::echo::Echo;

#[tokio::main]
async fn main() {
    let port = testkit::cli::port_arg("echo-upstream", 9001);
    let echo = Echo::start_raw_on(port).await;
    println!("{}", echo.url(""));
    tokio::signal::ctrl_c().await.expect("wait for Ctrl-C");
}
