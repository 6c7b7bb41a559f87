//! The device gate: the listener devices connect to, in front of the embedded broker.
//!
//! rumqttd 0.20 has no topic ACLs, does not tell its links who published a message, and
//! gives no reliable signal of connects and disconnects. So the gateway owns the device
//! port and relays each accepted connection to rumqttd on a loopback port:
//!
//! 1. TLS (optional; client certificates required when a client CA is configured), with a
//!    handshake deadline, on its own task: a silent client never holds up the listener.
//! 2. The first packet must be a CONNECT within the pre-login deadline; connections before
//!    login are bounded per source address and in all, the oldest idle one evicted to make
//!    room ([`prelogin`]). The CONNECT is checked ([`login`]: protocol level, credentials
//!    ([`super::auth`]), will topic); a refusal gets a CONNACK with the MQTT reason code.
//! 3. `max_connections` is enforced here, with a CONNACK "server unavailable"; the
//!    connection's place remembers its login, and a reload that revokes it closes the
//!    connection ([`super::places`]).
//! 4. The CONNECT goes to rumqttd with its password replaced by a per-process token that
//!    rumqttd's auth hook demands: the loopback port is useless without the gate.
//! 5. MQTT 5: the CONNACK advertises `max_payload` as the Maximum Packet Size; a disconnect
//!    the gate causes is said with a DISCONNECT reason code (0x95 for a packet too large);
//!    the device's own Maximum Packet Size is honoured ([`deliver`]); Clean Start and
//!    Session Expiry are mapped onto rumqttd's single clean flag ([`login::SessionPlan`]).
//! 6. Every packet from the device is delimited ([`uplink`]); a packet over `max_payload`
//!    is counted and the device disconnected. For an authenticated device every PUBLISH
//!    topic must be under `devices/{id}/` (not its `ack` or `commands`), every SUBSCRIBE
//!    filter one of its own `devices/{id}/ack`, `devices/{id}/commands[/...]`; a refused
//!    publish becomes a dead letter with the reason, and the device is disconnected (MQTT
//!    3.1.1 §3.3.5 allows nothing else: a refused PUBLISH cannot be reported to the client).
//! 7. A named device's QoS 0 and 1 event publishes are not relayed: the gate queues them for
//!    ingest and sends their PUBACKs itself ([`super::arrivals`]; [`uplink`], [`deliver`]).
//!
//! Invariant: `edge_gateway_devices_connected` counts connections that rumqttd accepted
//! (its CONNACK said success) and whose relay still runs; it goes down when either side
//! closes, whoever closed.

mod deliver;
mod login;
pub mod prelogin;
mod tls;
mod uplink;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU32;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::warn;

use self::prelogin::{Admitted, Cut, Eviction, Prelogin};
pub use self::tls::server_config;
use super::auth::Identity;
use super::control::Live;
use super::metrics::{ConnectionRefusal, DeviceDisconnect, DeviceMeters};
use super::mqtt::{self, v5, Next, Refusal};
use super::places;
use super::relay::{self, Claim, Clients, Held};
use crate::pipeline::Denied;
pub use crate::rights::{may_publish, may_subscribe};
use crate::util::RateLimited;

/// How the gate is set up.
pub struct Settings {
    /// The broker listener behind the gate (loopback).
    pub broker: SocketAddr,
    /// The MQTT protocol level this listener serves: 4 (3.1.1) or 5; a CONNECT of another
    /// level gets CONNACK 1 ([MQTT-3.1.2-2]).
    pub level: u8,
    /// Time from accept to a complete CONNECT, TLS handshake included (shortened under
    /// pressure: [`prelogin`]); also the bound of a password check.
    pub connect_timeout: Duration,
    /// The password the broker behind the gate wants.
    pub token: Arc<str>,
    /// Back-pressure: publishes waiting in the broker ([`super::inflow`]).
    pub inflow: Arc<super::inflow::Inflow>,
    /// The relays by client id, shared by every listener of the broker ([`relay`]).
    pub clients: Arc<Clients>,
    /// The ingest thread's queue, for the publishes the gate takes itself
    /// ([`super::arrivals`]).
    pub queue: super::arrivals::Queue,
}

/// What every connection task shares.
pub struct Gate {
    settings: Settings,
    /// Users, `max_connections`, `max_payload` and TLS: shared by the broker's listeners,
    /// changed by a reload ([`super::control`]).
    live: Arc<Live>,
    metrics: DeviceMeters,
    denied: mpsc::SyncSender<Denied>,
    /// The journal, for the read model's connection state of authenticated devices.
    store: crate::store::StoreHandle,
    prelogin: Arc<Prelogin>,
    /// Places for connections in their probation ([`prelogin::MAX_PROBATION`]).
    probation: Arc<Semaphore>,
    refusal_log: Mutex<RateLimited>,
    denial_log: Mutex<RateLimited>,
    disconnect_log: Mutex<RateLimited>,
}

impl Gate {
    /// A gate; refused publishes go to `denied`; connects and disconnects of authenticated
    /// devices go to the read model in `store`.
    pub fn new(
        settings: Settings,
        live: Arc<Live>,
        metrics: DeviceMeters,
        denied: mpsc::SyncSender<Denied>,
        store: crate::store::StoreHandle,
    ) -> Arc<Gate> {
        Arc::new(Gate {
            prelogin: Prelogin::new(prelogin::Limits::gate(settings.connect_timeout)),
            probation: Arc::new(Semaphore::new(prelogin::MAX_PROBATION)),
            settings,
            live,
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
        // Probation (prelogin.rs): a device's first bytes come right after the handshake.
        let sending = match self.probation.clone().try_acquire_owned() {
            // A real peek: the socket's readiness alone can be set with nothing to read.
            Ok(_permit) => {
                let first = tokio::time::timeout(prelogin::PROBATION, stream.peek(&mut [0u8; 1])).await;
                matches!(first, Ok(Ok(1..)))
            }
            Err(_) => false,
        };
        let mut admitted = match self.prelogin.admit(peer.ip(), sending) {
            Ok(admitted) => admitted,
            Err(prelogin::Full) => {
                let detail = "every pre-login place is taken by a connection whose CONNECT is being checked";
                return self.refuse(ConnectionRefusal::Limit, peer, detail);
            }
        };
        let _ = stream.set_nodelay(true);
        match self.live.acceptor() {
            // Plain TCP splits into owned halves without a lock between them.
            None => self.session(stream, peer, admitted, TcpStream::into_split).await,
            Some(acceptor) => match admitted.within(acceptor.accept(stream)).await {
                Ok(Ok(tls)) => self.session(tls, peer, admitted, tokio::io::split).await,
                Ok(Err(err)) => self.refuse(ConnectionRefusal::Tls, peer, &err.to_string()),
                Err(cut) => self.cut(cut, peer, ConnectionRefusal::Tls, "no TLS handshake in time"),
            },
        }
    }

    /// Counts and logs a connection the pre-login limits ended: `late` (as `reason`) when
    /// its own deadline passed in calm times, `evicted` otherwise.
    fn cut(&self, cut: Cut, peer: SocketAddr, reason: ConnectionRefusal, late: &str) {
        match cut {
            Cut::Deadline { pressed: false } => self.refuse(reason, peer, late),
            Cut::Deadline { pressed: true } => {
                self.refuse(ConnectionRefusal::Evicted, peer, Eviction::Pressure.detail())
            }
            Cut::Evicted(why) => self.refuse(ConnectionRefusal::Evicted, peer, why.detail()),
        }
    }

    /// One device connection after TLS: CONNECT, checks, then the relay until either side
    /// closes.
    async fn session<S, R, W>(
        &self,
        mut client: S,
        peer: SocketAddr,
        mut admitted: Admitted,
        split: impl FnOnce(S) -> (R, W),
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut buf = Vec::with_capacity(1024);
        let frame = match admitted.within(read_frame(&mut client, &mut buf, 64 * 1024)).await {
            Ok(Ok(frame)) if frame.kind == mqtt::CONNECT => frame,
            Ok(Ok(_)) => return self.refuse(ConnectionRefusal::Protocol, peer, "the first packet is not a CONNECT"),
            Ok(Err(err)) => return self.refuse(ConnectionRefusal::Protocol, peer, &err),
            Err(cut) => return self.cut(cut, peer, ConnectionRefusal::Protocol, "no CONNECT in time"),
        };
        if let Err(cut) = admitted.connect_received() {
            return self.cut(cut, peer, ConnectionRefusal::Protocol, "no CONNECT in time");
        }
        let Some(mut login) = self.login(&mut client, peer, &buf[frame.body..frame.len]).await else { return };
        buf.drain(..frame.len);
        drop(admitted);
        let client_id = login.client_id.as_str();
        // One relay per client id at the broker: an older one is closed first (relay.rs).
        let (slot, claim) = self.settings.clients.claim(client_id).await;
        let _held = Held(&self.settings.clients, client_id, &slot);
        match claim {
            Ok(_) => {}
            Err(Claim::TakenOver) => {
                let detail = "a newer connection with the same client id came before this one was served";
                return self.disconnect(DeviceDisconnect::Takeover, peer, client_id, detail);
            }
            Err(Claim::Stuck) => warn!(
                %peer, client_id,
                "the embedded broker did not close the older connection with this client id in time; connecting anyway"
            ),
        }
        let Some((plan, forwarded)) = self.forwarded_connect(&login) else { return };
        let keep_alive =
            mqtt::connect(&login.body).map_or(mqtt::KEEP_ALIVE_FOR_OFF, |c| mqtt::broker_keep_alive(c.keep_alive));
        if plan.discard_first && !self.discard_session(client_id).await {
            warn!(%peer, client_id, "could not discard the kept session for a Clean Start; it is resumed");
        }
        let level = login.level;
        let refuse_busy = || mqtt::connack_refusal(level, Refusal::Busy);
        let mut broker = match TcpStream::connect(self.settings.broker).await {
            Ok(broker) => broker,
            Err(err) => {
                tracing::error!(error = %err, "cannot reach the embedded broker behind the device gate");
                let _ = send(&mut client, &refuse_busy()).await;
                return;
            }
        };
        let _ = broker.set_nodelay(true);
        if broker.write_all(&forwarded).await.is_err() {
            return;
        }
        // The broker's CONNACK: the device counts as connected only when it says success.
        let mut from_broker = Vec::with_capacity(64);
        let read =
            tokio::time::timeout(self.settings.connect_timeout, read_frame(&mut broker, &mut from_broker, 1024)).await;
        let connack = match &read {
            Ok(Ok(frame)) if frame.kind == 2 => Some(*frame),
            _ => None,
        };
        if connack.is_none() {
            let why = match read {
                Ok(Ok(frame)) => format!("packet type {} instead of a CONNACK", frame.kind),
                Ok(Err(err)) => err,
                Err(_) => "no CONNACK in time".into(),
            };
            warn!(%peer, client_id, why, "the embedded broker did not answer the CONNECT; the device is told: server busy");
        }
        let accepted = connack.is_some_and(|frame| from_broker.get(frame.body + 1) == Some(&0));
        let mut to_client = match connack {
            // MQTT 5: the gate's own packet limit is the device's to know [MQTT-3.2.2.3.6].
            Some(frame) if level == 5 => {
                let max = v5::max_packet_size(login.max_payload);
                v5::connack_with_max_packet_size(&from_broker[frame.body..frame.len], max)
                    .unwrap_or_else(|_| from_broker[..frame.len].to_vec())
            }
            Some(frame) => from_broker[..frame.len].to_vec(),
            None => Vec::new(),
        };
        let pending = from_broker.split_off(connack.map_or(from_broker.len(), |frame| frame.len));
        if !accepted {
            if to_client.is_empty() {
                to_client = refuse_busy();
            }
            let _ = send(&mut client, &to_client).await;
            let (broker_read, broker_write) = broker.into_split();
            relay::close_broker(broker_write, false, relay::drain(broker_read)).await;
            return;
        }
        if send(&mut client, &to_client).await.is_err() {
            let (broker_read, broker_write) = broker.into_split();
            relay::close_broker(broker_write, false, relay::drain(broker_read)).await;
            self.session_ended(&login, plan, None, false).await;
            return;
        }
        // Only an authenticated connection says which device it is (an anonymous client id
        // is not an identity): the read model's `connected` stays unknown for the others.
        let device = match &login.grant.identity {
            Identity::Device(id) => Some((self.store.clone(), id.clone())),
            Identity::Anonymous => None,
        };
        let connected = Connected::new(&self.metrics, device);
        tracing::debug!(%peer, client_id, "device connected");
        let (client_read, client_write) = split(client);
        let (broker_read, mut broker_write) = broker.into_split();
        let (owed_tx, mut owed) = tokio::sync::mpsc::unbounded_channel();
        let bound = login.v5.max_packet_size.map(|max| deliver::Bound { max: max as usize, owed: owed_tx });
        let (to_device, packets) = tokio::sync::mpsc::unbounded_channel();
        let pings = AtomicU32::new(0);
        let from_gate = deliver::FromGate { packets, pings: &pings };
        let downlink = deliver::downlink(broker_read, client_write, pending, bound, from_gate, |bytes| {
            self.not_delivered(client_id, bytes)
        });
        tokio::pin!(downlink);
        let mut farewell = uplink::Farewell::default();
        let relay = Relay {
            identity: &login.grant.identity,
            level,
            client_id,
            session_expiry: login.v5.session_expiry,
            max_payload: login.max_payload,
            keep_alive,
            pings: &pings,
            to_device: &to_device,
        };
        let (ended, device) = tokio::select! {
            ended = self.uplink(client_read, &mut broker_write, buf, &relay, &mut farewell, &mut owed) => (ended, None),
            () = slot.taken_over() => {
                (Ended::ByGate(DeviceDisconnect::Takeover, "a newer connection with the same client id".into()), None)
            }
            why = login.place.revoked() => {
                (Ended::ByGate(DeviceDisconnect::Revoked, places::revocation_detail(why).into()), None)
            }
            device = &mut downlink => (Ended::Broker, Some(device)),
        };
        let device = match device {
            Some(device) => Some(device),
            None => relay::close_broker(broker_write, farewell.said_disconnect, downlink).await,
        };
        match &ended {
            Ended::ByGate(reason, detail) => self.disconnect(*reason, peer, client_id, detail),
            Ended::Broker if !farewell.said_disconnect => {
                let detail =
                    "the embedded broker closed the connection (keep-alive expired, or an MQTT error it found)";
                self.disconnect(DeviceDisconnect::Broker, peer, client_id, detail);
            }
            _ => {}
        }
        match device {
            Some(device) => goodbye(device, level, &ended).await,
            None => warn!(%peer, client_id, "the embedded broker did not close an ended device connection in time"),
        }
        drop(connected);
        let taken_over = matches!(ended, Ended::ByGate(DeviceDisconnect::Takeover, _));
        self.session_ended(&login, plan, farewell.session_expiry, taken_over).await;
        drop(login.place);
        tracing::debug!(%peer, client_id, ?ended, "device disconnected");
    }

    /// Counts and logs (rate-limited) a publish not delivered because it is larger than the
    /// device's own Maximum Packet Size.
    fn not_delivered(&self, client_id: &str, bytes: usize) {
        self.metrics.devices.not_delivered.add(1);
        if let Some(suppressed) = self.denial_log.lock().ok().and_then(|mut log| log.allow()) {
            warn!(
                client_id,
                bytes,
                suppressed,
                "a publish larger than the device's Maximum Packet Size was not delivered to it [MQTT-3.1.2-25]"
            );
        }
    }
}

/// Closes the device's side; on MQTT 5, a disconnect the gateway caused is first said with
/// its reason code (MQTT 5 §3.14.2.1; a packet over the limit: 0x95).
async fn goodbye(device: Option<impl AsyncWrite + Unpin>, level: u8, ended: &Ended) {
    let Some(mut device) = device else { return };
    if let (5, Ended::ByGate(reason, why)) = (level, ended) {
        let code = match reason {
            DeviceDisconnect::Denied | DeviceDisconnect::Revoked => v5::reason::NOT_AUTHORIZED,
            DeviceDisconnect::TooLarge => v5::reason::PACKET_TOO_LARGE,
            DeviceDisconnect::Protocol if why.starts_with("malformed") => v5::reason::MALFORMED,
            DeviceDisconnect::Protocol => v5::reason::PROTOCOL_ERROR,
            DeviceDisconnect::Takeover => v5::reason::SESSION_TAKEN_OVER,
            DeviceDisconnect::Broker => 0,
        };
        if code != 0 {
            let _ = device.write_all(&v5::disconnect(code)).await;
        }
    }
    let _ = device.shutdown().await;
}

/// Writes and flushes (a TLS stream may hold what was written until flushed).
async fn send(stream: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// What a relay is for: who the device is and how it speaks.
#[derive(Clone, Copy)]
struct Relay<'a> {
    identity: &'a Identity,
    level: u8,
    client_id: &'a str,
    /// The Session Expiry Interval of its MQTT 5 CONNECT.
    session_expiry: u32,
    /// `devices.max_payload` when it connected (an MQTT 5 device was told it).
    max_payload: usize,
    /// The keep-alive the broker enforces, in seconds (uplink.rs pings it at half).
    keep_alive: u16,
    /// PINGREQs the gate sent for the device whose PINGRESP the downlink keeps.
    pings: &'a AtomicU32,
    /// Packets the gate owes the device (PUBACKs), sent by the downlink.
    to_device: &'a tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
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
