//! What a run measures and how: the configurations, and the settings from the environment.

use std::path::PathBuf;

use testkit::load;

use crate::Error;

/// What a configuration's requests carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential {
    None,
    /// One bearer token, the pool's first.
    Bearer,
    /// One client-credentials pair (`demo-client`) as `Authorization: Basic`.
    Basic,
    /// A new bearer token every request, cycling through the pool.
    Pool,
}

/// One configuration of the benchmark.
#[derive(Debug)]
pub struct Setup {
    pub id: &'static str,
    pub label: &'static str,
    /// `bench/envoy/<template>.yaml`.
    pub template: &'static str,
    /// With `jwt_authn.yaml`: whether the filter caches verified tokens (`jwt_cache_config`).
    pub jwt_cache: bool,
    /// With `floor-wasm.yaml`: the host calls `bench/empty-filter` makes.
    pub floor: &'static str,
    pub credential: Credential,
}

/// The host-call floor of the issue that set the hot-path target: the headers oidcgate
/// writes in `bench/envoy/oidcgate.yaml`, each set after `Authorization` is read.
pub const FLOOR_WRITES: &str = "issuer_header,x-subject,authorization";

/// Every host call oidcgate's cached bearer request makes, and no other work: besides
/// [`FLOOR_WRITES`], the clock (expiry), the removal of the claim headers' other spellings
/// (`Issuer_Header` is also read as `issuer-header`, `X-Subject` as `x_subject`), and the
/// access-log property `wasm.oidcgate.client_id`.
pub const FLOOR_ALL_CALLS: &str =
    "@clock,=oidcgate.client_id,issuer_header,x-subject,authorization,-issuer-header,-x_subject";

const fn setup(
    id: &'static str,
    label: &'static str,
    template: &'static str,
    credential: Credential,
) -> Setup {
    Setup {
        id,
        label,
        template,
        jwt_cache: false,
        floor: "",
        credential,
    }
}

/// Every configuration, in the order of every round.
pub const SETUPS: [Setup; 12] = [
    setup("none", "no filter", "none", Credential::None),
    setup(
        "empty-wasm",
        "empty wasm filter (Bearer header)",
        "empty-wasm",
        Credential::Bearer,
    ),
    setup(
        "empty-wasm-basic",
        "empty wasm filter (Basic header)",
        "empty-wasm",
        Credential::Basic,
    ),
    Setup {
        floor: FLOOR_WRITES,
        ..setup(
            "floor-wasm",
            "host-call floor: read Authorization, set 3 headers (Bearer)",
            "floor-wasm",
            Credential::Bearer,
        )
    },
    Setup {
        floor: FLOOR_ALL_CALLS,
        ..setup(
            "floor-all",
            "host-call floor with all of oidcgate's calls: + clock, 2 spelling removals, access-log property (Bearer)",
            "floor-wasm",
            Credential::Bearer,
        )
    },
    setup(
        "jwt-hot",
        "jwt_authn, one token",
        "jwt_authn",
        Credential::Bearer,
    ),
    Setup {
        jwt_cache: true,
        ..setup(
            "jwt-cache-hot",
            "jwt_authn + jwt_cache_config, one token",
            "jwt_authn",
            Credential::Bearer,
        )
    },
    setup(
        "oidcgate-bearer",
        "oidcgate bearer, one token (hot)",
        "oidcgate",
        Credential::Bearer,
    ),
    setup(
        "oidcgate-routes",
        "oidcgate bearer, one token (hot), 20 route rules and 5 policies",
        "oidcgate-routes",
        Credential::Bearer,
    ),
    setup(
        "oidcgate-cc",
        "oidcgate client credentials, one Basic credential (hot)",
        "oidcgate",
        Credential::Basic,
    ),
    setup(
        "oidcgate-cold",
        "oidcgate bearer, new token every request (cold)",
        "oidcgate",
        Credential::Pool,
    ),
    setup(
        "jwt-cold",
        "jwt_authn (no cache), new token every request",
        "jwt_authn",
        Credential::Pool,
    ),
];

/// `BENCH_ONLY=core`: no configuration, only the core costs (printed, no report written).
pub const CORE_ONLY: &str = "core";
/// `BENCH_ONLY=workers`: only what a worker costs (memory, start to first allowed answer).
pub const WORKERS_ONLY: &str = "workers";
/// `BENCH_ONLY=instructions`: only the instruction counts (callgrind), printed.
pub const INSTRUCTIONS_ONLY: &str = "instructions";

/// The configurations `only` names (comma-separated ids), in the order of [`SETUPS`]; all of
/// them when `only` is empty.
pub fn select(only: &str) -> Result<Vec<&'static Setup>, Error> {
    if only == CORE_ONLY || only == WORKERS_ONLY {
        return Ok(Vec::new());
    }
    if only == INSTRUCTIONS_ONLY {
        return Ok(SETUPS
            .iter()
            .filter(|s| crate::instructions::COUNTED.contains(&s.id))
            .collect());
    }
    if only.is_empty() {
        return Ok(SETUPS.iter().collect());
    }
    let named: Vec<&str> = only.split(',').collect();
    let selected: Vec<&Setup> = SETUPS.iter().filter(|s| named.contains(&s.id)).collect();
    if selected.is_empty() {
        let ids: Vec<&str> = SETUPS.iter().map(|s| s.id).collect();
        return Err(format!(
            "BENCH_ONLY={only} names no configuration (ids: {})",
            ids.join(" ")
        )
        .into());
    }
    Ok(selected)
}

/// The smallest cold-path pool: it must hold more distinct tokens than any verified-token
/// cache (oidcgate keeps 4096), so that every measured request is a miss.
const POOL_MIN: u64 = 5000;

/// The run's settings, from the environment (see `scripts/bench`).
pub struct Settings {
    /// Each measurement, in seconds; the warm-up before it.
    pub seconds: u64,
    pub warmup: u64,
    pub rounds: u64,
    /// wrk's `-c` and `-t`.
    pub connections: u64,
    pub threads: u64,
    /// Tokens in the cold-path pool.
    pub pool: u64,
    /// The listener; the admin port is the next one, the mock IdP's the one after.
    pub port_base: u16,
    pub out: PathBuf,
    pub note: String,
    /// Pin Envoy and wrk to CPUs 0 and 1 when there are two (`BENCH_PIN=0`: never).
    pub pin: bool,
    /// Time the core operations in V8 too (`BENCH_CORE=0`: skip).
    pub core: bool,
    /// Measure what a worker costs too (`BENCH_WORKERS=0`: skip).
    pub workers: bool,
    /// Count instructions per request under callgrind too (`BENCH_INSTRUCTIONS=0`: skip).
    pub instructions: bool,
    /// `BENCH_ONLY=core`, `BENCH_ONLY=workers` or `BENCH_ONLY=instructions`.
    pub core_only: bool,
    pub workers_only: bool,
    pub instructions_only: bool,
    pub setups: Vec<&'static Setup>,
}

impl Settings {
    pub fn from_env() -> Result<Settings, Error> {
        let flag = |name: &str| std::env::var(name).map_or(true, |v| v != "0");
        let settings = Settings {
            seconds: load::env_number("BENCH_SECONDS", 10)?,
            warmup: load::env_number("BENCH_WARMUP", 3)?,
            rounds: load::env_number("BENCH_ROUNDS", 3)?,
            connections: load::env_number("BENCH_CONNECTIONS", 16)?,
            threads: load::env_number("BENCH_THREADS", 1)?,
            pool: load::env_number("BENCH_POOL", 10_000)?,
            port_base: match load::env_number("BENCH_PORT_BASE", 18_600)? {
                base @ 1024..=65_000 => base as u16,
                _ => return Err("BENCH_PORT_BASE must be in 1024..65000".into()),
            },
            out: load::env_path("BENCH_OUT", "docs/bench.md"),
            note: std::env::var("BENCH_NOTE").unwrap_or_default(),
            pin: flag("BENCH_PIN"),
            core: flag("BENCH_CORE"),
            workers: flag("BENCH_WORKERS"),
            core_only: std::env::var("BENCH_ONLY").is_ok_and(|o| o == CORE_ONLY),
            workers_only: std::env::var("BENCH_ONLY").is_ok_and(|o| o == WORKERS_ONLY),
            instructions: flag("BENCH_INSTRUCTIONS"),
            instructions_only: std::env::var("BENCH_ONLY").is_ok_and(|o| o == INSTRUCTIONS_ONLY),
            setups: select(&std::env::var("BENCH_ONLY").unwrap_or_default())?,
        };
        if [
            settings.seconds,
            settings.rounds,
            settings.connections,
            settings.threads,
        ]
        .contains(&0)
        {
            return Err("BENCH_SECONDS, BENCH_ROUNDS, BENCH_CONNECTIONS and BENCH_THREADS must be at least 1".into());
        }
        if settings.pool < POOL_MIN {
            return Err(format!(
                "BENCH_POOL must be at least {POOL_MIN} (more than oidcgate's verified-token cache holds), not {}",
                settings.pool
            )
            .into());
        }
        Ok(settings)
    }

    pub fn listen_port(&self) -> u16 {
        self.port_base
    }

    pub fn admin_port(&self) -> u16 {
        self.port_base + 1
    }

    pub fn idp_port(&self) -> u16 {
        self.port_base + 2
    }

    /// The pool's first tenth warms up the cold configurations; the rest is measured.
    pub fn pool_warm(&self) -> u64 {
        self.pool / 10
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_picks_exact_ids_in_the_order_of_a_round() {
        let ids = |only| {
            select(only)
                .map(|s| s.iter().map(|s| s.id).collect::<Vec<_>>())
                .map_err(|e| e.to_string())
        };
        assert_eq!(ids("").unwrap().len(), SETUPS.len());
        assert_eq!(
            ids("jwt-cold,none,oidcgate-cc").unwrap(),
            ["none", "oidcgate-cc", "jwt-cold"]
        );
        // An id must be named whole: `jwt` is no configuration, `none,x` still is one.
        assert_eq!(ids("none,x").unwrap(), ["none"]);
        let refused = ids("jwt").unwrap_err();
        assert!(refused.contains("names no configuration"), "{refused}");
        assert!(refused.contains("oidcgate-cold"), "{refused}");
    }

    #[test]
    fn ids_are_distinct_and_only_jwt_authn_caches() {
        let mut ids: Vec<&str> = SETUPS.iter().map(|s| s.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), SETUPS.len());
        for s in &SETUPS {
            assert!(!s.jwt_cache || s.template == "jwt_authn", "{}", s.id);
            assert_eq!(s.floor.is_empty(), s.template != "floor-wasm", "{}", s.id);
        }
    }
}
