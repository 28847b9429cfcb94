//! The whole engine: two workers' gates over one shared store, driven by a program of
//! requests (fuzzed credentials), IdP answers (canned good ones, fuzzed ones, timeouts),
//! abandoned fetches, background ticks and clock jumps.
//!
//! Besides never panicking, it checks the invariant that matters most: a request is only
//! allowed with a token signed by a fixture key that passes the policy now (fails closed).
//!
//! Program: byte 0 picks the configuration; then each operation is one byte (`% 12`, see the
//! match) followed by its operands (u16 little-endian, length-prefixed strings).
#![no_main]

use libfuzzer_sys::fuzz_target;
use oidcgate::config::Config;
use oidcgate::credentials::{ClientCredentials, Credential, Secret};
use oidcgate::fetch::{Fetch, Look, Resource, Step};
use oidcgate::gate::Gate;
use oidcgate::outcome::Verdict;
use oidcgate::store::MemStore;
use oidcgate::{policy, verify};
use oidcgate_fuzz::{
    any_fixture_key, loose_config, strict_config, Reader, DISCOVERY, JWKS, NOW_S, TOKEN_RESPONSE,
};

const GOOD_TOKEN: &str = include_str!("../corpus/jwt/rs256-rsa-1.jwt");
const IDS: [&str; 3] = ["svc", "demo-client", "intruder"];
const SECRETS: [&str; 2] = ["demo-secret", "wrong"];
const STATUSES: [u32; 6] = [200, 400, 401, 404, 500, 503];
const MAX_OPS: usize = 128;

struct Parked {
    worker: usize,
    cred: Credential,
    started_ms: u64,
}

struct World {
    config: &'static Config,
    gates: [Gate; 2],
    store: MemStore,
    now_ms: u64,
    pending: Vec<Fetch>,
    parked: Vec<Parked>,
}

impl World {
    fn ask(&mut self, worker: usize, cred: Credential, look: Look) {
        let started_ms = look.started_ms;
        let gate = &mut self.gates[worker];
        let step = gate.authenticate(&mut self.store, &cred, 0, look, self.now_ms);
        match &step {
            Step::Done(Verdict::Allow(grant)) => self.check_allowed(&cred, &grant.headers),
            Step::Done(Verdict::Deny(denial)) => {
                assert!(matches!(denial.status(), 401 | 403 | 503));
                let _ = denial.body();
            }
            Step::Fetch(fetch) => {
                self.pending.push(fetch.clone());
                self.park(worker, cred, started_ms);
            }
            Step::Wait(_) => self.park(worker, cred, started_ms),
        }
    }

    fn park(&mut self, worker: usize, cred: Credential, started_ms: u64) {
        if self.parked.len() < 16 {
            self.parked.push(Parked {
                worker,
                cred,
                started_ms,
            });
        }
    }

    /// Fails closed: the token that goes upstream verifies now and passes the policy.
    fn check_allowed(&self, cred: &Credential, headers: &[(String, String)]) {
        let token = match cred {
            Credential::Bearer(t) => t.to_string(),
            Credential::Client(_) => {
                let th = self
                    .config
                    .upstream
                    .token_header
                    .as_ref()
                    .expect("token header");
                let (_, value) = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(&th.name))
                    .expect("allowed client request carries its token");
                match &th.scheme {
                    Some(s) => value.strip_prefix(&format!("{s} ")).expect("scheme").into(),
                    None => value.clone(),
                }
            }
        };
        let kid = jwt_kid(&token);
        let reference = any_fixture_key(kid.as_deref());
        let verified = verify::verify(
            &token,
            &reference,
            self.now_ms / 1000,
            self.config.accept.leeway_s,
        )
        .unwrap_or_else(|p| panic!("allowed a token that does not verify: {p:?}"));
        assert_eq!(
            policy::authorize(self.config, &self.config.policy, &verified.claims),
            Ok(())
        );
    }

    fn answer(&mut self, index: usize, status: Option<u32>, body: &[u8], worker: usize) {
        if self.pending.is_empty() {
            return;
        }
        let fetch = self.pending.swap_remove(index % self.pending.len());
        let now = self.now_ms;
        // Introspection answers are always "inactive": an opaque token is then never
        // allowed, so the fail-closed check below (a verifying JWT) stays exact.
        let body = match fetch.resource {
            Resource::Introspection(_) => canned(&fetch.resource).as_bytes(),
            _ => body,
        };
        self.gates[worker].on_answer(&mut self.store, &fetch.resource, status, body, now);
    }
}

fn jwt_kid(token: &str) -> Option<String> {
    use base64::Engine;
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("kid")?.as_str().map(str::to_string)
}

fn canned(resource: &Resource) -> &'static str {
    match resource {
        Resource::Discovery => DISCOVERY,
        Resource::Jwks => JWKS,
        Resource::Token(_) => TOKEN_RESPONSE,
        Resource::Introspection(_) => r#"{"active":false}"#,
    }
}

fn client(r: &mut Reader) -> Credential {
    let pick = r.byte();
    let (id, secret) = if pick & 0x80 != 0 {
        (r.string(), r.string())
    } else {
        let id = IDS[usize::from(pick & 0x0f) % IDS.len()];
        let secret = SECRETS[usize::from(pick >> 4) % SECRETS.len()];
        (id.to_string(), secret.to_string())
    };
    Credential::Client(ClientCredentials {
        id,
        secret: Secret::new(secret),
    })
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let config = if r.byte() & 1 == 0 {
        strict_config()
    } else {
        loose_config()
    };
    let mut gates = [Gate::new(config.clone()), Gate::new(config.clone())];
    let mut store = MemStore::default();
    for gate in &mut gates {
        gate.init_shared(&mut store, 0);
    }
    let mut w = World {
        config,
        gates,
        store,
        now_ms: NOW_S * 1000,
        pending: Vec::new(),
        parked: Vec::new(),
    };
    let mut worker = 0;
    for _ in 0..MAX_OPS {
        if r.is_empty() {
            break;
        }
        let now = w.now_ms;
        match r.byte() % 12 {
            0 => w.ask(
                worker,
                Credential::Bearer(GOOD_TOKEN.trim().into()),
                Look::first(now),
            ),
            1 => {
                let token = r.string();
                w.ask(worker, Credential::Bearer(token.into()), Look::first(now))
            }
            2 => {
                let cred = client(&mut r);
                w.ask(worker, cred, Look::first(now))
            }
            3 => {
                let i = usize::from(r.byte());
                if let Some(f) = w.pending.get(i % w.pending.len().max(1)) {
                    let body = canned(&f.resource).as_bytes();
                    w.answer(i, Some(200), body, worker);
                }
            }
            4 => {
                let i = usize::from(r.byte());
                let status = STATUSES[usize::from(r.byte()) % STATUSES.len()];
                let body = r.bytes();
                w.answer(i, Some(status), body, worker);
            }
            5 => {
                let i = usize::from(r.byte());
                w.answer(i, None, b"", worker);
            }
            6 => {
                if !w.pending.is_empty() {
                    let i = usize::from(r.byte()) % w.pending.len();
                    let f = w.pending.swap_remove(i);
                    w.gates[worker].abandon(&mut w.store, &f.resource, now);
                }
            }
            7 => w.now_ms += u64::from(r.u16()),
            8 => w.now_ms += u64::from(r.u16()) * 1000,
            9 => {
                let fetches = w.gates[worker].background(&mut w.store, now);
                w.pending.extend(fetches);
            }
            10 => worker ^= 1,
            _ => {
                if !w.parked.is_empty() {
                    let i = usize::from(r.byte()) % w.parked.len();
                    let p = w.parked.swap_remove(i);
                    w.ask(p.worker, p.cred, Look::again(p.started_ms));
                }
            }
        }
        // Bounded by construction, whatever the program.
        assert!(w.gates[worker].cached_decisions() <= 4096);
        let _ = w.gates[worker].counters();
        if w.pending.len() > 64 {
            w.pending.truncate(64);
        }
    }
});
