//! The event types. Their serde derives *are* the postcard wire format (see the crate
//! docs' "Wire format" rules before touching a field); JSON is written by hand in
//! `json`.

use serde::{Deserialize, Serialize};

use crate::error::{Field, TooLong};
use crate::limits::{
    MAX_BYTES_LEN, MAX_DEVICE_ID_LEN, MAX_META, MAX_NAME_LEN, MAX_READINGS, MAX_TEXT_LEN, MAX_TYPE_LEN, MAX_UNIT_LEN,
};

/// A device id: ASCII letters, digits, `-`, `_`, `.`, `:` (checked by
/// [`Event::validate`]), so it is usable as an MQTT topic level.
pub type DeviceId = heapless::String<MAX_DEVICE_ID_LEN>;
/// An event type such as `temperature`; same characters as a [`DeviceId`].
pub type EventType = heapless::String<MAX_TYPE_LEN>;
/// A reading name or meta key.
pub type Name = heapless::String<MAX_NAME_LEN>;
/// A [`Value::Text`] or meta value.
pub type Text = heapless::String<MAX_TEXT_LEN>;
/// The payload of [`Value::Bytes`].
pub type Bytes = heapless::Vec<u8, MAX_BYTES_LEN>;
/// A unit such as `C` or `hPa`.
pub type Unit = heapless::String<MAX_UNIT_LEN>;
/// The readings of an event.
pub type Readings = heapless::Vec<Reading, MAX_READINGS>;
/// The metadata entries of an event.
pub type Meta = heapless::Vec<MetaEntry, MAX_META>;

/// One observation by one device, identified by `(device, boot, seq)`.
///
/// ```
/// use edge_event::{Event, Reading, Timestamp, Value};
///
/// # fn main() -> Result<(), edge_event::TooLong> {
/// let mut event = Event::new("env-7", 3, 42, Timestamp::Millis(1_764_000_000_123), "environment")?;
/// event.push_reading(Reading::new("celsius", Value::F32(21.5))?.with_unit("C")?)?;
/// event.push_reading(Reading::new("co2_ppm", Value::I64(412))?)?;
/// event.push_meta("fw", "1.2.0")?;
/// assert_eq!(event.validate(None), Ok(()));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The sending device.
    pub device: DeviceId,
    /// Changes on every device restart (a counter kept in flash, or random).
    pub boot: u32,
    /// Per boot, strictly increasing.
    pub seq: u32,
    /// When the device took the readings.
    pub ts: Timestamp,
    /// What kind of event this is; the JSON key is `"type"`.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// Named values, in the order the device wrote them; names are unique.
    pub readings: Readings,
    /// Optional metadata (firmware version, location name...); keys are unique.
    pub meta: Meta,
}

/// When an event happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Timestamp {
    /// The device has no clock (yet); the gateway may stamp it on arrival.
    #[default]
    Unknown,
    /// Milliseconds since the Unix epoch (UTC).
    Millis(u64),
}

/// One named value with an optional unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Unique within the event, not empty.
    pub name: Name,
    /// The value.
    pub value: Value,
    /// The unit, such as `C`, if the device names one.
    pub unit: Option<Unit>,
}

/// A reading's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// A 32-bit float; must be finite.
    F32(f32),
    /// A 64-bit float; must be finite.
    F64(f64),
    /// A signed integer (counters, ppm...).
    I64(i64),
    /// A switch or flag.
    Bool(bool),
    /// A short string, such as a GPS fix kind.
    Text(Text),
    /// Raw bytes (JSON: `{"hex": "0a0b"}`).
    Bytes(Bytes),
}

/// A metadata entry, such as `fw = 1.2.0`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MetaEntry {
    /// Unique within the event, not empty.
    pub key: Name,
    /// The value.
    pub value: Text,
}

/// The postcard wire type: the version byte first, then the event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The format version the event is encoded in; [`FORMAT_VERSION`](crate::FORMAT_VERSION) when written.
    pub version: u8,
    /// The event.
    pub event: Event,
}

/// Gateway -> device on `devices/{device}/ack`: the highest `(boot, seq)` the gateway has
/// committed to disk; the device may forget every event of that boot up to `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ack {
    /// The boot the committed event belongs to.
    pub boot: u32,
    /// Its sequence number.
    pub seq: u32,
}

pub(crate) fn bounded<const N: usize>(s: &str, field: Field) -> Result<heapless::String<N>, TooLong> {
    heapless::String::try_from(s).map_err(|_| TooLong { field })
}

impl Event {
    /// Starts an event with no readings and no meta; fails if `device` or `kind` is too long.
    pub fn new(device: &str, boot: u32, seq: u32, ts: Timestamp, kind: &str) -> Result<Self, TooLong> {
        Ok(Event {
            device: bounded(device, Field::DeviceId)?,
            boot,
            seq,
            ts,
            kind: bounded(kind, Field::EventType)?,
            readings: heapless::Vec::new(),
            meta: heapless::Vec::new(),
        })
    }

    /// Appends a reading; fails when the event already has [`MAX_READINGS`](crate::MAX_READINGS).
    pub fn push_reading(&mut self, reading: Reading) -> Result<(), TooLong> {
        self.readings.push(reading).map_err(|_| TooLong { field: Field::Readings })
    }

    /// Appends a metadata entry; fails when a string is too long or the event is full.
    pub fn push_meta(&mut self, key: &str, value: &str) -> Result<(), TooLong> {
        let entry = MetaEntry::new(key, value)?;
        self.meta.push(entry).map_err(|_| TooLong { field: Field::Meta })
    }

    /// The reading called `name`, if any.
    pub fn reading(&self, name: &str) -> Option<&Reading> {
        self.readings.iter().find(|r| r.name.as_str() == name)
    }

    /// The value of meta key `key`, if any.
    pub fn meta_value(&self, key: &str) -> Option<&str> {
        self.meta.iter().find(|m| m.key.as_str() == key).map(|m| m.value.as_str())
    }
}

impl Timestamp {
    /// The milliseconds since the Unix epoch, when known.
    pub const fn millis(self) -> Option<u64> {
        match self {
            Timestamp::Unknown => None,
            Timestamp::Millis(ms) => Some(ms),
        }
    }
}

impl Reading {
    /// A reading without unit; fails if `name` is too long.
    pub fn new(name: &str, value: Value) -> Result<Self, TooLong> {
        Ok(Reading { name: bounded(name, Field::ReadingName)?, value, unit: None })
    }

    /// The same reading with `unit`; fails if `unit` is too long.
    pub fn with_unit(mut self, unit: &str) -> Result<Self, TooLong> {
        self.unit = Some(bounded(unit, Field::Unit)?);
        Ok(self)
    }
}

impl Value {
    /// A [`Value::Text`]; fails if `text` is longer than [`MAX_TEXT_LEN`](crate::MAX_TEXT_LEN).
    pub fn text(text: &str) -> Result<Self, TooLong> {
        Ok(Value::Text(bounded(text, Field::Text)?))
    }

    /// A [`Value::Bytes`]; fails if `bytes` is longer than [`MAX_BYTES_LEN`](crate::MAX_BYTES_LEN).
    pub fn bytes(bytes: &[u8]) -> Result<Self, TooLong> {
        heapless::Vec::from_slice(bytes).map(Value::Bytes).map_err(|_| TooLong { field: Field::Bytes })
    }

    /// The value as `f64` for the numeric variants (`I64` may round), `None` otherwise.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::F32(v) => Some(f64::from(*v)),
            Value::F64(v) => Some(*v),
            Value::I64(v) => Some(*v as f64),
            Value::Bool(_) | Value::Text(_) | Value::Bytes(_) => None,
        }
    }
}

impl MetaEntry {
    /// A metadata entry; fails if `key` or `value` is too long.
    pub fn new(key: &str, value: &str) -> Result<Self, TooLong> {
        Ok(MetaEntry { key: bounded(key, Field::MetaKey)?, value: bounded(value, Field::MetaValue)? })
    }
}
