//! The text of a bench message: sender id, sequence number and send time,
//! then a fixed filler (ASCII and Chinese) up to the requested size.
//!
//! ```text
//! 0003:0000002a:00000000075bcd15:聊天abc聊天abc...
//! id   seq      send time (ns)   filler
//! ```

use crate::error::Error;

/// Bytes of the header at the front of every bench message.
pub(crate) const HEADER: usize = 4 + 1 + 8 + 1 + 16 + 1;

/// Refuses a text size too small for the header.
pub(crate) fn check_size(size: usize) -> Result<(), Error> {
    if size < HEADER {
        return Err(Error::Options(format!(
            "message size must be at least {HEADER} bytes"
        )));
    }
    Ok(())
}

/// Refuses a text size above the server's `limit`.
pub(crate) fn check_fits(size: usize, limit: usize) -> Result<(), Error> {
    if size > limit {
        return Err(Error::Options(format!(
            "message size {size} exceeds the server's limit of {limit} bytes"
        )));
    }
    Ok(())
}

/// The fixed filler after the header, `size - HEADER` bytes of mixed text.
pub(crate) fn filler(size: usize) -> String {
    let mut s = String::with_capacity(size);
    let want = size.saturating_sub(HEADER);
    for c in "聊天abc你好xyz".chars().cycle() {
        if s.len() + c.len_utf8() > want {
            break;
        }
        s.push(c);
    }
    while s.len() < want {
        s.push('.');
    }
    s
}

/// The text of message `seq` from client `id`, sent at `ts` ns. Every
/// sender does this for every message, so it is hand-rolled too.
pub(crate) fn text(id: usize, seq: u32, ts: u64, filler: &str) -> String {
    let mut s = String::with_capacity(HEADER + filler.len());
    push_hex(&mut s, id as u64, 4);
    s.push(':');
    push_hex(&mut s, u64::from(seq), 8);
    s.push(':');
    push_hex(&mut s, ts, 16);
    s.push(':');
    s.push_str(filler);
    s
}

/// Appends the low `digits` hexadecimal digits of `n`, lower case.
fn push_hex(s: &mut String, n: u64, digits: u32) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for i in (0..digits).rev() {
        s.push(char::from(DIGITS[(n >> (4 * i)) as usize & 0xf]));
    }
}

/// Parses the header of a bench message: `(id, seq, ts)`. Every receiver
/// does this for every delivery, so it is hand-rolled.
pub(crate) fn parse(text: &[u8]) -> Option<(usize, u32, u64)> {
    let h = text.get(..HEADER)?;
    if h[4] != b':' || h[13] != b':' || h[30] != b':' {
        return None;
    }
    Some((
        hex(&h[0..4])? as usize,
        hex(&h[5..13])? as u32,
        hex(&h[14..30])?,
    ))
}

/// Lower-case hexadecimal digits as a number (at most 16 of them).
fn hex(digits: &[u8]) -> Option<u64> {
    // A table and no branch per digit: an invalid digit sets a high bit.
    const BAD: u8 = 0x10;
    const VALUE: [u8; 256] = {
        let mut t = [BAD; 256];
        let mut i = 0;
        while i < 10 {
            t[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            t[b'a' as usize + i] = 10 + i as u8;
            i += 1;
        }
        t
    };
    let (mut n, mut bad) = (0u64, 0u8);
    for &c in digits {
        let d = VALUE[usize::from(c)];
        bad |= d;
        n = n << 4 | u64::from(d & 0xf);
    }
    (bad & BAD == 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_parses_back() {
        let fill = filler(64);
        let t = text(3, 42, 123_456_789, &fill);
        assert_eq!(t.len(), 64);
        assert!(t.starts_with("0003:0000002a:00000000075bcd15:"), "{t}");
        assert_eq!(parse(t.as_bytes()), Some((3, 42, 123_456_789)));
        assert_eq!(&t[HEADER..], fill);
        assert_eq!(parse(b"0003:garbage"), None);
        assert_eq!(parse(t.replace("0003:", "00g3:").as_bytes()), None);
        assert_eq!(
            parse(text(0xffff, u32::MAX, u64::MAX, &fill).as_bytes()),
            Some((0xffff, u32::MAX, u64::MAX))
        );
    }
}
