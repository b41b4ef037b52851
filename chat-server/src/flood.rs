//! Flood control: a token bucket per client.

use tokio::time::Instant;

/// `rate` tokens a second, at most `burst` saved up; each message takes one.
/// A zero rate lets everything through. The rate and burst are the same for
/// every client, so the caller passes them rather than each bucket keeping a
/// copy: every idle client holds its buckets.
#[derive(Debug)]
pub(crate) struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The most tokens a bucket of `burst` holds.
fn cap(burst: u32) -> f64 {
    f64::from(burst.max(1))
}

impl Bucket {
    /// A full bucket.
    pub(crate) fn new(burst: u32, now: Instant) -> Self {
        Bucket {
            tokens: cap(burst),
            last: now,
        }
    }

    /// Adds the tokens earned since the last refill.
    pub(crate) fn refill(&mut self, rate: u32, burst: u32, now: Instant) {
        let secs = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + secs * f64::from(rate)).min(cap(burst));
        self.last = now;
    }

    /// Takes a token; false if there is none (the client floods).
    pub(crate) fn take(&mut self, rate: u32) -> bool {
        if rate == 0 {
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
        let mut b = Bucket::new(3, t0);
        assert!((0..3).all(|_| b.take(10)));
        assert!(!b.take(10));
        b.refill(10, 3, t0 + Duration::from_millis(100));
        assert!(b.take(10));
        assert!(!b.take(10));
        // Never more than the burst saved up.
        b.refill(10, 3, t0 + Duration::from_secs(60));
        assert!((0..3).all(|_| b.take(10)));
        assert!(!b.take(10));
    }

    #[test]
    fn zero_rate_is_off() {
        let mut b = Bucket::new(0, Instant::now());
        assert!((0..10_000).all(|_| b.take(0)));
    }
}
