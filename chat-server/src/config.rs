//! Every limit of the server in one place.

use std::time::Duration;

use chat_proto::{MAX_FRAME_LEN, MAX_FRAME_LEN_CEILING, MIN_FRAME_LEN};

use crate::error::Error;

/// Bytes a `Relay` payload can take beyond the `Send` it relays: the sender's
/// address (an IP tag plus up to 16 bytes) and port (a varint of up to 3 bytes).
///
/// A client's `Send` is therefore limited to `max_frame_len - RELAY_OVERHEAD`
/// bytes of payload, so that its relay never exceeds `max_frame_len` (which
/// is also the default limit of every client's decoder). That smaller figure
/// is what [`Welcome::max_frame`](chat_proto::Message::Welcome) announces.
pub const RELAY_OVERHEAD: usize = 20;

/// The server's limits. Every field is public; start from
/// [`Config::default()`] and change what you need.
///
/// A zero `rate` or `idle_timeout` turns that check off.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use chat_server::Config;
///
/// let config = Config {
///     max_clients: 100,
///     idle_timeout: Duration::from_secs(30),
///     ..Config::default()
/// };
/// assert_eq!(config.outbox_depth, 1024);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Most clients connected at once, handshaking ones included; the next
    /// one gets `Error { reason: "server full" }` and is closed.
    /// Default: 10,000.
    pub max_clients: usize,
    /// Largest frame payload the server sends, in bytes. A client may send
    /// payloads of up to `max_frame_len - RELAY_OVERHEAD` bytes (announced in
    /// `Welcome`). Must be within
    /// `MIN_FRAME_LEN + RELAY_OVERHEAD ..= MAX_FRAME_LEN_CEILING`.
    /// Default: 65,536 ([`chat_proto::MAX_FRAME_LEN`]).
    pub max_frame_len: usize,
    /// Depth of each client's outgoing queue, in queued buffers (a buffer is
    /// one frame, or the relays of several `Send`s that arrived together from
    /// one sender). A client whose queue is full is a slow consumer: it gets
    /// `Error { reason: "slow consumer" }` (best effort) and is disconnected.
    /// Default: 1024.
    pub outbox_depth: usize,
    /// Most bytes queued for one client; a client whose queue would grow past
    /// it is a slow consumer too. Together with `outbox_depth` this bounds the
    /// server's memory per client whatever the frame sizes. Must be at least
    /// `max_frame_len`. Default: 8 MiB.
    pub outbox_bytes: usize,
    /// How long a new client has to send its `Hello`. Default: 10 s.
    pub handshake_timeout: Duration,
    /// A client silent for half of this is sent a `Ping`; one still silent
    /// after all of it gets `Error { reason: "idle timeout" }` and is closed.
    /// Any frame from the client (a `Pong`, a `Send`, ...) counts as a sign of
    /// life. Zero disables the check. Default: 60 s.
    pub idle_timeout: Duration,
    /// Sustained messages per second a client may send (token bucket refill
    /// rate). A client that goes beyond `rate` plus `burst` is disconnected
    /// with `Error { reason: "flood: more than RATE messages/s" }`; the
    /// messages it sent within the limit are relayed. Zero disables flood
    /// control. Default: 1000.
    pub rate: u32,
    /// Messages a client may send in a burst above `rate` (the bucket's
    /// size). Default: 4000.
    pub burst: u32,
    /// On shutdown, how long sessions get to deliver what is queued and the
    /// final `Exit` before they are dropped. Default: 5 s.
    pub shutdown_grace: Duration,
    /// How long the server keeps trying to deliver a final `Error` or `Exit`
    /// to a client that is not reading, and waits for it to close its end,
    /// before dropping the connection. Default: 2 s.
    pub close_timeout: Duration,
    /// Whether peers are told of joins and leaves (`Joined`/`Left`). Every
    /// join is announced to everyone already connected, so a crowd arriving
    /// at once costs N²/2 notices; very large rooms may turn this off, as
    /// large chat channels often do. Default: on.
    pub presence: bool,
    /// Longest a join or leave notice waits for others to share its batch
    /// (notices always go out before the next relay). Default: 10 ms.
    pub presence_delay: Duration,
    /// A batch of notices this large is sent at once rather than after
    /// `presence_delay`. Default: 16 KiB.
    pub presence_batch: usize,
    /// Once a client has started a frame, the rest of it must arrive within
    /// this time, or the client gets `Error { reason: "frame timeout" }`
    /// and is closed: trickling one byte at a time cannot hold a slot.
    /// Default: 20 s.
    pub frame_timeout: Duration,
    /// Relays of `Send`s that arrive together from one client are encoded
    /// into one shared buffer of at most this many bytes (plus one frame)
    /// before being handed to the recipients. Default: 64 KiB.
    pub relay_batch: usize,
    /// Bytes reserved for one read from a client. Default: 16 KiB.
    pub read_chunk: usize,
    /// Most buffers handed to one vectored write. Default: 64.
    pub max_iov: usize,
    /// Vectored writes in a row before a session lets other tasks run.
    /// Default: 16.
    pub flush_rounds: usize,
    /// Length of the listening socket's queue of connections not yet
    /// accepted. `None`: `max_clients`, clamped to 1,024..=65,535 (the kernel
    /// may cap it further, see `net.core.somaxconn`). Default: `None`.
    pub backlog: Option<u32>,
    /// Connections beyond `max_clients` held at once just to tell them
    /// `Error { reason: "server full" }`; past it, new connections wait in
    /// the listen queue until a slot frees. Default: 64.
    pub reject_slots: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_clients: 10_000,
            max_frame_len: MAX_FRAME_LEN,
            outbox_depth: 1024,
            outbox_bytes: 8 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            rate: 1000,
            burst: 4000,
            shutdown_grace: Duration::from_secs(5),
            close_timeout: Duration::from_secs(2),
            presence: true,
            presence_delay: Duration::from_millis(10),
            presence_batch: 16 * 1024,
            frame_timeout: Duration::from_secs(20),
            relay_batch: 64 * 1024,
            read_chunk: 16 * 1024,
            max_iov: 64,
            flush_rounds: 16,
            backlog: None,
            reject_slots: 64,
        }
    }
}

impl Config {
    /// Checks that the limits make sense together.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the first field out of range.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field: &'static str, reason: String| Err(Error::Config { field, reason });
        if self.max_clients == 0 {
            return bad("max_clients", "must be at least 1".into());
        }
        if self.outbox_depth == 0 {
            return bad("outbox_depth", "must be at least 1".into());
        }
        if self.outbox_bytes < self.max_frame_len {
            return bad(
                "outbox_bytes",
                format!(
                    "{} is less than max_frame_len ({})",
                    self.outbox_bytes, self.max_frame_len
                ),
            );
        }
        let min = MIN_FRAME_LEN + RELAY_OVERHEAD;
        if !(min..=MAX_FRAME_LEN_CEILING).contains(&self.max_frame_len) {
            return bad(
                "max_frame_len",
                format!(
                    "{} is outside {min}..={MAX_FRAME_LEN_CEILING}",
                    self.max_frame_len
                ),
            );
        }
        if self.handshake_timeout.is_zero() {
            return bad("handshake_timeout", "must be more than zero".into());
        }
        if self.rate > 0 && self.burst == 0 {
            return bad("burst", "must be at least 1 when rate is set".into());
        }
        Ok(())
    }

    /// The largest payload a client may send: what `Welcome` announces.
    pub fn client_max_frame(&self) -> usize {
        self.max_frame_len.saturating_sub(RELAY_OVERHEAD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        Config::default().validate().unwrap();
        assert_eq!(Config::default().client_max_frame(), MAX_FRAME_LEN - 20);
    }

    #[test]
    fn bad_limits_are_named() {
        let err = Config {
            max_frame_len: 10,
            ..Config::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: max_frame_len: 10 is outside 84..=16777216"
        );
        let err = Config {
            outbox_depth: 0,
            ..Config::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("outbox_depth"), "{err}");
    }

    #[test]
    fn relay_overhead_covers_the_worst_case() {
        use bytes::BytesMut;
        use chat_proto::{ChatCodec, Message};
        let codec = ChatCodec::with_max_frame_len(MAX_FRAME_LEN_CEILING).unwrap();
        for text in ["", "x", &"y".repeat(200), &"z".repeat(70_000)] {
            let mut send = BytesMut::new();
            codec
                .encode(&Message::Send { text: text.into() }, &mut send)
                .unwrap();
            let mut relay = BytesMut::new();
            let from = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
                .parse()
                .unwrap();
            codec
                .encode(&Message::relay(from, text), &mut relay)
                .unwrap();
            assert!(relay.len() - send.len() <= RELAY_OVERHEAD, "{}", text.len());
        }
    }
}
