//! The report: provenance, the algorithm probe, the samples, Envoy without the filter, and the
//! conclusion drawn from the samples.

use std::fmt::Write as _;

use serde_json::Value;
use testkit::idp::Counts;
use testkit::load::{self, Provenance};

use crate::probe::{Baseline, Probe};
use crate::send::{Run, Sample};
use crate::tokens::TOKEN_TTL_S;
use crate::Settings;

/// The filter's per-VM bound on verified tokens (`src/gate.rs`: `DECISION_ENTRIES`,
/// `DECISION_BYTES`); quoted in the report, not used to decide anything.
pub const CACHE_ENTRIES: u64 = 4096;
pub const CACHE_MIB: u64 = 8;

/// A sample counts as "on the plateau" if within this fraction of the first sample taken
/// after the cache filled (see the report's conclusion).
pub const PLATEAU_TOLERANCE: f64 = 0.10;

pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Everything the report is written from.
pub struct Report<'a> {
    pub settings: &'a Settings,
    pub provenance: &'a Provenance,
    pub load_after: String,
    pub filter_config: &'a Value,
    pub probes: &'a [Probe],
    pub run: &'a Run,
    pub counters: &'a std::collections::BTreeMap<String, u64>,
    pub idp: Counts,
    pub baseline: Option<&'a Baseline>,
}

impl Report<'_> {
    pub fn render(&self) -> String {
        let Report {
            settings,
            provenance,
            load_after,
            filter_config,
            probes,
            run,
            counters,
            idp,
            baseline,
        } = self;
        let mut r = String::new();
        let p = provenance;
        let _ = writeln!(r, "# Memory: a million distinct tokens\n");
        let _ = writeln!(
        r,
        "Written by `scripts/memory`, to show that per-VM memory stays bounded however many \
         distinct tokens pass (a cache that grew with them would, in time, exhaust the VM). One Envoy worker (`--concurrency 1`, so one request VM) with the \
         built filter in front of the test kit's mock IdP and echo upstream; the driver mints \
         distinct valid bearer tokens on the fly and sends each exactly once, sampling Envoy's \
         memory as it goes. Reproduce with `scripts/memory` (settings: see its header).\n"
    );
        let _ = writeln!(r, "- **Date**: {}", p.date);
        let _ = writeln!(r, "- **Machine**: {}", p.machine(load_after));
        let _ = writeln!(
        r,
        "- **Envoy**: {}, `--concurrency 1`; the driver, the mock IdP and the echo upstream run in one process beside it",
        p.envoy_version
    );
        let _ = writeln!(
            r,
            "- **Filter**: oidcgate.wasm {} bytes, commit {}",
            p.wasm_bytes.map_or_else(|| "?".into(), thousands),
            p.commit
        );
        let _ = writeln!(
        r,
        "- **Load**: {} distinct {} tokens (key `{}`, ~{} bytes each, valid for {} h), each sent once over {} keep-alive connections, minted by {} thread(s) while sending",
        thousands(settings.tokens),
        settings.alg.name(),
        settings.alg.kid(),
        run.token_bytes,
        TOKEN_TTL_S / 3600,
        settings.connections,
        settings.minters
    );
        let _ = writeln!(
            r,
            "- **Filter configuration** (plus `issuer` and `idp_cluster`): `{filter_config}`"
        );
        let _ = writeln!(
            r,
            "- **Took** {:.0} s ({:.0} tokens/s)",
            run.elapsed.as_secs_f64(),
            settings.tokens as f64 / run.elapsed.as_secs_f64()
        );
        if let Some(load) = p.busy() {
            let _ = writeln!(
                r,
                "\n> The machine was not idle (1-minute load {load} before the run): rates carry that noise; memory figures do not depend on it."
            );
        }
        if !settings.note.is_empty() {
            let _ = writeln!(r, "\n> {}", settings.note);
        }

        if !probes.is_empty() {
            let _ = writeln!(r, "\n## Algorithm\n");
            let _ = writeln!(
                r,
                "The mock IdP publishes one key of each kind (`rsa-1`, `ec-1`, `ed-1`). On this \
                 machine the driver's signing and Envoy's verifying share the same cores, so what \
                 decides how fast a million distinct tokens go through is the sum of both costs. \
                 Each algorithm was measured first, on an Envoy of its own: signing here (one \
                 thread), and the filter's rate on {} distinct tokens signed beforehand (every one \
                 a cache miss, so a full verification).",
                probes.first().map_or(0, |p| p.tokens)
            );
            let _ = writeln!(
                r,
                "\n| algorithm | key | signing here (µs/token) | filter, distinct tokens \
                 (tokens/s) | both on one core (tokens/s) | not 200 |"
            );
            let _ = writeln!(r, "|---|---|---:|---:|---:|---:|");
            for probe in probes.iter() {
                let _ = writeln!(
                    r,
                    "| {} | `{}` | {:.0} | {:.0} | {:.0} | {} |",
                    probe.alg.name(),
                    probe.alg.kid(),
                    probe.sign_us,
                    probe.verify_rate,
                    probe.one_core_rate(),
                    probe.failed
                );
            }
            let best = probes
                .iter()
                .max_by(|a, b| a.one_core_rate().total_cmp(&b.one_core_rate()));
            let fastest_verify = probes
                .iter()
                .max_by(|a, b| a.verify_rate.total_cmp(&b.verify_rate));
            let why = match (best, fastest_verify) {
                (Some(b), Some(v)) if b.alg == settings.alg && v.alg != b.alg => format!(
                    ": the fastest end to end; {} verifies faster in the filter, but signing it \
                     here costs {:.0} µs a token, {:.0} s of CPU for a million",
                    v.alg.name(),
                    v.sign_us,
                    v.sign_us
                ),
                (Some(b), _) if b.alg == settings.alg => ": the fastest end to end".to_string(),
                (Some(b), _) => format!(
                    " (set by MEMORY_ALG; {} was the fastest end to end)",
                    b.alg.name()
                ),
                (None, _) => String::new(),
            };
            let _ = writeln!(r, "\nThe run used **{}**{why}.", settings.alg.name());
        }

        let _ = writeln!(r, "\n## Samples\n");
        let _ = writeln!(
        r,
        "Envoy's admin `/memory` (`allocated`: in use through tcmalloc; `heap_size`: reserved by \
         it) and the process's `VmRSS`, which also holds what V8 maps itself: the wasm linear \
         memory, where the filter keeps its caches, and compiled code. Beside them, the \
         filter's `wasmcustom.oidcgate.cache.verify.*` counters at the same moment (flushed \
         every 20 ms, so they may trail by a few tokens). Every token is new, so every lookup \
         should be a miss.\n"
    );
        let _ = writeln!(r, "| tokens sent | elapsed (s) | tokens/s since previous | allocated (MiB) | heap (MiB) | RSS (MiB) | verify hits | verify misses |");
        let _ = writeln!(r, "|---:|---:|---:|---:|---:|---:|---:|---:|");
        let mut previous: Option<&Sample> = None;
        for s in &run.samples {
            let rate = match previous {
                Some(prev) if s.elapsed > prev.elapsed => format!(
                    "{:.0}",
                    (s.tokens - prev.tokens) as f64 / (s.elapsed - prev.elapsed).as_secs_f64()
                ),
                _ => "–".into(),
            };
            let _ = writeln!(
                r,
                "| {} | {:.0} | {} | {} | {} | {} | {} | {} |",
                thousands(s.tokens),
                s.elapsed.as_secs_f64(),
                rate,
                load::mib(s.memory.allocated),
                load::mib(s.memory.heap_size),
                load::mib_or_dash(s.memory.rss),
                thousands(s.verify_hits),
                thousands(s.verify_misses)
            );
            previous = Some(s);
        }
        let _ = writeln!(
        r,
        "\nAnswers: {} × 200, {} other{}. IdP calls during the run: discovery {}, JWKS {}, token {}.",
        thousands(run.ok),
        run.failed,
        if run.failures.is_empty() {
            String::new()
        } else {
            format!(" (first: {})", run.failures.join("; "))
        },
        idp.discovery,
        idp.jwks,
        idp.token
    );
        let interesting: Vec<String> = counters
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("`{k}` {}", thousands(*v)))
            .collect();
        let _ = writeln!(r, "Filter counters at the end: {}.", interesting.join(", "));
        let misses = counters
            .get("oidcgate.cache.verify.miss")
            .copied()
            .unwrap_or(0);
        let parked = counters.get("oidcgate.parked").copied().unwrap_or(0);
        if misses > settings.tokens && parked > 0 {
            let _ = writeln!(
            r,
            "\n`cache.verify.miss` counts lookups, not tokens: the {parked} first requests were \
             parked while the filter fetched discovery and the key set, and were looked up again \
             when resumed, hence {} misses more than tokens.",
            misses - settings.tokens
        );
        }

        if let Some(b) = baseline {
            let _ = writeln!(r, "\n## Without the filter\n");
            let _ = writeln!(
                r,
                "The same Envoy build and worker count, the listener routing straight to the echo \
             upstream, {} requests with one bearer token over {} connections ({} not 200):\n",
                thousands(b.requests),
                settings.connections,
                b.failed
            );
            let _ = writeln!(r, "| | allocated (MiB) | heap (MiB) | RSS (MiB) |");
            let _ = writeln!(r, "|---|---:|---:|---:|");
            for (label, m) in [("idle", b.before), ("after the requests", b.after)] {
                let _ = writeln!(
                    r,
                    "| {label} | {} | {} | {} |",
                    load::mib(m.allocated),
                    load::mib(m.heap_size),
                    load::mib_or_dash(m.rss)
                );
            }
        }

        let _ = writeln!(r, "\n## Conclusion\n");
        let _ = writeln!(r, "{}", conclusion(settings, run, *baseline));
        r
    }
}

/// The verdict, from the samples: the first sample at or after one interval (the cache of
/// CACHE_ENTRIES holds far fewer tokens than that, so it is full by then) is the reference;
/// memory has plateaued if no later sample exceeds it by more than PLATEAU_TOLERANCE.
pub fn conclusion(settings: &Settings, run: &Run, baseline: Option<&Baseline>) -> String {
    let mut text = String::new();
    let (Some(first), Some(reference), Some(last)) = (
        run.samples.first(),
        run.samples
            .iter()
            .find(|s| s.tokens >= CACHE_ENTRIES.max(settings.sample_every.min(settings.tokens))),
        run.samples.last(),
    ) else {
        return "Not enough samples to conclude anything.".into();
    };
    let later = run.samples.iter().filter(|s| s.tokens > reference.tokens);
    let peak_alloc = later
        .clone()
        .map(|s| s.memory.allocated)
        .max()
        .unwrap_or(reference.memory.allocated);
    let peak_rss = later
        .filter_map(|s| s.memory.rss)
        .max()
        .or(reference.memory.rss);
    let within = |peak: u64, base: u64| peak as f64 <= base as f64 * (1.0 + PLATEAU_TOLERANCE);
    let alloc_flat = within(peak_alloc, reference.memory.allocated);
    let rss_flat = match (peak_rss, reference.memory.rss) {
        (Some(peak), Some(base)) => within(peak, base),
        _ => true,
    };
    let _ = write!(
        text,
        "Idle with the filter loaded, Envoy had {} MiB allocated and {} MiB resident. After {} \
         tokens (the filter's verified-token cache holds at most {} entries / {} MiB per VM, so \
         it was full by then) it had {} MiB allocated and {} MiB resident; at the end, after \
         {} tokens, {} MiB and {} MiB. The highest later sample was {} MiB allocated and {} MiB \
         resident. ",
        load::mib(first.memory.allocated),
        load::mib_or_dash(first.memory.rss),
        thousands(reference.tokens),
        thousands(CACHE_ENTRIES),
        CACHE_MIB,
        load::mib(reference.memory.allocated),
        load::mib_or_dash(reference.memory.rss),
        thousands(last.tokens),
        load::mib(last.memory.allocated),
        load::mib_or_dash(last.memory.rss),
        load::mib(peak_alloc),
        load::mib_or_dash(peak_rss),
    );
    if alloc_flat && rss_flat {
        let _ = write!(
            text,
            "**Memory plateaus**: no sample after the cache filled is more than {:.0}% above the \
             one at {} tokens, so per-VM memory does not grow with the number of distinct tokens.",
            PLATEAU_TOLERANCE * 100.0,
            thousands(reference.tokens)
        );
    } else {
        let _ = write!(
            text,
            "**Memory did not plateau** by this test's measure (a later sample more than {:.0}% \
             above the one at {} tokens): look for growth per token in the filter.",
            PLATEAU_TOLERANCE * 100.0,
            thousands(reference.tokens)
        );
    }
    if let Some(b) = baseline {
        let _ = write!(
            text,
            " For scale, Envoy without the filter: {} MiB allocated and {} MiB resident after {} requests.",
            load::mib(b.after.allocated),
            load::mib_or_dash(b.after.rss),
            thousands(b.requests)
        );
    }
    if settings.tokens < 1_000_000 {
        let _ = write!(
            text,
            "\n\nThis run sent {} tokens, not the million of a full run.",
            thousands(settings.tokens)
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use testkit::load::EnvoyMemory;

    use super::*;
    use crate::tokens::Alg;

    fn settings() -> Settings {
        Settings {
            tokens: 1_000_000,
            connections: 8,
            sample_every: 100_000,
            alg: Alg::EdDsa,
            minters: 1,
            probe: 0,
            baseline: 0,
            out: PathBuf::new(),
            note: String::new(),
        }
    }

    /// A run sampled every 100,000 tokens from 0, with these allocated sizes (MiB).
    fn run(allocated_mib: &[u64]) -> Run {
        let samples = allocated_mib
            .iter()
            .enumerate()
            .map(|(i, mib)| Sample {
                tokens: i as u64 * 100_000,
                elapsed: Duration::from_secs(i as u64 * 10),
                memory: EnvoyMemory {
                    allocated: mib << 20,
                    heap_size: mib << 20,
                    rss: Some((mib + 40) << 20),
                },
                verify_hits: 0,
                verify_misses: i as u64 * 100_000,
            })
            .collect();
        Run {
            samples,
            token_bytes: 300,
            ok: 1_000_000,
            failed: 0,
            failures: Vec::new(),
            elapsed: Duration::from_secs(100),
        }
    }

    #[test]
    fn thousands_are_grouped_by_three() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn memory_within_a_tenth_of_the_first_full_cache_sample_plateaus() {
        let text = conclusion(&settings(), &run(&[20, 60, 62, 65, 61, 66]), None);
        assert!(text.contains("**Memory plateaus**"), "{text}");
        assert!(text.contains("one at 100,000 tokens"), "{text}");
    }

    #[test]
    fn memory_growing_past_a_tenth_does_not_plateau() {
        let text = conclusion(&settings(), &run(&[20, 60, 62, 65, 70, 80]), None);
        assert!(text.contains("**Memory did not plateau**"), "{text}");
    }
}
