//! The JSON reader: serde_json drives visitors written for the event's JSON shape (the
//! derives are the postcard format, so they cannot be reused).
//!
//! Errors that have a structured [`DecodeError`] (an unsupported `"v"`, an over-long string
//! or list) are parked in a [`Cell`] by the visitor that finds them and returned instead of
//! serde_json's message; every other error is serde_json's message, which names the key
//! and the line and column.

use alloc::string::ToString;
use core::cell::Cell;
use core::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Unexpected, Visitor};

use super::readings::ReadingsSeed;
use crate::error::{DecodeError, Field, JsonError};
use crate::event::{Event, Meta, MetaEntry, Timestamp};
use crate::limits::FORMAT_VERSION;

/// Reads one JSON event object (surrounding whitespace allowed, nothing else after it).
///
/// ```
/// use edge_event::{json, Timestamp, Value};
///
/// let event = json::from_slice(
///     br#"{"device":"d1","boot":1,"seq":42,"type":"temperature","readings":{"celsius":21.5}}"#,
/// )?;
/// assert_eq!(event.ts, Timestamp::Unknown);
/// assert_eq!(event.reading("celsius").map(|r| &r.value), Some(&Value::F64(21.5)));
/// # Ok::<(), edge_event::DecodeError>(())
/// ```
pub fn from_slice(bytes: &[u8]) -> Result<Event, DecodeError> {
    from_slice_dated(bytes).map(|(event, _)| event)
}

/// [`from_slice`], with the `"age_ms"` of the object (for `crate::dating`).
pub(crate) fn from_slice_dated(bytes: &[u8]) -> Result<(Event, Option<u64>), DecodeError> {
    let found = Cell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let result = EventSeed(&found).deserialize(&mut de).and_then(|event| de.end().map(|()| event));
    result.map_err(|err| found.take().unwrap_or_else(|| DecodeError::Json(JsonError::owned(err.to_string()))))
}

/// Where a visitor parks a structured error.
pub(super) type Found = Cell<Option<DecodeError>>;

/// Parks `err` and returns a serde error with the same message, to unwind serde_json.
pub(super) fn park<E: de::Error>(found: &Found, err: DecodeError) -> E {
    let error = E::custom(&err);
    found.set(Some(err));
    error
}

pub(super) fn duplicate<E: de::Error>(key: &str) -> E {
    E::custom(format_args!("duplicate key {key:?}"))
}

fn missing<E: de::Error>(key: &str) -> E {
    E::custom(format_args!("missing key {key:?}"))
}

struct EventSeed<'f>(&'f Found);

impl<'de> DeserializeSeed<'de> for EventSeed<'_> {
    type Value = (Event, Option<u64>);

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EventSeed<'_> {
    type Value = (Event, Option<u64>);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let found = self.0;
        let (mut device, mut boot, mut seq, mut ts, mut kind) = (None, None, None, None, None);
        let mut age = None;
        let (mut readings, mut meta, mut version) = (None, None, None);
        while let Some(key) = map.next_key_seed(KeySeed)? {
            macro_rules! once {
                ($slot:ident, $name:literal, $seed:expr) => {{
                    if $slot.is_some() {
                        return Err(duplicate($name));
                    }
                    $slot = Some(map.next_value_seed($seed)?);
                }};
            }
            match key {
                Key::Device => once!(device, "device", StrSeed::new(Label::Key("device"), Field::DeviceId, found)),
                Key::Boot => once!(boot, "boot", U32Seed("boot")),
                Key::Seq => once!(seq, "seq", U32Seed("seq")),
                Key::Ts => once!(ts, "ts", TsSeed),
                Key::Type => once!(kind, "type", StrSeed::new(Label::Key("type"), Field::EventType, found)),
                Key::Readings => once!(readings, "readings", ReadingsSeed(found)),
                Key::Meta => once!(meta, "meta", MetaSeed(found)),
                Key::Version => once!(version, "v", VersionSeed(found)),
                Key::Age => once!(age, "age_ms", U64Seed("age_ms")),
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let event = Event {
            device: device.ok_or_else(|| missing("device"))?,
            boot: boot.ok_or_else(|| missing("boot"))?,
            seq: seq.ok_or_else(|| missing("seq"))?,
            ts: ts.unwrap_or(Timestamp::Unknown),
            kind: kind.ok_or_else(|| missing("type"))?,
            readings: readings.ok_or_else(|| missing("readings"))?,
            meta: meta.unwrap_or_default(),
        };
        Ok((event, age))
    }
}

/// The top-level keys.
enum Key {
    Device,
    Boot,
    Seq,
    Ts,
    Type,
    Readings,
    Meta,
    Version,
    Age,
    Other,
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Key, D::Error> {
        de.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        Ok(match key {
            "device" => Key::Device,
            "boot" => Key::Boot,
            "seq" => Key::Seq,
            "ts" => Key::Ts,
            "type" => Key::Type,
            "readings" => Key::Readings,
            "meta" => Key::Meta,
            "v" => Key::Version,
            "age_ms" => Key::Age,
            _ => Key::Other,
        })
    }
}

/// A bounded string; `what` names it in messages (`"device"`, `reading "fix"`).
pub(super) struct StrSeed<'a, const N: usize> {
    pub(super) what: Label<'a>,
    pub(super) field: Field,
    pub(super) found: &'a Found,
}

impl<'a, const N: usize> StrSeed<'a, N> {
    pub(super) fn new(what: Label<'a>, field: Field, found: &'a Found) -> Self {
        StrSeed { what, field, found }
    }
}

impl<'de, const N: usize> DeserializeSeed<'de> for StrSeed<'_, N> {
    type Value = heapless::String<N>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_str(self)
    }
}

impl<const N: usize> Visitor<'_> for StrSeed<'_, N> {
    type Value = heapless::String<N>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a string for {}", self.what)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        heapless::String::try_from(s).map_err(|_| park(self.found, DecodeError::TooLong { what: self.field }))
    }
}

struct U32Seed(&'static str);

impl<'de> DeserializeSeed<'de> for U32Seed {
    type Value = u32;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<u32, D::Error> {
        de.deserialize_u32(self)
    }
}

impl Visitor<'_> for U32Seed {
    type Value = u32;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an unsigned 32-bit integer for {:?}", self.0)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u32, E> {
        u32::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u32, E> {
        u32::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }
}

struct U64Seed(&'static str);

impl<'de> DeserializeSeed<'de> for U64Seed {
    type Value = u64;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<u64, D::Error> {
        de.deserialize_u64(self)
    }
}

impl Visitor<'_> for U64Seed {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an unsigned 64-bit integer for {:?}", self.0)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }
}

struct TsSeed;

impl<'de> DeserializeSeed<'de> for TsSeed {
    type Value = Timestamp;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Timestamp, D::Error> {
        de.deserialize_any(self)
    }
}

impl Visitor<'_> for TsSeed {
    type Value = Timestamp;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("milliseconds since the Unix epoch (an unsigned integer) or null for \"ts\"")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Timestamp, E> {
        Ok(Timestamp::Millis(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Timestamp, E> {
        Ok(Timestamp::Unknown)
    }
}

struct VersionSeed<'f>(&'f Found);

impl<'de> DeserializeSeed<'de> for VersionSeed<'_> {
    type Value = u8;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<u8, D::Error> {
        de.deserialize_u8(self)
    }
}

impl Visitor<'_> for VersionSeed<'_> {
    type Value = u8;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "format version {FORMAT_VERSION} for \"v\"")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u8, E> {
        match u8::try_from(v) {
            Ok(FORMAT_VERSION) => Ok(FORMAT_VERSION),
            Ok(other) => Err(park(self.0, DecodeError::UnsupportedVersion(other))),
            Err(_) => Err(E::invalid_value(Unexpected::Unsigned(v), &self)),
        }
    }
}

/// What a value is, for messages: `"device"`, `reading "celsius"`, `a meta key`.
#[derive(Clone, Copy)]
pub(super) enum Label<'a> {
    Key(&'static str),
    Named(&'static str, &'a str),
    Plain(&'static str),
}

impl fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Label::Key(key) => write!(f, "{key:?}"),
            Label::Named(kind, name) => write!(f, "{kind} {name:?}"),
            Label::Plain(what) => f.write_str(what),
        }
    }
}

struct MetaSeed<'f>(&'f Found);

impl<'de> DeserializeSeed<'de> for MetaSeed<'_> {
    type Value = Meta;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Meta, D::Error> {
        de.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for MetaSeed<'_> {
    type Value = Meta;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of strings (key to value) for \"meta\"")
    }

    fn visit_none<E: de::Error>(self) -> Result<Meta, E> {
        Ok(Meta::new())
    }

    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<Meta, D::Error> {
        de.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Meta, A::Error> {
        let mut meta = Meta::new();
        while let Some(key) = map.next_key_seed(StrSeed::new(Label::Plain("a meta key"), Field::MetaKey, self.0))? {
            let label = Label::Named("meta", &key);
            let value = map.next_value_seed(StrSeed { what: label, field: Field::MetaValue, found: self.0 })?;
            if meta.push(MetaEntry { key, value }).is_err() {
                return Err(park(self.0, DecodeError::TooLong { what: Field::Meta }));
            }
        }
        Ok(meta)
    }
}
