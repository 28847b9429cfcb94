//! The figures of a run and the report (`docs/bench.md`): medians per configuration over the
//! rounds, the ratios the targets are set on, Envoy CPU time added per request, the core
//! costs, every round.
//!
//! Medians are rounded as the report shows them (req/s and latencies to whole numbers, CPU
//! time to hundredths) before ratios and differences are taken from them, so every figure can
//! be recomputed from the report itself.

use std::fmt::Write as _;

use testkit::load::Provenance;

use crate::core::CoreCost;
use crate::measure::Row;
use crate::settings::{Settings, Setup};
use crate::workers::{self, WorkerCost};

/// One configuration over every round: medians, and totals of the counts.
#[derive(Clone, Debug, PartialEq)]
pub struct Medians {
    pub id: &'static str,
    pub label: &'static str,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub cpu_us: f64,
    /// The lowest and highest round's req/s.
    pub rps_low: f64,
    pub rps_high: f64,
    pub non2xx: u64,
    pub socket_errors: u64,
    pub verify_hits: u64,
    pub verify_lookups: u64,
    pub token_hits: u64,
    pub token_lookups: u64,
}

/// The median of `values`, the mean of the middle two when their number is even.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// `x` as the report prints it with `decimals` decimals.
fn shown(x: f64, decimals: usize) -> f64 {
    format!("{x:.decimals$}").parse().unwrap_or(x)
}

/// Medians for each configuration of `setups` that has rows, in that order.
pub fn medians(setups: &[&'static Setup], rows: &[Row]) -> Vec<Medians> {
    setups
        .iter()
        .filter_map(|setup| {
            let mine: Vec<&Row> = rows.iter().filter(|r| r.id == setup.id).collect();
            if mine.is_empty() {
                return None;
            }
            let of = |f: fn(&Row) -> f64| mine.iter().map(|r| f(r)).collect::<Vec<f64>>();
            let sum = |f: fn(&Row) -> u64| mine.iter().map(|r| f(r)).sum::<u64>();
            let rps = of(|r| r.wrk.rps);
            let (verify_hits, token_hits) = (sum(|r| r.verify_hits), sum(|r| r.token_hits));
            Some(Medians {
                id: setup.id,
                label: setup.label,
                rps: shown(median(rps.clone()), 0),
                p50_us: shown(median(of(|r| r.wrk.p50_us)), 0),
                p99_us: shown(median(of(|r| r.wrk.p99_us)), 0),
                cpu_us: shown(median(of(|r| r.cpu_us)), 2),
                rps_low: shown(rps.iter().copied().fold(f64::INFINITY, f64::min), 0),
                rps_high: shown(rps.iter().copied().fold(f64::NEG_INFINITY, f64::max), 0),
                non2xx: sum(|r| r.wrk.non2xx),
                socket_errors: sum(|r| r.wrk.socket_errors),
                verify_hits,
                verify_lookups: verify_hits + sum(|r| r.verify_misses),
                token_hits,
                token_lookups: token_hits + sum(|r| r.token_misses),
            })
        })
        .collect()
}

/// Whether every request of every measurement was answered 200.
pub fn all_ok(medians: &[Medians]) -> bool {
    medians
        .iter()
        .all(|m| m.non2xx == 0 && m.socket_errors == 0)
}

/// The table of medians, one row per configuration.
pub fn results_table(medians: &[Medians]) -> String {
    let mut t = String::new();
    t.push_str("| configuration | req/s | req/s, lowest–highest round | p50 (µs) | p99 (µs) | Envoy CPU per request (µs) | vs no filter | non-2xx | oidcgate cache hits |\n");
    t.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---|\n");
    let none = find(medians, "none").map(|m| m.rps).filter(|&r| r != 0.0);
    for m in medians {
        let vs = none.map_or_else(|| "–".into(), |none| format!("{:.2}", m.rps / none));
        let mut cache = "–".to_string();
        if m.id.starts_with("oidcgate-") {
            cache = format!("verify {}/{}", m.verify_hits, m.verify_lookups);
            if m.token_lookups != 0 {
                let _ = write!(cache, ", token {}/{}", m.token_hits, m.token_lookups);
            }
        }
        let mut flag = m.non2xx.to_string();
        if m.socket_errors != 0 {
            let _ = write!(flag, " (+{} socket errors)", m.socket_errors);
        }
        let _ = writeln!(
            t,
            "| {} | {:.0} | {:.0}–{:.0} | {:.0} | {:.0} | {:.2} | {vs} | {flag} | {cache} |",
            m.label, m.rps, m.rps_low, m.rps_high, m.p50_us, m.p99_us, m.cpu_us
        );
    }
    t
}

fn find<'a>(medians: &'a [Medians], id: &str) -> Option<&'a Medians> {
    medians.iter().find(|m| m.id == id)
}

/// `a`'s median req/s over `b`'s, as printed (two decimals); `None` if either did not run.
fn ratio(medians: &[Medians], a: &str, b: &str) -> Option<f64> {
    let (a, b) = (find(medians, a)?.rps, find(medians, b)?.rps);
    (b != 0.0).then(|| shown(a / b, 2))
}

/// How many µs of Envoy CPU time per request `a` costs more than `b`.
fn cpu_added(medians: &[Medians], a: &str, b: &str) -> String {
    match (find(medians, a), find(medians, b)) {
        (Some(a), Some(b)) => format!("{:+.1}", a.cpu_us - b.cpu_us),
        _ => "n/a".into(),
    }
}

/// The ratios the targets are set on, and the same pairs as Envoy CPU time added.
pub fn ratios_table(medians: &[Medians]) -> String {
    let mut t = String::new();
    t.push_str("| ratio (req/s) | measured | target | |\n|---|---:|---:|---|\n");
    let rows = [
        (
            "oidcgate bearer hot / empty wasm",
            "oidcgate-bearer",
            "empty-wasm",
            Some(0.97),
        ),
        (
            "oidcgate client credentials hot / empty wasm",
            "oidcgate-cc",
            "empty-wasm-basic",
            Some(0.97),
        ),
        (
            "host-call floor / empty wasm (what the host charges any filter for this job)",
            "floor-wasm",
            "empty-wasm",
            None,
        ),
        (
            "oidcgate bearer hot / host-call floor",
            "oidcgate-bearer",
            "floor-wasm",
            Some(0.97),
        ),
        (
            "host-call floor / floor with all of oidcgate's calls (what the calls beyond the three writes cost)",
            "floor-wasm",
            "floor-all",
            None,
        ),
        (
            "oidcgate bearer hot / floor with all of oidcgate's calls (oidcgate's own work)",
            "oidcgate-bearer",
            "floor-all",
            Some(0.97),
        ),
        (
            "oidcgate bearer hot, 20 routes and 5 policies / without them",
            "oidcgate-routes",
            "oidcgate-bearer",
            None,
        ),
        (
            "oidcgate cold / jwt_authn cold",
            "oidcgate-cold",
            "jwt-cold",
            Some(0.5),
        ),
    ];
    for (what, a, b, target) in rows {
        let measured = ratio(medians, a, b);
        let shown = measured.map_or_else(|| "n/a".into(), |r| format!("{r:.2}"));
        let (target, verdict) = match (target, measured) {
            (None, _) => ("–".to_string(), "|"),
            (Some(t), None) => (format!("≥ {t:.2}"), "not run |"),
            (Some(t), Some(r)) if r >= t => (format!("≥ {t:.2}"), "met |"),
            (Some(t), Some(_)) => (format!("≥ {t:.2}"), "NOT met |"),
        };
        let _ = writeln!(t, "| {what} | {shown} | {target} | {verdict}");
    }
    t.push_str(
        "\nThe same pairs as Envoy CPU time added per request (first minus second; with Envoy pinned\n\
         and saturated, the req/s ratios above are the ratios of these costs):\n\n",
    );
    t.push_str("| added Envoy CPU per request | µs |\n|---|---:|\n");
    let pairs = [
        (
            "oidcgate bearer hot − empty wasm",
            "oidcgate-bearer",
            "empty-wasm",
        ),
        (
            "oidcgate client credentials hot − empty wasm (Basic)",
            "oidcgate-cc",
            "empty-wasm-basic",
        ),
        ("host-call floor − empty wasm", "floor-wasm", "empty-wasm"),
        (
            "oidcgate bearer hot − host-call floor",
            "oidcgate-bearer",
            "floor-wasm",
        ),
        (
            "floor with all of oidcgate's calls − host-call floor",
            "floor-all",
            "floor-wasm",
        ),
        (
            "oidcgate bearer hot − floor with all of oidcgate's calls",
            "oidcgate-bearer",
            "floor-all",
        ),
        (
            "oidcgate cold − jwt_authn cold",
            "oidcgate-cold",
            "jwt-cold",
        ),
    ];
    for (what, a, b) in pairs {
        let _ = writeln!(t, "| {what} | {} |", cpu_added(medians, a, b));
    }
    t
}

/// The core costs, in µs per operation.
pub fn core_table(costs: &[CoreCost]) -> String {
    let mut t = String::new();
    t.push_str("| operation, in Envoy's V8 | µs each | runs |\n|---|---:|---:|\n");
    for c in costs {
        let us = c.ns_per_op as f64 / 1000.0;
        let _ = writeln!(t, "| {} | {us:.2} | {} |", c.operation, c.runs);
    }
    t
}

/// Everything the report is written from.
pub struct Report<'a> {
    pub settings: &'a Settings,
    pub provenance: &'a Provenance,
    /// When the rounds started.
    pub started: &'a str,
    pub load_after: &'a str,
    /// Which CPUs Envoy and wrk ran on.
    pub pinning: &'a str,
    pub empty_wasm_bytes: Option<u64>,
    pub rows: &'a [Row],
    pub medians: &'a [Medians],
    /// `None` when the core costs were not measured.
    pub core: Option<&'a [CoreCost]>,
    /// `None` when what a worker costs was not measured.
    pub workers: Option<&'a [WorkerCost]>,
    /// `None` when instructions were not counted.
    pub instructions: Option<&'a [crate::instructions::Count]>,
}

impl Report<'_> {
    pub fn render(&self) -> String {
        let (s, p) = (self.settings, self.provenance);
        let bytes = |b: Option<u64>| b.map_or_else(|| "?".into(), |b| b.to_string());
        let mut r = String::new();
        r.push_str(
            "# Benchmark\n\n\
             Written by `scripts/bench`. Envoy with one worker and a `direct_response` route\n\
             (200, 3-byte body), driven by wrk over HTTP/1.1 keep-alive; the configurations alternate in\n\
             one run (a fresh Envoy for each measurement, after a warm-up), and each figure is the median\n\
             over the rounds. Reproduce with `scripts/bench` (settings: see its header).\n\n",
        );
        let _ = writeln!(r, "- **Date**: {}", self.started);
        let _ = writeln!(r, "- **Machine**: {}", p.machine(self.load_after));
        let _ = writeln!(
            r,
            "- **Envoy**: {}, `--concurrency 1`; {}",
            p.envoy_version, self.pinning
        );
        let _ = writeln!(
            r,
            "- **wrk**: `-t{} -c{} -d{}s`, {} s warm-up, {} round(s)",
            s.threads, s.connections, s.seconds, s.warmup, s.rounds
        );
        let _ = writeln!(
            r,
            "- **Filters**: oidcgate.wasm {} bytes (commit {}); empty filter {} bytes",
            bytes(p.wasm_bytes),
            p.commit,
            bytes(self.empty_wasm_bytes)
        );
        let _ = writeln!(
            r,
            "- **Cold path**: a pool of {} RS256 tokens (`mint-tokens`, key `rsa-1`); {} warm up, the other {} are cycled, one per request",
            s.pool,
            s.pool_warm(),
            s.pool - s.pool_warm()
        );
        if let Some(load) = p.busy() {
            let _ = write!(
                r,
                "\n> The machine was not idle (1-minute load {load} before the run): other processes shared its cores, so these numbers carry their noise; ratios within one run are fairer than absolute req/s.\n"
            );
        }
        if !s.note.is_empty() {
            let _ = write!(r, "\n> {}\n", s.note);
        }
        let _ = write!(
            r,
            "\n{}\n{}\n",
            results_table(self.medians),
            ratios_table(self.medians)
        );
        r.push_str(EXPLAINED);
        if let Some(counts) = self.instructions.filter(|c| !c.is_empty()) {
            r.push_str(INSTRUCTIONS_EXPLAINED);
            let _ = writeln!(r, "{}", crate::instructions::table(counts));
        }
        if let Some(core) = self.core.filter(|c| !c.is_empty()) {
            r.push_str(CORE_EXPLAINED);
            let _ = writeln!(r, "{}", core_table(core));
        }
        if let Some(costs) = self.workers.filter(|c| !c.is_empty()) {
            r.push_str(WORKERS_EXPLAINED);
            let _ = writeln!(r, "{}", workers::table(costs));
        }
        r.push_str("<details><summary>Every round</summary>\n\n");
        r.push_str("| round | configuration | req/s | p50 (µs) | p99 (µs) | Envoy CPU per request (µs) | requests | non-2xx |\n");
        r.push_str("|---:|---|---:|---:|---:|---:|---:|---:|\n");
        for row in self.rows {
            let w = &row.wrk;
            let _ = writeln!(
                r,
                "| {} | {} | {:.1} | {:.0} | {:.0} | {:.2} | {} | {} |",
                row.round, row.id, w.rps, w.p50_us, w.p99_us, row.cpu_us, w.requests, w.non2xx
            );
        }
        r.push_str("\n</details>\n");
        r
    }
}

const EXPLAINED: &str = "What each one does:

- **no filter**: the HTTP connection manager and the router only.
- **empty wasm filter**: `bench/empty-filter`, a proxy-wasm 0.2.5 filter whose callbacks all
  return `Continue`, in V8: the floor for any wasm filter. It is sent the same request as
  the oidcgate configuration it is compared with (an ~600-byte Bearer header costs Envoy
  and wrk more than a Basic one).
- **host-call floor**: the same filter configured to make only the host calls a cached
  request needs (`bench/envoy/floor-wasm.yaml`): read `Authorization`, set the three
  headers oidcgate writes. Each value the host hands the VM costs it a call back into the
  VM to allocate, and each header write clears Envoy's route cache; no filter doing this
  job pays less.
- **floor with all of oidcgate's calls**: the same, also making the other host calls
  oidcgate's cached bearer request makes: read the clock (a cached token's expiry is
  checked against it), remove the claim headers' other spellings a caller could send
  (`issuer-header`, `x_subject`: upstreams that fold `_` and `-` read them as the claim
  headers), and set the access-log property `wasm.oidcgate.client_id`. What is left between
  this and oidcgate is oidcgate's own work.
- **jwt_authn**: Envoy's native filter with an inline JWKS (the mock IdP's keys), checking
  issuer and audience, forwarding the token and copying `iss`/`sub` into headers
  (`bench/envoy/jwt_authn.yaml`); with `jwt_cache_config` it caches verified tokens.
- **oidcgate**: the same checks and headers (`bench/envoy/oidcgate.yaml`), keys and tokens
  from the test kit's mock IdP. *bearer*: one token, verified once and then answered from
  the verified-token cache; *client credentials*: one `Authorization: Basic` pair,
  exchanged once and then answered from the token cache; *cold*: a new token every request.
- **Envoy CPU per request**: the user and system time the Envoy process used during the
  measurement (`/proc/<pid>/stat`), divided by the requests answered.
- **oidcgate cache hits**: hits / lookups of oidcgate's caches during the measurements
  (from its `wasmcustom.oidcgate.cache.*` counters): all hits when hot, none when cold.

";

const INSTRUCTIONS_EXPLAINED: &str = "\
## Instructions per request

The hot configurations again, each in an Envoy run under valgrind's callgrind: after 3,000
warm-up requests, the instructions every Envoy thread executes while it answers 1,000
requests one after another, less the instructions it executes idle (its timers and
oidcgate's) for as long as those requests took. The count does not move with the machine's
load (runs agree within 0.3%), so it resolves differences the CPU times above scatter over;
it is not time, and V8's code is not counted the same as it runs outside valgrind.

";

const CORE_EXPLAINED: &str = "## Core costs

oidcgate's core operations timed one at a time inside Envoy's V8 by `bench/core-filter`
(a singleton wasm service on Envoy's main thread, `bench/envoy/core.yaml`), with no request
around them: the signature check per algorithm a cold request pays (no cache; the token's
claims are parsed and checked too), parsing the IdP's key set (done once per key-set
change), and the work a cached request does besides host calls. Tokens and keys come from
the test kit (`core-bench-input`: RSA 2048, P-256, Ed25519).

The `host call:` rows price the host calls a cached request makes, one at a time:
`bench/empty-filter` configured `@price` (`bench/envoy/floor-wasm.yaml`) times each call 64
times in a row inside a request's headers callback, over 400 requests with the bearer runs'
`Authorization` header, and keeps the lowest mean. Calls in a row find Envoy's caches warm, so
these are lower bounds, for comparing calls with each other.

";

const WORKERS_EXPLAINED: &str = "## What a worker costs\n\n\
Envoy's resident memory (`VmRSS`) 1.5 s after its first allowed answer, and the time from its start to that answer, with no filter, the empty wasm filter and oidcgate (one bearer token; its first request waits for discovery and the key set from the mock IdP), at 1, 2 and 4 workers (`--concurrency`; each worker runs its own wasm VM). Unpinned, a fresh Envoy each time, medians over the rounds.\n\n";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::SETUPS;
    use crate::wrk::Summary;

    fn row(round: u64, id: &'static str, rps: f64, cpu_us: f64) -> Row {
        Row {
            round,
            id,
            wrk: Summary {
                requests: (rps * 10.0) as u64,
                rps,
                p50_us: 400.0 + round as f64,
                p99_us: 900.0,
                socket_errors: 0,
                non2xx: 0,
            },
            verify_hits: 0,
            verify_misses: 0,
            token_hits: 0,
            token_misses: 0,
            cpu_us,
        }
    }

    fn all() -> Vec<&'static Setup> {
        SETUPS.iter().collect()
    }

    /// `line` without its last cell (the cache column, which the report does not break down
    /// by round).
    fn without_last_cell(line: &str) -> &str {
        line.trim_end_matches('|')
            .trim_end()
            .rsplit_once('|')
            .map_or(line, |(kept, _)| kept)
    }

    #[test]
    fn medians_of_an_even_number_of_rounds_are_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![4.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        let rows = [
            row(1, "none", 100.2, 10.0),
            row(2, "none", 99.7, 11.0),
            row(1, "empty-wasm", 80.0, 20.004),
            row(2, "empty-wasm", 79.0, 20.0),
        ];
        let m = medians(&all(), &rows);
        assert_eq!(m.len(), 2, "only configurations that ran");
        assert_eq!((m[0].id, m[0].rps, m[0].p50_us), ("none", 100.0, 402.0));
        assert_eq!((m[0].rps_low, m[0].rps_high), (100.0, 100.0));
        assert_eq!((m[1].rps, m[1].cpu_us), (80.0, 20.0));
    }

    #[test]
    fn the_tables_show_caches_errors_and_what_did_not_run() {
        let mut cc = row(1, "oidcgate-cc", 90.0, 30.0);
        (
            cc.verify_hits,
            cc.verify_misses,
            cc.token_hits,
            cc.token_misses,
        ) = (9, 1, 8, 2);
        let mut bearer = row(1, "oidcgate-bearer", 95.0, 29.0);
        bearer.verify_hits = 950;
        bearer.wrk.socket_errors = 3;
        let mut jwt = row(1, "jwt-hot", 50.0, 60.0);
        jwt.verify_hits = 7; // not oidcgate: no cache column
        let m = medians(
            &all(),
            &[cc, bearer, jwt, row(1, "empty-wasm", 100.0, 25.0)],
        );
        let table = results_table(&m);
        assert!(
            table.contains("| oidcgate bearer, one token (hot) | 95 | 95–95 | 401 | 900 | 29.00 | – | 0 (+3 socket errors) | verify 950/950 |"),
            "{table}"
        );
        assert!(table.contains("| verify 9/10, token 8/10 |"), "{table}");
        assert!(table.contains("| jwt_authn, one token | 50 |"), "{table}");
        assert!(table.contains("| – | 0 | – |\n"), "{table}");
        let ratios = ratios_table(&m);
        assert!(
            ratios.contains("| oidcgate bearer hot / empty wasm | 0.95 | ≥ 0.97 | NOT met |"),
            "{ratios}"
        );
        assert!(
            ratios.contains("| oidcgate cold / jwt_authn cold | n/a | ≥ 0.50 | not run |"),
            "{ratios}"
        );
        assert!(
            ratios.contains("| host-call floor / empty wasm (what the host charges any filter for this job) | n/a | – | |"),
            "{ratios}"
        );
        assert!(
            ratios.contains("| oidcgate bearer hot − empty wasm | +4.0 |"),
            "{ratios}"
        );
        assert!(
            ratios.contains("| host-call floor − empty wasm | n/a |"),
            "{ratios}"
        );
        assert!(!all_ok(&m));
    }

    #[test]
    fn a_ratio_meets_its_target_as_printed() {
        let m = medians(
            &all(),
            &[
                row(1, "oidcgate-cold", 5_000.0, 100.0),
                row(1, "jwt-cold", 10_002.0, 60.0),
            ],
        );
        // 5000 / 10002 = 0.49990, printed 0.50: met.
        let ratios = ratios_table(&m);
        assert!(ratios.contains("| 0.50 | ≥ 0.50 | met |"), "{ratios}");
    }

    #[test]
    fn core_costs_are_shown_in_microseconds() {
        let costs = [CoreCost {
            operation: "verify RS256".into(),
            ns_per_op: 147_010,
            runs: 2048,
        }];
        assert!(core_table(&costs).ends_with("| verify RS256 | 147.01 | 2048 |\n"));
    }

    /// docs/bench.md was written by the bench: its tables of medians, ratios and added CPU
    /// time follow from its table of every round.
    #[test]
    fn the_committed_report_follows_from_its_every_round_table() {
        let doc = std::fs::read_to_string(testkit::repo_root().join("docs/bench.md")).unwrap();
        let table = |header: &str| -> Vec<&str> {
            let start = doc.find(header).unwrap_or_else(|| panic!("no {header:?}"));
            doc[start..]
                .lines()
                .skip(2)
                .take_while(|l| l.starts_with('|'))
                .collect()
        };
        let rows: Vec<Row> = table("| round | configuration |")
            .iter()
            .map(|line| {
                let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
                let number = |i: usize| cells[i].parse::<f64>().unwrap();
                let setup = SETUPS.iter().find(|s| s.id == cells[1]).unwrap();
                Row {
                    round: number(0) as u64,
                    id: setup.id,
                    wrk: Summary {
                        requests: number(6) as u64,
                        rps: number(2),
                        p50_us: number(3),
                        p99_us: number(4),
                        socket_errors: 0,
                        non2xx: number(7) as u64,
                    },
                    verify_hits: 0,
                    verify_misses: 0,
                    token_hits: 0,
                    token_misses: 0,
                    cpu_us: number(5),
                }
            })
            .collect();
        assert!(!rows.is_empty(), "no rounds in docs/bench.md");
        let m = medians(&all(), &rows);
        let ours: Vec<String> = results_table(&m).lines().map(str::to_string).collect();
        let theirs = table("| configuration | req/s |");
        assert_eq!(ours.len() - 2, theirs.len());
        for (ours, theirs) in ours.iter().skip(2).zip(theirs) {
            let cells = |l: &str| -> Vec<String> {
                without_last_cell(l)
                    .split('|')
                    .map(|c| c.trim().to_string())
                    .collect()
            };
            let (a, b) = (cells(ours), cells(theirs));
            assert_eq!(a.len(), b.len(), "{ours}\n{theirs}");
            // The every-round table is rounded, so a median of an even number of rounds
            // (the mean of the middle two) can differ from the report's in its last digit.
            for (x, y) in a.iter().zip(&b) {
                match (x.parse::<f64>(), y.parse::<f64>()) {
                    (Ok(x), Ok(y)) => {
                        assert!(
                            (x - y).abs() <= 0.011_f64.max(x.abs() * 1e-4),
                            "{ours}\n{theirs}"
                        )
                    }
                    _ => assert_eq!(x, y, "{ours}\n{theirs}"),
                }
            }
        }
        // Every ratio the committed run could compute is in it as computed (a pair added to
        // the bench since is `n/a` here).
        // Within the rounding of the every-round table: 0.01 for a ratio, 0.1 µs for a cost.
        for line in ratios_table(&m)
            .lines()
            .filter(|l| l.starts_with('|') && !l.contains("| n/a |") && !l.starts_with("|---"))
        {
            let cells = |l: &str| -> Vec<String> {
                l.trim_matches('|')
                    .split('|')
                    .map(|c| c.trim().to_string())
                    .collect()
            };
            let ours = cells(line);
            let found = doc
                .lines()
                .find(|d| d.starts_with('|') && cells(d).first() == ours.first())
                .unwrap_or_else(|| panic!("not in docs/bench.md: {line}"));
            for (x, y) in ours.iter().zip(cells(found)) {
                let number = |c: &str| c.trim_start_matches('+').parse::<f64>();
                match (number(x), number(&y)) {
                    (Ok(a), Ok(b)) => {
                        let tolerance = if x.starts_with(['+', '-']) {
                            0.11
                        } else {
                            0.011
                        };
                        assert!((a - b).abs() <= tolerance, "{line}\n{found}");
                    }
                    _ => assert_eq!(x, &y, "{line}\n{found}"),
                }
            }
        }
    }
}
