//! "What a worker costs": Envoy's resident memory once it has answered a first allowed
//! request, and the time from its start to that answer, for no filter, the empty wasm filter
//! and oidcgate (one bearer token: discovery and the key set are fetched from the mock IdP
//! before it is allowed), at 1, 2 and 4 workers. Unpinned (4 workers on 2 CPUs), a fresh
//! Envoy each time, medians over the rounds.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use testkit::envoy::Envoy;

use crate::measure::Bench;
use crate::settings::{Setup, SETUPS};
use crate::Error;

/// The configurations compared, by id.
const COMPARED: [&str; 3] = ["none", "empty-wasm", "oidcgate-bearer"];
pub const WORKERS: [u32; 3] = [1, 2, 4];
/// How long after the first allowed request the resident size is read.
const SETTLE: Duration = Duration::from_millis(1500);
const READY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, PartialEq)]
pub struct WorkerCost {
    pub id: &'static str,
    pub workers: u32,
    /// Medians over the rounds.
    pub rss_mib: f64,
    pub ready_ms: f64,
}

/// One sample per configuration, worker count and round.
pub async fn measure(bench: &Bench<'_>, rounds: u64) -> Result<Vec<WorkerCost>, Error> {
    let http = testkit::http_client();
    let mut samples: Vec<(&'static str, u32, f64, f64)> = Vec::new();
    for _ in 0..rounds {
        for workers in WORKERS {
            for setup in COMPARED
                .iter()
                .filter_map(|id| SETUPS.iter().find(|s| s.id == *id))
            {
                let (rss_mib, ready_ms) = sample(bench, &http, setup, workers).await?;
                println!(
                    "{:<16} {workers} worker(s): {rss_mib:.1} MiB resident, first allowed answer after {ready_ms:.0} ms",
                    setup.id
                );
                samples.push((setup.id, workers, rss_mib, ready_ms));
            }
        }
    }
    let mut costs = Vec::new();
    for workers in WORKERS {
        for id in COMPARED {
            let mine = || samples.iter().filter(|s| s.0 == id && s.1 == workers);
            costs.push(WorkerCost {
                id,
                workers,
                rss_mib: median(mine().map(|s| s.2).collect()),
                ready_ms: median(mine().map(|s| s.3).collect()),
            });
        }
    }
    Ok(costs)
}

async fn sample(
    bench: &Bench<'_>,
    http: &reqwest::Client,
    setup: &Setup,
    workers: u32,
) -> Result<(f64, f64), Error> {
    let mut opts = bench.envoy_opts(setup);
    opts.concurrency = workers;
    opts.cpu = None;
    opts.idp_port = bench.settings.idp_port();
    let show_log = std::env::var_os("BENCH_WORKERS_LOG").is_some();
    if show_log {
        opts.log_level = Some("info".into());
    }
    let header = bench.header(setup.credential);
    let started = Instant::now();
    let mut envoy = Envoy::launch(opts);
    let url = envoy.url("/");
    let ready = loop {
        let mut request = http.get(&url).timeout(Duration::from_secs(2));
        if let Some((name, value)) = header.as_deref().and_then(|h| h.split_once(": ")) {
            request = request.header(name, value);
        }
        if let Ok(answer) = request.send().await {
            if answer.status().as_u16() == 200 {
                break started.elapsed();
            }
        }
        if started.elapsed() > READY_TIMEOUT || !envoy.running() {
            eprintln!("{}", envoy.log_tail(30));
            envoy.kill();
            return Err(format!("{} with {workers} workers: no allowed answer", setup.id).into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    tokio::time::sleep(SETTLE).await;
    let rss = envoy.pid().and_then(rss_kib);
    if show_log {
        let log = envoy.log();
        log.lines()
            .filter(|l| {
                l.contains("wasm log")
                    || l.contains("starting main dispatch")
                    || l.contains("initializing epoch")
                    || l.contains("loading")
            })
            .for_each(|l| println!("  {l}"));
        println!("  ready after {} ms", ready.as_millis());
    }
    let failed = envoy
        .log()
        .lines()
        .filter(|l| l.contains("failed: answered"))
        .count();
    if failed > 0 {
        println!("  ({} with {workers} workers: {failed} IdP fetch(es) failed before the first allowed answer)", setup.id);
    }
    envoy.kill();
    let rss = rss.ok_or("no VmRSS for Envoy")?;
    Ok((rss as f64 / 1024.0, ready.as_secs_f64() * 1000.0))
}

/// `VmRSS` of `/proc/<pid>/status`, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The report's table: resident memory and time to the first allowed answer, what the
/// empty filter adds to no filter and oidcgate to the empty filter, and each configuration's
/// cost per extra worker (from 1 to 4 workers).
pub fn table(costs: &[WorkerCost]) -> String {
    let get = |id: &str, w: u32| costs.iter().find(|c| c.id == id && c.workers == w);
    let mut r = String::new();
    r.push_str("| workers | no filter, MiB | empty wasm filter, MiB | oidcgate, MiB | empty − none, MiB | oidcgate − empty, MiB | start to first allowed answer, ms: none / empty / oidcgate |\n");
    r.push_str("|---:|---:|---:|---:|---:|---:|---:|\n");
    for w in WORKERS {
        let (Some(none), Some(empty), Some(ours)) = (
            get("none", w),
            get("empty-wasm", w),
            get("oidcgate-bearer", w),
        ) else {
            continue;
        };
        let _ = writeln!(
            r,
            "| {w} | {:.1} | {:.1} | {:.1} | {:+.1} | {:+.1} | {:.0} / {:.0} / {:.0} |",
            none.rss_mib,
            empty.rss_mib,
            ours.rss_mib,
            empty.rss_mib - none.rss_mib,
            ours.rss_mib - empty.rss_mib,
            none.ready_ms,
            empty.ready_ms,
            ours.ready_ms
        );
    }
    let (first, last) = (WORKERS[0], WORKERS[WORKERS.len() - 1]);
    let slope = |id: &str| match (get(id, first), get(id, last)) {
        (Some(a), Some(b)) => format!("{:+.1}", (b.rss_mib - a.rss_mib) / f64::from(last - first)),
        _ => "?".into(),
    };
    let _ = writeln!(
        r,
        "\nEach worker beyond the first, MiB (from {first} to {last}): no filter {}, empty wasm filter {}, oidcgate {}.",
        slope("none"),
        slope("empty-wasm"),
        slope("oidcgate-bearer")
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_gives_what_each_worker_adds() {
        let cost = |id, workers, rss_mib, ready_ms| WorkerCost {
            id,
            workers,
            rss_mib,
            ready_ms,
        };
        let costs = [
            cost("none", 1, 63.0, 20.0),
            cost("empty-wasm", 1, 86.0, 60.0),
            cost("oidcgate-bearer", 1, 110.0, 90.0),
            cost("none", 4, 64.5, 20.0),
            cost("empty-wasm", 4, 89.0, 60.0),
            cost("oidcgate-bearer", 4, 116.0, 90.0),
        ];
        let t = table(&costs);
        assert_eq!(
            t.lines().nth(2),
            Some("| 1 | 63.0 | 86.0 | 110.0 | +23.0 | +24.0 | 20 / 60 / 90 |")
        );
        assert!(
            t.ends_with("no filter +0.5, empty wasm filter +1.0, oidcgate +2.0.\n"),
            "{t}"
        );
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
