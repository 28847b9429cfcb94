//! What the Envoy and nginx runners share: free ports, a scratch directory per run, how a
//! start-up ended, whether the process still runs, and the tail of its log.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicU32, Ordering};

/// How a wait for a process to become ready ended.
pub(crate) enum Startup {
    Ready,
    Exited(ExitStatus),
    TimedOut,
}

/// `N` distinct free loopback ports. All are held until all are picked, so they differ.
pub(crate) fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: [TcpListener; N] =
        std::array::from_fn(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"));
    listeners.map(|l| l.local_addr().expect("bound").port())
}

/// A new, empty directory for one run of `kind` (`envoy`, `nginx`), unique in this process.
pub(crate) fn scratch_dir(kind: &str) -> PathBuf {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "oidcgate-{kind}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// Whether the child is still running (not killed, not exited).
pub(crate) fn running(child: &mut Option<Child>) -> bool {
    child
        .as_mut()
        .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
}

/// The last `lines` lines of `log`.
pub(crate) fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
