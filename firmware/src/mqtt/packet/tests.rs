//! Exact bytes of every packet the client writes and reads (checked against the MQTT
//! 3.1.1 spec by hand), and properties: random bytes never panic the decoder, a publish
//! round-trips, and a cut-short packet asks for more bytes.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::*;

fn encoded(f: impl FnOnce(&mut [u8]) -> Result<usize, Error>) -> Vec<u8> {
    let mut buf = [0u8; 1024];
    let len = f(&mut buf).unwrap();
    buf[..len].to_vec()
}

fn decoded(bytes: &[u8]) -> Packet<'_> {
    let (packet, used) = decode(bytes).unwrap().expect("a complete packet");
    assert_eq!(used, bytes.len());
    packet
}

#[test]
fn connect_with_clean_session_and_keep_alive() {
    let connect = Connect { client_id: "d1", keep_alive_secs: 30, clean_session: true, username: None, password: None };
    assert_eq!(
        encoded(|b| encode_connect(&connect, b)),
        [0x10, 0x0e, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30, 0, 2, b'd', b'1']
    );
}

#[test]
fn connect_with_user_name_and_password() {
    let connect = Connect {
        client_id: "d1",
        keep_alive_secs: 0,
        clean_session: false,
        username: Some("u"),
        password: Some(b"p"),
    };
    assert_eq!(
        encoded(|b| encode_connect(&connect, b)),
        [0x10, 0x14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0xc0, 0, 0, 0, 2, b'd', b'1', 0, 1, b'u', 0, 1, b'p']
    );
    let password_only = Connect { username: None, ..connect };
    assert!(matches!(encode_connect(&password_only, &mut [0; 64]), Err(Error::Protocol { .. })));
}

#[test]
fn publish_qos1_and_retained_qos0() {
    let qos1 =
        Publish { topic: "a/b", pkid: Some(10), qos: QoS::AtLeastOnce, retain: false, dup: false, payload: b"hi" };
    assert_eq!(encoded(|b| encode_publish(&qos1, b)), [0x32, 9, 0, 3, b'a', b'/', b'b', 0, 10, b'h', b'i']);
    let qos0 = Publish { topic: "t", pkid: None, qos: QoS::AtMostOnce, retain: true, dup: false, payload: &[1] };
    assert_eq!(encoded(|b| encode_publish(&qos0, b)), [0x31, 4, 0, 1, b't', 1]);
    let dup = Publish { dup: true, ..qos1 };
    assert_eq!(encoded(|b| encode_publish(&dup, b))[0], 0x3a);
}

#[test]
fn publish_refuses_a_packet_id_that_does_not_match_the_qos() {
    let bad = Publish { topic: "t", pkid: None, qos: QoS::AtLeastOnce, retain: false, dup: false, payload: &[] };
    assert!(encode_publish(&bad, &mut [0; 16]).is_err());
    assert!(encode_publish(&Publish { pkid: Some(0), ..bad }, &mut [0; 16]).is_err());
    let qos0 = Publish { qos: QoS::AtMostOnce, pkid: Some(1), ..bad };
    assert!(encode_publish(&qos0, &mut [0; 16]).is_err());
}

#[test]
fn remaining_lengths_use_as_many_bytes_as_the_spec_says() {
    for (payload_len, header) in [(124, &[0x30, 0x7f][..]), (125, &[0x30, 0x80, 0x01]), (200, &[0x30, 0xcb, 0x01])] {
        let payload = vec![7u8; payload_len];
        let publish =
            Publish { topic: "t", pkid: None, qos: QoS::AtMostOnce, retain: false, dup: false, payload: &payload };
        let bytes = encoded(|b| encode_publish(&publish, b));
        assert_eq!(&bytes[..header.len()], header, "payload of {payload_len}");
        assert_eq!(frame_len(&bytes).unwrap(), Some(bytes.len()));
    }
    assert_eq!(frame_len(&[0x30, 0xff, 0x7f]).unwrap(), Some(3 + 16_383));
    assert_eq!(frame_len(&[0x30, 0x80, 0x80, 0x01]).unwrap(), Some(4 + 16_384));
    assert_eq!(frame_len(&[0x30, 0xff, 0xff, 0xff, 0x7f]).unwrap(), Some(5 + MAX_REMAINING_LEN));
    assert!(frame_len(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
    assert_eq!(frame_len(&[0x30, 0xff]).unwrap(), None);
}

#[test]
fn puback_subscribe_pingreq_and_disconnect() {
    assert_eq!(encoded(|b| encode_puback(7, b)), [0x40, 2, 0, 7]);
    let filters = [("devices/d1/ack", QoS::AtLeastOnce), ("devices/d1/commands", QoS::AtLeastOnce)];
    let mut want = vec![0x82, 41, 0, 1, 0, 14];
    want.extend_from_slice(b"devices/d1/ack");
    want.extend_from_slice(&[1, 0, 19]);
    want.extend_from_slice(b"devices/d1/commands");
    want.push(1);
    assert_eq!(encoded(|b| encode_subscribe(1, &filters, b)), want);
    assert_eq!(encoded(encode_pingreq), [0xc0, 0]);
    assert_eq!(encoded(encode_disconnect), [0xe0, 0]);
}

#[test]
fn encoders_report_a_short_buffer_instead_of_overrunning_it() {
    assert_eq!(encode_puback(7, &mut [0; 3]), Err(Error::BufferTooSmall { needed: 4, available: 3 }));
    assert!(matches!(encode_pingreq(&mut [0; 1]), Err(Error::BufferTooSmall { .. })));
}

#[test]
fn decodes_what_a_broker_sends() {
    assert_eq!(decoded(&[0x20, 2, 0, 0]), Packet::ConnAck { session_present: false, code: 0 });
    assert_eq!(decoded(&[0x20, 2, 1, 5]), Packet::ConnAck { session_present: true, code: 5 });
    assert_eq!(decoded(&[0x40, 2, 0x12, 0x34]), Packet::PubAck { pkid: 0x1234 });
    assert_eq!(decoded(&[0x90, 4, 0, 1, 1, 0x80]), Packet::SubAck { pkid: 1, codes: &[1, 0x80] });
    assert_eq!(decoded(&[0xb0, 2, 0, 5]), Packet::UnsubAck { pkid: 5 });
    assert_eq!(decoded(&[0xd0, 0]), Packet::PingResp);
    let ack = b"{\"boot\":1,\"seq\":2}";
    let mut retained = vec![0x33, (2 + 3 + 2 + ack.len()) as u8, 0, 3, b'a', b'/', b'k', 0, 9];
    retained.extend_from_slice(ack);
    assert_eq!(
        decoded(&retained),
        Packet::Publish(Publish {
            topic: "a/k",
            pkid: Some(9),
            qos: QoS::AtLeastOnce,
            retain: true,
            dup: false,
            payload: ack,
        })
    );
}

#[test]
fn decoding_stops_at_the_end_of_the_first_packet() {
    let (packet, used) = decode(&[0xd0, 0, 0x40, 2, 0, 1]).unwrap().unwrap();
    assert_eq!((packet, used), (Packet::PingResp, 2));
}

#[test]
fn rejects_malformed_packets_with_a_reason() {
    for bad in [
        &[0x41, 2, 0, 7][..],            // reserved flags
        &[0x40, 2, 0, 0],                // packet id 0
        &[0x40, 3, 0, 7, 0],             // bytes left over
        &[0x40, 1, 0],                   // field past the end
        &[0x34, 5, 0, 1, b't', 0, 1],    // QoS 2
        &[0x36, 5, 0, 1, b't', 0, 1],    // QoS 3
        &[0x38, 3, 0, 1, b't'],          // DUP on QoS 0
        &[0x30, 3, 0, 1, b'#'],          // wildcard topic
        &[0x30, 4, 0, 2, 0xff, 0xfe],    // topic not UTF-8
        &[0x10, 0],                      // CONNECT, a client never receives
        &[0x20, 2, 2, 0],                // CONNACK with unknown flags
        &[0x90, 3, 0, 1, 3],             // SUBACK code 3
        &[0x90, 2, 0, 1],                // SUBACK without codes
        &[0x00, 0],                      // reserved type 0
        &[0xd0, 0xff, 0xff, 0xff, 0xff], // five length bytes
    ] {
        assert!(matches!(decode(bad), Err(Error::Protocol { .. })), "{bad:02x?} gave {:?}", decode(bad));
    }
}

#[test]
fn a_partial_packet_asks_for_more_bytes() {
    assert_eq!(decode(&[]).unwrap(), None);
    assert_eq!(decode(&[0x40]).unwrap(), None);
    assert_eq!(decode(&[0x40, 2, 0]).unwrap(), None);
}

proptest! {
    #[test]
    fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(Some((_, used))) = decode(&bytes) {
            prop_assert!(used <= bytes.len());
        }
        let _ = frame_len(&bytes);
    }

    #[test]
    fn random_bodies_behind_a_valid_header_never_panic_the_decoder(
        kind in 0u8..16, flags in 0u8..16, body in proptest::collection::vec(any::<u8>(), 0..120),
    ) {
        let mut bytes = vec![(kind << 4) | flags, body.len() as u8];
        bytes.extend_from_slice(&body);
        if let Ok(Some((_, used))) = decode(&bytes) {
            prop_assert_eq!(used, bytes.len());
        }
    }

    #[test]
    fn a_publish_round_trips_and_its_prefixes_ask_for_more(
        topic in "[a-z0-9/_-]{1,40}",
        payload in proptest::collection::vec(any::<u8>(), 0..400),
        qos1 in any::<bool>(), retain in any::<bool>(), pkid in 1u16..,
    ) {
        let publish = Publish {
            topic: &topic,
            pkid: qos1.then_some(pkid),
            qos: if qos1 { QoS::AtLeastOnce } else { QoS::AtMostOnce },
            retain,
            dup: false,
            payload: &payload,
        };
        let bytes = encoded(|b| encode_publish(&publish, b));
        prop_assert_eq!(decode(&bytes).unwrap(), Some((Packet::Publish(publish), bytes.len())));
        for cut in 0..bytes.len() {
            prop_assert_eq!(decode(&bytes[..cut]).unwrap(), None);
        }
    }
}
