//! A named device's event publishes go from the device gate straight to ingest, not through
//! the embedded broker (docs/architecture.md, "The device gate"). With the real binary, a
//! Mosquitto cloud and raw MQTT clients (so every byte the device gets is seen):
//!
//! - the gate's own PUBACKs, in order, and every event in the cloud in order;
//! - a device that only publishes outlives 1.5x its keep-alive: the gate pings the broker
//!   for it (without the pings rumqttd closes the connection after 3 s), and the device
//!   never gets a PINGRESP it did not ask for;
//! - MQTT 5 topic aliases: set by a publish the gate takes, used by the next one, and by a
//!   QoS 2 publish the broker gets (rewritten with its topic); an alias never set ends the
//!   connection with a protocol error.

use std::time::{Duration, Instant};

use edge_tests::clients::CloudSubscriber;
use edge_tests::gateway::{hash_password, Gateway, Setup};
use edge_tests::http::metric;
use edge_tests::mosquitto::Mosquitto;
use edge_tests::{event_json, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(30);
const PASSWORD: &str = "correct-horse-battery-9";

struct Rig {
    _cloud: Mosquitto,
    _data: tempfile::TempDir,
    setup: Setup,
    _gateway: Gateway,
    cloud: CloudSubscriber,
    v5: u16,
}

async fn rig() -> Rig {
    let cloud = Mosquitto::start();
    let subscriber = CloudSubscriber::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(cloud.port, data.path());
    let v5 = edge_tests::free_port();
    setup.devices = format!("listen_v5 = \"127.0.0.1:{v5}\"\n");
    setup.devices_auth = format!("users = {{ \"s1\" = \"{}\" }}\n", hash_password(PASSWORD));
    let gateway = Gateway::start(&setup);
    Rig { _cloud: cloud, _data: data, setup, _gateway: gateway, cloud: subscriber, v5 }
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend((s.len() as u16).to_be_bytes());
    out.extend(s);
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut n = body.len();
    loop {
        let byte = (n % 128) as u8;
        n /= 128;
        out.push(if n > 0 { byte | 0x80 } else { byte });
        if n == 0 {
            break;
        }
    }
    out.extend(body);
    out
}

/// CONNECT as s1, clean, at protocol `level`, with `keep_alive` seconds.
fn connect(level: u8, keep_alive: u16) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, b"MQTT");
    body.extend([level, 0xc2]);
    body.extend(keep_alive.to_be_bytes());
    if level == 5 {
        body.push(0);
    }
    string(&mut body, b"s1");
    string(&mut body, b"s1");
    string(&mut body, PASSWORD.as_bytes());
    packet(0x10, &body)
}

/// A PUBLISH of `qos` with packet id `id`; MQTT 5 with `alias` when given.
fn publish(level: u8, qos: u8, id: u16, topic: &str, alias: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, topic.as_bytes());
    if qos > 0 {
        body.extend(id.to_be_bytes());
    }
    if level == 5 {
        match alias {
            Some(alias) => body.extend([3, 0x23, (alias >> 8) as u8, alias as u8]),
            None => body.push(0),
        }
    }
    body.extend(payload);
    packet(0x30 | qos << 1, &body)
}

/// A device's connection: reads whole packets.
struct Device {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Device {
    async fn connect(port: u16, level: u8, keep_alive: u16) -> Device {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut device = Device { stream, buf: Vec::new() };
        device.send(&connect(level, keep_alive)).await;
        let connack = device.next().await.expect("a CONNACK");
        assert_eq!(connack[0], 0x20, "CONNACK: {connack:?}");
        // The return code (3.1.1) or reason code (5) follows the flags.
        assert_eq!(connack[3], 0, "accepted: {connack:?}");
        device
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next whole packet; None when the gateway closed the connection.
    async fn next(&mut self) -> Option<Vec<u8>> {
        loop {
            if self.buf.len() >= 2 {
                let (mut len, mut at, mut shift) = (0usize, 1, 0);
                while at < self.buf.len() {
                    let byte = self.buf[at];
                    len |= usize::from(byte & 0x7f) << shift;
                    shift += 7;
                    at += 1;
                    if byte & 0x80 == 0 {
                        if self.buf.len() >= at + len {
                            return Some(self.buf.drain(..at + len).collect());
                        }
                        break;
                    }
                }
            }
            let mut chunk = [0u8; 1024];
            match tokio::time::timeout(WAIT, self.stream.read(&mut chunk)).await.expect("the gateway answers") {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_only_publishes_outlives_its_keep_alive_and_gets_only_its_pubacks() {
    let rig = rig().await;
    let mut device = Device::connect(rig.setup.devices_port, 4, 2).await;
    // 30 events over 6 s (3x the keep-alive, twice the broker's 1.5x), never a PINGREQ.
    let started = Instant::now();
    for seq in 1..=30u16 {
        let event = event_json("s1", 1, u32::from(seq));
        device.send(&publish(4, 1, seq, "devices/s1/events", None, event.as_bytes())).await;
        let ack = device.next().await.unwrap_or_else(|| panic!("closed at event {seq} after {:?}", started.elapsed()));
        let [hi, lo] = seq.to_be_bytes();
        assert_eq!(ack, [0x40, 2, hi, lo], "the PUBACK of event {seq}, nothing else");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let got = rig.cloud.wait_distinct(30, WAIT);
    assert_eq!(got.distinct().len(), 30);
    got.in_order_per_device().unwrap();
    // The connection is still up: a PINGREQ of its own gets its PINGRESP.
    device.send(&[0xc0, 0]).await;
    assert_eq!(device.next().await, Some(vec![0xd0, 0]));
    let broker_closed = r#"edge_gateway_device_disconnects_total{reason="broker"}"#;
    assert_eq!(metric(rig.setup.http_port, broker_closed), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_topic_aliases_work_for_publishes_the_gate_takes_and_those_it_relays() {
    let rig = rig().await;
    let mut device = Device::connect(rig.v5, 5, 30).await;
    let topic = "devices/s1/events";
    // QoS 1 sets alias 7 (taken by the gate), QoS 1 and QoS 0 use it, QoS 2 uses it too
    // (relayed to the broker, which never saw the alias set).
    device.send(&publish(5, 1, 1, topic, Some(7), event_json("s1", 1, 1).as_bytes())).await;
    assert_eq!(device.next().await, Some(vec![0x40, 2, 0, 1]));
    device.send(&publish(5, 1, 2, "", Some(7), event_json("s1", 1, 2).as_bytes())).await;
    assert_eq!(device.next().await, Some(vec![0x40, 2, 0, 2]));
    device.send(&publish(5, 0, 0, "", Some(7), event_json("s1", 1, 3).as_bytes())).await;
    device.send(&publish(5, 2, 3, "", Some(7), event_json("s1", 1, 4).as_bytes())).await;
    let pubrec = device.next().await.expect("PUBREC");
    assert_eq!(pubrec[0], 0x50, "PUBREC from the broker: {pubrec:?}");
    device.send(&[0x62, 2, 0, 3]).await;
    let pubcomp = device.next().await.expect("PUBCOMP");
    assert_eq!(pubcomp[0], 0x70, "PUBCOMP: {pubcomp:?}");
    let got = rig.cloud.wait_distinct(4, WAIT);
    let seqs: Vec<u32> = got.events.iter().map(|e| e.2).collect();
    assert_eq!(got.distinct().len(), 4, "every event, by alias too: {seqs:?}");
    assert!(got.topics.iter().all(|t| !t.is_empty()));

    // An alias never set: a protocol error, the connection closed with its reason.
    device.send(&publish(5, 1, 4, "", Some(9), event_json("s1", 1, 5).as_bytes())).await;
    assert_eq!(device.next().await, Some(vec![0xe0, 2, 0x82, 0]), "DISCONNECT, protocol error");
    assert_eq!(device.next().await, None);
    let protocol = r#"edge_gateway_device_disconnects_total{reason="protocol"}"#;
    wait_until(WAIT, "the protocol disconnect counted", || {
        (metric(rig.setup.http_port, protocol) == Some(1.0)).then_some(())
    });
}
