//! One measurement: a fresh Envoy with one configuration, a request that must answer 200, a
//! warm-up, then wrk for the measured seconds while Envoy's CPU time and oidcgate's cache
//! counters are read before and after.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use testkit::envoy::{EnvoyOpts, Ports};
use testkit::{load, Stack};

use crate::settings::{Credential, Settings, Setup};
use crate::wrk::{Requests, Summary, Wrk};
use crate::{Error, READY_TIMEOUT};

/// What one measurement produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub round: u64,
    pub id: &'static str,
    pub wrk: Summary,
    /// oidcgate's cache counters during the measurement: verified tokens, client tokens.
    pub verify_hits: u64,
    pub verify_misses: u64,
    pub token_hits: u64,
    pub token_misses: u64,
    /// Envoy's user and system CPU time per request answered, in microseconds.
    pub cpu_us: f64,
}

/// The cold-path pool: a file of tokens, one a line, for wrk's `pool.lua`.
pub struct Pool {
    pub path: PathBuf,
    /// The first token, for the configurations that send one.
    pub first: String,
    /// The second, for the probe of the cold configurations.
    pub second: String,
}

impl Pool {
    /// Minted once per issuer and size into `path`, then reused for a week (its tokens live
    /// 30 days).
    pub fn load_or_mint(path: PathBuf, issuer: &str, size: u64) -> Result<Pool, Error> {
        let week = Duration::from_secs(7 * 24 * 3600);
        let fresh = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| {
                SystemTime::now()
                    .duration_since(t)
                    .is_ok_and(|age| age < week)
            });
        let mut text = if fresh {
            std::fs::read_to_string(&path).unwrap_or_default()
        } else {
            String::new()
        };
        if text.lines().count() as u64 != size {
            crate::step(&format!("minting {size} tokens for {issuer}"));
            let ttl = 30 * 24 * 3600;
            let tokens = testkit::tokens::pool(issuer, "demo-client", size as usize, ttl);
            text = tokens.iter().map(|t| format!("{t}\n")).collect();
            let partial = path.with_extension("txt.tmp");
            std::fs::write(&partial, &text)
                .map_err(|e| format!("cannot write {}: {e}", partial.display()))?;
            std::fs::rename(&partial, &path)?;
            println!(
                "minted {size} tokens (RS256, kid rsa-1) into {}",
                path.display()
            );
        }
        let mut lines = text.lines().map(str::to_string);
        let (Some(first), Some(second)) = (lines.next(), lines.next()) else {
            return Err(format!("{}: fewer than two tokens", path.display()).into());
        };
        Ok(Pool {
            path,
            first,
            second,
        })
    }
}

/// The measured templates' own placeholders: the mock IdP's issuer and key set (inline in
/// `jwt_authn.yaml`), and `bench/empty-filter`'s build.
pub fn template_vars(issuer: &str, jwks: &str, empty_wasm: &Path) -> Vec<(String, String)> {
    vec![
        ("ISSUER".into(), issuer.into()),
        ("JWKS".into(), jwks.into()),
        (
            "EMPTY_WASM".into(),
            empty_wasm.to_string_lossy().into_owned(),
        ),
    ]
}

/// Everything a measurement needs besides the stack.
pub struct Bench<'a> {
    pub settings: &'a Settings,
    /// The CPU Envoy runs on, if pinned.
    pub envoy_cpu: Option<usize>,
    pub wrk: Wrk,
    pub pool: Pool,
    /// `base64("demo-client:demo-secret")`.
    pub basic: String,
    /// Values for the templates' own placeholders (issuer, key set, the filters' paths).
    pub vars: Vec<(String, String)>,
    /// `.run/bench`, where each configuration's rendered config and Envoy log are kept.
    pub run_dir: PathBuf,
    /// `getconf CLK_TCK`: the unit of `/proc/<pid>/stat`'s CPU times.
    pub clock_ticks: u64,
}

impl Bench<'_> {
    /// Envoy for `setup`: `bench/envoy/<template>.yaml`, one worker, the fixed ports, quiet.
    pub fn envoy_opts(&self, setup: &Setup) -> EnvoyOpts {
        let cache = if setup.jwt_cache {
            "jwt_cache_config: { jwt_cache_size: 100 }"
        } else {
            "# no jwt_cache_config: every request verifies the signature"
        };
        let mut vars = self.vars.clone();
        vars.push(("JWT_CACHE".into(), cache.into()));
        vars.push(("FLOOR_CONFIG".into(), setup.floor.into()));
        EnvoyOpts {
            template: testkit::repo_root()
                .join("bench/envoy")
                .join(format!("{}.yaml", setup.template)),
            concurrency: 1,
            ports: Some(Ports {
                admin: self.settings.admin_port(),
                listen: self.settings.listen_port(),
            }),
            log_level: Some("warn".into()),
            cpu: self.envoy_cpu,
            extra_vars: vars,
            ..EnvoyOpts::default()
        }
    }

    /// Measures `setup` on the Envoy `stack` runs now, started from [`Bench::envoy_opts`].
    pub async fn measure(&self, stack: &Stack, round: u64, setup: &Setup) -> Result<Row, Error> {
        let envoy = &stack.envoy;
        let kept = self.keep(stack, setup.id);
        // The first oidcgate request waits for discovery and the key set (and the token, for
        // Basic).
        let deadline = Instant::now() + READY_TIMEOUT;
        while self.probe(stack, setup.credential).await != Some(200) {
            if Instant::now() > deadline {
                eprintln!("{}", envoy.log_tail(30));
                return Err(format!(
                    "{}: a request with a valid credential does not get 200 (log: {})",
                    setup.id,
                    kept.display()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if self.settings.warmup > 0 {
            let warm = self.requests(setup.credential, true);
            self.wrk.run(self.settings.warmup, warm).await?;
        }
        // oidcgate moves its counters to Envoy every 20 ms.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = load::oidcgate_counters(&stack.http, envoy).await?;
        let pid = envoy.pid().ok_or("Envoy is not running")?;
        let cpu_before = cpu_ticks(pid)?;
        let measured = self.requests(setup.credential, false);
        let wrk = self.wrk.run(self.settings.seconds, measured).await?;
        let cpu_after = cpu_ticks(pid)?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let after = load::oidcgate_counters(&stack.http, envoy).await?;
        self.keep(stack, setup.id);

        let delta = |name: &str| {
            let at = |counters: &std::collections::BTreeMap<String, u64>| {
                counters.get(name).copied().unwrap_or(0)
            };
            at(&after).saturating_sub(at(&before))
        };
        let cpu_us = match wrk.requests {
            0 => 0.0,
            n => (cpu_after - cpu_before) as f64 * 1e6 / self.clock_ticks as f64 / n as f64,
        };
        let row = Row {
            round,
            id: setup.id,
            verify_hits: delta("oidcgate.cache.verify.hit"),
            verify_misses: delta("oidcgate.cache.verify.miss"),
            token_hits: delta("oidcgate.cache.token.hit"),
            token_misses: delta("oidcgate.cache.token.miss"),
            cpu_us,
            wrk,
        };
        println!(
            "  round {round}  {:<16} {:>9} req/s  p50 {:>6} us  p99 {:>6} us  Envoy CPU {:>6} us/req  non-2xx {}",
            row.id,
            format!("{:.1}", row.wrk.rps),
            format!("{:.0}", row.wrk.p50_us),
            format!("{:.0}", row.wrk.p99_us),
            format!("{:.2}", row.cpu_us),
            row.wrk.non2xx
        );
        Ok(row)
    }

    /// The status of one request with `credential`, `None` without an answer.
    async fn probe(&self, stack: &Stack, credential: Credential) -> Option<u16> {
        let request = stack
            .http
            .get(stack.envoy.url("/"))
            .timeout(Duration::from_secs(5));
        let request = match self.header(credential) {
            Some(header) => {
                let (name, value) = header.split_once(": ")?;
                request.header(name, value)
            }
            None => request,
        };
        let response = request.send().await.ok()?;
        Some(response.status().as_u16())
    }

    /// The `Authorization` header of a fixed credential.
    pub fn header(&self, credential: Credential) -> Option<String> {
        match credential {
            Credential::None => None,
            Credential::Bearer => Some(format!("Authorization: Bearer {}", self.pool.first)),
            Credential::Basic => Some(format!("Authorization: Basic {}", self.basic)),
            Credential::Pool => Some(format!("Authorization: Bearer {}", self.pool.second)),
        }
    }

    /// What wrk sends for `credential`; the pool's first tenth warms up, the rest is measured.
    fn requests(&self, credential: Credential, warm_up: bool) -> Requests<'_> {
        let warm = self.settings.pool_warm();
        match (credential, warm_up) {
            (Credential::Pool, true) => Requests::Pool {
                pool: &self.pool.path,
                first: 1,
                count: warm,
            },
            (Credential::Pool, false) => Requests::Pool {
                pool: &self.pool.path,
                first: warm + 1,
                count: 0,
            },
            (credential, _) => Requests::Fixed(self.header(credential)),
        }
    }

    /// Copies the rendered config and Envoy's log so far into `.run/bench` (the test kit
    /// removes its own copies with the Envoy); returns the log's path.
    fn keep(&self, stack: &Stack, id: &str) -> PathBuf {
        keep_envoy_files(&stack.envoy, &self.run_dir, id)
    }
}

/// Copies `envoy`'s rendered config to `<dir>/<id>.yaml` and its log to `<dir>/envoy-<id>.log`;
/// returns the log's path.
pub fn keep_envoy_files(envoy: &testkit::envoy::Envoy, dir: &Path, id: &str) -> PathBuf {
    let log = dir.join(format!("envoy-{id}.log"));
    let _ = std::fs::copy(envoy.config_path(), dir.join(format!("{id}.yaml")));
    let _ = std::fs::write(&log, envoy.log());
    log
}

/// The user plus system CPU time process `pid` has used, in clock ticks (`/proc/<pid>/stat`).
fn cpu_ticks(pid: u32) -> Result<u64, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat).ok_or_else(|| format!("/proc/{pid}/stat: no CPU times").into())
}

/// Fields 14 (utime) and 15 (stime) of a `/proc/<pid>/stat` line, counted after the command
/// name, which is in parentheses and may hold spaces.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use testkit::envoy::{render, TemplateVars};

    use super::*;
    use crate::settings::{select, SETUPS};

    #[test]
    fn cpu_times_are_read_after_the_command_name() {
        let stat = "4242 (envoy main (x)) S 1 4242 4242 0 -1 4194560 2880 0 0 0 \
                    1500 250 0 0 20 0 10 0 99 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(1750));
        assert_eq!(parse_cpu_ticks("4242 (envoy) S 1"), None);
    }

    /// Every template, with what the bench fills in, has no placeholder left (the test kit
    /// refuses names it does not know) and names what each configuration needs.
    #[test]
    fn every_configuration_renders_with_what_the_bench_fills_in() {
        let settings = Settings {
            seconds: 1,
            warmup: 0,
            rounds: 1,
            connections: 1,
            threads: 1,
            pool: 5000,
            port_base: 18_600,
            out: PathBuf::new(),
            note: String::new(),
            pin: false,
            core: true,
            workers: true,
            instructions: true,
            core_only: false,
            workers_only: false,
            instructions_only: false,
            setups: select("").unwrap(),
        };
        let issuer = "http://127.0.0.1:18602/oauth2/default";
        let bench = Bench {
            settings: &settings,
            envoy_cpu: Some(0),
            wrk: Wrk {
                threads: 1,
                connections: 1,
                cpu: None,
                url: String::new(),
                out: PathBuf::new(),
                scripts: PathBuf::new(),
            },
            pool: Pool {
                path: PathBuf::new(),
                first: "t1".into(),
                second: "t2".into(),
            },
            basic: String::new(),
            vars: template_vars(issuer, r#"{"keys":[]}"#, Path::new("/b/empty_filter.wasm")),
            run_dir: PathBuf::new(),
            clock_ticks: 100,
        };
        let render_opts = |opts: &EnvoyOpts| {
            let vars = TemplateVars {
                admin_port: opts.ports.unwrap().admin,
                listen_port: opts.ports.unwrap().listen,
                idp_port: 18_602,
                echo_port: 1,
                wasm_path: PathBuf::from("/b/oidcgate.wasm"),
                filter_config: json!({}),
                extra: opts.extra_vars.clone(),
            };
            render(&opts.template, &vars)
        };
        for setup in &SETUPS {
            let opts = bench.envoy_opts(setup);
            assert_eq!(opts.cpu, Some(0));
            let yaml = render_opts(&opts);
            assert!(yaml.contains("port_value: 18601"), "{}", setup.id);
            assert!(yaml.contains("port_value: 18600"), "{}", setup.id);
            let wasm = match setup.template {
                "oidcgate" | "oidcgate-routes" => Some("/b/oidcgate.wasm"),
                "empty-wasm" | "floor-wasm" => Some("/b/empty_filter.wasm"),
                _ => None,
            };
            if let Some(wasm) = wasm {
                assert!(
                    yaml.contains(&format!("filename: \"{wasm}\"")),
                    "{}",
                    setup.id
                );
            }
            if setup.template == "floor-wasm" {
                assert!(
                    yaml.contains(&format!("value: \"{}\"", setup.floor)),
                    "{yaml}"
                );
            }
            if setup.template == "jwt_authn" {
                assert!(yaml.contains(&format!("issuer: \"{issuer}\"")), "{yaml}");
                assert!(yaml.contains(r#"inline_string: '{"keys":[]}'"#), "{yaml}");
                let cached = yaml.contains("jwt_cache_config: { jwt_cache_size: 100 }");
                assert_eq!(cached, setup.jwt_cache, "{}", setup.id);
            }
        }
        let core = crate::core::envoy_opts(&settings, None, Path::new("/b/core.wasm"), issuer);
        let yaml = render_opts(&core);
        assert!(yaml.contains("filename: \"/b/core.wasm\""), "{yaml}");
        assert!(yaml.contains(r#"value: '{"audience""#), "{yaml}");
    }
}
