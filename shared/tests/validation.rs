//! One test per `ValidationError` variant, each checking the message the gateway stores as
//! the dead-letter reason.
#![allow(clippy::unwrap_used)]

mod common;

use edge_event::{
    validate_device_id, validate_event_type, Event, MetaEntry, Reading, Timestamp, ValidationError, Value,
    MAX_FUTURE_SKEW_MS,
};

fn message(event: &Event, now: Option<u64>) -> String {
    event.validate(now).unwrap_err().to_string()
}

#[test]
fn the_example_events_are_valid() {
    for event in common::examples() {
        assert_eq!(event.validate(Some(1_764_000_000_000)), Ok(()));
    }
    assert_eq!(common::maximal().validate(None), Ok(()));
}

#[test]
fn an_empty_device_id_is_rejected() {
    let mut event = common::door();
    event.device.clear();
    assert_eq!(event.validate(None), Err(ValidationError::EmptyDeviceId));
    assert_eq!(message(&event, None), "device id is empty");
}

#[test]
fn a_device_id_that_cannot_be_a_topic_level_is_rejected() {
    for bad in ["a/b", "a+b", "a#b", "a b", "a\tb", "é"] {
        let mut event = common::door();
        event.device = bad.try_into().unwrap();
        let found = bad.chars().find(|c| !c.is_ascii_alphanumeric()).unwrap();
        assert!(
            matches!(event.validate(None), Err(ValidationError::InvalidDeviceId { found: f, .. }) if f == found),
            "{bad:?}"
        );
    }
    let mut event = common::door();
    event.device = "door/1".try_into().unwrap();
    assert_eq!(
        message(&event, None),
        r#"device id "door/1" contains '/'; only ASCII letters, digits, '-', '_', '.' and ':' are allowed"#
    );
}

#[test]
fn a_device_id_over_the_limit_is_rejected_when_checked_as_a_str() {
    let err = validate_device_id(&"a".repeat(33)).unwrap_err();
    assert_eq!(err, ValidationError::DeviceIdTooLong { len: 33 });
    assert_eq!(err.to_string(), "device id is 33 bytes long; at most 32 are allowed");
    assert_eq!(validate_device_id("gw-01.site:7_a"), Ok(()));
}

#[test]
fn an_empty_type_is_rejected() {
    let mut event = common::door();
    event.kind.clear();
    assert_eq!(event.validate(None), Err(ValidationError::EmptyType));
    assert_eq!(message(&event, None), "event type is empty");
}

#[test]
fn a_type_that_cannot_be_a_topic_level_is_rejected() {
    let mut event = common::door();
    event.kind = "door#".try_into().unwrap();
    assert!(matches!(event.validate(None), Err(ValidationError::InvalidType { found: '#', .. })));
    assert_eq!(
        message(&event, None),
        r#"event type "door#" contains '#'; only ASCII letters, digits, '-', '_', '.' and ':' are allowed"#
    );
}

#[test]
fn a_type_over_the_limit_is_rejected_when_checked_as_a_str() {
    let err = validate_event_type(&"t".repeat(40)).unwrap_err();
    assert_eq!(err, ValidationError::TypeTooLong { len: 40 });
    assert_eq!(err.to_string(), "event type is 40 bytes long; at most 32 are allowed");
}

#[test]
fn a_nan_or_infinite_reading_is_rejected_with_its_name() {
    let mut event = common::environment();
    event.readings[0].value = Value::F32(f32::NAN);
    assert!(matches!(
        event.validate(None),
        Err(ValidationError::NonFinite { ref reading, .. }) if reading == "celsius"
    ));
    assert_eq!(message(&event, None), r#"reading "celsius" is NaN; readings must be finite numbers"#);
    event.readings[0].value = Value::F64(f64::NEG_INFINITY);
    assert_eq!(message(&event, None), r#"reading "celsius" is -infinity; readings must be finite numbers"#);
    event.readings[0].value = Value::F32(f32::INFINITY);
    assert_eq!(message(&event, None), r#"reading "celsius" is +infinity; readings must be finite numbers"#);
}

#[test]
fn two_readings_with_the_same_name_are_rejected() {
    let mut event = common::door();
    event.push_reading(Reading::new("open", Value::Bool(false)).unwrap()).unwrap();
    assert_eq!(event.validate(None), Err(ValidationError::DuplicateReading { name: "open".try_into().unwrap() }));
    assert_eq!(message(&event, None), r#"reading "open" appears more than once; reading names must be unique"#);
}

#[test]
fn a_reading_without_a_name_is_rejected() {
    let mut event = common::door();
    event.push_reading(Reading::new("", Value::I64(1)).unwrap()).unwrap();
    assert_eq!(event.validate(None), Err(ValidationError::EmptyReadingName));
    assert_eq!(message(&event, None), "a reading has an empty name");
}

#[test]
fn two_meta_entries_with_the_same_key_are_rejected() {
    let mut event = common::environment();
    event.push_meta("fw", "1.3.0").unwrap();
    assert_eq!(message(&event, None), r#"meta key "fw" appears more than once; meta keys must be unique"#);
}

#[test]
fn a_meta_entry_without_a_key_is_rejected() {
    let mut event = common::door();
    event.meta.push(MetaEntry::new("", "x").unwrap()).unwrap();
    assert_eq!(event.validate(None), Err(ValidationError::EmptyMetaKey));
    assert_eq!(message(&event, None), "a meta entry has an empty key");
}

#[test]
fn a_timestamp_more_than_a_day_ahead_of_the_gateway_clock_is_rejected() {
    let now = 1_764_000_000_000;
    let mut event = common::door();
    event.ts = Timestamp::Millis(now + MAX_FUTURE_SKEW_MS);
    assert_eq!(event.validate(Some(now)), Ok(()));
    event.ts = Timestamp::Millis(now + MAX_FUTURE_SKEW_MS + 1000);
    assert_eq!(
        event.validate(Some(now)),
        Err(ValidationError::TimestampInFuture { ts: now + MAX_FUTURE_SKEW_MS + 1000, now })
    );
    assert_eq!(
        message(&event, Some(now)),
        "timestamp 1764086401000 is 86401 s ahead of the gateway clock (1764000000000); at most 86400 s are allowed"
    );
}

#[test]
fn the_future_check_is_skipped_without_a_gateway_clock_or_an_event_timestamp() {
    let mut event = common::door();
    event.ts = Timestamp::Millis(u64::MAX);
    assert_eq!(event.validate(None), Ok(()));
    event.ts = Timestamp::Unknown;
    assert_eq!(event.validate(Some(0)), Ok(()));
}
