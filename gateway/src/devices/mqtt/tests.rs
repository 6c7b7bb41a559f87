//! The gate's MQTT parser: fields, rewrites, violations, and no panic on any input.

use super::*;

/// CONNECT 3.1.1 with client id, will, user name and password.
fn connect_v4(with_will: bool, user: Option<&str>, pass: Option<&[u8]>) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4];
    let flags = 0x02
        | if with_will { 0x04 } else { 0 }
        | if user.is_some() { 0x80 } else { 0 }
        | if pass.is_some() { 0x40 } else { 0 };
    body.extend([flags, 0, 30]);
    let mut field = |b: &[u8]| {
        body.extend((b.len() as u16).to_be_bytes());
        body.extend(b);
    };
    field(b"dev-1");
    if with_will {
        field(b"devices/dev-1/status");
        field(b"gone");
    }
    if let Some(user) = user {
        field(user.as_bytes());
    }
    if let Some(pass) = pass {
        field(pass);
    }
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

#[test]
fn connect_fields_and_rewrite() {
    let packet = connect_v4(true, Some("dev-1"), Some(b"pw"));
    let Next::Packet(frame) = next(&packet, 1024) else { panic!() };
    assert_eq!((frame.kind, frame.len), (CONNECT, packet.len()));
    let parsed = connect(&packet[frame.body..]).unwrap();
    assert_eq!(parsed.client_id, "dev-1");
    assert_eq!(parsed.will_topic, Some("devices/dev-1/status"));
    assert_eq!((parsed.username, parsed.password), (Some("dev-1"), Some(&b"pw"[..])));
    let rewritten = rewrite_connect(&packet[frame.body..], &parsed, "token");
    let Next::Packet(frame) = next(&rewritten, 1024) else { panic!() };
    let again = connect(&rewritten[frame.body..]).unwrap();
    assert_eq!((again.username, again.password), (Some("dev-1"), Some(&b"token"[..])));
    assert_eq!(again.will_topic, Some("devices/dev-1/status"));

    let anonymous = connect_v4(false, None, None);
    let parsed = connect(&anonymous[2..]).unwrap();
    assert_eq!((parsed.username, parsed.password), (None, None));
    let rewritten = rewrite_connect(&anonymous[2..], &parsed, "token");
    let again = connect(&rewritten[2..]).unwrap();
    assert_eq!((again.username, again.password), (Some(""), Some(&b"token"[..])));
}

#[test]
fn frames_are_delimited_and_bounded() {
    assert_eq!(next(&[0x30], 10), Next::Incomplete);
    assert_eq!(next(&[0x30, 0x80, 0x01], 100), Next::TooLarge { kind: PUBLISH, remaining: 128 });
    assert_eq!(next(&[0x30, 0xff, 0xff, 0xff, 0xff], 100), Next::Malformed);
    let publish_packet = [0x32, 9, 0, 3, b'a', b'/', b'b', 0, 1, b'h', b'i'];
    let Next::Packet(frame) = next(&publish_packet, 100) else { panic!() };
    let view = publish_view(&frame, &publish_packet, 4).unwrap();
    assert_eq!((view.topic, view.payload, view.qos, view.packet_id), ("a/b", &b"hi"[..], 1, Some(1)));
    let subscribe = [0x82, 12, 0, 1, 0, 3, b'a', b'/', b'b', 1, 0, 1, b'#', 0];
    let Next::Packet(frame) = next(&subscribe, 100) else { panic!() };
    assert_eq!(subscribe_filters(&frame, &subscribe, 4).unwrap(), vec!["a/b", "#"]);
}

#[test]
fn mqtt5_properties_are_skipped_and_refusals_use_reason_codes() {
    // CONNECT v5: session expiry property, will with a property, user name, password.
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0xc6, 0, 30, 5, 0x11, 0, 0, 0, 10];
    body.extend([0, 2, b'd', b'5']); // client id
    body.extend([2, 0x01, 1]); // will properties: payload format indicator
    for field in [&b"devices/d5/status"[..], b"bye", b"d5", b"pw"] {
        body.extend((field.len() as u16).to_be_bytes());
        body.extend(field);
    }
    let parsed = connect(&body).unwrap();
    assert_eq!(parsed.level, 5);
    assert_eq!((parsed.client_id, parsed.will_topic), ("d5", Some("devices/d5/status")));
    assert_eq!((parsed.username, parsed.password), (Some("d5"), Some(&b"pw"[..])));
    let rewritten = rewrite_connect(&body, &parsed, "t");
    let Next::Packet(frame) = next(&rewritten, 1024) else { panic!() };
    let again = connect(&rewritten[frame.body..]).unwrap();
    assert_eq!((again.level, again.will_topic, again.password), (5, Some("devices/d5/status"), Some(&b"t"[..])));

    // PUBLISH v5, QoS 1, with a topic alias property.
    let publish_packet = [0x32, 12, 0, 3, b'a', b'/', b'b', 0, 7, 3, 0x23, 0, 1, b'h', b'i'];
    let publish_packet = {
        let mut p = publish_packet.to_vec();
        p[1] = (p.len() - 2) as u8;
        p
    };
    let Next::Packet(frame) = next(&publish_packet, 100) else { panic!() };
    let view = publish_view(&frame, &publish_packet, 5).unwrap();
    assert_eq!((view.topic, view.payload), ("a/b", &b"hi"[..]));
    assert_eq!(connack_refusal(5, Refusal::BadCredentials), [0x20, 3, 0, 0x86, 0]);
    assert_eq!(connack_refusal(4, Refusal::NotAuthorized), [0x20, 2, 0, 5]);
}

fn frame_of(packet: &[u8]) -> Frame {
    let Next::Packet(frame) = next(packet, 1024) else { panic!("not a packet: {packet:?}") };
    frame
}

#[test]
fn protocol_violations_are_named_and_correct_packets_pass() {
    let violation_of = |packet: &[u8], level| violation(&frame_of(packet), packet, level);
    for (packet, level) in [
        (&[0x10, 0x00][..], 4),                     // a second CONNECT
        (&[0x20, 0x02, 0x00, 0x00], 4),             // CONNACK from a client
        (&[0xd0, 0x00], 4),                         // PINGRESP from a client
        (&[0xf0, 0x00], 4),                         // AUTH is reserved in 3.1.1
        (&[0x80, 0x06, 0, 1, 0, 1, b'a', 0], 4),    // SUBSCRIBE with flags 0
        (&[0xc1, 0x00], 4),                         // PINGREQ with a flag
        (&[0x36, 0x05, 0, 1, b'a', 0, 1], 4),       // QoS 3
        (&[0x30, 0x05, 0, 3, b'a', b'/', b'+'], 4), // wildcard +
        (&[0x30, 0x05, 0, 3, b'a', b'/', b'#'], 4), // wildcard #
        (&[0x30, 0x05, 0, 3, b'a', 0, b'b'], 4),    // U+0000
        (&[0x30, 0x03, 0, 0, b'x'], 4),             // empty topic in 3.1.1
        (&[0x30, 0x04, 0, 0, 0, b'x'], 5),          // v5, empty topic, no alias
        (&[0x30, 0x06, 0, 0, 2, 0x01, 1, b'x'], 5), // v5, empty topic, other property
    ] {
        assert!(violation_of(packet, level).is_some(), "{packet:x?}");
    }
    for (packet, level) in [
        (&[0x82, 0x06, 0, 1, 0, 1, b'a', 1][..], 4),      // SUBSCRIBE
        (&[0xc0, 0x00], 4),                               // PINGREQ
        (&[0xe0, 0x00], 4),                               // DISCONNECT
        (&[0x62, 0x02, 0, 1], 4),                         // PUBREL
        (&[0x32, 0x07, 0, 3, b'a', b'/', b'b', 0, 1], 4), // QoS 1 PUBLISH
        (&[0x30, 0x07, 0, 0, 3, 0x23, 0, 1, b'x'], 5),    // v5, empty topic with an alias
        (&[0xf0, 0x00], 5),                               // AUTH in MQTT 5
    ] {
        assert_eq!(violation_of(packet, level), None, "{packet:x?}");
    }
}

#[test]
fn connect_levels_reserved_flag_and_keep_alive_off() {
    let v4 = connect_v4(false, None, None);
    assert_eq!(protocol_level(&v4[2..]), Some(4));
    assert_eq!(protocol_level(&[0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3]), Some(3));
    assert_eq!(protocol_level(&[0, 4, b'H', b'T', b'T', b'P', 1]), None);
    let mut reserved = v4.clone();
    reserved[9] |= 0x01;
    assert!(connect(&reserved[2..]).unwrap_err().contains("reserved"));
    let mut off = v4;
    off[10..12].copy_from_slice(&[0, 0]);
    let parsed = connect(&off[2..]).unwrap();
    assert_eq!(parsed.keep_alive, 0);
    let rewritten = rewrite_connect(&off[2..], &parsed, "t");
    assert_eq!(
        connect(&rewritten[2..]).unwrap().keep_alive,
        KEEP_ALIVE_FOR_OFF,
        "the broker gets the gate's keep-alive"
    );
}

proptest::proptest! {
    /// Whatever a device sends, the parser answers without panicking.
    #[test]
    fn no_input_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300), level in 4u8..=5) {
        let _ = connect(&bytes);
        if let Next::Packet(frame) = next(&bytes, 1 << 20) {
            if publish_view(&frame, &bytes, level).is_ok() {
                let _ = publish_with_topic(&frame, &bytes, "a/b");
            }
            let _ = subscribe_filters(&frame, &bytes, level);
            let _ = violation(&frame, &bytes, level);
            let _ = protocol_level(&bytes[frame.body..frame.len]);
            if let Ok(parsed) = connect(&bytes[frame.body..frame.len]) {
                let _ = rewrite_connect(&bytes[frame.body..frame.len], &parsed, "t");
            }
        }
    }
}
