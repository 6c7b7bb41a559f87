//! The device side: where events come from and where device acks go.
//!
//! Two modes, one contract: every publish on a route's topic is handed to [`Ingest`] on a
//! dedicated thread and then to the store; after each commit, the highest committed
//! `(boot, seq)` of every device in it is published, retained, on `devices/{device}/ack`
//! (`{"boot":B,"seq":S}`), so firmware can free its retention ring (README, "What it guarantees" 6).
//!
//! - [`embedded`]: rumqttd inside the gateway. It acknowledges a device's QoS 1 publish
//!   when the message is in its memory, before the journal has it; the device ack above
//!   closes that gap for firmware that waits for it. Devices reach it only through the
//!   [`gate`] (TLS, [`auth`], limits, per-device topic rights; [`mqtt`] is its parser;
//!   [`relay`] ends its relays so that the broker never removes a connection twice). A
//!   reload changes its users, limits and TLS through [`Control`] ([`control`], [`places`]).
//! - [`external`]: a client of an existing broker (QoS 1, persistent session, manual acks):
//!   the broker's message is acknowledged only after the journal committed it.

pub mod arrivals;
pub mod auth;
pub mod control;
pub mod embedded;
pub mod external;
pub mod gate;
pub mod inflow;
pub mod metrics;
pub mod mqtt;
pub mod places;
pub mod relay;

use tokio_util::sync::CancellationToken;

use crate::config::{DevicesConfig, DevicesMode};
use crate::pipeline::{Running, Source};
use crate::store::DeviceAck;
pub use control::Control;
use metrics::DeviceMeters;

/// Errors starting the device side.
#[derive(Debug, thiserror::Error)]
pub enum DevicesError {
    /// Another process (maybe another gateway) holds the port.
    #[error("cannot listen for devices on {addr}: {source} (is another gateway or MQTT broker running there? change [devices].listen)")]
    PortInUse {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The broker did not come up.
    #[error("the embedded broker did not start: {0}")]
    Broker(String),
    /// A thread could not be started.
    #[error("cannot start a device-side thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Topics of the gateway's own device protocol: what it publishes to devices
/// (`devices/{device}/ack`, `.../commands`) and the devices' answers to commands
/// (`.../commands/status`, taken by `crate::downlink`): never device events, even when a
/// route's filter would take them.
pub fn is_gateway_to_device(topic: &str) -> bool {
    edge_event::topic::ack_device(topic).is_some()
        || edge_event::topic::commands_device(topic).is_some()
        || edge_event::topic::command_status_device(topic).is_some()
}

/// The topic and payload (`{"boot":B,"seq":S}`) that carry a device's mark, written by
/// edge-event's own helpers. None only for a device id that cannot name a topic, which a
/// committed event never has (ids are validated at ingest).
pub fn ack_message(ack: &DeviceAck) -> Option<(String, Vec<u8>)> {
    let mut topic = edge_event::topic::Topic::new();
    edge_event::topic::write_ack_topic(&ack.device, &mut topic).ok()?;
    let mut buf = [0u8; edge_event::Ack::MAX_JSON_LEN];
    let len = edge_event::Ack { boot: ack.boot, seq: ack.seq }.encode_json(&mut buf).ok()?;
    Some((topic.as_str().to_owned(), buf[..len].to_vec()))
}

/// A started device side.
pub struct Started {
    /// Its stage: the embedded broker's ingest thread, or the external client's task.
    pub running: Running,
    /// The embedded broker's loopback address and token, for the downlink's device side.
    pub embedded: Option<(std::net::SocketAddr, std::sync::Arc<str>)>,
    /// Applies a reloaded `[devices]` (docs/architecture.md, "Live reload").
    pub control: Control,
}

/// Starts the device side `devices` describes, feeding `source`; the external client
/// stops on `shutdown` (the embedded broker cannot be stopped, see
/// [`crate::pipeline::stages`]).
pub async fn start(
    devices: &DevicesConfig,
    source: Source,
    metrics: DeviceMeters,
    shutdown: CancellationToken,
) -> Result<Started, DevicesError> {
    match &devices.mode {
        DevicesMode::Embedded { listen, listen_v5, max_connections, broker_memory, access, tls } => {
            let settings = embedded::BrokerSettings {
                listen: *listen,
                listen_v5: *listen_v5,
                max_connections: *max_connections,
                max_payload: devices.max_payload,
                memory: *broker_memory,
                access: access.clone(),
                tls: tls.clone(),
            };
            let runtime = tokio::runtime::Handle::current();
            let started = tokio::task::spawn_blocking(move || embedded::start(settings, source, metrics, runtime))
                .await
                .map_err(|e| DevicesError::Broker(e.to_string()))??;
            Ok(Started {
                running: Running::Thread(started.ingest_thread),
                embedded: Some(started.inner),
                control: Control::new(devices, Some(started.live)),
            })
        }
        DevicesMode::External { url, client_id, security } => {
            let broker = external::Broker {
                url: url.clone(),
                client_id: client_id.clone(),
                security: security.clone(),
                max_payload: devices.max_payload,
            };
            Ok(Started {
                running: Running::Task(tokio::spawn(external::run(broker, source, shutdown))),
                embedded: None,
                control: Control::new(devices, None),
            })
        }
    }
}

#[cfg(test)]
#[path = "reload_tests.rs"]
mod reload_tests;
