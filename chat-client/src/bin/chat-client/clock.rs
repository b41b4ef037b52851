//! The local time of day, `HH:MM`, for the start of each line.
//!
//! chrono reads the time zone from `TZ` or the system's zone file, and falls
//! back to UTC when it cannot; a zone file it can read but not use makes it
//! panic, though. So the first reading happens before anything else, with
//! the panic caught and silenced: if the local zone is unusable, the client
//! says so once and shows UTC.

use std::panic;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Local, Timelike, Utc};

/// Set when the local time zone could not be used.
static UTC_ONLY: AtomicBool = AtomicBool::new(false);

/// Checks that the local time zone can be used; returns a warning if not.
/// Call once, early, while no other thread can panic.
pub(crate) fn probe() -> Option<String> {
    let quiet = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let local = panic::catch_unwind(|| Local::now().time());
    panic::set_hook(quiet);
    match local {
        Ok(_) => None,
        Err(_) => {
            UTC_ONLY.store(true, Ordering::Relaxed);
            Some("the local time zone cannot be used; times are UTC".into())
        }
    }
}

/// The time of day now, as `HH:MM`.
pub(crate) fn now() -> String {
    let time = if UTC_ONLY.load(Ordering::Relaxed) {
        Utc::now().time()
    } else {
        // The probe succeeded, but the zone may change under us: never let
        // a bad one end the program.
        panic::catch_unwind(|| Local::now().time()).unwrap_or_else(|_| {
            UTC_ONLY.store(true, Ordering::Relaxed);
            Utc::now().time()
        })
    };
    format!("{:02}:{:02}", time.hour(), time.minute())
}

/// A server time (ms since the Unix epoch) as the local `HH:MM`, with the
/// date before it (`YYYY-MM-DD HH:MM`) when it is not today.
pub(crate) fn at(ms: u64) -> String {
    let Some(utc) = i64::try_from(ms)
        .ok()
        .and_then(DateTime::<Utc>::from_timestamp_millis)
    else {
        return "--:--".into();
    };
    let today = Utc::now().date_naive();
    let (date, time) = if UTC_ONLY.load(Ordering::Relaxed) {
        (utc.date_naive(), utc.time())
    } else {
        panic::catch_unwind(|| {
            let local = utc.with_timezone(&Local);
            (local.date_naive(), local.time())
        })
        .unwrap_or((utc.date_naive(), utc.time()))
    };
    let hm = format!("{:02}:{:02}", time.hour(), time.minute());
    // Near midnight in a zone far from UTC this may say a date for today;
    // harmless.
    if date.signed_duration_since(today).num_days().abs() >= 1 {
        format!("{date} {hm}")
    } else {
        hm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_and_minutes() {
        let shown = now();
        let bytes = shown.as_bytes();
        assert_eq!(bytes.len(), 5, "{shown}");
        assert_eq!(bytes[2], b':');
        let hours: u32 = shown[..2].parse().unwrap();
        let minutes: u32 = shown[3..].parse().unwrap();
        assert!(hours < 24 && minutes < 60, "{shown}");
    }

    #[test]
    fn stored_times() {
        assert_eq!(at(u64::MAX), "--:--");
        // 2025-12-05 00:00 UTC: a date, for it is not today.
        assert!(
            at(1_764_892_800_000).contains("2025-12-0"),
            "{}",
            at(1_764_892_800_000)
        );
    }
}
