//! Latency: a histogram in nanoseconds, and the percentiles a report shows.

use hdrhistogram::Histogram;
use serde::Serialize;

/// A histogram of latencies in nanoseconds, up to a minute.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Latency {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    pub(crate) max: f64,
}

impl Latency {
    /// The percentiles of `hist` (nanoseconds).
    pub(crate) fn of(hist: &Histogram<u64>) -> Latency {
        let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
        Latency {
            p50: us(0.5),
            p99: us(0.99),
            p999: us(0.999),
            max: hist.max() as f64 / 1000.0,
        }
    }
}
