//! The JSON form: what it accepts, what it refuses, and the messages it gives.
#![cfg(feature = "alloc")]
#![allow(clippy::unwrap_used)]

mod common;

use edge_event::{json, DecodeError, Event, Field, Timestamp, Value};

fn parse(json: &str) -> Result<Event, DecodeError> {
    json::from_slice(json.as_bytes())
}

fn error(json: &str) -> String {
    parse(json).unwrap_err().to_string()
}

const BASE: &str = r#""device":"d1","boot":1,"seq":42,"type":"temperature""#;

fn with_readings(readings: &str) -> String {
    format!(r#"{{{BASE},"readings":{readings}}}"#)
}

#[test]
fn the_design_doc_example_reads_back() {
    let event = parse(
        r#"{"device":"d1","boot":1,"seq":42,"ts":1764000000123,"type":"temperature","readings":{"celsius":21.5}}"#,
    )
    .unwrap();
    assert_eq!(event.device, "d1");
    assert_eq!((event.boot, event.seq), (1, 42));
    assert_eq!(event.ts, Timestamp::Millis(1_764_000_000_123));
    assert_eq!(event.kind, "temperature");
    assert_eq!(event.reading("celsius").unwrap().value, Value::F64(21.5));
    assert!(event.meta.is_empty());
}

#[test]
fn json_numbers_map_to_i64_or_f64_by_their_spelling() {
    let event = parse(&with_readings(r#"{"a":21,"b":-3,"c":21.0,"d":2e3,"e":true,"f":"3d"}"#)).unwrap();
    let values: Vec<_> = event.readings.iter().map(|r| r.value.clone()).collect();
    assert_eq!(
        values,
        [
            Value::I64(21),
            Value::I64(-3),
            Value::F64(21.0),
            Value::F64(2000.0),
            Value::Bool(true),
            Value::text("3d").unwrap()
        ]
    );
}

#[test]
fn units_and_hex_bytes_use_small_objects() {
    let event = parse(&with_readings(
        r#"{"t":{"value":21.5,"unit":"C"},"raw":{"hex":"0A0b"},"n":{"value":3},"r2":{"value":{"hex":"ff"},"unit":"x"},"u":{"value":1,"unit":null}}"#,
    ))
    .unwrap();
    let t = event.reading("t").unwrap();
    assert_eq!((t.value.clone(), t.unit.as_deref()), (Value::F64(21.5), Some("C")));
    assert_eq!(event.reading("raw").unwrap().value, Value::bytes(&[0x0A, 0x0B]).unwrap());
    assert_eq!(event.reading("n").unwrap().unit, None);
    let r2 = event.reading("r2").unwrap();
    assert_eq!((r2.value.clone(), r2.unit.as_deref()), (Value::bytes(&[0xFF]).unwrap(), Some("x")));
    assert_eq!(event.reading("u").unwrap().unit, None);
}

#[test]
fn ts_may_be_absent_or_null_and_v1_is_accepted() {
    assert_eq!(parse(&with_readings("{}")).unwrap().ts, Timestamp::Unknown);
    let json = format!(r#"{{"v":1,"ts":null,{BASE},"readings":{{}}}}"#);
    assert_eq!(parse(&json).unwrap().ts, Timestamp::Unknown);
}

#[test]
fn another_version_is_unsupported_version() {
    let json = format!(r#"{{"v":2,{BASE},"readings":{{}}}}"#);
    assert_eq!(parse(&json), Err(DecodeError::UnsupportedVersion(2)));
    assert!(error(&format!(r#"{{"v":300,{BASE},"readings":{{}}}}"#)).contains("format version 1 for \"v\""));
}

#[test]
fn unknown_keys_are_ignored_at_every_level() {
    let json = format!(
        r#"{{"extra":[1,{{"x":null}}],{BASE},"readings":{{"t":{{"value":1,"calibrated":true}}}},"meta":{{"fw":"1"}},"more":"x"}}"#
    );
    let event = parse(&json).unwrap();
    assert_eq!(event.reading("t").unwrap().value, Value::I64(1));
    assert_eq!(event.meta_value("fw"), Some("1"));
}

#[test]
fn keys_may_come_in_any_order_with_whitespace() {
    let json = "\n { \"readings\" : { } ,\t\"type\":\"t\", \"seq\":2,\"boot\":1,\"device\":\"d\" } \n";
    let event = parse(json).unwrap();
    assert_eq!((event.device.as_str(), event.seq), ("d", 2));
}

#[test]
fn a_known_key_of_the_wrong_type_is_named_in_the_error() {
    let json = r#"{"device":5,"boot":1,"seq":42,"type":"t","readings":{}}"#;
    assert_eq!(
        error(json),
        "invalid JSON event: invalid type: integer `5`, expected a string for \"device\" at line 1 column 11"
    );
    let json = r#"{"device":"d","boot":1.5,"seq":42,"type":"t","readings":{}}"#;
    assert!(error(json).contains("expected an unsigned 32-bit integer for \"boot\""));
    let json = r#"{"device":"d","boot":1,"seq":-1,"type":"t","readings":{}}"#;
    assert!(error(json).contains("expected an unsigned 32-bit integer for \"seq\""));
    let json = r#"{"device":"d","boot":1,"seq":4294967296,"type":"t","readings":{}}"#;
    assert!(error(json).contains("\"seq\""));
    let json = r#"{"device":"d","boot":1,"seq":1,"ts":"now","type":"t","readings":{}}"#;
    assert!(error(json).contains("for \"ts\""));
    let json = r#"{"device":"d","boot":1,"seq":1,"type":"t","readings":[]}"#;
    assert!(error(json).contains("for \"readings\""));
    assert!(error(&with_readings(r#"{"x":[1]}"#)).contains(r#"for reading "x""#));
    assert!(error(&format!(r#"{{{BASE},"readings":{{}},"meta":{{"fw":1}}}}"#)).contains(r#"for meta "fw""#));
}

#[test]
fn a_missing_or_duplicate_key_is_named_in_the_error() {
    assert!(error(r#"{"device":"d","boot":1,"type":"t","readings":{}}"#).contains(r#"missing key "seq""#));
    assert!(error(r#"{"device":"d","boot":1,"seq":1,"type":"t"}"#).contains(r#"missing key "readings""#));
    assert!(error(&format!(r#"{{{BASE},"seq":2,"readings":{{}}}}"#)).contains(r#"duplicate key "seq""#));
}

#[test]
fn a_null_reading_is_refused_with_a_clear_reason() {
    assert_eq!(
        error(&with_readings(r#"{"celsius":null}"#)),
        "invalid JSON event: reading \"celsius\" is null; readings must be finite numbers, bools, strings or \
         {\"hex\": ...} (NaN and infinity cannot be sent as JSON) at line 1 column 80"
    );
}

#[test]
fn a_non_finite_reading_is_written_as_null_and_refused_on_reading() {
    let mut event = common::door();
    event.readings[0].value = Value::F64(f64::NAN);
    let json = json::to_vec(&event);
    assert!(String::from_utf8_lossy(&json).contains(r#""open":null"#));
    assert!(json::from_slice(&json).is_err());
}

#[test]
fn over_long_strings_and_too_many_entries_are_errors_not_truncations() {
    let long = "x".repeat(33);
    let json = format!(r#"{{"device":"{long}","boot":1,"seq":1,"type":"t","readings":{{}}}}"#);
    assert_eq!(parse(&json), Err(DecodeError::TooLong { what: Field::DeviceId }));
    assert_eq!(parse(&json).unwrap_err().to_string(), "device id is too long: at most 32 bytes are allowed");
    let json = with_readings(&format!(r#"{{"t":"{long}"}}"#));
    assert_eq!(parse(&json), Err(DecodeError::TooLong { what: Field::Text }));
    let json = with_readings(&format!(r#"{{"{long}":1}}"#));
    assert_eq!(parse(&json), Err(DecodeError::TooLong { what: Field::ReadingName }));
    let json = with_readings(r#"{"t":{"value":1,"unit":"123456789"}}"#);
    assert_eq!(parse(&json), Err(DecodeError::TooLong { what: Field::Unit }));
    let json = with_readings(&format!(r#"{{"b":{{"hex":"{}"}}}}"#, "00".repeat(33)));
    assert_eq!(parse(&json), Err(DecodeError::TooLong { what: Field::Bytes }));
    let nine: Vec<String> = (0..9).map(|i| format!(r#""r{i}":{i}"#)).collect();
    let json = with_readings(&format!("{{{}}}", nine.join(",")));
    assert_eq!(parse(&json), Err(DecodeError::TooLong { what: Field::Readings }));
    let five: Vec<String> = (0..5).map(|i| format!(r#""m{i}":"v""#)).collect();
    let json = format!(r#"{{{BASE},"readings":{{}},"meta":{{{}}}}}"#, five.join(","));
    assert_eq!(parse(&json), Err(DecodeError::TooLong { what: Field::Meta }));
}

#[test]
fn bad_hex_and_ambiguous_reading_objects_are_refused() {
    for readings in [
        r#"{"b":{"hex":"abc"}}"#,
        r#"{"b":{"hex":"zz"}}"#,
        r#"{"b":{"hex":"00","value":1}}"#,
        r#"{"b":{"unit":"C"}}"#,
        r#"{"b":{"value":{"value":1}}}"#,
        r#"{"b":{"value":1,"value":2}}"#,
        r#"{"b":18446744073709551615}"#,
    ] {
        assert!(parse(&with_readings(readings)).is_err(), "{readings}");
    }
    assert!(
        error(&with_readings(r#"{"b":{"unit":"C"}}"#)).contains(r#"reading "b" is an object without "value" or "hex""#)
    );
}

#[test]
fn trailing_content_and_non_objects_are_refused() {
    assert!(parse(&format!("{} x", with_readings("{}"))).is_err());
    assert!(parse("[]").is_err());
    assert!(parse("").is_err());
    assert!(json::from_slice(b"{\"device\":\"\xff\"}").is_err());
}

#[test]
fn write_appends_to_what_is_already_in_the_buffer() {
    let mut out = b"{\"events\":[".to_vec();
    for (i, event) in common::examples().iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json::write(event, &mut out);
    }
    out.extend_from_slice(b"]}");
    let batch: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(batch["events"].as_array().unwrap().len(), 4);
    assert_eq!(batch["events"][0]["readings"]["co2_ppm"], 412);
}

#[test]
fn strings_with_quotes_controls_and_unicode_round_trip() {
    let mut event = common::door();
    event.push_meta("note\"\\", "a\nb\u{1}\u{7f}é€😀").unwrap();
    let back = json::from_slice(&json::to_vec(&event)).unwrap();
    assert_eq!(back, event);
}
