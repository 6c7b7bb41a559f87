//! A broker and gateway inside the firmware, behind the [`Transport`] trait: it answers
//! CONNECT, SUBSCRIBE, PUBLISH and PINGREQ, prints every event PUBLISH it receives as a
//! hex line, "commits" events and publishes the gateway's ack, and can cut the link once,
//! losing what it had not committed, so the device must re-send. No network on the
//! emulated board: this shows the MQTT bytes the Cortex-M produces.

use edge_event::Ack;
use edge_firmware::mqtt::packet::{self, Packet, QoS};
use edge_firmware::{Transport, TransportError};
use heapless::{Deque, Vec};

use crate::print_hex;

/// The loopback's state.
pub struct Loopback {
    /// Bytes for the device to read.
    to_device: Deque<u8, 1024>,
    /// Bytes the device wrote, not yet handled.
    from_device: Vec<u8, 1024>,
    open: bool,
    /// The committed mark, published retained on the ack topic.
    mark: Option<Ack>,
    /// The last event received and not committed yet.
    received: Option<Ack>,
    /// Event publishes received so far.
    pub publishes: u32,
    /// Cut the link when this many publishes have arrived (once).
    pub cut_after: Option<u32>,
    /// Commit (and ack) every this many publishes.
    pub commit_every: u32,
}

impl Loopback {
    /// A closed loopback.
    pub const fn new(cut_after: Option<u32>, commit_every: u32) -> Loopback {
        Loopback {
            to_device: Deque::new(),
            from_device: Vec::new(),
            open: false,
            mark: None,
            received: None,
            publishes: 0,
            cut_after,
            commit_every,
        }
    }

    fn reply(&mut self, bytes: &[u8]) {
        for &b in bytes {
            // The device drains faster than this fills; a full queue would only lose a reply.
            let _ = self.to_device.push_back(b);
        }
    }

    fn commit(&mut self) {
        let Some(ack) = self.received.take() else {
            return;
        };
        self.mark = Some(ack);
        self.publish_ack(ack);
    }

    fn publish_ack(&mut self, ack: Ack) {
        let mut json = [0u8; Ack::MAX_JSON_LEN];
        let Ok(len) = ack.encode_json(&mut json) else {
            return;
        };
        let publish = packet::Publish {
            topic: "devices/qemu-m3/ack",
            pkid: None,
            qos: QoS::AtMostOnce,
            retain: true,
            dup: false,
            payload: &json[..len],
        };
        let mut buf = [0u8; 96];
        if let Ok(n) = packet::encode_publish(&publish, &mut buf) {
            self.reply(&buf[..n]);
        }
    }

    /// Handles every complete packet the device wrote.
    fn serve(&mut self) {
        while let Ok(Some(total)) = packet::frame_len(&self.from_device) {
            if total > self.from_device.len() {
                return;
            }
            let mut frame = [0u8; 1024];
            frame[..total].copy_from_slice(&self.from_device[..total]);
            let rest = self.from_device.len() - total;
            self.from_device.copy_within(total.., 0);
            self.from_device.truncate(rest);
            self.handle(&frame[..total]);
        }
    }

    fn handle(&mut self, frame: &[u8]) {
        match frame[0] >> 4 {
            1 => self.reply(&[0x20, 2, 0, 0]),
            8 => {
                // SUBACK for the two filters, then the retained ack, as rumqttd does.
                let header = 1 + frame[1..].iter().position(|b| b & 0x80 == 0).unwrap_or(0) + 1;
                self.reply(&[0x90, 4, frame[header], frame[header + 1], 1, 1]);
                if let Some(mark) = self.mark {
                    self.publish_ack(mark);
                }
            }
            3 => {
                let Ok(Some((Packet::Publish(p), _))) = packet::decode(frame) else {
                    return;
                };
                if p.topic.ends_with("/commands/status") {
                    // The device's `ready` after subscribing: no event; acked, not printed.
                    if let Some(pkid) = p.pkid {
                        self.reply(&[0x40, 2, (pkid >> 8) as u8, pkid as u8]);
                    }
                    return;
                }
                print_hex("mqtt ", frame);
                self.publishes += 1;
                if let Ok(event) = edge_event::decode(p.payload) {
                    self.received = Some(Ack { boot: event.boot, seq: event.seq });
                }
                if let Some(pkid) = p.pkid {
                    self.reply(&[0x40, 2, (pkid >> 8) as u8, pkid as u8]);
                }
                if self.cut_after == Some(self.publishes) {
                    // A gateway crash: the link drops and the last events were never committed.
                    self.cut_after = None;
                    self.received = None;
                    self.open = false;
                } else if self.publishes.is_multiple_of(self.commit_every) {
                    self.commit();
                }
            }
            12 => self.reply(&[0xd0, 0]),
            14 => self.open = false,
            _ => {}
        }
    }

    /// Commits what is pending; the gateway's group commit does this when it is idle.
    pub fn flush_commits(&mut self) {
        self.commit();
    }
}

impl Transport for Loopback {
    fn open(&mut self) -> Result<(), TransportError> {
        self.open = true;
        self.to_device.clear();
        self.from_device.clear();
        Ok(())
    }

    fn close(&mut self) {
        self.open = false;
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        if !self.open {
            return Err(TransportError::Closed);
        }
        let mut n = 0;
        while n < buf.len() {
            let Some(b) = self.to_device.pop_front() else {
                break;
            };
            buf[n] = b;
            n += 1;
        }
        Ok(n)
    }

    fn write(&mut self, buf: &[u8]) -> Result<(), TransportError> {
        if !self.open {
            return Err(TransportError::Closed);
        }
        self.from_device.extend_from_slice(buf).map_err(|_| TransportError::Io)?;
        self.serve();
        Ok(())
    }
}
