//! Write coalescing's clock: sessions whose output waits out
//! [`Config::coalesce`](crate::Config::coalesce) are woken together, one
//! gap after the first of them asked.
//!
//! Why a thread of its own: tokio's timers have a resolution of one
//! millisecond, too coarse for gaps of a few hundred microseconds, and one
//! timer per waiting session would cost a timer-wheel update (and often a
//! driver wake-up) per write saved. Here a whole tick's worth of sessions
//! costs one sleep and one batch of wakes.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::Waker;
use std::thread;
use std::time::{Duration, Instant};

/// Wakes deferred sessions once a gap has passed; stops with its last handle.
#[derive(Debug)]
pub(crate) struct Flusher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    gap: Duration,
    /// The origin of [`Flusher::now`].
    start: Instant,
    state: Mutex<State>,
    asked: Condvar,
    /// Ticks so far: a session deferred in tick `t` writes once this moves.
    tick: AtomicU32,
}

#[derive(Debug, Default)]
struct State {
    due: Vec<Waker>,
    stopped: bool,
}

impl Flusher {
    /// Starts the clock's thread. `None` if the system refuses a thread: the
    /// caller then writes at once.
    pub(crate) fn start(gap: Duration) -> Option<Self> {
        let inner = Arc::new(Inner {
            gap,
            start: Instant::now(),
            state: Mutex::new(State::default()),
            asked: Condvar::new(),
            tick: AtomicU32::new(0),
        });
        let clock = Arc::clone(&inner);
        thread::Builder::new()
            .name("chat-flusher".into())
            .spawn(move || clock.run())
            .ok()?;
        Some(Flusher { inner })
    }

    /// Microseconds since the flusher started, wrapping every 71 minutes: a
    /// session keeps its last write time in four bytes.
    pub(crate) fn now(&self) -> u32 {
        // Truncation is the point: only differences under the gap matter.
        self.inner.start.elapsed().as_micros() as u32
    }

    /// A time one gap before now, for a session never written to.
    pub(crate) fn since_ago(&self) -> u32 {
        self.now().wrapping_sub(self.gap_micros())
    }

    /// Whether a write at `then` (from [`Flusher::now`]) was less than a gap
    /// before `now`.
    pub(crate) fn within_gap(&self, then: u32, now: u32) -> bool {
        now.wrapping_sub(then) < self.gap_micros()
    }

    fn gap_micros(&self) -> u32 {
        // At most `Config::MAX_COALESCE`, 100 ms: fits.
        self.inner.gap.as_micros().min(u128::from(u32::MAX / 2)) as u32
    }

    /// The current tick.
    pub(crate) fn tick(&self) -> u16 {
        // Compared for equality only, by a session woken within a tick: two
        // bytes are enough.
        self.inner.tick.load(Ordering::Acquire) as u16
    }

    /// Wakes `waker` at the end of the current gap (starting one if none is
    /// under way).
    pub(crate) fn defer(&self, waker: Waker) {
        let mut state = self.inner.lock();
        let first = state.due.is_empty();
        state.due.push(waker);
        drop(state);
        if first {
            self.inner.asked.notify_one();
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.inner.lock().stopped = true;
        self.inner.asked.notify_one();
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a list of wakers: still sound after a panic elsewhere.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(&self) {
        let mut woken = Vec::new();
        loop {
            let mut state = self.lock();
            while state.due.is_empty() && !state.stopped {
                state = self
                    .asked
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            // The gap, cut short only by the server stopping (a defer
            // while one is under way does not signal).
            let end = Instant::now() + self.gap;
            while !state.stopped {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                state = self
                    .asked
                    .wait_timeout(state, end - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            self.tick.fetch_add(1, Ordering::Release);
            std::mem::swap(&mut woken, &mut state.due);
            let stopped = state.stopped;
            drop(state);
            woken.drain(..).for_each(Waker::wake);
            if stopped {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::task::Wake;

    struct Signal(Mutex<mpsc::Sender<Instant>>);

    impl Wake for Signal {
        fn wake(self: Arc<Self>) {
            let _ = self.0.lock().unwrap().send(Instant::now());
        }
    }

    #[test]
    fn wakes_everyone_deferred_after_one_gap_and_ticks() {
        let gap = Duration::from_millis(5);
        let flusher = Flusher::start(gap).unwrap();
        let (tx, rx) = mpsc::channel();
        let waker = Waker::from(Arc::new(Signal(Mutex::new(tx))));
        let before = flusher.tick();
        let asked = Instant::now();
        flusher.defer(waker.clone());
        flusher.defer(waker.clone());
        for _ in 0..2 {
            let at = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            assert!(at - asked >= gap, "woken after {:?}", at - asked);
        }
        assert_ne!(flusher.tick(), before);
        // Nothing more comes without another defer.
        assert!(rx.recv_timeout(gap * 4).is_err());
    }

    #[test]
    fn the_gap_is_measured_across_the_clock_wrapping() {
        let flusher = Flusher::start(Duration::from_micros(250)).unwrap();
        assert!(flusher.within_gap(u32::MAX - 100, 100));
        assert!(!flusher.within_gap(u32::MAX - 200, 100));
        assert!(!flusher.within_gap(flusher.since_ago(), flusher.now()));
    }

    #[test]
    fn dropping_it_wakes_whoever_waits() {
        let flusher = Flusher::start(Duration::from_secs(3600)).unwrap();
        let (tx, rx) = mpsc::channel();
        flusher.defer(Waker::from(Arc::new(Signal(Mutex::new(tx)))));
        drop(flusher);
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
    }
}
