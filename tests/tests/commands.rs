//! Cloud-to-device commands end to end: Mosquitto as the cloud, `mosquitto_pub` as the
//! cloud application, the real gateway binary, and the firmware's simulator as the device.
//! Commands wait for an offline device, expire at their deadline, are delivered one at a
//! time in order, report `accepted < delivered < done` with their id, and survive a
//! SIGKILL of the gateway (and being sent while the gateway is down).

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edge_tests::gateway::{Gateway, Setup};
use edge_tests::mosquitto::Mosquitto;
use edge_tests::sim::Sim;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

const WAIT: Duration = Duration::from_secs(40);

/// One status as the cloud got it.
#[derive(Debug, Clone, PartialEq)]
struct Status {
    device: String,
    id: String,
    status: String,
    message: Option<String>,
}

/// Collects every status publish of gateway `gw-test`.
struct StatusWatcher {
    got: Arc<Mutex<Vec<Status>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StatusWatcher {
    async fn connect(port: u16) -> StatusWatcher {
        let mut options = MqttOptions::new(format!("status-{}", rand::random::<u32>()), "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        client.subscribe("gateways/gw-test/commands/+/status", QoS::AtLeastOnce).await.unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let shared = got.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        let task = tokio::spawn(async move {
            let _client = client;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let json: serde_json::Value = serde_json::from_slice(&p.payload).expect("a status is JSON");
                        assert!(json["ts"].as_u64().is_some_and(|ts| ts > 1_700_000_000_000), "{json}");
                        let device = p.topic.split('/').nth(3).unwrap().to_owned();
                        shared.lock().unwrap().push(Status {
                            device,
                            id: json["id"].as_str().unwrap_or_default().to_owned(),
                            status: json["status"].as_str().expect("status").to_owned(),
                            message: json["message"].as_str().map(str::to_owned),
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx).await.unwrap().unwrap();
        StatusWatcher { got, task }
    }

    fn all(&self) -> Vec<Status> {
        self.got.lock().unwrap().clone()
    }

    /// Statuses of command `id`, first occurrences only (delivery is at least once).
    fn of(&self, id: &str) -> Vec<String> {
        let mut seen = Vec::new();
        for s in self.all().into_iter().filter(|s| s.id == id) {
            if !seen.contains(&s.status) {
                seen.push(s.status);
            }
        }
        seen
    }

    /// Waits for `status` of `id`; on timeout, fails with every status and `log()`.
    fn wait_for(&self, id: &str, status: &str, log: impl Fn() -> String) -> Status {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(found) = self.all().into_iter().find(|s| s.id == id && s.status == status) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no status {status:?} of {id:?} within {WAIT:?}; got {:#?}\n{}",
                self.all(),
                log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Index of the first `status` of `id` among all statuses.
    fn position(&self, id: &str, status: &str) -> usize {
        self.all()
            .iter()
            .position(|s| s.id == id && s.status == status)
            .unwrap_or_else(|| panic!("no {status} for {id}"))
    }
}

impl Drop for StatusWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The cloud application: `mosquitto_pub -q 1` a command for `device`.
fn send(cloud: u16, device: &str, json: &str) {
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &cloud.to_string(), "-q", "1"])
        .args(["-t", &format!("gateways/gw-test/commands/{device}"), "-m", json])
        .status()
        .expect("mosquitto_pub not installed: run scripts/test");
    assert!(status.success());
}

/// A command's state in the gateway's journal (read-only; the gateway keeps running).
fn state_of(journal: &std::path::Path, id: &str) -> Option<String> {
    let conn = rusqlite::Connection::open_with_flags(journal, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    conn.query_row("SELECT state FROM commands WHERE id = ?1", [id], |r| r.get(0)).ok()
}

/// The gateway subscribes after it is ready; until its session's first subscription the
/// cloud broker drops commands (MQTT keeps messages only for a subscribed session). Probes
/// (to a device that never comes) until one is accepted.
fn wait_for_command_session(cloud: u16, watcher: &StatusWatcher, gateway: &Gateway) {
    let deadline = Instant::now() + WAIT;
    for n in 0.. {
        send(cloud, "probe", &format!(r#"{{"id":"probe-{n}","name":"ping"}}"#));
        let wait = Instant::now() + Duration::from_millis(300);
        while Instant::now() < wait {
            if watcher.all().iter().any(|s| s.device == "probe") {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(Instant::now() < deadline, "the command session never subscribed:\n{}", gateway.log_text());
    }
}

fn setup(cloud: u16, data: &std::path::Path) -> Setup {
    let mut setup = Setup::new(cloud, data);
    setup.routes =
        "[[routes]]\nname = \"telemetry\"\nfrom = \"devices/+/events\"\nto = \"gateways/{gateway}/telemetry\"\n\n\
                    [commands]\nenabled = true\nresend = \"1s\"\n"
            .into();
    setup
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_wait_for_an_offline_device_expire_and_run_in_order() {
    let cloud = Mosquitto::start();
    let watcher = StatusWatcher::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let mut setup = setup(cloud.port, data.path());
    // The embedded broker's ingest takes every topic: the devices' answers must not end
    // up as dead letters.
    setup.devices = "unrouted = \"dead_letter\"\n".into();
    let gateway = Gateway::start(&setup);
    wait_for_command_session(cloud.port, &watcher, &gateway);
    let log = || gateway.log_text();

    // The device is offline: everything is accepted; the one past its deadline expires.
    let device = "cmd-0000";
    send(cloud.port, device, r#"{"id":"c1","name":"ping"}"#);
    send(cloud.port, device, r#"{"id":"c2","name":"set_interval","payload":{"ms":100}}"#);
    send(cloud.port, device, r#"{"id":"c3","name":"ping","deadline_ms":1000}"#);
    send(cloud.port, device, r#"{"id":"c4","name":"reboot"}"#);
    send(cloud.port, device, r#"{"id":"c5","name":"dance"}"#);
    send(cloud.port, device, r#"{"id":"c6","name":"ping","payload":null}"#);
    // Garbage gets a failed status with the reason (and no id when it had none).
    send(cloud.port, device, "not json");
    for id in ["c1", "c2", "c3", "c4", "c5", "c6"] {
        watcher.wait_for(id, "accepted", log);
    }
    let expired = watcher.wait_for("c3", "expired", log);
    assert_eq!(expired.device, device);
    let garbage = watcher.wait_for("", "failed", log);
    assert!(garbage.message.as_deref().is_some_and(|m| m.contains("not a JSON command")), "{garbage:?}");
    assert!(
        watcher.all().iter().all(|s| s.status == "accepted" || s.status == "expired" || s.status == "failed"),
        "nothing is delivered while the device is offline: {:?}",
        watcher.all()
    );

    // The device comes online: the commands go out one at a time, in order.
    let sim =
        Sim::start(gateway.setup.devices_port, &["--devices", "1", "--events", "0", "--rate", "2", "--prefix", "cmd"]);
    let log = || format!("{}\n--- simulator:\n{}", gateway.log_text(), sim.output());
    let c6 = watcher.wait_for("c6", "done", log);
    assert_eq!(c6.message.as_deref(), Some("pong"));
    assert_eq!(watcher.wait_for("c1", "done", log).message.as_deref(), Some("pong"));
    assert_eq!(watcher.wait_for("c2", "done", log).message.as_deref(), Some("interval 100 ms"));
    assert!(watcher.wait_for("c4", "done", log).message.is_some_and(|m| m.starts_with("rebooting as boot ")));
    let c5 = watcher.wait_for("c5", "failed", log);
    assert!(c5.message.as_deref().is_some_and(|m| m.contains("unknown command")), "{c5:?}");

    for id in ["c1", "c2", "c4", "c6"] {
        assert_eq!(watcher.of(id), ["accepted", "delivered", "done"], "{id}: {:?}", watcher.all());
    }
    assert_eq!(watcher.of("c5"), ["accepted", "delivered", "failed"]);
    assert_eq!(watcher.of("c3"), ["accepted", "expired"], "an expired command is never delivered");
    // Delivered in the order sent: each one finished before the next was delivered.
    let order = ["c1", "c2", "c4", "c5", "c6"];
    for pair in order.windows(2) {
        let finished = if pair[0] == "c5" { "failed" } else { "done" };
        assert!(
            watcher.position(pair[0], finished) < watcher.position(pair[1], "delivered"),
            "{} finished before {} was delivered: {:?}",
            pair[0],
            pair[1],
            watcher.all()
        );
    }
    // Metrics: statuses counted once each when the cloud acknowledged them.
    let port = gateway.setup.http_port;
    let done = "edge_gateway_commands_total{status=\"done\"}";
    let deadline = Instant::now() + WAIT;
    while edge_tests::http::metric(port, done) != Some(4.0) {
        assert!(Instant::now() < deadline, "{done} = {:?}", edge_tests::http::metric(port, done));
        std::thread::sleep(Duration::from_millis(10));
    }
    let (_, text) = edge_tests::http::get(port, "/metrics").unwrap();
    let samples = edge_tests::http::parse_prometheus(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let sample = |name: &str| samples.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    assert_eq!(sample("edge_gateway_commands_total{status=\"expired\"}"), Some(1.0));
    assert_eq!(sample("edge_gateway_commands_total{status=\"failed\"}"), Some(2.0), "c5 and the garbage");
    assert_eq!(sample("edge_gateway_commands_link_up"), Some(1.0));
    // The never-online probe device's commands are the only open ones.
    let probes = watcher.all().iter().filter(|s| s.device == "probe" && s.status == "accepted").count();
    assert_eq!(sample("edge_gateway_commands_open"), Some(probes as f64), "{text}");
    // The answers are the gateway's protocol, not events.
    assert_eq!(gateway.status()["dead_letters"].as_u64(), Some(0), "{}", gateway.status());
    // The device rebooted on command (a new boot id) and carried on.
    assert!(sim.output().contains("c4 reboot"), "{}", sim.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_survives_a_gateway_sigkill_and_one_sent_while_it_is_down_arrives() {
    let cloud = Mosquitto::start();
    let watcher = StatusWatcher::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let setup = setup(cloud.port, data.path());
    let mut gateway = Gateway::start(&setup);
    wait_for_command_session(cloud.port, &watcher, &gateway);
    let device = "kill-0000";
    send(cloud.port, device, r#"{"id":"k1","name":"ping"}"#);
    watcher.wait_for("k1", "accepted", || gateway.log_text());
    // Accepted, not yet delivered (the device is offline): kill -9.
    gateway.kill();
    // Sent while the gateway is down: the cloud broker keeps it for the -cmd session.
    send(cloud.port, device, r#"{"id":"k2","name":"set_interval","payload":250}"#);
    let gateway = Gateway::start(&setup);
    let sim = Sim::start(setup.devices_port, &["--devices", "1", "--events", "0", "--rate", "2", "--prefix", "kill"]);
    let log = || format!("{}\n--- simulator:\n{}", gateway.log_text(), sim.output());
    assert_eq!(watcher.wait_for("k1", "done", log).message.as_deref(), Some("pong"));
    assert_eq!(watcher.wait_for("k2", "done", log).message.as_deref(), Some("interval 250 ms"));
    assert_eq!(watcher.of("k1"), ["accepted", "delivered", "done"], "{:?}", watcher.all());
    assert_eq!(watcher.of("k2"), ["accepted", "delivered", "done"], "{:?}", watcher.all());
    assert!(watcher.position("k1", "done") < watcher.position("k2", "delivered"));
    let runs = sim.output().matches("k1 ping").count();
    assert_eq!(runs, 1, "the device ran k1 once:\n{}", sim.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_external_device_broker_firmware_and_hand_made_devices_get_commands() {
    let local = Mosquitto::start();
    let cloud = Mosquitto::start();
    let watcher = StatusWatcher::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let mut setup = setup(cloud.port, data.path());
    setup.devices = format!("mode = \"external\"\nurl = \"mqtt://127.0.0.1:{}\"\n", local.port);
    let gateway = Gateway::start(&setup);
    wait_for_command_session(cloud.port, &watcher, &gateway);
    let log = || gateway.log_text();

    // A device without the firmware: it reads the command with mosquitto_sub and answers
    // in JSON with mosquitto_pub. The gateway re-sends until it gets an answer.
    send(cloud.port, "hand-1", r#"{"id":"j1","name":"open_valve","payload":{"valve":2}}"#);
    watcher.wait_for("j1", "accepted", log);
    let got = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &local.port.to_string(), "-q", "1", "-C", "1", "-W", "30"])
        .args(["-t", "devices/hand-1/commands"])
        .output()
        .unwrap();
    assert!(got.status.success(), "no command for hand-1 within 30 s:\n{}", log());
    let command = edge_event::command::Command::decode(got.stdout.strip_suffix(b"\n").unwrap_or(&got.stdout)).unwrap();
    assert_eq!((command.id, command.name, command.payload), ("j1", "open_valve", r#"{"valve":2}"#));
    assert!(command.deadline_ms.is_some_and(|d| d > 1_700_000_000_000), "the default deadline: {command:?}");
    let answer = r#"{"id":"j1","status":"done","message":"valve 2 open"}"#;
    let sent = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &local.port.to_string(), "-q", "1"])
        .args(["-t", "devices/hand-1/commands/status", "-m", answer])
        .status()
        .unwrap();
    assert!(sent.success());
    assert_eq!(watcher.wait_for("j1", "done", log).message.as_deref(), Some("valve 2 open"));
    assert_eq!(watcher.of("j1"), ["accepted", "delivered", "done"], "a final answer implies delivered");

    // A firmware device on the same broker.
    send(cloud.port, "ext-0000", r#"{"id":"e1","name":"ping"}"#);
    let sim = Sim::start(local.port, &["--devices", "1", "--events", "0", "--rate", "2", "--prefix", "ext"]);
    let log = || format!("{}\n--- simulator:\n{}", gateway.log_text(), sim.output());
    assert_eq!(watcher.wait_for("e1", "done", log).message.as_deref(), Some("pong"));
    assert_eq!(watcher.of("e1"), ["accepted", "delivered", "done"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_wait_in_the_journal_through_a_cloud_outage_and_arrive_in_order() {
    let cloud = Mosquitto::start();
    let watcher = StatusWatcher::connect(cloud.port).await;
    let link = edge_tests::proxy::Proxy::start(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let mut setup = setup(link.port, data.path());
    setup.cloud = "connect_timeout = \"1s\"\nbackoff_min = \"50ms\"\nbackoff_max = \"300ms\"\n".into();
    let gateway = Gateway::start(&setup);
    wait_for_command_session(cloud.port, &watcher, &gateway);
    let device = "out-0000";
    send(cloud.port, device, r#"{"id":"o1","name":"ping"}"#);
    watcher.wait_for("o1", "accepted", || gateway.log_text());

    // The cloud link goes down; meanwhile the device comes, runs o1, and the cloud sends o2.
    link.cut();
    let sim = Sim::start(setup.devices_port, &["--devices", "1", "--events", "0", "--rate", "2", "--prefix", "out"]);
    let log = || format!("{}\n--- simulator:\n{}", gateway.log_text(), sim.output());
    // Until the gateway has stored the device's answer (its journal says so).
    let journal = data.path().join("journal.db");
    let deadline = Instant::now() + WAIT;
    while state_of(&journal, "o1").as_deref() != Some("done") {
        assert!(Instant::now() < deadline, "the device's answer to o1 never got stored:\n{}", log());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(sim.output().contains("o1 ping"), "{}", log());
    send(cloud.port, device, r#"{"id":"o2","name":"ping"}"#);
    assert_eq!(watcher.of("o1"), ["accepted"], "nothing got through the cut link");

    link.restore();
    assert_eq!(watcher.wait_for("o2", "done", log).message.as_deref(), Some("pong"));
    assert_eq!(watcher.of("o1"), ["accepted", "delivered", "done"], "{:?}", watcher.all());
    assert_eq!(watcher.of("o2"), ["accepted", "delivered", "done"], "{:?}", watcher.all());
    assert!(watcher.position("o1", "done") < watcher.position("o2", "accepted"), "{:?}\n{}", watcher.all(), log());
}

/// `edge-gateway hash-password` with the password on stdin.
fn hash_password(password: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(edge_tests::gateway::binary())
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// With device passwords on the embedded broker, the gate lets an authenticated device read
/// its commands and answer on `devices/{id}/commands/status` (its only allowed publish under
/// `commands`), while the gateway's own command sender reaches the broker behind the gate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authenticated_device_gets_its_commands_through_the_gate_and_answers() {
    let cloud = Mosquitto::start();
    let watcher = StatusWatcher::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let mut setup = setup(cloud.port, data.path());
    setup.devices_auth = format!("users = {{ \"valve-1\" = \"{}\" }}\n", hash_password("valve-secret-1"));
    let gateway = Gateway::start(&setup);
    wait_for_command_session(cloud.port, &watcher, &gateway);
    let log = || gateway.log_text();
    let port = setup.devices_port.to_string();
    let login = ["-h", "127.0.0.1", "-p", &port, "-q", "1", "-i", "valve-1", "-u", "valve-1", "-P", "valve-secret-1"];

    send(cloud.port, "valve-1", r#"{"id":"a1","name":"open_valve","payload":{"valve":1}}"#);
    watcher.wait_for("a1", "accepted", log);
    let got = Command::new("mosquitto_sub")
        .args(login)
        .args(["-C", "1", "-W", "30", "-t", "devices/valve-1/commands"])
        .output()
        .unwrap();
    assert!(got.status.success(), "no command for valve-1 within 30 s:\n{}", log());
    let command = edge_event::command::Command::decode(got.stdout.strip_suffix(b"\n").unwrap_or(&got.stdout)).unwrap();
    assert_eq!((command.id, command.name), ("a1", "open_valve"));
    let sent = Command::new("mosquitto_pub")
        .args(login)
        .args(["-t", "devices/valve-1/commands/status", "-m", r#"{"id":"a1","status":"done","message":"open"}"#])
        .output()
        .unwrap();
    assert!(sent.status.success(), "the answer was refused: {}", String::from_utf8_lossy(&sent.stderr));
    assert_eq!(watcher.wait_for("a1", "done", log).message.as_deref(), Some("open"));
    assert_eq!(watcher.of("a1"), ["accepted", "delivered", "done"]);
    // Another device's command topic stays closed to it.
    let out =
        Command::new("mosquitto_pub").args(login).args(["-t", "devices/valve-1/commands", "-m", "x"]).output().unwrap();
    assert!(!out.status.success(), "a device may not publish commands");
}
