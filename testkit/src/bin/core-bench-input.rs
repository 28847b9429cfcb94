//! `core-bench-input --issuer URL`: prints the plugin configuration of `bench/core-filter` (one
//! JSON line, [`testkit::tokens::core_bench_input`], which `bench` calls itself): a key set, one
//! token per signing algorithm, and the issuer the tokens carry.

use std::process::exit;

const USAGE: &str = "usage: core-bench-input --issuer URL";

fn main() {
    let mut args = std::env::args().skip(1);
    let issuer = match (args.next().as_deref(), args.next(), args.next()) {
        (Some("--issuer"), Some(issuer), None) => issuer,
        (Some("--help" | "-h"), None, None) => {
            println!("{USAGE}");
            exit(0)
        }
        _ => {
            eprintln!("core-bench-input: {USAGE}");
            exit(2)
        }
    };
    println!("{}", testkit::tokens::core_bench_input(&issuer));
}
