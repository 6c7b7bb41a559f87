//! rumqttd alone as a broker-only baseline: the broker the gateway embeds, in its own
//! process (the bench binary re-run as `bench serve-rumqttd PORT`), because rumqttd
//! cannot be stopped and a process can.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

use super::procs::listening;
use crate::free_port;

/// Runs a rumqttd MQTT 3.1.1 broker on `127.0.0.1:port` until the process is killed.
/// Settings as the gateway's embedded broker, but with room (10 x 16 MiB) for a
/// subscriber to fall behind without being skipped: this is the ceiling, not the product.
pub fn serve(port: u16) -> Result<(), String> {
    let connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: 16 * 1024,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "baseline".into(),
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 10_000,
            max_outgoing_packet_count: 200,
            max_segment_size: 16 << 20,
            max_segment_count: 10,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("baseline".to_owned(), server)])),
        ..Config::default()
    };
    Broker::new(config).start().map_err(|e| e.to_string())
}

/// A stand-alone rumqttd; killed on drop.
pub struct RumqttdProc {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Child,
}

impl RumqttdProc {
    /// Runs `exe serve-rumqttd PORT` and waits until it listens.
    pub async fn start(exe: &Path) -> Result<RumqttdProc, String> {
        let port = free_port();
        let child = Command::new(exe)
            .arg("serve-rumqttd")
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {} serve-rumqttd: {e}", exe.display()))?;
        let broker = RumqttdProc { port, child };
        listening(port, Duration::from_secs(10)).await?;
        Ok(broker)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RumqttdProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
