//! The compact (`format = "postcard"`) cloud batch: what a route sends instead of JSON when
//! bytes matter. Decode it with [`decode_batch`].
//!
//! ```text
//! batch    := BATCH_VERSION (1 byte)
//!             gateway  (varint length, UTF-8)
//!             route    (varint length, UTF-8)
//!             batch    (varint u64)
//!             entry*   until the end of the bytes
//! entry    := varint length, then one envelope exactly as `encode` writes it
//!             (format version byte + event)
//! ```
//!
//! Each event keeps its own envelope version, so a batch can carry events of any version
//! the decoder knows; the gateway builds a batch by concatenating the envelopes it stored,
//! without re-encoding them. Varints are LEB128 (7 bits a byte, low first), as postcard's.

use alloc::string::String;
use alloc::vec::Vec;

use crate::{decode, DecodeError, Event};

/// Version of the batch layout (not of the events inside).
pub const BATCH_VERSION: u8 = 1;

/// A decoded compact batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Gateway id.
    pub gateway: String,
    /// Route name.
    pub route: String,
    /// Batch number.
    pub batch: u64,
    /// The events, in queue order.
    pub events: Vec<Event>,
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn take_varint(bytes: &mut &[u8]) -> Result<u64, DecodeError> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first().ok_or(DecodeError::Truncated)?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::Malformed { reason: "varint longer than 10 bytes" })
}

fn take<'a>(bytes: &mut &'a [u8], len: u64) -> Result<&'a [u8], DecodeError> {
    let len = usize::try_from(len).map_err(|_| DecodeError::Truncated)?;
    if bytes.len() < len {
        return Err(DecodeError::Truncated);
    }
    let (head, rest) = bytes.split_at(len);
    *bytes = rest;
    Ok(head)
}

/// Starts a batch in `out` (cleared first); append entries with [`push_envelope`].
pub fn begin_batch(out: &mut Vec<u8>, gateway: &str, route: &str, batch: u64) {
    out.clear();
    out.push(BATCH_VERSION);
    put_varint(out, gateway.len() as u64);
    out.extend_from_slice(gateway.as_bytes());
    put_varint(out, route.len() as u64);
    out.extend_from_slice(route.as_bytes());
    put_varint(out, batch);
}

/// Appends one envelope (the bytes [`crate::encode`] wrote) to a batch.
pub fn push_envelope(out: &mut Vec<u8>, envelope: &[u8]) {
    put_varint(out, envelope.len() as u64);
    out.extend_from_slice(envelope);
}

/// Bytes an envelope of `len` bytes adds to a batch.
pub fn entry_len(len: usize) -> usize {
    let mut prefix = 1;
    let mut value = len >> 7;
    while value > 0 {
        prefix += 1;
        value >>= 7;
    }
    prefix + len
}

/// Decodes a compact batch; every event is decoded (and so version-checked).
pub fn decode_batch(bytes: &[u8]) -> Result<Batch, DecodeError> {
    let mut rest = bytes;
    let (&version, tail) = rest.split_first().ok_or(DecodeError::Truncated)?;
    if version != BATCH_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    rest = tail;
    let text = |rest: &mut &[u8]| -> Result<String, DecodeError> {
        let len = take_varint(rest)?;
        let raw = take(rest, len)?;
        core::str::from_utf8(raw)
            .map(String::from)
            .map_err(|_| DecodeError::Malformed { reason: "batch header text is not UTF-8" })
    };
    let gateway = text(&mut rest)?;
    let route = text(&mut rest)?;
    let batch = take_varint(&mut rest)?;
    let mut events = Vec::new();
    while !rest.is_empty() {
        let len = take_varint(&mut rest)?;
        events.push(decode(take(&mut rest, len)?)?);
    }
    Ok(Batch { gateway, route, batch, events })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encode, Reading, Timestamp, Value, MAX_ENCODED_LEN};

    fn event(seq: u32) -> Event {
        let mut event = Event::new("d1", 7, seq, Timestamp::Millis(1_764_000_000_123), "temperature").unwrap();
        event.push_reading(Reading::new("celsius", Value::F32(21.5)).unwrap()).unwrap();
        event
    }

    #[test]
    fn a_batch_of_stored_envelopes_decodes_to_its_events() {
        let mut out = Vec::new();
        begin_batch(&mut out, "gw-01", "telemetry", 1234);
        let mut buf = [0u8; MAX_ENCODED_LEN];
        for seq in 1..=3 {
            let len = encode(&event(seq), &mut buf).unwrap();
            push_envelope(&mut out, &buf[..len]);
        }
        let batch = decode_batch(&out).unwrap();
        assert_eq!((batch.gateway.as_str(), batch.route.as_str(), batch.batch), ("gw-01", "telemetry", 1234));
        assert_eq!(batch.events, vec![event(1), event(2), event(3)]);
    }

    #[test]
    fn the_header_bytes_are_pinned() {
        let mut out = Vec::new();
        begin_batch(&mut out, "g", "r", 300);
        assert_eq!(out, [0x01, 0x01, b'g', 0x01, b'r', 0xac, 0x02]);
        assert_eq!(decode_batch(&out).unwrap().events, vec![]);
    }

    #[test]
    fn entry_len_counts_the_varint_prefix() {
        assert_eq!(entry_len(5), 6);
        assert_eq!(entry_len(127), 128);
        assert_eq!(entry_len(128), 130);
    }

    #[test]
    fn damaged_batches_are_errors_not_panics() {
        assert_eq!(decode_batch(&[]), Err(DecodeError::Truncated));
        assert_eq!(decode_batch(&[2]), Err(DecodeError::UnsupportedVersion(2)));
        assert_eq!(decode_batch(&[1, 5, b'a']), Err(DecodeError::Truncated));
        assert!(decode_batch(&[1, 0, 0, 0, 3, 1, 2, 3]).is_err());
        assert!(decode_batch(&[1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic_the_batch_decoder(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = decode_batch(&bytes);
        }
    }
}
