//! An in-memory broker + gateway for device tests: a [`Transport`] whose other end
//! answers CONNECT, SUBSCRIBE, PUBLISH and PINGREQ like rumqttd, records every event,
//! and "commits" on demand, publishing the retained ack `{"boot":B,"seq":S}` as the
//! gateway does. Tests crash it, take it down, and make it misbehave.

#![allow(dead_code, clippy::unwrap_used)]

#[cfg(feature = "flash")]
pub mod flash;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use edge_event::{Ack, Dating, Event};
use edge_firmware::mqtt::packet::{self, Packet};
use edge_firmware::{Transport, TransportError};

/// What the broker side knows; shared between the test and the transport.
#[derive(Debug, Default)]
pub struct State {
    /// The transport is connected.
    pub open: bool,
    /// `open()` fails (nothing listening).
    pub down: bool,
    /// The next read reports a closed link (a crash); cleared by `open()`.
    pub cut: bool,
    /// Do not answer PINGREQ.
    pub silent: bool,
    /// Do not answer CONNECT.
    pub mute_connack: bool,
    /// Do not PUBACK.
    pub withhold_pubacks: bool,
    /// Times `open()` was called.
    pub opens: usize,
    /// Bytes for the device to read.
    pub to_device: VecDeque<u8>,
    /// Bytes written by the device, not yet parsed.
    pub from_device: Vec<u8>,
    /// Every event received, in arrival order (re-sends included).
    pub received: Vec<Event>,
    /// The dating of each of `received` (a version-2 envelope's age or uptime; None for
    /// version 1).
    pub datings: Vec<Option<Dating>>,
    /// Events received and not yet committed (lost by a crash).
    pub uncommitted: Vec<Event>,
    /// The committed mark.
    pub mark: Option<Ack>,
    /// Whether the device subscribed to its ack topic on this link.
    pub subscribed: bool,
    /// Topics subscribed on this link.
    pub filters: Vec<String>,
    /// Pings answered.
    pub pings: usize,
    /// The CONNACK code to answer every CONNECT with (0: accepted).
    pub connack_code: u8,
    /// User name and password of every CONNECT.
    pub logins: Vec<(Option<String>, Option<Vec<u8>>)>,
    /// Replies on `devices/{device}/commands/status`: (id, status, message).
    pub replies: Vec<(String, edge_event::command::ReplyStatus, String)>,
}

/// The transport the device under test owns; clones share the state.
#[derive(Debug, Clone, Default)]
pub struct FakeBroker(pub Rc<RefCell<State>>);

impl FakeBroker {
    pub fn state(&self) -> std::cell::RefMut<'_, State> {
        self.0.borrow_mut()
    }

    /// The gateway commits everything received since the last commit, dropping
    /// duplicates as the real one does, and publishes the mark if the device listens.
    pub fn commit(&self) {
        let mut s = self.state();
        let pending = std::mem::take(&mut s.uncommitted);
        for event in pending {
            let duplicate = matches!(s.mark, Some(m) if m.boot == event.boot && event.seq <= m.seq);
            if !duplicate {
                s.mark = Some(Ack { boot: event.boot, seq: event.seq });
            }
        }
        if let (Some(mark), true) = (s.mark, s.subscribed) {
            let device = s.received.first().map(|e| e.device.to_string()).unwrap_or_default();
            push_ack(&mut s, &device, mark);
        }
    }

    /// Crash: the link drops and whatever was not committed is lost.
    pub fn crash(&self) {
        let mut s = self.state();
        s.cut = true;
        s.uncommitted.clear();
    }

    /// `(boot, seq)` of every event received, re-sends included.
    pub fn received_ids(&self) -> Vec<(u32, u32)> {
        self.state().received.iter().map(|e| (e.boot, e.seq)).collect()
    }

    /// Queues raw bytes for the device.
    pub fn send_raw(&self, bytes: &[u8]) {
        self.state().to_device.extend(bytes);
    }

    /// Queues a QoS 1 publish for the device.
    pub fn publish_to_device(&self, topic: &str, payload: &[u8], pkid: u16) {
        let publish = packet::Publish {
            topic,
            pkid: Some(pkid),
            qos: packet::QoS::AtLeastOnce,
            retain: false,
            dup: false,
            payload,
        };
        let mut buf = [0u8; 2048];
        let len = packet::encode_publish(&publish, &mut buf).unwrap();
        self.send_raw(&buf[..len]);
    }
}

fn push_ack(s: &mut State, device: &str, mark: Ack) {
    let mut json = [0u8; Ack::MAX_JSON_LEN];
    let len = mark.encode_json(&mut json).unwrap();
    let topic = format!("devices/{device}/ack");
    let publish = packet::Publish {
        topic: &topic,
        pkid: None,
        qos: packet::QoS::AtMostOnce,
        retain: false,
        dup: false,
        payload: &json[..len],
    };
    let mut buf = [0u8; 128];
    let n = packet::encode_publish(&publish, &mut buf).unwrap();
    s.to_device.extend(&buf[..n]);
}

/// Handles every complete packet the device wrote.
fn serve(s: &mut State) {
    while let Some(total) = packet::frame_len(&s.from_device).unwrap() {
        if total > s.from_device.len() {
            return;
        }
        let frame: Vec<u8> = s.from_device.drain(..total).collect();
        let header = total - body_len(&frame);
        let body = &frame[header..];
        match frame[0] >> 4 {
            1 => {
                let id_len = usize::from(u16::from_be_bytes([body[10], body[11]]));
                assert_eq!(body[7] & 0x02, 0x02, "clean session");
                assert!(id_len > 0);
                let mut at = 12 + id_len;
                let mut field = |present: bool| {
                    present.then(|| {
                        let len = usize::from(u16::from_be_bytes([body[at], body[at + 1]]));
                        at += 2 + len;
                        body[at - len..at].to_vec()
                    })
                };
                let user = field(body[7] & 0x80 != 0).map(|u| String::from_utf8(u).unwrap());
                let password = field(body[7] & 0x40 != 0);
                s.logins.push((user, password));
                if !s.mute_connack {
                    let code = s.connack_code;
                    s.to_device.extend([0x20, 2, 0, code]);
                }
            }
            3 => {
                let Some((Packet::Publish(p), _)) = packet::decode(&frame).unwrap() else { unreachable!() };
                if p.topic.ends_with("/commands/status") {
                    let reply =
                        edge_event::command::Reply::decode(p.payload).expect("the device sends postcard replies");
                    s.replies.push((reply.id.to_owned(), reply.status, reply.message.to_owned()));
                    if let Some(pkid) = p.pkid {
                        s.to_device.extend([0x40, 2, (pkid >> 8) as u8, pkid as u8]);
                    }
                    continue;
                }
                let (event, dating) = edge_event::decode_dated(p.payload).expect("the device sends postcard envelopes");
                s.received.push(event.clone());
                s.datings.push(dating);
                s.uncommitted.push(event);
                if let (Some(pkid), false) = (p.pkid, s.withhold_pubacks) {
                    s.to_device.extend([0x40, 2, (pkid >> 8) as u8, pkid as u8]);
                }
            }
            8 => {
                let pkid = [body[0], body[1]];
                let mut at = 2;
                let mut codes = Vec::new();
                while at < body.len() {
                    let len = usize::from(u16::from_be_bytes([body[at], body[at + 1]]));
                    s.filters.push(String::from_utf8(body[at + 2..at + 2 + len].to_vec()).unwrap());
                    codes.push(body[at + 2 + len]);
                    at += 3 + len;
                }
                s.to_device.extend([0x90, 2 + codes.len() as u8, pkid[0], pkid[1]]);
                s.to_device.extend(codes);
                s.subscribed = true;
                if let Some(mark) = s.mark {
                    let device = s.filters[0].trim_start_matches("devices/").trim_end_matches("/ack").to_owned();
                    push_ack(s, &device, mark);
                }
            }
            4 => {} // the device's PUBACK of a command
            12 if !s.silent => {
                s.pings += 1;
                s.to_device.extend([0xd0, 0]);
            }
            12 => {}
            14 => s.open = false,
            other => panic!("unexpected packet type {other} from the device"),
        }
    }
}

fn body_len(frame: &[u8]) -> usize {
    let header = 1 + frame[1..].iter().position(|b| b & 0x80 == 0).unwrap() + 1;
    frame.len() - header
}

impl Transport for FakeBroker {
    fn open(&mut self) -> Result<(), TransportError> {
        let mut s = self.state();
        s.opens += 1;
        if s.down {
            return Err(TransportError::Open);
        }
        s.open = true;
        s.cut = false;
        s.subscribed = false;
        s.filters.clear();
        s.to_device.clear();
        s.from_device.clear();
        Ok(())
    }

    fn close(&mut self) {
        self.state().open = false;
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        let mut s = self.state();
        if s.cut || !s.open {
            s.open = false;
            return Err(TransportError::Closed);
        }
        let n = buf.len().min(s.to_device.len());
        for (slot, byte) in buf.iter_mut().zip(s.to_device.drain(..n)) {
            *slot = byte;
        }
        Ok(n)
    }

    fn write(&mut self, buf: &[u8]) -> Result<(), TransportError> {
        let mut s = self.state();
        if s.cut || !s.open {
            return Err(TransportError::Closed);
        }
        s.from_device.extend_from_slice(buf);
        serve(&mut s);
        Ok(())
    }
}
