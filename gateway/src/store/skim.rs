//! Reads the type, timestamp and readings out of a stored postcard envelope without building
//! an [`edge_event::Event`] — the read model's per-event cost on the commit path.
//!
//! A full `edge_event::decode` builds the whole fixed-size event (about a kilobyte of heapless
//! fields) and was most of the read model's cost. This walks the bytes of format version 1
//! (`edge_event::FORMAT_VERSION`) as postcard lays them out: varints for lengths, integers and
//! enum variants, zigzag for `i64`, little-endian `f32`/`f64`, one byte for `bool` and
//! `Option` tags. Any other version, or bytes it does not understand, return `None` and the
//! caller falls back to `edge_event::decode`. The test below checks it against the real
//! decoder on many events.

use edge_event::{EventType, Name, Text, Unit, Value};

/// What the read model needs of an event.
pub struct Skimmed {
    /// Its type.
    pub kind: EventType,
    /// Its `ts` in ms, None when unknown.
    pub ts_ms: Option<u64>,
    /// `(name, value, unit)` in order (on the stack: no allocation per event).
    pub readings: heapless::Vec<(Name, Value, Option<Unit>), { edge_event::MAX_READINGS }>,
}

struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn str(&mut self) -> Option<&'a str> {
        let len = usize::try_from(self.varint()?).ok()?;
        std::str::from_utf8(self.take(len)?).ok()
    }
}

/// Skims a version-1 envelope; None when it is not one this understands.
pub fn skim(envelope: &[u8]) -> Option<Skimmed> {
    let mut c = Cursor { bytes: envelope };
    if c.byte()? != 1 {
        return None;
    }
    c.str()?; // device
    c.varint()?; // boot
    c.varint()?; // seq
    let ts_ms = match c.varint()? {
        0 => None,
        1 => Some(c.varint()?),
        _ => return None,
    };
    let kind = EventType::try_from(c.str()?).ok()?;
    let count = c.varint()?;
    let mut readings = heapless::Vec::new();
    for _ in 0..count {
        let name = Name::try_from(c.str()?).ok()?;
        let value = match c.varint()? {
            0 => Value::F32(f32::from_le_bytes(c.take(4)?.try_into().ok()?)),
            1 => Value::F64(f64::from_le_bytes(c.take(8)?.try_into().ok()?)),
            2 => {
                let z = c.varint()?;
                Value::I64(((z >> 1) as i64) ^ -((z & 1) as i64))
            }
            3 => match c.byte()? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                _ => return None,
            },
            4 => Value::Text(Text::try_from(c.str()?).ok()?),
            5 => {
                let len = usize::try_from(c.varint()?).ok()?;
                Value::Bytes(edge_event::Bytes::from_slice(c.take(len)?).ok()?)
            }
            _ => return None,
        };
        let unit = match c.byte()? {
            0 => None,
            1 => Some(Unit::try_from(c.str()?).ok()?),
            _ => return None,
        };
        readings.push((name, value, unit)).ok()?;
    }
    // Meta is not needed; the envelope was validated when it was stored.
    Some(Skimmed { kind, ts_ms, readings })
}

#[cfg(test)]
mod tests {
    use edge_event::{Event, Reading, Timestamp};

    use super::*;

    fn check(event: &Event) {
        let bytes = edge_event::encode_to_vec(event).unwrap();
        let skimmed = skim(&bytes).expect("skims");
        assert_eq!(skimmed.kind, event.kind);
        let ts = match event.ts {
            Timestamp::Millis(ms) => Some(ms),
            Timestamp::Unknown => None,
        };
        assert_eq!(skimmed.ts_ms, ts);
        let want: Vec<_> = event.readings.iter().map(|r| (r.name.clone(), r.value.clone(), r.unit.clone())).collect();
        assert_eq!(skimmed.readings.to_vec(), want);
    }

    #[test]
    fn skimming_agrees_with_the_decoder_on_every_value_kind_and_edge() {
        let values = [
            Value::F32(21.5),
            Value::F32(-0.1),
            Value::F64(1e300),
            Value::I64(0),
            Value::I64(-1),
            Value::I64(i64::MIN),
            Value::I64(i64::MAX),
            Value::Bool(true),
            Value::Bool(false),
            Value::Text(Text::try_from("3d fix").unwrap()),
            Value::Bytes(edge_event::Bytes::from_slice(&[0, 0xff, 0x80]).unwrap()),
        ];
        for (i, value) in values.iter().enumerate() {
            for ts in [Timestamp::Unknown, Timestamp::Millis(u64::from(u32::MAX) * 1000 + i as u64)] {
                let mut event = Event::new("device-with-a-long-id-0123456789", u32::MAX, 300, ts, "t").unwrap();
                event.push_reading(Reading::new("a", value.clone()).unwrap()).unwrap();
                event
                    .push_reading(Reading::new("b", Value::I64(i as i64 * 1000)).unwrap().with_unit("hPa").unwrap())
                    .unwrap();
                event.push_meta("fw", "1.2.0").unwrap();
                check(&event);
            }
        }
        let empty = Event::new("d", 1, 1, Timestamp::Unknown, "heartbeat").unwrap();
        check(&empty);
        let mut full = Event::new("d", 1, 1, Timestamp::Millis(1), "env").unwrap();
        for i in 0..edge_event::MAX_READINGS {
            full.push_reading(Reading::new(&format!("r{i}"), Value::F64(i as f64 / 3.0)).unwrap()).unwrap();
        }
        check(&full);
    }

    #[test]
    fn anything_else_is_left_to_the_decoder() {
        let event = Event::new("d", 1, 1, Timestamp::Millis(5), "t").unwrap();
        let mut bytes = edge_event::encode_to_vec(&event).unwrap();
        assert!(skim(&bytes).is_some());
        bytes[0] = 2;
        assert!(skim(&bytes).is_none(), "another version");
        assert!(skim(&[1, 0xff]).is_none(), "truncated");
        assert!(skim(&[]).is_none());
    }
}
