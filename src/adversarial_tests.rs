//! Adversarial tokens (RFC 8725, OWASP JWT cheat sheet) through [`Gate::authenticate`]: every
//! one is refused with `invalid_token`, and none makes the filter fetch keys from anywhere but
//! the configured JWKS.
//!
//! Tokens are assembled by hand from raw header and payload bytes (`testkit::keys`), so each
//! case is exactly the bytes an attacker would send.

use jwt_simple::prelude::*;
use serde_json::{json, Value};
use testkit::keys::{self, b64url, jws, Sig};

use crate::outcome::{ClaimRule, Denial, TokenProblem, Verdict};
use crate::testing::{bearer, claims, World, ISSUER, JWKS_URL, NOW_S, T0};
use crate::verify::MAX_TOKEN_BYTES;

struct Harness {
    w: World,
}

impl Harness {
    /// A gate with the key set of `rsa-1`, `ec-1` and `ed-1` in place before the attacks.
    fn new() -> Harness {
        let mut w = World::new(
            r#","audience_required":["api://default"],"clients_allowed":["svc"],
                "upstream_headers_claims":["iss","cid"],"upstream_headers_names":["Issuer_Header","X-Client"]"#,
        );
        w.idp.keys = vec!["rsa-1", "ec-1", "ed-1"];
        let mut h = Harness { w };
        assert!(matches!(h.run(&good(), T0), Verdict::Allow(_)));
        h
    }

    fn run(&mut self, token: &str, now_ms: u64) -> Verdict {
        self.w.run(&bearer(token), now_ms)
    }

    /// Asserts `token` is refused as an invalid token (optionally for this exact reason).
    #[track_caller]
    fn refused(&mut self, name: &str, token: &str, why: Option<TokenProblem>) {
        let verdict = self.run(token, T0);
        match (&verdict, why) {
            (Verdict::Deny(Denial::InvalidToken(got)), Some(want)) => {
                assert_eq!(*got, want, "{name}")
            }
            (Verdict::Deny(Denial::InvalidToken(_)), None) => {}
            _ => panic!("{name}: expected invalid_token, got {verdict:?}"),
        }
    }
}

/// A token signed by fixture key `kid` with `alg`, with exactly this header.
fn signed(header: Value, claims: &Value, kid: &str, alg: &str) -> String {
    keys::mint_raw(&header, claims, Sig::Key { kid, alg })
}

/// A token signed by fixture key `kid` over raw header and payload bytes.
fn signed_raw(header: &str, payload: &str, kid: &str, alg: &str) -> String {
    jws(header.as_bytes(), payload.as_bytes(), Sig::Key { kid, alg })
}

/// What the IdP issues: RS256 by `rsa-1`.
fn good() -> String {
    signed(
        json!({"alg":"RS256","kid":"rsa-1","typ":"JWT"}),
        &claims(json!({})),
        "rsa-1",
        "RS256",
    )
}

fn rsa1_public() -> RS256PublicKey {
    let jwk = keys::jwk("rsa-1");
    let field = |name: &str| {
        base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            jwk[name].as_str().unwrap(),
        )
        .unwrap()
    };
    RS256PublicKey::from_components(&field("n"), &field("e")).unwrap()
}

#[test]
fn the_harness_allows_a_good_token() {
    let mut h = Harness::new();
    let step = h.run(&good(), T0 + 1);
    assert!(matches!(step, Verdict::Allow(_)), "{step:?}");
    h.w.idp.only_configured_urls();
}

#[test]
fn alg_none_in_any_casing() {
    let mut h = Harness::new();
    let good = good();
    let (_, rest) = good.split_once('.').unwrap();
    let payload = rest.split('.').next().unwrap();
    for alg in ["none", "None", "NONE", "nOnE", ""] {
        let header = b64url(json!({"alg": alg, "typ": "JWT"}).to_string());
        // Unsigned, and with the real signature kept.
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}"),
            format!("{header}.{}", rest),
        ] {
            h.refused(alg, &token, Some(TokenProblem::DisallowedAlgorithm));
        }
        let with_kid = b64url(json!({"alg": alg, "kid": "rsa-1"}).to_string());
        h.refused(
            alg,
            &format!("{with_kid}.{payload}."),
            Some(TokenProblem::DisallowedAlgorithm),
        );
    }
    // No alg at all: not a JWS header.
    let header = b64url(json!({"kid": "rsa-1"}).to_string());
    h.refused("no alg", &format!("{header}.{payload}."), None);
}

#[test]
fn hmac_signed_with_the_rsa_public_key() {
    let mut h = Harness::new();
    let public = rsa1_public();
    let pem = public.to_pem().unwrap();
    let der = public.to_der().unwrap();
    let n = public.to_components().n;
    let secrets: [(&str, &[u8]); 3] = [("PEM", pem.as_bytes()), ("DER", &der), ("n", &n)];
    let typed: JWTClaims<serde_json::Map<String, Value>> =
        serde_json::from_value(claims(json!({}))).unwrap();
    // One arm per HMAC key type: they share no constructor trait.
    macro_rules! mac {
        ($key:ty, $secret:expr, $kid:expr) => {{
            let key = <$key>::from_bytes($secret);
            let key = match $kid {
                Some(k) => key.with_key_id(k),
                None => key,
            };
            key.authenticate(typed.clone()).unwrap()
        }};
    }
    for (what, secret) in secrets {
        for kid in [Some("rsa-1"), None] {
            for (alg, token) in [
                ("HS256", mac!(HS256Key, secret, kid)),
                ("HS384", mac!(HS384Key, secret, kid)),
                ("HS512", mac!(HS512Key, secret, kid)),
            ] {
                h.refused(
                    &format!("{alg} keyed with the {what} (kid {kid:?})"),
                    &token,
                    Some(TokenProblem::DisallowedAlgorithm),
                );
            }
        }
    }
}

#[test]
fn kid_tricks_are_unknown_keys_and_fetch_only_the_configured_jwks() {
    let mut h = Harness::new();
    let long = "k".repeat(4000);
    let tricks = [
        "../../etc/passwd",
        "/dev/null",
        "http://evil/jwks",
        "https://evil.example.com/.well-known/jwks.json",
        "' OR 1=1 --",
        "rsa-1' --",
        "rsa-1\u{0}",
        "RSA-1",
        " rsa-1",
        "",
        long.as_str(),
    ];
    // Late enough that an unknown kid may trigger one refetch of the key set.
    let later = T0 + 120_000;
    for kid in tricks {
        let token = signed(
            json!({"alg":"RS256","kid":kid}),
            &claims(json!({})),
            "rsa-1",
            "RS256",
        );
        let step = h.run(&token, later);
        assert_eq!(
            step,
            Verdict::Deny(Denial::InvalidToken(TokenProblem::UnknownKey)),
            "kid {:.40}",
            kid
        );
    }
    // Far too long a header is refused unparsed.
    let huge = "k".repeat(9000);
    let token = signed(
        json!({"alg":"RS256","kid":huge}),
        &claims(json!({})),
        "rsa-1",
        "RS256",
    );
    h.refused("kid over the header limit", &token, None);
    // A kid that is not a string.
    for kid in [
        json!(1),
        json!(["rsa-1"]),
        json!({"$ne": null}),
        json!(null),
    ] {
        let token = signed(
            json!({"alg":"RS256","kid":kid}),
            &claims(json!({})),
            "rsa-1",
            "RS256",
        );
        let step = h.run(&token, later);
        // `null` is "no kid": the token is then good (any RS256 key of the set may verify).
        if kid.is_null() {
            assert!(matches!(step, Verdict::Allow(_)), "{step:?}");
        } else {
            assert!(
                matches!(step, Verdict::Deny(Denial::InvalidToken(_))),
                "kid {kid}: {step:?}"
            );
        }
    }
    h.w.idp.only_configured_urls();
    // One refetch at most for all of them (rediscovery_lifetime).
    let jwks_fetches = h.w.idp.urls.iter().filter(|u| *u == JWKS_URL).count();
    assert_eq!(jwks_fetches, 2, "{:?}", h.w.idp.urls);
}

#[test]
fn jku_x5u_and_jwk_headers_are_ignored() {
    let mut h = Harness::new();
    let attacker_jwk = keys::jwk("rsa-2");
    let c = claims(json!({}));
    // Signed by an attacker key (rsa-2, not published) that the header carries or points to.
    let attacks = [
        json!({"alg":"RS256","jwk":attacker_jwk}),
        json!({"alg":"RS256","kid":"rsa-2","jwk":attacker_jwk}),
        json!({"alg":"RS256","kid":"rsa-1","jwk":attacker_jwk}),
        json!({"alg":"RS256","jwk":attacker_jwk.to_string()}),
        json!({"alg":"RS256","kid":"rsa-1","jwk":attacker_jwk.to_string()}),
        json!({"alg":"RS256","jku":"http://evil.example/jwks.json"}),
        json!({"alg":"RS256","kid":"rsa-2","jku":"http://evil.example/jwks.json"}),
        json!({"alg":"RS256","kid":"rsa-1","jku":"http://evil.example/jwks.json"}),
        json!({"alg":"RS256","kid":"rsa-1","x5u":"http://evil.example/cert.pem"}),
        json!({"alg":"RS256","x5c":[b64url(b"not a cert")]}),
    ];
    for header in attacks {
        let token = signed(header.clone(), &c, "rsa-2", "RS256");
        h.refused(&header.to_string(), &token, None);
    }
    // A good token that also names other key locations verifies against the configured JWKS.
    for header in [
        json!({"alg":"RS256","kid":"rsa-1","jku":"http://evil.example/jwks.json"}),
        json!({"alg":"RS256","kid":"rsa-1","x5u":"http://evil.example/cert.pem"}),
        json!({"alg":"RS256","kid":"rsa-1","jku":JWKS_URL.replace("9000", "9999")}),
    ] {
        let token = signed(header.clone(), &c, "rsa-1", "RS256");
        let step = h.run(&token, T0 + 120_000);
        assert!(matches!(step, Verdict::Allow(_)), "{header}: {step:?}");
    }
    h.w.idp.only_configured_urls();
}

#[test]
fn unknown_critical_extensions_are_refused() {
    let mut h = Harness::new();
    let c = claims(json!({}));
    for header in [
        json!({"alg":"RS256","kid":"rsa-1","crit":["exp"]}),
        json!({"alg":"RS256","kid":"rsa-1","crit":["b64"],"b64":false}),
        json!({"alg":"RS256","kid":"rsa-1","crit":["http://example.com/x"],"http://example.com/x":1}),
        json!({"alg":"RS256","kid":"rsa-1","crit":"exp"}),
        json!({"alg":"RS256","kid":"rsa-1","crit":[1]}),
    ] {
        let token = signed(header.clone(), &c, "rsa-1", "RS256");
        h.refused(&header.to_string(), &token, None);
    }
}

#[test]
fn duplicate_json_keys_cannot_pick_a_value() {
    let mut h = Harness::new();
    let p = claims(json!({})).to_string();
    let body = p.trim_start_matches('{');
    let cases = [
        // Header: two algs (the first would be refused), two kids.
        (
            r#"{"alg":"none","alg":"RS256","kid":"rsa-1"}"#.to_string(),
            p.clone(),
        ),
        (
            r#"{"alg":"RS256","alg":"none","kid":"rsa-1"}"#.to_string(),
            p.clone(),
        ),
        (
            r#"{"alg":"RS256","kid":"ec-1","kid":"rsa-1"}"#.to_string(),
            p.clone(),
        ),
        // Payload: a second iss, exp, aud or nbf after (or before) the real one.
        (
            r#"{"alg":"RS256","kid":"rsa-1"}"#.to_string(),
            format!(r#"{{"iss":"http://evil",{body}"#),
        ),
        (
            r#"{"alg":"RS256","kid":"rsa-1"}"#.to_string(),
            format!(r#"{{{},"iss":"http://evil"}}"#, body.trim_end_matches('}')),
        ),
        (
            r#"{"alg":"RS256","kid":"rsa-1"}"#.to_string(),
            format!(r#"{{"exp":{},{body}"#, NOW_S + 999_999),
        ),
        (
            r#"{"alg":"RS256","kid":"rsa-1"}"#.to_string(),
            format!(r#"{{"aud":"api://other",{body}"#),
        ),
        (
            r#"{"alg":"RS256","kid":"rsa-1"}"#.to_string(),
            format!(r#"{{"nbf":{},{body}"#, NOW_S + 999_999),
        ),
        // A claim the policy reads: two client ids.
        (
            r#"{"alg":"RS256","kid":"rsa-1"}"#.to_string(),
            format!(r#"{{"cid":"intruder",{body}"#),
        ),
        (
            r#"{"alg":"RS256","kid":"rsa-1"}"#.to_string(),
            format!(r#"{{{},"cid":"intruder"}}"#, body.trim_end_matches('}')),
        ),
    ];
    for (header, payload) in cases {
        let token = signed_raw(&header, &payload, "rsa-1", "RS256");
        h.refused(&format!("{header} {payload}"), &token, None);
    }
}

#[test]
fn nested_jwts_are_not_unwrapped() {
    let mut h = Harness::new();
    let inner = good();
    // An unsigned outer token around a valid inner one.
    let outer_none = jws(
        json!({"alg":"none","cty":"JWT"}).to_string().as_bytes(),
        inner.as_bytes(),
        Sig::Empty,
    );
    h.refused("alg none around a good token", &outer_none, None);
    // Signed outer tokens whose payload is a token (raw, or as a JSON string).
    for payload in [inner.clone(), Value::String(inner.clone()).to_string()] {
        let outer = signed_raw(
            r#"{"alg":"RS256","kid":"rsa-1","cty":"JWT"}"#,
            &payload,
            "rsa-1",
            "RS256",
        );
        h.refused("signed outer token", &outer, None);
    }
    // An attacker's outer token (unpublished key) around the good one.
    let outer = signed_raw(r#"{"alg":"RS256","cty":"JWT"}"#, &inner, "rsa-2", "RS256");
    h.refused("attacker outer token", &outer, None);
}

#[test]
fn odd_expiry_values() {
    let mut h = Harness::new();
    let payload = |exp: &str| {
        let c = claims(json!({"exp": null})).to_string();
        format!(r#"{{"exp":{exp},{}"#, c.trim_start_matches('{'))
    };
    let exps = [
        // Beyond any real date: the library's clock saturates there.
        "18446744073709551615".to_string(),
        "4294967296".to_string(),
        (u64::from(u32::MAX) + NOW_S).to_string(),
        "100000000000000000000".to_string(),
        "1e400".to_string(),
        "1.8e30".to_string(),
        // As a string, a float, negative, other types.
        format!("\"{}\"", NOW_S + 3600),
        format!("{}.5", NOW_S + 3600),
        format!("{}e0", NOW_S + 3600),
        "-1".to_string(),
        format!("-{}", NOW_S + 3600),
        "null".to_string(),
        "true".to_string(),
        format!("[{}]", NOW_S + 3600),
        format!("{{\"t\":{}}}", NOW_S + 3600),
        // Expired, with an otherwise valid signature.
        (NOW_S - 1).to_string(),
        "0".to_string(),
    ];
    for exp in exps {
        let token = signed_raw(
            r#"{"alg":"RS256","kid":"rsa-1"}"#,
            &payload(&exp),
            "rsa-1",
            "RS256",
        );
        h.refused(&format!("exp {exp}"), &token, None);
    }
    h.refused(
        "expired",
        &signed(
            json!({"alg":"RS256","kid":"rsa-1"}),
            &claims(json!({"exp": NOW_S - 1, "iat": NOW_S - 3600})),
            "rsa-1",
            "RS256",
        ),
        Some(TokenProblem::Expired),
    );
    // Without exp at all.
    h.refused(
        "no exp",
        &signed(
            json!({"alg":"RS256","kid":"rsa-1"}),
            &claims(json!({"exp": null})),
            "rsa-1",
            "RS256",
        ),
        Some(TokenProblem::MissingExpiry),
    );
    // nbf and iat far in the future, or not numbers.
    for extra in [
        json!({"nbf": u64::MAX}),
        json!({"iat": u64::MAX}),
        json!({"nbf": "0"}),
        json!({"iat": "0"}),
        json!({"nbf": -1}),
    ] {
        let token = signed(
            json!({"alg":"RS256","kid":"rsa-1"}),
            &claims(extra.clone()),
            "rsa-1",
            "RS256",
        );
        h.refused(&extra.to_string(), &token, None);
    }
}

#[test]
fn audience_as_an_object_or_another_audience_or_issuer() {
    let mut h = Harness::new();
    // An audience of a type the verifier cannot read is a malformed token (401); a readable
    // one that is not the one required fails the claim rule (403).
    for (extra, want) in [
        (json!({"aud": {"api://default": true}}), None),
        (json!({"aud": [{"api://default": true}]}), None),
        (json!({"aud": 1}), None),
        (json!({"aud": null}), Some(ClaimRule::Audience)),
        (json!({"aud": "api://other"}), Some(ClaimRule::Audience)),
        (
            json!({"aud": ["api://other", "api://default "]}),
            Some(ClaimRule::Audience),
        ),
    ] {
        let token = signed(
            json!({"alg":"RS256","kid":"rsa-1"}),
            &claims(extra.clone()),
            "rsa-1",
            "RS256",
        );
        match want {
            Some(rule) => assert_eq!(
                h.run(&token, T0),
                Verdict::Deny(Denial::InsufficientScope(rule)),
                "{extra}"
            ),
            None => h.refused(&extra.to_string(), &token, Some(TokenProblem::Malformed)),
        }
    }
    for extra in [
        json!({"iss": "http://127.0.0.1:9000/oauth2/other"}),
        // The configured issuer with a slash is the same issuer (discovery says so too), but
        // not with another path or a prefix of it.
        json!({"iss": format!("{ISSUER}//")}),
        json!({"iss": format!("{ISSUER}x")}),
        json!({"iss": [ISSUER]}),
        json!({"iss": null}),
    ] {
        let token = signed(
            json!({"alg":"RS256","kid":"rsa-1"}),
            &claims(extra.clone()),
            "rsa-1",
            "RS256",
        );
        h.refused(&extra.to_string(), &token, None);
    }
    // Another audience is a claim rule: 403, as Kong and jwt_authn answer it.
    let other_audience = signed(
        json!({"alg":"RS256","kid":"rsa-1"}),
        &claims(json!({"aud": "api://other"})),
        "rsa-1",
        "RS256",
    );
    assert_eq!(
        h.run(&other_audience, T0),
        Verdict::Deny(Denial::InsufficientScope(ClaimRule::Audience))
    );
    h.refused(
        "another issuer",
        &signed(
            json!({"alg":"RS256","kid":"rsa-1"}),
            &claims(json!({"iss": "http://127.0.0.1:9000/oauth2/other"})),
            "rsa-1",
            "RS256",
        ),
        Some(TokenProblem::WrongIssuer),
    );
}

#[test]
fn compact_form_tricks() {
    let mut h = Harness::new();
    let good = good();
    let parts: Vec<&str> = good.split('.').collect();
    let [hd, pl, sg] = [parts[0], parts[1], parts[2]];
    let std_b64 = |s: &str| s.replace('-', "+").replace('_', "/");
    let cases = [
        format!("{good}."),
        format!("{good}.."),
        format!(".{good}"),
        format!("{hd}..{pl}.{sg}"),
        format!("{hd}.{pl}.{sg}.{sg}"),
        format!("{hd}.{pl}.{sg}.{pl}.{sg}"),
        format!("{hd}={pl}.{sg}"),
        format!("{hd}=.{pl}.{sg}"),
        format!("{hd}.{pl}=.{sg}"),
        format!("{hd}.{pl}.{sg}="),
        format!("{hd}.{pl}.{sg}=="),
        format!("{hd}.{pl}"),
        format!(" {good}"),
        format!("{good} "),
        format!("{good}\n"),
        format!("{hd}. {pl}.{sg}"),
        format!("{hd}.{pl}.\t{sg}"),
        format!("{hd}.{pl}.{}", std_b64(sg)),
        format!("{}.{}.{}", std_b64(hd), std_b64(pl), std_b64(sg)),
        format!("{hd}.{pl}.{}", &sg[..sg.len() - 1]),
        format!("{hd}.{pl}."),
        format!("..{sg}"),
        "..".to_string(),
        ".".to_string(),
        String::new(),
    ];
    for token in cases {
        if token != good {
            h.refused(&format!("{token:.60}"), &token, None);
        }
    }
}

#[test]
fn oversized_tokens_are_refused_unparsed() {
    let mut h = Harness::new();
    let header = json!({"alg":"RS256","kid":"rsa-1"}).to_string();
    // An RS256 signature of a 2048-bit key is 342 base64url characters.
    let len_with = |pad: usize| {
        let payload = claims(json!({"pad": "x".repeat(pad)})).to_string();
        b64url(&header).len() + 1 + b64url(&payload).len() + 1 + 342
    };
    let mut pad = 0;
    while len_with(pad + 1) <= MAX_TOKEN_BYTES {
        pad += 1;
    }
    let mint = |pad: usize| {
        signed(
            json!({"alg":"RS256","kid":"rsa-1"}),
            &claims(json!({"pad": "x".repeat(pad)})),
            "rsa-1",
            "RS256",
        )
    };
    let largest = mint(pad);
    assert!(largest.len() <= MAX_TOKEN_BYTES);
    assert!(matches!(h.run(&largest, T0), Verdict::Allow(_)));
    let over = mint(pad + 1);
    assert!(over.len() > MAX_TOKEN_BYTES && over.len() <= MAX_TOKEN_BYTES + 2);
    h.refused("just over 16 KiB", &over, Some(TokenProblem::TooLarge));
    h.refused(
        "a huge segment",
        &format!("{}.{}.x", "e".repeat(64 * 1024), "e"),
        Some(TokenProblem::TooLarge),
    );
}

#[test]
fn a_kid_naming_a_key_of_another_type() {
    let mut h = Harness::new();
    let c = claims(json!({}));
    // ES256 signed by the EC key, but naming the RSA key; and the reverse.
    h.refused(
        "ES256 with kid rsa-1",
        &signed(json!({"alg":"ES256","kid":"rsa-1"}), &c, "ec-1", "ES256"),
        Some(TokenProblem::DisallowedAlgorithm),
    );
    h.refused(
        "RS256 with kid ec-1",
        &signed(json!({"alg":"RS256","kid":"ec-1"}), &c, "rsa-1", "RS256"),
        Some(TokenProblem::DisallowedAlgorithm),
    );
    h.refused(
        "EdDSA with kid rsa-1",
        &signed(json!({"alg":"EdDSA","kid":"rsa-1"}), &c, "ed-1", "EdDSA"),
        Some(TokenProblem::DisallowedAlgorithm),
    );
    // rsa-1 is published for RS256 only: PS256 by the same key is another algorithm.
    h.refused(
        "PS256 with kid rsa-1",
        &signed(json!({"alg":"PS256","kid":"rsa-1"}), &c, "rsa-1", "PS256"),
        Some(TokenProblem::DisallowedAlgorithm),
    );
    // The right kid and alg, but signed by another key.
    h.refused(
        "RS256 kid rsa-1 signed by rsa-2",
        &signed(json!({"alg":"RS256","kid":"rsa-1"}), &c, "rsa-2", "RS256"),
        Some(TokenProblem::BadSignature),
    );
}

/// Regenerates the fuzzing fixtures and seed tokens under `fuzz/` (run by hand:
/// `cargo test --lib write_fuzz_seeds -- --ignored`). Tokens are valid at
/// 1 800 000 000 s and for long after, so the fuzz targets can use a fixed clock.
#[test]
#[ignore = "writes files under fuzz/"]
fn write_fuzz_seeds() {
    use std::fs;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let write = |rel: &str, bytes: &[u8]| {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    };
    // rsa-2 without `alg`, so it serves every RSA algorithm.
    let mut rsa2 = keys::jwk("rsa-2");
    rsa2.as_object_mut().unwrap().remove("alg");
    let jwks = json!({"keys": [keys::jwk("rsa-1"), rsa2, keys::jwk("ec-1"), keys::jwk("ed-1")]});
    let jwks_text = serde_json::to_string_pretty(&jwks).unwrap();
    write("fixtures/jwks.json", jwks_text.as_bytes());
    write("corpus/jwks/okta.json", jwks_text.as_bytes());
    write(
        "corpus/jwks/ec-only-no-use.json",
        json!({"keys":[{"kty":"EC","crv":"P-256","x":keys::jwk("ec-1")["x"],"y":keys::jwk("ec-1")["y"]}]})
            .to_string()
            .as_bytes(),
    );
    write(
        "corpus/jwks/mixed-unusable.json",
        json!({"keys":[{"kty":"oct","k":"AAAA"},{"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"},keys::jwk("ed-1")]})
            .to_string()
            .as_bytes(),
    );

    let far = |extra: Value| {
        let mut c = claims(json!({"iat": 1_799_999_000u64, "exp": 4_000_000_000u64}));
        if let (Some(base), Some(more)) = (c.as_object_mut(), extra.as_object()) {
            base.extend(more.clone());
        }
        c
    };
    let tokens = [
        (
            "rs256-rsa-1",
            signed(
                json!({"alg":"RS256","kid":"rsa-1","typ":"JWT"}),
                &far(json!({"realm":{"roles":["admin","user"]},"scope":"read write"})),
                "rsa-1",
                "RS256",
            ),
        ),
        (
            "ps384-rsa-2",
            signed(
                json!({"alg":"PS384","kid":"rsa-2"}),
                &far(json!({"aud":["api://x","api://default"],"client_id":"svc"})),
                "rsa-2",
                "PS384",
            ),
        ),
        (
            "rs512-no-kid",
            signed(json!({"alg":"RS512"}), &far(json!({})), "rsa-2", "RS512"),
        ),
        (
            "es256-ec-1",
            signed(
                json!({"alg":"ES256","kid":"ec-1","typ":"at+jwt"}),
                &far(json!({"azp":"svc","scp":["read","write"]})),
                "ec-1",
                "ES256",
            ),
        ),
        (
            "eddsa-ed-1",
            signed(
                json!({"alg":"EdDSA","kid":"ed-1"}),
                &far(json!({"nbf": 1_799_999_000u64, "x":"a\r\nb"})),
                "ed-1",
                "EdDSA",
            ),
        ),
        (
            "expired",
            signed(
                json!({"alg":"RS256","kid":"rsa-1"}),
                &claims(json!({"exp": NOW_S - 10})),
                "rsa-1",
                "RS256",
            ),
        ),
        (
            "alg-none",
            keys::unsigned_token(&json!({"alg":"none"}), &far(json!({}))),
        ),
        (
            "hs256-public-key",
            jws(
                br#"{"alg":"HS256","kid":"rsa-1"}"#,
                far(json!({})).to_string().as_bytes(),
                Sig::Hs256(rsa1_public().to_pem().unwrap().as_bytes()),
            ),
        ),
    ];
    for (name, token) in &tokens {
        write(&format!("corpus/jwt/{name}.jwt"), token.as_bytes());
    }
    let token_response = json!({
        "token_type": "Bearer", "expires_in": 3600, "scope": "read",
        "access_token": tokens[0].1,
    });
    let token_text = serde_json::to_string_pretty(&token_response).unwrap();
    write("fixtures/token_response.json", token_text.as_bytes());
    write("corpus/token_response/okta.json", token_text.as_bytes());
    write(
        "corpus/token_response/invalid_client.json",
        br#"{"error":"invalid_client","error_description":"The client secret supplied for a confidential client is invalid."}"#,
    );
    write(
        "corpus/token_response/no-expiry.json",
        json!({"access_token": tokens[3].1, "token_type": "Bearer"})
            .to_string()
            .as_bytes(),
    );

    // The mock IdP's real discovery document, with its port made 9000.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let doc: Value = rt.block_on(async {
        let idp = testkit::idp::MockIdp::start().await;
        let text = testkit::http_client()
            .get(idp.discovery_url())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        serde_json::from_str(&text.replace(&format!(":{}/", idp.port()), ":9000/")).unwrap()
    });
    assert_eq!(doc["issuer"], ISSUER);
    let doc_text = serde_json::to_string_pretty(&doc).unwrap();
    write("fixtures/discovery.json", doc_text.as_bytes());
    write("corpus/discovery/okta.json", doc_text.as_bytes());
    write(
        "corpus/discovery/minimal.json",
        json!({"issuer": format!("{ISSUER}/"), "jwks_uri": JWKS_URL})
            .to_string()
            .as_bytes(),
    );

    // The gate target starts from short operation programs (see fuzz/fuzz_targets/gate.rs):
    // byte 0 picks the configuration, then `op operands…`.
    let (ask_good, client_ok, answer_first, reask_first) =
        ([0u8], [2u8, 0x00], [3u8, 0], [11u8, 0]);
    let mut program = vec![0u8];
    program.extend(ask_good);
    for _ in 0..2 {
        program.extend(answer_first);
        program.extend(reask_first);
    }
    write("corpus/gate/strict-bearer", &program);
    for (name, config) in [("strict-client", 0u8), ("loose-client", 1)] {
        let mut program = vec![config];
        program.extend(client_ok);
        for _ in 0..3 {
            program.extend(answer_first);
            program.extend(reask_first);
        }
        // An hour later, another worker, the same client and a wrong secret.
        program.extend([8, 0x10, 0x0e, 10, 2, 0x00, 2, 0x10]);
        for _ in 0..2 {
            program.extend(answer_first);
            program.extend(reask_first);
        }
        write(&format!("corpus/gate/{name}"), &program);
    }
    let mut program = vec![0u8, 9];
    program.extend(answer_first);
    program.extend([9]);
    program.extend(answer_first);
    // Ten minutes on: a refresh that fails with garbage, then a timeout, then a good bearer.
    program.extend([
        8, 0x58, 0x02, 9, 4, 0, 0, 4, 0, b'<', b'h', b't', b'm', 8, 0x20, 0, 9, 5, 0, 0,
    ]);
    write("corpus/gate/background", &program);
}
