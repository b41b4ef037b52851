//! The server process as `/proc` shows it: CPU time, resident memory, open
//! descriptors.

use std::time::Duration;

use serde::Serialize;

/// A server process to watch, by pid.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Proc(pub(crate) u32);

impl Proc {
    /// This process: the load generator itself.
    pub(crate) fn me() -> Proc {
        Proc(std::process::id())
    }

    /// CPU time used by all the process's threads so far.
    pub(crate) fn cpu(self) -> std::io::Result<Duration> {
        // schedstat counts nanoseconds per thread; stat only clock ticks.
        let mut total = 0u64;
        for task in std::fs::read_dir(format!("/proc/{}/task", self.0))? {
            let path = task?.path().join("schedstat");
            if let Ok(s) = std::fs::read_to_string(path) {
                total += s
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
            }
        }
        Ok(Duration::from_nanos(total))
    }

    /// `(VmRSS, VmHWM)` in KiB.
    pub(crate) fn rss(self) -> std::io::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        Ok((field("VmRSS:"), field("VmHWM:")))
    }

    /// Open file descriptors: listener, sockets, and the runtime's own.
    pub(crate) fn fds(self) -> std::io::Result<usize> {
        Ok(std::fs::read_dir(format!("/proc/{}/fd", self.0))?.count())
    }

    /// What the process spent since `cpu_before`, per `units` of work.
    pub(crate) fn cost(self, cpu_before: Duration, units: u64) -> std::io::Result<Cost> {
        let cpu = self.cpu()?.saturating_sub(cpu_before).as_secs_f64();
        let (rss, peak) = self.rss()?;
        Ok(Cost {
            cpu_seconds: cpu,
            cpu_us_per_unit: cpu * 1e6 / units.max(1) as f64,
            peak_rss_kib: peak,
            rss_kib: rss,
        })
    }
}

/// What the server process spent during a run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Cost {
    /// CPU seconds (user + system) during the measured interval.
    pub(crate) cpu_seconds: f64,
    /// CPU microseconds per delivery (or per connection, for `idle`).
    pub(crate) cpu_us_per_unit: f64,
    /// Peak resident set size of the process, KiB.
    pub(crate) peak_rss_kib: u64,
    /// Resident set size at the end, KiB.
    pub(crate) rss_kib: u64,
}
