//! The human form of each workload's report (`--json` prints the fields).

use std::fmt;

use crate::system::System;
use crate::{fanout, idle, soak};

impl fmt::Display for fanout::Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "fanout: {} clients x {} messages x {} B{}",
            self.clients,
            self.messages,
            self.size,
            match self.system {
                System::Chat => "",
                System::Nats => " (NATS)",
                System::Redis => " (Redis)",
            }
        )?;
        writeln!(
            f,
            "  deliveries        {} of {}",
            self.deliveries, self.expected
        )?;
        if self.system.echoes() {
            writeln!(
                f,
                "  self deliveries   {} (own messages echoed back, not counted)",
                self.self_deliveries
            )?;
        }
        writeln!(f, "  seconds           {:.3}", self.seconds)?;
        writeln!(f, "  deliveries/s      {:.0}", self.rate)?;
        let l = &self.latency_us;
        writeln!(
            f,
            "  latency us        p50 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}",
            l.p50, l.p99, l.p999, l.max
        )?;
        writeln!(f, "  losses            {}", self.losses)?;
        writeln!(f, "  duplicates        {}", self.duplicates)?;
        writeln!(f, "  order violations  {}", self.order_violations)?;
        writeln!(f, "  corrupt           {}", self.corrupt)?;
        for lost in &self.evicted {
            writeln!(
                f,
                "  disconnected      client {}: {}",
                lost.client, lost.reason
            )?;
        }
        if self.timed_out {
            writeln!(f, "  timed out         no delivery for the whole timeout")?;
        }
        if self.stalled > 0 {
            writeln!(
                f,
                "  stalled evicted   {} of {} as slow consumers",
                self.stalled_evicted, self.stalled
            )?;
            for (i, o) in self.stalled_outcomes.iter().enumerate() {
                if !o.slow_consumer() {
                    writeln!(f, "  stalled client {i}  {o:?}")?;
                }
            }
        }
        if let Some(s) = &self.server {
            writeln!(
                f,
                "  server cpu        {:.3} s, {:.4} us/delivery",
                s.cpu_seconds, s.cpu_us_per_unit
            )?;
            writeln!(
                f,
                "  server rss        {} KiB now, {} KiB peak",
                s.rss_kib, s.peak_rss_kib
            )?;
        }
        write!(
            f,
            "  result            {}",
            if self.passed() { "PASS" } else { "FAIL" }
        )
    }
}

impl fmt::Display for idle::Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "idle: {} connections", self.connections)?;
        writeln!(f, "  join notices      {}", self.joined_notices)?;
        writeln!(f, "  connect seconds   {:.3}", self.connect_seconds)?;
        writeln!(f, "  settle seconds    {:.3}", self.settle_seconds)?;
        if let (Some(b), Some(a)) = (self.rss_before_kib, self.rss_after_kib) {
            writeln!(
                f,
                "  server rss        {b} KiB before, {a} KiB with all held"
            )?;
        }
        if let Some(p) = self.rss_per_connection {
            writeln!(f, "  rss/connection    {:.0} B ({:.2} KiB)", p, p / 1024.0)?;
        }
        if let Some(s) = &self.server {
            writeln!(
                f,
                "  server cpu        {:.3} s, peak rss {} KiB",
                s.cpu_seconds, s.peak_rss_kib
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for soak::Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "soak: {} rounds x {} clients, each stalled in a frame claiming {} bytes ({} sent)",
            self.rounds_planned, self.clients, self.claim, self.sent
        )?;
        writeln!(
            f,
            "  fresh rss      {} KiB, {} fds (before any client)",
            self.fresh_rss_kib, self.baseline_fds
        )?;
        writeln!(
            f,
            "  baseline rss   {} KiB (after a warm-up round of {} idle clients; {:.2}x fresh)",
            self.baseline_rss_kib,
            self.clients,
            self.baseline_rss_kib as f64 / self.fresh_rss_kib.max(1) as f64
        )?;
        writeln!(
            f,
            "  round   peak KiB  peak fds  after KiB  after/base  closed early  seconds"
        )?;
        for r in &self.rounds {
            writeln!(
                f,
                "  {:>5} {:>10} {:>9} {:>10} {:>11.2} {:>13} {:>8.2}{}",
                r.round,
                r.peak_rss_kib,
                r.peak_fds,
                r.after_rss_kib,
                r.after_rss_kib as f64 / self.baseline_rss_kib.max(1) as f64,
                r.closed_early,
                r.seconds,
                if r.noticed {
                    ""
                } else {
                    "  (the server still held sockets)"
                }
            )?;
        }
        match &self.failure {
            None => write!(f, "  result         PASS"),
            Some(why) => write!(f, "  result         FAIL: {why}"),
        }
    }
}
