//! Semantic checks the codecs cannot express: id characters, finite numbers, unique names,
//! and a timestamp not too far in the future. Decoding never validates; the gateway calls
//! [`Event::validate`] after decoding and dead-letters the event with the error's message.

use core::fmt;

use crate::event::{DeviceId, Event, EventType, Name, Value};
use crate::limits::{MAX_DEVICE_ID_LEN, MAX_FUTURE_SKEW_MS, MAX_TYPE_LEN};

/// Why an event breaks the rules of [`Event::validate`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ValidationError {
    /// The device id is empty.
    EmptyDeviceId,
    /// The device id is longer than [`MAX_DEVICE_ID_LEN`] (only from [`validate_device_id`]).
    DeviceIdTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The device id contains a character that is not allowed.
    InvalidDeviceId {
        /// The id.
        device: DeviceId,
        /// The first character that is not allowed.
        found: char,
    },
    /// The event type is empty.
    EmptyType,
    /// The event type is longer than [`MAX_TYPE_LEN`] (only from [`validate_event_type`]).
    TypeTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The event type contains a character that is not allowed.
    InvalidType {
        /// The type.
        kind: EventType,
        /// The first character that is not allowed.
        found: char,
    },
    /// A reading is NaN or infinite.
    NonFinite {
        /// The reading's name.
        reading: Name,
        /// The value, as `f64`.
        value: f64,
    },
    /// Two readings have the same name.
    DuplicateReading {
        /// The name.
        name: Name,
    },
    /// A reading has an empty name.
    EmptyReadingName,
    /// Two meta entries have the same key.
    DuplicateMetaKey {
        /// The key.
        key: Name,
    },
    /// A meta entry has an empty key.
    EmptyMetaKey,
    /// The timestamp is more than [`MAX_FUTURE_SKEW_MS`] ahead of the gateway clock.
    TimestampInFuture {
        /// The event's timestamp, ms since the Unix epoch.
        ts: u64,
        /// The gateway clock, ms since the Unix epoch.
        now: u64,
    },
}

const ALLOWED: &str = "only ASCII letters, digits, '-', '_', '.' and ':' are allowed";

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValidationError::EmptyDeviceId => f.write_str("device id is empty"),
            ValidationError::DeviceIdTooLong { len } => {
                write!(f, "device id is {len} bytes long; at most {MAX_DEVICE_ID_LEN} are allowed")
            }
            ValidationError::InvalidDeviceId { device, found } => {
                write!(f, "device id {:?} contains {found:?}; {ALLOWED}", device.as_str())
            }
            ValidationError::EmptyType => f.write_str("event type is empty"),
            ValidationError::TypeTooLong { len } => {
                write!(f, "event type is {len} bytes long; at most {MAX_TYPE_LEN} are allowed")
            }
            ValidationError::InvalidType { kind, found } => {
                write!(f, "event type {:?} contains {found:?}; {ALLOWED}", kind.as_str())
            }
            ValidationError::NonFinite { reading, value } => {
                let what = if value.is_nan() {
                    "NaN"
                } else if *value > 0.0 {
                    "+infinity"
                } else {
                    "-infinity"
                };
                write!(f, "reading {:?} is {what}; readings must be finite numbers", reading.as_str())
            }
            ValidationError::DuplicateReading { name } => {
                write!(f, "reading {:?} appears more than once; reading names must be unique", name.as_str())
            }
            ValidationError::EmptyReadingName => f.write_str("a reading has an empty name"),
            ValidationError::DuplicateMetaKey { key } => {
                write!(f, "meta key {:?} appears more than once; meta keys must be unique", key.as_str())
            }
            ValidationError::EmptyMetaKey => f.write_str("a meta entry has an empty key"),
            ValidationError::TimestampInFuture { ts, now } => write!(
                f,
                "timestamp {ts} is {} s ahead of the gateway clock ({now}); at most {} s are allowed",
                ts.saturating_sub(*now) / 1000,
                MAX_FUTURE_SKEW_MS / 1000
            ),
        }
    }
}

impl core::error::Error for ValidationError {}

/// Whether `c` may appear in a device id or event type: it must be usable as an MQTT topic
/// level (never `/`, `+`, `#`) and in file names and URLs without escaping.
pub const fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')
}

fn first_invalid(s: &str) -> Option<char> {
    s.chars().find(|&c| !is_id_char(c))
}

/// Checks a device id from any source (e.g. a topic level): not empty, at most
/// [`MAX_DEVICE_ID_LEN`] bytes, only [`is_id_char`] characters.
pub fn validate_device_id(device: &str) -> Result<(), ValidationError> {
    if device.is_empty() {
        return Err(ValidationError::EmptyDeviceId);
    }
    let Ok(id) = DeviceId::try_from(device) else {
        return Err(ValidationError::DeviceIdTooLong { len: device.len() });
    };
    match first_invalid(device) {
        Some(found) => Err(ValidationError::InvalidDeviceId { device: id, found }),
        None => Ok(()),
    }
}

/// Checks an event type: not empty, at most [`MAX_TYPE_LEN`] bytes, only
/// [`is_id_char`] characters.
pub fn validate_event_type(kind: &str) -> Result<(), ValidationError> {
    if kind.is_empty() {
        return Err(ValidationError::EmptyType);
    }
    let Ok(k) = EventType::try_from(kind) else {
        return Err(ValidationError::TypeTooLong { len: kind.len() });
    };
    match first_invalid(kind) {
        Some(found) => Err(ValidationError::InvalidType { kind: k, found }),
        None => Ok(()),
    }
}

impl Event {
    /// Checks the rules the types cannot express, returning the first broken one: device id
    /// and type not empty and made of [`is_id_char`] characters; readings named, uniquely,
    /// and finite; meta keys present and unique; and, when the gateway clock `now_ms` is
    /// known, `ts` at most [`MAX_FUTURE_SKEW_MS`] ahead of it.
    pub fn validate(&self, now_ms: Option<u64>) -> Result<(), ValidationError> {
        validate_device_id(&self.device)?;
        validate_event_type(&self.kind)?;
        for (i, reading) in self.readings.iter().enumerate() {
            if reading.name.is_empty() {
                return Err(ValidationError::EmptyReadingName);
            }
            let value = match reading.value {
                Value::F32(v) => f64::from(v),
                Value::F64(v) => v,
                _ => 0.0,
            };
            if !value.is_finite() {
                return Err(ValidationError::NonFinite { reading: reading.name.clone(), value });
            }
            // Quadratic, but over at most MAX_READINGS entries and without a heap.
            if self.readings[..i].iter().any(|r| r.name == reading.name) {
                return Err(ValidationError::DuplicateReading { name: reading.name.clone() });
            }
        }
        for (i, entry) in self.meta.iter().enumerate() {
            if entry.key.is_empty() {
                return Err(ValidationError::EmptyMetaKey);
            }
            if self.meta[..i].iter().any(|m| m.key == entry.key) {
                return Err(ValidationError::DuplicateMetaKey { key: entry.key.clone() });
            }
        }
        if let (Some(ts), Some(now)) = (self.ts.millis(), now_ms) {
            if ts > now.saturating_add(MAX_FUTURE_SKEW_MS) {
                return Err(ValidationError::TimestampInFuture { ts, now });
            }
        }
        Ok(())
    }
}
