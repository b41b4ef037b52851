//! What the server counts, for the admin listener's `/metrics`
//! ([`crate::admin`]), in the Prometheus text format.
//!
//! One [`Metrics`] per server, in [`Shared`](crate::session::Shared). The
//! paths taken per message touch only atomics, and only once per batch: a
//! session adds the messages it read in one turn with one `fetch_add`, a
//! room adds the deliveries of one broadcast with one. Labelled counters
//! (evictions, bad frames, failures) are looked up by label only when a
//! session ends or a client fails, never per message.
//!
//! Families (all prefixed `chat_`):
//!
//! - `chat_clients{transport, state}`: connected clients, by transport
//!   (`tcp`, `tls`) and state (`handshake` until welcomed and named,
//!   `open` after).
//! - `chat_rooms`: rooms that exist, the lobby included.
//! - `chat_messages_received_total`: messages clients sent after their
//!   `Hello` (requests and chat alike).
//! - `chat_deliveries_total`: chat messages (`Relay`, `Said`, `Posted`,
//!   `Told`, `Direct`) handed to a recipient's outbox.
//! - `chat_evictions_total{reason}`: open clients closed by the server:
//!   `slow_consumer`, `flood`, `idle`, `frame_timeout`.
//! - `chat_bad_frames_total{kind}`: frames that broke the codec or the
//!   protocol: `too_large`, `empty`, `unknown_tag`, `bad_utf8`,
//!   `trailing`, `malformed`, `truncated`, `http`, `version`, `violation`.
//! - `chat_handshake_failures_total{reason}`: clients that went before
//!   they were open: `timeout`, `closed` (the client hung up), `io`,
//!   `bad_frame` (any frame that broke the codec or the protocol),
//!   `client_error`, `slow_consumer`, `flood`, `frame_timeout`, `idle`,
//!   `refused`.
//! - `chat_auth_failures_total{reason}`: failed logins and registrations,
//!   by a reason given by the caller.
//! - `chat_outbox_high_water_bytes`: the most bytes any client's outbox
//!   held when its session came to drain it.
//! - `chat_history_append_seconds`: how long each batch took to append to
//!   the history store (a histogram).

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chat_proto::{DecodeError, ProtocolError};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The `Content-Type` of [`Metrics::render`]'s text.
pub(crate) const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// One label: its name and value.
type Label = [(&'static str, &'static str); 1];

/// How a client reached the server (the `transport` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// Plain TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
}

impl Transport {
    const ALL: [Transport; 2] = [Transport::Tcp, Transport::Tls];

    fn label(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// Eviction reasons, created at start so that they read 0 rather than
/// nothing.
const EVICTIONS: [&str; 4] = ["slow_consumer", "flood", "idle", "frame_timeout"];
/// Ways a session ends that are nobody's failure: not counted.
const NOT_FAILURES: [&str; 2] = ["exit", "shutdown"];
const HANDSHAKE_FAILURES: [&str; 4] = ["timeout", "closed", "io", "bad_frame"];
const BAD_FRAMES: [&str; 10] = [
    "too_large",
    "empty",
    "unknown_tag",
    "bad_utf8",
    "trailing",
    "malformed",
    "truncated",
    "http",
    "version",
    "violation",
];

/// The server's metrics and the registry that names them.
pub(crate) struct Metrics {
    registry: Registry,
    /// By [`Transport`], then handshake (0) or open (1).
    clients: [[Gauge; 2]; 2],
    rooms: Gauge,
    received: Counter,
    delivered: Counter,
    evictions: Family<Label, Counter>,
    bad_frames: Family<Label, Counter>,
    handshake_failures: Family<Label, Counter>,
    auth_failures: Family<Label, Counter>,
    outbox_high: Gauge,
    append: Histogram,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Every family registered, at zero; deliveries are counted in
    /// `delivered`, which the rooms share (see [`crate::hub::Hub::delivered`]).
    pub(crate) fn new(delivered: Counter) -> Self {
        let mut registry = Registry::with_prefix("chat");
        let clients: Family<[(&'static str, &'static str); 2], Gauge> = Family::default();
        let gauges = Transport::ALL.map(|t| {
            ["handshake", "open"].map(|state| {
                clients.get_or_create_owned(&[("transport", t.label()), ("state", state)])
            })
        });
        registry.register(
            "clients",
            "Connected clients, by transport and state (handshake until welcomed and named)",
            clients,
        );
        let rooms = Gauge::default();
        registry.register("rooms", "Rooms, the lobby included", rooms.clone());
        let received = Counter::default();
        registry.register(
            "messages_received",
            "Messages clients sent after their Hello",
            received.clone(),
        );
        registry.register(
            "deliveries",
            "Chat messages handed to a recipient's outbox",
            delivered.clone(),
        );
        let labelled = |registry: &mut Registry, name, help, label, values: &[&'static str]| {
            let family = Family::<Label, Counter>::default();
            for value in values {
                let _ = family.get_or_create(&[(label, *value)]);
            }
            registry.register(name, help, family.clone());
            family
        };
        let evictions = labelled(
            &mut registry,
            "evictions",
            "Open clients closed by the server, by reason",
            "reason",
            &EVICTIONS,
        );
        let bad_frames = labelled(
            &mut registry,
            "bad_frames",
            "Frames that broke the codec or the protocol, by kind",
            "kind",
            &BAD_FRAMES,
        );
        let handshake_failures = labelled(
            &mut registry,
            "handshake_failures",
            "Clients gone before they were welcomed and named, by reason",
            "reason",
            &HANDSHAKE_FAILURES,
        );
        let auth_failures = labelled(
            &mut registry,
            "auth_failures",
            "Failed logins and registrations, by reason",
            "reason",
            &[],
        );
        let outbox_high = Gauge::default();
        registry.register_with_unit(
            "outbox_high_water",
            "Most bytes any client's outbox held when its session drained it",
            Unit::Bytes,
            outbox_high.clone(),
        );
        // 100 µs to about 6.5 s.
        let append = Histogram::new(exponential_buckets(1e-4, 2.0, 17));
        registry.register_with_unit(
            "history_append",
            "Time to append one batch to the history store",
            Unit::Seconds,
            append.clone(),
        );
        Metrics {
            registry,
            clients: gauges,
            rooms,
            received,
            delivered,
            evictions,
            bad_frames,
            handshake_failures,
            auth_failures,
            outbox_high,
            append,
        }
    }

    /// A client connected over `transport`: it is handshaking.
    pub(crate) fn connected(&self, transport: Transport) {
        self.clients[transport as usize][0].inc();
    }

    /// The client is welcomed and named.
    pub(crate) fn opened(&self, transport: Transport) {
        let [handshake, open] = &self.clients[transport as usize];
        handshake.dec();
        open.inc();
    }

    /// The client is gone (`open`: after [`opened`](Self::opened)).
    pub(crate) fn disconnected(&self, transport: Transport, open: bool) {
        self.clients[transport as usize][usize::from(open)].dec();
    }

    /// A session ended for `reason` (a label), open or not yet: an eviction
    /// or a failed handshake, or neither.
    pub(crate) fn ended(&self, open: bool, reason: &'static str) {
        if NOT_FAILURES.contains(&reason) {
            return;
        }
        if !open {
            self.handshake_failures
                .get_or_create(&[("reason", reason)])
                .inc();
        } else if EVICTIONS.contains(&reason) {
            self.evictions.get_or_create(&[("reason", reason)]).inc();
        }
    }

    /// `n` messages were read from clients.
    pub(crate) fn received(&self, n: u64) {
        if n > 0 {
            self.received.inc_by(n);
        }
    }

    /// `n` chat messages were handed to recipients.
    pub(crate) fn delivered(&self, n: u64) {
        if n > 0 {
            self.delivered.inc_by(n);
        }
    }

    /// A frame broke the codec or the protocol.
    pub(crate) fn bad_frame(&self, e: &ProtocolError) {
        self.bad_frames.get_or_create(&[("kind", kind(e))]).inc();
    }

    /// A login or registration failed, for `reason` (a short label such as
    /// `bad_password`, `throttled`: never anything the client sent).
    pub(crate) fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// An outbox held `bytes` when drained. One relaxed load when it is not
    /// a new high (the usual case): the line is shared, rarely written.
    pub(crate) fn outbox(&self, bytes: usize) {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        let high = self.outbox_high.inner();
        if bytes > high.load(Ordering::Relaxed) {
            high.fetch_max(bytes, Ordering::Relaxed);
        }
    }

    /// A batch took `took` to append to the history store.
    pub(crate) fn appended(&self, took: Duration) {
        self.append.observe(took.as_secs_f64());
    }

    /// The text for `/metrics`, with `rooms` rooms.
    pub(crate) fn render(&self, rooms: usize) -> String {
        self.rooms.set(i64::try_from(rooms).unwrap_or(i64::MAX));
        let mut text = String::with_capacity(4096);
        // Writing to a `String` cannot fail.
        let _ = prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

/// The `kind` label of a protocol error.
fn kind(e: &ProtocolError) -> &'static str {
    match e {
        ProtocolError::Frame(e) => match e {
            DecodeError::FrameTooLarge { .. } => "too_large",
            DecodeError::EmptyFrame => "empty",
            DecodeError::UnknownVariant { .. } => "unknown_tag",
            DecodeError::InvalidUtf8 { .. } => "bad_utf8",
            DecodeError::TrailingBytes { .. } => "trailing",
            DecodeError::Truncated { .. } => "truncated",
            _ => "malformed",
        },
        ProtocolError::Http => "http",
        ProtocolError::Version { .. } => "version",
        _ => "violation",
    }
}

/// Whole frames in `bytes`, counted from their length prefixes (a walk
/// from header to header, not a decode).
pub(crate) fn frames(bytes: &[u8]) -> u64 {
    let mut rest = bytes;
    let mut n = 0;
    while let Some((head, _)) = rest.split_first_chunk::<{ chat_proto::HEADER_LEN }>() {
        let len = chat_proto::HEADER_LEN + u32::from_be_bytes(*head) as usize;
        rest = rest.get(len..).unwrap_or_default();
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(series))
    }

    #[test]
    fn every_family_is_there_from_the_start() {
        let text = Metrics::new(Counter::default()).render(1);
        for series in [
            "chat_clients{transport=\"tcp\",state=\"handshake\"} 0",
            "chat_clients{transport=\"tls\",state=\"open\"} 0",
            "chat_rooms 1",
            "chat_messages_received_total 0",
            "chat_deliveries_total 0",
            "chat_evictions_total{reason=\"slow_consumer\"} 0",
            "chat_bad_frames_total{kind=\"too_large\"} 0",
            "chat_handshake_failures_total{reason=\"timeout\"} 0",
            "chat_outbox_high_water_bytes 0",
            "chat_history_append_seconds_count 0",
        ] {
            assert!(text.contains(series), "{series} missing from:\n{text}");
        }
        // A family with no series yet says nothing (the auth reasons are
        // the caller's).
        assert!(!text.contains("chat_auth_failures"), "{text}");
    }

    #[test]
    fn a_client_moves_from_handshake_to_open_and_out() {
        let m = Metrics::new(Counter::default());
        m.connected(Transport::Tcp);
        m.connected(Transport::Tcp);
        m.opened(Transport::Tcp);
        let text = m.render(1);
        assert_eq!(
            line(&text, "chat_clients{transport=\"tcp\",state=\"handshake\"}"),
            Some("chat_clients{transport=\"tcp\",state=\"handshake\"} 1")
        );
        m.disconnected(Transport::Tcp, true);
        m.disconnected(Transport::Tcp, false);
        let text = m.render(1);
        assert!(text.contains("chat_clients{transport=\"tcp\",state=\"open\"} 0"));
        assert!(text.contains("chat_clients{transport=\"tcp\",state=\"handshake\"} 0"));
    }

    #[test]
    fn endings_count_once_where_they_belong() {
        let m = Metrics::new(Counter::default());
        m.ended(false, "timeout");
        m.ended(false, "shutdown");
        m.ended(true, "flood");
        m.ended(true, "exit");
        m.ended(true, "closed");
        m.auth_failure("bad_password");
        let text = m.render(1);
        assert!(text.contains("chat_handshake_failures_total{reason=\"timeout\"} 1"));
        assert!(!text.contains("reason=\"shutdown\""));
        assert!(text.contains("chat_evictions_total{reason=\"flood\"} 1"));
        assert!(!text.contains("chat_evictions_total{reason=\"closed\"}"));
        assert!(text.contains("chat_auth_failures_total{reason=\"bad_password\"} 1"));
    }

    #[test]
    fn the_high_water_only_rises() {
        let m = Metrics::new(Counter::default());
        m.outbox(10);
        m.outbox(5);
        assert!(m.render(1).contains("chat_outbox_high_water_bytes 10"));
        m.outbox(11);
        assert!(m.render(1).contains("chat_outbox_high_water_bytes 11"));
    }

    #[test]
    fn frames_are_counted_by_their_headers() {
        assert_eq!(frames(&[]), 0);
        assert_eq!(frames(&[0, 0, 0, 1, 9, 0, 0, 0, 0]), 2);
        // A cut frame still counts: only whole ones are ever handed over.
        assert_eq!(frames(&[0, 0, 0, 5, 1]), 1);
    }

    #[test]
    fn protocol_errors_have_kinds() {
        let big = ProtocolError::Frame(DecodeError::FrameTooLarge { len: 9, max: 1 });
        assert_eq!(kind(&big), "too_large");
        assert_eq!(kind(&ProtocolError::Http), "http");
        let rule = ProtocolError::Repeated { got: "Hello" };
        assert_eq!(kind(&rule), "violation");
    }
}
