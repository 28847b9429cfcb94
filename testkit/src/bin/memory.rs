//! `memory` (issue 5, "memory"; run by `scripts/memory`, not part of CI): per-VM memory after a
//! million distinct tokens stays bounded.
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

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::envoy::EnvoyOpts;
use testkit::idp::{Counts, MockIdp, AUDIENCE};
use testkit::keys::{self, Sig};
use testkit::load::{self, EnvoyMemory, Provenance};
use testkit::Stack;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The filter's per-VM bound on verified tokens (`src/gate.rs`: `DECISION_ENTRIES`,
/// `DECISION_BYTES`); quoted in the report, not used to decide anything.
const CACHE_ENTRIES: u64 = 4096;
const CACHE_MIB: u64 = 8;

/// Tokens outlive the run: entries leave the cache by its bounds, never by expiry, the worst
/// case for memory.
const TOKEN_TTL_S: u64 = 4 * 3600;

/// A run that gets no answer for this long has stalled.
const STALL: Duration = Duration::from_secs(60);

/// A sample counts as "on the plateau" if within this fraction of the first sample taken
/// after the cache filled (see the report's conclusion).
const PLATEAU_TOLERANCE: f64 = 0.10;

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

/// The algorithms the mock IdP publishes a key for by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Alg {
    EdDsa,
    Es256,
    Rs256,
}

impl Alg {
    const ALL: [Alg; 3] = [Alg::EdDsa, Alg::Es256, Alg::Rs256];

    fn name(self) -> &'static str {
        match self {
            Alg::EdDsa => "EdDSA",
            Alg::Es256 => "ES256",
            Alg::Rs256 => "RS256",
        }
    }

    fn kid(self) -> &'static str {
        match self {
            Alg::EdDsa => "ed-1",
            Alg::Es256 => "ec-1",
            Alg::Rs256 => "rsa-1",
        }
    }
}

/// Mints distinct, valid tokens for one issuer: token `i` carries `first + i` in its `jti`.
#[derive(Clone)]
struct Minter {
    issuer: String,
    alg: Alg,
    iat: u64,
    first: u64,
}

impl Minter {
    fn new(issuer: String, alg: Alg) -> Minter {
        Minter {
            issuer,
            alg,
            iat: keys::now(),
            first: 0,
        }
    }

    fn mint(&self, i: u64) -> String {
        let claims = json!({
            "ver": 1,
            "jti": format!("AT.memory-{}", self.first + i),
            "iss": self.issuer,
            "aud": AUDIENCE,
            "iat": self.iat,
            "exp": self.iat + TOKEN_TTL_S,
            "cid": "memory-client",
            "sub": "memory-client",
            "scp": ["read"],
        });
        let (alg, kid) = (self.alg.name(), self.alg.kid());
        keys::mint_raw(
            &json!({"alg": alg, "kid": kid}),
            &claims,
            Sig::Key { kid, alg },
        )
    }
}

/// One row of the samples table.
struct Sample {
    tokens: u64,
    elapsed: Duration,
    memory: EnvoyMemory,
    verify_hits: u64,
    verify_misses: u64,
}

/// What one sending run produced.
struct Run {
    samples: Vec<Sample>,
    /// Length of one of the tokens sent (they differ by a few bytes at most).
    token_bytes: usize,
    ok: u64,
    failed: u64,
    failures: Vec<String>,
    elapsed: Duration,
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

/// Where the tokens of a run come from.
enum Tokens {
    /// `count` tokens minted on the fly by `threads` threads: never all held at once.
    Minted {
        minter: Minter,
        count: u64,
        threads: u64,
    },
    /// Minted beforehand: for a probe, so that the rate measured is the filter's, not the
    /// signing's.
    Ready(Vec<String>),
}

/// Sends every token through `stack`'s Envoy, each once, over `connections` connections;
/// samples memory every `sample_every` tokens (and before the first and after the last)
/// when asked.
async fn send(
    stack: &Stack,
    tokens: Tokens,
    connections: u64,
    sample_every: Option<u64>,
) -> Result<Run, Error> {
    // Bounded, so minting runs only a little ahead of sending.
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(1024);
    let mut minting = Vec::new();
    let (count, token_bytes) = match tokens {
        Tokens::Minted {
            minter,
            count,
            threads,
        } => {
            let token_bytes = minter.mint(count).len();
            for t in 0..threads {
                let (tx, minter) = (tx.clone(), minter.clone());
                minting.push(std::thread::spawn(move || {
                    let mut i = t;
                    while i < count {
                        if tx.blocking_send(minter.mint(i)).is_err() {
                            break; // the senders stopped
                        }
                        i += threads;
                    }
                }));
            }
            (count, token_bytes)
        }
        Tokens::Ready(list) => {
            let (count, token_bytes) = (list.len() as u64, list.first().map_or(0, String::len));
            let tx = tx.clone();
            minting.push(std::thread::spawn(move || {
                for token in list {
                    if tx.blocking_send(token).is_err() {
                        break;
                    }
                }
            }));
            (count, token_bytes)
        }
    };
    drop(tx);

    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let url = stack.envoy.url("/api/memory");
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (rx, done, failed, failures) =
            (rx.clone(), done.clone(), failed.clone(), failures.clone());
        // A client each, so each sender keeps its own keep-alive connection.
        let (http, url) = (testkit::http_client(), url.clone());
        senders.spawn(async move {
            loop {
                let Some(token) = rx.lock().await.recv().await else {
                    break;
                };
                let outcome = match http.get(&url).bearer_auth(&token).send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        // Read the body so the connection is reused.
                        let body = response.bytes().await.unwrap_or_default();
                        (status != 200).then(|| {
                            format!(
                                "{status}: {}",
                                String::from_utf8_lossy(&body[..body.len().min(200)])
                            )
                        })
                    }
                    Err(e) => Some(format!("no answer: {e}")),
                };
                if let Some(problem) = outcome {
                    failed.fetch_add(1, Ordering::Relaxed);
                    let mut f = failures.lock().unwrap_or_else(|p| p.into_inner());
                    if f.len() < 10 {
                        f.push(problem);
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    let mut samples = Vec::new();
    if let Some(every) = sample_every {
        // Two early samples show the climb while the cache fills (it holds CACHE_ENTRIES),
        // then one every `every` tokens.
        let mut marks: Vec<u64> = [1_000, 10_000]
            .into_iter()
            .filter(|&m| m < every)
            .chain((1..).map(|k| k * every).take_while(|&m| m < count))
            .chain([count])
            .filter(|&m| m <= count)
            .collect();
        marks.dedup();
        samples.push(sample(stack, 0, Duration::ZERO).await?);
        let (mut last_done, mut last_change) = (0, Instant::now());
        for mark in marks {
            loop {
                let n = done.load(Ordering::Relaxed);
                if n >= mark {
                    break;
                }
                if n != last_done {
                    (last_done, last_change) = (n, Instant::now());
                } else if last_change.elapsed() > STALL {
                    return Err(format!("no answer for {STALL:?} after {n} tokens").into());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let n = done.load(Ordering::Relaxed);
            let s = sample(stack, n, started.elapsed()).await?;
            eprintln!(
                "memory: {n:>9} tokens  {:>6.1} s  allocated {} MiB  heap {} MiB  RSS {} MiB  verify hits {} misses {}",
                s.elapsed.as_secs_f64(),
                load::mib(s.memory.allocated),
                load::mib(s.memory.heap_size),
                load::mib_or_dash(s.memory.rss),
                s.verify_hits,
                s.verify_misses
            );
            samples.push(s);
        }
    }
    while let Some(joined) = senders.join_next().await {
        joined?;
    }
    let elapsed = started.elapsed();
    for m in minting {
        m.join().map_err(|_| "a minting thread panicked")?;
    }
    let failures = std::mem::take(&mut *failures.lock().unwrap_or_else(|p| p.into_inner()));
    let (done, failed) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    Ok(Run {
        samples,
        token_bytes,
        ok: done - failed,
        failed,
        failures,
        elapsed,
    })
}

async fn sample(stack: &Stack, tokens: u64, elapsed: Duration) -> Result<Sample, Error> {
    let memory = load::envoy_memory(&stack.http, &stack.envoy).await?;
    let counters = load::oidcgate_counters(&stack.http, &stack.envoy).await?;
    let counter = |name: &str| counters.get(name).copied().unwrap_or(0);
    Ok(Sample {
        tokens,
        elapsed,
        memory,
        verify_hits: counter("oidcgate.cache.verify.hit"),
        verify_misses: counter("oidcgate.cache.verify.miss"),
    })
}

struct Probe {
    alg: Alg,
    sign_us: f64,
    verify_rate: f64,
    tokens: u64,
    failed: u64,
}

impl Probe {
    /// Tokens per second if one core both signed and verified them.
    fn one_core_rate(&self) -> f64 {
        1.0 / (self.sign_us / 1e6 + 1.0 / self.verify_rate)
    }
}

/// Signing cost here and the filter's rate for `count` distinct tokens of `alg`, on an
/// Envoy of its own so the main run starts clean.
async fn probe(alg: Alg, count: u64, connections: u64, config: &Value) -> Result<Probe, Error> {
    let stack = Stack::start(MockIdp::start().await, config.clone(), 1).await;
    let minter = Minter::new(stack.idp.issuer(), alg);
    let signing = Instant::now();
    let tokens: Vec<String> = (0..count).map(|i| minter.mint(i)).collect();
    let sign_us = signing.elapsed().as_secs_f64() * 1e6 / count as f64;
    // The first request also fetches discovery and the key set: not part of the rate.
    let warm = send(&stack, Tokens::Ready(vec![minter.mint(count)]), 1, None).await?;
    let run = send(&stack, Tokens::Ready(tokens), connections, None).await?;
    Ok(Probe {
        alg,
        sign_us,
        verify_rate: count as f64 / run.elapsed.as_secs_f64(),
        tokens: count,
        failed: run.failed + warm.failed,
    })
}

/// An Envoy like the test template but without the filter: the listener routes straight to
/// the echo upstream.
const NO_FILTER_TEMPLATE: &str = r#"admin:
  address: { socket_address: { address: 127.0.0.1, port_value: {{ADMIN_PORT}} } }
static_resources:
  listeners:
  - name: ingress
    address: { socket_address: { address: 127.0.0.1, port_value: {{LISTEN_PORT}} } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: api
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: echo }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: echo
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{ECHO_PORT}} } } }
"#;

struct Baseline {
    requests: u64,
    before: EnvoyMemory,
    after: EnvoyMemory,
    failed: u64,
}

/// Envoy without the filter, idle and after `requests` requests with one bearer token.
async fn baseline(requests: u64, connections: u64) -> Result<Baseline, Error> {
    let dir = std::env::temp_dir().join(format!("oidcgate-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let template = dir.join("no-filter.yaml");
    std::fs::write(&template, NO_FILTER_TEMPLATE)?;
    let opts = EnvoyOpts {
        template,
        ..EnvoyOpts::default()
    };
    let stack = Stack::start_with(MockIdp::start().await, opts).await;
    let before = load::envoy_memory(&stack.http, &stack.envoy).await?;
    let token = Minter::new(stack.idp.issuer(), Alg::EdDsa).mint(0);
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (sent, failed, token) = (sent.clone(), failed.clone(), token.clone());
        // A client each, as in `send`.
        let (http, url) = (testkit::http_client(), stack.envoy.url("/api/memory"));
        tasks.spawn(async move {
            while sent.fetch_add(1, Ordering::Relaxed) < requests {
                let ok = match http.get(&url).bearer_auth(&token).send().await {
                    Ok(r) => r.status().as_u16() == 200 && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined?;
    }
    let after = load::envoy_memory(&stack.http, &stack.envoy).await?;
    drop(stack);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Baseline {
        requests,
        before,
        after,
        failed: failed.load(Ordering::Relaxed),
    })
}

fn thousands(n: u64) -> String {
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
struct Report<'a> {
    settings: &'a Settings,
    provenance: &'a Provenance,
    load_after: String,
    filter_config: &'a Value,
    probes: &'a [Probe],
    run: &'a Run,
    counters: &'a std::collections::BTreeMap<String, u64>,
    idp: Counts,
    baseline: Option<&'a Baseline>,
}

impl Report<'_> {
    fn render(&self) -> String {
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
        "Written by `scripts/memory` (issue 5: \"per-VM memory after a million distinct tokens stays \
         bounded; report it\"). One Envoy worker (`--concurrency 1`, so one request VM) with the \
         built filter in front of the test kit's mock IdP and echo upstream; the driver mints \
         distinct valid bearer tokens on the fly and sends each exactly once, sampling Envoy's \
         memory as it goes. Reproduce with `scripts/memory` (settings: see its header).\n"
    );
        let _ = writeln!(r, "- **Date**: {}", p.date);
        let _ = writeln!(
            r,
            "- **Machine**: {} CPUs, {}; load average {} before, {} after",
            p.cpus, p.cpu_model, p.load_before, load_after
        );
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
        if p.load_before
            .split_whitespace()
            .next()
            .and_then(|l| l.parse::<f64>().ok())
            .is_some_and(|l| l > 0.5)
        {
            let _ = writeln!(
            r,
            "\n> The machine was not idle (1-minute load {} before the run): rates carry that noise; memory figures do not depend on it.",
            p.load_before.split_whitespace().next().unwrap_or("?")
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
fn conclusion(settings: &Settings, run: &Run, baseline: Option<&Baseline>) -> String {
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
            "\n\nThis run sent {} tokens, not the million issue 5 asks for.",
            thousands(settings.tokens)
        );
    }
    text
}
