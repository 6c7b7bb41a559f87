//! Issue 15 item 7: idle sockets that never send a CONNECT, reopened as soon as they are
//! closed, must not lock devices out (the pre-login limits: SECURITY.md,
//! gateway/src/devices/gate/prelogin.rs). The attacker holds more sockets than the gate has
//! pre-login places (256) while real devices (mosquitto_pub, QoS 1) keep connecting; before
//! the limits, 21 of 24 such connects failed.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use edge_tests::gateway::{Gateway, Setup};
use edge_tests::idle::IdleSockets;
use edge_tests::mosquitto::Mosquitto;

fn gateway() -> (Mosquitto, tempfile::TempDir, Gateway) {
    let cloud = Mosquitto::start();
    let data = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(&Setup::new(cloud.port, data.path()));
    (cloud, data, gateway)
}

fn metric(gateway: &Gateway, name: &str) -> f64 {
    edge_tests::http::metric(gateway.setup.http_port, name).unwrap_or(0.0)
}

/// Starts the attack and returns once every socket has connected at least once.
fn attack(gateway: &Gateway, sources: &[Ipv4Addr], per_source: usize) -> IdleSockets {
    let idle = IdleSockets::start(gateway.setup.devices_port, sources, per_source);
    let all = (sources.len() * per_source) as u64;
    edge_tests::wait_until(Duration::from_secs(30), "every idle socket connected", || {
        (idle.opened() >= all).then_some(())
    });
    idle
}

/// Waits until the gateway has counted `n` evictions.
fn evictions_reach(gateway: &Gateway, n: u64) {
    edge_tests::wait_until(Duration::from_secs(20), &format!("{n} evictions counted"), || {
        let evicted = metric(gateway, "edge_gateway_device_connections_refused_total{reason=\"evicted\"}");
        (evicted >= n as f64).then_some(())
    });
}

/// 24 devices connect one after the other with mosquitto_pub (QoS 1: it waits for the
/// CONNACK and the PUBACK) from 127.0.0.1; returns the failures.
fn devices_connect(gateway: &Gateway) -> Vec<String> {
    let port = gateway.setup.devices_port.to_string();
    let mut failures = Vec::new();
    for i in 0..24 {
        let id = format!("legit{i}");
        let topic = format!("devices/{id}/events");
        let out = Command::new("timeout")
            .args(["20", "mosquitto_pub", "-A", "127.0.0.1", "-h", "127.0.0.1", "-p", &port, "-q", "1"])
            .args(["-i", &id, "-t", &topic, "-m", &edge_tests::event_json(&id, 1, 1)])
            .output()
            .expect("mosquitto_pub runs");
        if !out.status.success() {
            failures.push(format!("{id}: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
    }
    failures
}

/// One address with more idle sockets than all the pre-login places: it is held to its own
/// bound (its oldest evicted), and devices at other addresses are served.
#[test]
fn idle_sockets_from_one_address_never_lock_devices_out() {
    let (_cloud, _data, gateway) = gateway();
    let idle = attack(&gateway, &[Ipv4Addr::new(127, 0, 0, 2)], 270);
    let failures = devices_connect(&gateway);
    assert!(
        failures.is_empty(),
        "{} of 24 device connects failed: {failures:#?}\n{}",
        failures.len(),
        gateway.log_text()
    );
    // Every socket beyond the address's bound of 32 is evicted once its probation is over.
    evictions_reach(&gateway, 270 - 32);
    assert!(idle.closed() >= 270 - 32, "the attacker saw its sockets closed");
    let log = gateway.log_text();
    assert!(log.contains("evicted: the oldest of too many connections from its address"), "{log}");
}

/// Many addresses, each within its own bound, together over the 256 places: the oldest
/// waiting socket makes room for each newcomer, and devices are served.
#[test]
fn idle_sockets_from_many_addresses_evict_the_oldest_and_devices_get_in() {
    let (_cloud, _data, gateway) = gateway();
    let sources: Vec<Ipv4Addr> = (10..30).map(|last| Ipv4Addr::new(127, 0, 0, last)).collect();
    let idle = attack(&gateway, &sources, 15);
    let failures = devices_connect(&gateway);
    assert!(
        failures.is_empty(),
        "{} of 24 device connects failed: {failures:#?}\n{}",
        failures.len(),
        gateway.log_text()
    );
    evictions_reach(&gateway, 300 - 256);
    assert!(idle.closed() >= 300 - 256, "the attacker saw its sockets closed");
    assert_eq!(metric(&gateway, "edge_gateway_device_connections_refused_total{reason=\"limit\"}"), 0.0);
}
