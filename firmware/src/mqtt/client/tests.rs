//! Client tests over a scripted transport: what it writes, byte for byte, and how it
//! reads packets that arrive split, glued together, too large, or not at all.

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;

use super::*;
use crate::error::TransportError;

/// A transport that returns scripted chunks and records every byte written.
#[derive(Debug, Default)]
struct Script {
    incoming: VecDeque<Vec<u8>>,
    written: Vec<u8>,
    open: bool,
    opens: usize,
    closed_by_peer: bool,
}

impl Script {
    fn feed(&mut self, bytes: &[u8]) {
        self.incoming.push_back(bytes.to_vec());
    }

    fn take_written(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.written)
    }
}

impl Transport for Script {
    fn open(&mut self) -> Result<(), TransportError> {
        self.open = true;
        self.opens += 1;
        Ok(())
    }

    fn close(&mut self) {
        self.open = false;
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        let Some(mut chunk) = self.incoming.pop_front() else {
            return if self.closed_by_peer { Err(TransportError::Closed) } else { Ok(0) };
        };
        let n = chunk.len().min(buf.len());
        buf[..n].copy_from_slice(&chunk[..n]);
        if n < chunk.len() {
            self.incoming.push_front(chunk.split_off(n));
        }
        Ok(n)
    }

    fn write(&mut self, buf: &[u8]) -> Result<(), TransportError> {
        assert!(self.open, "write on a closed transport");
        self.written.extend_from_slice(buf);
        Ok(())
    }
}

type TestClient = Client<Script, 64, 128>;

const CONNACK: [u8; 4] = [0x20, 2, 0, 0];

fn connect_packet(keep_alive_secs: u16) -> Connect<'static> {
    Connect { client_id: "d1", keep_alive_secs, clean_session: true, username: None, password: None }
}

/// A client that has sent CONNECT and received the CONNACK at time 0.
fn connected(keep_alive_secs: u16) -> TestClient {
    let mut client = TestClient::new(Script::default());
    client.connect(&connect_packet(keep_alive_secs), 0).unwrap();
    client.transport_mut().feed(&CONNACK);
    assert!(matches!(client.poll(0).unwrap(), Some(Packet::ConnAck { code: 0, .. })));
    assert!(client.is_connected());
    client.transport_mut().take_written();
    client
}

#[test]
fn connect_writes_the_connect_packet_and_a_connack_makes_it_connected() {
    let mut client = TestClient::new(Script::default());
    client.connect(&connect_packet(30), 0).unwrap();
    assert_eq!(
        client.transport_mut().take_written(),
        [0x10, 0x0e, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30, 0, 2, b'd', b'1']
    );
    assert!(client.is_open() && !client.is_connected());
    assert_eq!(client.poll(0).unwrap(), None, "nothing arrived yet");
    assert_eq!(client.publish("t", b"x", QoS::AtMostOnce, false, 0), Err(Error::NotConnected));
    client.transport_mut().feed(&CONNACK);
    client.poll(0).unwrap();
    assert!(client.is_connected());
}

#[test]
fn a_refused_connack_closes_the_transport() {
    let mut client = TestClient::new(Script::default());
    client.connect(&connect_packet(30), 0).unwrap();
    client.transport_mut().feed(&[0x20, 2, 0, 5]);
    assert_eq!(client.poll(0), Err(Error::Refused { code: 5 }));
    assert!(!client.is_open());
    assert!(!client.transport().open);
}

#[test]
fn a_packet_before_the_connack_is_a_protocol_error() {
    let mut client = TestClient::new(Script::default());
    client.connect(&connect_packet(30), 0).unwrap();
    client.transport_mut().feed(&[0x40, 2, 0, 1]);
    assert!(matches!(client.poll(0), Err(Error::Protocol { .. })));
    assert!(!client.is_open());
}

#[test]
fn publish_and_subscribe_write_exact_packets_with_increasing_packet_ids() {
    let mut client = connected(0);
    assert_eq!(client.subscribe(&[("a/ack", QoS::AtLeastOnce)], 0).unwrap(), 1);
    assert_eq!(client.publish("t", b"hi", QoS::AtLeastOnce, false, 0).unwrap(), Some(2));
    assert_eq!(client.publish("t", b"!", QoS::AtMostOnce, true, 0).unwrap(), None);
    assert_eq!(client.inflight(), 1);
    let mut want = vec![0x82, 10, 0, 1, 0, 5, b'a', b'/', b'a', b'c', b'k', 1];
    want.extend_from_slice(&[0x32, 7, 0, 1, b't', 0, 2, b'h', b'i']);
    want.extend_from_slice(&[0x31, 4, 0, 1, b't', b'!']);
    assert_eq!(client.transport_mut().take_written(), want);
    client.transport_mut().feed(&[0x40, 2, 0, 2]);
    assert_eq!(client.poll(0).unwrap(), Some(Packet::PubAck { pkid: 2 }));
    assert_eq!(client.inflight(), 0);
}

#[test]
fn packet_ids_wrap_around_and_skip_zero() {
    let mut client = connected(0);
    client.next_pkid = u16::MAX;
    assert_eq!(client.publish("t", b"", QoS::AtLeastOnce, false, 0).unwrap(), Some(u16::MAX));
    assert_eq!(client.publish("t", b"", QoS::AtLeastOnce, false, 0).unwrap(), Some(1));
}

#[test]
fn a_qos1_publish_is_acked_only_when_the_next_poll_starts() {
    let mut client = connected(0);
    client.transport_mut().feed(&[0x32, 6, 0, 1, b'c', 0, 9, b'!']);
    let Some(Packet::Publish(p)) = client.poll(0).unwrap() else { panic!("no publish") };
    assert_eq!((p.topic, p.pkid, p.payload), ("c", Some(9), &b"!"[..]));
    assert!(client.transport_mut().take_written().is_empty(), "not acked while handled");
    assert_eq!(client.poll(0).unwrap(), None);
    assert_eq!(client.transport_mut().take_written(), [0x40, 2, 0, 9]);
}

#[test]
fn packets_split_byte_by_byte_or_glued_together_come_out_whole_and_in_order() {
    let mut client = connected(0);
    for byte in [0x40, 2, 0, 3] {
        client.transport_mut().feed(&[byte]);
    }
    client.transport_mut().feed(&[0xd0, 0, 0x40, 2, 0, 4, 0x40]);
    client.transport_mut().feed(&[2, 0, 5]);
    let mut seen = Vec::new();
    while let Some(packet) = client.poll(0).unwrap() {
        seen.push(packet.clone_kind());
    }
    assert_eq!(seen, ["puback 3", "pingresp", "puback 4", "puback 5"]);
}

#[test]
fn a_packet_larger_than_the_receive_buffer_is_skipped_acked_and_counted_and_the_session_goes_on() {
    let mut client = connected(0);
    // A QoS 1 publish of 203 bytes (pkid 7) arriving in small pieces, then a PUBACK.
    let mut big = vec![0x32, 200, 1, 0, 1, b't', 0, 7];
    big.extend(std::iter::repeat_n(b'x', 195));
    big.extend([0x40, 2, 0, 3]);
    for chunk in big.chunks(5) {
        client.transport_mut().feed(chunk);
    }
    assert_eq!(client.poll(0).unwrap().map(|p| p.clone_kind()).as_deref(), Some("puback 3"));
    assert!(client.is_connected());
    assert_eq!(client.skipped(), 1);
    assert_eq!(client.transport_mut().take_written(), [0x40, 2, 0, 7], "acked so it is not sent again");
    // A QoS 0 one arriving whole: skipped, nothing to ack.
    let mut big = vec![0x30, 100, 0, 1, b't'];
    big.extend(std::iter::repeat_n(b'y', 97));
    client.transport_mut().feed(&big);
    client.transport_mut().feed(&[0xd0, 0]);
    assert_eq!(client.poll(0).unwrap().map(|p| p.clone_kind()).as_deref(), Some("pingresp"));
    assert_eq!(client.skipped(), 2);
    assert!(client.transport_mut().take_written().is_empty());
}

#[test]
fn a_peer_that_closes_the_link_ends_the_session() {
    let mut client = connected(0);
    client.transport_mut().closed_by_peer = true;
    assert_eq!(client.poll(0), Err(Error::Transport(TransportError::Closed)));
    assert!(!client.is_open());
    assert_eq!(client.poll(0), Err(Error::NotConnected));
}

#[test]
fn keep_alive_pings_when_quiet_and_times_out_without_an_answer() {
    let mut client = connected(10);
    assert_eq!(client.poll(9_999).unwrap(), None);
    assert!(client.transport_mut().take_written().is_empty());
    assert_eq!(client.poll(10_000).unwrap(), None);
    assert_eq!(client.transport_mut().take_written(), [0xc0, 0]);
    client.transport_mut().feed(&[0xd0, 0]);
    assert_eq!(client.poll(10_500).unwrap(), Some(Packet::PingResp));
    // Sending alone does not keep the session alive: silence from the broker is checked too.
    client.publish("t", b"", QoS::AtMostOnce, false, 19_000).unwrap();
    client.transport_mut().take_written();
    assert_eq!(client.poll(20_500).unwrap(), None);
    assert_eq!(client.transport_mut().take_written(), [0xc0, 0]);
    assert_eq!(client.poll(30_499).unwrap(), None);
    assert_eq!(client.poll(30_500), Err(Error::Timeout));
    assert!(!client.is_open());
}

#[test]
fn disconnect_sends_disconnect_and_a_new_connect_reopens_the_transport() {
    let mut client = connected(0);
    client.disconnect(0);
    assert_eq!(client.transport_mut().take_written(), [0xe0, 0]);
    assert!(!client.transport().open);
    client.connect(&connect_packet(0), 1).unwrap();
    assert_eq!(client.transport().opens, 2);
}

trait Kind {
    fn clone_kind(&self) -> String;
}

impl Kind for Packet<'_> {
    fn clone_kind(&self) -> String {
        match self {
            Packet::PubAck { pkid } => format!("puback {pkid}"),
            Packet::PingResp => "pingresp".into(),
            other => format!("{other:?}"),
        }
    }
}
