//! How many messages a sender may send: a token bucket, `burst` deep, refilled at
//! `per_second`. Pure: the caller passes the time.

use std::time::Duration;

use tokio::time::Instant;

/// The configured message rate of one chat participant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained messages per second.
    pub per_second: f64,
    /// Messages that may be sent at once after a quiet spell.
    pub burst: u32,
}

impl RateLimit {
    /// The `rate_limited` error message for `what` (the frames limited), saying what became of
    /// the refused one.
    pub fn refusal(&self, what: &str, consequence: &str) -> String {
        format!("at most {} {what} at once and {} per second; {consequence}", self.burst, self.per_second)
    }
}

/// One participant's bucket.
#[derive(Debug, Clone, Copy)]
pub struct Allowance {
    tokens: f64,
    at: Instant,
}

impl Allowance {
    /// A full bucket at `now`.
    pub fn full(limit: RateLimit, now: Instant) -> Self {
        Self { tokens: f64::from(limit.burst), at: now }
    }

    /// Takes one message's worth at `now`; `false` (and nothing taken) when the bucket is empty.
    pub fn take(&mut self, limit: RateLimit, now: Instant) -> bool {
        self.take_or_wait(limit, now).is_ok()
    }

    /// Takes one message's worth at `now`.
    ///
    /// # Errors
    /// The time until one more refills, when the bucket is empty (nothing taken).
    pub fn take_or_wait(&mut self, limit: RateLimit, now: Instant) -> Result<(), Duration> {
        self.tokens = self.tokens_at(limit, now);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::try_from_secs_f64((1.0 - self.tokens) / limit.per_second).unwrap_or(Duration::MAX))
        }
    }

    /// Whether the bucket has refilled to `burst` by `now` (the same as a new one).
    pub fn is_full(&self, limit: RateLimit, now: Instant) -> bool {
        self.tokens_at(limit, now) >= f64::from(limit.burst)
    }

    fn tokens_at(&self, limit: RateLimit, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * limit.per_second).min(f64::from(limit.burst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit { per_second: 5.0, burst: 10 };

    #[test]
    fn a_burst_passes_then_the_sustained_rate() {
        let start = Instant::now();
        let mut allowance = Allowance::full(LIMIT, start);
        assert_eq!((0..15).filter(|_| allowance.take(LIMIT, start)).count(), 10, "the burst");
        assert!(!allowance.take(LIMIT, start + Duration::from_millis(100)), "half a message refilled");
        assert!(allowance.take(LIMIT, start + Duration::from_millis(200)), "one message refilled");
        let later = start + Duration::from_secs(60);
        assert_eq!((0..15).filter(|_| allowance.take(LIMIT, later)).count(), 10, "never more than the burst");
    }
}
