//! Shared by the long runs `soak`, `memory` and `bench` (`scripts/soak`, `scripts/memory`,
//! `scripts/bench`; not part of CI): Envoy memory and counter sampling, settings read from the
//! environment, and the facts every report starts with (date, machine, commit).
//!
//! Unlike the rest of the kit, which serves tests that may panic, everything here returns
//! errors: a run that lasts minutes should end with a report line, not a backtrace.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::envoy::{self, Envoy};
use crate::repo_root;

/// Resolves on SIGINT or SIGTERM. A run selects on it so that Ctrl-C or `kill` still drops
/// its [`crate::Stack`], which stops Envoy, instead of leaving Envoy running behind it.
pub async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        // Without a SIGTERM handler, Ctrl-C alone still works.
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// A long run's `main`: drives `run` until it ends or the process is interrupted, and gives
/// the exit code: 0 if it passed, 1 if it failed, 2 if it could not run. Returned rather than
/// exited with, so that the runtime shuts down and drops every task's share of the
/// [`crate::Stack`], which stops Envoy.
pub async fn run_main<E: std::fmt::Display>(
    name: &str,
    run: impl std::future::Future<Output = Result<bool, E>>,
) -> std::process::ExitCode {
    let outcome = tokio::select! {
        outcome = run => outcome.map_err(|e| e.to_string()),
        () = interrupted() => Err("interrupted".to_string()),
    };
    match outcome {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

/// Envoy's memory at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EnvoyMemory {
    /// Admin `/memory` `allocated`: bytes in use through Envoy's allocator (tcmalloc).
    pub allocated: u64,
    /// Admin `/memory` `heap_size`: bytes the allocator has reserved from the system.
    pub heap_size: u64,
    /// `VmRSS` of the process, which also counts what V8 maps outside the allocator (the
    /// wasm linear memory, code); `None` when `/proc` cannot tell.
    pub rss: Option<u64>,
}

/// Samples Envoy's memory: the admin `/memory` figures and the process's resident set.
pub async fn envoy_memory(http: &reqwest::Client, envoy: &Envoy) -> Result<EnvoyMemory, String> {
    let body = get_json(http, &envoy.admin_url("/memory")).await?;
    let field = |name: &str| {
        body.get(name)
            .and_then(lenient_u64)
            .ok_or_else(|| format!("admin /memory has no numeric {name:?}: {body}"))
    };
    Ok(EnvoyMemory {
        allocated: field("allocated")?,
        heap_size: field("heap_size")?,
        rss: envoy.pid().and_then(vm_rss_bytes),
    })
}

/// `VmRSS` of process `pid`, in bytes.
pub fn vm_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The filter's counters (`wasmcustom.oidcgate.*`, summed over the workers by Envoy), by
/// their name without the `wasmcustom.` prefix. Histograms are left out.
pub async fn oidcgate_counters(
    http: &reqwest::Client,
    envoy: &Envoy,
) -> Result<BTreeMap<String, u64>, String> {
    // `filter` is a regular expression: `wasmcustom\.oidcgate\.`.
    let url = envoy.admin_url("/stats?format=json&filter=wasmcustom%5C.oidcgate%5C.");
    let body = get_json(http, &url).await?;
    let stats = body
        .get("stats")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("admin /stats has no \"stats\" array: {body}"))?;
    Ok(stats
        .iter()
        .filter_map(|s| {
            let name = s.get("name")?.as_str()?;
            let value = s.get("value").and_then(lenient_u64)?;
            Some((name.trim_start_matches("wasmcustom.").to_string(), value))
        })
        .collect())
}

/// Envoy's admin JSON writes 64-bit numbers as strings (`"allocated": "1234"`); accept both.
fn lenient_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("GET {url}: status {}", response.status()));
    }
    response
        .json()
        .await
        .map_err(|e| format!("GET {url}: not JSON: {e}"))
}

/// A whole number from the environment variable `name`, `default` when unset or empty.
pub fn env_number(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .replace('_', "")
            .parse()
            .map_err(|_| format!("{name} must be a whole number, not {v:?}")),
        _ => Ok(default),
    }
}

/// Writes a report to `path`, creating its directory.
pub fn write_report(path: &Path, text: &str) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A path from the environment variable `name` (relative paths from the current directory),
/// else `default` under the repository root.
pub fn env_path(name: &str, default: &str) -> PathBuf {
    match std::env::var_os(name) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => repo_root().join(default),
    }
}

/// What a report says about where and on what it ran.
#[derive(Clone, Debug)]
pub struct Provenance {
    /// `YYYY-MM-DD HH:MM UTC` when the run started.
    pub date: String,
    pub cpus: usize,
    pub cpu_model: String,
    /// `/proc/loadavg`'s three averages before the run.
    pub load_before: String,
    /// `git rev-parse --short HEAD`, with `+ uncommitted changes` when tracked files differ.
    pub commit: String,
    /// `envoy --version`'s version field.
    pub envoy_version: String,
    /// Size of the filter Envoy loads.
    pub wasm_bytes: Option<u64>,
}

impl Provenance {
    pub fn collect() -> Provenance {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, model)| model.trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let envoy_version = command_output(Command::new(envoy::envoy_bin()).arg("--version"))
            .and_then(|v| {
                let (_, version) = v.split_once("version: ")?;
                let version = version.trim();
                // `<sha>/1.40.0/Clean/RELEASE/BoringSSL`: the part after the hash.
                Some(
                    version
                        .split_once('/')
                        .map_or(version, |(_, v)| v)
                        .to_string(),
                )
            })
            .unwrap_or_else(|| "unknown".into());
        let wasm_bytes = std::env::var_os("OIDCGATE_WASM")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("target/wasm32-wasip1/release/oidcgate.wasm"))
            .metadata()
            .ok()
            .map(|m| m.len());
        Provenance {
            date: utc_date(SystemTime::now()),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            load_before: load_average(),
            commit: commit(),
            envoy_version,
            wasm_bytes,
        }
    }

    /// `<n> CPUs, <model>; load average <before> before, <load_after> after`.
    pub fn machine(&self, load_after: &str) -> String {
        format!(
            "{} CPUs, {}; load average {} before, {load_after} after",
            self.cpus, self.cpu_model, self.load_before
        )
    }

    /// The 1-minute load average before the run, as `/proc/loadavg` wrote it, when it was
    /// above 0.5: other processes then shared the cores, and a report should say so.
    pub fn busy(&self) -> Option<&str> {
        let load = self.load_before.split_whitespace().next()?;
        load.parse::<f64>().is_ok_and(|l| l > 0.5).then_some(load)
    }
}

/// The three load averages of `/proc/loadavg`.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn commit() -> String {
    let root = repo_root();
    let Some(head) = command_output(Command::new("git").arg("-C").arg(&root).args([
        "rev-parse",
        "--short",
        "HEAD",
    ])) else {
        return "unknown".into();
    };
    let dirty = command_output(Command::new("git").arg("-C").arg(&root).args([
        "status",
        "--porcelain",
        "--untracked-files=no",
    ]))
    .is_some_and(|s| !s.trim().is_empty());
    let head = head.trim();
    if dirty {
        format!("{head} + uncommitted changes")
    } else {
        head.to_string()
    }
}

fn command_output(command: &mut Command) -> Option<String> {
    let out = command.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `YYYY-MM-DD HH:MM UTC`.
pub fn utc_date(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (non-negative here).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

/// [`mib`] of an optional figure, `–` when missing.
pub fn mib_or_dash(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "–".into(), mib)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc_date(UNIX_EPOCH), "1970-01-01 00:00 UTC");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096); // 2024-02-29 12:34:56
        assert_eq!(utc_date(t), "2024-02-29 12:34 UTC");
    }

    #[test]
    fn admin_numbers_as_strings_or_numbers() {
        assert_eq!(lenient_u64(&json!("1234")), Some(1234));
        assert_eq!(lenient_u64(&json!(5)), Some(5));
        assert_eq!(lenient_u64(&json!("x")), None);
    }
}
