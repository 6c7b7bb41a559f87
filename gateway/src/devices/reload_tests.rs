//! A reload of `[devices.auth]` at the gate, with real MQTT clients (rumqttc) as devices and
//! a stand-in for the broker behind the gate (and the ingest queue): a user added can connect, a removed one's open
//! connection is closed (counted as `revoked`) and it is refused from then on, and the other
//! devices' connections stay up. The real binary through SIGHUP: tests/tests/reload_devices.rs.

use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, ConnectionError, Event, MqttOptions, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc as channel, Notify};

use crate::config::Config;
use crate::devices::auth::hash_password;
use crate::devices::control::{Control, Live};
use crate::devices::gate::{Gate, Settings};
use crate::devices::inflow::Inflow;
use crate::devices::metrics::DeviceDisconnect;
use crate::metrics::Metrics;
use crate::store::{self, Journal, RouteSpec};

const WAIT: Duration = Duration::from_secs(10);
const ROUTE: &str = "[[routes]]\nname = \"r\"\nfrom = \"devices/+/events\"\nto = \"x/{gateway}\"\n";

/// What the stand-in broker received, from every connection.
#[derive(Default)]
struct Received {
    bytes: Mutex<Vec<u8>>,
    more: Notify,
}

impl Received {
    async fn wait_for(&self, needle: &[u8]) {
        let found = async {
            loop {
                let more = self.more.notified();
                if self.bytes.lock().unwrap().windows(needle.len()).any(|w| w == needle) {
                    return;
                }
                more.await;
            }
        };
        tokio::time::timeout(WAIT, found).await.expect("the broker behind the gate got it");
    }
}

/// A broker stand-in: CONNACKs every CONNECT, answers PINGREQ, keeps what it reads, closes
/// when the gate closes its side.
async fn broker(listener: TcpListener, received: Arc<Received>) {
    while let Ok((mut stream, _)) = listener.accept().await {
        let received = received.clone();
        tokio::spawn(async move {
            let mut head = [0u8; 2];
            stream.read_exact(&mut head).await.unwrap();
            let mut connect = vec![0; usize::from(head[1])];
            stream.read_exact(&mut connect).await.unwrap();
            // MQTT 5 (protocol level 5): a CONNACK with an empty property block.
            let connack: &[u8] = if connect[6] == 5 { &[0x20, 3, 0, 0, 0] } else { &[0x20, 2, 0, 0] };
            stream.write_all(connack).await.unwrap();
            let mut buf = [0u8; 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    // A DISCONNECT: the broker closes (relay.rs, rule 1).
                    Ok(_) if buf[0] == 0xe0 => return,
                    Ok(n) => {
                        if buf[..n] == [0xc0, 0] {
                            let _ = stream.write_all(&[0xd0, 0]).await;
                        }
                        received.bytes.lock().unwrap().extend_from_slice(&buf[..n]);
                        received.more.notify_waiters();
                    }
                }
            }
        });
    }
}

struct Rig {
    port: u16,
    /// The gate's MQTT 5 listener (same live state).
    port_v5: u16,
    live: Arc<Live>,
    control: Control,
    metrics: Arc<Metrics>,
    received: Arc<Received>,
    _store: (store::Store, tempfile::TempDir),
}

fn devices(users: &[(&str, &str)]) -> crate::config::DevicesConfig {
    let entries: Vec<String> = users.iter().map(|(name, hash)| format!("\"{name}\" = \"{hash}\"")).collect();
    let text = format!("[devices.auth]\nusers = {{ {} }}\n{ROUTE}", entries.join(", "));
    Config::parse(&text).unwrap().devices
}

/// Anonymous access with these `[devices]` lines.
fn anonymous(lines: &str) -> crate::config::DevicesConfig {
    let text = format!("[devices]\n{lines}\n[devices.auth]\nallow_anonymous = true\n{ROUTE}");
    Config::parse(&text).unwrap().devices
}

async fn rig(devices: &crate::config::DevicesConfig) -> Rig {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let broker_addr = listener.local_addr().unwrap();
    let received = Arc::new(Received::default());
    tokio::spawn(broker(listener, received.clone()));
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new(&["r".into()]));
    let routes = [RouteSpec { name: "r".into(), max_age: None }];
    let opened =
        Journal::new(dir.path()).open(&store::test_config::store_config(), &routes, metrics.clone(), None).unwrap();
    let crate::config::DevicesMode::Embedded { access, max_connections, .. } = &devices.mode else { panic!() };
    let live = Live::new(access.clone(), *max_connections, devices.max_payload.bytes() as usize, None);
    let (denied, _) = mpsc::sync_channel(10);
    let clients = Arc::default();
    // Named devices' event publishes go to the ingest queue, not the broker (arrivals.rs):
    // what arrives there is kept with what the broker received.
    let (queue, arrivals) = mpsc::channel();
    std::thread::spawn({
        let received = received.clone();
        move || {
            while let Ok(arrival) = arrivals.recv() {
                if let crate::devices::arrivals::Arrival::Direct(publishes) = arrival {
                    for publish in publishes {
                        let mut bytes = received.bytes.lock().unwrap();
                        bytes.extend_from_slice(publish.topic.as_bytes());
                        bytes.extend_from_slice(&publish.payload);
                    }
                    received.more.notify_waiters();
                }
            }
        }
    });
    let mut ports = Vec::new();
    for level in [4, 5] {
        let settings = Settings {
            broker: broker_addr,
            level,
            connect_timeout: WAIT,
            token: "token".into(),
            inflow: Arc::new(Inflow::new(1 << 20)),
            clients: Arc::clone(&clients),
            queue: queue.clone(),
        };
        let gate = Gate::new(settings, live.clone(), metrics.as_ref().into(), denied.clone(), opened.handle.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        ports.push(listener.local_addr().unwrap().port());
        tokio::spawn(gate.serve(listener));
    }
    let control = Control::new(devices, Some(live.clone()));
    Rig { port: ports[0], port_v5: ports[1], live, control, metrics, received, _store: (opened, dir) }
}

/// A device on rumqttc: its client, and how its connection went (Ok at the CONNACK, then
/// Err when it ends).
async fn device(
    port: u16,
    user: &str,
    password: &str,
) -> (AsyncClient, channel::UnboundedReceiver<Result<(), String>>) {
    let mut options = MqttOptions::new(user, "127.0.0.1", port);
    options.set_credentials(user, password).set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(options, 10);
    let (tx, rx) = channel::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => drop(tx.send(Ok(()))),
                Ok(_) => {}
                Err(err) => {
                    let refused = matches!(err, ConnectionError::ConnectionRefused(_));
                    let _ = tx.send(Err(if refused { format!("refused: {err}") } else { format!("closed: {err}") }));
                    return;
                }
            }
        }
    });
    (client, rx)
}

async fn next(outcome: &mut channel::UnboundedReceiver<Result<(), String>>) -> Result<(), String> {
    tokio::time::timeout(WAIT, outcome.recv()).await.expect("an outcome in time").expect("one more outcome")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_admits_added_users_and_closes_and_refuses_removed_ones_while_others_stay() {
    let (h1, h2, h3) = (hash_password("p1").unwrap(), hash_password("p2").unwrap(), hash_password("p3").unwrap());
    let rig = rig(&devices(&[("d1", &h1), ("d2", &h2)])).await;
    let (d1, mut d1_state) = device(rig.port, "d1", "p1").await;
    let (_d2, mut d2_state) = device(rig.port, "d2", "p2").await;
    assert_eq!(next(&mut d1_state).await, Ok(()));
    assert_eq!(next(&mut d2_state).await, Ok(()));
    let (_d3, mut d3_state) = device(rig.port, "d3", "p3").await;
    assert!(next(&mut d3_state).await.unwrap_err().starts_with("refused"), "d3 is not a user yet");

    let lines = rig.control.apply_users(&devices(&[("d1", &h1), ("d3", &h3)])).unwrap();
    assert_eq!(lines, ["device users: 1 added (d3), 1 removed (d2): 1 open connection of removed users closed"]);
    assert!(next(&mut d2_state).await.unwrap_err().starts_with("closed"), "d2's open connection is closed");
    assert_eq!(rig.metrics.devices.disconnects[DeviceDisconnect::Revoked as usize].get(), 1);

    let (_d2, mut d2_state) = device(rig.port, "d2", "p2").await;
    assert!(next(&mut d2_state).await.unwrap_err().starts_with("refused"), "d2 is refused from now on");
    let (d3, mut d3_state) = device(rig.port, "d3", "p3").await;
    assert_eq!(next(&mut d3_state).await, Ok(()), "d3 can connect now");
    // d1's connection stayed up through the reload: its publish still reaches the broker.
    // (d3's publish relayed also means its relay, and its count in the gauge, have begun:
    // the gate counts a connection just after it sent the CONNACK.)
    d1.publish("devices/d1/events", QoS::AtMostOnce, false, b"after".to_vec()).await.unwrap();
    d3.publish("devices/d3/events", QoS::AtMostOnce, false, b"new".to_vec()).await.unwrap();
    rig.received.wait_for(b"devices/d1/eventsafter").await;
    rig.received.wait_for(b"devices/d3/eventsnew").await;
    assert!(d1_state.try_recv().is_err(), "d1 was never disconnected");
    assert_eq!(rig.metrics.devices.connected.get(), 2, "d1 and d3");
}

/// Polls until `live` holds `n` places (a place is given back when its relay has ended,
/// which nothing outside the gate can await).
async fn held(live: &Live, n: usize) {
    let given_back = async {
        while live.places.held() != n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(WAIT, given_back).await.expect("places given back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_lowered_by_a_reload_hold_for_new_connections_and_close_none() {
    let rig = rig(&anonymous("max_connections = 3\nmax_payload = \"1KiB\"")).await;
    let (a, mut a_state) = device(rig.port, "a", "-").await;
    let (b, mut b_state) = device(rig.port, "b", "-").await;
    assert_eq!(next(&mut a_state).await, Ok(()));
    assert_eq!(next(&mut b_state).await, Ok(()));
    let lines = rig.control.apply_limits(&anonymous("max_connections = 1\nmax_payload = \"512B\"")).unwrap();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[1].starts_with("devices.max_connections: 3 -> 1 (2 connected now: none is closed"), "{lines:?}");
    let (_c, mut c_state) = device(rig.port, "c", "-").await;
    assert!(next(&mut c_state).await.unwrap_err().starts_with("refused"), "over the new limit");
    // a connected under 1KiB and keeps it.
    a.publish("big/a", QoS::AtMostOnce, false, vec![b'x'; 800]).await.unwrap();
    rig.received.wait_for(&[b'x'; 800]).await;
    b.disconnect().await.unwrap();
    held(&rig.live, 1).await;
    let (_c, mut c_state) = device(rig.port, "c", "-").await;
    assert!(next(&mut c_state).await.unwrap_err().starts_with("refused"), "refused until fewer than 1");
    a.disconnect().await.unwrap();
    held(&rig.live, 0).await;

    // A new MQTT 5 connection is told the new limit, and held to it.
    let mut v5 = tokio::net::TcpStream::connect(("127.0.0.1", rig.port_v5)).await.unwrap();
    let mut connect = vec![0x10, 16, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 30, 0, 0, 3];
    connect.extend(b"v5d");
    v5.write_all(&connect).await.unwrap();
    let mut connack = [0u8; 10];
    v5.read_exact(&mut connack).await.unwrap();
    let max = crate::devices::mqtt::v5::max_packet_size(512).to_be_bytes();
    assert_eq!(connack, [0x20, 8, 0, 0, 5, 0x27, max[0], max[1], max[2], max[3]], "Maximum Packet Size 515");
    let mut publish = vec![0x30];
    crate::devices::mqtt::v5::put_varint(&mut publish, 2 + 3 + 1 + 600);
    publish.extend([0, 3, b'b', b'i', b'g', 0]);
    publish.extend([b'y'; 600]);
    v5.write_all(&publish).await.unwrap();
    let mut disconnect = [0u8; 4];
    tokio::time::timeout(WAIT, v5.read_exact(&mut disconnect)).await.unwrap().unwrap();
    assert_eq!(disconnect, crate::devices::mqtt::v5::disconnect(0x95), "a packet too large for the new limit");
    assert_eq!(rig.metrics.devices.disconnects[DeviceDisconnect::TooLarge as usize].get(), 1);
}
