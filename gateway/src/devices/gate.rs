//! The device gate: the listener devices connect to, in front of the embedded broker.
//!
//! rumqttd 0.20 has no topic ACLs, does not tell its links who published a message, and
//! gives no reliable signal of connects and disconnects. So the gateway owns the device
//! port and relays each accepted connection to rumqttd on a loopback port:
//!
//! 1. TLS (optional; client certificates required when a client CA is configured), with a
//!    handshake deadline, on its own task: a silent client never holds up the listener.
//! 2. The first packet must be a CONNECT within `connection_timeout`; its credentials are
//!    checked ([`super::auth`]); a refusal gets a CONNACK with the MQTT reason code.
//! 3. `max_connections` is enforced here, with a CONNACK "server unavailable".
//! 4. The CONNECT goes to rumqttd with its password replaced by a per-process token that
//!    rumqttd's auth hook demands: the loopback port is useless without the gate.
//! 5. Every packet from the device is delimited; a packet over `max_payload` is counted and
//!    the device disconnected. For an authenticated device every PUBLISH topic must be
//!    under `devices/{id}/` (not its `ack` or `commands`), every SUBSCRIBE filter one of its
//!    own `devices/{id}/ack`, `devices/{id}/commands[/...]`; a refused publish becomes a dead
//!    letter with the reason, and the device is disconnected (MQTT 3.1.1 §3.3.5 allows
//!    nothing else: a refused PUBLISH cannot be reported to the client).
//!
//! Invariant: `edge_gateway_devices_connected` counts connections that rumqttd accepted
//! (its CONNACK said success) and whose relay still runs; it goes down when either side
//! closes, whoever closed.

use std::net::SocketAddr;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::rustls;
use tracing::warn;

use super::auth::{Authenticator, Identity};
use super::metrics::DeviceDisconnect;
use super::metrics::{ConnectionRefusal, Denial, DeviceMeters};
use super::mqtt::{self, Next, Refusal};
use super::relay::{self, Claim, Clients, Held};
pub use super::rights::{may_publish, may_subscribe};
use crate::config::{files, DeviceTls};
use crate::pipeline::Denied;
use crate::util::RateLimited;

/// Most connections between accept and an authenticated CONNECT at any time; more are
/// closed at once (counted, reason `limit`).
const MAX_HANDSHAKING: usize = 256;

/// Builds the device listener's TLS server configuration from the files the config named
/// (checked at load, read again here at start). `Err` is `(which key under devices, message)`.
pub fn server_config(tls: &DeviceTls) -> Result<Arc<rustls::ServerConfig>, (String, String)> {
    let files = files::load_device_tls(tls)?;
    let provider = files::provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ("tls_cert_file".to_owned(), e.to_string()))?;
    let builder = match (files.client_roots, &tls.client_ca_file) {
        (Some(roots), Some(ca_file)) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ("tls_client_ca_file".to_owned(), format!("{ca_file}: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(files.certs, files.key).map_err(|e| files::device_key_mismatch(tls, &e))?;
    Ok(Arc::new(config))
}

/// How the gate is set up.
pub struct Settings {
    /// The broker listener behind the gate (loopback).
    pub broker: SocketAddr,
    /// The MQTT protocol level this listener serves: 4 (3.1.1) or 5; a CONNECT of another
    /// level gets CONNACK 1 ([MQTT-3.1.2-2]).
    pub level: u8,
    /// TLS for devices (built by [`server_config`]).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Most authenticated device connections, all listeners together.
    pub max_connections: usize,
    /// Largest packet body from a device.
    pub max_payload: usize,
    /// Time for the TLS handshake and the CONNECT.
    pub connect_timeout: Duration,
    /// The password the broker behind the gate wants.
    pub token: Arc<str>,
    /// Back-pressure: publishes waiting in the broker ([`super::inflow`]).
    pub inflow: Arc<super::inflow::Inflow>,
    /// The relays by client id, shared by every listener of the broker ([`relay`]).
    pub clients: Arc<Clients>,
}

/// What every connection task shares.
pub struct Gate {
    settings: Settings,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    auth: Arc<Authenticator>,
    metrics: DeviceMeters,
    denied: mpsc::SyncSender<Denied>,
    /// The journal, for the read model's connection state of authenticated devices.
    store: crate::store::StoreHandle,
    sessions: Arc<Semaphore>,
    handshaking: Arc<Semaphore>,
    refusal_log: Mutex<RateLimited>,
    denial_log: Mutex<RateLimited>,
    disconnect_log: Mutex<RateLimited>,
}

impl Gate {
    /// A gate; refused publishes go to `denied`; connects and disconnects of authenticated
    /// devices go to the read model in `store`.
    pub fn new(
        settings: Settings,
        auth: Arc<Authenticator>,
        metrics: DeviceMeters,
        denied: mpsc::SyncSender<Denied>,
        store: crate::store::StoreHandle,
    ) -> Arc<Gate> {
        let acceptor = settings.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        Arc::new(Gate {
            sessions: Arc::new(Semaphore::new(settings.max_connections)),
            handshaking: Arc::new(Semaphore::new(MAX_HANDSHAKING)),
            settings,
            acceptor,
            auth,
            metrics,
            denied,
            store,
            refusal_log: Mutex::new(RateLimited::new(Duration::from_secs(10))),
            denial_log: Mutex::new(RateLimited::new(Duration::from_secs(10))),
            disconnect_log: Mutex::new(RateLimited::new(Duration::from_secs(10))),
        })
    }

    /// Accepts devices on `listener` (already bound) for the life of the process.
    pub async fn serve(self: Arc<Gate>, listener: std::net::TcpListener) {
        let listener = match listener.set_nonblocking(true).and_then(|()| TcpListener::from_std(listener)) {
            Ok(listener) => listener,
            Err(err) => {
                tracing::error!(error = %err, "cannot use the device listener");
                return;
            }
        };
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let gate = self.clone();
                    tokio::spawn(async move { gate.connection(stream, peer).await });
                }
                Err(err) => {
                    warn!(error = %err, "device listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn refuse(&self, reason: ConnectionRefusal, peer: SocketAddr, detail: &str) {
        self.metrics.devices.count_refused(reason);
        if let Some(suppressed) = self.refusal_log.lock().ok().and_then(|mut log| log.allow()) {
            warn!(%peer, reason = reason.label(), detail, suppressed, "device connection refused");
        }
    }

    /// Counts and logs (rate-limited) a device connection the gateway closed.
    fn disconnect(&self, reason: DeviceDisconnect, peer: SocketAddr, client_id: &str, detail: &str) {
        self.metrics.devices.disconnects[reason as usize].add(1);
        if let Some(suppressed) = self.disconnect_log.lock().ok().and_then(|mut log| log.allow()) {
            warn!(%peer, client_id, reason = reason.label(), detail, suppressed, "device disconnected by the gateway");
        }
    }

    async fn connection(self: Arc<Gate>, stream: TcpStream, peer: SocketAddr) {
        let Ok(handshaking) = self.handshaking.clone().try_acquire_owned() else {
            self.refuse(ConnectionRefusal::Limit, peer, "too many connections handshaking at once");
            return;
        };
        let _ = stream.set_nodelay(true);
        let timeout = self.settings.connect_timeout;
        match &self.acceptor {
            // Plain TCP splits into owned halves without a lock between them.
            None => self.session(stream, peer, handshaking, TcpStream::into_split).await,
            Some(acceptor) => match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => self.session(tls, peer, handshaking, tokio::io::split).await,
                Ok(Err(err)) => self.refuse(ConnectionRefusal::Tls, peer, &err.to_string()),
                Err(_) => self.refuse(ConnectionRefusal::Tls, peer, "no TLS handshake in time"),
            },
        }
    }

    /// One device connection after TLS: CONNECT, checks, then the relay until either side
    /// closes.
    async fn session<S, R, W>(
        &self,
        mut client: S,
        peer: SocketAddr,
        handshaking: tokio::sync::OwnedSemaphorePermit,
        split: impl FnOnce(S) -> (R, W),
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let timeout = self.settings.connect_timeout;
        let mut buf = Vec::with_capacity(1024);
        let frame = match tokio::time::timeout(timeout, read_frame(&mut client, &mut buf, 64 * 1024)).await {
            Ok(Ok(frame)) if frame.kind == mqtt::CONNECT => frame,
            Ok(Ok(_)) => return self.refuse(ConnectionRefusal::Protocol, peer, "the first packet is not a CONNECT"),
            Ok(Err(err)) => return self.refuse(ConnectionRefusal::Protocol, peer, &err),
            Err(_) => return self.refuse(ConnectionRefusal::Protocol, peer, "no CONNECT in time"),
        };
        let body = &buf[frame.body..frame.len];
        if let Some(level) = mqtt::protocol_level(body).filter(|level| *level != self.settings.level) {
            let served = if self.settings.level == 5 { "MQTT 5" } else { "MQTT 3.1.1" };
            let detail = format!("a CONNECT of protocol level {level} on a listener for {served} (CONNACK 1)");
            self.refuse(ConnectionRefusal::Protocol, peer, &detail);
            let _ = send(&mut client, &mqtt::CONNACK_BAD_PROTOCOL).await;
            return;
        }
        let connect = match mqtt::connect(body) {
            Ok(connect) => connect,
            Err(err) => return self.refuse(ConnectionRefusal::Protocol, peer, &err),
        };
        let level = connect.level;
        let client_id = connect.client_id.to_owned();
        // Bounded: behind a storm of argon2 checks, a connection waits at most this long.
        let check = self.auth.check(connect.client_id, connect.username, connect.password);
        let Ok(checked) = tokio::time::timeout(timeout, check).await else {
            self.refuse(ConnectionRefusal::Limit, peer, "password checks are backed up");
            let _ = send(&mut client, &mqtt::connack_refusal(level, Refusal::Busy)).await;
            return;
        };
        let identity = match checked {
            Ok(identity) => identity,
            Err(failure) => {
                self.metrics.devices.count_auth_failure(failure);
                if let Some(suppressed) = self.refusal_log.lock().ok().and_then(|mut log| log.allow()) {
                    warn!(
                        %peer, client_id, user = connect.username.unwrap_or(""), reason = failure.label(), suppressed,
                        "device login refused"
                    );
                }
                let refusal = match failure {
                    super::auth::AuthFailure::ClientIdMismatch => Refusal::NotAuthorized,
                    _ => Refusal::BadCredentials,
                };
                let _ = send(&mut client, &mqtt::connack_refusal(level, refusal)).await;
                return;
            }
        };
        if let (Identity::Device(id), Some(will)) = (&identity, connect.will_topic) {
            if !may_publish(id, will) {
                self.refuse(ConnectionRefusal::Acl, peer, &format!("device {id:?} may not have a will on {will:?}"));
                let _ = send(&mut client, &mqtt::connack_refusal(level, Refusal::NotAuthorized)).await;
                return;
            }
        }
        let Ok(session) = self.sessions.clone().try_acquire_owned() else {
            self.refuse(ConnectionRefusal::Limit, peer, "devices.max_connections reached");
            let _ = send(&mut client, &mqtt::connack_refusal(level, Refusal::Busy)).await;
            return;
        };
        let forwarded = mqtt::rewrite_connect(body, &connect, &self.settings.token);
        buf.drain(..frame.len);
        drop(handshaking);
        // One relay per client id at the broker: an older one is closed first (relay.rs).
        let (slot, claim) = self.settings.clients.claim(&client_id).await;
        let _held = Held(&self.settings.clients, &client_id, &slot);
        match claim {
            Ok(_) => {}
            Err(Claim::TakenOver) => {
                let detail = "a newer connection with the same client id came before this one was served";
                return self.disconnect(DeviceDisconnect::Takeover, peer, &client_id, detail);
            }
            Err(Claim::Stuck) => warn!(
                %peer, client_id,
                "the embedded broker did not close the older connection with this client id in time; connecting anyway"
            ),
        }
        let mut broker = match TcpStream::connect(self.settings.broker).await {
            Ok(broker) => broker,
            Err(err) => {
                tracing::error!(error = %err, "cannot reach the embedded broker behind the device gate");
                let _ = send(&mut client, &mqtt::connack_refusal(level, Refusal::Busy)).await;
                return;
            }
        };
        let _ = broker.set_nodelay(true);
        if broker.write_all(&forwarded).await.is_err() {
            return;
        }
        // The broker's CONNACK: the device counts as connected only when it says success.
        let mut from_broker = Vec::with_capacity(64);
        let accepted = match tokio::time::timeout(timeout, read_frame(&mut broker, &mut from_broker, 1024)).await {
            Ok(Ok(frame)) => frame.kind == 2 && from_broker.get(frame.body + 1) == Some(&0),
            _ => false,
        };
        if send(&mut client, &from_broker).await.is_err() || !accepted {
            let (broker_read, broker_write) = broker.into_split();
            relay::close_broker(broker_write, false, relay::downlink(broker_read, tokio::io::sink())).await;
            return;
        }
        // Only an authenticated connection says which device it is (an anonymous client id
        // is not an identity): the read model's `connected` stays unknown for the others.
        let device = match &identity {
            Identity::Device(id) => Some((self.store.clone(), id.clone())),
            Identity::Anonymous => None,
        };
        let connected = Connected::new(&self.metrics, device);
        tracing::debug!(%peer, client_id, "device connected");
        let (client_read, client_write) = split(client);
        let (broker_read, mut broker_write) = broker.into_split();
        let downlink = relay::downlink(broker_read, client_write);
        tokio::pin!(downlink);
        let mut said_disconnect = false;
        let relay = Relay { identity: &identity, level, client_id: &client_id };
        let ended = tokio::select! {
            ended = self.uplink(client_read, &mut broker_write, buf, &relay, &mut said_disconnect) => ended,
            () = slot.taken_over() => Ended::ByGate(DeviceDisconnect::Takeover, "a newer connection with the same client id".into()),
            () = &mut downlink => Ended::Broker,
        };
        let closed =
            matches!(ended, Ended::Broker) || relay::close_broker(broker_write, said_disconnect, downlink).await;
        match &ended {
            Ended::ByGate(reason, detail) => self.disconnect(*reason, peer, &client_id, detail),
            Ended::Broker if !said_disconnect => {
                let detail =
                    "the embedded broker closed the connection (keep-alive expired, or an MQTT error it found)";
                self.disconnect(DeviceDisconnect::Broker, peer, &client_id, detail);
            }
            _ => {}
        }
        if !closed {
            warn!(%peer, client_id, "the embedded broker did not close an ended device connection in time");
        }
        drop(connected);
        drop(session);
        tracing::debug!(%peer, client_id, ?ended, "device disconnected");
    }

    /// Device -> broker, packet by packet, checking sizes and rights. Returns why it ended.
    async fn uplink(
        &self,
        mut client: impl AsyncRead + Unpin,
        broker: &mut (impl AsyncWrite + Unpin),
        mut buf: Vec<u8>,
        relay: &Relay<'_>,
        said_disconnect: &mut bool,
    ) -> Ended {
        let Relay { identity, level, client_id } = *relay;
        let max = self.settings.max_payload;
        let inflow = &self.settings.inflow;
        loop {
            let mut ok = 0;
            let mut stop = None;
            let (mut publishes, mut publish_bytes) = (0u64, 0u64);
            loop {
                match mqtt::next(&buf[ok..], max) {
                    Next::Packet(frame) => {
                        if let Some(why) = mqtt::violation(&frame, &buf[ok..], level) {
                            stop = Some(Ended::ByGate(DeviceDisconnect::Protocol, why));
                            break;
                        }
                        if let Identity::Device(id) = identity {
                            if let Err((reason, why)) = self.check(id, &frame, &buf[ok..], level) {
                                stop = Some(Ended::ByGate(reason, why));
                                break;
                            }
                        }
                        if frame.kind == mqtt::DISCONNECT {
                            // Nothing after it goes to the broker (relay.rs, rule 1).
                            ok += frame.len;
                            stop = Some(Ended::Disconnect);
                            break;
                        }
                        if frame.kind == mqtt::PUBLISH {
                            publishes += 1;
                            publish_bytes += frame.len as u64;
                        }
                        ok += frame.len;
                    }
                    Next::Incomplete => break,
                    Next::TooLarge { kind, remaining } => {
                        self.metrics.devices.too_large.add(1);
                        if let Some(suppressed) = self.denial_log.lock().ok().and_then(|mut log| log.allow()) {
                            warn!(
                                client_id,
                                packet_type = kind,
                                bytes = remaining,
                                max_payload = max,
                                suppressed,
                                "device packet over devices.max_payload; device disconnected"
                            );
                        }
                        let why = format!("a packet of {remaining} bytes, over devices.max_payload");
                        stop = Some(Ended::ByGate(DeviceDisconnect::TooLarge, why));
                        break;
                    }
                    Next::Malformed => {
                        stop = Some(Ended::ByGate(DeviceDisconnect::Protocol, "malformed MQTT".into()));
                        break;
                    }
                }
            }
            if ok > 0 {
                // The journal is behind and the broker holds a lot unread: hold this device
                // back (its TCP and inflight windows fill) rather than let the broker
                // overwrite unread events.
                if publishes > 0 && inflow.wait_for_room().await {
                    self.metrics.devices.backpressure.add(1);
                }
                if broker.write_all(&buf[..ok]).await.is_err() {
                    return Ended::Broker;
                }
                *said_disconnect = matches!(stop, Some(Ended::Disconnect));
                inflow.forwarded(publishes, publish_bytes);
                buf.drain(..ok);
            }
            if let Some(why) = stop {
                return why;
            }
            // Small reads keep the per-connection buffer small (a thousand idle devices must
            // not cost a thousand large buffers); it grows only for a packet that needs it
            // and gives the room back once that packet has gone.
            if buf.is_empty() && buf.capacity() > 32 * 1024 {
                buf.shrink_to(8 * 1024);
            }
            if buf.capacity() - buf.len() < 2 * 1024 {
                buf.reserve(8 * 1024);
            }
            match client.read_buf(&mut buf).await {
                Ok(0) => return Ended::DeviceClosed,
                Ok(_) => {}
                Err(err) => {
                    tracing::debug!(client_id, error = %err, "device read error");
                    return Ended::DeviceClosed;
                }
            }
        }
    }

    /// Whether device `id` may send this packet; a refusal is counted, logged and (for a
    /// publish) handed over as a dead letter.
    fn check(&self, id: &str, frame: &mqtt::Frame, packet: &[u8], level: u8) -> Result<(), (DeviceDisconnect, String)> {
        let malformed = |why: String| (DeviceDisconnect::Protocol, why);
        let (denial, reason) = match frame.kind {
            mqtt::PUBLISH => {
                let topic = mqtt::publish_topic(frame, packet).map_err(malformed)?;
                // An MQTT 5 publish by topic alias: the alias was set by an earlier publish
                // on this connection, whose topic passed this check.
                if may_publish(id, topic) || (topic.is_empty() && level == 5) {
                    return Ok(());
                }
                let reason = format!(
                    "device {id:?} may not publish on {topic:?}: a device publishes only under devices/{id}/ \
                     (not on its ack or commands topics); the device was disconnected"
                );
                if let Ok((topic, payload)) = mqtt::publish(frame, packet, level) {
                    let _ = self.denied.try_send(Denied::by(id, topic, payload, reason.clone()));
                }
                (Denial::Publish, reason)
            }
            mqtt::SUBSCRIBE => {
                let filters = mqtt::subscribe_filters(frame, packet, level).map_err(malformed)?;
                let Some(bad) = filters.iter().find(|f| !may_subscribe(id, f)) else { return Ok(()) };
                let reason = format!(
                    "device {id:?} may not subscribe to {bad:?}: only devices/{id}/ack and devices/{id}/commands; \
                     the device was disconnected"
                );
                (Denial::Subscribe, reason)
            }
            _ => return Ok(()),
        };
        self.metrics.devices.denied[denial as usize].add(1);
        if let Some(suppressed) = self.denial_log.lock().ok().and_then(|mut log| log.allow()) {
            warn!(device = id, action = denial.label(), %reason, suppressed, "device denied");
        }
        Err((DeviceDisconnect::Denied, reason))
    }
}

/// Writes and flushes (a TLS stream may hold what was written until flushed).
async fn send(stream: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// What a relay is for: who the device is and how it speaks.
struct Relay<'a> {
    identity: &'a Identity,
    level: u8,
    client_id: &'a str,
}

/// How a relay ended.
#[derive(Debug)]
enum Ended {
    /// The device said DISCONNECT.
    Disconnect,
    /// The device's socket closed, or could not be read.
    DeviceClosed,
    /// The gateway closed it, for this reason.
    ByGate(DeviceDisconnect, String),
    /// The broker closed its side.
    Broker,
}

/// Reads until `buf` starts with a complete packet.
async fn read_frame(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<mqtt::Frame, String> {
    loop {
        match mqtt::next(buf, max) {
            Next::Packet(frame) => return Ok(frame),
            Next::Incomplete => {}
            Next::TooLarge { remaining, .. } => return Err(format!("a first packet of {remaining} bytes")),
            Next::Malformed => return Err("not MQTT".into()),
        }
        buf.reserve(1024);
        match stream.read_buf(buf).await {
            Ok(0) => return Err("closed before a complete packet".into()),
            Ok(_) => {}
            Err(err) => return Err(err.to_string()),
        }
    }
}

/// Holds one count in `edge_gateway_devices_connected` while alive, and marks an
/// authenticated device connected in the read model until it is dropped.
struct Connected(DeviceMeters, Option<(crate::store::StoreHandle, String)>);

impl Connected {
    fn new(metrics: &DeviceMeters, device: Option<(crate::store::StoreHandle, String)>) -> Connected {
        metrics.devices.connected.inc();
        if let Some((store, id)) = &device {
            store.device_connection(id, true, crate::store::now_ms());
        }
        Connected(metrics.clone(), device)
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.devices.connected.dec();
        if let Some((store, id)) = &self.1 {
            store.device_connection(id, false, crate::store::now_ms());
        }
    }
}
