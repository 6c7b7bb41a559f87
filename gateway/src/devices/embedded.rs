//! The embedded device broker (rumqttd) and the in-process link that drains it.
//!
//! Devices never reach rumqttd directly: the gateway's own listener ([`super::gate`]) takes
//! their connections (TLS, credentials, connection limit, packet size, topic rights) and
//! relays them to rumqttd on a loopback port whose auth hook wants a per-process token that
//! only the gate knows. rumqttd cannot be stopped and only logs a port already in use, so:
//! the device ports are bound by the gateway itself (a clear error instead of silently
//! sharing another broker), the broker runs on its own thread for the life of the process,
//! and readiness is probed with a real MQTT CONNECT. Named devices' event publishes do not
//! pass rumqttd at all: the gate hands them to the ingest thread itself; the in-process link
//! (QoS 0; rumqttd skips a reader that falls behind its in-memory segments) brings the rest,
//! and its thread does nothing but decode and queue ([`super::arrivals`]).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttd::local::LinkTx;
use rumqttd::protocol::{Packet, Publish};
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
use tracing::{error, info, warn};

use super::control::Live;
use super::gate::Gate;
use super::metrics::DeviceMeters;
use super::{ack_message, DevicesError};
use crate::config::{Access, ByteSize, DeviceTls};
use crate::pipeline::{Batcher, Source};
use crate::store::DeviceAck;

/// The link takes every publish (`#`), once: ingest then sees the topics no route takes
/// (counted as `no_route`, or kept as dead letters), and the link's own ack publishes
/// always match a filter (rumqttd disconnects a link that publishes to a topic no filter
/// matches). A second, overlapping subscription would deliver publishes twice.
const INGEST_FILTER: &str = "#";

/// Settings of the embedded broker.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// Listen address (MQTT 3.1.1).
    pub listen: SocketAddr,
    /// Optional MQTT 5 listen address.
    pub listen_v5: Option<SocketAddr>,
    /// Most device connections.
    pub max_connections: usize,
    /// Largest publish.
    pub max_payload: ByteSize,
    /// Memory for in-flight messages (split into segments).
    pub memory: ByteSize,
    /// Who may connect.
    pub access: Access,
    /// TLS on the device listeners (its server configuration is built at start).
    pub tls: Option<DeviceTls>,
}

/// How long a device has for the TLS handshake and its CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A free loopback address for a listener behind the gate.
fn loopback_port() -> Result<SocketAddr, DevicesError> {
    let probe = TcpListener::bind("127.0.0.1:0")?;
    Ok(probe.local_addr()?)
}

fn bind(addr: SocketAddr) -> Result<TcpListener, DevicesError> {
    TcpListener::bind(addr).map_err(|source| DevicesError::PortInUse { addr, source })
}

/// The running device side; the broker thread lives as long as the process.
pub struct Embedded {
    /// Where devices connect.
    pub listen: SocketAddr,
    /// The broker behind the gate, for the gateway's own MQTT clients (the command sender):
    /// its loopback address and the token its auth hook wants as the password.
    pub inner: (SocketAddr, std::sync::Arc<str>),
    /// What its gates share and a reload changes ([`super::control`]).
    pub live: std::sync::Arc<Live>,
    _broker: JoinHandle<()>,
    /// Ends when the link is lost (the broker died).
    pub ingest_thread: JoinHandle<()>,
}

/// Starts the broker, the device gate in front of it, its link, the ingest thread and the
/// ack publisher.
pub fn start(
    settings: BrokerSettings,
    source: Source,
    metrics: impl Into<DeviceMeters>,
    runtime: tokio::runtime::Handle,
) -> Result<Embedded, DevicesError> {
    let Source { ingest, store, acks, replays } = source;
    let metrics: DeviceMeters = metrics.into();
    let tls = match settings.tls.as_ref().map(super::gate::server_config).transpose() {
        Ok(tls) => tls,
        Err((key, message)) => return Err(DevicesError::Broker(format!("devices.{key}: {message}"))),
    };
    let public = bind(settings.listen)?;
    let public_v5 = settings.listen_v5.map(bind).transpose()?;
    let inner = loopback_port()?;
    let inner_v5 = settings.listen_v5.map(|_| loopback_port()).transpose()?;
    let token: std::sync::Arc<str> = {
        let bytes: [u8; 24] = rand::random();
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>().into()
    };
    let mut broker = Broker::new(broker_config(&settings, inner, inner_v5, token.clone()));
    let (mut link_tx, link_rx) = broker.link("edge-gateway-ingest").map_err(|e| DevicesError::Broker(e.to_string()))?;
    link_tx.subscribe(INGEST_FILTER).map_err(|e| DevicesError::Broker(format!("subscribe {INGEST_FILTER}: {e}")))?;
    let broker_thread = std::thread::Builder::new().name("device-broker".into()).spawn(move || {
        if let Err(err) = broker.start() {
            error!(error = %err, "the embedded device broker stopped");
        }
    })?;
    // Each rumqttd listener binds on a thread of its own: a device on the MQTT 5 port must
    // not find its inner listener not there yet (the gate would answer "server busy").
    wait_until_listening(inner, &token, 4)?;
    if let Some(inner_v5) = inner_v5 {
        wait_until_listening(inner_v5, &token, 5)?;
    }
    if matches!(settings.access, Access::Anonymous) {
        warn!(
            "devices.auth.allow_anonymous = true: any client that reaches {} may connect and publish on any topic; \
             list device users in [devices.auth] for production",
            settings.listen
        );
    } else if matches!(&settings.access, Access::Users(users) if users.is_empty()) {
        warn!(
            "[devices.auth] lists no users and allow_anonymous is not set: every device connection will be refused; \
             add users (edge-gateway hash-password) or set allow_anonymous = true"
        );
    }
    let (denied_tx, denied_rx) = mpsc::sync_channel(1024);
    let live = Live::new(settings.access.clone(), settings.max_connections, settings.max_payload.bytes() as usize, tls);
    let inflow = std::sync::Arc::new(super::inflow::Inflow::new(settings.memory.bytes()));
    let clients = std::sync::Arc::new(super::relay::Clients::default());
    let (queue, arrivals) = mpsc::channel();
    let gate_settings = |broker, level| super::gate::Settings {
        broker,
        level,
        connect_timeout: CONNECT_TIMEOUT,
        token: token.clone(),
        inflow: inflow.clone(),
        clients: clients.clone(),
        queue: queue.clone(),
    };
    let gate = Gate::new(gate_settings(inner, 4), live.clone(), metrics.clone(), denied_tx.clone(), store.clone());
    runtime.spawn(gate.serve(public));
    if let (Some(listener), Some(inner_v5), Some(v5)) = (public_v5, inner_v5, settings.listen_v5) {
        let gate = Gate::new(gate_settings(inner_v5, 5), live.clone(), metrics, denied_tx, store.clone());
        runtime.spawn(gate.serve(listener));
        info!(listen = %v5, tls = settings.tls.is_some(), "device listener for MQTT 5");
    }
    let batcher = Batcher::new(ingest, store.clone(), replays).with_denied(denied_rx).bounded();
    let ingest_thread = std::thread::Builder::new()
        .name("device-ingest".into())
        .spawn(move || super::arrivals::take(arrivals, batcher, &inflow, &store))?;
    std::thread::Builder::new()
        .name("device-link".into())
        .spawn(move || super::arrivals::follow_link(link_rx, queue))?;
    std::thread::Builder::new().name("device-acks".into()).spawn(move || publish_acks(link_tx, acks, runtime))?;
    info!(listen = %settings.listen, tls = settings.tls.is_some(), "device listener ready (embedded broker)");
    Ok(Embedded { listen: settings.listen, inner: (inner, token), live, _broker: broker_thread, ingest_thread })
}

fn broker_config(
    settings: &BrokerSettings,
    inner: SocketAddr,
    inner_v5: Option<SocketAddr>,
    token: std::sync::Arc<str>,
) -> Config {
    const SEGMENTS: usize = 8;
    let mut connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: settings.max_payload.bytes() as usize,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        // A device publishing on a topic no route takes is counted, not disconnected.
        dynamic_filters: true,
    };
    // Only the gate (and the readiness probe) know the token: a local process that finds
    // the loopback port cannot get around the gate.
    connections.set_auth_handler(move |_client_id, _user, password: String| {
        let ok = crate::util::ct::constant_time_eq(password.as_bytes(), token.as_bytes());
        async move { ok }
    });
    let server = |name: &str, listen| ServerSettings {
        name: name.into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: connections.clone(),
    };
    Config {
        id: 0,
        router: RouterConfig {
            // The gate enforces devices.max_connections; room for the ingest link, the
            // readiness probe and the command sender (crate::downlink).
            max_connections: settings.max_connections + 5,
            // Messages a QoS 0 subscriber (the ingest link) takes per turn of the router.
            // The link's buffer then makes the router park it until the link has drained
            // that buffer and sent `ready()`: one router round trip per read. At 200 the
            // link fell behind 20 devices and the segments overran at 2 MiB; at 1,000 it
            // keeps up (BENCHMARKS.md, "Memory and overrun"). Devices' QoS 1
            // subscriptions are limited by their inflight window instead.
            max_outgoing_packet_count: 1000,
            max_segment_size: (settings.memory.bytes() as usize / SEGMENTS).max(64 * 1024),
            max_segment_count: SEGMENTS,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("devices".to_owned(), server("devices", inner))])),
        v5: inner_v5.map(|v5| HashMap::from([("devices-v5".to_owned(), server("devices-v5", v5))])),
        ..Config::default()
    }
}

/// Waits for the broker's listener of MQTT `level` to answer a CONNECT (a bare TCP probe
/// makes it log errors).
fn wait_until_listening(target: SocketAddr, token: &str, level: u8) -> Result<(), DevicesError> {
    use std::io::{Read, Write};
    // Clean, keep-alive 10 s, client id "edge-gateway-probe", the gate's token as password.
    let connect = super::mqtt::v5::clean_connect(level, "edge-gateway-probe", token);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last_error = String::new();
    while Instant::now() < deadline {
        match std::net::TcpStream::connect_timeout(&target, Duration::from_millis(500)) {
            Ok(mut stream) => {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut connack = [0u8; 4];
                if stream.write_all(&connect).is_ok() && stream.read_exact(&mut connack).is_ok() && connack[0] == 0x20 {
                    // DISCONNECT, then wait for the broker to close: closing first would make
                    // it remove the probe's connection id twice, the second time maybe from
                    // the first device (relay.rs).
                    if stream.write_all(&[0xe0, 0x00]).is_ok() {
                        let _ = stream.read_to_end(&mut Vec::new());
                    }
                    return Ok(());
                }
                last_error = "no CONNACK".into();
            }
            Err(err) => last_error = err.to_string(),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(DevicesError::Broker(format!("no MQTT answer on {target} within 10 s ({last_error})")))
}

/// Publishes each device's committed mark, retained, so a reconnecting device learns it.
fn publish_acks(mut link_tx: LinkTx, acks: mpsc::Receiver<Vec<DeviceAck>>, runtime: tokio::runtime::Handle) {
    while let Ok(mut marks) = acks.recv() {
        // Coalesce: only the newest mark per device matters.
        while let Ok(more) = acks.try_recv() {
            marks.extend(more);
        }
        let mut newest: HashMap<String, DeviceAck> = HashMap::with_capacity(marks.len());
        for mark in marks {
            newest.insert(mark.device.clone(), mark);
        }
        for mark in newest.values() {
            let Some((topic, payload)) = ack_message(mark) else { continue };
            let publish = Publish::new(topic.into_bytes(), payload, true);
            if let Err(err) = runtime.block_on(link_tx.send(Packet::Publish(publish, None))) {
                error!(error = %err, "cannot publish device acks; stopping the ack publisher");
                return;
            }
        }
    }
}
