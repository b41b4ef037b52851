//! A record's stored bytes: a format-version byte, then the record in bincode.

use bincode::config::{self, Configuration, Limit, LittleEndian, Varint};

use super::Record;

/// The layout written today. A reader meeting another value refuses the
/// record rather than guess.
pub(crate) const FORMAT: u8 = 1;

/// The most a record may claim to hold: far above any frame, and a bound on
/// what a garbage length can make the decoder allocate.
const MAX_RECORD: usize = 32 << 20;

const CONFIG: Configuration<LittleEndian, Varint, Limit<MAX_RECORD>> =
    config::standard().with_limit::<MAX_RECORD>();

/// `record` as stored, appended to `out`.
pub(crate) fn encode(record: &Record, out: &mut Vec<u8>) -> Result<(), String> {
    out.push(FORMAT);
    bincode::serde::encode_into_std_write(record, out, CONFIG)
        .map(drop)
        .map_err(|e| format!("record {} does not encode: {e}", record.id))
}

/// The record stored as `bytes`; the error says what is wrong with them.
pub(crate) fn decode(bytes: &[u8]) -> Result<Record, String> {
    let Some((&format, body)) = bytes.split_first() else {
        return Err("empty record".into());
    };
    if format != FORMAT {
        return Err(format!("unknown record format version {format}"));
    }
    let (record, used): (Record, usize) = bincode::serde::borrow_decode_from_slice(body, CONFIG)
        .map_err(|e| format!("record does not decode: {e}"))?;
    if used != body.len() {
        return Err(format!(
            "record {} has {} trailing bytes",
            record.id,
            body.len() - used
        ));
    }
    Ok(record)
}

/// The `at_ms` of the record stored as `bytes`, without decoding the rest:
/// id, prev and at_ms are its first three fields.
pub(crate) fn at_ms(bytes: &[u8]) -> Result<u64, String> {
    match bytes.split_first() {
        Some((&FORMAT, body)) => {
            let ((_id, _prev, at_ms), _): ((u64, u64, u64), usize) =
                bincode::serde::borrow_decode_from_slice(body, CONFIG)
                    .map_err(|e| format!("record does not decode: {e}"))?;
            Ok(at_ms)
        }
        Some((&format, _)) => Err(format!("unknown record format version {format}")),
        None => Err("empty record".into()),
    }
}
