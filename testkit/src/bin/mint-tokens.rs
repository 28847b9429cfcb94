//! `mint-tokens --issuer <iss> --count N --out FILE [--ttl SECONDS] [--client-id ID]`: writes N
//! distinct Okta-shaped access tokens, one a line: the benchmark's cold-path pool
//! ([`testkit::tokens::pool`], which `bench` calls itself), for wrk runs by hand.
//!
//! `--ttl` (default 30 days) makes them outlive any benchmark.

use std::io::Write as _;
use std::process::exit;

const USAGE: &str = "usage: mint-tokens --issuer URL --count N --out FILE \
                     [--ttl SECONDS (default 2592000)] [--client-id ID (default demo-client)]";

struct Args {
    issuer: String,
    count: usize,
    out: String,
    ttl: u64,
    client_id: String,
}

fn usage(problem: &str) -> ! {
    eprintln!("mint-tokens: {problem}\n{USAGE}");
    exit(2)
}

fn parse_args() -> Args {
    let (mut issuer, mut count, mut out) = (None, None, None);
    let mut ttl = 30 * 24 * 3600;
    let mut client_id = "demo-client".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name.to_string(), Some(value.to_string())),
            None => (arg, None),
        };
        if name == "--help" || name == "-h" {
            println!("{USAGE}");
            exit(0);
        }
        let value = inline
            .or_else(|| args.next())
            .unwrap_or_else(|| usage(&format!("{name} needs a value")));
        let number = |what: &str| -> u64 {
            value
                .parse()
                .unwrap_or_else(|_| usage(&format!("{what} must be a whole number, not {value:?}")))
        };
        match name.as_str() {
            "--issuer" => issuer = Some(value.clone()),
            "--count" => count = Some(number("--count") as usize),
            "--out" => out = Some(value.clone()),
            "--ttl" => ttl = number("--ttl"),
            "--client-id" => client_id = value.clone(),
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    let issuer = issuer.unwrap_or_else(|| usage("--issuer is required"));
    let count = count.unwrap_or_else(|| usage("--count is required"));
    let out = out.unwrap_or_else(|| usage("--out is required"));
    if count == 0 {
        usage("--count must be at least 1");
    }
    Args {
        issuer,
        count,
        out,
        ttl,
        client_id,
    }
}

fn main() {
    let args = parse_args();
    let tokens = testkit::tokens::pool(&args.issuer, &args.client_id, args.count, args.ttl);
    let mut text = String::new();
    for token in tokens {
        text.push_str(&token);
        text.push('\n');
    }
    let write = std::fs::File::create(&args.out).and_then(|mut f| f.write_all(text.as_bytes()));
    if let Err(e) = write {
        eprintln!("mint-tokens: cannot write {}: {e}", args.out);
        exit(1);
    }
    eprintln!(
        "mint-tokens: {} tokens for {} (RS256, kid rsa-1, exp in {} s) in {}",
        args.count, args.issuer, args.ttl, args.out
    );
}
