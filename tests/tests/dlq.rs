//! The dead-letter queue from the terminal: `edge-gateway dlq list|show|replay|purge`,
//! against a running gateway (its HTTP API) and a stopped one (its journal), and the rights
//! a replay applies (SECURITY.md, "Dead-letter replay").

use std::process::{Command, Output};
use std::time::Duration;

use edge_tests::clients::{publish_all, CloudSubscriber};
use edge_tests::gateway::{binary, hash_password, Gateway, Setup};
use edge_tests::mosquitto::Mosquitto;
use edge_tests::{event_json, http, wait_until};

const WAIT: Duration = Duration::from_secs(60);
/// An Aqara weather sensor through zigbee2mqtt: `power_outage_count` is too long a reading
/// name, so without a `fields` list the payload is a dead letter.
const AQARA: &[u8] = br#"{"battery":100,"humidity":58.63,"linkquality":78,"power_outage_count":6,"pressure":1005.6,"temperature":22.46,"voltage":3025}"#;

fn dlq(setup: &Setup, dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let config = dir.join("cli.toml");
    std::fs::write(&config, setup.toml()).unwrap();
    let out = Command::new(binary()).arg("dlq").args(args).arg("--config").arg(&config).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn zigbee_route(fields: &str) -> String {
    format!(
        "[[routes]]\nname = \"zigbee\"\nfrom = \"zigbee2mqtt/{{device}}\"\nto = \"gateways/zigbee\"\ninput = \"json-fields\"\n{fields}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_listed_fixed_by_config_replayed_and_delivered() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(cloud.port, data.path());
    setup.routes = zigbee_route("");
    let mut gateway = Gateway::start(&setup);
    publish_all(setup.devices_port, "z2m", vec![("zigbee2mqtt/weather".into(), AQARA.to_vec())]).await.unwrap();
    wait_until(WAIT, "the dead letter", || (gateway.status()["dead_letters"] == 1).then_some(()));

    // Running: through the API.
    let (ok, list) = dlq(&setup, data.path(), &["list"]);
    assert!(ok, "{list}");
    assert!(list.contains("zigbee2mqtt/weather") && list.contains("power_outage_count"), "{list}");
    let id = list.lines().nth(1).and_then(|l| l.split_whitespace().next()).unwrap().to_owned();
    let (ok, show) = dlq(&setup, data.path(), &["show", &id]);
    assert!(ok && show.contains("\"temperature\":22.46") && show.contains("payload (text)"), "{show}");
    let (_, json) = dlq(&setup, data.path(), &["list", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(rows[0]["topic"], "zigbee2mqtt/weather");
    assert!(gateway.terminate().unwrap().success());

    // Stopped: fix the config, read and replay straight from the journal.
    setup.routes = zigbee_route("fields = { temperature = \"celsius\", power_outage_count = \"outages\" }");
    let (ok, list) = dlq(&setup, data.path(), &["list"]);
    assert!(ok && list.contains("zigbee2mqtt/weather"), "offline list: {list}");
    let (ok, replay) = dlq(&setup, data.path(), &["replay", "--all"]);
    assert!(ok && replay.contains("replayed 1 dead letter(s): 1 became events"), "{replay}");
    let (_, list) = dlq(&setup, data.path(), &["list"]);
    assert_eq!(list.lines().count(), 1, "only the header is left: {list}");

    let gateway = Gateway::start(&setup);
    let got = sub.wait_distinct(1, WAIT);
    assert_eq!(got.raw[0]["device"], "weather");
    assert_eq!(got.raw[0]["readings"]["celsius"], 22.46);
    assert_eq!(got.raw[0]["readings"]["outages"], 6);
    drop(gateway);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_gateway_replays_and_purges_on_request() {
    let cloud = Mosquitto::start();
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(cloud.port, data.path());
    setup.routes = zigbee_route("");
    let gateway = Gateway::start(&setup);
    let bad =
        vec![("zigbee2mqtt/weather".to_owned(), AQARA.to_vec()), ("zigbee2mqtt/x".to_owned(), b"\"on\"".to_vec())];
    publish_all(setup.devices_port, "z2m", bad).await.unwrap();
    wait_until(WAIT, "2 dead letters", || (gateway.status()["dead_letters"] == 2).then_some(()));

    // Still broken: a replay turns each into a new dead letter (the old ones go).
    let (ok, replay) = dlq(&setup, data.path(), &["replay", "--all"]);
    assert!(ok && replay.contains("queued 2"), "{replay}");
    wait_until(WAIT, "the replays processed", || (gateway.status()["dead_letters"] == 4).then_some(()));
    let (_, list) = dlq(&setup, data.path(), &["list"]);
    let ids: Vec<i64> = list.lines().skip(1).filter_map(|l| l.split_whitespace().next()?.parse().ok()).collect();
    assert_eq!(ids.len(), 2, "{list}");
    assert!(ids.iter().all(|id| *id > 2), "the replayed ones were deleted after their commit: {ids:?}");

    let (ok, purged) = dlq(&setup, data.path(), &["purge", &ids[0].to_string()]);
    assert!(ok && purged.contains("deleted 1"), "{purged}");
    let (ok, purged) = dlq(&setup, data.path(), &["purge", "--all"]);
    assert!(ok && purged.contains("deleted 1"), "{purged}");
    let (ok, err) = dlq(&setup, data.path(), &["show", "999"]);
    assert!(!ok && err.contains("no dead letter 999"), "{err}");
}

/// mosquitto_pub once, QoS 1, as `device` (user name = client id) with `password`.
fn publish_as(port: u16, device: &str, password: &str, topic: &str, message: &str) -> Output {
    Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-i", device, "-u", device, "-P", password])
        .args(["-t", topic, "-m", message])
        .output()
        .expect("mosquitto_pub (apt-get install mosquitto-clients)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_does_not_turn_a_denied_publish_into_another_devices_event() {
    const PASSWORD_1: &str = "dev1-password-123";
    const PASSWORD_2: &str = "dev2-password-456";
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(cloud.port, data.path());
    setup.devices = "unrouted = \"dead_letter\"\n".into();
    setup.devices_auth =
        format!("users = {{ dev1 = \"{}\", dev2 = \"{}\" }}\n", hash_password(PASSWORD_1), hash_password(PASSWORD_2));
    let mut gateway = Gateway::start(&setup);
    let port = setup.devices_port;

    // dev1 forges an event of dev2 on dev2's topic: the gate denies it (a dead letter) and
    // disconnects dev1. Then a dead letter of dev1's own: a topic no route takes yet (seq 10,
    // above the event of dev1 below, so that its replay is not taken for a retransmit).
    publish_as(port, "dev1", PASSWORD_1, "devices/dev2/events", &event_json("dev2", 1, 1));
    wait_until(WAIT, "the denied dead letter", || (gateway.status()["dead_letters"] == 1).then_some(()));
    let out = publish_as(port, "dev1", PASSWORD_1, "devices/dev1/status", &event_json("dev1", 1, 10));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_until(WAIT, "the unrouted dead letter", || (gateway.status()["dead_letters"] == 2).then_some(()));
    let (_, show) = dlq(&setup, data.path(), &["show", "1"]);
    assert!(show.contains("publisher: device \"dev1\"") && show.contains("devices/dev2/events"), "{show}");

    // Running: the denied one is refused, by name and with why; the other is replayed.
    let (ok, replay) = dlq(&setup, data.path(), &["replay", "--all"]);
    assert!(ok, "{replay}");
    assert!(replay.contains("queued 1 dead letter(s)") && replay.contains("refused 1 dead letter(s)"), "{replay}");
    let refusal = replay.lines().find(|l| l.trim_start().starts_with("1: ")).unwrap_or_else(|| panic!("{replay}"));
    assert!(
        refusal.contains("published by device \"dev1\", which may not publish on \"devices/dev2/events\"")
            && refusal.contains("stays denied"),
        "{refusal}"
    );
    // The replayed one is a dead letter again (no route yet): the replays are done.
    wait_until(WAIT, "the replay processed", || (gateway.status()["dead_letters"] == 3).then_some(()));
    // A later event of dev1 reaches the cloud: had the forgery been replayed, dev2's event
    // would have been committed (and forwarded) before it.
    let out = publish_as(port, "dev1", PASSWORD_1, "devices/dev1/events", &event_json("dev1", 1, 2));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = sub.wait_distinct(1, WAIT);
    assert_eq!(got.events, vec![("dev1".to_owned(), 1, 2)], "{:?}", got.raw);
    let (_, devices) = http::get(setup.http_port, "/api/devices").unwrap();
    assert!(!devices.contains("dev2"), "dev2 never published, yet: {devices}");
    assert!(gateway.terminate().unwrap().success());

    // Stopped: a route for the status topic; the offline replay applies the same rights.
    setup.routes = format!(
        "{}\n[[routes]]\nname = \"status\"\nfrom = \"devices/+/status\"\nto = \"gateways/{{gateway}}/status\"\n",
        "[[routes]]\nname = \"telemetry\"\nfrom = \"devices/+/events\"\nto = \"gateways/{gateway}/telemetry\"\n"
    );
    let (ok, replay) = dlq(&setup, data.path(), &["replay", "--all"]);
    assert!(ok, "{replay}");
    assert!(replay.contains("replayed 1 dead letter(s): 1 became events"), "{replay}");
    assert!(
        replay.contains("1: published by device \"dev1\", which may not publish on \"devices/dev2/events\""),
        "{replay}"
    );
    let (_, list) = dlq(&setup, data.path(), &["list"]);
    let ids: Vec<&str> = list.lines().skip(1).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(ids, ["1"], "the denied letter is kept, the replayed one is gone: {list}");

    let _gateway = Gateway::start(&setup);
    let got = sub.wait_distinct(2, WAIT);
    assert!(got.seen.contains(&("dev1".to_owned(), 1, 10)), "{:?}", got.raw);
    assert!(!got.seen.iter().any(|(device, _, _)| device == "dev2"), "{:?}", got.raw);
}
