//! "Core costs": `bench/core-filter` times oidcgate's core operations inside Envoy's V8, as a
//! singleton wasm service on Envoy's main thread with no request around them, and logs one
//! line per operation (`core-bench <name> <ns> ns/op <runs> runs`), then `core-bench done`.

use std::path::Path;
use std::time::{Duration, Instant};

use testkit::envoy::{Envoy, EnvoyOpts, Ports};

use crate::measure::keep_envoy_files;
use crate::settings::Settings;
use crate::Error;

/// How long the service may take to time every operation.
const CORE_TIMEOUT: Duration = Duration::from_secs(180);

/// One operation's cost.
#[derive(Clone, Debug, PartialEq)]
pub struct CoreCost {
    pub operation: String,
    pub ns_per_op: u64,
    pub runs: u64,
}

/// Envoy with `bench/envoy/core.yaml`: `core_wasm` timing oidcgate's core on tokens for
/// `issuer`, on the benchmark's admin port and CPU, logging the wasm service's lines.
pub fn envoy_opts(
    settings: &Settings,
    cpu: Option<usize>,
    core_wasm: &Path,
    issuer: &str,
) -> EnvoyOpts {
    let input = testkit::tokens::core_bench_input(issuer).to_string();
    EnvoyOpts {
        template: testkit::repo_root().join("bench/envoy/core.yaml"),
        ports: Some(Ports {
            admin: settings.admin_port(),
            listen: settings.listen_port(),
        }),
        log_level: Some("warn".into()),
        args: vec!["--component-log-level".into(), "wasm:info".into()],
        cpu,
        extra_vars: vec![
            ("CORE_WASM".into(), core_wasm.to_string_lossy().into_owned()),
            ("CORE_INPUT".into(), input),
        ],
        ..EnvoyOpts::default()
    }
}

/// Runs Envoy with [`envoy_opts`] until the service logs that it is done, and returns what
/// it timed. Envoy's log is kept as `<run_dir>/envoy-core.log`.
pub async fn core_costs(opts: EnvoyOpts, run_dir: &Path) -> Result<Vec<CoreCost>, Error> {
    // No listener to wait for: the service logs what it did.
    collect(Envoy::launch(opts), run_dir, "core").await
}

/// Requests [`host_call_prices`] sends: more than `bench/empty-filter` waits for (400).
const PRICE_REQUESTS: usize = 420;

/// Envoy with `bench/envoy/floor-wasm.yaml`, `bench/empty-filter` configured `@price`.
pub fn prices_opts(settings: &Settings, cpu: Option<usize>, empty_wasm: &Path) -> EnvoyOpts {
    EnvoyOpts {
        template: testkit::repo_root().join("bench/envoy/floor-wasm.yaml"),
        ports: Some(Ports {
            admin: settings.admin_port(),
            listen: settings.listen_port(),
        }),
        log_level: Some("warn".into()),
        cpu,
        extra_vars: vec![
            (
                "EMPTY_WASM".into(),
                empty_wasm.to_string_lossy().into_owned(),
            ),
            ("FLOOR_CONFIG".into(), "@price".into()),
        ],
        ..EnvoyOpts::default()
    }
}

/// What single host calls cost in Envoy's V8: Envoy with [`prices_opts`], sent requests
/// carrying `authorization` until the filter logs its prices (`bench/empty-filter/src/price.rs`).
pub async fn host_call_prices(
    opts: EnvoyOpts,
    run_dir: &Path,
    authorization: &str,
) -> Result<Vec<CoreCost>, Error> {
    let envoy = Envoy::start(opts).await;
    let http = reqwest::Client::new();
    for _ in 0..PRICE_REQUESTS {
        let sent = http
            .get(envoy.url("/"))
            .header("authorization", authorization)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if sent.is_ok_and(|r| r.status() != 200) {
            return Err("the host-call prices' requests did not get 200".into());
        }
    }
    collect(envoy, run_dir, "prices").await
}

/// Waits until the Envoy's wasm logs `core-bench done`, then what it timed. Envoy's log is
/// kept as `<run_dir>/envoy-<name>.log`.
async fn collect(mut envoy: Envoy, run_dir: &Path, name: &str) -> Result<Vec<CoreCost>, Error> {
    let deadline = Instant::now() + CORE_TIMEOUT;
    let log = loop {
        let log = envoy.log();
        if log.contains("core-bench done") || log.contains("core-bench failed") {
            break log;
        }
        if !envoy.running() {
            let kept = keep_envoy_files(&envoy, run_dir, name);
            eprintln!("{}", envoy.log_tail(30));
            let why = format!("Envoy timing {name} exited (log: {})", kept.display());
            return Err(why.into());
        }
        if Instant::now() > deadline {
            let kept = keep_envoy_files(&envoy, run_dir, name);
            return Err(format!(
                "{name}: not done in {} s (log: {})",
                CORE_TIMEOUT.as_secs(),
                kept.display()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let kept = keep_envoy_files(&envoy, run_dir, name);
    envoy.kill();
    let failures: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("core-bench failed"))
        .collect();
    if !failures.is_empty() {
        eprintln!("{}", failures.join("\n"));
        return Err(format!(
            "{name}: could not run its operations (log: {})",
            kept.display()
        )
        .into());
    }
    Ok(parse_costs(&log))
}

/// The timed operations in `log`, up to the first `core-bench done`: Envoy may configure the
/// service's VM again before it is stopped, and that second run is not reported.
fn parse_costs(log: &str) -> Vec<CoreCost> {
    log.lines()
        .take_while(|l| !l.contains("core-bench done"))
        .filter_map(parse_cost)
        .collect()
}

/// `… core-bench <operation> <ns> ns/op <runs> runs …`; the operation is what stands between
/// the last `core-bench ` (Envoy's prefix names the service too) and the figures.
fn parse_cost(line: &str) -> Option<CoreCost> {
    let (_, rest) = line.rsplit_once("core-bench ")?;
    let (before, after) = rest.split_once(" ns/op ")?;
    let (operation, ns) = before.rsplit_once(' ')?;
    let (runs, _) = after.split_once(" runs")?;
    Some(CoreCost {
        operation: operation.to_string(),
        ns_per_op: ns.parse().ok()?,
        runs: runs.trim().parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "[2026-11-29 13:40:01.123][1234][info][wasm] \
                          [source/extensions/common/wasm/context.cc:1195] wasm log core-bench \
                          core-bench: ";

    #[test]
    fn costs_are_read_up_to_the_first_done() {
        let log = [
            "[2026-11-29 13:40:00.000][1234][warning][main] something else".to_string(),
            format!("{PREFIX}core-bench verify RS256 147010 ns/op 2048 runs"),
            format!("{PREFIX}core-bench parse key set (8 keys) 101010 ns/op 2976 runs"),
            format!("{PREFIX}core-bench done"),
            format!("{PREFIX}core-bench verify RS256 150000 ns/op 2000 runs"),
        ]
        .join("\n");
        assert_eq!(
            parse_costs(&log),
            [
                CoreCost {
                    operation: "verify RS256".into(),
                    ns_per_op: 147_010,
                    runs: 2048,
                },
                CoreCost {
                    operation: "parse key set (8 keys)".into(),
                    ns_per_op: 101_010,
                    runs: 2976,
                },
            ]
        );
    }

    #[test]
    fn a_line_without_both_figures_is_no_cost() {
        assert_eq!(parse_cost(&format!("{PREFIX}core-bench done")), None);
        assert_eq!(
            parse_cost(&format!(
                "{PREFIX}core-bench verify RS256 fast ns/op 2048 runs"
            )),
            None
        );
        assert_eq!(parse_cost("core-bench verify RS256 147010 ns/op"), None);
        assert_eq!(
            parse_cost("core-bench verify RS256 147010 ns/op 2048"),
            None
        );
    }
}
