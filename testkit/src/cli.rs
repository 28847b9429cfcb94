//! Argument handling shared by the `mock-idp` and `echo-upstream` binaries.

/// Parses `--port N` / `--port=N` (default `default`); exits with usage on anything else.
pub fn port_arg(program: &str, default: u16) -> u16 {
    let usage = || -> ! {
        eprintln!("usage: {program} [--port N]   (default {default}; 0 picks a free port)");
        std::process::exit(2)
    };
    let mut port = default;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "--port" => args.next(),
            _ => match arg.strip_prefix("--port=") {
                Some(v) => Some(v.to_string()),
                None => usage(),
            },
        };
        port = value
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| usage());
    }
    port
}
