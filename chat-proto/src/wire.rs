//! The payload encoding, kept behind this one module.
//!
//! Payloads are bincode 2 in its standard configuration (little-endian,
//! variable-length integers) through serde. Nothing outside this module names
//! bincode, so a byte-compatible replacement can slot in here without touching
//! the codec or changing a byte on the wire.
//!
//! Two guards keep a hostile payload from costing memory: every string is
//! decoded by borrowing from the payload slice first (see
//! `message::text`), so a claimed length larger than the bytes actually
//! present fails before anything is allocated; and bincode's own byte limit is
//! set to the largest frame the codec accepts.

use bincode::config::{self, Configuration, Limit, LittleEndian, Varint};
use bincode::enc::write::{SizeWriter, Writer};
use bincode::error::{DecodeError as BinDecodeError, EncodeError as BinEncodeError};
use bytes::{BufMut, BytesMut};

use crate::codec::MAX_FRAME_LEN_CEILING;
use crate::error::DecodeError;
use crate::message::{Message, VARIANT_COUNT};

type Config = Configuration<LittleEndian, Varint, Limit<MAX_FRAME_LEN_CEILING>>;

const CONFIG: Config = config::standard().with_limit::<MAX_FRAME_LEN_CEILING>();

/// Appends bincode's output to a `BytesMut` without an intermediate buffer.
struct Append<'a>(&'a mut BytesMut);

impl Writer for Append<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), BinEncodeError> {
        self.0.put_slice(bytes);
        Ok(())
    }
}

/// Appends the payload encoding of `msg` to `dst`.
pub(crate) fn encode(msg: &Message, dst: &mut BytesMut) {
    // Writing into memory cannot fail, and every field of `Message` is
    // serializable, so an error here is a bug in this crate, not bad input.
    bincode::serde::encode_into_writer(msg, Append(dst), CONFIG)
        .expect("encoding a Message into memory cannot fail");
}

/// The payload length of `msg`, counted without writing it anywhere.
pub(crate) fn encoded_len(msg: &Message) -> usize {
    let mut size = SizeWriter::default();
    bincode::serde::encode_into_writer(msg, &mut size, CONFIG)
        .expect("counting the bytes of a Message cannot fail");
    size.bytes_written
}

/// Decodes exactly one message from a whole payload.
pub(crate) fn decode(payload: &[u8]) -> Result<Message, DecodeError> {
    if payload.is_empty() {
        return Err(DecodeError::EmptyFrame);
    }
    // Read the variant tag ourselves so an unknown variant from a newer peer
    // is reported as such rather than as a generic serde error.
    let (tag, _) = bincode::decode_from_slice::<u32, _>(payload, CONFIG).map_err(malformed)?;
    if tag >= VARIANT_COUNT {
        return Err(DecodeError::UnknownVariant { tag });
    }
    let (msg, used) = bincode::serde::borrow_decode_from_slice::<Message, _>(payload, CONFIG)
        .map_err(malformed)?;
    if used != payload.len() {
        return Err(DecodeError::TrailingBytes {
            len: payload.len(),
            used,
        });
    }
    Ok(msg)
}

fn malformed(err: BinDecodeError) -> DecodeError {
    match err {
        BinDecodeError::Utf8 { inner } => DecodeError::InvalidUtf8 {
            valid_up_to: inner.valid_up_to(),
        },
        BinDecodeError::UnexpectedEnd { additional } => DecodeError::Malformed(format!(
            "payload ends {additional} byte(s) before the message does"
        )),
        other => DecodeError::Malformed(other.to_string()),
    }
}
