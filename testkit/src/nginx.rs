//! Runs Kong's wasm host — nginx with ngx_wasm_module on wasmtime, built by `scripts/kong-host`
//! — with the built `oidcgate.wasm`, from the template `kong/nginx.conf`, as [`crate::envoy`]
//! runs Envoy.
//!
//! Placeholders: `{{PREFIX}}` (the run's scratch directory), `{{WORKERS}}`, `{{LISTEN_PORT}}`,
//! `{{WAIT_PORT}}` (the poll endpoint, `wait_upstream`), `{{ECHO_PORT}}`, `{{WASM_PATH}}`, and
//! `{{FILTER_CONFIG}}`: the filter's JSON configuration escaped for a single-quoted nginx
//! string.
//!
//! Environment: `KONG_HOST_BIN` names the nginx binary. Without it the Kong-host tests are
//! skipped ([`kong_host_bin_or_skip`]), and say so.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::envoy::wasm_path;
use crate::process::{free_ports, running, scratch_dir, tail, Startup};
use crate::repo_root;

/// How long nginx may take until every worker has configured the filter (wasmtime compiles
/// the module in each worker: about a second each on two shared cores).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The nginx binary named by `KONG_HOST_BIN`, or `None` after writing
/// `skipped: KONG_HOST_BIN not set (<case>)` straight to stderr (not captured by the test
/// harness, so it shows in `cargo test` output): the caller returns at once, and the run's
/// summary (scripts/test) counts these cases as skipped, never as passed.
pub fn kong_host_bin_or_skip(case: &str) -> Option<PathBuf> {
    match std::env::var_os("KONG_HOST_BIN").filter(|v| !v.is_empty()) {
        Some(bin) => {
            let bin = PathBuf::from(bin);
            assert!(
                bin.is_file(),
                "KONG_HOST_BIN={} is not a file (build it with scripts/kong-host)",
                bin.display()
            );
            Some(bin)
        }
        None => {
            let _ = writeln!(
                std::io::stderr(),
                "skipped: KONG_HOST_BIN not set ({case}; build the host with scripts/kong-host)"
            );
            None
        }
    }
}

/// What [`Nginx::start`] runs.
#[derive(Clone, Debug)]
pub struct NginxOpts {
    /// The nginx binary (`KONG_HOST_BIN`).
    pub bin: PathBuf,
    /// Template, normally `<repo>/kong/nginx.conf`.
    pub template: PathBuf,
    /// The filter's configuration, for `{{FILTER_CONFIG}}`.
    pub filter_config: Value,
    pub echo_port: u16,
    /// nginx worker processes; each runs its own wasm VM.
    pub workers: u32,
    /// Sets the filter's `wait_upstream` to the template's poll endpoint (unless the
    /// configuration names one already).
    pub wait_upstream: bool,
}

impl NginxOpts {
    pub fn new(bin: PathBuf) -> NginxOpts {
        NginxOpts {
            bin,
            template: repo_root().join("kong/nginx.conf"),
            filter_config: Value::Object(Default::default()),
            echo_port: 0,
            workers: 1,
            wait_upstream: true,
        }
    }
}

/// A running nginx, stopped when dropped. Its files (rendered configuration, logs, temp
/// directories) live in a scratch directory removed on drop, unless the thread panics: then
/// the error log's tail is printed and the directory kept.
pub struct Nginx {
    pub listen_port: u16,
    /// The poll endpoint (`wait_upstream` = `127.0.0.1:<wait_port>`).
    pub wait_port: u16,
    pub workers: u32,
    child: Option<Child>,
    dir: PathBuf,
}

/// `text` as the inside of a single-quoted nginx string: nginx reads `\\` and `\'` back as
/// `\` and `'`.
pub fn nginx_quoted(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\'', "\\'")
}

impl Nginx {
    /// Starts nginx and waits until its listener accepts and every worker has logged the
    /// filter's `configured for issuer` line. Panics with the error log's tail if nginx exits
    /// or is not ready in time.
    pub async fn start(opts: NginxOpts) -> Nginx {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut nginx = Nginx::spawn(&opts);
            match nginx.wait_ready().await {
                Startup::Ready => return nginx,
                Startup::Exited(_)
                    if attempt < 3 && nginx.log().contains("Address already in use") =>
                {
                    nginx.discard();
                    continue;
                }
                Startup::Exited(status) => {
                    let tail = nginx.log_tail(60);
                    nginx.discard();
                    panic!("nginx exited during startup ({status}); error log tail:\n{tail}");
                }
                Startup::TimedOut => {
                    let tail = nginx.log_tail(60);
                    nginx.discard();
                    panic!("nginx not ready after {READY_TIMEOUT:?}; error log tail:\n{tail}");
                }
            }
        }
    }

    /// Starts nginx and waits until every worker has either configured the filter or refused
    /// its configuration (the host then answers requests 500); returns the error log. For a
    /// configuration the filter must refuse.
    pub async fn start_expect_refusal(opts: NginxOpts) -> (Nginx, String) {
        let mut nginx = Nginx::spawn(&opts);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let log = nginx.log();
            if log.contains("invalid configuration") || Instant::now() > deadline {
                return (nginx, log);
            }
            if !nginx.running() {
                return (nginx, log);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn spawn(opts: &NginxOpts) -> Nginx {
        let dir = scratch_dir("nginx");
        // nginx writes its first log lines to <prefix>/logs/error.log, before it has read the
        // configuration.
        std::fs::create_dir_all(dir.join("logs"))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let template = std::fs::read_to_string(&opts.template)
            .unwrap_or_else(|e| panic!("nginx template {}: {e}", opts.template.display()));
        let [listen_port, wait_port] = free_ports();
        let mut filter_config = opts.filter_config.clone();
        if let Some(c) = filter_config.as_object_mut() {
            if opts.wait_upstream && !c.contains_key("wait_upstream") {
                c.insert(
                    "wait_upstream".into(),
                    Value::String(format!("127.0.0.1:{wait_port}")),
                );
            }
        }
        let config = serde_json::to_string(&filter_config).expect("JSON");
        let vars: Vec<(&str, String)> = vec![
            ("PREFIX", dir.to_string_lossy().into_owned()),
            ("WORKERS", opts.workers.to_string()),
            ("LISTEN_PORT", listen_port.to_string()),
            ("WAIT_PORT", wait_port.to_string()),
            ("ECHO_PORT", opts.echo_port.to_string()),
            ("WASM_PATH", wasm_path().to_string_lossy().into_owned()),
            ("FILTER_CONFIG", nginx_quoted(&config)),
        ];
        let rendered = render(&template, &vars);
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, rendered).expect("write nginx.conf");
        let out = File::create(dir.join("stderr.log")).expect("create nginx stderr log");
        let child = Command::new(&opts.bin)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", opts.bin.display()));
        Nginx {
            listen_port,
            wait_port,
            workers: opts.workers,
            child: Some(child),
            dir,
        }
    }

    async fn wait_ready(&mut self) -> Startup {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait().expect("wait for nginx") {
                    return Startup::Exited(status);
                }
            }
            let configured = self.log().matches("configured for issuer").count();
            if configured >= self.workers as usize
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

    /// `http://127.0.0.1:<listen_port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.listen_port)
    }

    /// `127.0.0.1:<wait_port>`, for the filter's `wait_upstream`.
    pub fn wait_upstream(&self) -> String {
        format!("127.0.0.1:{}", self.wait_port)
    }

    pub fn running(&mut self) -> bool {
        running(&mut self.child)
    }

    /// The error log (the filter's lines, the host's `[wasm]` lines) and what nginx wrote to
    /// stderr before it opened it.
    pub fn log(&self) -> String {
        let read = |name: &str| {
            std::fs::read(self.dir.join(name))
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .unwrap_or_default()
        };
        format!(
            "{}{}{}",
            read("stderr.log"),
            read("logs/error.log"),
            read("error.log")
        )
    }

    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log(), lines)
    }

    /// Stops nginx: SIGTERM to the master (fast shutdown, which takes its workers along),
    /// then SIGKILL if it is still there after 2 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn discard(mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
        self.dir = PathBuf::new();
    }
}

/// Lines of the error log that show the host failed, whatever the test saw: a worker that
/// crashed (ngx_wasm_module's dispatch bugs, kong/README.md), a reply cut off, a VM trap.
const HOST_FAULTS: [&str; 3] = ["exited on signal", "zero size buf", "host trap"];

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
        if self.dir.as_os_str().is_empty() {
            return;
        }
        let log = self.log();
        let fault = HOST_FAULTS.iter().find(|f| log.contains(**f));
        if let (Some(fault), false) = (fault, std::thread::panicking()) {
            let tail = self.log_tail(40);
            panic!(
                "nginx logged `{fault}` ({}); error log tail:\n{tail}",
                self.dir.display()
            );
        }
        if std::thread::panicking() {
            eprintln!(
                "--- nginx error log tail ({}) ---\n{}\n---",
                self.dir.display(),
                self.log_tail(40)
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Fills `{{NAME}}` placeholders; panics on one it does not know.
fn render(template: &str, vars: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let found = tail
            .strip_prefix("{{")
            .and_then(|t| t.split_once("}}"))
            .and_then(|(name, after)| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| (v.as_str(), after))
            });
        let Some((value, after)) = found else {
            let shown: String = tail.chars().take(40).collect();
            panic!("unknown placeholder in nginx template: {shown}");
        };
        out.push_str(value);
        rest = after;
    }
    out.push_str(rest);
    out
}
