//! MQTT conformance of the device port, with real clients: paho-mqtt (Python, MQTT 3.1.1 and
//! 5; `edge_tests::paho`, scenarios in `tests/py/paho_probe.py`) and mosquitto_pub/sub.
//! Each clause either passes here or is listed as not supported in docs/operations.md
//! ("MQTT conformance"); for those, the test asserts the documented behaviour, so the list
//! cannot go stale.

use std::process::{Command, Output};

use edge_tests::gateway::{Gateway, Setup};
use edge_tests::mosquitto::Mosquitto;
use edge_tests::paho::probe;

/// `devices.max_payload` of these tests: an MQTT 5 CONNACK advertises 1 + 2 + 4096 bytes.
const MAX_PAYLOAD: u64 = 4096;

struct Rig {
    _cloud: Mosquitto,
    _data: tempfile::TempDir,
    gateway: Gateway,
    /// The MQTT 3.1.1 port.
    v4: u16,
    /// The MQTT 5 port.
    v5: u16,
}

fn rig() -> Rig {
    let cloud = Mosquitto::start();
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(cloud.port, data.path());
    let v5 = edge_tests::free_port();
    setup.devices = format!("listen_v5 = \"127.0.0.1:{v5}\"\nmax_payload = \"{MAX_PAYLOAD}B\"\n");
    let gateway = Gateway::start(&setup);
    let v4 = gateway.setup.devices_port;
    Rig { _cloud: cloud, _data: data, gateway, v4, v5 }
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new("timeout").arg("20").arg(program).args(args).output().expect("the client runs")
}

fn said(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// MQTT 3.1.1 §3.1.2.10: keep-alive 0 turns the mechanism off; the gate accepts it.
/// (mosquitto_pub refuses `-k 0` itself: "it must be between 5 and 65535".)
#[test]
fn keep_alive_0_is_accepted_from_paho() {
    let rig = rig();
    let seen = probe("keep_alive_off", rig.v4, &[]);
    assert_eq!(seen["connack"], 0, "{seen}");
    assert_eq!(seen["puback"], true, "{seen}");
}

/// [MQTT-3.1.2-2]: a protocol level the listener does not serve gets CONNACK 1.
#[test]
fn a_client_of_the_wrong_protocol_level_is_refused_with_connack_1() {
    let rig = rig();
    let v311_on_v5 = probe("level", rig.v5, &["311"]);
    // paho 2 reports CONNACK 1 of MQTT 3.1.1 as its MQTT 5 equivalent, 0x84.
    assert_eq!(v311_on_v5["rc"], 0x84, "{v311_on_v5}");
    let v5_on_v311 = probe("level", rig.v4, &["5"]);
    assert_eq!(v5_on_v311["connected"], false, "{v5_on_v311}");
    let port = rig.v5.to_string();
    let out = run("mosquitto_pub", &["-V", "311", "-p", &port, "-t", "devices/x/events", "-m", "x"]);
    assert!(!out.status.success());
    assert!(said(&out).to_lowercase().contains("protocol"), "{}", said(&out));
}

/// [MQTT-3.1.0-2]: a second CONNECT is a protocol violation; the connection is closed.
#[test]
fn a_second_connect_closes_the_connection() {
    let rig = rig();
    let seen = probe("violation", rig.v4, &["second_connect"]);
    assert_eq!(seen["disconnected"], true, "{seen}");
}

/// [MQTT-3.3.2-2]: no wildcard in a PUBLISH topic. paho refuses to send one; sent anyway on
/// its socket, the gate closes the connection.
#[test]
fn a_wildcard_in_a_publish_topic_closes_the_connection() {
    let rig = rig();
    let seen = probe("violation", rig.v4, &["wildcard"]);
    assert_eq!(seen["disconnected"], true, "{seen}");
    let port = rig.v4.to_string();
    let out = run("mosquitto_pub", &["-p", &port, "-t", "conf/+/x", "-m", "x"]);
    assert!(!out.status.success(), "mosquitto_pub refuses a wildcard topic itself: {}", said(&out));
}

/// [MQTT-3.8.4-6] asks for min(publish QoS, subscription QoS). Not supported (documented):
/// rumqttd delivers every message at the subscription's QoS, so a QoS 0 publish reaches a
/// QoS 1 subscription at QoS 1 (the reverse, 1 to a QoS 0 subscription, is 0 as it should).
#[test]
fn messages_are_delivered_at_the_subscriptions_qos_as_documented() {
    let rig = rig();
    for (port, level) in [(rig.v4, "311"), (rig.v5, "5")] {
        let seen = probe("qos_downgrade", port, &[level]);
        assert_eq!(seen["qos0_publish_to_qos1_subscription"], 1, "MQTT {level}: {seen}");
        assert_eq!(seen["qos1_publish_to_qos0_subscription"], 0, "MQTT {level}: {seen}");
    }
    // mosquitto_sub shows the QoS it received (%q): a retained QoS 0 message, at QoS 1.
    let port = rig.v4.to_string();
    let published = run("mosquitto_pub", &["-p", &port, "-q", "0", "-r", "-t", "conf/qos/mosquitto", "-m", "q0"]);
    assert!(published.status.success(), "{}", said(&published));
    let got = run(
        "mosquitto_sub",
        &["-p", &port, "-q", "1", "-t", "conf/qos/mosquitto", "-C", "1", "-W", "15", "-F", "%q %p"],
    );
    assert_eq!(
        String::from_utf8_lossy(&got.stdout).trim(),
        "1 q0",
        "delivered at the subscription's QoS: {}",
        said(&got)
    );
}

/// [MQTT-3.8.4-3] (an identical re-subscribe re-sends retained messages) is not supported
/// (documented): rumqttd sends retained messages when a subscription is new to the session
/// only. A new subscription, or one after UNSUBSCRIBE, gets them.
#[test]
fn retained_messages_come_with_a_new_subscription_not_an_identical_resubscribe_as_documented() {
    let rig = rig();
    let seen = probe("retained", rig.v4, &[]);
    assert_eq!(seen["on_subscribe"], 1, "{seen}");
    assert_eq!(seen["on_identical_resubscribe"], 0, "{seen}");
    assert_eq!(seen["after_unsubscribe"], 1, "{seen}");
}

/// MQTT 5 §3.2.2.3.6: the CONNACK advertises the gate's bound (`max_payload` plus a fixed
/// header); a bigger packet gets DISCONNECT 0x95 (Packet too large) before the close.
#[test]
fn mqtt5_connack_advertises_max_payload_and_a_bigger_packet_gets_disconnect_0x95() {
    let rig = rig();
    let seen = probe("max_packet_size", rig.v5, &[]);
    assert_eq!(seen["connack"], 0, "{seen}");
    assert_eq!(seen["advertised"], 1 + 2 + MAX_PAYLOAD, "{seen}");
    assert_eq!(seen["disconnect_reason"], 0x95, "{seen}");
    let counted = edge_tests::http::metric(rig.gateway.setup.http_port, "edge_gateway_device_packets_too_large_total");
    assert_eq!(counted, Some(1.0));
}

/// [MQTT-3.1.2-24/25]: a publish larger than the client's own Maximum Packet Size is not
/// sent to it, and the gate behaves as if it had been: 150 of them (more than the broker's
/// inflight window of 100) do not stop the small one after them.
#[test]
fn a_clients_own_maximum_packet_size_is_honoured() {
    let rig = rig();
    let seen = probe("client_max_packet_size", rig.v5, &["150"]);
    assert_eq!(seen["received"], serde_json::json!([5, 6]), "only 'small' and 'marker': {seen}");
    let not_delivered = "edge_gateway_device_publishes_too_large_for_device_total";
    assert_eq!(edge_tests::http::metric(rig.gateway.setup.http_port, not_delivered), Some(150.0));
    // mosquitto_sub with a Maximum Packet Size of 100: the big retained message is dropped
    // when it subscribes (counted: now it is subscribed), the small one after it arrives.
    let port = rig.v5.to_string();
    let big = "B".repeat(300);
    let out = run("mosquitto_pub", &["-V", "5", "-p", &port, "-q", "1", "-r", "-t", "conf/max/m", "-m", &big]);
    assert!(out.status.success(), "{}", said(&out));
    let sub = Command::new("timeout")
        .args(["20", "mosquitto_sub", "-V", "5", "-p", &port, "-q", "1", "-t", "conf/max/m", "-C", "1"])
        .args(["-D", "connect", "maximum-packet-size", "100"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    edge_tests::wait_until(std::time::Duration::from_secs(15), "the big retained message dropped", || {
        let counted = edge_tests::http::metric(rig.gateway.setup.http_port, not_delivered);
        (counted == Some(151.0)).then_some(())
    });
    let out = run("mosquitto_pub", &["-V", "5", "-p", &port, "-q", "1", "-t", "conf/max/m", "-m", "small"]);
    assert!(out.status.success(), "{}", said(&out));
    let got = sub.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "small", "{}", said(&got));
}

/// MQTT 5 §3.1.2.11.2 and [MQTT-3.1.2-4, -23]: Clean Start = 1 with a Session Expiry
/// Interval starts a session that outlives the connection (resumed with its subscription
/// and the message queued meanwhile); Clean Start = 1 again discards it; expiry 0 ends it
/// with the connection.
#[test]
fn mqtt5_session_expiry_keeps_a_session_across_clean_start_and_expiry_0_ends_it() {
    let rig = rig();
    let seen = probe("session_expiry", rig.v5, &[]);
    assert_eq!(seen["first_present"], false, "{seen}");
    assert_eq!(seen["resumed_present"], true, "{seen}");
    assert_eq!(seen["resumed_got"], serde_json::json!(["while-away", "marker"]), "{seen}");
    assert_eq!(seen["restarted_present"], false, "{seen}");
    assert_eq!(seen["restarted_got"], serde_json::json!(["marker2"]), "the old subscription is gone: {seen}");
    assert_eq!(seen["expiry0_resumed_present"], true, "Clean Start 0 resumes the kept session: {seen}");
    assert_eq!(seen["after_expiry0_present"], false, "{seen}");
}

/// MQTT 5 No Local (§3.8.3.1) is not supported (documented): rumqttd sends a client its
/// own publishes on a No Local subscription.
#[test]
fn no_local_is_ignored_as_documented() {
    let rig = rig();
    let seen = probe("no_local", rig.v5, &[]);
    assert_eq!(seen["received"], serde_json::json!(["own", "marker"]), "{seen}");
}
