//! The server process as `/proc` shows it: CPU time, how often its threads
//! were scheduled, resident memory, open descriptors.

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
        Ok(self.sched()?.cpu)
    }

    /// CPU time and scheduling counts, summed over the process's threads
    /// (those alive now: an exited thread's counts are gone).
    pub(crate) fn sched(self) -> std::io::Result<Sched> {
        let mut total = Sched::default();
        for task in std::fs::read_dir(format!("/proc/{}/task", self.0))? {
            let dir = task?.path();
            // schedstat: nanoseconds on the CPU, nanoseconds waiting to run,
            // timeslices run (times the thread was put on a CPU). stat has
            // only clock ticks.
            if let Ok(s) = std::fs::read_to_string(dir.join("schedstat")) {
                let mut f = s.split_whitespace().map(|n| n.parse().unwrap_or(0));
                total.cpu += Duration::from_nanos(f.next().unwrap_or(0));
                total.slices += f.nth(1).unwrap_or(0);
            }
            if let Ok(s) = std::fs::read_to_string(dir.join("status")) {
                total.voluntary += field(&s, "voluntary_ctxt_switches:");
            }
        }
        Ok(total)
    }

    /// `(VmRSS, VmHWM)` in KiB.
    pub(crate) fn rss(self) -> std::io::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0))?;
        Ok((field(&status, "VmRSS:"), field(&status, "VmHWM:")))
    }

    /// Open file descriptors: listener, sockets, and the runtime's own.
    pub(crate) fn fds(self) -> std::io::Result<usize> {
        Ok(std::fs::read_dir(format!("/proc/{}/fd", self.0))?.count())
    }

    /// What the process spent since `before`, per `units` of work.
    pub(crate) fn cost(self, before: Sched, units: u64) -> std::io::Result<Cost> {
        let now = self.sched()?;
        let cpu = now.cpu.saturating_sub(before.cpu).as_secs_f64();
        let slices = now.slices.saturating_sub(before.slices);
        let voluntary = now.voluntary.saturating_sub(before.voluntary);
        let per = |x: f64| x / units.max(1) as f64;
        let (rss, peak) = self.rss()?;
        Ok(Cost {
            cpu_seconds: cpu,
            cpu_us_per_unit: per(cpu * 1e6),
            peak_rss_kib: peak,
            rss_kib: rss,
            wakeups: slices,
            wakeups_per_unit: per(slices as f64),
            voluntary_switches: voluntary,
            voluntary_switches_per_unit: per(voluntary as f64),
        })
    }
}

/// A `/proc/PID/status` line's number (`VmRSS:  1234 kB` gives 1234); 0
/// when the line is missing.
fn field(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// CPU time and scheduling counts of a process, summed over its threads.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sched {
    /// CPU time (user + system).
    pub(crate) cpu: Duration,
    /// Timeslices run: how many times a thread was put on a CPU, whether
    /// woken or resumed after preemption.
    pub(crate) slices: u64,
    /// Voluntary context switches: a thread gave up the CPU to wait.
    pub(crate) voluntary: u64,
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
    /// Times a server thread was put on a CPU during the interval
    /// (timeslices run, from /proc/PID/task/*/schedstat).
    pub(crate) wakeups: u64,
    /// `wakeups` per delivery (or per connection).
    pub(crate) wakeups_per_unit: f64,
    /// Voluntary context switches during the interval: a thread went to
    /// sleep waiting for work (/proc/PID/task/*/status).
    pub(crate) voluntary_switches: u64,
    /// `voluntary_switches` per delivery (or per connection).
    pub(crate) voluntary_switches_per_unit: f64,
}
