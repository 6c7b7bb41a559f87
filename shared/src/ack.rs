//! The [`Ack`] JSON codec, heap-free for firmware: `{"boot":7,"seq":42}`, optionally with
//! the gateway's clock: `{"boot":7,"seq":42,"time_ms":1764000000123}`.
//!
//! The reader is a small JSON scanner: whitespace and key order are free, unknown keys
//! (with any JSON value, nested up to [`MAX_DEPTH`] deep) are skipped so the gateway can add
//! fields, and `boot`/`seq` (and `time_ms`, when present) must each appear once as plain
//! unsigned integers. Readers that predate `time_ms` skip it.
//!
//! # Setting a device clock from an ack
//!
//! `time_ms` is the gateway's clock (ms since the Unix epoch) when it published the ack.
//! The ack is *retained*: the one a device gets right after subscribing may be hours old,
//! so its time says nothing about now. An ack is fresh when it covers an event the device
//! sent on the current connection: the gateway wrote it after receiving that event. If the
//! device sent that event at monotonic time `s` and got the ack at `r`, the wall time at
//! `r` lies in `[time_ms, time_ms + (r - s)]`; a device takes `time_ms + (r - s) / 2` when
//! the round trip `r - s` is small enough for its needs, and ignores every other ack's time.

use crate::digits::{format_u64, U64_DIGITS};
use crate::error::{DecodeError, EncodeError, JsonError};
use crate::event::Ack;

/// How deep unknown values may nest before the reader gives up (bounds its stack use).
const MAX_DEPTH: usize = 16;

impl Ack {
    /// Longest JSON an Ack encodes to: `{"boot":4294967295,"seq":4294967295}`.
    pub const MAX_JSON_LEN: usize = 36;

    /// Writes `{"boot":B,"seq":S}` into `buf` and returns its length; needs no heap.
    ///
    /// ```
    /// let ack = edge_event::Ack { boot: 7, seq: 42 };
    /// let mut buf = [0u8; edge_event::Ack::MAX_JSON_LEN];
    /// let len = ack.encode_json(&mut buf)?;
    /// assert_eq!(&buf[..len], br#"{"boot":7,"seq":42}"#);
    /// assert_eq!(edge_event::Ack::decode_json(&buf[..len])?, ack);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn encode_json(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let mut out = SliceWriter { buf, len: 0 };
        let mut digits = [0; U64_DIGITS];
        out.put(b"{\"boot\":")?;
        out.put(format_u64(u64::from(self.boot), &mut digits))?;
        out.put(b",\"seq\":")?;
        out.put(format_u64(u64::from(self.seq), &mut digits))?;
        out.put(b"}")?;
        Ok(out.len)
    }

    /// Longest JSON [`Ack::encode_json_at`] writes:
    /// `{"boot":4294967295,"seq":4294967295,"time_ms":18446744073709551615}`.
    pub const MAX_TIMED_JSON_LEN: usize = 67;

    /// Writes `{"boot":B,"seq":S,"time_ms":T}` into `buf`, `time_ms` being the gateway's
    /// clock (ms since the Unix epoch) now; see the module docs for how a device may use it.
    ///
    /// ```
    /// let ack = edge_event::Ack { boot: 7, seq: 42 };
    /// let mut buf = [0u8; edge_event::Ack::MAX_TIMED_JSON_LEN];
    /// let len = ack.encode_json_at(1_764_000_000_123, &mut buf)?;
    /// assert_eq!(&buf[..len], br#"{"boot":7,"seq":42,"time_ms":1764000000123}"#);
    /// assert_eq!(edge_event::Ack::decode_json_timed(&buf[..len])?, (ack, Some(1_764_000_000_123)));
    /// assert_eq!(edge_event::Ack::decode_json(&buf[..len])?, ack);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn encode_json_at(&self, time_ms: u64, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let len = self.encode_json(buf)?;
        let mut out = SliceWriter { buf, len: len - 1 };
        let mut digits = [0; U64_DIGITS];
        out.put(b",\"time_ms\":")?;
        out.put(format_u64(time_ms, &mut digits))?;
        out.put(b"}")?;
        Ok(out.len)
    }

    /// Reads an Ack from JSON without a heap; tolerant of whitespace, key order and unknown
    /// keys (`time_ms` among them: see [`Ack::decode_json_timed`]).
    pub fn decode_json(bytes: &[u8]) -> Result<Ack, DecodeError> {
        decode::<false>(bytes).map(|(ack, _)| ack)
    }

    /// Like [`Ack::decode_json`], with the gateway's `time_ms` if the ack carries one.
    pub fn decode_json_timed(bytes: &[u8]) -> Result<(Ack, Option<u64>), DecodeError> {
        decode::<true>(bytes)
    }
}

/// The reader; `TIMED` reads `time_ms` (else it is an unknown key, skipped), a const so
/// that firmware that never asks for the time does not carry the 64-bit parsing.
fn decode<const TIMED: bool>(bytes: &[u8]) -> Result<(Ack, Option<u64>), DecodeError> {
    let mut s = Scanner { bytes, pos: 0 };
    let mut boot = None;
    let mut seq = None;
    let mut time = None;
    s.expect(b'{', "an Ack must be a JSON object")?;
    if !s.eat(b'}') {
        loop {
            let key = s.string()?;
            s.expect(b':', "expected ':' after a key")?;
            let slot = match key {
                b"boot" => Some(&mut boot),
                b"seq" => Some(&mut seq),
                _ => None,
            };
            match slot {
                Some(slot) if slot.is_some() => return Err(json_err("\"boot\" or \"seq\" appears twice")),
                Some(slot) => *slot = Some(s.u32()?),
                None if TIMED && key == b"time_ms" => {
                    if time.is_some() {
                        return Err(json_err("\"time_ms\" appears twice"));
                    }
                    time = Some(s.u64()?);
                }
                None => s.skip_value(0)?,
            }
            if s.eat(b'}') {
                break;
            }
            s.expect(b',', "expected ',' or '}' after a value")?;
        }
    }
    s.skip_ws();
    if s.pos != bytes.len() {
        return Err(DecodeError::TrailingBytes { count: bytes.len() - s.pos });
    }
    match (boot, seq) {
        (Some(boot), Some(seq)) => Ok((Ack { boot, seq }, time)),
        (None, _) => Err(json_err("missing key \"boot\"")),
        (_, None) => Err(json_err("missing key \"seq\"")),
    }
}

fn json_err(reason: &'static str) -> DecodeError {
    DecodeError::Json(JsonError::new(reason))
}

struct SliceWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl SliceWriter<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        let end = self.len + bytes.len();
        let len = self.buf.len();
        let dest = self.buf.get_mut(self.len..end).ok_or(EncodeError::BufferTooSmall { len })?;
        dest.copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }
}

struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn skip_ws(&mut self) {
        while matches!(self.bytes.get(self.pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// The next non-whitespace byte, not consumed.
    fn peek(&mut self) -> Result<u8, DecodeError> {
        self.skip_ws();
        self.bytes.get(self.pos).copied().ok_or(json_err("unexpected end of JSON"))
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Ok(byte);
        if found {
            self.pos += 1;
        }
        found
    }

    fn expect(&mut self, byte: u8, reason: &'static str) -> Result<(), DecodeError> {
        if self.eat(byte) {
            Ok(())
        } else {
            Err(json_err(reason))
        }
    }

    /// A string's raw contents (escapes left as they are: keys with escapes never match).
    fn string(&mut self) -> Result<&'a [u8], DecodeError> {
        self.expect(b'"', "expected a string")?;
        let start = self.pos;
        loop {
            match self.bytes.get(self.pos) {
                None => return Err(json_err("unterminated string")),
                Some(b'"') => break,
                Some(b'\\') => self.pos += 2,
                Some(&b) if b < 0x20 => return Err(json_err("control character in a string")),
                Some(_) => self.pos += 1,
            }
        }
        let raw = self.bytes.get(start..self.pos).unwrap_or_default();
        self.pos += 1;
        Ok(raw)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        const NOT_U32: &str = "\"boot\" and \"seq\" must be unsigned 32-bit integers";
        let (start, mut value) = (self.digits_start(), 0u32);
        while let Some(&b) = self.bytes.get(self.pos).filter(|b| b.is_ascii_digit()) {
            value = value.checked_mul(10).and_then(|v| v.checked_add(u32::from(b - b'0'))).ok_or(json_err(NOT_U32))?;
            self.pos += 1;
        }
        self.digits_end(start, NOT_U32).map(|()| value)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        const NOT_U64: &str = "\"time_ms\" must be an unsigned 64-bit integer";
        let (start, mut value) = (self.digits_start(), 0u64);
        while let Some(&b) = self.bytes.get(self.pos).filter(|b| b.is_ascii_digit()) {
            value = value.checked_mul(10).and_then(|v| v.checked_add(u64::from(b - b'0'))).ok_or(json_err(NOT_U64))?;
            self.pos += 1;
        }
        self.digits_end(start, NOT_U64).map(|()| value)
    }

    fn digits_start(&mut self) -> usize {
        self.skip_ws();
        self.pos
    }

    /// Checks the digits just read form a plain JSON integer (no leading zero, fraction,
    /// exponent or sign).
    fn digits_end(&self, start: usize, reason: &'static str) -> Result<(), DecodeError> {
        let digits = self.pos - start;
        let leading_zero = digits > 1 && self.bytes.get(start) == Some(&b'0');
        let continues = matches!(self.bytes.get(self.pos), Some(b'.' | b'e' | b'E' | b'-' | b'+'));
        if digits == 0 || leading_zero || continues {
            Err(json_err(reason))
        } else {
            Ok(())
        }
    }

    /// Skips one JSON value of any kind (loosely checked: it is ignored anyway).
    fn skip_value(&mut self, depth: usize) -> Result<(), DecodeError> {
        if depth > MAX_DEPTH {
            return Err(json_err("unknown value nested too deeply"));
        }
        match self.peek()? {
            b'"' => self.string().map(drop),
            open @ (b'{' | b'[') => {
                self.pos += 1;
                let close = if open == b'{' { b'}' } else { b']' };
                if self.eat(close) {
                    return Ok(());
                }
                loop {
                    if open == b'{' {
                        self.string()?;
                        self.expect(b':', "expected ':' after a key")?;
                    }
                    self.skip_value(depth + 1)?;
                    if self.eat(close) {
                        return Ok(());
                    }
                    self.expect(b',', "expected ',' between values")?;
                }
            }
            _ => {
                let start = self.pos;
                while matches!(
                    self.bytes.get(self.pos),
                    Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E' | b'a'..=b'z')
                ) {
                    self.pos += 1;
                }
                if self.pos == start {
                    Err(json_err("expected a JSON value"))
                } else {
                    Ok(())
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_keys_in_any_order_with_whitespace_and_unknown_keys() {
        let json = b" {\n \"seq\" : 42 ,\t\"gw\": {\"id\": [1, \"x\"]}, \"boot\":7 } \r\n";
        assert_eq!(Ack::decode_json(json), Ok(Ack { boot: 7, seq: 42 }));
    }

    #[test]
    fn rejects_missing_duplicate_negative_fractional_and_overflowing_numbers() {
        for bad in [
            &br#"{"boot":7}"#[..],
            br#"{"seq":7}"#,
            br#"{"boot":1,"boot":2,"seq":3}"#,
            br#"{"boot":-1,"seq":3}"#,
            br#"{"boot":1.5,"seq":3}"#,
            br#"{"boot":1e3,"seq":3}"#,
            br#"{"boot":4294967296,"seq":3}"#,
            br#"{"boot":01,"seq":3}"#,
            br#"{"boot":"1","seq":3}"#,
            br#"{"boot":1,"seq":3"#,
            br#"[1,2]"#,
            b"",
        ] {
            assert!(Ack::decode_json(bad).is_err(), "{:?}", core::str::from_utf8(bad));
        }
    }

    #[test]
    fn the_gateway_time_is_written_last_read_in_any_order_and_checked() {
        let ack = Ack { boot: u32::MAX, seq: u32::MAX };
        let mut buf = [0u8; Ack::MAX_TIMED_JSON_LEN];
        assert_eq!(ack.encode_json_at(u64::MAX, &mut buf), Ok(Ack::MAX_TIMED_JSON_LEN));
        assert_eq!(Ack::decode_json_timed(&buf), Ok((ack, Some(u64::MAX))));
        assert_eq!(ack.encode_json_at(1, &mut buf[..Ack::MAX_JSON_LEN]), Err(EncodeError::BufferTooSmall { len: 36 }));
        let json = br#"{"time_ms": 5, "seq":2, "boot":1}"#;
        assert_eq!(Ack::decode_json_timed(json), Ok((Ack { boot: 1, seq: 2 }, Some(5))));
        assert_eq!(Ack::decode_json_timed(br#"{"boot":1,"seq":2}"#), Ok((Ack { boot: 1, seq: 2 }, None)));
        for bad in [
            &br#"{"boot":1,"seq":2,"time_ms":-5}"#[..],
            br#"{"boot":1,"seq":2,"time_ms":1.5}"#,
            br#"{"boot":1,"seq":2,"time_ms":18446744073709551616}"#,
            br#"{"boot":1,"seq":2,"time_ms":1,"time_ms":2}"#,
        ] {
            assert!(Ack::decode_json_timed(bad).is_err(), "{:?}", core::str::from_utf8(bad));
        }
    }

    #[test]
    fn reports_bytes_after_the_object() {
        assert_eq!(Ack::decode_json(br#"{"boot":1,"seq":2}x"#), Err(DecodeError::TrailingBytes { count: 1 }));
    }

    #[test]
    fn encodes_the_largest_ack_in_max_json_len_and_reports_a_short_buffer() {
        let ack = Ack { boot: u32::MAX, seq: u32::MAX };
        let mut buf = [0u8; Ack::MAX_JSON_LEN];
        assert_eq!(ack.encode_json(&mut buf), Ok(Ack::MAX_JSON_LEN));
        assert_eq!(ack.encode_json(&mut buf[..10]), Err(EncodeError::BufferTooSmall { len: 10 }));
    }
}
