//! The tokens the run sends: distinct, valid, signed here with the algorithm asked for.

use serde_json::json;
use testkit::idp::access_token_claims;
use testkit::keys::{self, Sig};

/// Tokens outlive the run: entries leave the cache by its bounds, never by expiry, the worst
/// case for memory.
pub const TOKEN_TTL_S: u64 = 4 * 3600;

/// The algorithms the mock IdP publishes a key for by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    EdDsa,
    Es256,
    Rs256,
}

impl Alg {
    pub const ALL: [Alg; 3] = [Alg::EdDsa, Alg::Es256, Alg::Rs256];

    pub fn name(self) -> &'static str {
        match self {
            Alg::EdDsa => "EdDSA",
            Alg::Es256 => "ES256",
            Alg::Rs256 => "RS256",
        }
    }

    pub fn kid(self) -> &'static str {
        match self {
            Alg::EdDsa => "ed-1",
            Alg::Es256 => "ec-1",
            Alg::Rs256 => "rsa-1",
        }
    }
}

/// Mints distinct, valid tokens for one issuer: token `i` carries `first + i` in its `jti`.
#[derive(Clone)]
pub struct Minter {
    pub issuer: String,
    pub alg: Alg,
    pub iat: u64,
    pub first: u64,
}

impl Minter {
    pub fn new(issuer: String, alg: Alg) -> Minter {
        Minter {
            issuer,
            alg,
            iat: keys::now(),
            first: 0,
        }
    }

    pub fn mint(&self, i: u64) -> String {
        let jti = format!("AT.memory-{}", self.first + i);
        let claims = access_token_claims(
            &self.issuer,
            "memory-client",
            &["read"],
            self.iat,
            TOKEN_TTL_S,
            &jti,
        );
        let (alg, kid) = (self.alg.name(), self.alg.kid());
        keys::mint_raw(
            &json!({"alg": alg, "kid": kid}),
            &claims,
            Sig::Key { kid, alg },
        )
    }
}
