//! Rate limits on attempts, checked before any hash is computed, so a
//! brute force costs the server no hashing: password attempts per account
//! and per IP, registrations per IP. Each is a `governor` GCRA limiter
//! keyed by account or address; a rate of zero turns that one off.
//!
//! IPv6 clients are counted by their /64, the block one subscriber
//! usually has, so that walking through its addresses gains nothing.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// Checks between two sweeps of keys whose limits have fully recovered.
const SWEEP_EVERY: u64 = 4096;

/// The limiters of one [`Accounts`](super::Accounts).
pub(super) struct Throttle {
    /// Password attempts per account key.
    account: Option<DefaultKeyedRateLimiter<Box<str>>>,
    /// Password and token attempts per address.
    ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Registrations per address.
    register: Option<DefaultKeyedRateLimiter<IpAddr>>,
    clock: DefaultClock,
    checks: AtomicU64,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle").finish_non_exhaustive()
    }
}

/// `n` per `per`, a burst of `n`; `None` for zero.
fn limiter<K>(n: u32, per: Duration) -> Option<DefaultKeyedRateLimiter<K>>
where
    K: Clone + std::hash::Hash + Eq,
{
    let n = NonZeroU32::new(n)?;
    let quota = Quota::with_period(per / n.get())?.allow_burst(n);
    Some(DefaultKeyedRateLimiter::keyed(quota))
}

impl Throttle {
    /// `login` password attempts per account and `login_ip` attempts per
    /// address each minute, `register` registrations per address each hour.
    pub(super) fn new(login: u32, login_ip: u32, register: u32) -> Throttle {
        const MINUTE: Duration = Duration::from_secs(60);
        Throttle {
            account: limiter(login, MINUTE),
            ip: limiter(login_ip, MINUTE),
            register: limiter(register, 60 * MINUTE),
            clock: DefaultClock::default(),
            checks: AtomicU64::new(0),
        }
    }

    /// Counts a password attempt on the account `key` from `ip`; `Err` with
    /// the wait if either is over its limit. The address is checked first:
    /// an address that is over spends nothing of the account's allowance.
    pub(super) fn login(&self, key: &str, ip: IpAddr) -> Result<(), Duration> {
        self.sweep();
        self.check(self.ip.as_ref(), &block(ip))?;
        self.check(self.account.as_ref(), &Box::from(key))
    }

    /// Counts a token attempt from `ip`.
    pub(super) fn token(&self, ip: IpAddr) -> Result<(), Duration> {
        self.sweep();
        self.check(self.ip.as_ref(), &block(ip))
    }

    /// Counts a registration from `ip`.
    pub(super) fn register(&self, ip: IpAddr) -> Result<(), Duration> {
        self.sweep();
        self.check(self.register.as_ref(), &block(ip))
    }

    fn check<K>(
        &self,
        limiter: Option<&DefaultKeyedRateLimiter<K>>,
        key: &K,
    ) -> Result<(), Duration>
    where
        K: Clone + std::hash::Hash + Eq,
    {
        match limiter {
            Some(limiter) => limiter
                .check_key(key)
                .map_err(|not_until| not_until.wait_time_from(self.clock.now())),
            None => Ok(()),
        }
    }

    /// Now and then, forgets the keys that are back to a full allowance, so
    /// the maps hold only recent attempts.
    fn sweep(&self) {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY != SWEEP_EVERY - 1 {
            return;
        }
        if let Some(l) = &self.account {
            l.retain_recent();
        }
        for l in [&self.ip, &self.register].into_iter().flatten() {
            l.retain_recent();
        }
    }

    /// Keys held, over all limiters (for tests).
    #[cfg(test)]
    pub(super) fn keys(&self) -> usize {
        self.account.as_ref().map_or(0, |l| l.len())
            + [&self.ip, &self.register]
                .into_iter()
                .flatten()
                .map(|l| l.len())
                .sum::<usize>()
    }
}

/// The key an address is counted under: itself for IPv4 (IPv4-mapped IPv6
/// included), its /64 for IPv6.
fn block(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(block(a), block(b));
        assert_ne!(block(a), block(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(block(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn limits_count_and_zero_turns_them_off() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let throttle = Throttle::new(3, 0, 2);
        for _ in 0..3 {
            throttle.login("ann", ip).unwrap();
        }
        let wait = throttle.login("ann", ip).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        // Another account from the same address (no per-address limit).
        throttle.login("bob", ip).unwrap();
        throttle.register(ip).unwrap();
        throttle.register(ip).unwrap();
        assert!(throttle.register(ip).is_err());
        let off = Throttle::new(0, 0, 0);
        for _ in 0..1000 {
            off.login("ann", ip).unwrap();
            off.register(ip).unwrap();
        }
        assert_eq!(off.keys(), 0);
    }
}
