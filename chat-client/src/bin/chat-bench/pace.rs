//! Turns at a steady rate: one thread with a precise clock decides when
//! each client may send its next message, and the client's own task sends
//! it. The clients' turns spread evenly over each period, as independent
//! people's would be: tokio's timers tick in whole milliseconds, which
//! would bunch the sends up.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Raises `allowed[i]` (how many messages client `i` may have sent by now)
/// for every `i` in `who`, `rate` times a second each, up to `messages`,
/// waking `wake[i]` each time; returns early once `stop()` says so.
pub(crate) fn pace(
    allowed: &[AtomicU32],
    wake: &[Notify],
    who: &[u32],
    messages: u32,
    rate: f64,
    stop: impl Fn() -> bool,
) {
    let period = Duration::from_secs_f64(1.0 / rate);
    let n = who.len();
    let t0 = Instant::now();
    for seq in 0..messages {
        for (turn, &id) in who.iter().enumerate() {
            let at = t0 + period * seq + period.mul_f64(turn as f64 / n as f64);
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if stop() {
                return;
            }
            let id = id as usize;
            allowed[id].store(seq + 1, Ordering::Release);
            wake[id].notify_one();
        }
    }
}
