//! The postcard codec (no heap): an [`Envelope`](crate::Envelope) of the version byte and
//! the event, optionally framed with COBS for serial links; and [`decode_any`], which also
//! takes JSON.
//!
//! Decoding checks the format only; call [`Event::validate`] for the rules.

use serde::Serialize;

use crate::cobs;
use crate::error::{DecodeError, EncodeError};
use crate::event::Event;
use crate::limits::FORMAT_VERSION;

/// Which codec a payload used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// A postcard [`Envelope`](crate::Envelope), as firmware sends.
    Postcard,
    /// The JSON object of `json`.
    Json,
}

/// Borrowing twin of [`Envelope`](crate::Envelope): same fields, so the same bytes, without
/// cloning the event to encode it.
#[derive(Serialize)]
struct EnvelopeRef<'a> {
    version: u8,
    event: &'a Event,
}

/// Writes the postcard envelope (version [`FORMAT_VERSION`], then `event`) into `buf` and
/// returns its length; [`MAX_ENCODED_LEN`](crate::MAX_ENCODED_LEN) bytes always suffice.
///
/// ```
/// use edge_event::{decode, encode, Event, Reading, Timestamp, Value, MAX_ENCODED_LEN};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut event = Event::new("door-1", 1, 7, Timestamp::Unknown, "door")?;
/// event.push_reading(Reading::new("open", Value::Bool(true))?)?;
/// let mut buf = [0u8; MAX_ENCODED_LEN];
/// let len = encode(&event, &mut buf)?;
/// assert_eq!(decode(&buf[..len])?, event);
/// # Ok(())
/// # }
/// ```
pub fn encode(event: &Event, buf: &mut [u8]) -> Result<usize, EncodeError> {
    let len = buf.len();
    postcard::to_slice(&envelope(event), buf).map(|used| used.len()).map_err(|e| encode_error(e, len))
}

/// Like [`encode`], as a COBS frame including the `0x00` terminator, for serial links;
/// [`MAX_COBS_FRAME_LEN`](crate::MAX_COBS_FRAME_LEN) bytes always suffice.
pub fn encode_cobs(event: &Event, buf: &mut [u8]) -> Result<usize, EncodeError> {
    let len = buf.len();
    postcard::to_slice_cobs(&envelope(event), buf).map(|used| used.len()).map_err(|e| encode_error(e, len))
}

/// The postcard envelope in a new `Vec` (growing as needed, so no size to choose).
#[cfg(feature = "alloc")]
pub fn encode_to_vec(event: &Event) -> Result<alloc::vec::Vec<u8>, EncodeError> {
    let out = alloc::vec::Vec::with_capacity(64);
    postcard::to_extend(&envelope(event), out).map_err(|e| encode_error(e, 0))
}

/// Reads a postcard envelope: the version byte, then exactly one event (and, in version
/// 2, its [`Dating`](crate::Dating), which this drops: see
/// [`decode_dated`](crate::decode_dated) and [`decode_any_received`](crate::decode_any_received)).
///
/// An unknown version is [`DecodeError::UnsupportedVersion`], bytes after the event are
/// [`DecodeError::TrailingBytes`].
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    crate::dating::decode_dated(bytes).map(|(event, _)| event)
}

/// Reads a COBS frame made by [`encode_cobs`], decoding it in place (so `frame` is
/// overwritten). The `0x00` terminator may be present or already stripped.
pub fn decode_cobs(frame: &mut [u8]) -> Result<Event, DecodeError> {
    let frame = match frame.split_last_mut() {
        Some((0, body)) => body,
        _ => frame,
    };
    let len = cobs::decode_in_place(frame)?;
    decode(&frame[..len])
}

/// Detects the format and decodes: a payload whose first non-whitespace byte is `{` is JSON
/// (which needs feature `alloc`; without it the result is [`DecodeError::UnsupportedFormat`]),
/// anything else a postcard envelope.
///
/// Postcard versions therefore never take the values of JSON whitespace or `{` (9, 10, 13,
/// 32, 123).
pub fn decode_any(bytes: &[u8]) -> Result<(Event, Format), DecodeError> {
    let first = bytes.iter().find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first == Some(&b'{') {
        #[cfg(feature = "alloc")]
        return crate::json::from_slice(bytes).map(|event| (event, Format::Json));
        #[cfg(not(feature = "alloc"))]
        return Err(DecodeError::UnsupportedFormat);
    }
    decode(bytes).map(|event| (event, Format::Postcard))
}

fn envelope(event: &Event) -> EnvelopeRef<'_> {
    EnvelopeRef { version: FORMAT_VERSION, event }
}

pub(crate) fn encode_error(err: postcard::Error, len: usize) -> EncodeError {
    match err {
        postcard::Error::SerializeBufferFull => EncodeError::BufferTooSmall { len },
        _ => EncodeError::Serialize { reason: "postcard refused the value" },
    }
}

pub(crate) fn decode_error(err: postcard::Error) -> DecodeError {
    use postcard::Error as E;
    let reason = match err {
        E::DeserializeUnexpectedEnd => return DecodeError::Truncated,
        E::DeserializeBadVarint => "invalid varint",
        E::DeserializeBadBool => "invalid bool (must be 0 or 1)",
        E::DeserializeBadChar | E::DeserializeBadUtf8 => "string is not valid UTF-8",
        E::DeserializeBadOption => "invalid option tag (must be 0 or 1)",
        E::DeserializeBadEnum => "unknown variant of a value or timestamp",
        // The only custom errors our types raise are heapless capacity checks.
        E::SerdeDeCustom => "a string or list is longer than the format allows",
        _ => "invalid postcard data",
    };
    DecodeError::Malformed { reason }
}
