//! Denial log lines as a hostile caller can make them: each line's caller-controlled text
//! escaped and cut short, and at most [`LINES_PER_WINDOW`] lines per [`WINDOW_MS`] per VM,
//! so that a flood of bad requests cannot fill the proxy's log. The counters still count
//! every denial; the next line after a quiet spell says how many were left out.

/// Caller-controlled text in a log line is cut to this many characters.
const MAX_LOGGED_CHARS: usize = 64;
pub const LINES_PER_WINDOW: u32 = 20;
pub const WINDOW_MS: u64 = 10_000;

#[derive(Debug, Default)]
pub struct LogBudget {
    window_start_ms: u64,
    used: u32,
    suppressed: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Log the line; `suppressed` lines were left out before it.
    Log {
        suppressed: u64,
    },
    Suppress,
}

impl LogBudget {
    pub fn admit(&mut self, now_ms: u64) -> Admit {
        let suppressed = self.roll(now_ms).unwrap_or(0);
        if self.used < LINES_PER_WINDOW {
            self.used += 1;
            Admit::Log { suppressed }
        } else {
            self.suppressed += 1;
            Admit::Suppress
        }
    }

    /// Starts a new window when the current one is over; how many lines the old one left
    /// out, if any. Call on the timer too, so that the count is told when a flood stops.
    pub fn roll(&mut self, now_ms: u64) -> Option<u64> {
        let elapsed = now_ms.checked_sub(self.window_start_ms);
        if elapsed.is_some_and(|e| e < WINDOW_MS) {
            return None;
        }
        self.window_start_ms = now_ms;
        self.used = 0;
        Some(std::mem::take(&mut self.suppressed)).filter(|n| *n > 0)
    }
}

/// Caller-controlled text as a log line may carry it: escaped, and cut short.
pub fn bounded(text: &str) -> String {
    bounded_to(text, MAX_LOGGED_CHARS)
}

/// [`bounded`] with another length, for text known to run longer (a host's fixed replies).
pub fn bounded_to(text: &str, chars: usize) -> String {
    let mut out: String = text
        .chars()
        .take(chars)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(chars).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_logs_a_window_s_worth_then_says_how_many_it_left_out() {
        let mut budget = LogBudget::default();
        let t0 = 1_000_000;
        let logged = (0..1000)
            .filter(|i| budget.admit(t0 + i) != Admit::Suppress)
            .count();
        assert_eq!(logged, LINES_PER_WINDOW as usize);
        assert_eq!(
            budget.admit(t0 + WINDOW_MS),
            Admit::Log {
                suppressed: 1000 - u64::from(LINES_PER_WINDOW)
            }
        );
        assert_eq!(
            budget.admit(t0 + WINDOW_MS + 1),
            Admit::Log { suppressed: 0 }
        );
    }

    #[test]
    fn the_timer_tells_the_count_when_the_flood_stops_and_a_clock_going_back_restarts() {
        let mut budget = LogBudget::default();
        for i in 0..30 {
            budget.admit(50_000 + i);
        }
        assert_eq!(budget.roll(50_000 + WINDOW_MS - 1), None);
        assert_eq!(budget.roll(50_000 + WINDOW_MS), Some(10));
        assert_eq!(budget.roll(90_000), None);
        assert_eq!(budget.admit(10), Admit::Log { suppressed: 0 });
    }

    #[test]
    fn caller_text_is_escaped_and_cut() {
        assert_eq!(bounded("svc\n\u{1b}[31m"), "svc\\n\\u{1b}[31m");
        let long = "a".repeat(60_000);
        let logged = bounded(&long);
        assert_eq!(logged.chars().count(), MAX_LOGGED_CHARS + 1);
        assert!(logged.ends_with('…'));
        assert_eq!(
            bounded(&"b".repeat(MAX_LOGGED_CHARS)),
            "b".repeat(MAX_LOGGED_CHARS)
        );
    }
}
