//! Pinned bytes: an accidental change to the wire format (a reordered field, a new variant
//! in the middle, a different integer encoding) fails here. The bytes of a released version
//! never change (old devices keep sending them): a new version gets new pins next to them
//! (the version bump rule is in the crate docs, "Wire format").
#![allow(clippy::unwrap_used)]

mod common;

use edge_event::{
    age_at_send, decode, decode_any_received, decode_cobs, decode_dated, encode, encode_cobs, encode_dated, Ack,
    Dating, Envelope, Event, Format, Timestamp, Value, DATED_FORMAT_VERSION, FORMAT_VERSION, MAX_COBS_FRAME_LEN,
    MAX_ENCODED_LEN,
};

fn postcard_bytes<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut buf = [0u8; MAX_ENCODED_LEN];
    postcard::to_slice(value, &mut buf).unwrap().to_vec()
}

fn encoded(event: &Event) -> Vec<u8> {
    let mut buf = [0u8; MAX_ENCODED_LEN];
    let len = encode(event, &mut buf).unwrap();
    buf[..len].to_vec()
}

#[test]
fn each_value_variant_encodes_to_its_pinned_bytes() {
    // Variant index (varint), then the payload.
    assert_eq!(postcard_bytes(&Value::F32(21.5)), [0x00, 0x00, 0x00, 0xAC, 0x41]);
    assert_eq!(postcard_bytes(&Value::F64(-1.5)), [0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xF8, 0xBF]);
    // Zigzag varints: -2 -> 3, 300 -> 600.
    assert_eq!(postcard_bytes(&Value::I64(-2)), [0x02, 0x03]);
    assert_eq!(postcard_bytes(&Value::I64(300)), [0x02, 0xD8, 0x04]);
    assert_eq!(postcard_bytes(&Value::Bool(true)), [0x03, 0x01]);
    assert_eq!(postcard_bytes(&Value::text("ok").unwrap()), [0x04, 0x02, b'o', b'k']);
    assert_eq!(postcard_bytes(&Value::bytes(&[0x0A, 0x0B]).unwrap()), [0x05, 0x02, 0x0A, 0x0B]);
}

#[test]
fn each_timestamp_variant_encodes_to_its_pinned_bytes() {
    assert_eq!(postcard_bytes(&Timestamp::Unknown), [0x00]);
    assert_eq!(postcard_bytes(&Timestamp::Millis(1_764_000_000_123)), [0x01, 0xFB, 0xD0, 0xDF, 0xB4, 0xAB, 0x33]);
}

#[rustfmt::skip]
const ENVIRONMENT: [u8; 103] = [
    0x01,                                                       // format version
    0x05, b'e', b'n', b'v', b'-', b'7',                         // device
    0x03,                                                       // boot
    0x2A,                                                       // seq 42
    0x01, 0xFB, 0xD0, 0xDF, 0xB4, 0xAB, 0x33,                   // ts Millis(1764000000123)
    0x0B, b'e', b'n', b'v', b'i', b'r', b'o', b'n', b'm', b'e', b'n', b't', // type
    0x04,                                                       // 4 readings
    0x07, b'c', b'e', b'l', b's', b'i', b'u', b's',
        0x00, 0x00, 0x00, 0xAC, 0x41,                           // F32(21.5)
        0x01, 0x01, b'C',                                       // Some("C")
    0x08, b'h', b'u', b'm', b'i', b'd', b'i', b't', b'y',
        0x00, 0x00, 0x00, 0x41, 0x42,                           // F32(48.25)
        0x01, 0x01, b'%',
    0x0C, b'p', b'r', b'e', b's', b's', b'u', b'r', b'e', b'_', b'h', b'p', b'a',
        0x00, 0x00, 0x50, 0x7D, 0x44,                           // F32(1013.25)
        0x00,                                                   // no unit
    0x07, b'c', b'o', b'2', b'_', b'p', b'p', b'm',
        0x02, 0xB8, 0x06,                                       // I64(412)
        0x00,
    0x01,                                                       // 1 meta entry
    0x02, b'f', b'w', 0x05, b'1', b'.', b'2', b'.', b'0',
];

#[test]
fn an_envelope_with_units_and_meta_encodes_to_its_pinned_bytes() {
    let event = common::environment();
    assert_eq!(encoded(&event), ENVIRONMENT);
    assert_eq!(decode(&ENVIRONMENT).unwrap(), event);
}

#[test]
fn encode_writes_exactly_the_envelope_type() {
    for event in common::examples() {
        let envelope = Envelope { version: FORMAT_VERSION, event: event.clone() };
        assert_eq!(encoded(&event), postcard_bytes(&envelope));
    }
}

#[test]
fn the_counter_door_and_gps_examples_encode_to_their_pinned_bytes() {
    assert_eq!(
        encoded(&common::counter()),
        [
            0x01, 0x09, b'c', b'o', b'u', b'n', b't', b'e', b'r', b'-', b'1', 0x01, 0x07, 0x00, 0x07, b'c', b'o', b'u',
            b'n', b't', b'e', b'r', 0x01, 0x05, b'c', b'o', b'u', b'n', b't', 0x02, 0x80, 0x89, 0x0F, 0x00, 0x00,
        ]
    );
    assert_eq!(
        encoded(&common::door()),
        [
            0x01, 0x06, b'd', b'o', b'o', b'r', b'-', b'1', 0x02, 0x01, 0x01, 0x80, 0xD0, 0xDF, 0xB4, 0xAB, 0x33, 0x04,
            b'd', b'o', b'o', b'r', 0x01, 0x04, b'o', b'p', b'e', b'n', 0x03, 0x01, 0x00, 0x00,
        ]
    );
    assert_eq!(
        encoded(&common::gps()),
        [
            0x01, 0x05, b'g', b'p', b's', b'-', b'3', 0x09, 0xE8, 0x07, 0x01, 0xF4, 0xD3, 0xDF, 0xB4, 0xAB, 0x33, 0x03,
            b'g', b'p', b's', 0x04, 0x03, b'l', b'a', b't', 0x01, 0x45, 0xD4, 0x44, 0x9F, 0x8F, 0x42, 0x4A, 0x40, 0x00,
            0x03, b'l', b'o', b'n', 0x01, 0xCE, 0xC4, 0x74, 0x21, 0x56, 0xCF, 0x2A, 0x40, 0x00, 0x05, b'a', b'l', b't',
            b'_', b'm', 0x00, 0x00, 0x00, 0x0A, 0x42, 0x01, 0x01, b'm', 0x03, b'f', b'i', b'x', 0x04, 0x02, b'3', b'd',
            0x00, 0x00,
        ]
    );
}

#[test]
fn a_cobs_frame_is_pinned_and_ends_with_its_zero_terminator() {
    let mut buf = [0u8; MAX_COBS_FRAME_LEN];
    let len = encode_cobs(&common::door(), &mut buf).unwrap();
    let frame = [
        0x1F, 0x01, 0x06, b'd', b'o', b'o', b'r', b'-', b'1', 0x02, 0x01, 0x01, 0x80, 0xD0, 0xDF, 0xB4, 0xAB, 0x33,
        0x04, b'd', b'o', b'o', b'r', 0x01, 0x04, b'o', b'p', b'e', b'n', 0x03, 0x01, 0x01, 0x01, 0x00,
    ];
    assert_eq!(buf[..len], frame);
    assert_eq!(decode_cobs(&mut buf[..len]).unwrap(), common::door());
}

#[test]
fn the_ack_json_is_pinned() {
    let mut buf = [0u8; Ack::MAX_JSON_LEN];
    let len = Ack { boot: 7, seq: 42 }.encode_json(&mut buf).unwrap();
    assert_eq!(&buf[..len], br#"{"boot":7,"seq":42}"#);
}

#[test]
fn the_ack_json_with_the_gateway_time_is_pinned_and_old_readers_skip_the_time() {
    let mut buf = [0u8; Ack::MAX_TIMED_JSON_LEN];
    let len = Ack { boot: 7, seq: 42 }.encode_json_at(1_764_000_000_123, &mut buf).unwrap();
    assert_eq!(&buf[..len], br#"{"boot":7,"seq":42,"time_ms":1764000000123}"#);
    assert_eq!(Ack::decode_json(&buf[..len]).unwrap(), Ack { boot: 7, seq: 42 });
}

#[cfg(feature = "alloc")]
#[test]
fn the_design_doc_json_example_is_written_byte_for_byte() {
    let mut event = Event::new("d1", 1, 42, Timestamp::Millis(1_764_000_000_123), "temperature").unwrap();
    event.push_reading(edge_event::Reading::new("celsius", Value::F32(21.5)).unwrap()).unwrap();
    let json =
        br#"{"device":"d1","boot":1,"seq":42,"ts":1764000000123,"type":"temperature","readings":{"celsius":21.5}}"#;
    assert_eq!(edge_event::json::to_vec(&event), json);
}

#[cfg(feature = "alloc")]
#[test]
fn every_json_value_form_is_pinned() {
    let expected = concat!(
        r#"{"device":"gps-3","boot":9,"seq":1000,"ts":1764000000500,"type":"gps","readings":"#,
        r#"{"lat":52.520008,"lon":13.404954,"alt_m":{"value":34.5,"unit":"m"},"fix":"3d"}}"#
    );
    assert_eq!(String::from_utf8(edge_event::json::to_vec(&common::gps())).unwrap(), expected);
    let expected = concat!(
        r#"{"device":"env-7","boot":3,"seq":42,"ts":1764000000123,"type":"environment","readings":"#,
        r#"{"celsius":{"value":21.5,"unit":"C"},"humidity":{"value":48.25,"unit":"%"},"#,
        r#""pressure_hpa":1013.25,"co2_ppm":412},"meta":{"fw":"1.2.0"}}"#
    );
    assert_eq!(String::from_utf8(edge_event::json::to_vec(&common::environment())).unwrap(), expected);
    let mut event = common::counter();
    event.push_reading(edge_event::Reading::new("raw", Value::bytes(&[0x0A, 0xFF]).unwrap()).unwrap()).unwrap();
    event.push_reading(edge_event::Reading::new("ok", Value::Bool(false)).unwrap()).unwrap();
    event.push_reading(edge_event::Reading::new("avg", Value::F64(2.0)).unwrap()).unwrap();
    let expected = concat!(
        r#"{"device":"counter-1","boot":1,"seq":7,"ts":null,"type":"counter","readings":"#,
        r#"{"count":123456,"raw":{"hex":"0aff"},"ok":false,"avg":2.0}}"#
    );
    assert_eq!(String::from_utf8(edge_event::json::to_vec(&event)).unwrap(), expected);
}

#[test]
fn each_dating_variant_encodes_to_its_pinned_bytes() {
    assert_eq!(postcard_bytes(&Dating::Age(60_000)), [0x00, 0xE0, 0xD4, 0x03]);
    assert_eq!(postcard_bytes(&Dating::Uptime(5_000)), [0x01, 0x88, 0x27]);
}

/// Version 1 bytes as firmware before format version 2 sent them (the counter example,
/// `ts` unknown): they must decode for ever, with no dating.
#[rustfmt::skip]
const COUNTER_V1: [u8; 35] = [
    0x01,                                                       // format version 1
    0x09, b'c', b'o', b'u', b'n', b't', b'e', b'r', b'-', b'1', // device
    0x01, 0x07,                                                 // boot 1, seq 7
    0x00,                                                       // ts Unknown
    0x07, b'c', b'o', b'u', b'n', b't', b'e', b'r',             // type
    0x01, 0x05, b'c', b'o', b'u', b'n', b't', 0x02, 0x80, 0x89, 0x0F, // count = I64(123456)
    0x00,                                                       // no unit
    0x00,                                                       // no meta
];

/// The same event in version 2, as a device without a wall clock sends it: the readings
/// were taken one minute before the send.
#[rustfmt::skip]
const COUNTER_V2_AGE: [u8; 39] = [
    0x02,                                                       // format version 2
    0x09, b'c', b'o', b'u', b'n', b't', b'e', b'r', b'-', b'1',
    0x01, 0x07,
    0x00,                                                       // ts Unknown
    0x07, b'c', b'o', b'u', b'n', b't', b'e', b'r',
    0x01, 0x05, b'c', b'o', b'u', b'n', b't', 0x02, 0x80, 0x89, 0x0F,
    0x00,
    0x00,
    0x00, 0xE0, 0xD4, 0x03,                                     // Dating::Age(60000)
];

#[test]
fn version_1_bytes_of_old_firmware_still_decode_and_are_still_written() {
    assert_eq!(decode(&COUNTER_V1).unwrap(), common::counter());
    assert_eq!(decode_dated(&COUNTER_V1).unwrap(), (common::counter(), None));
    assert_eq!(encoded(&common::counter()), COUNTER_V1, "encode still writes version 1");
    let (event, format) = decode_any_received(&COUNTER_V1, 1_764_000_060_000).unwrap();
    assert_eq!((event.ts, format), (Timestamp::Unknown, Format::Postcard), "no age, no ts");
}

#[test]
fn a_version_2_envelope_with_an_age_is_pinned_and_dated_at_receive() {
    assert_eq!(COUNTER_V2_AGE[0], DATED_FORMAT_VERSION);
    let mut buf = [0u8; MAX_ENCODED_LEN];
    let len = encode_dated(&common::counter(), Dating::Age(60_000), &mut buf).unwrap();
    assert_eq!(buf[..len], COUNTER_V2_AGE);
    assert_eq!(decode_dated(&COUNTER_V2_AGE).unwrap(), (common::counter(), Some(Dating::Age(60_000))));
    assert_eq!(decode(&COUNTER_V2_AGE).unwrap(), common::counter(), "decode drops the dating");
    let (event, _) = decode_any_received(&COUNTER_V2_AGE, 1_764_000_060_000).unwrap();
    assert_eq!(event.ts, Timestamp::Millis(1_764_000_000_000));
}

#[test]
fn a_stored_uptime_becomes_the_pinned_age_at_send() {
    let mut stored = [0u8; MAX_ENCODED_LEN];
    let len = encode_dated(&common::counter(), Dating::Uptime(5_000), &mut stored).unwrap();
    assert_eq!(stored[len - 3..len], [0x01, 0x88, 0x27], "the stored form ends with Uptime(5000)");
    let mut out = [0u8; MAX_ENCODED_LEN];
    assert_eq!(age_at_send(&stored[..len], 65_000, &mut out).unwrap(), COUNTER_V2_AGE);
}

#[cfg(feature = "alloc")]
#[test]
fn a_json_age_dates_the_event_at_receive_and_plain_json_reading_ignores_it() {
    let json =
        br#"{"device":"counter-1","boot":1,"seq":7,"age_ms":60000,"type":"counter","readings":{"count":123456}}"#;
    assert_eq!(edge_event::json::from_slice(json).unwrap(), common::counter());
    let (event, format) = decode_any_received(json, 1_764_000_060_000).unwrap();
    assert_eq!((event.ts, format), (Timestamp::Millis(1_764_000_000_000), Format::Json));
}
