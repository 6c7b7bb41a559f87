//! One MQTT session over a [`Transport`]: the bytes in and out, the packet ids, the
//! keep-alive. Poll-driven: [`Client::poll`] hands out one received packet at a time,
//! borrowed from the receive buffer, and never blocks.
//!
//! # Invariants
//!
//! - Any error that leaves the session in an unknown state (transport, protocol, refused,
//!   timeout) closes the transport first; the client is then [closed](Client::is_open)
//!   until the next [`Client::connect`].
//! - A packet larger than the receive buffer is not an error: its bytes are read and
//!   thrown away as they arrive, it is counted ([`Client::skipped`]), and a QoS 1 PUBLISH
//!   among them is PUBACKed (its packet id comes before the payload) so that the broker
//!   does not send it again. The session goes on: a retained message too large for the
//!   device cannot make it reconnect for ever.
//! - A received QoS 1 PUBLISH is acknowledged when the *next* `poll` starts, after the
//!   caller has handled it: at least once, never "acked but not seen".
//! - Keep-alive: a PINGREQ goes out when nothing was sent, or nothing received, for the
//!   keep-alive period; no answer within another period is [`Error::Timeout`].

use crate::error::Error;
use crate::mqtt::packet::{self, Connect, Packet, Publish, QoS};
use crate::transport::Transport;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    AwaitingConnAck,
    Connected,
}

/// What `poll` learned about a packet before handing it out (no borrow of the buffer).
#[derive(Debug, Clone, Copy)]
enum Seen {
    ConnAck { code: u8 },
    PubAck,
    PingResp,
    Publish { puback: Option<u16> },
    Other,
}

/// An MQTT 3.1.1 client session over `T`, with an `RX`-byte receive buffer (the largest
/// packet it accepts) and a `TX`-byte transmit buffer (the largest packet it sends).
#[derive(Debug)]
pub struct Client<T, const RX: usize, const TX: usize> {
    transport: T,
    state: State,
    rx: [u8; RX],
    rx_len: usize,
    /// Length of the packet the last `poll` handed out; dropped at the next call.
    handed_out: usize,
    /// The PUBACK owed for the QoS 1 publish the last `poll` handed out.
    owed_puback: Option<u16>,
    tx: [u8; TX],
    keep_alive_ms: u64,
    last_sent_ms: u64,
    last_received_ms: u64,
    ping_sent_ms: Option<u64>,
    next_pkid: u16,
    inflight: usize,
    /// Bytes of an oversized packet still to be read and thrown away.
    skip: usize,
    /// Oversized packets skipped since the client was created.
    skipped: u64,
}

impl<T: Transport, const RX: usize, const TX: usize> Client<T, RX, TX> {
    /// A closed client over `transport`.
    pub const fn new(transport: T) -> Self {
        Client {
            transport,
            state: State::Closed,
            rx: [0; RX],
            rx_len: 0,
            handed_out: 0,
            owed_puback: None,
            tx: [0; TX],
            keep_alive_ms: 0,
            last_sent_ms: 0,
            last_received_ms: 0,
            ping_sent_ms: None,
            next_pkid: 1,
            inflight: 0,
            skip: 0,
            skipped: 0,
        }
    }

    /// Opens the transport and sends CONNECT; the CONNACK arrives through
    /// [`Client::poll`] (a refusal is [`Error::Refused`]). Any session still open is
    /// dropped first.
    pub fn connect(&mut self, connect: &Connect<'_>, now_ms: u64) -> Result<(), Error> {
        self.abort();
        self.transport.open()?;
        self.keep_alive_ms = u64::from(connect.keep_alive_secs) * 1000;
        self.last_received_ms = now_ms;
        self.state = State::AwaitingConnAck;
        self.send(|buf| packet::encode_connect(connect, buf), now_ms).map_err(|err| self.fail(err))
    }

    /// True from [`Client::connect`] until the session is closed or fails.
    pub fn is_open(&self) -> bool {
        self.state != State::Closed
    }

    /// True once the broker accepted the connection.
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// Packets larger than the receive buffer that were skipped (never handed out).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// QoS 1 publishes sent on this session and not yet PUBACKed.
    pub fn inflight(&self) -> usize {
        self.inflight
    }

    /// Sends a SUBSCRIBE of `filters`; returns its packet id (the SUBACK carries it).
    pub fn subscribe(&mut self, filters: &[(&str, QoS)], now_ms: u64) -> Result<u16, Error> {
        self.require_connected()?;
        let pkid = self.take_pkid();
        self.send(|buf| packet::encode_subscribe(pkid, filters, buf), now_ms)?;
        Ok(pkid)
    }

    /// Sends a PUBLISH; returns its packet id for QoS 1. The message is the broker's once
    /// its PUBACK arrives (see [`Client::inflight`]).
    pub fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        now_ms: u64,
    ) -> Result<Option<u16>, Error> {
        self.require_connected()?;
        let pkid = match qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => Some(self.take_pkid()),
        };
        let publish = Publish { topic, pkid, qos, retain, dup: false, payload };
        self.send(|buf| packet::encode_publish(&publish, buf), now_ms)?;
        if pkid.is_some() {
            self.inflight += 1;
        }
        Ok(pkid)
    }

    /// The next packet from the broker, if a whole one has arrived: `Ok(None)` when
    /// there is nothing (more) to read now. Also sends the PUBACK owed for the previous
    /// packet and keeps the session alive; call it often.
    pub fn poll(&mut self, now_ms: u64) -> Result<Option<Packet<'_>>, Error> {
        if self.state == State::Closed {
            return Err(Error::NotConnected);
        }
        self.release(now_ms)?;
        self.keep_alive(now_ms)?;
        let Some(total) = self.fill(now_ms)? else {
            return Ok(None);
        };
        let seen = match packet::decode(&self.rx[..self.rx_len]) {
            Ok(Some((packet, _))) => see(&packet),
            Ok(None) => return Ok(None),
            Err(err) => return Err(self.fail(err)),
        };
        self.last_received_ms = now_ms;
        self.handed_out = total;
        match (seen, self.state) {
            (Seen::ConnAck { code: 0 }, State::AwaitingConnAck) => {
                self.state = State::Connected;
                self.inflight = 0;
            }
            (Seen::ConnAck { code }, State::AwaitingConnAck) => {
                return Err(self.fail(Error::Refused { code }));
            }
            (Seen::ConnAck { .. }, _) => {
                return Err(self.fail(protocol("a second CONNACK")));
            }
            (_, State::AwaitingConnAck) => {
                return Err(self.fail(protocol("a packet before the CONNACK")));
            }
            (Seen::PubAck, _) => self.inflight = self.inflight.saturating_sub(1),
            (Seen::PingResp, _) => self.ping_sent_ms = None,
            (Seen::Publish { puback }, _) => self.owed_puback = puback,
            (Seen::Other, _) => {}
        }
        Ok(packet::decode(&self.rx[..total]).ok().flatten().map(|(p, _)| p))
    }

    /// Reads until a whole packet is buffered; its length, or `None` when the transport
    /// has nothing more right now. Oversized packets are skipped on the way.
    fn fill(&mut self, now_ms: u64) -> Result<Option<usize>, Error> {
        loop {
            if self.skip > 0 {
                let n = self.skip.min(self.rx_len);
                self.rx.copy_within(n..self.rx_len, 0);
                self.rx_len -= n;
                self.skip -= n;
            }
            if self.skip == 0 {
                match packet::frame_len(&self.rx[..self.rx_len]) {
                    Err(err) => return Err(self.fail(err)),
                    Ok(Some(total)) if total <= self.rx_len => return Ok(Some(total)),
                    Ok(Some(total)) if total > RX && self.oversized(total, now_ms)? => continue,
                    Ok(_) => {}
                }
            }
            let free = RX - self.rx_len;
            match self.transport.read(&mut self.rx[self.rx_len..]) {
                Ok(0) => return Ok(None),
                Ok(n) => self.rx_len += n.min(free),
                Err(err) => return Err(self.fail(err.into())),
            }
        }
    }

    /// Starts skipping the oversized packet at the front of the buffer, once enough of it
    /// is there to find a QoS 1 PUBLISH's packet id (PUBACKed at once); false while more
    /// bytes are needed for that.
    fn oversized(&mut self, total: usize, now_ms: u64) -> Result<bool, Error> {
        let head = &self.rx[..self.rx_len];
        let puback = match packet::publish_pkid(head) {
            Some(found) => found,
            None if self.rx_len < RX => return Ok(false),
            // The topic alone does not fit the buffer: nothing to acknowledge by.
            None => None,
        };
        self.skip = total;
        self.skipped += 1;
        if let Some(pkid) = puback {
            self.send(|buf| packet::encode_puback(pkid, buf), now_ms)?;
        }
        Ok(true)
    }

    /// Drops the packet handed out last and sends the PUBACK it was owed.
    fn release(&mut self, now_ms: u64) -> Result<(), Error> {
        if self.handed_out > 0 {
            self.rx.copy_within(self.handed_out..self.rx_len, 0);
            self.rx_len -= self.handed_out;
            self.handed_out = 0;
        }
        if let Some(pkid) = self.owed_puback.take() {
            self.send(|buf| packet::encode_puback(pkid, buf), now_ms)?;
        }
        Ok(())
    }

    fn keep_alive(&mut self, now_ms: u64) -> Result<(), Error> {
        if self.state != State::Connected || self.keep_alive_ms == 0 {
            return Ok(());
        }
        if let Some(sent) = self.ping_sent_ms {
            if now_ms.saturating_sub(sent) >= self.keep_alive_ms {
                return Err(self.fail(Error::Timeout));
            }
            return Ok(());
        }
        let quiet = now_ms.saturating_sub(self.last_sent_ms.min(self.last_received_ms));
        if quiet >= self.keep_alive_ms {
            self.send(packet::encode_pingreq, now_ms)?;
            self.ping_sent_ms = Some(now_ms);
        }
        Ok(())
    }

    /// When [`Client::poll`] must run next even if nothing arrives (ms): a packet handed out
    /// is still to be released (its PUBACK owed), a ping is due, or a ping's answer is
    /// late. `None` when only incoming bytes can make work.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.state == State::Closed {
            return None;
        }
        if self.handed_out > 0 || self.owed_puback.is_some() {
            return Some(0);
        }
        if self.state != State::Connected || self.keep_alive_ms == 0 {
            return None;
        }
        Some(match self.ping_sent_ms {
            Some(sent) => sent + self.keep_alive_ms,
            None => self.last_sent_ms.min(self.last_received_ms) + self.keep_alive_ms,
        })
    }

    /// Pushes buffered bytes out through the transport.
    pub fn flush(&mut self) -> Result<(), Error> {
        if self.state == State::Closed {
            return Ok(());
        }
        self.transport.flush().map_err(|err| self.fail(err.into()))
    }

    /// Ends the session politely (DISCONNECT, then close).
    pub fn disconnect(&mut self, now_ms: u64) {
        if self.state == State::Connected && self.send(packet::encode_disconnect, now_ms).is_ok() {
            let _ = self.transport.flush();
        }
        self.abort();
    }

    /// Drops the session at once, without a DISCONNECT.
    pub fn abort(&mut self) {
        if self.state != State::Closed {
            self.transport.close();
        }
        self.state = State::Closed;
        self.rx_len = 0;
        self.handed_out = 0;
        self.owed_puback = None;
        self.ping_sent_ms = None;
        self.inflight = 0;
        self.skip = 0;
    }

    /// The transport, for inspection.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The transport, for tweaking it between sessions.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    fn require_connected(&self) -> Result<(), Error> {
        match self.state {
            State::Connected => Ok(()),
            _ => Err(Error::NotConnected),
        }
    }

    fn take_pkid(&mut self) -> u16 {
        let pkid = self.next_pkid;
        self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
        pkid
    }

    /// Encodes into the transmit buffer and writes it; a write failure closes the session.
    fn send(&mut self, encode: impl FnOnce(&mut [u8]) -> Result<usize, Error>, now_ms: u64) -> Result<(), Error> {
        let len = encode(&mut self.tx)?;
        let bytes = self.tx.get(..len).unwrap_or_default();
        if let Err(err) = self.transport.write(bytes) {
            return Err(self.fail(err.into()));
        }
        self.last_sent_ms = now_ms;
        Ok(())
    }

    fn fail(&mut self, err: Error) -> Error {
        self.abort();
        err
    }
}

fn see(packet: &Packet<'_>) -> Seen {
    match packet {
        Packet::ConnAck { code, .. } => Seen::ConnAck { code: *code },
        Packet::PubAck { .. } => Seen::PubAck,
        Packet::PingResp => Seen::PingResp,
        Packet::Publish(p) => Seen::Publish { puback: p.pkid },
        Packet::SubAck { .. } | Packet::UnsubAck { .. } => Seen::Other,
    }
}

const fn protocol(reason: &'static str) -> Error {
    Error::Protocol { reason }
}

#[cfg(test)]
mod tests;
