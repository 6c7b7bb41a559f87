//! The gate's side of relay.rs's rules, against a stand-in for the broker (a plain TCP
//! listener the test drives): what the broker sees and in which order decides whether
//! rumqttd removes a connection id twice, so these tests watch exactly that.

use std::sync::{mpsc, Arc};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::config::Access;
use crate::devices::control::Live;
use crate::devices::gate::{Gate, Settings};
use crate::devices::inflow::Inflow;
use crate::devices::metrics::DeviceDisconnect;
use crate::metrics::Metrics;
use crate::store::{self, Journal, RouteSpec};

const WAIT: Duration = Duration::from_secs(5);
/// Long enough for a gate that closes at once to have done it.
const SETTLE: Duration = Duration::from_millis(300);

/// A gate (anonymous access) in front of a listener the test plays the broker on.
struct Rig {
    device_port: u16,
    broker: TcpListener,
    metrics: Arc<Metrics>,
    _store: (store::Store, tempfile::TempDir),
}

async fn rig() -> Rig {
    let broker = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = crate::store::test_config::store_config();
    let metrics = Arc::new(Metrics::new(&["r".into()]));
    let routes = [RouteSpec { name: "r".into(), max_age: None }];
    let opened = Journal::new(dir.path()).open(&config, &routes, metrics.clone(), None).unwrap();
    let handle = opened.handle.clone();
    let settings = Settings {
        broker: broker.local_addr().unwrap(),
        level: 4,
        connect_timeout: WAIT,
        token: "token".into(),
        inflow: Arc::new(Inflow::new(1 << 20)),
        clients: Arc::default(),
        // Anonymous devices: every publish goes to the broker, nothing is queued.
        queue: mpsc::channel().0,
    };
    let (denied, _) = mpsc::sync_channel(10);
    let live = Live::new(Access::Anonymous, 10, 1024, None);
    let gate = Gate::new(settings, live, metrics.as_ref().into(), denied, handle);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let device_port = listener.local_addr().unwrap().port();
    tokio::spawn(gate.serve(listener));
    Rig { device_port, broker, metrics, _store: (opened, dir) }
}

/// CONNECT 3.1.1, clean session, keep-alive 30 s.
fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30];
    body.extend((client_id.len() as u16).to_be_bytes());
    body.extend(client_id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

/// A device connects through the gate; the test, as the broker, accepts and CONNACKs.
async fn connected(rig: &Rig, client_id: &str) -> (TcpStream, TcpStream) {
    let mut device = TcpStream::connect(("127.0.0.1", rig.device_port)).await.unwrap();
    device.write_all(&connect_packet(client_id)).await.unwrap();
    let (mut broker, _) =
        tokio::time::timeout(WAIT, rig.broker.accept()).await.expect("the gate reaches the broker").unwrap();
    let mut head = [0u8; 2];
    broker.read_exact(&mut head).await.unwrap();
    assert_eq!(head[0], 0x10, "a CONNECT first");
    broker.read_exact(&mut vec![0; usize::from(head[1])]).await.unwrap();
    broker.write_all(&[0x20, 2, 0, 0]).await.unwrap();
    let mut connack = [0u8; 4];
    device.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    (device, broker)
}

/// Ok(true) when the peer closed (EOF), Ok(false) on data, Err when nothing came in `within`.
async fn eof_within(stream: &mut TcpStream, within: Duration) -> Result<bool, tokio::time::error::Elapsed> {
    let mut byte = [0u8; 1];
    tokio::time::timeout(within, stream.read(&mut byte)).await.map(|read| matches!(read, Ok(0) | Err(_)))
}

/// Rule 1: after the device's DISCONNECT the broker's removal must be the only one, so the
/// gate leaves the broker socket open until the broker closes it (before the fix it closed
/// it at once, and rumqttd removed the id a second time).
#[tokio::test]
async fn after_a_disconnect_the_gate_waits_for_the_broker_to_close_first() {
    let rig = rig().await;
    let (mut device, mut broker) = connected(&rig, "d1").await;
    device.write_all(&[0xe0, 0]).await.unwrap();
    drop(device);
    let mut disconnect = [0u8; 2];
    broker.read_exact(&mut disconnect).await.unwrap();
    assert_eq!(disconnect, [0xe0, 0]);
    assert!(eof_within(&mut broker, SETTLE).await.is_err(), "the gate must not close the broker's socket first");
    drop(broker);
    assert_eq!(rig.metrics.devices.disconnects.iter().map(|c| c.get()).sum::<u64>(), 0, "the device's own choice");
}

/// Rule 2, and the gate's own takeover: the old connection's broker socket is half-closed
/// and the new connection reaches the broker only after the broker closed the old one.
#[tokio::test]
async fn a_takeover_reaches_the_broker_only_after_it_closed_the_old_connection() {
    let rig = rig().await;
    let (mut old_device, mut old_broker) = connected(&rig, "twin").await;
    let mut new_device = TcpStream::connect(("127.0.0.1", rig.device_port)).await.unwrap();
    new_device.write_all(&connect_packet("twin")).await.unwrap();
    assert_eq!(eof_within(&mut old_broker, WAIT).await, Ok(true), "the gate ends the old relay");
    assert!(
        tokio::time::timeout(SETTLE, rig.broker.accept()).await.is_err(),
        "the new connection must wait until the broker has closed the old one"
    );
    drop(old_broker);
    assert_eq!(eof_within(&mut old_device, WAIT).await, Ok(true), "the old device is closed");
    let (mut broker, _) = tokio::time::timeout(WAIT, rig.broker.accept()).await.expect("then it connects").unwrap();
    let mut head = [0u8; 1];
    broker.read_exact(&mut head).await.unwrap();
    assert_eq!(head[0], 0x10);
    assert_eq!(rig.metrics.devices.disconnects[DeviceDisconnect::Takeover as usize].get(), 1);
}

/// A device that closes without DISCONNECT: the broker sees the socket half-closed (its one
/// removal), and the broker closing an accepted connection is counted as reason `broker`.
#[tokio::test]
async fn a_closed_device_half_closes_the_broker_and_a_broker_close_is_counted() {
    let rig = rig().await;
    let (device, mut broker) = connected(&rig, "d1").await;
    drop(device);
    assert_eq!(eof_within(&mut broker, WAIT).await, Ok(true));
    drop(broker);
    let (mut device, broker) = connected(&rig, "d2").await;
    drop(broker);
    assert_eq!(eof_within(&mut device, WAIT).await, Ok(true), "the device is told by a close");
    let counted = || rig.metrics.devices.disconnects[DeviceDisconnect::Broker as usize].get();
    tokio::time::timeout(WAIT, async {
        while counted() != 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("counted as reason broker");
}
