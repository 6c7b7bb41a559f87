//! Cloud-to-device commands (the downlink): the cloud publishes a command, the gateway
//! keeps it in SQLite, delivers it to the device when the device is there, and reports
//! its progress back to the cloud. docs/commands.md is the user's page.
//!
//! ```text
//! cloud  gateways/{gateway}/commands/{device}  --QoS 1-->  [cloud session {client_id}-cmd]
//!        --> store: commands + status "accepted"  (committed, then the cloud's PUBACK)
//!        --> [device session on the device broker]  devices/{device}/commands  (QoS 1, postcard)
//! device devices/{device}/commands/status: ready | delivered | done | failed
//!        --> store: state + status rows --> cloud gateways/{gateway}/commands/{device}/status
//! ```
//!
//! # Guarantees
//!
//! - **Not lost once the cloud has our PUBACK.** The cloud session uses manual acks: a
//!   command is acknowledged only after the transaction that stored it committed. A crash
//!   before that makes the broker redeliver it (persistent session); the `(device, id)`
//!   key makes the redelivery a no-op.
//! - **Kept for an offline device** until its deadline (`deadline_ms`, or
//!   `commands.default_deadline` after arrival), then `expired`.
//! - **In order, one at a time, per device.** The next command goes out only when the
//!   device finished the previous one (`done`/`failed`) or that one expired.
//! - **Statuses at least once, in order per command**: written in the same transaction as
//!   the state change, published in row order at QoS 1, deleted on the cloud's PUBACK.
//!
//! # What "delivered" means
//!
//! The embedded broker (rumqttd 0.20) tells the gateway neither when a device connects or
//! subscribes nor when a device PUBACKs a message: its local link publishes at QoS 0 only,
//! its meters count per filter, its alerts are about the router. So `delivered` is the
//! device's own word: the firmware answers `delivered` on `devices/{device}/commands/status`
//! when it has the command, and `ready` after each (re)subscription, which makes the
//! gateway send at once. A device that never answers gets the command again every
//! `commands.resend` until its deadline. Repeats are harmless: the firmware answers a
//! known id from memory instead of running it again.
//!
//! # Two sessions of their own
//!
//! On the cloud, commands use a second client id (`{cloud.client_id}-cmd`) with a
//! persistent session rather than the forwarder's connection: the forwarder's session is
//! clean by design (a fresh client per connection, every packet id tied to a batch), and a
//! persistent session is what makes the broker keep commands published while the gateway
//! is offline or restarting. The subscription is also renewed on every CONNACK, in case the
//! broker lost the session. On the device side the gateway is an ordinary MQTT client of
//! the device broker (`{gateway.id}-commands`; the embedded one on loopback), because
//! rumqttd's in-process link cannot publish at QoS 1.

mod cloud;
mod devices;
pub mod metrics;
pub mod store;

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::error;

pub use crate::config::CommandsConfig;
use crate::config::{BrokerUrl, CloudConfig};
pub use store::CommandStore;

/// Wakes the two sides when the other changed the tables.
#[derive(Debug, Default)]
pub(crate) struct Wake {
    /// New or finished commands: the device side looks for what to send.
    pub(crate) queue: Notify,
    /// New status rows: the cloud side publishes them.
    pub(crate) outbox: Notify,
}

/// Where the device side connects.
#[derive(Debug, Clone)]
pub struct DeviceBroker {
    /// The device broker (the embedded one on loopback, or `devices.url`).
    pub url: BrokerUrl,
    /// Client id there.
    pub client_id: String,
    /// TLS and credentials for it (`[devices]` in external mode; none on loopback).
    pub security: crate::config::LinkSecurity,
}

/// Runs both sides until `shutdown`.
pub async fn run(
    config: CommandsConfig,
    cloud: CloudConfig,
    security: tokio::sync::watch::Receiver<crate::config::LinkSecurity>,
    broker: DeviceBroker,
    store: CommandStore,
    metrics: metrics::CommandMeters,
    shutdown: CancellationToken,
) {
    let config = Arc::new(config);
    let wake = Arc::new(Wake::default());
    let cloud_side = tokio::spawn(cloud::run(
        config.clone(),
        cloud,
        security,
        store.clone(),
        wake.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    let device_side = tokio::spawn(devices::run(config, broker, store, wake, metrics, shutdown));
    for (side, task) in [("cloud", cloud_side), ("device", device_side)] {
        if let Err(err) = task.await {
            error!(side, error = %err, "the command downlink stopped");
        }
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    crate::store::now_ms()
}

/// Starts the downlink for `config` if `[commands]` is enabled (after the device side is
/// up and the journal, with the command tables, is open); its task ends after `shutdown`.
/// `embedded` is the broker behind the device gate (address and token), in embedded mode:
/// the command sender publishes on `devices/{id}/commands`, which the gate allows no
/// client, so it talks to the broker directly. `cloud_security`: the cloud credentials to use at
/// each connect (a reload changes them: docs/architecture.md, "Live reload").
pub fn spawn(
    config: &crate::Config,
    cloud_security: tokio::sync::watch::Receiver<crate::config::LinkSecurity>,
    embedded: Option<(std::net::SocketAddr, Arc<str>)>,
    metrics: impl Into<metrics::CommandMeters>,
    shutdown: CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>, crate::store::StoreError> {
    if !config.commands.enabled {
        return Ok(None);
    }
    let store = CommandStore::open(&crate::store::Journal::of(config), config.store.synchronous, &config.commands)?;
    let (url, security) = match (&config.devices.mode, embedded) {
        (crate::config::DevicesMode::External { url, security, .. }, _) => (url.clone(), security.clone()),
        (crate::config::DevicesMode::Embedded { .. }, Some((inner, token))) => (
            BrokerUrl { host: inner.ip().to_string(), port: inner.port(), tls: false },
            crate::config::LinkSecurity {
                section: "devices",
                tls: None,
                username: Some("edge-gateway-commands".into()),
                password: Some(crate::config::Secret::new(token.to_string())),
            },
        ),
        (crate::config::DevicesMode::Embedded { .. }, None) => {
            return Err(crate::store::StoreError::Failed("commands: the embedded broker is not running".into()))
        }
    };
    let broker = DeviceBroker { url, client_id: format!("{}-commands", config.gateway.id), security };
    tracing::info!(
        topic = %config.commands.topic,
        status_topic = %config.commands.status_topic,
        client_id = %config.commands.client_id,
        "cloud-to-device commands enabled"
    );
    Ok(Some(tokio::spawn(run(
        config.commands.clone(),
        config.cloud.clone(),
        cloud_security,
        broker,
        store,
        metrics.into(),
        shutdown,
    ))))
}
