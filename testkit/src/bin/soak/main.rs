//! `soak` (run by `scripts/soak`, not part of CI): minutes of mixed load against a real Envoy
//! (two workers, so two VMs sharing state) running the built filter, while the mock IdP
//! rotates its signing key, goes down and misbehaves. Every answer is judged against what its
//! request deserves; Envoy's memory is sampled all along.
//!
//! Settings (environment): SOAK_SECONDS (default 300), SOAK_TASKS concurrent request loops
//! (default 16), SOAK_SEED (default 1; each loop draws its request kinds from its own seeded
//! generator, so the mix is reproducible, the timing is not), SOAK_WEIGHTS (`Kind=weight,…`
//! over [`mix::Kind::MIX`]), SOAK_OUT (default docs/soak.md), SOAK_NOTE (a line added to the
//! report).
//!
//! Exits 0 when every answer was expected or inside the documented tolerance (see
//! [`judge::judge`]), 1 otherwise — and always 1 when an invalid credential got a 200, a client
//! secret reached the upstream, or the upstream saw more requests than were answered 200.
//!
//! Here: the run itself (set-up, warm-up, sampling). [`mix`]: the request kinds; [`chaos`]:
//! what the IdP goes through; [`traffic`]: the request loops; [`judge`]: the tolerance;
//! [`report`]: the report.

mod chaos;
mod judge;
mod mix;
mod report;
mod traffic;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::idp::{Counts, MockIdp, AUDIENCE};
use testkit::load::{self, EnvoyMemory, Provenance};
use testkit::Stack;

use chaos::{run_chaos, schedule, Chaos, ChaosState, KEY_CYCLE, TOKEN_TTL};
use mix::{mix_from_env, Mix};
use report::Report;
use traffic::{mint, request_loop, Progress, Tally, Variant};

type Error = Box<dyn std::error::Error + Send + Sync>;

const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// The report's memory table shows every third sample (and the last); the summary line
/// under it covers all of them.
const SHOW_EVERY_NTH: usize = 3;

/// The filter's `timeout` (ms) and `rediscovery_lifetime` (s) in this run.
const TIMEOUT_MS: u64 = 2000;
const REDISCOVERY_S: u64 = 5;

/// Clients registered before the run, whose tokens the filter caches.
const CLIENTS: [(&str, &str); 4] = [
    ("soak-a", "soak-a-secret"),
    ("soak-b", "soak-b-secret"),
    ("soak-c", "soak-c-secret"),
    ("soak-d", "soak-d-secret"),
];

/// One row of the memory table.
struct Sample {
    at: Duration,
    requests: u64,
    unexpected: u64,
    memory: EnvoyMemory,
    idp: Counts,
}

async fn sample(stack: &Stack, chaos: &Chaos, progress: &Progress) -> Result<Sample, Error> {
    Ok(Sample {
        at: chaos.start.elapsed(),
        requests: progress.requests.load(Ordering::Relaxed),
        unexpected: progress.unexpected.load(Ordering::Relaxed),
        memory: load::envoy_memory(&stack.http, &stack.envoy).await?,
        idp: stack.idp.counts(),
    })
}

struct Settings {
    seconds: u64,
    tasks: u64,
    seed: u64,
    mix: Mix,
    out: std::path::PathBuf,
    note: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    load::run_main("soak", run()).await
}

fn filter_config() -> Value {
    json!({
        "timeout": TIMEOUT_MS,
        "rediscovery_lifetime": REDISCOVERY_S,
        "audience_required": [AUDIENCE],
        "scopes_required": ["read"],
        "upstream_headers_claims": ["iss", "sub"],
        "upstream_headers_names": ["Issuer_Header", "X-Subject"],
    })
}

/// `Ok(false)`: the run completed but failed its checks.
async fn run() -> Result<bool, Error> {
    let settings = Settings {
        seconds: load::env_number("SOAK_SECONDS", 300)?,
        tasks: load::env_number("SOAK_TASKS", 16)?,
        seed: load::env_number("SOAK_SEED", 1)?,
        mix: mix_from_env()?,
        out: load::env_path("SOAK_OUT", "docs/soak.md"),
        note: std::env::var("SOAK_NOTE").unwrap_or_default(),
    };
    if settings.seconds < 10 || settings.tasks == 0 {
        return Err("SOAK_SECONDS must be at least 10 and SOAK_TASKS at least 1".into());
    }
    let provenance = Provenance::collect();

    let idp = MockIdp::start().await;
    idp.publish(&[KEY_CYCLE[0]]);
    idp.rotate_to(KEY_CYCLE[0]);
    idp.set_token_ttl(TOKEN_TTL);
    for (id, secret) in CLIENTS {
        idp.add_client(id, secret, &["read"], &["read"]);
    }
    let stack = Arc::new(Stack::start(idp, filter_config(), 2).await);
    eprintln!(
        "soak: Envoy --concurrency 2 at {}, {} loops for {} s",
        stack.envoy.url("/"),
        settings.tasks,
        settings.seconds
    );
    let idle = load::envoy_memory(&stack.http, &stack.envoy).await?;

    warm_up(&stack).await?;
    stack.idp.reset_counts();
    let upstream_before = stack.echo.requests();

    let run_for = Duration::from_secs(settings.seconds);
    let chaos = Arc::new(Chaos {
        start: Instant::now(),
        state: Mutex::new(ChaosState {
            active_kid: KEY_CYCLE[0],
            published: vec![KEY_CYCLE[0]],
            ..ChaosState::default()
        }),
    });
    let until = chaos.start + run_for;
    let progress = Arc::new(Progress::default());
    let plan = schedule(run_for);
    let chaos_task = tokio::spawn(run_chaos(chaos.clone(), stack.clone(), plan.clone()));
    let mut loops = tokio::task::JoinSet::new();
    for id in 0..settings.tasks as usize {
        loops.spawn(request_loop(
            id,
            settings.seed,
            stack.clone(),
            chaos.clone(),
            progress.clone(),
            settings.mix,
            until,
        ));
    }

    let mut samples = vec![sample(&stack, &chaos, &progress).await?];
    loop {
        let next = chaos.start + SAMPLE_EVERY * samples.len() as u32;
        if next >= until {
            break;
        }
        tokio::time::sleep_until(next.into()).await;
        let s = sample(&stack, &chaos, &progress).await?;
        eprintln!(
            "soak: {:>4.0} s  {:>8} requests  {} unexpected  allocated {} MiB  heap {} MiB  RSS {} MiB  IdP calls {}/{}/{}",
            s.at.as_secs_f64(),
            s.requests,
            s.unexpected,
            load::mib(s.memory.allocated),
            load::mib(s.memory.heap_size),
            load::mib_or_dash(s.memory.rss),
            s.idp.discovery,
            s.idp.jwks,
            s.idp.token
        );
        samples.push(s);
    }
    let mut tally = Tally::default();
    while let Some(joined) = loops.join_next().await {
        tally.merge(joined??);
    }
    let elapsed = chaos.start.elapsed();
    // The schedule only holds actions inside the run; whatever is left is not waited for.
    chaos_task.abort();
    // The filter moves its counters to Envoy on a 20 ms tick.
    tokio::time::sleep(Duration::from_millis(200)).await;
    samples.push(sample(&stack, &chaos, &progress).await?);
    let counters = load::oidcgate_counters(&stack.http, &stack.envoy).await?;
    let upstream = stack.echo.requests() - upstream_before;
    let load_after = load::load_average();
    save_envoy_log(&stack);
    let chaos_log = std::mem::take(&mut chaos.state().log);

    let report = Report {
        settings: &settings,
        provenance: &provenance,
        load_after,
        idle,
        samples: &samples,
        tally: &tally,
        counters: &counters,
        chaos_log: &chaos_log,
        elapsed,
        upstream,
    };
    let passed = report.passed();
    let text = report.render();
    load::write_report(&settings.out, &text)?;
    eprintln!(
        "soak: {} requests, {} unexpected, {} invalid let through; {} ({})",
        tally.sum(|t| t.statuses.values().sum()),
        tally.sum(|t| t.unexpected),
        tally.sum(|t| t.wrong_allow),
        if passed { "PASS" } else { "FAIL" },
        settings.out.display()
    );
    for e in &tally.examples {
        eprintln!("soak:   {e}");
    }
    Ok(passed)
}

/// One answered request per registered client and a valid bearer token, so the run starts
/// with discovery, keys and client tokens in place.
async fn warm_up(stack: &Stack) -> Result<(), Error> {
    let (token, _) = mint(stack.idp.issuer(), KEY_CYCLE[0], Variant::Valid, 0).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let get = || {
        stack
            .http
            .get(stack.envoy.url("/warm-up"))
            .timeout(Duration::from_secs(10))
    };
    let mut requests = vec![get().bearer_auth(&token)];
    for (id, secret) in CLIENTS {
        requests.push(get().basic_auth(id, Some(secret)));
    }
    for request in requests {
        loop {
            let Some(attempt) = request.try_clone() else {
                return Err("warm-up request cannot be repeated".into());
            };
            let status = attempt.send().await.map(|r| r.status().as_u16()).ok();
            if status == Some(200) {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "warm-up: a valid credential answered {status:?}, not 200, for 20 s"
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Keeps Envoy's log in `.run/soak/envoy.log` (the test kit removes its own copy).
fn save_envoy_log(stack: &Stack) {
    let dir = testkit::repo_root().join(".run/soak");
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join("envoy.log"), stack.envoy.log());
    }
}
