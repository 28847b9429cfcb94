//! `mock-idp --port 9000`: the mock Okta-shaped IdP with `demo-client` / `demo-secret`
//! (scopes `read`, `write`; default `read`), until killed. Prints the issuer URL on stdout.

use testkit::idp::MockIdp;

#[tokio::main]
async fn main() {
    let port = testkit::cli::port_arg("mock-idp", 9000);
    let idp = MockIdp::start_on(port).await;
    // The first stdout line is the issuer alone, for scripts; the rest goes to stderr.
    println!("{}", idp.issuer());
    eprintln!("mock-idp: discovery {}", idp.discovery_url());
    eprintln!("mock-idp: client demo-client / demo-secret, scopes read write (default read)");
    tokio::signal::ctrl_c().await.expect("wait for Ctrl-C");
}
