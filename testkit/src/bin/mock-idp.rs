//! `mock-idp --port 9000`: the mock Okta-shaped IdP with `demo-client` / `demo-secret`
//! (scopes `read`, `write`; default `read`), `org-client` / `org-secret` (issued opaque
//! tokens, as Okta's org authorization server issues) and the gateway's own client
//! `oidcgate-gateway` / `gateway-secret` (for introspection), until killed. Prints the issuer
//! URL on stdout.

use testkit::idp::MockIdp;

#[tokio::main]
async fn main() {
    let port = testkit::cli::port_arg("mock-idp", 9000);
    let idp = MockIdp::start_on(port).await;
    idp.add_client("org-client", "org-secret", &["read"], &["read"]);
    idp.issue_opaque_to("org-client");
    idp.add_client("oidcgate-gateway", "gateway-secret", &[], &[]);
    // The first stdout line is the issuer alone, for scripts; the rest goes to stderr.
    println!("{}", idp.issuer());
    eprintln!("mock-idp: discovery {}", idp.discovery_url());
    eprintln!("mock-idp: client demo-client / demo-secret, scopes read write (default read)");
    eprintln!("mock-idp: client org-client / org-secret, issued opaque tokens");
    eprintln!("mock-idp: client oidcgate-gateway / gateway-secret, for introspection");
    tokio::signal::ctrl_c().await.expect("wait for Ctrl-C");
}
