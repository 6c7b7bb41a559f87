//! The postcard codec's edges: bounds, versions, truncation, trailing bytes, format
//! detection, and the error messages the gateway stores.
#![allow(clippy::unwrap_used)]

mod common;

use edge_event::{
    decode, decode_any, decode_cobs, decode_dated, encode, encode_cobs, encode_dated, Dating, DecodeError, EncodeError,
    Field, Format, Timestamp, TooLong, Value, MAX_COBS_FRAME_LEN, MAX_ENCODED_LEN,
};

fn encoded(event: &edge_event::Event) -> Vec<u8> {
    let mut buf = [0u8; MAX_ENCODED_LEN];
    let len = encode(event, &mut buf).unwrap();
    buf[..len].to_vec()
}

#[test]
fn a_maximal_event_encodes_within_max_encoded_len_exactly() {
    let event = common::maximal();
    let mut buf = [0u8; MAX_ENCODED_LEN];
    let len = encode(&event, &mut buf).unwrap();
    assert_eq!(len, MAX_ENCODED_LEN - 1, "version 1 is one byte below the bound");
    assert_eq!(decode(&buf[..len]).unwrap(), event);
    // The bound is reached by a version-2 envelope: no wall clock, the largest age.
    let mut event = common::maximal();
    event.ts = Timestamp::Unknown;
    let len = encode_dated(&event, Dating::Age(u64::MAX), &mut buf).unwrap();
    assert_eq!(len, MAX_ENCODED_LEN, "the bound should be tight");
    assert_eq!(decode_dated(&buf[..len]).unwrap(), (event, Some(Dating::Age(u64::MAX))));
}

#[test]
fn a_maximal_event_frames_within_max_cobs_frame_len() {
    let event = common::maximal();
    let mut buf = [0u8; MAX_COBS_FRAME_LEN];
    let len = encode_cobs(&event, &mut buf).unwrap();
    assert!(len <= MAX_COBS_FRAME_LEN);
    assert_eq!(decode_cobs(&mut buf[..len]).unwrap(), event);
}

#[test]
fn a_buffer_too_small_is_reported_with_its_size() {
    let mut buf = [0u8; 10];
    let err = encode(&common::environment(), &mut buf).unwrap_err();
    assert_eq!(err, EncodeError::BufferTooSmall { len: 10 });
    assert_eq!(err.to_string(), "output buffer of 10 bytes is too small for the encoded message");
    assert_eq!(encode_cobs(&common::environment(), &mut buf), Err(EncodeError::BufferTooSmall { len: 10 }));
}

#[test]
fn an_unknown_version_byte_is_unsupported_version() {
    let mut bytes = encoded(&common::door());
    bytes[0] = 3;
    let err = decode(&bytes).unwrap_err();
    assert_eq!(err, DecodeError::UnsupportedVersion(3));
    assert_eq!(
        err.to_string(),
        "unsupported format version 3 (this build reads versions 1 and 2); the payload may not be an edge-event at all"
    );
}

#[test]
fn every_truncation_of_a_valid_envelope_is_an_error() {
    for event in common::examples() {
        let bytes = encoded(&event);
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "{} bytes of {}", len, bytes.len());
        }
    }
    assert_eq!(decode(&[]), Err(DecodeError::Truncated));
    assert_eq!(decode(&[0x01, 0x05, b'a']), Err(DecodeError::Truncated));
    assert_eq!(DecodeError::Truncated.to_string(), "payload ends before the event is complete");
}

#[test]
fn bytes_after_the_event_are_rejected() {
    let mut bytes = encoded(&common::door());
    bytes.extend_from_slice(&[0, 0]);
    let err = decode(&bytes).unwrap_err();
    assert_eq!(err, DecodeError::TrailingBytes { count: 2 });
    assert_eq!(err.to_string(), "2 unexpected bytes after the end of the event");
}

#[test]
fn a_string_longer_than_its_bound_is_malformed_not_truncated() {
    // version, then a 33-byte device id.
    let mut bytes = vec![0x01, 33];
    bytes.extend_from_slice(&[b'a'; 33]);
    bytes.extend_from_slice(&[0x00; 8]);
    let err = decode(&bytes).unwrap_err();
    assert!(matches!(err, DecodeError::Malformed { .. }), "{err:?}");
    assert_eq!(err.to_string(), "malformed payload: a string or list is longer than the format allows");
}

#[test]
fn an_unknown_value_variant_is_malformed() {
    let mut bytes = encoded(&common::door());
    // door: ... 0x04 "open", then the variant index of Value::Bool (3).
    let variant = bytes.windows(4).position(|w| w == b"open").unwrap() + 4;
    assert_eq!(bytes[variant], 0x03);
    bytes[variant] = 0x06;
    assert!(matches!(decode(&bytes), Err(DecodeError::Malformed { .. })));
}

#[test]
fn decode_any_tells_postcard_from_json_by_the_first_byte() {
    let bytes = encoded(&common::door());
    assert_eq!(decode_any(&bytes).unwrap(), (common::door(), Format::Postcard));
    let json = b"  \n{\"device\":\"d1\",\"boot\":1,\"seq\":2,\"type\":\"t\",\"readings\":{}}";
    #[cfg(feature = "alloc")]
    assert_eq!(decode_any(json).unwrap().1, Format::Json);
    #[cfg(not(feature = "alloc"))]
    assert_eq!(decode_any(json), Err(DecodeError::UnsupportedFormat));
    assert_eq!(decode_any(b""), Err(DecodeError::Truncated));
    assert_eq!(decode_any(b"hello"), Err(DecodeError::UnsupportedVersion(b'h')));
}

#[test]
fn decode_cobs_accepts_a_frame_with_or_without_its_terminator() {
    let mut buf = [0u8; MAX_COBS_FRAME_LEN];
    let len = encode_cobs(&common::gps(), &mut buf).unwrap();
    assert_eq!(buf[len - 1], 0);
    assert!(!buf[..len - 1].contains(&0));
    let mut without = buf[..len - 1].to_vec();
    assert_eq!(decode_cobs(&mut buf[..len]).unwrap(), common::gps());
    assert_eq!(decode_cobs(&mut without).unwrap(), common::gps());
    assert!(matches!(decode_cobs(&mut [0x05, 0x01, 0x00, 0x01, 0x01]), Err(DecodeError::Malformed { .. })));
}

#[test]
fn constructors_refuse_over_long_input_instead_of_truncating() {
    let err = Value::text(&"x".repeat(33)).unwrap_err();
    assert_eq!(err, TooLong { field: Field::Text });
    assert_eq!(err.to_string(), "text value is too long: at most 32 bytes are allowed");
    let mut event = common::maximal();
    let err = event.push_meta("k", "v").unwrap_err();
    assert_eq!(err.to_string(), "too many meta entries: at most 4 are allowed");
    assert!(edge_event::Reading::new("c", Value::I64(1)).unwrap().with_unit("123456789").is_err());
    assert!(edge_event::Event::new(&"d".repeat(33), 0, 0, edge_event::Timestamp::Unknown, "t").is_err());
}

#[cfg(feature = "alloc")]
#[test]
fn encode_to_vec_matches_encode() {
    for event in common::examples() {
        assert_eq!(edge_event::encode_to_vec(&event).unwrap(), encoded(&event));
    }
}
