//! Property tests: every valid event round-trips through every codec, and no input makes a
//! decoder panic.
#![allow(clippy::unwrap_used)]

mod common;

use edge_event::{decode, decode_any, decode_cobs, encode, encode_cobs, Ack, MAX_COBS_FRAME_LEN, MAX_ENCODED_LEN};
use proptest::prelude::*;

/// What JSON makes of an event: `F32` is written as a shortest decimal, which reads back as
/// an `F64`. The decimal must denote the same `f32` (ties may print either neighbour, as
/// ryu and Rust's `Display` do differently), so map each such `F64` back when it does.
#[cfg(feature = "alloc")]
fn json_denormalised(original: &edge_event::Event, mut decoded: edge_event::Event) -> edge_event::Event {
    use edge_event::Value;
    for (back, sent) in decoded.readings.iter_mut().zip(&original.readings) {
        if let (Value::F64(d), Value::F32(v)) = (&back.value, &sent.value) {
            if (*d as f32).to_bits() == v.to_bits() {
                back.value = Value::F32(*v);
            }
        }
    }
    decoded
}

/// Valid encodings with a few bytes overwritten: reach deeper than random bytes do.
fn corrupted_encoding() -> impl Strategy<Value = Vec<u8>> {
    (common::valid_event(), prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)).prop_map(
        |(event, edits)| {
            let mut buf = [0u8; MAX_ENCODED_LEN];
            let len = encode(&event, &mut buf).unwrap();
            let mut bytes = buf[..len].to_vec();
            for (at, byte) in edits {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            bytes
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_valid_event_round_trips_through_postcard_exactly(event in common::valid_event()) {
        prop_assert_eq!(event.validate(None), Ok(()));
        let mut buf = [0u8; MAX_ENCODED_LEN];
        let len = encode(&event, &mut buf).unwrap();
        prop_assert_eq!(decode(&buf[..len]).unwrap(), event.clone());
        prop_assert_eq!(decode_any(&buf[..len]).unwrap(), (event, edge_event::Format::Postcard));
    }

    #[test]
    fn every_valid_event_without_a_clock_is_dated_by_any_age_sent_after_any_uptime(
        event in common::valid_event(),
        uptime in any::<u64>(),
        later in any::<u64>(),
        received in any::<u64>(),
    ) {
        let mut event = event;
        event.ts = edge_event::Timestamp::Unknown;
        let mut stored = [0u8; MAX_ENCODED_LEN];
        let len = edge_event::encode_dated(&event, edge_event::Dating::Uptime(uptime), &mut stored).unwrap();
        let now = uptime.saturating_add(later);
        let mut out = [0u8; MAX_ENCODED_LEN];
        let sent = edge_event::age_at_send(&stored[..len], now, &mut out).unwrap();
        let age = now - uptime;
        prop_assert_eq!(edge_event::decode_dated(sent).unwrap(), (event.clone(), Some(edge_event::Dating::Age(age))));
        let (dated, _) = edge_event::decode_any_received(sent, received).unwrap();
        let want = received.checked_sub(age).map_or(edge_event::Timestamp::Unknown, edge_event::Timestamp::Millis);
        prop_assert_eq!(dated.ts, want);
        prop_assert_eq!(edge_event::Event { ts: event.ts, ..dated }, event);
    }

    #[test]
    fn every_valid_event_round_trips_through_cobs_frames(event in common::valid_event()) {
        let mut buf = [0u8; MAX_COBS_FRAME_LEN];
        let len = encode_cobs(&event, &mut buf).unwrap();
        prop_assert_eq!(buf[len - 1], 0);
        prop_assert!(!buf[..len - 1].contains(&0));
        prop_assert_eq!(decode_cobs(&mut buf[..len]).unwrap(), event);
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn every_valid_event_round_trips_through_json_with_f32_as_its_decimal(event in common::valid_event()) {
        let json = edge_event::json::to_vec(&event);
        let back = edge_event::json::from_slice(&json).map(|back| json_denormalised(&event, back));
        prop_assert_eq!(back.as_ref(), Ok(&event), "{}", String::from_utf8_lossy(&json));
        // serde_json agrees it is one valid JSON object.
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        prop_assert!(value.is_object());
        prop_assert_eq!(decode_any(&json).unwrap().1, edge_event::Format::Json);
    }

    #[test]
    fn every_ack_round_trips_through_json(boot in any::<u32>(), seq in any::<u32>()) {
        let mut buf = [0u8; Ack::MAX_JSON_LEN];
        let len = Ack { boot, seq }.encode_json(&mut buf).unwrap();
        prop_assert_eq!(Ack::decode_json(&buf[..len]), Ok(Ack { boot, seq }));
    }

    #[test]
    fn random_bytes_never_make_a_decoder_panic(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        let _ = decode(&bytes);
        let _ = decode_any(&bytes);
        let _ = Ack::decode_json(&bytes);
        let _ = Ack::decode_json_timed(&bytes);
        let _ = decode_cobs(&mut bytes.clone());
        let _ = edge_event::decode_any_received(&bytes, 1_764_000_000_000);
        // A device only rewrites its own stored bytes, but a damaged ring must not panic
        // it either; version 2 first, so the dating path runs.
        let mut dated = bytes.clone();
        dated.insert(0, edge_event::DATED_FORMAT_VERSION);
        let mut out = [0u8; MAX_ENCODED_LEN];
        let _ = edge_event::age_at_send(&dated, u64::MAX, &mut out);
        let _ = edge_event::age_at_send(&dated, 0, &mut out[..3]);
        #[cfg(feature = "alloc")]
        let _ = edge_event::json::from_slice(&bytes);
    }

    #[test]
    fn corrupted_encodings_never_make_a_decoder_panic(bytes in corrupted_encoding()) {
        let _ = decode(&bytes);
        let _ = decode_cobs(&mut bytes.clone());
        if let Ok(event) = decode(&bytes) {
            // Whatever decodes fits the bound again and decodes again (not byte-equal:
            // postcard accepts over-long varints, which re-encode shorter).
            let mut buf = [0u8; MAX_ENCODED_LEN];
            let len = encode(&event, &mut buf).unwrap();
            prop_assert!(decode(&buf[..len]).is_ok());
        }
    }

    #[test]
    fn json_like_text_never_makes_a_decoder_panic(text in r#"[{}\[\]":,0-9a-z .eE+\\-]{0,200}"#) {
        let _ = decode_any(text.as_bytes());
        let _ = edge_event::decode_any_received(text.as_bytes(), 0);
        let _ = Ack::decode_json(text.as_bytes());
        let _ = Ack::decode_json_timed(text.as_bytes());
        #[cfg(feature = "alloc")]
        let _ = edge_event::json::from_slice(text.as_bytes());
    }
}

/// The case proptest found: -461833.625 is a tie between two shortest decimals.
#[cfg(feature = "alloc")]
#[test]
fn an_f32_on_a_decimal_tie_reads_back_as_the_same_f32() {
    use edge_event::{Event, Reading, Timestamp, Value};
    let mut event = Event::new("A", 0, 0, Timestamp::Unknown, "-").unwrap();
    event.push_reading(Reading::new("a", Value::F32(-461_833.63)).unwrap()).unwrap();
    let json = edge_event::json::to_vec(&event);
    let back = edge_event::json::from_slice(&json).unwrap();
    assert_eq!(json_denormalised(&event, back), event, "{}", String::from_utf8_lossy(&json));
}
