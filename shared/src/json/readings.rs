//! Reading the `"readings"` object: names to values, where a value is a JSON scalar,
//! `{"hex": ...}` for bytes, or `{"value": ..., "unit": ...}` for a value with a unit.

use core::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Unexpected, Visitor};

use super::read::{duplicate, park, Found, Label, StrSeed};
use crate::error::{DecodeError, Field};
use crate::event::{Bytes, Reading, Readings, Unit, Value};

/// The `"readings"` object, in the order the sender wrote it.
pub(super) struct ReadingsSeed<'f>(pub(super) &'f Found);

impl<'de> DeserializeSeed<'de> for ReadingsSeed<'_> {
    type Value = Readings;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Readings, D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ReadingsSeed<'_> {
    type Value = Readings;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of readings (name to value) for \"readings\"")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Readings, A::Error> {
        let mut readings = Readings::new();
        while let Some(name) =
            map.next_key_seed(StrSeed::new(Label::Plain("a reading name"), Field::ReadingName, self.0))?
        {
            let label = Label::Named("reading", &name);
            let (value, unit) = map.next_value_seed(ValueSeed { label, found: self.0, nested: false })?;
            if readings.push(Reading { name, value, unit }).is_err() {
                return Err(park(self.0, DecodeError::TooLong { what: Field::Readings }));
            }
        }
        Ok(readings)
    }
}

/// A reading's value with its optional unit; `nested` inside `{"value": ...}`, where only
/// scalars and `{"hex": ...}` are allowed.
#[derive(Clone, Copy)]
struct ValueSeed<'a> {
    label: Label<'a>,
    found: &'a Found,
    nested: bool,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = (Value, Option<Unit>);

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = (Value, Option<Unit>);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a number, bool, string, {{\"hex\": ...}} or {{\"value\": ..., \"unit\": ...}} for {}", self.label)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok((Value::Bool(v), None))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok((Value::I64(v), None))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        match i64::try_from(v) {
            Ok(v) => Ok((Value::I64(v), None)),
            Err(_) => Err(E::custom(format_args!(
                "{} is {v}, which does not fit a signed 64-bit integer; write it with a fraction (\"{v}.0\") to send a float",
                self.label
            ))),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok((Value::F64(v), None))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        let text =
            heapless::String::try_from(s).map_err(|_| park(self.found, DecodeError::TooLong { what: Field::Text }))?;
        Ok((Value::Text(text), None))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(E::custom(format_args!(
            "{} is null; readings must be finite numbers, bools, strings or {{\"hex\": ...}} \
             (NaN and infinity cannot be sent as JSON)",
            self.label
        )))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut hex, mut value, mut unit): (Option<Bytes>, Option<Value>, Option<Option<Unit>>) = (None, None, None);
        while let Some(key) = map.next_key_seed(ObjectKeySeed)? {
            match key {
                ObjectKey::Hex if hex.is_some() => return Err(duplicate("hex")),
                ObjectKey::Hex => hex = Some(map.next_value_seed(HexSeed(self.label, self.found))?),
                ObjectKey::Value if self.nested => {
                    return Err(de::Error::custom(format_args!(
                        "{}: \"value\" cannot be nested inside \"value\"",
                        self.label
                    )))
                }
                ObjectKey::Value if value.is_some() => return Err(duplicate("value")),
                ObjectKey::Value => {
                    let seed = ValueSeed { nested: true, ..self };
                    value = Some(map.next_value_seed(seed)?.0);
                }
                ObjectKey::Unit if self.nested => {
                    return Err(de::Error::custom(format_args!(
                        "{}: \"unit\" belongs next to \"value\", not inside it",
                        self.label
                    )))
                }
                ObjectKey::Unit if unit.is_some() => return Err(duplicate("unit")),
                ObjectKey::Unit => {
                    let seed =
                        StrSeed::<{ crate::MAX_UNIT_LEN }> { what: self.label, field: Field::Unit, found: self.found };
                    unit = Some(map.next_value_seed(OptionSeed(seed))?);
                }
                ObjectKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let value = match (hex, value) {
            (Some(bytes), None) => Value::Bytes(bytes),
            (None, Some(value)) => value,
            (Some(_), Some(_)) => {
                return Err(de::Error::custom(format_args!("{} has both \"hex\" and \"value\"; use one", self.label)))
            }
            (None, None) => {
                return Err(de::Error::custom(format_args!("{} is an object without \"value\" or \"hex\"", self.label)))
            }
        };
        Ok((value, unit.flatten()))
    }
}

/// The keys of a reading object.
enum ObjectKey {
    Hex,
    Value,
    Unit,
    Other,
}

struct ObjectKeySeed;

impl<'de> DeserializeSeed<'de> for ObjectKeySeed {
    type Value = ObjectKey;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<ObjectKey, D::Error> {
        de.deserialize_str(self)
    }
}

impl Visitor<'_> for ObjectKeySeed {
    type Value = ObjectKey;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<ObjectKey, E> {
        Ok(match key {
            "hex" => ObjectKey::Hex,
            "value" => ObjectKey::Value,
            "unit" => ObjectKey::Unit,
            _ => ObjectKey::Other,
        })
    }
}

/// `null` or what the inner seed reads.
struct OptionSeed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for OptionSeed<S> {
    type Value = Option<S::Value>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for OptionSeed<S> {
    type Value = Option<S::Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(de).map(Some)
    }
}

struct HexSeed<'a>(Label<'a>, &'a Found);

impl<'de> DeserializeSeed<'de> for HexSeed<'_> {
    type Value = Bytes;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Bytes, D::Error> {
        de.deserialize_str(self)
    }
}

impl Visitor<'_> for HexSeed<'_> {
    type Value = Bytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a string of hex digit pairs for \"hex\" of {}", self.0)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Bytes, E> {
        fn nibble(c: u8) -> Option<u8> {
            match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                b'A'..=b'F' => Some(c - b'A' + 10),
                _ => None,
            }
        }
        let digits = s.as_bytes();
        if !digits.len().is_multiple_of(2) {
            return Err(E::invalid_value(Unexpected::Str(s), &self));
        }
        let mut bytes = Bytes::new();
        for pair in digits.chunks_exact(2) {
            let byte = match (nibble(pair[0]), nibble(pair[1])) {
                (Some(hi), Some(lo)) => hi << 4 | lo,
                _ => return Err(E::invalid_value(Unexpected::Str(s), &self)),
            };
            if bytes.push(byte).is_err() {
                return Err(park(self.1, DecodeError::TooLong { what: Field::Bytes }));
            }
        }
        Ok(bytes)
    }
}
