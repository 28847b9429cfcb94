//! wrk, the load generator, run as a process (pinned with `taskset` when asked), and the one
//! summary line `bench/wrk/report.lua` makes it print.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::Error;

/// How wrk is run, whatever it sends.
pub struct Wrk {
    pub threads: u64,
    pub connections: u64,
    /// The CPU to run it on (`taskset -c`), if any.
    pub cpu: Option<usize>,
    pub url: String,
    /// Where wrk's output goes (`.run/bench/wrk.out`), kept for a look.
    pub out: PathBuf,
    /// `bench/wrk`, with `report.lua` and `pool.lua`.
    pub scripts: PathBuf,
}

/// What wrk sends.
pub enum Requests<'a> {
    /// The same request every time, with this header (`Name: value`) if any.
    Fixed(Option<String>),
    /// A new bearer token every request: lines `first ..` of `pool` (`count` of them, 0: to
    /// the end), wrapping around.
    Pool {
        pool: &'a Path,
        first: u64,
        count: u64,
    },
}

/// The numbers of one wrk run (latencies in microseconds).
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub requests: u64,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub socket_errors: u64,
    pub non2xx: u64,
}

impl Wrk {
    /// Runs wrk for `seconds` and returns its summary. Stopped (killed) if the future is
    /// dropped, so an interrupted run leaves no wrk behind.
    pub async fn run(&self, seconds: u64, requests: Requests<'_>) -> Result<Summary, Error> {
        let mut command = match self.cpu {
            Some(cpu) => {
                let mut taskset = tokio::process::Command::new("taskset");
                taskset.args(["-c", &cpu.to_string(), "wrk"]);
                taskset
            }
            None => tokio::process::Command::new("wrk"),
        };
        command
            .args(["-t", &self.threads.to_string()])
            .args(["-c", &self.connections.to_string()])
            .args(["-d", &format!("{seconds}s"), "--latency"]);
        match requests {
            Requests::Fixed(header) => {
                if let Some(header) = header {
                    command.arg("-H").arg(header);
                }
                command.arg("-s").arg(self.scripts.join("report.lua"));
                command.arg(&self.url);
            }
            Requests::Pool { pool, first, count } => {
                command.arg("-s").arg(self.scripts.join("pool.lua"));
                command.args([&self.url, "--"]).arg(pool);
                command.args([first.to_string(), count.to_string()]);
            }
        }
        let out = std::fs::File::create(&self.out)
            .map_err(|e| format!("cannot write {}: {e}", self.out.display()))?;
        let status = command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .status()
            .await
            .map_err(|e| format!("cannot run wrk: {e}"))?;
        let output = std::fs::read_to_string(&self.out).unwrap_or_default();
        if !status.success() {
            eprintln!("{output}");
            return Err(format!("wrk failed ({status})").into());
        }
        output.lines().find_map(Summary::parse).ok_or_else(|| {
            eprintln!("{output}");
            "wrk printed no summary".into()
        })
    }
}

impl Summary {
    /// `BENCH requests=N seconds=S rps=R p50_us=P p99_us=Q socket_errors=E non2xx=M`, as
    /// `bench/wrk/report.lua` prints it; `None` for any other line.
    pub fn parse(line: &str) -> Option<Summary> {
        let fields = line.strip_prefix("BENCH ")?;
        let field = |name: &str| {
            fields
                .split_whitespace()
                .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
        };
        let number = |name: &str| field(name)?.parse::<f64>().ok();
        let count = |name: &str| field(name)?.parse::<u64>().ok();
        Some(Summary {
            requests: count("requests")?,
            rps: number("rps")?,
            p50_us: number("p50_us")?,
            p99_us: number("p99_us")?,
            socket_errors: count("socket_errors")?,
            non2xx: count("non2xx")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_line_is_read_and_nothing_else() {
        let line = "BENCH requests=519362 seconds=10.100 rps=51420.8 p50_us=295 p99_us=586 \
                    socket_errors=0 non2xx=3";
        assert_eq!(
            Summary::parse(line),
            Some(Summary {
                requests: 519_362,
                rps: 51_420.8,
                p50_us: 295.0,
                p99_us: 586.0,
                socket_errors: 0,
                non2xx: 3,
            })
        );
        assert_eq!(Summary::parse("  Latency   295.00us"), None);
        assert_eq!(Summary::parse("BENCH requests=1 rps=2"), None);
        assert_eq!(
            Summary::parse(&line.replace("rps=51420.8", "rps=nan?")),
            None
        );
    }
}
