//! Errors of the codecs and builders. Each `Display` message stands alone (the gateway
//! stores it as a dead-letter reason), and every type implements `core::error::Error`.

use core::fmt;

use crate::limits::{
    MAX_BYTES_LEN, MAX_DEVICE_ID_LEN, MAX_META, MAX_NAME_LEN, MAX_READINGS, MAX_TEXT_LEN, MAX_TYPE_LEN, MAX_UNIT_LEN,
};

/// A bounded part of an event: names the limit an input went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    /// [`Event::device`](crate::Event::device).
    DeviceId,
    /// [`Event::kind`](crate::Event::kind).
    EventType,
    /// [`Reading::name`](crate::Reading::name).
    ReadingName,
    /// [`Value::Text`](crate::Value::Text).
    Text,
    /// [`Value::Bytes`](crate::Value::Bytes).
    Bytes,
    /// [`Reading::unit`](crate::Reading::unit).
    Unit,
    /// [`MetaEntry::key`](crate::MetaEntry::key).
    MetaKey,
    /// [`MetaEntry::value`](crate::MetaEntry::value).
    MetaValue,
    /// The number of [`Event::readings`](crate::Event::readings).
    Readings,
    /// The number of [`Event::meta`](crate::Event::meta) entries.
    Meta,
}

impl Field {
    /// The limit: bytes for strings and byte lists, entries for [`Field::Readings`] and
    /// [`Field::Meta`].
    pub const fn max(self) -> usize {
        match self {
            Field::DeviceId => MAX_DEVICE_ID_LEN,
            Field::EventType => MAX_TYPE_LEN,
            Field::ReadingName | Field::MetaKey => MAX_NAME_LEN,
            Field::Text | Field::MetaValue => MAX_TEXT_LEN,
            Field::Bytes => MAX_BYTES_LEN,
            Field::Unit => MAX_UNIT_LEN,
            Field::Readings => MAX_READINGS,
            Field::Meta => MAX_META,
        }
    }

    /// A human name, e.g. `reading name`.
    pub const fn name(self) -> &'static str {
        match self {
            Field::DeviceId => "device id",
            Field::EventType => "event type",
            Field::ReadingName => "reading name",
            Field::Text => "text value",
            Field::Bytes => "bytes value",
            Field::Unit => "unit",
            Field::MetaKey => "meta key",
            Field::MetaValue => "meta value",
            Field::Readings => "readings",
            Field::Meta => "meta entries",
        }
    }
}

/// An input longer than its [`Field`] allows; returned by the constructors, never truncated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TooLong {
    /// Which limit was exceeded.
    pub field: Field,
}

impl fmt::Display for TooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field {
            Field::Readings | Field::Meta => {
                write!(f, "too many {}: at most {} are allowed", self.field.name(), self.field.max())
            }
            field => write!(f, "{} is too long: at most {} bytes are allowed", field.name(), field.max()),
        }
    }
}

impl core::error::Error for TooLong {}

/// Why [`encode`](crate::encode) or a JSON writer into a fixed buffer failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer (of `len` bytes) is too small; see
    /// [`MAX_ENCODED_LEN`](crate::MAX_ENCODED_LEN) and friends for sizes that always fit.
    BufferTooSmall {
        /// Length of the buffer that was given.
        len: usize,
    },
    /// The serializer refused the value (not expected for these types).
    Serialize {
        /// What went wrong.
        reason: &'static str,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BufferTooSmall { len } => {
                write!(f, "output buffer of {len} bytes is too small for the encoded message")
            }
            EncodeError::Serialize { reason } => write!(f, "cannot encode the event: {reason}"),
        }
    }
}

impl core::error::Error for EncodeError {}

/// Why a payload could not be decoded into an event (or an [`Ack`](crate::Ack)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The envelope's version byte (or JSON `"v"`) names a version this build doesn't know.
    UnsupportedVersion(u8),
    /// The payload ends before the event is complete.
    Truncated,
    /// The bytes are not a valid postcard or COBS encoding.
    Malformed {
        /// What was wrong.
        reason: &'static str,
    },
    /// A string or list is longer than the format allows.
    TooLong {
        /// Which limit.
        what: Field,
    },
    /// The JSON is invalid or does not have the event's shape.
    Json(JsonError),
    /// The payload is in a format this build cannot read (JSON without feature `alloc`).
    UnsupportedFormat,
    /// Bytes follow a complete event.
    TrailingBytes {
        /// How many.
        count: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::UnsupportedVersion(v) => write!(
                f,
                "unsupported format version {v} (this build reads versions {} and {}); \
                 the payload may not be an edge-event at all",
                crate::FORMAT_VERSION,
                crate::DATED_FORMAT_VERSION
            ),
            DecodeError::Truncated => f.write_str("payload ends before the event is complete"),
            DecodeError::Malformed { reason } => write!(f, "malformed payload: {reason}"),
            DecodeError::TooLong { what } => TooLong { field: *what }.fmt(f),
            DecodeError::Json(err) => write!(f, "invalid JSON event: {err}"),
            DecodeError::UnsupportedFormat => {
                f.write_str("JSON payloads are not supported by this build (edge-event without feature \"alloc\")")
            }
            DecodeError::TrailingBytes { count } => {
                write!(f, "{count} unexpected bytes after the end of the event")
            }
        }
    }
}

impl core::error::Error for DecodeError {}

impl From<TooLong> for DecodeError {
    fn from(err: TooLong) -> Self {
        DecodeError::TooLong { what: err.field }
    }
}

/// A JSON error message: a static reason from the heap-free parsers, or serde_json's
/// message (with line and column) under feature `alloc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError(Repr);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Repr {
    Static(&'static str),
    #[cfg(feature = "alloc")]
    Owned(alloc::string::String),
}

impl JsonError {
    pub(crate) const fn new(reason: &'static str) -> Self {
        JsonError(Repr::Static(reason))
    }

    #[cfg(feature = "alloc")]
    pub(crate) fn owned(message: alloc::string::String) -> Self {
        JsonError(Repr::Owned(message))
    }

    /// The message.
    pub fn message(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            #[cfg(feature = "alloc")]
            Repr::Owned(s) => s,
        }
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl core::error::Error for JsonError {}
