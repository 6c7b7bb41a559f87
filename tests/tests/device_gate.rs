//! The device gate's handling of connections, driven byte by byte over raw TCP against the
//! real binary: reconnects that reuse the inner broker's connection ids, and the
//! disconnects the gateway causes (each logged and counted by reason).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use edge_tests::gateway::{Gateway, Setup};
use edge_tests::mosquitto::Mosquitto;

/// A raw MQTT 3.1.1 client: just enough to connect, publish, ping and disconnect.
struct Raw(TcpStream);

impl Raw {
    /// Connects and sends a CONNECT (MQTT 3.1.1, clean session, keep-alive 30 s).
    fn connect(port: u16, client_id: &str) -> Raw {
        Raw::connect_with(port, client_id, 4, 0x02, 30)
    }

    /// Connects and sends a CONNECT of protocol `level`, connect `flags` and `keep_alive`.
    fn connect_with(port: u16, client_id: &str, level: u8, flags: u8, keep_alive: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut raw = Raw(stream);
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', level, flags];
        body.extend(keep_alive.to_be_bytes());
        if level == 5 {
            body.push(0); // no properties
        }
        body.extend((client_id.len() as u16).to_be_bytes());
        body.extend(client_id.as_bytes());
        raw.send(0x10, &body);
        raw
    }

    /// Sends one packet with a body shorter than 128 bytes.
    fn send(&mut self, first: u8, body: &[u8]) {
        assert!(body.len() < 128);
        let mut packet = vec![first, body.len() as u8];
        packet.extend(body);
        self.0.write_all(&packet).unwrap();
    }

    /// The next packet (first byte, body), or why there is none.
    fn read(&mut self) -> Result<(u8, Vec<u8>), String> {
        let mut head = [0u8; 2];
        self.0.read_exact(&mut head).map_err(|e| format!("no packet: {e}"))?;
        assert!(head[1] < 128, "short packets only");
        let mut body = vec![0; usize::from(head[1])];
        self.0.read_exact(&mut body).map_err(|e| format!("no packet body: {e}"))?;
        Ok((head[0], body))
    }

    /// Reads the CONNACK and checks it accepts.
    fn accepted(&mut self) -> Result<(), String> {
        match self.read()? {
            (0x20, body) if body.get(1) == Some(&0) && body.len() <= 3 => Ok(()),
            (0x20, body) if body.len() > 3 && body[1] == 0 => Ok(()), // MQTT 5, with properties
            other => Err(format!("not an accepting CONNACK: {other:?}")),
        }
    }

    /// A QoS 1 publish with packet id 1; Ok when its PUBACK comes back.
    fn publish_acked(&mut self, topic: &str, payload: &[u8]) -> Result<(), String> {
        let mut body = (topic.len() as u16).to_be_bytes().to_vec();
        body.extend(topic.as_bytes());
        body.extend([0, 1]);
        body.extend(payload);
        self.send(0x32, &body);
        match self.read()? {
            (0x40, ack) if ack == [0, 1] => Ok(()),
            other => Err(format!("not the PUBACK: {other:?}")),
        }
    }

    /// Whether the gateway closed the connection (EOF or reset) within the read timeout.
    fn closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match self.0.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted),
        }
    }
}

fn gateway() -> (Mosquitto, tempfile::TempDir, Gateway) {
    let cloud = Mosquitto::start();
    let data = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(&Setup::new(cloud.port, data.path()));
    (cloud, data, gateway)
}

fn metric(gateway: &Gateway, name: &str) -> f64 {
    edge_tests::http::metric(gateway.setup.http_port, name).unwrap_or(0.0)
}

/// rumqttd reuses a closed connection's id for the next connection. A device that says
/// DISCONNECT and closes made it remove that id twice (once for the DISCONNECT, once for
/// the closed socket); a device connecting in between got the id and was cut off by the
/// second removal, without a word. Reconnect churn as fast as the loopback allows (the
/// race is rare here; gateway/src/devices/relay_tests.rs pins the gate's side of it).
#[test]
fn a_device_connecting_right_after_another_disconnected_is_never_cut_off() {
    let (_cloud, _data, gateway) = gateway();
    let port = gateway.setup.devices_port;
    for i in 0..60 {
        let mut leaving = Raw::connect(port, &format!("leaving{i}"));
        leaving.accepted().unwrap();
        leaving.send(0xe0, &[]);
        drop(leaving);
        let mut arriving = Raw::connect(port, &format!("arriving{i}"));
        let served = arriving.accepted().and_then(|()| arriving.publish_acked("devices/churn/events", b"x"));
        if let Err(e) = served {
            panic!("round {i}: the arriving device was cut off: {e}\n{}", gateway.log_text());
        }
        arriving.send(0xe0, &[]);
    }
}

/// The same for a device that reconnects under its own client id after its connection
/// broke (no DISCONNECT): the old connection's removal must not hit the new one.
#[test]
fn a_device_reconnecting_with_its_own_client_id_after_a_broken_connection_is_served() {
    let (_cloud, _data, gateway) = gateway();
    let port = gateway.setup.devices_port;
    for i in 0..60 {
        let mut old = Raw::connect(port, "again");
        old.accepted().unwrap();
        drop(old);
        let mut new = Raw::connect(port, "again");
        let served = new.accepted().and_then(|()| new.publish_acked("devices/again/events", b"x"));
        if let Err(e) = served {
            panic!("round {i}: the reconnected device was cut off: {e}\n{}", gateway.log_text());
        }
        drop(new);
    }
}

/// A second connection with a live one's client id takes over (MQTT-3.1.4-2): the gate
/// closes the old one itself, logs and counts it, and the new one is served.
#[test]
fn a_takeover_closes_the_old_connection_logged_and_counted() {
    let (_cloud, _data, gateway) = gateway();
    let port = gateway.setup.devices_port;
    let mut old = Raw::connect(port, "twin");
    old.accepted().unwrap();
    let mut new = Raw::connect(port, "twin");
    new.accepted().unwrap();
    assert!(old.closed(), "the old connection is closed");
    new.publish_acked("devices/twin/events", b"x").unwrap();
    edge_tests::wait_until(Duration::from_secs(10), "the takeover counted", || {
        (metric(&gateway, "edge_gateway_device_disconnects_total{reason=\"takeover\"}") == 1.0).then_some(())
    });
    edge_tests::wait_until(Duration::from_secs(10), "the takeover logged", || {
        gateway.log_text().contains("a newer connection with the same client id").then_some(())
    });
}

fn gateway_with_v5() -> (Mosquitto, tempfile::TempDir, Gateway, u16) {
    let cloud = Mosquitto::start();
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(cloud.port, data.path());
    let v5 = edge_tests::free_port();
    setup.devices = format!("listen_v5 = \"127.0.0.1:{v5}\"\n");
    let gateway = Gateway::start(&setup);
    (cloud, data, gateway, v5)
}

/// MQTT 3.1.1 §3.1.2.10: keep-alive 0 turns it off. rumqttd refuses 0, so the gate gives
/// the broker its own (docs/operations.md); the device is served and never pinged for.
#[test]
fn a_device_with_keep_alive_off_is_served() {
    let (_cloud, _data, gateway) = gateway();
    let mut device = Raw::connect_with(gateway.setup.devices_port, "nokeepalive", 4, 0x02, 0);
    device.accepted().unwrap();
    device.publish_acked("devices/nokeepalive/events", b"x").unwrap();
}

/// [MQTT-3.1.2-2]: a CONNECT of a protocol level the listener does not serve gets CONNACK 1
/// and is closed, counted and logged; mosquitto_pub -V 5 on the 3.1.1 port says why.
#[test]
fn a_connect_of_the_wrong_protocol_level_gets_connack_1_counted_and_logged() {
    let (_cloud, _data, gateway, v5) = gateway_with_v5();
    let mut v5_on_v4 = Raw::connect_with(gateway.setup.devices_port, "v5dev", 5, 0x02, 30);
    assert_eq!(v5_on_v4.read().unwrap(), (0x20, vec![0, 1]));
    assert!(v5_on_v4.closed());
    let mut v4_on_v5 = Raw::connect_with(v5, "v4dev", 4, 0x02, 30);
    assert_eq!(v4_on_v5.read().unwrap(), (0x20, vec![0, 1]));
    assert!(v4_on_v5.closed());
    let port = gateway.setup.devices_port.to_string();
    let out = std::process::Command::new("mosquitto_pub")
        .args(["-V", "5", "-p", &port, "-i", "v5pub", "-t", "devices/v5pub/events", "-m", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.to_lowercase().contains("protocol"), "mosquitto_pub said: {said}");
    edge_tests::wait_until(Duration::from_secs(10), "3 refusals counted", || {
        (metric(&gateway, "edge_gateway_device_connections_refused_total{reason=\"protocol\"}") == 3.0).then_some(())
    });
    assert!(gateway.log_text().contains("a CONNECT of protocol level 5 on a listener for MQTT 3.1.1"));
}

/// Protocol violations after CONNECT close the connection, counted (reason `protocol`) and
/// logged; a reserved CONNECT flag is refused at CONNECT ([MQTT-3.1.2-3]).
#[test]
fn protocol_violations_close_the_connection_counted_and_logged() {
    let (_cloud, _data, gateway, v5) = gateway_with_v5();
    let port = gateway.setup.devices_port;
    let violations: [(&str, u8, &[u8]); 6] = [
        ("a second CONNECT", 0x10, &[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30, 0, 1, b'v']),
        ("wildcard + in a topic", 0x30, &[0, 3, b'a', b'/', b'+', b'x']),
        ("wildcard # in a topic", 0x32, &[0, 3, b'a', b'/', b'#', 0, 1, b'x']),
        ("U+0000 in a topic", 0x30, &[0, 3, b'a', 0, b'b', b'x']),
        ("SUBSCRIBE with flags 0", 0x80, &[0, 1, 0, 1, b'a', 0]),
        ("a CONNACK from a client", 0x20, &[0, 0]),
    ];
    for (i, (what, first, body)) in violations.iter().enumerate() {
        let mut device = Raw::connect(port, &format!("bad{i}"));
        device.accepted().unwrap();
        device.send(*first, body);
        assert!(device.closed(), "{what}: the connection must be closed");
    }
    // MQTT 5: a PUBLISH with an empty topic and no topic alias [MQTT-3.3.2-8].
    let mut device = Raw::connect_with(v5, "bad-v5", 5, 0x02, 30);
    device.accepted().unwrap();
    device.send(0x32, &[0, 0, 0, 1, 0, b'x']);
    assert_eq!(device.read().unwrap(), (0xe0, vec![0x82, 0]), "MQTT 5: DISCONNECT, Protocol Error");
    assert!(device.closed(), "v5 empty topic without alias: the connection must be closed");
    // A reserved CONNECT flag: no CONNACK, closed.
    let mut reserved = Raw::connect_with(port, "reserved", 4, 0x03, 30);
    assert!(reserved.closed(), "a reserved CONNECT flag: closed");
    edge_tests::wait_until(Duration::from_secs(10), "7 protocol disconnects counted", || {
        (metric(&gateway, "edge_gateway_device_disconnects_total{reason=\"protocol\"}") == 7.0).then_some(())
    });
    assert_eq!(metric(&gateway, "edge_gateway_device_connections_refused_total{reason=\"protocol\"}"), 1.0);
    let log = gateway.log_text();
    assert!(log.contains("device disconnected by the gateway") && log.contains("protocol"), "{log}");
    assert!(log.contains("reserved CONNECT flag"), "{log}");
}
