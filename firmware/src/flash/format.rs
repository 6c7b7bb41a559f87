//! The bytes of the flash log: sector headers and records, each checked by a CRC-32.
//!
//! All integers little-endian. Every write starts and ends on the flash's write size
//! (records are padded with `0xFF`, which leaves those bytes erased).
//!
//! - **Sector header** (16 bytes): magic `"EGR1"`, the sector's age `seq: u32` (one more
//!   than the previous sector opened), the boot counter `boot: u32` when it was opened, and
//!   the CRC-32 of those 12 bytes.
//! - **Record**: `kind: u8`, `0xFF`, `len: u16` (body length), `crc: u32` (CRC-32 of kind,
//!   len and body), then the body:
//!   - `Event` (1): `boot: u32`, `seq: u32`, the encoded event (`len - 8` bytes);
//!   - `Confirm` (2): `boot: u32`, `seq: u32`, an ack as [`Ring::confirm`](crate::Ring::confirm) applies it;
//!   - `Boot` (3): `boot: u32`, the boot counter's new value.
//!
//! A header whose `kind` and `len` bytes are all `0xFF` marks the free space of a sector.

/// Sector magic.
pub const MAGIC: [u8; 4] = *b"EGR1";
/// Length of a sector header.
pub const SECTOR_HEADER_LEN: usize = 16;
/// Length of a record header.
pub const RECORD_HEADER_LEN: usize = 8;
/// Body length of a record before an event's payload.
pub const EVENT_BODY_PREFIX: usize = 8;

/// Record kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An event kept for the gateway.
    Event = 1,
    /// An ack applied.
    Confirm = 2,
    /// A new value of the boot counter.
    Boot = 3,
}

impl Kind {
    pub fn from_byte(byte: u8) -> Option<Kind> {
        match byte {
            1 => Some(Kind::Event),
            2 => Some(Kind::Confirm),
            3 => Some(Kind::Boot),
            _ => None,
        }
    }
}

/// CRC-32 (IEEE, reflected), bit by bit: no table, a few dozen bytes of code.
pub fn crc32(parts: &[&[u8]]) -> u32 {
    let mut crc = !0u32;
    for part in parts {
        for &byte in *part {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
            }
        }
    }
    !crc
}

/// `len` rounded up to a multiple of `align` (a power of two).
pub const fn pad(len: usize, align: usize) -> usize {
    (len + align - 1) & !(align - 1)
}

pub fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Writes a sector header into `out` (16 bytes).
pub fn sector_header(seq: u32, boot: u32, out: &mut [u8; SECTOR_HEADER_LEN]) {
    out[..4].copy_from_slice(&MAGIC);
    out[4..8].copy_from_slice(&seq.to_le_bytes());
    out[8..12].copy_from_slice(&boot.to_le_bytes());
    let crc = crc32(&[&out[..12]]);
    out[12..].copy_from_slice(&crc.to_le_bytes());
}

/// `(seq, boot)` of a valid sector header.
pub fn parse_sector_header(bytes: &[u8]) -> Option<(u32, u32)> {
    let head = bytes.get(..SECTOR_HEADER_LEN)?;
    if head[..4] != MAGIC || u32_at(head, 12)? != crc32(&[&head[..12]]) {
        return None;
    }
    Some((u32_at(head, 4)?, u32_at(head, 8)?))
}

/// Writes a record (header and body) into `out`, padded with `0xFF` to `align`; its
/// length, or None if it does not fit.
pub fn record(kind: Kind, body: &[&[u8]], align: usize, out: &mut [u8]) -> Option<usize> {
    let len: usize = body.iter().map(|b| b.len()).sum();
    let len16 = u16::try_from(len).ok()?;
    let total = pad(RECORD_HEADER_LEN + len, align);
    let out = out.get_mut(..total)?;
    out.fill(0xFF);
    out[0] = kind as u8;
    out[2..4].copy_from_slice(&len16.to_le_bytes());
    let mut at = RECORD_HEADER_LEN;
    for part in body {
        out[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    let crc = crc32(&[&out[..1], &out[2..4], &out[RECORD_HEADER_LEN..at]]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    Some(total)
}

/// What a record header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// Erased: the free space starts here.
    Free,
    /// A record of this kind and body length (its CRC still to check).
    Record { kind: Kind, len: usize, crc: u32 },
    /// Not a record: a torn or damaged write.
    Bad,
}

pub fn parse_record_header(bytes: &[u8]) -> Header {
    let Some(head) = bytes.get(..RECORD_HEADER_LEN) else {
        return Header::Bad;
    };
    if head.iter().all(|&b| b == 0xFF) {
        return Header::Free;
    }
    match (Kind::from_byte(head[0]), head[1], u32_at(head, 4)) {
        (Some(kind), 0xFF, Some(crc)) => {
            Header::Record { kind, len: usize::from(u16::from_le_bytes([head[2], head[3]])), crc }
        }
        _ => Header::Bad,
    }
}

/// True if the record in `bytes` (header and body) has the CRC its header claims.
pub fn record_is_intact(bytes: &[u8], len: usize, crc: u32) -> bool {
    match (bytes.get(..RECORD_HEADER_LEN), bytes.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + len)) {
        (Some(head), Some(body)) => crc32(&[&head[..1], &head[2..4], body]) == crc,
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(&[b"123456789"]), 0xCBF4_3926);
        assert_eq!(crc32(&[b"1234", b"56789"]), 0xCBF4_3926);
    }

    #[test]
    fn a_record_is_pinned_byte_for_byte_and_parses_back() {
        let mut out = [0u8; 32];
        let len = record(Kind::Confirm, &[&7u32.to_le_bytes(), &9u32.to_le_bytes()], 8, &mut out).unwrap();
        assert_eq!(len, 16);
        let crc = crc32(&[&[2], &[8, 0], &[7, 0, 0, 0, 9, 0, 0, 0]]);
        let mut want = vec![2, 0xFF, 8, 0];
        want.extend(crc.to_le_bytes());
        want.extend([7, 0, 0, 0, 9, 0, 0, 0]);
        assert_eq!(&out[..16], &want[..]);
        assert_eq!(parse_record_header(&out), Header::Record { kind: Kind::Confirm, len: 8, crc });
        assert!(record_is_intact(&out, 8, crc));
        out[12] ^= 1;
        assert!(!record_is_intact(&out, 8, crc));
        assert_eq!(parse_record_header(&[0xFF; 8]), Header::Free);
        assert_eq!(parse_record_header(&[0x7F, 0xFF, 1, 0, 0, 0, 0, 0]), Header::Bad);
    }

    #[test]
    fn sector_headers_round_trip_and_reject_damage() {
        let mut head = [0u8; SECTOR_HEADER_LEN];
        sector_header(5, 77, &mut head);
        assert_eq!(parse_sector_header(&head), Some((5, 77)));
        head[9] ^= 0x10;
        assert_eq!(parse_sector_header(&head), None);
        assert_eq!(parse_sector_header(&[0xFF; 16]), None);
    }
}
