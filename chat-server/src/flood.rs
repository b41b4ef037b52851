//! Flood control: a token bucket per client.

use tokio::time::Instant;

/// `rate` tokens a second, at most `burst` saved up; each message takes one.
/// A zero rate lets everything through.
#[derive(Debug)]
pub(crate) struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub(crate) fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Bucket {
            rate: f64::from(rate),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Adds the tokens earned since the last refill.
    pub(crate) fn refill(&mut self, now: Instant) {
        let secs = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + secs * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes a token; false if there is none (the client floods).
    pub(crate) fn take(&mut self) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10, 3, t0);
        assert!((0..3).all(|_| b.take()));
        assert!(!b.take());
        b.refill(t0 + Duration::from_millis(100));
        assert!(b.take());
        assert!(!b.take());
    }

    #[test]
    fn zero_rate_is_off() {
        let mut b = Bucket::new(0, 0, Instant::now());
        assert!((0..10_000).all(|_| b.take()));
    }
}
