//! The report: settings and machine, verdict, requests by kind and status, the tolerance, the
//! chaos as it happened, IdP calls, Envoy's memory and the filter's counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use testkit::load::{self, EnvoyMemory, Provenance};

use crate::chaos::{
    FAULT_JWKS_DELAY, KEY_CYCLE, OUTAGE_EVERY, OUTAGE_FIRST, OUTAGE_FOR, ROTATE_EVERY, TOKEN_TTL,
};
use crate::judge::{GRACE_EXTRA, NEW_KEY_WINDOW};
use crate::traffic::Tally;
use crate::{
    filter_config, Sample, Settings, CLIENTS, REDISCOVERY_S, SAMPLE_EVERY, SHOW_EVERY_NTH,
    TIMEOUT_MS,
};

pub struct Report<'a> {
    pub settings: &'a Settings,
    pub provenance: &'a Provenance,
    pub load_after: String,
    pub idle: EnvoyMemory,
    pub samples: &'a [Sample],
    pub tally: &'a Tally,
    pub counters: &'a BTreeMap<String, u64>,
    pub chaos_log: &'a [(Duration, String)],
    pub elapsed: Duration,
    pub upstream: u64,
}

impl Report<'_> {
    pub fn ok_200(&self) -> u64 {
        self.tally
            .sum(|t| t.statuses.get(&200).copied().unwrap_or(0))
    }

    /// Whether the upstream saw a request that was not answered 200: only a request that got
    /// through and then lost its answer on the way back could explain it.
    pub fn upstream_excess(&self) -> u64 {
        let unanswered = self.tally.sum(|t| t.statuses.get(&0).copied().unwrap_or(0));
        self.upstream.saturating_sub(self.ok_200() + unanswered)
    }

    pub fn passed(&self) -> bool {
        self.tally.sum(|t| t.unexpected) == 0
            && self.tally.sum(|t| t.wrong_allow) == 0
            && self.tally.secret_leaks == 0
            && self.upstream_excess() == 0
    }

    pub fn render(&self) -> String {
        let mut r = String::new();
        let (s, p, t) = (self.settings, self.provenance, self.tally);
        let total = t.sum(|k| k.statuses.values().sum());
        let _ = writeln!(r, "# Soak\n");
        let _ = writeln!(
            r,
            "Written by `scripts/soak`. A real Envoy with two workers (`--concurrency 2`, \
             two wasm VMs sharing the filter's fetched state) runs the built filter in front of the \
             test kit's echo upstream and mock IdP; {} request loops send a weighted mix of good, \
             bad and brand-new credentials for {} s while the IdP rotates its signing key, goes \
             down and misbehaves on a schedule. Every answer is judged against what its request \
             deserves. Reproduce with `scripts/soak` (settings: see its header).\n",
            s.tasks, s.seconds
        );
        let _ = writeln!(r, "- **Date**: {}", p.date);
        let _ = writeln!(r, "- **Machine**: {}", p.machine(&self.load_after));
        let _ = writeln!(
            r,
            "- **Envoy**: {}, `--concurrency 2`; the driver, the mock IdP and the echo upstream share the machine with it",
            p.envoy_version
        );
        let _ = writeln!(
            r,
            "- **Filter**: oidcgate.wasm {} bytes, commit {}",
            p.wasm_bytes.map_or_else(|| "?".into(), |b| b.to_string()),
            p.commit
        );
        let _ = writeln!(
            r,
            "- **Run**: {} s ({:.1} s measured), {} loops, seed {}; the filter configuration (plus `issuer` and `idp_cluster`): `{}`",
            s.seconds,
            self.elapsed.as_secs_f64(),
            s.tasks,
            s.seed,
            filter_config()
        );
        let _ = writeln!(
            r,
            "- **IdP**: issues tokens valid {} s (so client tokens are refreshed ahead of expiry during the run); clients {} registered before the start",
            TOKEN_TTL.as_secs(),
            CLIENTS.iter().map(|(id, _)| format!("`{id}`")).collect::<Vec<_>>().join(", ")
        );
        if let Some(load) = p.busy() {
            let _ = writeln!(
                r,
                "\n> The machine was not idle (1-minute load {load} before the run): request rates carry that noise."
            );
        }
        if !s.note.is_empty() {
            let _ = writeln!(r, "\n> {}", s.note);
        }

        let _ = writeln!(r, "\n## Verdict\n");
        let unexpected = t.sum(|k| k.unexpected);
        let wrong = t.sum(|k| k.wrong_allow);
        let _ = writeln!(
            r,
            "**{}**: {} requests in {:.0} s ({:.0}/s); {} unexpected answers; {} invalid credentials let through; {} client secrets seen upstream; the upstream received {} requests for {} answers 200{}.",
            if self.passed() { "PASS" } else { "FAIL" },
            total,
            self.elapsed.as_secs_f64(),
            total as f64 / self.elapsed.as_secs_f64(),
            unexpected,
            wrong,
            t.secret_leaks,
            self.upstream,
            self.ok_200(),
            if self.upstream_excess() > 0 { format!(" ({} more than answered: something got through)", self.upstream_excess()) } else { String::new() }
        );
        let _ = writeln!(
            r,
            "Within the tolerance below: {} answers 503 while the IdP was disturbed and {} answers right after a key rotation, for a token signed with the new key before the filter had it (401 for a bearer token, 503 for client credentials).",
            t.sum(|k| k.tolerated_503),
            t.sum(|k| k.tolerated_new_key)
        );

        let _ = writeln!(r, "\n## Requests\n");
        let statuses: std::collections::BTreeSet<u16> = t
            .kinds
            .values()
            .flat_map(|k| k.statuses.keys().copied())
            .collect();
        let _ = write!(r, "| request | weight | expected |");
        for status in &statuses {
            let _ = write!(
                r,
                " {} |",
                if *status == 0 {
                    "no answer".to_string()
                } else {
                    status.to_string()
                }
            );
        }
        let _ = writeln!(
            r,
            " tolerated: IdP disturbed | tolerated: new key | unexpected | invalid let through |"
        );
        let _ = write!(r, "|---|---:|---:|");
        for _ in &statuses {
            let _ = write!(r, "---:|");
        }
        let _ = writeln!(r, "---:|---:|---:|---:|");
        let total_weight: u64 = s.mix.iter().map(|(_, w)| w).sum();
        for (kind, weight) in s.mix {
            let k = t.kinds.get(&kind).cloned().unwrap_or_default();
            let _ = write!(
                r,
                "| {} | {:.0}% | {} |",
                kind.name(),
                weight as f64 * 100.0 / total_weight as f64,
                kind.expected()
            );
            for status in &statuses {
                let _ = write!(r, " {} |", k.statuses.get(status).copied().unwrap_or(0));
            }
            let _ = writeln!(
                r,
                " {} | {} | {} | {} |",
                k.tolerated_503, k.tolerated_new_key, k.unexpected, k.wrong_allow
            );
        }
        let _ = write!(r, "| **all** | 100% | |");
        for status in &statuses {
            let _ = write!(
                r,
                " **{}** |",
                t.sum(|k| k.statuses.get(status).copied().unwrap_or(0))
            );
        }
        let _ = writeln!(
            r,
            " **{}** | **{}** | **{}** | **{}** |",
            t.sum(|k| k.tolerated_503),
            t.sum(|k| k.tolerated_new_key),
            unexpected,
            wrong
        );
        if !t.examples.is_empty() {
            let _ = writeln!(r, "\nFirst unexpected answers (time since the start):\n");
            for e in &t.examples {
                let _ = writeln!(r, "- `{}`", e.replace('`', "'"));
            }
        }

        let _ = writeln!(r, "\n### Tolerance\n");
        let _ = writeln!(
            r,
            "- An invalid credential answered 200 is a failure, always; so is a client secret in \
             what the upstream received, or the upstream receiving more requests than were answered 200.\n\
             - A 401 or 403 without `WWW-Authenticate: Bearer realm=…`, or a 503 without \
             `Retry-After`, is unexpected whatever its status.\n\
             - Each request kind has one expected status (the table's *expected*).\n\
             - **503** is tolerated for a request that may need the IdP (all but *no credential*) \
             if it was in flight during an outage or fault window, or within that window's length \
             plus {} s after it: the filter backs off failed fetches (1 s doubling), so its first \
             retry can come that late.\n\
             - **New key**: a valid token signed with a key that started signing less than {} s \
             before (`rediscovery_lifetime` {} s plus one `timeout`) may be answered **401** if it \
             is a bearer token (its `kid` is unknown to the filter until it refetches the key set) \
             and **503** if it is client credentials after any key change in that window (the IdP \
             issued the token; not the client's fault). The filter refetches the key set for an \
             unknown `kid` at most once per `rediscovery_lifetime`, and the unknown-kid tokens in \
             the mix spend that allowance too. A disturbance overlapping the window extends it \
             past its grace.\n\
             - Anything else, a request that got no answer included, is unexpected and fails the run.",
            GRACE_EXTRA.as_secs(),
            NEW_KEY_WINDOW.as_secs(),
            REDISCOVERY_S
        );

        let _ = writeln!(r, "\n## Chaos schedule\n");
        let _ = writeln!(
            r,
            "Planned: the IdP rotates its signing key every {} s through {} (the new key is published \
             as it starts signing; the previous one stays published {} s, the tokens' lifetime, then \
             is dropped); it goes down (connections refused, open ones cut) for {} s every {} s from \
             {} s on; once, faults: the token endpoint answers 500 and the JWKS answers after {} s \
             (the filter's timeout is {} s). What happened, in seconds since the start:\n",
            ROTATE_EVERY.as_secs(),
            KEY_CYCLE.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(" → "),
            TOKEN_TTL.as_secs(),
            OUTAGE_FOR.as_secs(),
            OUTAGE_EVERY.as_secs(),
            OUTAGE_FIRST.as_secs(),
            FAULT_JWKS_DELAY.as_secs(),
            TIMEOUT_MS / 1000
        );
        let _ = writeln!(r, "| t (s) | event |");
        let _ = writeln!(r, "|---:|---|");
        for (at, what) in self.chaos_log {
            let _ = writeln!(
                r,
                "| {:.1} | {} |",
                at.as_secs_f64(),
                what.replace('"', "`")
            );
        }

        let _ = writeln!(r, "\n## IdP calls\n");
        let last = self.samples.last().map(|s| s.idp).unwrap_or_default();
        let c = |name: &str| self.counters.get(name).copied().unwrap_or(0);
        let _ = writeln!(
            r,
            "Requests the mock IdP received during the run (after the warm-up), failed and faulted ones \
             included, and the filter's own view (`wasmcustom.oidcgate.idp.*`, whole life of Envoy):\n"
        );
        let _ = writeln!(
            r,
            "| endpoint | IdP received | filter: ok | filter: failed | filter: rejected |"
        );
        let _ = writeln!(r, "|---|---:|---:|---:|---:|");
        let _ = writeln!(
            r,
            "| discovery | {} | {} | {} | |",
            last.discovery,
            c("oidcgate.idp.discovery.ok"),
            c("oidcgate.idp.discovery.failed")
        );
        let _ = writeln!(
            r,
            "| JWKS | {} | {} | {} | |",
            last.jwks,
            c("oidcgate.idp.jwks.ok"),
            c("oidcgate.idp.jwks.failed")
        );
        let _ = writeln!(
            r,
            "| token | {} | {} | {} | {} |",
            last.token,
            c("oidcgate.idp.token.ok"),
            c("oidcgate.idp.token.failed"),
            c("oidcgate.idp.token.rejected")
        );

        let _ = writeln!(r, "\n## Envoy memory\n");
        let _ = writeln!(
            r,
            "Admin `/memory` (`allocated`: in use through tcmalloc; `heap_size`: reserved by it) and \
             the process's `VmRSS` (which also holds V8's wasm memory). Idle, before the first \
             request: {} MiB allocated, {} MiB heap, {} MiB resident. Sampled every {} s; shown \
             every {} s and at the end:\n",
            load::mib(self.idle.allocated),
            load::mib(self.idle.heap_size),
            load::mib_or_dash(self.idle.rss),
            SAMPLE_EVERY.as_secs(),
            SAMPLE_EVERY.as_secs() * SHOW_EVERY_NTH as u64
        );
        let _ = writeln!(r, "| t (s) | requests | allocated (MiB) | heap (MiB) | RSS (MiB) | IdP calls (discovery/JWKS/token) |");
        let _ = writeln!(r, "|---:|---:|---:|---:|---:|---|");
        let shown = self
            .samples
            .iter()
            .enumerate()
            .filter(|(i, _)| i % SHOW_EVERY_NTH == 0 || i + 1 == self.samples.len());
        for (_, sample) in shown {
            let _ = writeln!(
                r,
                "| {:.0} | {} | {} | {} | {} | {}/{}/{} |",
                sample.at.as_secs_f64(),
                sample.requests,
                load::mib(sample.memory.allocated),
                load::mib(sample.memory.heap_size),
                load::mib_or_dash(sample.memory.rss),
                sample.idp.discovery,
                sample.idp.jwks,
                sample.idp.token
            );
        }
        if let (Some(first), Some(last)) = (self.samples.first(), self.samples.last()) {
            let range = |f: fn(&Sample) -> Option<u64>| {
                let values = self.samples.iter().filter_map(f);
                match (values.clone().min(), values.max()) {
                    (Some(lo), Some(hi)) => format!("{}–{}", load::mib(lo), load::mib(hi)),
                    _ => "–".into(),
                }
            };
            let _ = writeln!(
                r,
                "\nFrom start to end: allocated {} → {} MiB, RSS {} → {} MiB. Over all {} samples: \
                 allocated {} MiB, heap {} MiB, RSS {} MiB.",
                load::mib(first.memory.allocated),
                load::mib(last.memory.allocated),
                load::mib_or_dash(first.memory.rss),
                load::mib_or_dash(last.memory.rss),
                self.samples.len(),
                range(|s| Some(s.memory.allocated)),
                range(|s| Some(s.memory.heap_size)),
                range(|s| s.memory.rss)
            );
        }

        let _ = writeln!(r, "\n## Filter counters at the end\n");
        let _ = writeln!(
            r,
            "`wasmcustom.oidcgate.*`, summed over both workers, warm-up included:\n"
        );
        let _ = writeln!(r, "| counter | value |");
        let _ = writeln!(r, "|---|---:|");
        for (name, value) in self.counters {
            let _ = writeln!(r, "| `{name}` | {value} |");
        }
        r
    }
}
