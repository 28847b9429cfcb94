//! oidcgate: an OAuth 2.0 / OpenID Connect gate as a proxy-wasm HTTP filter.
//!
//! Everything but `filter` is plain Rust that knows nothing of proxy-wasm and is tested on
//! the native target; `filter` is the thin adapter that moves bytes between the host and
//! [`lifecycle::Lifecycle`].

pub mod body_wait;
pub mod cache;
pub mod claims;
pub mod client_tokens;
pub mod config;
pub mod credentials;
pub mod ecdsa;
pub mod eddsa;
pub mod fetch;
pub mod gate;
pub mod idp;
pub mod introspection;
pub mod jwks;
pub mod lifecycle;
pub mod log_budget;
mod monty;
pub mod outcome;
pub mod policy;
pub mod records;
pub mod rsa;
pub mod store;
pub mod tally;
pub mod upstream;
pub mod url;
pub mod verify;

#[cfg(test)]
mod adversarial_tests;
#[cfg(test)]
mod introspection_tests;
#[cfg(test)]
mod testing;

#[cfg(all(target_arch = "wasm32", feature = "filter"))]
mod filter;
