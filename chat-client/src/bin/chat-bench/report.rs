//! The human form of each workload's report (`--json` prints the fields).

use std::fmt;

use crate::fanout::Lost;
use crate::latency::Latency;
use crate::procfs::Cost;
use crate::system::System;
use crate::{dm, fanout, history, idle, soak};

/// One line of latency percentiles.
fn latency(f: &mut fmt::Formatter<'_>, what: &str, l: &Latency) -> fmt::Result {
    writeln!(
        f,
        "  {what:<17} p50 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}",
        l.p50, l.p99, l.p999, l.max
    )
}

/// Two lines: how often the server's threads ran and went to sleep, per `unit`.
fn wakeups(f: &mut fmt::Formatter<'_>, s: &Cost, unit: &str) -> fmt::Result {
    writeln!(
        f,
        "  server wake-ups   {}, {:.4}/{unit} (timeslices run)",
        s.wakeups, s.wakeups_per_unit
    )?;
    writeln!(
        f,
        "  server sleeps     {}, {:.4}/{unit} (voluntary context switches)",
        s.voluntary_switches, s.voluntary_switches_per_unit
    )
}

/// The four delivery checks every message workload makes.
fn checks(
    f: &mut fmt::Formatter<'_>,
    (losses, duplicates, order, corrupt): (u64, u64, u64, u64),
) -> fmt::Result {
    writeln!(f, "  losses            {losses}")?;
    writeln!(f, "  duplicates        {duplicates}")?;
    writeln!(f, "  order violations  {order}")?;
    writeln!(f, "  corrupt           {corrupt}")
}

/// The clients lost (each on a line `label`ed), and the timeout if it
/// stopped the run (`silence` came for the whole of it).
fn failures(
    f: &mut fmt::Formatter<'_>,
    label: &str,
    evicted: &[Lost],
    timed_out: bool,
    silence: &str,
) -> fmt::Result {
    for lost in evicted {
        writeln!(f, "  {label:<17} client {}: {}", lost.client, lost.reason)?;
    }
    if timed_out {
        writeln!(f, "  timed out         {silence} for the whole timeout")?;
    }
    Ok(())
}

/// The load generator's own CPU time.
fn load_cpu(f: &mut fmt::Formatter<'_>, seconds: f64) -> fmt::Result {
    writeln!(f, "  load cpu          {seconds:.3} s (chat-bench's own)")
}

/// The server's memory now and at its peak.
fn rss(f: &mut fmt::Formatter<'_>, s: &Cost) -> fmt::Result {
    writeln!(
        f,
        "  server rss        {} KiB now, {} KiB peak",
        s.rss_kib, s.peak_rss_kib
    )
}

/// The last line: PASS or FAIL.
fn result(f: &mut fmt::Formatter<'_>, passed: bool) -> fmt::Result {
    write!(
        f,
        "  result            {}",
        if passed { "PASS" } else { "FAIL" }
    )
}

/// What follows the title of a run against an anchor.
fn anchor(system: System) -> &'static str {
    match system {
        System::Chat if crate::tls::on() => " (TLS)",
        System::Chat => "",
        System::Nats => " (NATS)",
        System::Redis => " (Redis)",
    }
}

impl fmt::Display for fanout::Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rooms {
            None => writeln!(
                f,
                "fanout: {} clients x {} messages x {} B{}",
                self.clients,
                self.messages,
                self.size,
                anchor(self.system)
            )?,
            Some(r) => writeln!(
                f,
                "rooms: {} clients in {} rooms of {}, {} rooms each, x {} messages x {} B, {} in a row per room{}{}",
                self.clients,
                r.rooms,
                r.room_size,
                r.per_client,
                self.messages,
                self.size,
                r.run,
                anchor(self.system),
                if self.senders < self.clients {
                    format!(
                        "\n  senders           {} (the others only receive)",
                        self.senders
                    )
                } else {
                    String::new()
                }
            )?,
        }
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
        latency(f, "latency us", &self.latency_us)?;
        checks(
            f,
            (
                self.losses,
                self.duplicates,
                self.order_violations,
                self.corrupt,
            ),
        )?;
        if self.rooms.is_some() {
            writeln!(f, "  misdirected       {}", self.misdirected)?;
        }
        if self.mismatched > 0 {
            writeln!(
                f,
                "  receivers off     {} got another count than their rooms make",
                self.mismatched
            )?;
            for m in &self.mismatches {
                writeln!(
                    f,
                    "  client {:<10} got {} of {}",
                    m.client, m.got, m.expected
                )?;
            }
        }
        failures(
            f,
            "disconnected",
            &self.evicted,
            self.timed_out,
            "no delivery",
        )?;
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
        load_cpu(f, self.load_cpu_seconds)?;
        if let Some(s) = &self.server {
            writeln!(
                f,
                "  server cpu        {:.3} s, {:.4} us/delivery",
                s.cpu_seconds, s.cpu_us_per_unit
            )?;
            wakeups(f, s, "delivery")?;
            rss(f, s)?;
        }
        result(f, self.passed())
    }
}

impl fmt::Display for dm::Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "dm: {} pairs x {} round trips x {} B, {}",
            self.pairs,
            self.messages,
            self.size,
            match self.target_rate {
                Some(r) => format!("{r} round trips/s asked"),
                None => "one in flight per pair".into(),
            }
        )?;
        writeln!(
            f,
            "  round trips       {} of {}",
            self.round_trips, self.expected
        )?;
        writeln!(f, "  direct messages   {} (2 per round trip)", self.dms)?;
        writeln!(f, "  seconds           {:.3}", self.seconds)?;
        writeln!(f, "  round trips/s     {:.0}", self.rate)?;
        latency(f, "round trip us", &self.latency_us)?;
        checks(
            f,
            (
                self.losses,
                self.duplicates,
                self.order_violations,
                self.corrupt,
            ),
        )?;
        failures(f, "failed", &self.evicted, self.timed_out, "no message")?;
        load_cpu(f, self.load_cpu_seconds)?;
        if let (Some(s), Some(rt)) = (&self.server, self.cpu_us_per_round_trip) {
            writeln!(
                f,
                "  server cpu        {:.3} s, {:.2} us/direct message, {:.2} us/round trip",
                s.cpu_seconds, s.cpu_us_per_unit, rt
            )?;
            wakeups(f, s, "direct message")?;
        }
        result(f, self.passed())
    }
}

impl fmt::Display for idle::Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tls = if self.tls { " (TLS)" } else { "" };
        match self.rooms {
            0 => writeln!(f, "idle: {} connections{tls}", self.connections)?,
            r => writeln!(
                f,
                "idle: {} named connections, each in {r} rooms (the lobby included){tls}",
                self.connections
            )?,
        }
        writeln!(f, "  join notices      {}", self.joined_notices)?;
        writeln!(
            f,
            "  connect seconds   {:.3} ({:.0} handshakes/s)",
            self.connect_seconds, self.handshakes_per_second
        )?;
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
            wakeups(f, s, "connection")?;
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

impl fmt::Display for history::AckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "history ack: {} clients {}, x {} messages x {} B, {}",
            self.clients,
            match self.room_size {
                None => "in the lobby".to_string(),
                Some(s) => format!("in rooms of {s}"),
            },
            self.messages,
            self.size,
            match self.target_rate {
                Some(r) => format!("{r} messages/s each"),
                None => "windowed".into(),
            }
        )?;
        writeln!(
            f,
            "  acknowledged      {} of {} ({} twice, {} unstored)",
            self.acks, self.expected_acks, self.duplicate_acks, self.unstored
        )?;
        writeln!(
            f,
            "  deliveries        {} of {}",
            self.deliveries, self.expected
        )?;
        writeln!(f, "  seconds           {:.3}", self.seconds)?;
        writeln!(f, "  deliveries/s      {:.0}", self.rate)?;
        writeln!(f, "  acks/s            {:.0}", self.ack_rate)?;
        latency(f, "send-to-ack us", &self.latency_us)?;
        latency(f, "delivery us", &self.delivery_latency_us)?;
        checks(
            f,
            (
                self.losses,
                self.duplicates,
                self.order_violations,
                self.corrupt,
            ),
        )?;
        writeln!(f, "  ids not rising    {}", self.id_violations)?;
        writeln!(f, "  broken links      {}", self.broken_links)?;
        failures(f, "failed", &self.evicted, self.timed_out, "nothing")?;
        load_cpu(f, self.load_cpu_seconds)?;
        if let (Some(s), Some(m)) = (&self.server, self.cpu_us_per_message) {
            writeln!(
                f,
                "  server cpu        {:.3} s, {:.4} us/delivery, {:.2} us/message",
                s.cpu_seconds, s.cpu_us_per_unit, m
            )?;
            wakeups(f, s, "delivery")?;
            rss(f, s)?;
        }
        result(f, self.passed())
    }
}

impl fmt::Display for history::ResumeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "history resume: {} messages x {} B in one room, {} resumes and Recent {{ {} }}s",
            self.messages, self.size, self.repeat, self.recent_count
        )?;
        writeln!(f, "  stored in         {:.3} s", self.store_seconds)?;
        writeln!(
            f,
            "  resumes           {} of {}, {} page(s) each",
            self.resumes, self.repeat, self.pages
        )?;
        writeln!(f, "  messages/s        {:.0} (paged in)", self.rate)?;
        latency(f, "resume us", &self.latency_us)?;
        writeln!(f, "  recents           {} of {}", self.recents, self.repeat)?;
        latency(f, "recent us", &self.recent_latency_us)?;
        writeln!(f, "  wrong answers     {}", self.wrong)?;
        if let Some(w) = &self.first_wrong {
            writeln!(f, "  first wrong       {w}")?;
        }
        if let Some(why) = &self.failure {
            writeln!(f, "  failed            {why}")?;
        }
        load_cpu(f, self.load_cpu_seconds)?;
        if let Some(s) = &self.server {
            writeln!(
                f,
                "  server cpu        {:.4} s, {:.1} us/resume{}",
                s.cpu_seconds,
                s.cpu_us_per_unit,
                match self.recent_cpu_us {
                    Some(r) => format!(", {r:.1} us/Recent"),
                    None => String::new(),
                }
            )?;
        }
        result(f, self.passed())
    }
}
