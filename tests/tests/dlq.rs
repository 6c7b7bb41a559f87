//! The dead-letter queue from the terminal: `edge-gateway dlq list|show|replay|purge`,
//! against a running gateway (its HTTP API) and a stopped one (its journal).

use std::process::Command;
use std::time::Duration;

use edge_tests::clients::{publish_all, CloudSubscriber};
use edge_tests::gateway::{binary, Gateway, Setup};
use edge_tests::mosquitto::Mosquitto;
use edge_tests::wait_until;

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
