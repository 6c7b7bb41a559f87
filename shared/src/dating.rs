//! Time without a clock: how an event from a device that has no wall clock (no RTC, no
//! SNTP answer yet) still gets a `ts`.
//!
//! The device cannot say *when* it took a reading, but it can say *how long ago*: its
//! monotonic clock runs from power-on. The gateway, whose clock is set, turns "taken
//! `age` ms before this message was sent" into `ts = received - age` at the moment it
//! receives the message ([`decode_any_received`]), and stores the event with that `ts`.
//!
//! # Invariants
//!
//! - **The age is measured at (re)transmission, not at recording.** An event that waited an
//!   hour in the device's ring through an outage and is re-sent after a reconnect carries
//!   an age one hour larger than on its first send. The device therefore stores the
//!   reading's monotonic time ([`Dating::Uptime`]) with the event and rewrites it into
//!   [`Dating::Age`] each time it sends ([`age_at_send`]), copying the stored bytes; the
//!   stored encoding never changes (so it can live in NOR flash).
//! - **The error of the derived `ts` is the transit time**, from the device writing the
//!   publish to the gateway decoding it (network, broker, the gateway's ingest queue): it
//!   is never earlier than the true time by more than the device clock's drift over the
//!   age, and later by at most the transit time.
//! - **A wall clock wins.** An event whose `ts` is [`Timestamp::Millis`] keeps it; the age
//!   applies only to [`Timestamp::Unknown`].
//! - **Uptime does not survive a reset.** A monotonic clock restarts at power-on, so an
//!   uptime recorded in an earlier boot must not be turned into an age: the device sends it
//!   as it is, and the gateway leaves such an event's `ts` unknown (as it does for an age
//!   larger than its own clock, or an uptime later than the send time).
//!
//! # Wire form (format version 2)
//!
//! `0x02`, the event exactly as in version 1, then the [`Dating`]: a variant index
//! (`0` = `Age`, `1` = `Uptime`) and a `u64` varint of milliseconds. Version 1 (no dating)
//! stays what [`encode`](crate::encode) writes, so an event with a wall-clock `ts` reads
//! on old gateways as before; an old gateway refuses a version-2 event with "unsupported
//! format version 2" (upgrade gateways before devices send ages).
//!
//! JSON senders, which write each message when they send it, put `"age_ms": N` in the
//! object instead of `"ts"`; a JSON reader that does not know the key ignores it.

use serde::{Deserialize, Serialize};

use crate::codec::{decode_error, encode_error};
use crate::error::{DecodeError, EncodeError};
use crate::event::{Event, Timestamp};
use crate::limits::{DATED_FORMAT_VERSION, FORMAT_VERSION};
use crate::Format;

/// How a version-2 envelope dates an event without a wall clock. A wire type: grows only
/// at the end (see the crate docs' "Wire format").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Dating {
    /// The readings were taken this many milliseconds before this message was sent.
    Age(u64),
    /// The device's monotonic clock (ms since power-on) when the readings were taken: the
    /// stored form, which the device turns into [`Dating::Age`] at every send
    /// ([`age_at_send`]). A receiver cannot date it.
    Uptime(u64),
}

impl Dating {
    /// The timestamp this dating gives an event received at `received_ms` (ms since the
    /// Unix epoch): `received - age`, or [`Timestamp::Unknown`] for an uptime or an age
    /// larger than the clock.
    pub const fn timestamp(self, received_ms: u64) -> Timestamp {
        match self {
            Dating::Age(age) if age <= received_ms => Timestamp::Millis(received_ms - age),
            Dating::Age(_) | Dating::Uptime(_) => Timestamp::Unknown,
        }
    }
}

/// Borrowing form of the version-2 envelope: same fields, so the same bytes.
#[derive(Serialize)]
struct DatedRef<'a> {
    version: u8,
    event: &'a Event,
    dating: Dating,
}

/// Writes the version-2 envelope (`event`, then `dating`) into `buf` and returns its
/// length; [`MAX_ENCODED_LEN`](crate::MAX_ENCODED_LEN) bytes always suffice. An event
/// with a wall-clock `ts` has nothing to date: it is written as version 1, as by
/// [`encode`](crate::encode).
///
/// ```
/// use edge_event::{age_at_send, decode_dated, encode_dated, Dating, Event, Timestamp, MAX_ENCODED_LEN};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let event = Event::new("door-1", 1, 7, Timestamp::Unknown, "door")?;
/// // Stored when the reading was taken, at uptime 5 s ...
/// let mut stored = [0u8; MAX_ENCODED_LEN];
/// let len = encode_dated(&event, Dating::Uptime(5_000), &mut stored)?;
/// // ... sent at uptime 65 s: one minute old.
/// let mut out = [0u8; MAX_ENCODED_LEN];
/// let sent = age_at_send(&stored[..len], 65_000, &mut out)?;
/// assert_eq!(decode_dated(sent)?, (event, Some(Dating::Age(60_000))));
/// # Ok(())
/// # }
/// ```
pub fn encode_dated(event: &Event, dating: Dating, buf: &mut [u8]) -> Result<usize, EncodeError> {
    if event.ts != Timestamp::Unknown {
        // A wall clock wins: nothing to date, and the lowest version that carries it is 1.
        return crate::encode(event, buf);
    }
    let len = buf.len();
    let envelope = DatedRef { version: DATED_FORMAT_VERSION, event, dating };
    postcard::to_slice(&envelope, buf).map(|used| used.len()).map_err(|e| encode_error(e, len))
}

/// Reads a postcard envelope of either version: the event, and the dating of a version-2
/// envelope. [`decode`](crate::decode) is this without the dating.
pub fn decode_dated(bytes: &[u8]) -> Result<(Event, Option<Dating>), DecodeError> {
    let (&version, rest) = bytes.split_first().ok_or(DecodeError::Truncated)?;
    let (event, dating, rest) = match version {
        FORMAT_VERSION => {
            let (event, rest) = postcard::take_from_bytes::<Event>(rest).map_err(decode_error)?;
            (event, None, rest)
        }
        DATED_FORMAT_VERSION => {
            let (event, rest) = postcard::take_from_bytes::<Event>(rest).map_err(decode_error)?;
            let (dating, rest) = postcard::take_from_bytes::<Dating>(rest).map_err(decode_error)?;
            (event, Some(dating), rest)
        }
        other => return Err(DecodeError::UnsupportedVersion(other)),
    };
    if rest.is_empty() {
        Ok((event, dating))
    } else {
        Err(DecodeError::TrailingBytes { count: rest.len() })
    }
}

/// Decodes a payload as [`decode_any`](crate::decode_any) does, then dates it: an event
/// without a wall-clock `ts` that carries an age (a version-2 [`Dating::Age`], or JSON
/// `"age_ms"`) gets `ts = received_ms - age`. This is what a gateway calls with its own
/// clock (ms since the Unix epoch) at the moment it takes the message.
pub fn decode_any_received(bytes: &[u8], received_ms: u64) -> Result<(Event, Format), DecodeError> {
    let first = bytes.iter().find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    let (mut event, dating, format) = if first == Some(&b'{') {
        #[cfg(feature = "alloc")]
        {
            let (event, age) = crate::json::read::from_slice_dated(bytes)?;
            (event, age.map(Dating::Age), Format::Json)
        }
        #[cfg(not(feature = "alloc"))]
        return Err(DecodeError::UnsupportedFormat);
    } else {
        let (event, dating) = decode_dated(bytes)?;
        (event, dating, Format::Postcard)
    };
    if let (Timestamp::Unknown, Some(dating)) = (event.ts, dating) {
        event.ts = dating.timestamp(received_ms);
    }
    Ok((event, format))
}

/// The bytes to send for a stored envelope at `now_ms` on the device's monotonic clock:
/// a version-2 envelope whose dating is [`Dating::Uptime`]`(taken)` is copied into `out`
/// with [`Dating::Age`]`(now_ms - taken)` instead; anything else (version 1, an uptime
/// later than `now_ms`) is returned as it is, without a copy.
///
/// `out` needs [`MAX_ENCODED_LEN`](crate::MAX_ENCODED_LEN) bytes at most (an age never
/// takes more bytes than the largest `u64`, which the bound already counts).
pub fn age_at_send<'a>(stored: &'a [u8], now_ms: u64, out: &'a mut [u8]) -> Result<&'a [u8], EncodeError> {
    let Some((tag, Dating::Uptime(taken))) = stored_dating(stored) else {
        return Ok(stored);
    };
    let Some(age) = now_ms.checked_sub(taken) else {
        return Ok(stored);
    };
    // Written by hand, not through serde: this runs on every send of a device and its
    // code is in every firmware image (tests pin it to postcard's bytes).
    let mut varint = [0u8; 10];
    let varint = write_varint(age, &mut varint);
    let len = tag + 1 + varint.len();
    let too_small = EncodeError::BufferTooSmall { len: out.len() };
    let dest = out.get_mut(..len).ok_or(too_small)?;
    let (prefix, rest) = dest.split_at_mut(tag);
    prefix.copy_from_slice(stored.get(..tag).unwrap_or_default());
    if let Some((age_tag, age_bytes)) = rest.split_first_mut() {
        *age_tag = AGE_TAG;
        age_bytes.copy_from_slice(varint);
    }
    Ok(dest)
}

/// The variant indexes of [`Dating`] on the wire.
const AGE_TAG: u8 = 0;
const UPTIME_TAG: u8 = 1;

/// Where the dating of a version-2 envelope starts, and what it says; found from the end
/// (the event before it need not be parsed): a varint's last byte has its top bit clear,
/// every earlier byte has it set, and the variant index before it is below 128.
fn stored_dating(stored: &[u8]) -> Option<(usize, Dating)> {
    if stored.first() != Some(&DATED_FORMAT_VERSION) {
        return None;
    }
    let last = stored.len().checked_sub(1)?;
    let mut start = last;
    while start > 0 && stored.get(start - 1).is_some_and(|b| b & 0x80 != 0) {
        start -= 1;
    }
    let tag = start.checked_sub(1).filter(|&tag| tag > 0)?;
    let value = read_varint(stored.get(start..)?)?;
    match *stored.get(tag)? {
        AGE_TAG => Some((tag, Dating::Age(value))),
        UPTIME_TAG => Some((tag, Dating::Uptime(value))),
        _ => None,
    }
}

/// A whole slice as one postcard `u64` varint (7 bits a byte, least significant first).
fn read_varint(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 10 {
        return None;
    }
    let mut value: u64 = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let bits = u64::from(b & 0x7F);
        let shift = 7 * i as u32;
        if shift == 63 && bits > 1 {
            return None;
        }
        value |= bits << shift;
    }
    Some(value)
}

fn write_varint(mut value: u64, buf: &mut [u8; 10]) -> &[u8] {
    let mut len = 0;
    for slot in buf.iter_mut() {
        let byte = (value & 0x7F) as u8;
        value >>= 7;
        len += 1;
        if value == 0 {
            *slot = byte;
            break;
        }
        *slot = byte | 0x80;
    }
    buf.get(..len).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::MAX_ENCODED_LEN;

    fn stored(uptime: u64) -> ([u8; MAX_ENCODED_LEN], usize) {
        let event = Event::new("d", 1, 2, Timestamp::Unknown, "t").unwrap();
        let mut buf = [0u8; MAX_ENCODED_LEN];
        let len = encode_dated(&event, Dating::Uptime(uptime), &mut buf).unwrap();
        (buf, len)
    }

    #[test]
    fn the_age_is_computed_at_each_send_from_the_same_stored_bytes() {
        let (buf, len) = stored(1_000);
        let mut out = [0u8; MAX_ENCODED_LEN];
        for (now, age) in [(1_000, 0), (1_127, 127), (3_601_000, 3_600_000), (u64::MAX, u64::MAX - 1_000)] {
            let sent = age_at_send(&buf[..len], now, &mut out).unwrap();
            assert_eq!(decode_dated(sent).unwrap().1, Some(Dating::Age(age)), "at {now}");
        }
    }

    #[test]
    fn version_1_and_uptimes_from_the_future_are_sent_unchanged() {
        let event = Event::new("d", 1, 2, Timestamp::Millis(5), "t").unwrap();
        let mut buf = [0u8; MAX_ENCODED_LEN];
        let len = crate::encode(&event, &mut buf).unwrap();
        let mut out = [0u8; MAX_ENCODED_LEN];
        assert_eq!(age_at_send(&buf[..len], 10, &mut out).unwrap(), &buf[..len]);
        let (buf, len) = stored(500);
        assert_eq!(age_at_send(&buf[..len], 499, &mut out).unwrap(), &buf[..len], "a clock that restarted");
    }

    #[test]
    fn uptimes_and_ages_of_every_varint_length_match_postcard() {
        let mut out = [0u8; MAX_ENCODED_LEN];
        for shift in 0..64 {
            for uptime in [1u64 << shift, (1u64 << shift) - 1, u64::MAX >> (63 - shift)] {
                let (buf, len) = stored(uptime);
                assert_eq!(stored_dating(&buf[..len]).map(|(_, d)| d), Some(Dating::Uptime(uptime)));
                let now = uptime.saturating_add(uptime / 3);
                let age = now - uptime;
                let sent = age_at_send(&buf[..len], now, &mut out).unwrap();
                let event = Event::new("d", 1, 2, Timestamp::Unknown, "t").unwrap();
                let mut want = [0u8; MAX_ENCODED_LEN];
                let want_len = encode_dated(&event, Dating::Age(age), &mut want).unwrap();
                assert_eq!(sent, &want[..want_len], "uptime {uptime}, age {age}");
            }
        }
    }

    #[test]
    fn an_age_dates_an_unknown_ts_from_the_receive_time_and_a_wall_clock_wins() {
        let mut out = [0u8; MAX_ENCODED_LEN];
        let event = Event::new("d", 1, 2, Timestamp::Unknown, "t").unwrap();
        let len = encode_dated(&event, Dating::Age(250), &mut out).unwrap();
        let (got, format) = decode_any_received(&out[..len], 10_000).unwrap();
        assert_eq!((got.ts, format), (Timestamp::Millis(9_750), Format::Postcard));
        let event = Event::new("d", 1, 2, Timestamp::Millis(42), "t").unwrap();
        let len = encode_dated(&event, Dating::Age(250), &mut out).unwrap();
        assert_eq!(out[0], FORMAT_VERSION, "nothing to date: version 1");
        assert_eq!(decode_any_received(&out[..len], 10_000).unwrap().0.ts, Timestamp::Millis(42));
        assert_eq!(Dating::Age(10_001).timestamp(10_000), Timestamp::Unknown);
        assert_eq!(Dating::Uptime(5).timestamp(10_000), Timestamp::Unknown);
    }
}
