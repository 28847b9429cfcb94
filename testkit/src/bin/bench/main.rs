//! `bench` (run by `scripts/bench`, not part of CI): the side-by-side benchmark. Envoy with
//! one worker (`--concurrency 1`) and a `direct_response` route, driven by wrk, in the
//! configurations of [`settings::SETUPS`] alternated in one run (A B C … A B C …), each
//! BENCH_ROUNDS times, with a fresh Envoy for every measurement ([`measure`]); then oidcgate's
//! core operations timed inside Envoy's V8 ([`core`]); then the medians, the ratios and the
//! report ([`report`]). Settings: see `scripts/bench`.
//!
//! With two CPUs or more, Envoy runs on CPU 0 and wrk on CPU 1, with this driver and its mock
//! IdP (idle while wrk runs), so the load generator does not take the proxy's time.
//! Everything listens on 127.0.0.1: the listener on BENCH_PORT_BASE, Envoy's admin on the next
//! port, the mock IdP on the one after.
//!
//! Exits 0 when every request was answered 200, 1 when some were not (the figures then
//! measured something else), 2 when it could not run.

mod core;
mod instructions;
mod measure;
mod report;
mod settings;
mod workers;
mod wrk;

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use testkit::idp::MockIdp;
use testkit::load::{self, Provenance};
use testkit::Stack;

use measure::{Bench, Pool};
use report::Report;
use settings::{Credential, Settings, Setup};
use wrk::Wrk;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// How long Envoy (and then a request with a valid credential) may take to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> std::process::ExitCode {
    load::run_main("bench", run()).await
}

/// `==> title`: a section header in a long log, as the scripts print them.
fn step(title: &str) {
    println!("\n==> {title}");
}

/// `Ok(false)`: the run completed, but some requests did not get 200.
async fn run() -> Result<bool, Error> {
    let settings = Settings::from_env()?;
    let provenance = Provenance::collect();
    let root = testkit::repo_root();
    let work_dir = root.join("target/bench");
    let run_dir = root.join(".run/bench");
    // Built by scripts/bench into target/bench (bench/*-filter are crates of their own).
    let wasm_dir = work_dir.join("wasm32-wasip1/release");
    let empty_wasm = wasm_dir.join("empty_filter.wasm");
    let core_wasm = wasm_dir.join("core_filter.wasm");
    if settings.core_only {
        // BENCH_ONLY=core: the core costs alone, to compare builds of the core quickly.
        step("core costs only (BENCH_ONLY=core): bench/core-filter in Envoy's V8");
        println!("load average {}", load::load_average());
        let cpu = (settings.pin && provenance.cpus >= 2 && on_path("taskset")).then_some(0);
        let issuer = format!("http://127.0.0.1:{}/oauth2/default", settings.idp_port());
        std::fs::create_dir_all(&run_dir).map_err(|e| format!("{}: {e}", run_dir.display()))?;
        let opts = core::envoy_opts(&settings, cpu, &core_wasm, &issuer);
        let mut costs = core::core_costs(opts, &run_dir).await?;
        let opts = core::prices_opts(&settings, cpu, &empty_wasm);
        let token = testkit::tokens::core_bench_input(&issuer)["tokens"][0]["token"]
            .as_str()
            .map(|t| format!("Bearer {t}"))
            .unwrap_or_default();
        costs.extend(core::host_call_prices(opts, &run_dir, &token).await?);
        print!("{}", report::core_table(&costs));
        println!("load average {}", load::load_average());
        return Ok(true);
    }
    let mut built = vec![&empty_wasm];
    if settings.core {
        built.push(&core_wasm);
    }
    if let Some(missing) = built.iter().find(|f| !f.is_file()) {
        return Err(format!("the build did not produce {}", missing.display()).into());
    }
    // Panics with what to do if the filter is not built.
    testkit::envoy::wasm_path();

    let pinned = settings.pin && provenance.cpus >= 2 && on_path("taskset");
    let (envoy_cpu, wrk_cpu) = if pinned {
        (Some(0), Some(1))
    } else {
        (None, None)
    };
    let pinning = if pinned {
        "Envoy pinned to CPU 0, wrk to CPU 1"
    } else {
        "nothing pinned (wrk and Envoy share the cores)"
    };
    let clock_ticks = clock_ticks()?;
    let ports = [
        settings.listen_port(),
        settings.admin_port(),
        settings.idp_port(),
    ];
    if let Some(port) = ports.into_iter().find(|&p| in_use(p)) {
        return Err(format!(
            "127.0.0.1:{port} is in use; set BENCH_PORT_BASE (it uses BASE..BASE+2)"
        )
        .into());
    }
    for dir in [&run_dir, &work_dir] {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }

    let issuer = format!("http://127.0.0.1:{}/oauth2/default", settings.idp_port());
    let pool_file = format!("pool-{}-{}.txt", settings.idp_port(), settings.pool);
    // Before pinning: minting uses every core.
    let pool = Pool::load_or_mint(work_dir.join(pool_file), &issuer, settings.pool)?;
    if let Some(cpu) = wrk_cpu {
        pin_this_process(cpu)?;
    }

    step(&format!("mock IdP on 127.0.0.1:{}", settings.idp_port()));
    let idp = MockIdp::start_on(settings.idp_port()).await;
    if idp.issuer() != issuer {
        return Err(format!("the mock IdP is {}, not {issuer}", idp.issuer()).into());
    }
    let bench = Bench {
        settings: &settings,
        envoy_cpu,
        wrk: Wrk {
            threads: settings.threads,
            connections: settings.connections,
            cpu: wrk_cpu,
            url: format!("http://127.0.0.1:{}/", settings.listen_port()),
            out: run_dir.join("wrk.out"),
            scripts: root.join("bench/wrk"),
        },
        pool,
        basic: STANDARD.encode("demo-client:demo-secret"),
        vars: measure::template_vars(&issuer, &idp.jwks().to_string(), &empty_wasm),
        run_dir: run_dir.clone(),
        clock_ticks,
    };

    step(&format!(
        "benchmark: {} configurations x {} rounds, wrk -t{} -c{} -d{}s (warm-up {}s), Envoy --concurrency 1",
        settings.setups.len(),
        settings.rounds,
        settings.threads,
        settings.connections,
        settings.seconds,
        settings.warmup
    ));
    let started = load::utc_date(SystemTime::now());
    if settings.workers_only {
        step("what a worker costs (BENCH_ONLY=workers): resident memory, start to first allowed answer");
        println!("load average {}", load::load_average());
        let costs = workers::measure(&bench, settings.rounds).await?;
        print!("{}", workers::table(&costs));
        println!("load average {}", load::load_average());
        return Ok(true);
    }
    if settings.instructions_only {
        step("instructions per request (BENCH_ONLY=instructions): Envoy under callgrind");
        if !instructions::available() {
            return Err("BENCH_ONLY=instructions needs valgrind (callgrind_control)".into());
        }
        let Some(first) = settings.setups.first() else {
            return Err("nothing to count".into());
        };
        let mut stack = Stack::start_with(idp, bench.envoy_opts(first)).await;
        let counts = instructions::measure(&bench, &mut stack, &settings.setups).await?;
        print!("{}", instructions::table(&counts));
        return Ok(true);
    }
    let plan: Vec<(u64, &Setup)> = (1..=settings.rounds)
        .flat_map(|round| settings.setups.iter().map(move |setup| (round, *setup)))
        .collect();
    let Some((&(round, setup), rest)) = plan.split_first() else {
        return Err("nothing to measure".into());
    };
    // The stack starts with the first measurement's Envoy; every later one restarts it.
    let mut stack = Stack::start_with(idp, bench.envoy_opts(setup)).await;
    let mut rows = vec![bench.measure(&stack, round, setup).await?];
    for &(round, setup) in rest {
        stack.restart_envoy(bench.envoy_opts(setup)).await;
        rows.push(bench.measure(&stack, round, setup).await?);
    }
    let counts = if settings.instructions && instructions::available() {
        step("instructions per request: Envoy under callgrind, one configuration after another");
        let counts = instructions::measure(&bench, &mut stack, &settings.setups).await?;
        print!("{}", instructions::table(&counts));
        Some(counts)
    } else {
        if settings.instructions {
            println!("valgrind is not installed: instructions per request not counted");
        }
        None
    };
    let worker_costs = if settings.workers {
        step("what a worker costs: resident memory and start to first allowed answer, 1, 2 and 4 workers");
        stack.envoy.kill();
        let costs = workers::measure(&bench, settings.rounds).await?;
        print!("{}", workers::table(&costs));
        Some(costs)
    } else {
        None
    };
    // Frees the admin port for the core run.
    drop(stack);

    let core = if settings.core {
        step("core costs: oidcgate's core operations timed inside Envoy's V8 (bench/core-filter)");
        let opts = core::envoy_opts(&settings, envoy_cpu, &core_wasm, &issuer);
        let mut costs = core::core_costs(opts, &run_dir).await?;
        // The host calls oidcgate makes, priced one by one, with the bearer runs' header.
        let opts = core::prices_opts(&settings, envoy_cpu, &empty_wasm);
        let header = bench.header(Credential::Bearer).unwrap_or_default();
        let token = header.split_once(": ").map_or("", |(_, v)| v);
        costs.extend(core::host_call_prices(opts, &run_dir, token).await?);
        print!("{}", report::core_table(&costs));
        Some(costs)
    } else {
        None
    };
    let load_after = load::load_average();

    let medians = report::medians(&settings.setups, &rows);
    step(&format!(
        "results (medians over {} round(s))",
        settings.rounds
    ));
    print!(
        "{}\n{}",
        report::results_table(&medians),
        report::ratios_table(&medians)
    );
    let text = Report {
        settings: &settings,
        provenance: &provenance,
        started: &started,
        load_after: &load_after,
        pinning,
        empty_wasm_bytes: std::fs::metadata(&empty_wasm).ok().map(|m| m.len()),
        rows: &rows,
        medians: &medians,
        core: core.as_deref(),
        workers: worker_costs.as_deref(),
        instructions: counts.as_deref(),
    }
    .render();
    load::write_report(&settings.out, &text)?;
    println!("\nwritten to {}", settings.out.display());
    if !report::all_ok(&medians) {
        eprintln!("warning: some requests did not get 200 (see the non-2xx column); those numbers are not valid");
        return Ok(false);
    }
    Ok(true)
}

/// Whether something accepts connections on `127.0.0.1:port`.
fn in_use(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

/// Whether `program` is an executable file on `PATH`.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .any(|p: PathBuf| p.is_file())
    })
}

/// Runs every thread of this process, and those it starts later, on `cpu` alone.
fn pin_this_process(cpu: usize) -> Result<(), Error> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string()])
        .arg(std::process::id().to_string())
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run taskset: {e}"))?;
    if !status.success() {
        return Err(format!("taskset could not pin the driver to CPU {cpu} ({status})").into());
    }
    Ok(())
}

/// `getconf CLK_TCK`: clock ticks per second, the unit of `/proc/<pid>/stat`'s CPU times.
fn clock_ticks() -> Result<u64, Error> {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .map_err(|e| format!("cannot run getconf: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.trim().parse() {
        Ok(ticks) if out.status.success() && ticks > 0 => Ok(ticks),
        _ => Err(format!("getconf CLK_TCK printed {text:?}").into()),
    }
}
