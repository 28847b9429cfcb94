//! Instructions per request, counted by callgrind: Envoy runs under valgrind, and once warm
//! the instructions all its threads execute while it answers requests one after another are
//! counted. Unlike CPU time, the count does not move with the machine's load or clock (two
//! runs of one configuration agree within 0.3%), so it shows differences of a few hundred
//! instructions that wrk's rounds, which scatter by several percent, cannot. It is not time
//! (a host call's instructions stall on memory more than a loop's), so it complements the
//! CPU-time tables rather than replacing them.
//!
//! Envoy's own timers and oidcgate's (every 20 ms) run while the requests are counted, and
//! under valgrind the requests take seconds; so the same Envoy is first counted idle, and
//! that rate, times the time the requests took, is taken off.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use testkit::Stack;

use crate::measure::Bench;
use crate::settings::{Credential, Setup};
use crate::Error;

/// The configurations counted, in this order: a subset of `SETUPS` by id.
pub const COUNTED: [&str; 8] = [
    "none",
    "empty-wasm",
    "floor-wasm",
    "floor-all",
    "oidcgate-bearer",
    "oidcgate-routes",
    "empty-wasm-basic",
    "oidcgate-cc",
];

/// Requests answered before counting: V8 compiles hot wasm functions again, optimized, in
/// the background, and that work must be over.
const WARM_REQUESTS: usize = 3000;
const COUNTED_REQUESTS: usize = 1000;
const IDLE: Duration = Duration::from_secs(3);

/// One configuration's count.
#[derive(Clone, Debug, PartialEq)]
pub struct Count {
    pub id: &'static str,
    pub label: &'static str,
    /// Envoy's instructions per request, the idle rate taken off.
    pub per_request: f64,
    /// What was taken off: instructions per second while idle.
    pub idle_per_s: f64,
}

/// Whether valgrind's callgrind and its control program are installed.
pub fn available() -> bool {
    ["valgrind", "callgrind_control"].iter().all(|p| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Counts each of `setups` that [`COUNTED`] names, each in a fresh Envoy under callgrind
/// (restarted on `stack`).
pub async fn measure(
    bench: &Bench<'_>,
    stack: &mut Stack,
    setups: &[&'static Setup],
) -> Result<Vec<Count>, Error> {
    let mut counts = Vec::new();
    for id in COUNTED {
        let Some(setup) = setups.iter().find(|s| s.id == id) else {
            continue;
        };
        let count = measure_one(bench, stack, setup).await?;
        println!(
            "  {:<16} {:>9.0} instructions/request (idle {:.0}/s taken off)",
            count.id, count.per_request, count.idle_per_s
        );
        counts.push(count);
    }
    Ok(counts)
}

async fn measure_one(
    bench: &Bench<'_>,
    stack: &mut Stack,
    setup: &'static Setup,
) -> Result<Count, Error> {
    let out = bench.run_dir.join(format!("callgrind-{}.out", setup.id));
    for old in parts(&out) {
        let _ = std::fs::remove_file(old);
    }
    let mut opts = bench.envoy_opts(setup);
    // The count does not depend on where Envoy runs; valgrind serialises its threads anyway.
    opts.cpu = None;
    opts.wrapper = vec![
        "valgrind".into(),
        "--tool=callgrind".into(),
        "--instr-atstart=no".into(),
        // V8 writes and rewrites the code it runs.
        "--smc-check=all".into(),
        format!("--callgrind-out-file={}", out.display()),
    ];
    opts.ready_timeout = Some(Duration::from_secs(600));
    stack.restart_envoy(opts).await;
    let pid = stack.envoy.pid().ok_or("Envoy is not running")?;
    let client = testkit::http_client();
    let url = stack.envoy.url("/");
    let header = authorization(bench, setup.credential);
    let send = |n: usize| {
        let (client, url, header) = (client.clone(), url.clone(), header.clone());
        async move {
            for _ in 0..n {
                let mut request = client.get(&url);
                if let Some(h) = &header {
                    request = request.header("authorization", h);
                }
                let status = request
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                if status != 200 {
                    return Err(format!("{}: a request got {status}, not 200", setup.id));
                }
            }
            Ok(())
        }
    };
    // The first oidcgate request waits for discovery and the key set, slowly under valgrind.
    let deadline = Instant::now() + Duration::from_secs(300);
    while send(1).await.is_err() {
        if Instant::now() > deadline {
            return Err(format!("{}: no 200 under valgrind", setup.id).into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    send(WARM_REQUESTS).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;

    control(pid, &["-i", "on"])?;
    let idle_started = Instant::now();
    tokio::time::sleep(IDLE).await;
    control(pid, &["--dump=idle"])?;
    let idle_s = idle_started.elapsed().as_secs_f64();
    let started = Instant::now();
    send(COUNTED_REQUESTS).await?;
    control(pid, &["--dump=requests"])?;
    let busy_s = started.elapsed().as_secs_f64();
    control(pid, &["-i", "off"])?;
    stack.envoy.stop(Duration::from_secs(120)).await;

    let totals = |part: &str| -> Result<f64, Error> {
        parts(&out)
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .find(|text| {
                text.lines()
                    .any(|l| l == format!("desc: Trigger: dump {part}"))
            })
            .and_then(|text| totals(&text))
            .ok_or_else(|| {
                format!(
                    "{}: no callgrind dump `{part}` in {}",
                    setup.id,
                    out.display()
                )
                .into()
            })
    };
    let idle_per_s = totals("idle")? / idle_s;
    let requests = totals("requests")?;
    Ok(Count {
        id: setup.id,
        label: setup.label,
        per_request: (requests - idle_per_s * busy_s) / COUNTED_REQUESTS as f64,
        idle_per_s,
    })
}

/// The `Authorization` value of a fixed credential.
fn authorization(bench: &Bench<'_>, credential: Credential) -> Option<String> {
    bench
        .header(credential)
        .and_then(|h| h.strip_prefix("Authorization: ").map(str::to_string))
}

fn control(pid: u32, args: &[&str]) -> Result<(), Error> {
    let done = Command::new("callgrind_control")
        .args(args)
        .arg(pid.to_string())
        .output()?;
    if !done.status.success() {
        return Err(format!(
            "callgrind_control {args:?} failed: {}",
            String::from_utf8_lossy(&done.stderr)
        )
        .into());
    }
    Ok(())
}

/// `out` and the dumps callgrind wrote next to it (`out.1`, `out.2`, ...).
fn parts(out: &Path) -> Vec<PathBuf> {
    let Some(name) = out.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Vec::new();
    };
    let dir = out.parent().unwrap_or(Path::new("."));
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(&name))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// The `totals:` line of one callgrind dump (its only event is instructions).
fn totals(dump: &str) -> Option<f64> {
    dump.lines()
        .find_map(|l| l.strip_prefix("totals: "))
        .and_then(|t| t.trim().parse().ok())
}

/// The counts with their differences to the floors they are compared with.
pub fn table(counts: &[Count]) -> String {
    use std::fmt::Write as _;
    let find = |id: &str| counts.iter().find(|c| c.id == id).map(|c| c.per_request);
    let mut t = String::new();
    t.push_str("| configuration | instructions per request | idle instructions/s taken off |\n|---|---:|---:|\n");
    for c in counts {
        let _ = writeln!(
            t,
            "| {} | {:.0} | {:.0} |",
            c.label, c.per_request, c.idle_per_s
        );
    }
    t.push_str("\n| pair | ratio (second / first) | added instructions |\n|---|---:|---:|\n");
    let pairs = [
        (
            "oidcgate bearer hot vs host-call floor",
            "oidcgate-bearer",
            "floor-wasm",
        ),
        (
            "floor with all of oidcgate's calls vs host-call floor",
            "floor-all",
            "floor-wasm",
        ),
        (
            "oidcgate bearer hot vs floor with all of oidcgate's calls",
            "oidcgate-bearer",
            "floor-all",
        ),
        (
            "oidcgate bearer hot, 20 routes and 5 policies vs without",
            "oidcgate-routes",
            "oidcgate-bearer",
        ),
        (
            "oidcgate client credentials hot vs empty wasm (Basic)",
            "oidcgate-cc",
            "empty-wasm-basic",
        ),
        (
            "oidcgate bearer hot vs empty wasm",
            "oidcgate-bearer",
            "empty-wasm",
        ),
    ];
    for (what, a, b) in pairs {
        if let (Some(a), Some(b)) = (find(a), find(b)) {
            let _ = writeln!(t, "| {what} | {:.3} | {:+.0} |", b / a, a - b);
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::SETUPS;

    #[test]
    fn every_counted_configuration_is_a_setup() {
        for id in COUNTED {
            assert!(SETUPS.iter().any(|s| s.id == id), "{id}");
        }
    }

    #[test]
    fn a_dump_gives_its_totals_and_pairs_their_ratio() {
        let dump = "version: 1\ncreator: callgrind-3.19.0\npart: 2\ndesc: Trigger: dump requests\nevents: Ir\nsummary: 0\ntotals: 164603695\n";
        assert_eq!(totals(dump), Some(164_603_695.0));
        assert_eq!(totals("events: Ir\n"), None);
        let count = |id, per_request| Count {
            id,
            label: id,
            per_request,
            idle_per_s: 0.0,
        };
        let t = table(&[
            count("floor-wasm", 150_000.0),
            count("oidcgate-bearer", 160_000.0),
        ]);
        assert!(
            t.contains("| oidcgate bearer hot vs host-call floor | 0.938 | +10000 |"),
            "{t}"
        );
        assert!(!t.contains("20 routes"), "{t}");
    }
}
