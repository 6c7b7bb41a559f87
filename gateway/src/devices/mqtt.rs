//! Just enough MQTT (3.1.1 and 5) for the device gate: frame boundaries, the fields of
//! CONNECT, PUBLISH and SUBSCRIBE that decide rights, CONNACK refusals, and rewriting a
//! CONNECT's credentials for the broker behind the gate. MQTT 5 properties: [`v5`].
//!
//! Invariant: nothing here panics on any input; a malformed packet is an `Err` with a reason.

pub mod v5;

/// CONNECT.
pub const CONNECT: u8 = 1;
/// PUBLISH.
pub const PUBLISH: u8 = 3;
/// SUBSCRIBE.
pub const SUBSCRIBE: u8 = 8;
/// PUBACK.
pub const PUBACK: u8 = 4;
/// PUBREL.
pub const PUBREL: u8 = 6;
/// DISCONNECT.
pub const DISCONNECT: u8 = 14;
/// PINGREQ packet type.
pub const PINGREQ: u8 = 12;
/// PINGRESP packet type.
pub const PINGRESP: u8 = 13;

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

    /// An MQTT 5 property block (its length, then the block returned).
    fn properties(&mut self) -> Result<&'a [u8], String> {
        let len = self.varint()?;
        self.bytes(len)
    }
}

/// The parts of a CONNECT the gate needs.
#[derive(Debug, PartialEq, Eq)]
pub struct Connect<'a> {
    /// Protocol level: 4 = MQTT 3.1.1, 5 = MQTT 5.
    pub level: u8,
    /// Keep-alive in seconds; 0 turns it off (MQTT 3.1.1 §3.1.2.10).
    pub keep_alive: u16,
    /// Clean Session (3.1.1) / Clean Start (5) as the broker gets it; the gate may change it
    /// before [`rewrite_connect`].
    pub clean: bool,
    /// MQTT 5 properties the gate acts on (defaults for 3.1.1).
    pub v5: v5::ConnectProperties,
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
    /// MQTT 5: where the property block's length starts and the block ends.
    properties_at: Option<(usize, usize)>,
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
    let (mut properties_at, mut properties) = (None, v5::ConnectProperties::default());
    if level == 5 {
        let start = r.at;
        properties = v5::connect_properties(r.properties()?)?;
        properties_at = Some((start, r.at));
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
    Ok(Connect {
        level,
        keep_alive,
        clean: flags & 0x02 != 0,
        v5: properties,
        client_id,
        will_topic,
        username,
        password,
        flags_at,
        credentials_at,
        properties_at,
    })
}

/// The keep-alive the gate gives the broker for a device that turned keep-alive off: the
/// longest MQTT has (rumqttd refuses 0). Such a device silent for 1.5 times this (27 hours)
/// is disconnected by the broker.
pub const KEEP_ALIVE_FOR_OFF: u16 = u16::MAX;

/// The keep-alive the broker gets for a device's: its own, or [`KEEP_ALIVE_FOR_OFF`] for 0.
pub fn broker_keep_alive(keep_alive: u16) -> u16 {
    if keep_alive == 0 {
        KEEP_ALIVE_FOR_OFF
    } else {
        keep_alive
    }
}

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
/// name, or an empty one) as its credentials, `connect.clean` as its clean flag, keep-alive
/// 0 replaced by [`KEEP_ALIVE_FOR_OFF`], and, when an MQTT 5 client set a Maximum Packet
/// Size, without its Topic Alias Maximum: the gate may have to drop a publish to that
/// client, and a dropped publish must not be the one that set an alias the broker then
/// uses (docs/operations.md, "MQTT conformance").
pub fn rewrite_connect(body: &[u8], connect: &Connect<'_>, password: &str) -> Vec<u8> {
    let mut new_body = Vec::with_capacity(body.len() + password.len() + 4);
    let rebuilt = match connect.properties_at {
        Some((start, end)) if connect.v5.max_packet_size.is_some() => {
            let block = Reader { buf: body, at: start }.properties().unwrap_or(&[]);
            v5::without(block, &[v5::TOPIC_ALIAS_MAX]).ok().map(|block| (start, end, block))
        }
        _ => None,
    };
    match rebuilt {
        Some((start, end, block)) => {
            new_body.extend_from_slice(&body[..start]);
            v5::put_varint(&mut new_body, block.len());
            new_body.extend_from_slice(&block);
            new_body.extend_from_slice(&body[end..connect.credentials_at]);
        }
        None => new_body.extend_from_slice(&body[..connect.credentials_at]),
    }
    new_body[connect.flags_at] = (new_body[connect.flags_at] & !0x02) | 0xc0 | if connect.clean { 0x02 } else { 0 };
    let keep_alive = broker_keep_alive(connect.keep_alive);
    new_body[connect.flags_at + 1..connect.flags_at + 3].copy_from_slice(&keep_alive.to_be_bytes());
    let username = connect.username.unwrap_or("");
    for field in [username.as_bytes(), password.as_bytes()] {
        new_body.extend_from_slice(&(field.len() as u16).to_be_bytes());
        new_body.extend_from_slice(field);
    }
    let mut packet = vec![CONNECT << 4];
    v5::put_varint(&mut packet, new_body.len());
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

/// The parts of a PUBLISH the gate takes itself (docs/architecture.md, "The device gate").
#[derive(Debug, PartialEq, Eq)]
pub struct PublishView<'a> {
    /// QoS 0, 1 or 2.
    pub qos: u8,
    /// The topic as sent: empty for an MQTT 5 publish by topic alias.
    pub topic: &'a str,
    /// The packet id (QoS 1 and 2).
    pub packet_id: Option<u16>,
    /// MQTT 5: the Topic Alias property, if set.
    pub topic_alias: Option<u16>,
    /// The payload.
    pub payload: &'a [u8],
}

/// Reads a PUBLISH (at protocol `level`) without copying it.
pub fn publish_view<'a>(frame: &Frame, packet: &'a [u8], level: u8) -> Result<PublishView<'a>, String> {
    let mut r = Reader { buf: &packet[frame.body..frame.len], at: 0 };
    let qos = (frame.first >> 1) & 0x03;
    let topic = r.string()?;
    let packet_id = if qos > 0 { Some(r.u16()? as u16) } else { None };
    let mut topic_alias = None;
    if level == 5 {
        if let Some(alias) = v5::properties(r.properties()?)?.iter().find(|p| p.id == v5::TOPIC_ALIAS) {
            topic_alias = Some(u16::from_be_bytes([alias.value[0], alias.value[1]]));
        }
    }
    Ok(PublishView { qos, topic, packet_id, topic_alias, payload: &r.buf[r.at..] })
}

/// The same PUBLISH with `topic` in place of its empty one (an MQTT 5 publish by topic alias
/// whose alias the broker behind the gate may not know: the gate took the publish that set it).
pub fn publish_with_topic(frame: &Frame, packet: &[u8], topic: &str) -> Vec<u8> {
    // An empty topic is its two length bytes: what follows them is kept as it is.
    let rest = packet.get(frame.body + 2..frame.len).unwrap_or_default();
    let mut body = Vec::with_capacity(rest.len() + topic.len() + 2);
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(rest);
    let mut out = vec![frame.first];
    v5::put_varint(&mut out, body.len());
    out.extend_from_slice(&body);
    out
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
    if v5::has_topic_alias(r.properties()?)? {
        Ok(())
    } else {
        Err("an MQTT 5 PUBLISH with an empty topic and no topic alias [MQTT-3.3.2-8]".into())
    }
}

/// The packet id of a PUBLISH of QoS 1 or 2 (None for QoS 0 or a body cut short).
pub fn publish_packet_id(frame: &Frame, packet: &[u8]) -> Option<u16> {
    if (frame.first >> 1) & 0x03 == 0 {
        return None;
    }
    let mut r = Reader { buf: &packet[frame.body..frame.len], at: 0 };
    r.binary().ok()?;
    r.u16().ok().map(|id| id as u16)
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
mod tests;
