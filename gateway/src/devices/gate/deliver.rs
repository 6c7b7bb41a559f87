//! Broker -> device, packet by packet: the gate's own packets for the device (the PUBACKs of
//! publishes it took itself, [`super::uplink`]) go between whole packets of the broker's; a
//! PINGRESP answering a PINGREQ the gate sent on the device's behalf is not passed on; and
//! for an MQTT 5 client that set a Maximum Packet Size, a PUBLISH larger than that is not
//! sent, and the gate behaves as if it had been delivered [MQTT-3.1.2-25]: it acknowledges
//! it to the broker itself (PUBACK for QoS 1; PUBREC, then PUBCOMP for the broker's PUBREL,
//! for QoS 2), so the broker's inflight window does not fill with messages that will never
//! be acknowledged.
//!
//! Either way the broker's side is read to its end, also when the device is gone (relay.rs,
//! rules 1 and 2); the device's writer is handed back (unless the device is gone) so the
//! gate can send an MQTT 5 DISCONNECT before it closes the device.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::devices::mqtt::{self, Next};

/// The client's own limit, and where the gate's acknowledgements to the broker go (to the
/// uplink, which writes them between whole packets). The channel is unbounded, but what
/// waits in it is bounded by the broker's inflight window: each entry is a publish it has
/// not had acknowledged.
pub(super) struct Bound {
    /// The client's Maximum Packet Size in bytes.
    pub max: usize,
    /// Acknowledgements for the broker.
    pub owed: mpsc::UnboundedSender<[u8; 4]>,
}

/// What the uplink sends the device through the downlink.
pub(super) struct FromGate<'a> {
    /// Whole packets for the device (PUBACKs), in the order the uplink owes them. Unbounded,
    /// but what waits is bounded by the device's own inflight window.
    pub packets: mpsc::UnboundedReceiver<Vec<u8>>,
    /// PINGREQs the gate sent the broker for the device whose PINGRESP has not come yet.
    pub pings: &'a AtomicU32,
}

/// Relays the broker's packets (`pending` first: what came with its CONNACK) and the gate's
/// to the device until the broker closes; `dropped(bytes)` is called for each publish not
/// delivered. Returns the device's writer, or None when the device is gone.
pub(super) async fn downlink<W: AsyncWrite + Unpin>(
    mut broker: impl AsyncRead + Unpin,
    mut client: W,
    pending: Vec<u8>,
    bound: Option<Bound>,
    mut gate: FromGate<'_>,
    dropped: impl Fn(usize),
) -> Option<W> {
    let mut device_gone = false;
    let mut buf = pending;
    let mut pubrel_owed = HashSet::new();
    loop {
        if !device_gone && !buf.is_empty() {
            if bound.is_none() && gate.pings.load(Ordering::Acquire) == 0 {
                // The common case: every whole packet goes as it is, without a copy.
                let at = whole_packets(&buf);
                if at > 0 {
                    device_gone = client.write_all(&buf[..at]).await.is_err();
                    buf.drain(..at);
                }
            } else {
                let send = filtered(&mut buf, bound.as_ref(), gate.pings, &mut pubrel_owed, &dropped);
                if !send.is_empty() {
                    device_gone = client.write_all(&send).await.is_err();
                }
            }
        }
        if device_gone {
            buf.clear();
        }
        if buf.capacity() - buf.len() < 4 * 1024 {
            buf.reserve(8 * 1024);
        }
        // Both are cancel-safe: a read that loses the race has read nothing, and a packet of
        // the gate's is taken only when its branch runs.
        tokio::select! {
            read = broker.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            Some(packets) = gate.packets.recv(), if !device_gone => {
                device_gone = client.write_all(&packets).await.is_err();
            }
        }
    }
    (!device_gone).then_some(client)
}

/// The length of the whole packets at the start of `buf` (the broker sends only well-formed
/// packets; anything else waits, as an incomplete packet does).
fn whole_packets(buf: &[u8]) -> usize {
    let mut at = 0;
    while let Next::Packet(frame) = mqtt::next(&buf[at..], usize::MAX) {
        at += frame.len;
    }
    at
}

/// Takes the complete packets at the start of `buf` and returns what may be sent to the
/// client; an incomplete packet stays in `buf`.
fn filtered(
    buf: &mut Vec<u8>,
    bound: Option<&Bound>,
    pings: &AtomicU32,
    pubrel_owed: &mut HashSet<u16>,
    dropped: &impl Fn(usize),
) -> Vec<u8> {
    let mut out = Vec::with_capacity(buf.len());
    let mut at = 0;
    while let Next::Packet(frame) = mqtt::next(&buf[at..], usize::MAX) {
        let packet = &buf[at..at + frame.len];
        let mut keep = true;
        if frame.kind == mqtt::PINGRESP && pings.load(Ordering::Acquire) > 0 {
            // The answer to the gate's own PINGREQ (uplink.rs): the device did not ask.
            pings.fetch_sub(1, Ordering::AcqRel);
            keep = false;
        } else if let (true, Some(bound)) = (frame.kind == mqtt::PUBLISH, bound.filter(|b| frame.len > b.max)) {
            keep = false;
            dropped(frame.len);
            let qos = (frame.first >> 1) & 0x03;
            if let Some(id) = mqtt::publish_packet_id(&frame, packet) {
                let [hi, lo] = id.to_be_bytes();
                if qos == 2 {
                    pubrel_owed.insert(id);
                    let _ = bound.owed.send([0x50, 0x02, hi, lo]);
                } else {
                    let _ = bound.owed.send([0x40, 0x02, hi, lo]);
                }
            }
        } else if let (true, Some(bound)) = (frame.kind == mqtt::PUBREL && frame.len >= 4, bound) {
            let id = u16::from_be_bytes([packet[frame.body], packet[frame.body + 1]]);
            if pubrel_owed.remove(&id) {
                keep = false;
                let [hi, lo] = id.to_be_bytes();
                let _ = bound.owed.send([0x70, 0x02, hi, lo]);
            }
        }
        // Other packets are a few bytes (acknowledgements, PINGRESP) and go through.
        if keep {
            out.extend_from_slice(packet);
        }
        at += frame.len;
    }
    buf.drain(..at);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(qos: u8, id: u16, payload_len: usize) -> Vec<u8> {
        let mut body = vec![0, 1, b't'];
        if qos > 0 {
            body.extend(id.to_be_bytes());
        }
        body.push(0); // MQTT 5: no properties
        body.extend(std::iter::repeat_n(b'x', payload_len));
        let mut packet = vec![0x30 | qos << 1];
        crate::devices::mqtt::v5::put_varint(&mut packet, body.len());
        packet.extend(body);
        packet
    }

    #[test]
    fn publishes_over_the_clients_maximum_are_dropped_and_acknowledged_to_the_broker() {
        let (owed, mut acks) = mpsc::unbounded_channel();
        let bound = Bound { max: 64, owed };
        let small = publish(1, 7, 10);
        let mut buf =
            [small.clone(), publish(1, 8, 100), publish(2, 9, 100), publish(0, 0, 100), vec![0xd0, 0]].concat();
        buf.extend_from_slice(&small[..5]);
        let count = std::cell::Cell::new(0);
        let mut owed_pubrel = HashSet::new();
        let none_owed = AtomicU32::new(0);
        let out = filtered(&mut buf, Some(&bound), &none_owed, &mut owed_pubrel, &|_| count.set(count.get() + 1));
        assert_eq!(out, [small.clone(), vec![0xd0, 0]].concat(), "the small publish and the PINGRESP");
        assert_eq!(buf, small[..5], "an incomplete packet waits");
        assert_eq!(count.get(), 3);
        assert_eq!(acks.try_recv().unwrap(), [0x40, 2, 0, 8], "PUBACK for the QoS 1 publish");
        assert_eq!(acks.try_recv().unwrap(), [0x50, 2, 0, 9], "PUBREC for the QoS 2 publish");
        assert!(acks.try_recv().is_err(), "nothing for QoS 0");
        let mut pubrels = vec![0x62, 2, 0, 9, 0x62, 2, 0, 3];
        let out = filtered(&mut pubrels, Some(&bound), &none_owed, &mut owed_pubrel, &|_| ());
        assert_eq!(out, [0x62, 2, 0, 3], "only the PUBREL of a delivered publish reaches the client");
        assert_eq!(acks.try_recv().unwrap(), [0x70, 2, 0, 9], "PUBCOMP for the dropped one");
    }

    #[test]
    fn only_as_many_pingresps_as_the_gate_asked_for_are_kept_from_the_device() {
        let pings = AtomicU32::new(1);
        let small = publish(0, 0, 3);
        let mut buf = [vec![0xd0, 0], small.clone(), vec![0xd0, 0]].concat();
        let out = filtered(&mut buf, None, &pings, &mut HashSet::new(), &|_| ());
        assert_eq!(out, [small, vec![0xd0, 0]].concat(), "the gate's PINGRESP is taken, the device's passes");
        assert_eq!(pings.load(Ordering::Acquire), 0);
        assert!(buf.is_empty());
    }

    #[test]
    fn only_whole_packets_go_to_the_device() {
        let packet = publish(1, 7, 10);
        let buf = [packet.clone(), packet[..4].to_vec()].concat();
        assert_eq!(whole_packets(&buf), packet.len());
        assert_eq!(whole_packets(&packet[..4]), 0);
    }
}
