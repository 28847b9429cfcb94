//! What the fuzz targets share: the fixture key set and IdP answers (made by
//! `cargo test --lib write_fuzz_seeds -- --ignored` in the root crate), a fixed clock at which
//! the seed tokens are valid, and a byte reader for targets that decode a program.

use std::sync::OnceLock;

use oidcgate::config::Config;
use oidcgate::jwks::KeySet;

pub const ISSUER: &str = "http://127.0.0.1:9000/oauth2/default";
/// Seed tokens are issued at 1 799 999 000 s and expire at 4 000 000 000 s.
pub const NOW_S: u64 = 1_800_000_000;

pub const JWKS: &str = include_str!("../fixtures/jwks.json");
pub const DISCOVERY: &str = include_str!("../fixtures/discovery.json");
pub const TOKEN_RESPONSE: &str = include_str!("../fixtures/token_response.json");

/// rsa-1 (RS256), rsa-2 (no `alg`: every RSA algorithm), ec-1 (ES256), ed-1 (EdDSA).
pub fn fixture_keys() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| KeySet::parse(JWKS.as_bytes()).expect("fixtures/jwks.json"))
}

/// A configuration that uses every policy check and claim-header path.
pub fn strict_config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let json = format!(
            r#"{{"issuer":"{ISSUER}",
                "audience_required":["api://default"],
                "clients_allowed":["svc","demo-client"],
                "scopes_required":["read"],
                "issuers_allowed":["{ISSUER}","https://other.example.com"],
                "upstream_headers_claims":["iss","scp","realm.roles","exp","admin","https://example.com/roles"],
                "upstream_headers_names":["Issuer_Header","X-Scopes","X-Roles","X-Exp","X-Admin","X-Uri"],
                "leeway":5}}"#
        );
        Config::parse(json.as_bytes()).expect("strict fuzz config")
    })
}

/// Reads a fuzz input as a little program; past the end every read yields zeros / empty.
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// A length-prefixed (u16) slice, cut short at the end of the input.
    pub fn bytes(&mut self) -> &'a [u8] {
        let n = usize::from(self.u16()).min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    pub fn string(&mut self) -> String {
        String::from_utf8_lossy(self.bytes()).into_owned()
    }
}

/// The other shape of configuration: no token cache, secrets posted in the form, the token
/// forwarded in its own header, key-set refetches allowed every second.
pub fn loose_config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let json = format!(
            r#"{{"issuer":"{ISSUER}/",
                "cache_tokens":false,
                "token_endpoint_auth_method":"client_secret_post",
                "upstream_access_token_header":"x-access-token",
                "scopes":["read","write"],
                "rediscovery_lifetime":1,
                "cache_ttl_neg":1,
                "timeout":500}}"#
        );
        Config::parse(json.as_bytes()).expect("loose fuzz config")
    })
}

/// The fixture keys, each without `alg` and under `kid` (or none): a token that verifies
/// against this set was signed by one of the fixture keys, whatever key set the gate held.
pub fn any_fixture_key(kid: Option<&str>) -> std::rc::Rc<KeySet> {
    thread_local! {
        static SETS: std::cell::RefCell<Vec<(Option<String>, std::rc::Rc<KeySet>)>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    SETS.with(|sets| {
        let mut sets = sets.borrow_mut();
        if let Some((_, set)) = sets.iter().find(|(k, _)| k.as_deref() == kid) {
            return set.clone();
        }
        let set = std::rc::Rc::new(build_any_fixture_key(kid));
        if sets.len() < 64 {
            sets.push((kid.map(str::to_string), set.clone()));
        }
        set
    })
}

fn build_any_fixture_key(kid: Option<&str>) -> KeySet {
    let mut doc: serde_json::Value = serde_json::from_str(JWKS).expect("fixtures/jwks.json");
    if let Some(keys) = doc["keys"].as_array_mut() {
        for key in keys.iter_mut().filter_map(|k| k.as_object_mut()) {
            key.remove("alg");
            match kid {
                Some(k) => key.insert("kid".into(), k.into()),
                None => key.remove("kid"),
            };
        }
    }
    KeySet::parse(doc.to_string().as_bytes()).expect("fixture keys")
}
