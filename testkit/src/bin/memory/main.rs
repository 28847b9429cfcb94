//! `memory` (run by `scripts/memory`, not part of CI): shows that per-VM memory stays bounded
//! after a million distinct tokens, each verified once and cached until the cache's bounds
//! push it out.
//!
//! Starts the mock IdP, the echo upstream and Envoy with the built filter and one worker
//! (`--concurrency 1`, so one request VM), then sends MEMORY_TOKENS distinct valid bearer
//! tokens, each once, over MEMORY_CONNECTIONS connections. Tokens are minted on the fly by
//! MEMORY_MINTERS threads (never held all in memory) with MEMORY_ALG (default EdDSA, the
//! cheapest to sign). Every MEMORY_SAMPLE_EVERY tokens it samples Envoy's memory (admin
//! `/memory` allocated and heap_size, VmRSS) and the filter's `cache.verify.*` counters.
//! Every answer must be 200: any other exits non-zero.
//!
//! Before the run, a probe on a separate Envoy measures each published algorithm: signing
//! cost here and the filter's verification rate (MEMORY_PROBE tokens each; 0 skips). After
//! it, an Envoy without the filter gets MEMORY_BASELINE requests for comparison (0 skips).
//! Writes MEMORY_OUT (default docs/memory.md).
//!
//! Here: the run. [`tokens`]: minting; [`send`]: sending and sampling; [`probe`]: the
//! probe and the baseline; [`report`]: the report and its conclusion.

mod probe;
mod report;
mod send;
mod tokens;

use std::time::Duration;

use serde_json::json;
use testkit::idp::{MockIdp, AUDIENCE};
use testkit::load::{self, Provenance};
use testkit::Stack;

use probe::{baseline, probe};
use report::Report;
use send::{send, Tokens};
use tokens::{Alg, Minter};

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Settings {
    tokens: u64,
    connections: u64,
    sample_every: u64,
    alg: Alg,
    minters: u64,
    probe: u64,
    baseline: u64,
    out: std::path::PathBuf,
    note: String,
}

impl Settings {
    fn from_env() -> Result<Settings, Error> {
        let alg = match std::env::var("MEMORY_ALG").unwrap_or_default().as_str() {
            "" | "EdDSA" => Alg::EdDsa,
            "ES256" => Alg::Es256,
            "RS256" => Alg::Rs256,
            other => {
                return Err(
                    format!("MEMORY_ALG must be EdDSA, ES256 or RS256, not {other:?}").into(),
                )
            }
        };
        let s = Settings {
            tokens: load::env_number("MEMORY_TOKENS", 1_000_000)?,
            connections: load::env_number("MEMORY_CONNECTIONS", 8)?,
            sample_every: load::env_number("MEMORY_SAMPLE_EVERY", 100_000)?,
            alg,
            minters: load::env_number("MEMORY_MINTERS", 1)?,
            probe: load::env_number("MEMORY_PROBE", 2000)?,
            baseline: load::env_number("MEMORY_BASELINE", 100_000)?,
            out: load::env_path("MEMORY_OUT", "docs/memory.md"),
            note: std::env::var("MEMORY_NOTE").unwrap_or_default(),
        };
        if s.tokens == 0 || s.connections == 0 || s.sample_every == 0 || s.minters == 0 {
            return Err("MEMORY_TOKENS, MEMORY_CONNECTIONS, MEMORY_SAMPLE_EVERY and MEMORY_MINTERS must be at least 1".into());
        }
        Ok(s)
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    load::run_main("memory", run()).await
}

/// `Ok(false)`: the run completed but not every answer was 200.
async fn run() -> Result<bool, Error> {
    let settings = Settings::from_env()?;
    let provenance = Provenance::collect();
    let filter_config = json!({
        "timeout": 2000,
        "audience_required": [AUDIENCE],
        "upstream_headers_claims": ["iss", "sub"],
        "upstream_headers_names": ["Issuer_Header", "X-Subject"],
    });

    let mut probes = Vec::new();
    if settings.probe > 0 {
        for alg in Alg::ALL {
            let probe = probe(alg, settings.probe, settings.connections, &filter_config).await?;
            eprintln!(
                "memory: probe {}: signing {:.0} µs/token here, the filter verified {:.0} tokens/s ({} not 200)",
                alg.name(),
                probe.sign_us,
                probe.verify_rate,
                probe.failed
            );
            probes.push(probe);
        }
    }

    eprintln!(
        "memory: {} distinct {} tokens over {} connections, Envoy --concurrency 1",
        settings.tokens,
        settings.alg.name(),
        settings.connections
    );
    let stack = Stack::start(MockIdp::start().await, filter_config.clone(), 1).await;
    let tokens = Tokens::Minted {
        minter: Minter::new(stack.idp.issuer(), settings.alg),
        count: settings.tokens,
        threads: settings.minters,
    };
    let main_run = send(
        &stack,
        tokens,
        settings.connections,
        Some(settings.sample_every),
    )
    .await?;
    // The filter moves its counters to Envoy on a 20 ms tick.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let counters = load::oidcgate_counters(&stack.http, &stack.envoy).await?;
    let idp_counts = stack.idp.counts();
    drop(stack);

    let baseline = if settings.baseline > 0 {
        Some(baseline(settings.baseline, settings.connections).await?)
    } else {
        None
    };
    let load_after = load::load_average();

    let report = Report {
        settings: &settings,
        provenance: &provenance,
        load_after,
        filter_config: &filter_config,
        probes: &probes,
        run: &main_run,
        counters: &counters,
        idp: idp_counts,
        baseline: baseline.as_ref(),
    }
    .render();
    load::write_report(&settings.out, &report)?;
    eprintln!(
        "memory: {} tokens, {} answered 200, {} not; report in {}",
        settings.tokens,
        main_run.ok,
        main_run.failed,
        settings.out.display()
    );
    for failure in &main_run.failures {
        eprintln!("memory:   {failure}");
    }
    Ok(main_run.failed == 0)
}
