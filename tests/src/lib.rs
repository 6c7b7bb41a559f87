//! Harness for end-to-end tests and benchmarks: starts the real `edge-gateway` binary, a
//! real Mosquitto as the cloud, real MQTT clients, and waits on events (a port answering,
//! `/readyz` saying ready, a count reached) instead of sleeping.
//!
//! - [`gateway`]: build once, start with a config, wait until ready, SIGKILL / SIGTERM.
//! - [`mosquitto`]: a broker on a random loopback port, started and stopped at will.
//! - [`clients`]: device publishers and a cloud subscriber that counts by `(device, boot, seq)`.
//! - [`http`]: a minimal HTTP GET for `/api/status` and `/metrics`.
//! - [`proxy`]: a TCP proxy that cuts and restores the cloud link.
//! - [`idle`]: an attacker's idle sockets against the device port, from many source addresses.
//! - [`paho`]: paho-mqtt (Python) as a real MQTT 3.1.1 and 5 client, installed when missing.
//! - [`sim`]: the firmware's simulator (`edge-sensor-sim`) as a child process.
//! - [`bench`]: the benchmark against the alternatives (`--bin bench`, BENCHMARKS.md).

pub mod bench;
pub mod clients;
pub mod gateway;
pub mod http;
pub mod idle;
pub mod mosquitto;
pub mod paho;
pub mod proxy;
pub mod sim;

use std::net::TcpListener;
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound, then released), below Linux's ephemeral range
/// (32768-60999). A port the kernel hands out for port 0 is one it also gives the next
/// outgoing connection, so between the release and the gateway's (or Mosquitto's) bind a
/// client socket could take it: seen in the pipeline loop as "cannot listen for HTTP ...
/// Address already in use" and a gateway that never got ready.
/// A port is handed out once per test process: released ports are free again at once, and
/// a gateway got the same port for devices and HTTP.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for _ in 0..1000 {
        let port = 20_000 + rand::random::<u16>() % 12_000;
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free port on loopback between 20000 and 32000")
}

/// Polls `check` every 10 ms until it returns Some, or panics with `what` after `timeout`.
pub fn wait_until<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A device event in its JSON form (the `edge-event` crate, shared/src/lib.rs).
pub fn event_json(device: &str, boot: u32, seq: u32) -> String {
    format!(
        r#"{{"device":"{device}","boot":{boot},"seq":{seq},"ts":1764000000123,"type":"temperature","readings":{{"celsius":21.5,"humidity":40.0}}}}"#
    )
}
