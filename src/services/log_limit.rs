//! Log lines that could repeat as fast as clients retry (refused connections, accept errors,
//! a damaged partition answering every fetch) are written at most every 10 s, with a count of
//! those left out.

use std::time::Duration;

/// A log line at most every [`RateLimitedLog::EVERY`], with how many were suppressed since.
#[derive(Debug)]
pub struct RateLimitedLog {
    last: Option<std::time::Instant>,
    suppressed: u64,
    every: Duration,
}

impl Default for RateLimitedLog {
    fn default() -> Self {
        RateLimitedLog::new()
    }
}

impl RateLimitedLog {
    const EVERY: Duration = Duration::from_secs(10);

    /// A limiter that allows its first line at once (const: usable in a `static`).
    pub const fn new() -> RateLimitedLog {
        RateLimitedLog::every(Self::EVERY)
    }

    /// A limiter that allows a line at most every `every` (for conditions that last, such as
    /// a bound reached: once a minute says it without filling the log).
    pub const fn every(every: Duration) -> RateLimitedLog {
        RateLimitedLog {
            last: None,
            suppressed: 0,
            every,
        }
    }

    /// `Some(suppressed since the last line)` when a line may be logged now.
    pub fn allow(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|l| now.duration_since(l) < self.every)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}
