//! Just enough MQTT (3.1.1 and 5) for the device gate: frame boundaries, the fields of
//! CONNECT, PUBLISH and SUBSCRIBE that decide rights, CONNACK refusals, and rewriting a
//! CONNECT's credentials for the broker behind the gate.
//!
//! Invariant: nothing here panics on any input; a malformed packet is an `Err` with a reason.

/// CONNECT.
pub const CONNECT: u8 = 1;
/// PUBLISH.
pub const PUBLISH: u8 = 3;
/// SUBSCRIBE.
pub const SUBSCRIBE: u8 = 8;
/// DISCONNECT.
pub const DISCONNECT: u8 = 14;

/// A complete packet at the start of a buffer: its type, first byte, where its body starts
/// and its total length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Packet type (first byte >> 4).
    pub kind: u8,
    /// The first byte (type and flags).
    pub first: u8,
    /// Offset of the body (after the remaining-length field).
    pub body: usize,
    /// Total length of the packet.
    pub len: usize,
}

/// What the start of a buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A complete packet.
    Packet(Frame),
    /// Not enough bytes yet.
    Incomplete,
    /// The packet's body is `remaining` bytes, more than allowed.
    TooLarge {
        /// Its type.
        kind: u8,
        /// Its announced body length.
        remaining: usize,
    },
    /// Not MQTT.
    Malformed,
}

/// Finds the packet at the start of `buf`, refusing bodies longer than `max_body`.
pub fn next(buf: &[u8], max_body: usize) -> Next {
    let Some(&first) = buf.first() else { return Next::Incomplete };
    let mut remaining = 0usize;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else { return Next::Incomplete };
        remaining |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let body = 2 + i;
            if remaining > max_body {
                return Next::TooLarge { kind: first >> 4, remaining };
            }
            if buf.len() < body + remaining {
                return Next::Incomplete;
            }
            return Next::Packet(Frame { kind: first >> 4, first, body, len: body + remaining });
        }
    }
    Next::Malformed
}

/// A reader over a packet body.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|end| *end <= self.buf.len()).ok_or("packet ends too early")?;
        let out = &self.buf[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.bytes(1)?[0])
    }

    fn u16(&mut self) -> Result<usize, String> {
        let b = self.bytes(2)?;
        Ok(usize::from(b[0]) << 8 | usize::from(b[1]))
    }

    /// A length-prefixed byte string.
    fn binary(&mut self) -> Result<&'a [u8], String> {
        let len = self.u16()?;
        self.bytes(len)
    }

    fn string(&mut self) -> Result<&'a str, String> {
        std::str::from_utf8(self.binary()?).map_err(|_| "a string is not UTF-8".to_owned())
    }

    /// A variable byte integer.
    fn varint(&mut self) -> Result<usize, String> {
        let mut value = 0usize;
        for i in 0..4 {
            let byte = self.u8()?;
            value |= usize::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("bad variable byte integer".into())
    }

    /// Skips MQTT 5 properties.
    fn properties(&mut self) -> Result<(), String> {
        let len = self.varint()?;
        self.bytes(len).map(|_| ())
    }
}

/// The parts of a CONNECT the gate needs.
#[derive(Debug, PartialEq, Eq)]
pub struct Connect<'a> {
    /// Protocol level: 4 = MQTT 3.1.1, 5 = MQTT 5.
    pub level: u8,
    /// Keep-alive in seconds; 0 turns it off (MQTT 3.1.1 §3.1.2.10).
    pub keep_alive: u16,
    /// Client id.
    pub client_id: &'a str,
    /// Topic of the will, when there is one.
    pub will_topic: Option<&'a str>,
    /// User name.
    pub username: Option<&'a str>,
    /// Password.
    pub password: Option<&'a [u8]>,
    /// Offset in the body of the connect flags.
    flags_at: usize,
    /// Offset in the body where the user name (or the end) starts.
    credentials_at: usize,
}

/// Parses a CONNECT body.
pub fn connect(body: &[u8]) -> Result<Connect<'_>, String> {
    let mut r = Reader { buf: body, at: 0 };
    let name = r.binary()?;
    let level = r.u8()?;
    if !matches!((name, level), (b"MQTT", 4 | 5)) {
        return Err(format!("unsupported protocol {:?} level {level}", String::from_utf8_lossy(name)));
    }
    let flags_at = r.at;
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err("the reserved CONNECT flag is set [MQTT-3.1.2-3]".into());
    }
    let keep_alive = r.u16()? as u16;
    if level == 5 {
        r.properties()?;
    }
    let client_id = r.string()?;
    let mut will_topic = None;
    if flags & 0x04 != 0 {
        if level == 5 {
            r.properties()?;
        }
        will_topic = Some(r.string()?);
        r.binary()?;
    }
    let credentials_at = r.at;
    let username = if flags & 0x80 != 0 { Some(r.string()?) } else { None };
    let password = if flags & 0x40 != 0 { Some(r.binary()?) } else { None };
    Ok(Connect { level, keep_alive, client_id, will_topic, username, password, flags_at, credentials_at })
}

/// The keep-alive the gate gives the broker for a device that turned keep-alive off: the
/// longest MQTT has (rumqttd refuses 0). Such a device silent for 1.5 times this (27 hours)
/// is disconnected by the broker.
pub const KEEP_ALIVE_FOR_OFF: u16 = u16::MAX;

/// Protocol level of a CONNECT body whose protocol name is MQTT's ("MQTT", or "MQIsdp" of
/// MQTT 3.1), whatever the level; None for anything else.
pub fn protocol_level(body: &[u8]) -> Option<u8> {
    let mut r = Reader { buf: body, at: 0 };
    let name = r.binary().ok()?;
    let level = r.u8().ok()?;
    matches!(name, b"MQTT" | b"MQIsdp").then_some(level)
}

/// The CONNACK refusing an unsupported protocol level, in the 3.1.1 form every level can
/// read (return code 1, [MQTT-3.1.2-2]).
pub const CONNACK_BAD_PROTOCOL: [u8; 4] = [0x20, 0x02, 0x00, 0x01];

/// The CONNECT packet sent on to the broker: the same, but with `password` (and the user
/// name, or an empty one) as its credentials, and keep-alive 0 replaced by
/// [`KEEP_ALIVE_FOR_OFF`].
pub fn rewrite_connect(body: &[u8], connect: &Connect<'_>, password: &str) -> Vec<u8> {
    let mut new_body = Vec::with_capacity(body.len() + password.len() + 4);
    new_body.extend_from_slice(&body[..connect.credentials_at]);
    new_body[connect.flags_at] |= 0xc0;
    if connect.keep_alive == 0 {
        new_body[connect.flags_at + 1..connect.flags_at + 3].copy_from_slice(&KEEP_ALIVE_FOR_OFF.to_be_bytes());
    }
    let username = connect.username.unwrap_or("");
    for field in [username.as_bytes(), password.as_bytes()] {
        new_body.extend_from_slice(&(field.len() as u16).to_be_bytes());
        new_body.extend_from_slice(field);
    }
    let mut packet = vec![CONNECT << 4];
    let mut len = new_body.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            packet.push(byte);
            break;
        }
        packet.push(byte | 0x80);
    }
    packet.extend_from_slice(&new_body);
    packet
}

/// Why a CONNECT is refused, as a CONNACK says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Bad user name or password.
    BadCredentials,
    /// Not authorized (e.g. client id is not the user name, a will on a foreign topic).
    NotAuthorized,
    /// Too many connections.
    Busy,
}

/// A CONNACK refusing the connection, for MQTT `level` 4 or 5.
pub fn connack_refusal(level: u8, refusal: Refusal) -> Vec<u8> {
    if level == 5 {
        let code = match refusal {
            Refusal::BadCredentials => 0x86,
            Refusal::NotAuthorized => 0x87,
            Refusal::Busy => 0x89,
        };
        vec![0x20, 0x03, 0x00, code, 0x00]
    } else {
        let code = match refusal {
            Refusal::BadCredentials => 4,
            Refusal::NotAuthorized => 5,
            Refusal::Busy => 3,
        };
        vec![0x20, 0x02, 0x00, code]
    }
}

/// Topic and payload of a PUBLISH. The topic is empty for an MQTT 5 publish by topic alias.
pub fn publish(frame: &Frame, packet: &[u8], level: u8) -> Result<(String, Vec<u8>), String> {
    let mut r = Reader { buf: &packet[frame.body..frame.len], at: 0 };
    let topic = r.string()?.to_owned();
    if (frame.first >> 1) & 0x03 != 0 {
        r.u16()?;
    }
    if level == 5 {
        r.properties()?;
    }
    Ok((topic, r.buf[r.at..].to_vec()))
}

/// Why a packet a client sent after its CONNECT breaks MQTT (at protocol `level`), if it
/// does: a second CONNECT, a packet only a server sends, fixed-header flags the packet type
/// does not allow, a PUBLISH with QoS 3 or whose topic has a wildcard, U+0000 or, without
/// an MQTT 5 topic alias, nothing. The gate closes the connection for each (MQTT 3.1.1
/// §4.8 and MQTT 5 §4.13: a protocol error ends the connection).
pub fn violation(frame: &Frame, packet: &[u8], level: u8) -> Option<String> {
    const CONNACK: u8 = 2;
    const SUBACK: u8 = 9;
    const UNSUBACK: u8 = 11;
    const PINGRESP: u8 = 13;
    const AUTH: u8 = 15;
    let flags = frame.first & 0x0f;
    match frame.kind {
        CONNECT => Some("a second CONNECT [MQTT-3.1.0-2]".into()),
        0 | CONNACK | SUBACK | UNSUBACK | PINGRESP => {
            Some(format!("packet type {} is sent only by a server", frame.kind))
        }
        AUTH if level < 5 => Some("packet type 15 is reserved in MQTT 3.1.1".into()),
        PUBLISH => publish_violation(frame, packet, level).err(),
        // PUBREL, SUBSCRIBE, UNSUBSCRIBE: 0b0010 [MQTT-3.6.1-1, MQTT-3.8.1-1, MQTT-3.10.1-1].
        6 | SUBSCRIBE | 10 if flags != 0x02 => {
            Some(format!("packet type {} with fixed-header flags {flags:#06b}, not 0b0010", frame.kind))
        }
        6 | SUBSCRIBE | 10 => None,
        _ if flags != 0 => Some(format!("packet type {} with fixed-header flags {flags:#06b}, not 0", frame.kind)),
        _ => None,
    }
}

fn publish_violation(frame: &Frame, packet: &[u8], level: u8) -> Result<(), String> {
    let qos = (frame.first >> 1) & 0x03;
    if qos == 3 {
        return Err("a PUBLISH with QoS 3 [MQTT-3.3.1-4]".into());
    }
    let mut r = Reader { buf: &packet[frame.body..frame.len], at: 0 };
    let topic = r.string()?;
    if topic.contains(['+', '#']) {
        return Err(format!("a PUBLISH topic with a wildcard: {topic:?} [MQTT-3.3.2-2]"));
    }
    if topic.contains('\0') {
        return Err("a PUBLISH topic with U+0000 [MQTT-4.7.3-2]".into());
    }
    if !topic.is_empty() {
        return Ok(());
    }
    if level < 5 {
        return Err("a PUBLISH with an empty topic [MQTT-4.7.3-1]".into());
    }
    if qos > 0 {
        r.u16()?;
    }
    if publish_has_topic_alias(&mut r)? {
        Ok(())
    } else {
        Err("an MQTT 5 PUBLISH with an empty topic and no topic alias [MQTT-3.3.2-8]".into())
    }
}

/// Whether the properties of an MQTT 5 PUBLISH (at `r`) hold a topic alias.
fn publish_has_topic_alias(r: &mut Reader<'_>) -> Result<bool, String> {
    let len = r.varint()?;
    let mut props = Reader { buf: r.bytes(len)?, at: 0 };
    while props.at < props.buf.len() {
        match props.varint()? {
            0x23 => return Ok(true),
            0x01 => props.bytes(1).map(|_| ())?,
            0x02 => props.bytes(4).map(|_| ())?,
            0x0b => props.varint().map(|_| ())?,
            0x03 | 0x08 | 0x09 => props.binary().map(|_| ())?,
            0x26 => props.binary().and_then(|_| props.binary()).map(|_| ())?,
            id => return Err(format!("property {id:#04x} is not a PUBLISH property")),
        }
    }
    Ok(false)
}

/// Only the topic of a PUBLISH.
pub fn publish_topic<'a>(frame: &Frame, packet: &'a [u8]) -> Result<&'a str, String> {
    Reader { buf: &packet[frame.body..frame.len], at: 0 }.string()
}

/// The topic filters of a SUBSCRIBE.
pub fn subscribe_filters<'a>(frame: &Frame, packet: &'a [u8], level: u8) -> Result<Vec<&'a str>, String> {
    let mut r = Reader { buf: &packet[frame.body..frame.len], at: 0 };
    r.u16()?;
    if level == 5 {
        r.properties()?;
    }
    let mut filters = Vec::new();
    while r.at < r.buf.len() {
        filters.push(r.string()?);
        r.u8()?;
    }
    Ok(filters)
}

#[cfg(test)]
mod tests {
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
        assert_eq!(publish(&frame, &publish_packet, 4).unwrap(), ("a/b".to_owned(), b"hi".to_vec()));
        assert_eq!(publish_topic(&frame, &publish_packet).unwrap(), "a/b");
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
        assert_eq!(publish(&frame, &publish_packet, 5).unwrap(), ("a/b".to_owned(), b"hi".to_vec()));
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
                let _ = publish(&frame, &bytes, level);
                let _ = publish_topic(&frame, &bytes);
                let _ = subscribe_filters(&frame, &bytes, level);
                let _ = violation(&frame, &bytes, level);
                let _ = protocol_level(&bytes[frame.body..frame.len]);
                if let Ok(parsed) = connect(&bytes[frame.body..frame.len]) {
                    let _ = rewrite_connect(&bytes[frame.body..frame.len], &parsed, "t");
                }
            }
        }
    }
}
