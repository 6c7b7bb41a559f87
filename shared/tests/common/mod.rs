//! Example events and proptest strategies shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use edge_event::{
    Event, MetaEntry, Reading, Timestamp, Value, MAX_BYTES_LEN, MAX_DEVICE_ID_LEN, MAX_META, MAX_NAME_LEN,
    MAX_READINGS, MAX_TEXT_LEN, MAX_TYPE_LEN, MAX_UNIT_LEN,
};
use proptest::prelude::*;

/// A multi-channel environmental sensor, with units and firmware metadata.
pub fn environment() -> Event {
    let mut e = Event::new("env-7", 3, 42, Timestamp::Millis(1_764_000_000_123), "environment").unwrap();
    e.push_reading(Reading::new("celsius", Value::F32(21.5)).unwrap().with_unit("C").unwrap()).unwrap();
    e.push_reading(Reading::new("humidity", Value::F32(48.25)).unwrap().with_unit("%").unwrap()).unwrap();
    e.push_reading(Reading::new("pressure_hpa", Value::F32(1013.25)).unwrap()).unwrap();
    e.push_reading(Reading::new("co2_ppm", Value::I64(412)).unwrap()).unwrap();
    e.push_meta("fw", "1.2.0").unwrap();
    e
}

/// A pulse counter.
pub fn counter() -> Event {
    let mut e = Event::new("counter-1", 1, 7, Timestamp::Unknown, "counter").unwrap();
    e.push_reading(Reading::new("count", Value::I64(123_456)).unwrap()).unwrap();
    e
}

/// A door switch.
pub fn door() -> Event {
    let mut e = Event::new("door-1", 2, 1, Timestamp::Millis(1_764_000_000_000), "door").unwrap();
    e.push_reading(Reading::new("open", Value::Bool(true)).unwrap()).unwrap();
    e
}

/// A GPS fix.
pub fn gps() -> Event {
    let mut e = Event::new("gps-3", 9, 1000, Timestamp::Millis(1_764_000_000_500), "gps").unwrap();
    e.push_reading(Reading::new("lat", Value::F64(52.520008)).unwrap()).unwrap();
    e.push_reading(Reading::new("lon", Value::F64(13.404954)).unwrap()).unwrap();
    e.push_reading(Reading::new("alt_m", Value::F32(34.5)).unwrap().with_unit("m").unwrap()).unwrap();
    e.push_reading(Reading::new("fix", Value::text("3d").unwrap()).unwrap()).unwrap();
    e
}

/// Every example event.
pub fn examples() -> [Event; 4] {
    [environment(), counter(), door(), gps()]
}

/// The largest event the bounds allow: every string full, every list full, every number
/// at its longest varint.
pub fn maximal() -> Event {
    let mut e = Event::new(
        &"d".repeat(MAX_DEVICE_ID_LEN),
        u32::MAX,
        u32::MAX,
        Timestamp::Millis(u64::MAX),
        &"t".repeat(MAX_TYPE_LEN),
    )
    .unwrap();
    for i in 0..MAX_READINGS {
        let name = format!("{i}{}", "n".repeat(MAX_NAME_LEN - 1));
        let value = if i % 2 == 0 {
            Value::text(&"x".repeat(MAX_TEXT_LEN)).unwrap()
        } else {
            Value::bytes(&[0xFF; MAX_BYTES_LEN]).unwrap()
        };
        let reading = Reading::new(&name, value).unwrap().with_unit(&"u".repeat(MAX_UNIT_LEN)).unwrap();
        e.push_reading(reading).unwrap();
    }
    for i in 0..MAX_META {
        let key = format!("{i}{}", "k".repeat(MAX_NAME_LEN - 1));
        e.push_meta(&key, &"v".repeat(MAX_TEXT_LEN)).unwrap();
    }
    e
}

/// A string of arbitrary characters (control characters, quotes, non-ASCII) of at most
/// `max` bytes.
pub fn any_string<const N: usize>(min_chars: usize) -> impl Strategy<Value = heapless::String<N>> {
    prop::collection::vec(any::<char>(), min_chars..=N).prop_map(|chars| {
        let mut s = heapless::String::new();
        for c in chars {
            if s.push(c).is_err() {
                break;
            }
        }
        s
    })
}

/// A valid device id or event type of at most `N` bytes.
pub fn id<const N: usize>() -> impl Strategy<Value = heapless::String<N>> {
    let pattern = format!("[A-Za-z0-9._:-]{{1,{N}}}");
    proptest::string::string_regex(&pattern).unwrap().prop_map(|s| heapless::String::try_from(s.as_str()).unwrap())
}

/// A finite float of every class (normal, subnormal, zero, either sign).
pub fn finite_f32() -> impl Strategy<Value = f32> {
    use proptest::num::f32::*;
    POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO
}

/// A finite double of every class.
pub fn finite_f64() -> impl Strategy<Value = f64> {
    use proptest::num::f64::*;
    POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO
}

/// Any value that passes validation.
pub fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        finite_f32().prop_map(Value::F32),
        finite_f64().prop_map(Value::F64),
        any::<i64>().prop_map(Value::I64),
        any::<bool>().prop_map(Value::Bool),
        any_string::<MAX_TEXT_LEN>(0).prop_map(Value::Text),
        prop::collection::vec(any::<u8>(), 0..=MAX_BYTES_LEN)
            .prop_map(|b| Value::Bytes(heapless::Vec::from_slice(&b).unwrap())),
    ]
}

fn reading() -> impl Strategy<Value = Reading> {
    (any_string::<MAX_NAME_LEN>(1), value(), proptest::option::of(any_string::<MAX_UNIT_LEN>(0)))
        .prop_map(|(name, value, unit)| Reading { name, value, unit })
}

fn meta_entry() -> impl Strategy<Value = MetaEntry> {
    (any_string::<MAX_NAME_LEN>(1), any_string::<MAX_TEXT_LEN>(0)).prop_map(|(key, value)| MetaEntry { key, value })
}

/// Any event that passes `validate(None)`: names are made unique by dropping repeats.
pub fn valid_event() -> impl Strategy<Value = Event> {
    (
        id::<MAX_DEVICE_ID_LEN>(),
        any::<u32>(),
        any::<u32>(),
        proptest::option::of(any::<u64>()),
        id::<MAX_TYPE_LEN>(),
        prop::collection::vec(reading(), 0..=MAX_READINGS),
        prop::collection::vec(meta_entry(), 0..=MAX_META),
    )
        .prop_map(|(device, boot, seq, ts, kind, readings, meta)| {
            let mut event = Event {
                device,
                boot,
                seq,
                ts: ts.map_or(Timestamp::Unknown, Timestamp::Millis),
                kind,
                readings: heapless::Vec::new(),
                meta: heapless::Vec::new(),
            };
            for r in readings {
                if event.reading(&r.name).is_none() {
                    event.readings.push(r).unwrap();
                }
            }
            for m in meta {
                if event.meta_value(&m.key).is_none() {
                    event.meta.push(m).unwrap();
                }
            }
            event
        })
}
