//! Sending tokens through Envoy over a number of connections, sampling its memory and the
//! filter's cache counters as it goes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use testkit::load::{self, EnvoyMemory};
use testkit::Stack;

use crate::tokens::Minter;
use crate::Error;

/// A run that gets no answer for this long has stalled.
pub const STALL: Duration = Duration::from_secs(60);

/// One row of the samples table.
pub struct Sample {
    pub tokens: u64,
    pub elapsed: Duration,
    pub memory: EnvoyMemory,
    pub verify_hits: u64,
    pub verify_misses: u64,
}

/// What one sending run produced.
pub struct Run {
    pub samples: Vec<Sample>,
    /// Length of one of the tokens sent (they differ by a few bytes at most).
    pub token_bytes: usize,
    pub ok: u64,
    pub failed: u64,
    pub failures: Vec<String>,
    pub elapsed: Duration,
}

/// Where the tokens of a run come from.
pub enum Tokens {
    /// `count` tokens minted on the fly by `threads` threads: never all held at once.
    Minted {
        minter: Minter,
        count: u64,
        threads: u64,
    },
    /// Minted beforehand: for a probe, so that the rate measured is the filter's, not the
    /// signing's.
    Ready(Vec<String>),
}

/// Sends every token through `stack`'s Envoy, each once, over `connections` connections;
/// samples memory every `sample_every` tokens (and before the first and after the last)
/// when asked.
pub async fn send(
    stack: &Stack,
    tokens: Tokens,
    connections: u64,
    sample_every: Option<u64>,
) -> Result<Run, Error> {
    // Bounded, so minting runs only a little ahead of sending.
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(1024);
    let mut minting = Vec::new();
    let (count, token_bytes) = match tokens {
        Tokens::Minted {
            minter,
            count,
            threads,
        } => {
            let token_bytes = minter.mint(count).len();
            for t in 0..threads {
                let (tx, minter) = (tx.clone(), minter.clone());
                minting.push(std::thread::spawn(move || {
                    let mut i = t;
                    while i < count {
                        if tx.blocking_send(minter.mint(i)).is_err() {
                            break; // the senders stopped
                        }
                        i += threads;
                    }
                }));
            }
            (count, token_bytes)
        }
        Tokens::Ready(list) => {
            let (count, token_bytes) = (list.len() as u64, list.first().map_or(0, String::len));
            let tx = tx.clone();
            minting.push(std::thread::spawn(move || {
                for token in list {
                    if tx.blocking_send(token).is_err() {
                        break;
                    }
                }
            }));
            (count, token_bytes)
        }
    };
    drop(tx);

    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let url = stack.envoy.url("/api/memory");
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (rx, done, failed, failures) =
            (rx.clone(), done.clone(), failed.clone(), failures.clone());
        // A client each, so each sender keeps its own keep-alive connection.
        let (http, url) = (testkit::http_client(), url.clone());
        senders.spawn(async move {
            loop {
                let Some(token) = rx.lock().await.recv().await else {
                    break;
                };
                let outcome = match http.get(&url).bearer_auth(&token).send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        // Read the body so the connection is reused.
                        let body = response.bytes().await.unwrap_or_default();
                        (status != 200).then(|| {
                            format!(
                                "{status}: {}",
                                String::from_utf8_lossy(&body[..body.len().min(200)])
                            )
                        })
                    }
                    Err(e) => Some(format!("no answer: {e}")),
                };
                if let Some(problem) = outcome {
                    failed.fetch_add(1, Ordering::Relaxed);
                    let mut f = failures.lock().unwrap_or_else(|p| p.into_inner());
                    if f.len() < 10 {
                        f.push(problem);
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    let mut samples = Vec::new();
    if let Some(every) = sample_every {
        // Two early samples show the climb while the cache fills (it holds CACHE_ENTRIES),
        // then one every `every` tokens.
        let mut marks: Vec<u64> = [1_000, 10_000]
            .into_iter()
            .filter(|&m| m < every)
            .chain((1..).map(|k| k * every).take_while(|&m| m < count))
            .chain([count])
            .filter(|&m| m <= count)
            .collect();
        marks.dedup();
        samples.push(sample(stack, 0, Duration::ZERO).await?);
        let (mut last_done, mut last_change) = (0, Instant::now());
        for mark in marks {
            loop {
                let n = done.load(Ordering::Relaxed);
                if n >= mark {
                    break;
                }
                if n != last_done {
                    (last_done, last_change) = (n, Instant::now());
                } else if last_change.elapsed() > STALL {
                    return Err(format!("no answer for {STALL:?} after {n} tokens").into());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let n = done.load(Ordering::Relaxed);
            let s = sample(stack, n, started.elapsed()).await?;
            eprintln!(
                "memory: {n:>9} tokens  {:>6.1} s  allocated {} MiB  heap {} MiB  RSS {} MiB  verify hits {} misses {}",
                s.elapsed.as_secs_f64(),
                load::mib(s.memory.allocated),
                load::mib(s.memory.heap_size),
                load::mib_or_dash(s.memory.rss),
                s.verify_hits,
                s.verify_misses
            );
            samples.push(s);
        }
    }
    while let Some(joined) = senders.join_next().await {
        joined?;
    }
    let elapsed = started.elapsed();
    for m in minting {
        m.join().map_err(|_| "a minting thread panicked")?;
    }
    let failures = std::mem::take(&mut *failures.lock().unwrap_or_else(|p| p.into_inner()));
    let (done, failed) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    Ok(Run {
        samples,
        token_bytes,
        ok: done - failed,
        failed,
        failures,
        elapsed,
    })
}

pub async fn sample(stack: &Stack, tokens: u64, elapsed: Duration) -> Result<Sample, Error> {
    let memory = load::envoy_memory(&stack.http, &stack.envoy).await?;
    let counters = load::oidcgate_counters(&stack.http, &stack.envoy).await?;
    let counter = |name: &str| counters.get(name).copied().unwrap_or(0);
    Ok(Sample {
        tokens,
        elapsed,
        memory,
        verify_hits: counter("oidcgate.cache.verify.hit"),
        verify_misses: counter("oidcgate.cache.verify.miss"),
    })
}
