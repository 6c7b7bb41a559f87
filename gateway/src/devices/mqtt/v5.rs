//! MQTT 5 properties (§2.2.2) for the device gate: walking a property block, the CONNECT
//! properties the gate acts on, and the packets it writes itself on an MQTT 5 connection: a
//! CONNACK that advertises the gate's Maximum Packet Size [MQTT-3.2.2.3.6], a DISCONNECT
//! with a reason code (docs/operations.md, "Device security").
//!
//! Invariant: nothing here panics on any input; a malformed block is an `Err` with a reason.

use super::Reader;

/// Session Expiry Interval (four-byte integer).
pub const SESSION_EXPIRY: u8 = 0x11;
/// Topic Alias Maximum (two-byte integer).
pub const TOPIC_ALIAS_MAX: u8 = 0x22;
/// Topic Alias (two-byte integer).
pub const TOPIC_ALIAS: u8 = 0x23;
/// Maximum Packet Size (four-byte integer).
pub const MAX_PACKET_SIZE: u8 = 0x27;

/// DISCONNECT reason codes the gate sends (MQTT 5 §3.14.2.1).
pub mod reason {
    /// Malformed Packet.
    pub const MALFORMED: u8 = 0x81;
    /// Protocol Error.
    pub const PROTOCOL_ERROR: u8 = 0x82;
    /// Not authorized.
    pub const NOT_AUTHORIZED: u8 = 0x87;
    /// Session taken over.
    pub const SESSION_TAKEN_OVER: u8 = 0x8e;
    /// Packet too large.
    pub const PACKET_TOO_LARGE: u8 = 0x95;
}

/// One property: its identifier and the raw bytes of its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Property<'a> {
    /// Identifier.
    pub id: u8,
    /// Value, as on the wire.
    pub value: &'a [u8],
}

/// Splits a property block (the bytes after its length) into properties; Err for an
/// identifier MQTT 5 does not define or a value cut short.
pub fn properties(block: &[u8]) -> Result<Vec<Property<'_>>, String> {
    let mut r = Reader { buf: block, at: 0 };
    let mut out = Vec::new();
    while r.at < block.len() {
        let id = r.u8()?;
        let start = r.at;
        match id {
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2a => drop(r.bytes(1)?),
            0x13 | 0x21 | 0x22 | 0x23 => drop(r.bytes(2)?),
            0x02 | 0x11 | 0x18 | 0x27 => drop(r.bytes(4)?),
            0x0b => drop(r.varint()?),
            0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1a | 0x1c | 0x1f => drop(r.binary()?),
            0x26 => drop(r.binary().and_then(|_| r.binary())?),
            _ => return Err(format!("property {id:#04x} is not an MQTT 5 property")),
        }
        out.push(Property { id, value: &block[start..r.at] });
    }
    Ok(out)
}

fn four_bytes(value: &[u8]) -> u32 {
    value.iter().fold(0, |n, b| n << 8 | u32::from(*b))
}

/// What the gate takes from a CONNECT's properties.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnectProperties {
    /// Session Expiry Interval in seconds (absent: 0, the session ends with the connection).
    pub session_expiry: u32,
    /// The largest packet the client accepts, when it set one [MQTT-3.1.2-24].
    pub max_packet_size: Option<u32>,
}

/// Reads a CONNECT's properties; a Maximum Packet Size of 0 is a protocol error (§3.1.2.11.4).
pub fn connect_properties(block: &[u8]) -> Result<ConnectProperties, String> {
    let mut out = ConnectProperties::default();
    for property in properties(block)? {
        match property.id {
            SESSION_EXPIRY => out.session_expiry = four_bytes(property.value),
            MAX_PACKET_SIZE => match four_bytes(property.value) {
                0 => return Err("a CONNECT with Maximum Packet Size 0".into()),
                max => out.max_packet_size = Some(max),
            },
            _ => {}
        }
    }
    Ok(out)
}

/// The session expiry a DISCONNECT body (MQTT 5) sets, if it sets one.
pub fn disconnect_session_expiry(body: &[u8]) -> Result<Option<u32>, String> {
    if body.len() < 2 {
        return Ok(None);
    }
    let mut r = Reader { buf: body, at: 1 };
    let block = r.properties()?;
    Ok(properties(block)?.iter().find(|p| p.id == SESSION_EXPIRY).map(|p| four_bytes(p.value)))
}

/// Whether a PUBLISH's property block holds a Topic Alias.
pub fn has_topic_alias(block: &[u8]) -> Result<bool, String> {
    Ok(properties(block)?.iter().any(|p| p.id == TOPIC_ALIAS))
}

/// A property block without the properties `drop` names (for the CONNECT the broker gets).
pub fn without(block: &[u8], drop: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(block.len());
    for property in properties(block)?.into_iter().filter(|p| !drop.contains(&p.id)) {
        out.push(property.id);
        out.extend_from_slice(property.value);
    }
    Ok(out)
}

/// Appends `n` as a variable byte integer.
pub fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The Maximum Packet Size that admits exactly the packets whose body is at most
/// `max_body` bytes (the gate's `devices.max_payload`): type byte, length field, body.
pub fn max_packet_size(max_body: usize) -> u32 {
    let mut len = Vec::with_capacity(4);
    put_varint(&mut len, max_body);
    u32::try_from(1 + len.len() + max_body).unwrap_or(u32::MAX)
}

/// The broker's MQTT 5 CONNACK body, with Maximum Packet Size `max` in its properties
/// (replacing one the broker set), as a whole packet.
pub fn connack_with_max_packet_size(body: &[u8], max: u32) -> Result<Vec<u8>, String> {
    let mut r = Reader { buf: body, at: 0 };
    let head = r.bytes(2)?;
    let block = if r.at < body.len() { r.properties()? } else { &[] };
    let mut props = without(block, &[MAX_PACKET_SIZE])?;
    props.push(MAX_PACKET_SIZE);
    props.extend_from_slice(&max.to_be_bytes());
    let mut inner = head.to_vec();
    put_varint(&mut inner, props.len());
    inner.extend_from_slice(&props);
    let mut packet = vec![0x20];
    put_varint(&mut packet, inner.len());
    packet.extend_from_slice(&inner);
    Ok(packet)
}

/// An MQTT 5 DISCONNECT with `reason` and no properties.
pub fn disconnect(reason: u8) -> [u8; 4] {
    [0xe0, 0x02, reason, 0x00]
}

/// A CONNECT (level 4 or 5, clean, keep-alive 10 s) for `client_id` with `password`: the
/// gate's own short connections to the broker (discarding a session).
pub fn clean_connect(level: u8, client_id: &str, password: &str) -> Vec<u8> {
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', level, 0xc2, 0x00, 0x0a];
    if level == 5 {
        body.push(0);
    }
    for field in [client_id, "", password] {
        body.extend_from_slice(&(field.len() as u16).to_be_bytes());
        body.extend_from_slice(field.as_bytes());
    }
    let mut packet = vec![0x10];
    put_varint(&mut packet, body.len());
    packet.extend_from_slice(&body);
    packet
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_split_and_unknown_ids_are_refused() {
        let block = [0x11, 0, 0, 0, 60, 0x26, 0, 1, b'k', 0, 1, b'v', 0x27, 0, 0, 4, 0];
        let props = properties(&block).unwrap();
        assert_eq!(props.iter().map(|p| p.id).collect::<Vec<_>>(), [0x11, 0x26, 0x27]);
        assert_eq!(
            connect_properties(&block).unwrap(),
            ConnectProperties { session_expiry: 60, max_packet_size: Some(1024) }
        );
        assert!(properties(&[0x7f, 0]).is_err());
        assert!(properties(&[0x27, 0, 0]).is_err(), "cut short");
        assert!(connect_properties(&[0x27, 0, 0, 0, 0]).is_err(), "Maximum Packet Size 0");
        assert_eq!(without(&block, &[0x26]).unwrap(), [0x11, 0, 0, 0, 60, 0x27, 0, 0, 4, 0]);
    }

    #[test]
    fn the_advertised_maximum_admits_exactly_bodies_up_to_max_payload() {
        assert_eq!(max_packet_size(127), 129);
        assert_eq!(max_packet_size(128), 131);
        assert_eq!(max_packet_size(256 * 1024), 256 * 1024 + 4);
    }

    #[test]
    fn connack_gets_the_maximum_packet_size_and_keeps_the_brokers_properties() {
        // rumqttd's CONNACK: session present 0, success, Topic Alias Maximum 4096.
        let body = [0x00, 0x00, 0x03, 0x22, 0x10, 0x00];
        let packet = connack_with_max_packet_size(&body, 1029).unwrap();
        assert_eq!(packet, [0x20, 0x0b, 0, 0, 0x08, 0x22, 0x10, 0x00, 0x27, 0, 0, 0x04, 0x05]);
        // A CONNACK without properties (remaining length 2) gets a block.
        assert_eq!(connack_with_max_packet_size(&[0, 0], 9).unwrap(), [0x20, 8, 0, 0, 5, 0x27, 0, 0, 0, 9]);
    }

    #[test]
    fn disconnect_bodies_say_their_session_expiry() {
        assert_eq!(disconnect_session_expiry(&[]).unwrap(), None);
        assert_eq!(disconnect_session_expiry(&[0]).unwrap(), None);
        assert_eq!(disconnect_session_expiry(&[0, 5, 0x11, 0, 0, 0, 0]).unwrap(), Some(0));
        assert!(disconnect_session_expiry(&[0, 9, 0x11]).is_err());
    }
}
