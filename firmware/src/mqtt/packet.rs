//! MQTT 3.1.1 packets, as a device needs them: encoders that write into the caller's
//! buffer, and a decoder for what a broker sends a client that borrows from the
//! receive buffer. No heap, no panics: every length is checked before it is used, and
//! any byte sequence decodes to a packet, "need more bytes", or an error.
//!
//! Supported: CONNECT (clean session, keep-alive, optional user name and password),
//! CONNACK, PUBLISH QoS 0 and 1 (both ways), PUBACK (both ways), SUBSCRIBE, SUBACK,
//! UNSUBACK, PINGREQ, PINGRESP, DISCONNECT. Not supported: QoS 2 and wills.

use crate::error::Error;

/// Largest remaining length MQTT can express (four length bytes).
pub const MAX_REMAINING_LEN: usize = 268_435_455;

/// Longest fixed header: the type byte and four remaining-length bytes.
pub const MAX_FIXED_HEADER_LEN: usize = 5;

const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const SUBSCRIBE: u8 = 8;
const SUBACK: u8 = 9;
const UNSUBACK: u8 = 11;
const PINGREQ: u8 = 12;
const PINGRESP: u8 = 13;
const DISCONNECT: u8 = 14;

/// Delivery guarantee of a publish or subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum QoS {
    /// Fire and forget.
    AtMostOnce,
    /// Acknowledged with a PUBACK; may arrive twice.
    #[default]
    AtLeastOnce,
}

impl QoS {
    const fn bits(self) -> u8 {
        match self {
            QoS::AtMostOnce => 0,
            QoS::AtLeastOnce => 1,
        }
    }
}

/// The fields of a CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connect<'a> {
    /// The client id (the device id, for this crate).
    pub client_id: &'a str,
    /// Seconds of silence after which the broker may drop the client; 0 disables.
    pub keep_alive_secs: u16,
    /// Start without any state the broker kept for this client id.
    pub clean_session: bool,
    /// Optional user name.
    pub username: Option<&'a str>,
    /// Optional password (needs a user name, per MQTT 3.1.1).
    pub password: Option<&'a [u8]>,
}

/// A PUBLISH, either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish<'a> {
    /// The topic name.
    pub topic: &'a str,
    /// The packet id, for QoS 1 only.
    pub pkid: Option<u16>,
    /// The QoS.
    pub qos: QoS,
    /// The broker's retain flag (set on a retained message sent at subscription time).
    pub retain: bool,
    /// Set on a re-delivery of the same packet id.
    pub dup: bool,
    /// The application message.
    pub payload: &'a [u8],
}

/// What a broker sends a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// The answer to CONNECT; `code` 0 means accepted.
    ConnAck {
        /// The broker kept a session for this client id.
        session_present: bool,
        /// The return code.
        code: u8,
    },
    /// A message on a subscribed topic.
    Publish(Publish<'a>),
    /// The broker has taken a QoS 1 publish.
    PubAck {
        /// Its packet id.
        pkid: u16,
    },
    /// The answer to SUBSCRIBE: one granted QoS (0, 1, 2) or `0x80` (refused) per filter.
    SubAck {
        /// The SUBSCRIBE's packet id.
        pkid: u16,
        /// The return codes.
        codes: &'a [u8],
    },
    /// The answer to UNSUBSCRIBE.
    UnsubAck {
        /// Its packet id.
        pkid: u16,
    },
    /// The answer to PINGREQ.
    PingResp,
}

/// The total length of the packet at the start of `buf`, once its fixed header is
/// complete (`None` before that).
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, Error> {
    Ok(fixed_header(buf)?.map(|(header, remaining)| header + remaining))
}

/// `(fixed header length, remaining length)` once the fixed header is complete.
fn fixed_header(buf: &[u8]) -> Result<Option<(usize, usize)>, Error> {
    let mut remaining = 0usize;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((2 + i, remaining)));
        }
    }
    Err(protocol("remaining length longer than four bytes"))
}

/// The packet id of the QoS 1 PUBLISH whose first bytes are `head` (`Some(None)` for any
/// other packet), read without needing the payload; `None` while `head` is too short to
/// tell. For skipping a packet too large to receive whole.
pub fn publish_pkid(head: &[u8]) -> Option<Option<u16>> {
    let Ok(Some((header, _))) = fixed_header(head) else {
        return None;
    };
    let first = head.first().copied().unwrap_or_default();
    if first >> 4 != PUBLISH || (first >> 1) & 0b11 != 1 {
        return Some(None);
    }
    let topic_len = match head.get(header..header + 2) {
        Some(&[hi, lo]) => usize::from(u16::from_be_bytes([hi, lo])),
        _ => return None,
    };
    match head.get(header + 2 + topic_len..header + 4 + topic_len) {
        Some(&[0, 0]) => Some(None),
        Some(&[hi, lo]) => Some(Some(u16::from_be_bytes([hi, lo]))),
        _ => None,
    }
}

/// Decodes the packet at the start of `buf`: `Ok(None)` when more bytes are needed,
/// otherwise the packet and the bytes it used.
pub fn decode(buf: &[u8]) -> Result<Option<(Packet<'_>, usize)>, Error> {
    let Some((header, remaining)) = fixed_header(buf)? else {
        return Ok(None);
    };
    let total = header + remaining;
    let (Some(&first), Some(body)) = (buf.first(), buf.get(header..total)) else {
        return Ok(None);
    };
    let (kind, flags) = (first >> 4, first & 0x0f);
    let mut r = Reader { buf: body, pos: 0 };
    let packet = match kind {
        CONNACK => {
            expect_flags(flags, 0)?;
            let ack_flags = r.u8()?;
            if ack_flags & 0xfe != 0 {
                return Err(protocol("CONNACK flags other than session-present are set"));
            }
            Packet::ConnAck { session_present: ack_flags == 1, code: r.u8()? }
        }
        PUBLISH => Packet::Publish(decode_publish(flags, &mut r)?),
        PUBACK => {
            expect_flags(flags, 0)?;
            Packet::PubAck { pkid: r.pkid()? }
        }
        SUBACK => {
            expect_flags(flags, 0)?;
            let pkid = r.pkid()?;
            let codes = r.rest();
            if codes.is_empty() || codes.iter().any(|&c| c > 2 && c != 0x80) {
                return Err(protocol("SUBACK return codes must be 0, 1, 2 or 0x80"));
            }
            Packet::SubAck { pkid, codes }
        }
        UNSUBACK => {
            expect_flags(flags, 0)?;
            Packet::UnsubAck { pkid: r.pkid()? }
        }
        PINGRESP => {
            expect_flags(flags, 0)?;
            Packet::PingResp
        }
        _ => return Err(protocol("a packet type a broker never sends to a client")),
    };
    if !r.rest().is_empty() {
        return Err(protocol("bytes left over after the packet's fields"));
    }
    Ok(Some((packet, total)))
}

fn decode_publish<'a>(flags: u8, r: &mut Reader<'a>) -> Result<Publish<'a>, Error> {
    let qos = match (flags >> 1) & 0b11 {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => return Err(protocol("QoS 2 publish: this client subscribes with QoS 1 at most")),
        _ => return Err(protocol("publish with QoS 3")),
    };
    let dup = flags & 0b1000 != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(protocol("DUP set on a QoS 0 publish"));
    }
    let topic = r.str()?;
    if topic.is_empty() || topic.contains(['+', '#']) {
        return Err(protocol("publish topic is empty or has a wildcard"));
    }
    let pkid = match qos {
        QoS::AtMostOnce => None,
        QoS::AtLeastOnce => Some(r.pkid()?),
    };
    Ok(Publish { topic, pkid, qos, retain: flags & 1 != 0, dup, payload: r.rest() })
}

fn expect_flags(flags: u8, want: u8) -> Result<(), Error> {
    if flags == want {
        Ok(())
    } else {
        Err(protocol("reserved fixed-header flags have the wrong value"))
    }
}

const fn protocol(reason: &'static str) -> Error {
    Error::Protocol { reason }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let bytes = self.buf.get(self.pos..self.pos + n).ok_or(protocol("a field runs past the end of the packet"))?;
        self.pos += n;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Error> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn pkid(&mut self) -> Result<u16, Error> {
        match self.u16()? {
            0 => Err(protocol("packet id 0")),
            pkid => Ok(pkid),
        }
    }

    fn str(&mut self) -> Result<&'a str, Error> {
        let len = usize::from(self.u16()?);
        let bytes = self.take(len)?;
        core::str::from_utf8(bytes).map_err(|_| protocol("a string is not UTF-8"))
    }

    fn rest(&mut self) -> &'a [u8] {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        self.pos = self.buf.len();
        rest
    }
}

/// Writes fields into a caller's buffer, failing instead of overrunning it.
struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    /// Starts a packet: the type byte and the remaining length `remaining`.
    fn start(buf: &'a mut [u8], first: u8, remaining: usize) -> Result<Writer<'a>, Error> {
        if remaining > MAX_REMAINING_LEN {
            return Err(Error::BufferTooSmall { needed: remaining, available: MAX_REMAINING_LEN });
        }
        let mut w = Writer { buf, pos: 0 };
        w.u8(first)?;
        let mut rest = remaining;
        loop {
            let byte = (rest % 128) as u8;
            rest /= 128;
            w.u8(if rest > 0 { byte | 0x80 } else { byte })?;
            if rest == 0 {
                break;
            }
        }
        let needed = w.pos + remaining;
        if needed > w.buf.len() {
            return Err(Error::BufferTooSmall { needed, available: w.buf.len() });
        }
        Ok(w)
    }

    fn bytes(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let available = self.buf.len();
        let dest = self
            .buf
            .get_mut(self.pos..self.pos + bytes.len())
            .ok_or(Error::BufferTooSmall { needed: self.pos + bytes.len(), available })?;
        dest.copy_from_slice(bytes);
        self.pos += bytes.len();
        Ok(())
    }

    fn u8(&mut self, byte: u8) -> Result<(), Error> {
        self.bytes(&[byte])
    }

    fn u16(&mut self, value: u16) -> Result<(), Error> {
        self.bytes(&value.to_be_bytes())
    }

    fn str(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.u16(mqtt_len(bytes)?)?;
        self.bytes(bytes)
    }

    fn done(self) -> usize {
        self.pos
    }
}

/// The u16 length prefix of an MQTT string or binary field.
fn mqtt_len(bytes: &[u8]) -> Result<u16, Error> {
    u16::try_from(bytes.len())
        .map_err(|_| Error::BufferTooSmall { needed: bytes.len(), available: usize::from(u16::MAX) })
}

/// Writes a CONNECT (protocol level 4) into `buf`; returns its length.
pub fn encode_connect(connect: &Connect<'_>, buf: &mut [u8]) -> Result<usize, Error> {
    if connect.password.is_some() && connect.username.is_none() {
        return Err(protocol("MQTT 3.1.1 needs a user name to send a password"));
    }
    let mut flags = 0u8;
    let mut remaining = 10 + 2 + connect.client_id.len();
    if connect.clean_session {
        flags |= 0x02;
    }
    if let Some(user) = connect.username {
        flags |= 0x80;
        remaining += 2 + user.len();
    }
    if let Some(password) = connect.password {
        flags |= 0x40;
        remaining += 2 + password.len();
    }
    let mut w = Writer::start(buf, CONNECT << 4, remaining)?;
    w.str(b"MQTT")?;
    w.u8(4)?;
    w.u8(flags)?;
    w.u16(connect.keep_alive_secs)?;
    w.str(connect.client_id.as_bytes())?;
    if let Some(user) = connect.username {
        w.str(user.as_bytes())?;
    }
    if let Some(password) = connect.password {
        w.str(password)?;
    }
    Ok(w.done())
}

/// Writes a PUBLISH into `buf`; returns its length. `publish.pkid` must be set exactly
/// when the QoS is 1.
pub fn encode_publish(publish: &Publish<'_>, buf: &mut [u8]) -> Result<usize, Error> {
    let pkid_len = match (publish.qos, publish.pkid) {
        (QoS::AtMostOnce, None) => 0,
        (QoS::AtLeastOnce, Some(pkid)) if pkid != 0 => 2,
        _ => return Err(protocol("a QoS 1 publish needs a non-zero packet id, QoS 0 none")),
    };
    let flags = (u8::from(publish.dup) << 3) | (publish.qos.bits() << 1) | u8::from(publish.retain);
    let remaining = 2 + publish.topic.len() + pkid_len + publish.payload.len();
    let mut w = Writer::start(buf, (PUBLISH << 4) | flags, remaining)?;
    w.str(publish.topic.as_bytes())?;
    if let Some(pkid) = publish.pkid {
        w.u16(pkid)?;
    }
    w.bytes(publish.payload)?;
    Ok(w.done())
}

/// Writes a PUBACK for `pkid` into `buf`; returns its length (4).
pub fn encode_puback(pkid: u16, buf: &mut [u8]) -> Result<usize, Error> {
    let mut w = Writer::start(buf, PUBACK << 4, 2)?;
    w.u16(pkid)?;
    Ok(w.done())
}

/// Writes a SUBSCRIBE of `filters` (each with its maximum QoS) into `buf`; returns its
/// length.
pub fn encode_subscribe(pkid: u16, filters: &[(&str, QoS)], buf: &mut [u8]) -> Result<usize, Error> {
    if filters.is_empty() || pkid == 0 {
        return Err(protocol("a SUBSCRIBE needs a packet id and at least one filter"));
    }
    let remaining = 2 + filters.iter().map(|(f, _)| 2 + f.len() + 1).sum::<usize>();
    let mut w = Writer::start(buf, (SUBSCRIBE << 4) | 0b0010, remaining)?;
    w.u16(pkid)?;
    for (filter, qos) in filters {
        w.str(filter.as_bytes())?;
        w.u8(qos.bits())?;
    }
    Ok(w.done())
}

/// Writes a PINGREQ into `buf`; returns its length (2).
pub fn encode_pingreq(buf: &mut [u8]) -> Result<usize, Error> {
    Ok(Writer::start(buf, PINGREQ << 4, 0)?.done())
}

/// Writes a DISCONNECT into `buf`; returns its length (2).
pub fn encode_disconnect(buf: &mut [u8]) -> Result<usize, Error> {
    Ok(Writer::start(buf, DISCONNECT << 4, 0)?.done())
}

#[cfg(test)]
mod tests;
