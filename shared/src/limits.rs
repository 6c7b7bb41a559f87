//! Bounds of the format: every string and list has a fixed capacity, so an event fits in
//! a fixed amount of memory and its encoding in a fixed-size buffer.
//!
//! The bounds are part of the contract: raising one lets a newer sender produce events an
//! older receiver rejects, so a change goes with a new [`FORMAT_VERSION`].

/// The envelope version [`encode`](crate::encode) writes: the version byte, then the event.
/// Decoders accept every version they know.
pub const FORMAT_VERSION: u8 = 1;
/// The envelope version [`encode_dated`](crate::encode_dated) writes: version 1's layout,
/// then a [`Dating`](crate::Dating) (an age or an uptime) for events without a wall clock.
pub const DATED_FORMAT_VERSION: u8 = 2;
/// Longest device id, in bytes.
pub const MAX_DEVICE_ID_LEN: usize = 32;
/// Longest event type, in bytes.
pub const MAX_TYPE_LEN: usize = 32;
/// Longest reading name or meta key, in bytes.
pub const MAX_NAME_LEN: usize = 16;
/// Most readings in one event.
pub const MAX_READINGS: usize = 8;
/// Longest [`Value::Text`](crate::Value::Text) or meta value, in bytes.
pub const MAX_TEXT_LEN: usize = 32;
/// Longest [`Value::Bytes`](crate::Value::Bytes), in bytes.
pub const MAX_BYTES_LEN: usize = 32;
/// Longest unit, in bytes.
pub const MAX_UNIT_LEN: usize = 8;
/// Most metadata entries in one event.
pub const MAX_META: usize = 4;
/// How far ahead of the gateway clock an event timestamp may be (24 h), in milliseconds.
pub const MAX_FUTURE_SKEW_MS: u64 = 24 * 3600 * 1000;

/// Upper bound of the postcard encoding of any envelope, version 1 (version byte + event)
/// or 2 (then a [`Dating`](crate::Dating)); firmware sizes its buffers with it.
///
/// Computed from the bounds above with postcard's worst cases: lengths, `u32`, `u64` and
/// zigzagged `i64` are varints (7 bits a byte), `f32`/`f64` fixed 4/8 bytes, enum variant
/// indexes and `Option` tags one byte. A version-2 envelope's event has no wall-clock
/// `ts` ([`encode_dated`](crate::encode_dated) writes version 1 otherwise), so its dating
/// costs one byte more than the largest `ts`, not a whole `ts` more.
pub const MAX_ENCODED_LEN: usize = 1 + max(MAX_EVENT_LEN, MAX_EVENT_LEN - TS_LEN + TAG_LEN + DATING_LEN);

/// Upper bound of a COBS frame made by [`encode_cobs`](crate::encode_cobs): the envelope,
/// one overhead byte per 254 bytes (and one more), and the `0x00` terminator.
pub const MAX_COBS_FRAME_LEN: usize = MAX_ENCODED_LEN + MAX_ENCODED_LEN / 254 + 1 + 1;

/// Bytes a varint takes for values up to `max`.
const fn varint_len(max: u64) -> usize {
    let mut len = 1;
    let mut rest = max >> 7;
    while rest != 0 {
        len += 1;
        rest >>= 7;
    }
    len
}

/// Worst case of a length-prefixed string or byte list holding at most `max` bytes.
const fn str_len(max: usize) -> usize {
    varint_len(max as u64) + max
}

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// Variant indexes and option tags stay below 128, so they take one varint byte.
const TAG_LEN: usize = 1;

const VALUE_LEN: usize =
    TAG_LEN + max(max(4, 8), max(max(varint_len(u64::MAX), 1), max(str_len(MAX_TEXT_LEN), str_len(MAX_BYTES_LEN))));

const READING_LEN: usize = str_len(MAX_NAME_LEN) + VALUE_LEN + TAG_LEN + str_len(MAX_UNIT_LEN);

const META_LEN: usize = str_len(MAX_NAME_LEN) + str_len(MAX_TEXT_LEN);

/// The largest `ts` (`Millis(u64::MAX)`); `Unknown` is its tag alone.
const TS_LEN: usize = TAG_LEN + varint_len(u64::MAX);

/// The largest dating (an age or uptime of `u64::MAX`).
const DATING_LEN: usize = TAG_LEN + varint_len(u64::MAX);

const MAX_EVENT_LEN: usize = str_len(MAX_DEVICE_ID_LEN)
    + 2 * varint_len(u32::MAX as u64)
    + TS_LEN
    + str_len(MAX_TYPE_LEN)
    + varint_len(MAX_READINGS as u64)
    + MAX_READINGS * READING_LEN
    + varint_len(MAX_META as u64)
    + MAX_META * META_LEN;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn varint_len_matches_postcard_worst_cases() {
        assert_eq!(varint_len(0), 1);
        assert_eq!(varint_len(127), 1);
        assert_eq!(varint_len(128), 2);
        assert_eq!(varint_len(u32::MAX as u64), 5);
        assert_eq!(varint_len(u64::MAX), 10);
    }

    #[test]
    fn max_encoded_len_is_pinned() {
        // A change here changes what firmware must allocate: make it on purpose.
        // 779 since format version 2: one byte more than version 1's 778.
        assert_eq!(MAX_ENCODED_LEN, 779);
        assert_eq!(MAX_COBS_FRAME_LEN, 784);
    }
}
