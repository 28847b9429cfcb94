//! Times oidcgate's core operations inside the host's wasm runtime and logs one line per
//! operation: `core-bench <name> <ns per op> ns/op <runs> runs`, then `core-bench done`.
//!
//! The plugin configuration is what `core-bench-input` (test kit) prints: a key set, one token
//! per algorithm, the issuer. Every timed operation is first checked to succeed, so a broken
//! build cannot report a fast failure as a fast success.

mod monty32;

use std::hint::black_box;
use std::time::UNIX_EPOCH;

use log::{error, info};
use oidcgate::config::Config;
use oidcgate::credentials::{
    self, basic_header, ClientCredentials, Credential, RequestView, Secret,
};
use oidcgate::fetch::{Look, Resource, Step};
use oidcgate::gate::Gate;
use oidcgate::jwks::KeySet;
use oidcgate::outcome::Verdict;
use oidcgate::store::{Fetched, MemStore, SharedStore};
use oidcgate::verify;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, RootContext};
use proxy_wasm::types::LogLevel;
use serde_json::{json, Value};

/// Each operation runs for about this long (after a tenth of it to warm up).
const BUDGET_NS: u64 = 300_000_000;
const LEEWAY_S: u64 = 60;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Bench) });
}}

struct Bench;

impl Context for Bench {}

impl RootContext for Bench {
    fn on_configure(&mut self, _size: usize) -> bool {
        let input = self.get_plugin_configuration().unwrap_or_default();
        match run(&input) {
            Ok(()) => info!("core-bench done"),
            Err(e) => error!("core-bench failed: {e}"),
        }
        true
    }
}

fn now_ns() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Runs `op` for about BUDGET_NS and logs its mean time.
fn time(name: &str, mut op: impl FnMut()) {
    let warm_until = now_ns() + BUDGET_NS / 10;
    while now_ns() < warm_until {
        op();
    }
    let start = now_ns();
    let mut runs: u64 = 0;
    // The clock is read every 16 runs, so reading it costs little of what is timed.
    while now_ns() - start < BUDGET_NS {
        for _ in 0..16 {
            op();
        }
        runs += 16;
    }
    let ns = (now_ns() - start) / runs;
    info!("core-bench {name} {ns} ns/op {runs} runs");
}

/// Runs the `ops` in turn, eight runs each, for about 4·BUDGET_NS in all, and logs each
/// one's mean: under a varying machine load, their ratios are fairer than those of
/// operations timed one after the other.
fn time_interleaved(ops: &mut [(&str, Box<dyn FnMut() + '_>)]) {
    let mut spent = vec![0u64; ops.len()];
    let mut runs: u64 = 0;
    let start = now_ns();
    while now_ns() - start < 4 * BUDGET_NS {
        for ((_, op), spent) in ops.iter_mut().zip(spent.iter_mut()) {
            let t0 = now_ns();
            for _ in 0..8 {
                op();
            }
            *spent += now_ns() - t0;
        }
        runs += 8;
    }
    for ((name, _), spent) in ops.iter().zip(&spent) {
        info!(
            "core-bench {name} {} ns/op {runs} runs",
            spent / runs.max(1)
        );
    }
}

fn run(input: &[u8]) -> Result<(), String> {
    let input: Value = serde_json::from_slice(input).map_err(|e| format!("input: {e}"))?;
    let issuer = input["issuer"].as_str().ok_or("input: no issuer")?;
    let jwks = input["jwks"].to_string();
    let keys = KeySet::parse(jwks.as_bytes()).map_err(|e| format!("key set: {e}"))?;
    let now_s = now_ns() / 1_000_000_000;

    // Cold path: one signature verification (and claims parse) per run, no cache.
    let tokens = input["tokens"].as_array().ok_or("input: no tokens")?;
    for case in tokens {
        let (Some(alg), Some(token)) = (case["alg"].as_str(), case["token"].as_str()) else {
            return Err("input: a token without alg or token".into());
        };
        verify::verify(token, &keys, now_s, LEEWAY_S).map_err(|e| format!("{alg}: {e:?}"))?;
        time(&format!("verify {alg}"), || {
            black_box(verify::verify(black_box(token), &keys, now_s, LEEWAY_S).is_ok());
        });
    }
    rsa_arithmetic(&input)?;
    verify_parts(&input)?;
    es256(&input, &keys, now_s)?;
    eddsa(&input, &keys, now_s)?;
    time(&format!("parse key set ({} keys)", keys.len()), || {
        black_box(KeySet::parse(black_box(jwks.as_bytes())).is_ok());
    });

    // Hot path: a gate that has the key set and a cached client token, as after warm-up.
    let config = Config::parse(
        json!({"issuer": issuer, "idp_cluster": "idp", "audience_required": [input["audience"]],
               "upstream_headers_claims": ["iss", "sub"],
               "upstream_headers_names": ["Issuer_Header", "X-Subject"]})
        .to_string()
        .as_bytes(),
    )
    .map_err(|e| format!("config: {e}"))?;
    let token = tokens
        .first()
        .and_then(|t| t["token"].as_str())
        .ok_or("input: no tokens")?;
    let mut gate = Gate::new(config.clone());
    let mut store = MemStore::default();
    gate.init_shared(&mut store, now_s * 1000);
    let now_ms = now_s * 1000;
    let answer = |resource: &Resource| {
        match resource {
        Resource::Discovery => json!({"issuer": issuer,
            "jwks_uri": format!("{issuer}/v1/keys"), "token_endpoint": format!("{issuer}/v1/token")})
        .to_string(),
        Resource::Jwks => jwks.clone(),
        Resource::Token(_) => {
            json!({"access_token": token, "expires_in": 3600, "token_type": "Bearer"}).to_string()
        }
        Resource::Introspection(_) => json!({"active": false}).to_string(),
    }
    };
    let bearer = Credential::Bearer(token.into());
    let client = Credential::Client(ClientCredentials {
        id: "demo-client".into(),
        secret: Secret::new("demo-secret"),
    });
    for credential in [&bearer, &client] {
        let mut allowed = false;
        for round in 0..8 {
            let look = if round == 0 {
                Look::first(now_ms)
            } else {
                Look::again(now_ms)
            };
            match gate.authenticate(&mut store, credential, 0, look, now_ms) {
                Step::Fetch(f) => {
                    let body = answer(&f.resource);
                    gate.on_answer(&mut store, &f.resource, Some(200), body.as_bytes(), now_ms);
                }
                Step::Done(Verdict::Allow(_)) => {
                    allowed = true;
                    break;
                }
                other => return Err(format!("warm-up: {other:?}")),
            }
        }
        if !allowed {
            return Err("warm-up: no decision".into());
        }
    }
    // What a cache miss reads before verifying: the shared key-set record.
    let record_key = gate.layout().jwks();
    let record = store
        .get(&record_key)
        .ok_or("no key-set record in the store")?
        .0;
    serde_json::from_slice::<Fetched<String>>(&record).map_err(|e| format!("record: {e}"))?;
    time(
        &format!("read shared key-set record ({} bytes)", record.len()),
        || {
            black_box(serde_json::from_slice::<Fetched<String>>(black_box(&record)).is_ok());
        },
    );
    time("decide bearer, cached", || {
        black_box(gate.authenticate(&mut store, &bearer, 0, Look::first(now_ms), now_ms));
    });
    time("decide client credentials, cached", || {
        black_box(gate.authenticate(&mut store, &client, 0, Look::first(now_ms), now_ms));
    });

    let basic = basic_header("demo-client", "demo-secret");
    let bearer_header = format!("Bearer {token}");
    for (name, header) in [
        ("extract Basic", &basic),
        ("extract Bearer", &bearer_header),
    ] {
        let view = RequestView {
            authorization: Some(header),
            path: "/",
            content_type: None,
        };
        time(name, || {
            black_box(
                credentials::extract(&config, &config.policy, &view, None)
                    .credential
                    .is_ok(),
            );
        });
    }
    Ok(())
}

/// s^65537 mod n alone on the RS256 token's signature and key: `rsa.rs` (src/monty.rs) and,
/// interleaved with it, the arithmetic it used before: 32-bit limbs (`monty32.rs`, until
/// 2026-12-02) and crypto-bigint's `BoxedMontyForm` (until 2026-12-01).
fn rsa_arithmetic(input: &Value) -> Result<(), String> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
    use crypto_bigint::{BoxedUint, Odd};

    let (Some("RS256"), Some(token), Some(n)) = (
        input["tokens"][0]["alg"].as_str(),
        input["tokens"][0]["token"].as_str(),
        input["jwks"]["keys"][0]["n"].as_str(),
    ) else {
        return Err("input: the first token is not RS256 with the first key".into());
    };
    let decode = |b64: &str| URL_SAFE_NO_PAD.decode(b64).map_err(|e| e.to_string());
    let n = decode(n)?;
    let sig = decode(token.rsplit('.').next().unwrap_or_default())?;
    let key = oidcgate::rsa::PublicKey::new(&n, &[1, 0, 1]).ok_or("rsa: key refused")?;
    let bits = u32::try_from(n.len() * 8)
        .map_err(|e| e.to_string())?
        .next_multiple_of(64);
    let modulus = BoxedUint::from_be_slice(&n, bits).map_err(|e| format!("{e:?}"))?;
    let odd: Option<Odd<BoxedUint>> = Odd::new(modulus).into();
    let params = BoxedMontyParams::new_vartime(odd.ok_or("even modulus")?);
    let before = |s: &[u8]| -> Option<Vec<u8>> {
        let x = BoxedUint::from_be_slice(s, bits).ok()?;
        let base = BoxedMontyForm::new(x, &params);
        let mut m = base.clone();
        for _ in 0..16 {
            m = m.square();
        }
        let m = m.mul(&base).retrieve().to_be_bytes();
        m.get(m.len() - n.len()..).map(<[u8]>::to_vec)
    };
    let ours = key.raw_open(&sig).ok_or("rsa.rs: no result")?;
    if before(&sig).as_ref() != Some(&ours) {
        return Err("rsa.rs and crypto-bigint disagree".into());
    }
    let before_32 = monty32::Modulus::new(&n).ok_or("monty32: key refused")?;
    if before_32.pow_65537(&sig, n.len()).as_ref() != Some(&ours) {
        return Err("rsa.rs and the 32-bit limbs disagree".into());
    }
    let mut ops: Vec<(&str, Box<dyn FnMut() + '_>)> = vec![
        (
            "rsa2048 s^65537, 32-bit limbs (until 2026-12-02)",
            Box::new(|| {
                black_box(before_32.pow_65537(black_box(&sig), n.len()));
            }),
        ),
        (
            "rsa2048 s^65537, rsa.rs",
            Box::new(|| {
                black_box(key.raw_open(black_box(&sig)));
            }),
        ),
        (
            "rsa2048 s^65537, crypto-bigint BoxedMontyForm (before)",
            Box::new(|| {
                black_box(before(black_box(&sig)));
            }),
        ),
    ];
    time_interleaved(&mut ops);
    Ok(())
}

/// The RS256 verification's parts besides s^65537, one at a time: where the rest of a cold
/// request's verification goes.
fn verify_parts(input: &Value) -> Result<(), String> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jwt_simple::prelude::Token;

    let token = input["tokens"][0]["token"]
        .as_str()
        .ok_or("input: no first token")?;
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err("input: the first token is not a JWS".into());
    };
    let signed = &token[..header.len() + 1 + payload.len()];
    time("RS256 part: jwt-simple decode_metadata (header)", || {
        black_box(Token::decode_metadata(black_box(token)).is_ok());
    });
    time(
        &format!(
            "RS256 part: SHA-256 of the signing input ({} bytes)",
            signed.len()
        ),
        || {
            black_box(hmac_sha256::Hash::hash(black_box(signed.as_bytes())));
        },
    );
    time("RS256 part: base64 of the signature", || {
        black_box(URL_SAFE_NO_PAD.decode(black_box(signature)).is_ok());
    });
    time(
        &format!(
            "RS256 part: base64 and JSON of the claims ({} bytes)",
            payload.len()
        ),
        || {
            let bytes = URL_SAFE_NO_PAD
                .decode(black_box(payload))
                .unwrap_or_default();
            black_box(serde_json::from_slice::<serde_json::Map<String, Value>>(&bytes).is_ok());
        },
    );
    Ok(())
}

/// The ES256 token, interleaved: the whole verification (jwt-simple's `verify_token` as the
/// filter called it before `ecdsa.rs`, and `verify::verify` now), then the signature alone
/// (`p256`'s `VerifyingKey::verify`, `ecdsa.rs`). Then a new key's first verification, which
/// makes its table of multiples.
fn es256(input: &Value, keys: &KeySet, now_s: u64) -> Result<(), String> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jwt_simple::prelude::*;
    use p256::ecdsa::signature::Verifier as _;

    let token = input["tokens"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["alg"] == "ES256"))
        .and_then(|t| t["token"].as_str())
        .ok_or("input: no ES256 token")?;
    let jwk = input["jwks"]["keys"]
        .as_array()
        .and_then(|k| k.iter().find(|k| k["alg"] == "ES256"))
        .ok_or("input: no ES256 key")?;
    let decode = |v: &Value| {
        URL_SAFE_NO_PAD
            .decode(v.as_str().unwrap_or_default())
            .map_err(|e| e.to_string())
    };
    let (x, y) = (decode(&jwk["x"])?, decode(&jwk["y"])?);
    let point = [&[4u8][..], &x, &y].concat();
    let library = ES256PublicKey::from_bytes(&point).map_err(|e| e.to_string())?;
    let reference =
        p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(|e| e.to_string())?;
    let ours = oidcgate::ecdsa::PublicKey::new(&x, &y).ok_or("ecdsa.rs: key refused")?;
    let (signed, sig) = token.rsplit_once('.').ok_or("ES256: no signature")?;
    let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|e| e.to_string())?;
    let signature = p256::ecdsa::Signature::from_slice(&sig).map_err(|e| e.to_string())?;
    let options = || VerificationOptions {
        artificial_time: Some(UnixTimeStamp::from_secs(now_s)),
        time_tolerance: Some(Duration::from_secs(LEEWAY_S)),
        ..VerificationOptions::default()
    };
    library
        .verify_token::<NoCustomClaims>(token, Some(options()))
        .map_err(|e| format!("jwt-simple ES256: {e}"))?;
    verify::verify(token, keys, now_s, LEEWAY_S).map_err(|e| format!("ES256: {e:?}"))?;
    reference
        .verify(signed.as_bytes(), &signature)
        .map_err(|e| format!("p256: {e}"))?;
    if !ours.verify(signed.as_bytes(), &sig) {
        return Err("ecdsa.rs: signature refused".into());
    }
    let mut ops: Vec<(&str, Box<dyn FnMut() + '_>)> = vec![
        (
            "ES256 token, jwt-simple verify_token (before)",
            Box::new(|| {
                black_box(
                    library
                        .verify_token::<NoCustomClaims>(black_box(token), Some(options()))
                        .is_ok(),
                );
            }),
        ),
        (
            "ES256 token, verify::verify",
            Box::new(|| {
                black_box(verify::verify(black_box(token), keys, now_s, LEEWAY_S).is_ok());
            }),
        ),
        (
            "ES256 signature, p256 VerifyingKey::verify (before)",
            Box::new(|| {
                black_box(
                    reference
                        .verify(black_box(signed.as_bytes()), &signature)
                        .is_ok(),
                );
            }),
        ),
        (
            "ES256 signature, ecdsa.rs",
            Box::new(|| {
                black_box(ours.verify(black_box(signed.as_bytes()), &sig));
            }),
        ),
    ];
    time_interleaved(&mut ops);
    time(
        "ES256 new key and its first verification (makes its table)",
        || {
            let key = oidcgate::ecdsa::PublicKey::new(black_box(&x), &y);
            black_box(key.is_some_and(|k| k.verify(signed.as_bytes(), &sig)));
        },
    );
    Ok(())
}

/// The EdDSA token, interleaved: the whole verification (jwt-simple's `verify_token` as the
/// filter called it before `eddsa.rs`, and `verify::verify` now), then the signature alone
/// (`ed25519-compact`'s `PublicKey::verify`; `eddsa.rs` as a key verifies until it has its
/// table, on `curve25519-dalek`'s variable-base `vartime_double_scalar_mul_basepoint`; `eddsa.rs`
/// with the table).
/// Then a new key's first verification (no table), and its first 32, the last of which makes
/// its table.
fn eddsa(input: &Value, keys: &KeySet, now_s: u64) -> Result<(), String> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jwt_simple::prelude::*;

    let token = input["tokens"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["alg"] == "EdDSA"))
        .and_then(|t| t["token"].as_str())
        .ok_or("input: no EdDSA token")?;
    let jwk = input["jwks"]["keys"]
        .as_array()
        .and_then(|k| k.iter().find(|k| k["crv"] == "Ed25519"))
        .ok_or("input: no Ed25519 key")?;
    let x = URL_SAFE_NO_PAD
        .decode(jwk["x"].as_str().unwrap_or_default())
        .map_err(|e| e.to_string())?;
    let library = Ed25519PublicKey::from_bytes(&x).map_err(|e| e.to_string())?;
    let reference = ed25519_compact::PublicKey::from_slice(&x).map_err(|e| e.to_string())?;
    let ours = oidcgate::eddsa::PublicKey::new(&x).ok_or("eddsa.rs: key refused")?;
    let (signed, sig) = token.rsplit_once('.').ok_or("EdDSA: no signature")?;
    let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|e| e.to_string())?;
    let signature = ed25519_compact::Signature::from_slice(&sig).map_err(|e| e.to_string())?;
    let options = || VerificationOptions {
        artificial_time: Some(UnixTimeStamp::from_secs(now_s)),
        time_tolerance: Some(Duration::from_secs(LEEWAY_S)),
        ..VerificationOptions::default()
    };
    library
        .verify_token::<NoCustomClaims>(token, Some(options()))
        .map_err(|e| format!("jwt-simple EdDSA: {e}"))?;
    verify::verify(token, keys, now_s, LEEWAY_S).map_err(|e| format!("EdDSA: {e:?}"))?;
    reference
        .verify(signed.as_bytes(), &signature)
        .map_err(|e| format!("ed25519-compact: {e}"))?;
    if !ours.verify_without_table(signed.as_bytes(), &sig) {
        return Err("eddsa.rs without its table: signature refused".into());
    }
    // Its table made (at the 32nd verification) before anything is timed.
    for _ in 0..32 {
        if !ours.verify(signed.as_bytes(), &sig) {
            return Err("eddsa.rs: signature refused".into());
        }
    }
    let mut ops: Vec<(&str, Box<dyn FnMut() + '_>)> = vec![
        (
            "EdDSA token, jwt-simple verify_token (before)",
            Box::new(|| {
                black_box(
                    library
                        .verify_token::<NoCustomClaims>(black_box(token), Some(options()))
                        .is_ok(),
                );
            }),
        ),
        (
            "EdDSA token, verify::verify",
            Box::new(|| {
                black_box(verify::verify(black_box(token), keys, now_s, LEEWAY_S).is_ok());
            }),
        ),
        (
            "EdDSA signature, ed25519-compact PublicKey::verify (before)",
            Box::new(|| {
                black_box(
                    reference
                        .verify(black_box(signed.as_bytes()), &signature)
                        .is_ok(),
                );
            }),
        ),
        (
            "EdDSA signature, curve25519-dalek vartime_double_scalar_mul_basepoint (no table)",
            Box::new(|| {
                black_box(ours.verify_without_table(black_box(signed.as_bytes()), &sig));
            }),
        ),
        (
            "EdDSA signature, eddsa.rs (with its table)",
            Box::new(|| {
                black_box(ours.verify(black_box(signed.as_bytes()), &sig));
            }),
        ),
    ];
    time_interleaved(&mut ops);
    time(
        "EdDSA new key and its first verification (no table)",
        || {
            let key = oidcgate::eddsa::PublicKey::new(black_box(&x));
            black_box(key.is_some_and(|k| k.verify(signed.as_bytes(), &sig)));
        },
    );
    time(
        "EdDSA new key and its first 32 verifications (the 32nd makes its table)",
        || {
            let key = oidcgate::eddsa::PublicKey::new(black_box(&x));
            black_box(key.is_some_and(|k| (0..32).all(|_| k.verify(signed.as_bytes(), &sig))));
        },
    );
    Ok(())
}
