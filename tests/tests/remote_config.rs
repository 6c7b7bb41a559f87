//! Configuration from the cloud (issue 17 item 2; docs/operations.md, "Configuration from
//! the cloud"), with Mosquitto as the cloud and `mosquitto_pub`/`mosquitto_sub` as the fleet
//! manager: a retained document on `gateways/{gateway}/config` is applied like a reload and
//! reported on `.../config/status`; a bad one is refused and reported and changes nothing;
//! the last applied one is kept in the journal and runs again after a restart with the
//! cloud down.

use std::process::Command;
use std::time::Duration;

use edge_tests::clients::{publish_all, CloudSubscriber};
use edge_tests::gateway::{Gateway, Setup};
use edge_tests::mosquitto::Mosquitto;
use edge_tests::{event_json, wait_until};

const WAIT: Duration = Duration::from_secs(60);
const TOPIC: &str = "gateways/gw-test/config";

/// The cloud publishes `document`, retained.
fn publish_document(cloud: u16, document: &str) {
    let port = cloud.to_string();
    let ok = Command::new("mosquitto_pub").args(["-p", &port, "-q", "1", "-r", "-t", TOPIC, "-m", document]).status();
    assert!(ok.unwrap().success());
}

/// The retained status, once it reports the document `version` (received_version).
fn status_for(cloud: u16, version: &str) -> serde_json::Value {
    let port = cloud.to_string();
    let status_topic = format!("{TOPIC}/status");
    wait_until(WAIT, &format!("the status of document {version}"), || {
        let out = Command::new("mosquitto_sub")
            .args(["-p", &port, "-t", &status_topic, "-C", "1", "-W", "2"])
            .output()
            .ok()?;
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (status["received_version"] == version).then_some(status)
    })
}

fn route_names(gateway: &Gateway) -> Vec<String> {
    let status = gateway.status();
    status["routes"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloud_document_is_applied_a_bad_one_refused_and_the_last_good_one_kept_across_a_restart() {
    let mut cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(cloud.port, data.path());
    setup.routes =
        "[[routes]]\nname = \"telemetry\"\nfrom = \"devices/+/events\"\nto = \"gateways/{gateway}/telemetry\"\n\
                    batch = { max_delay = \"20ms\" }\n\n[remote_config]\nenabled = true\n"
            .into();
    let mut gateway = Gateway::start(&setup);

    // v1 replaces the routes: one route, named "fleet", to another topic.
    let v1 = "version = \"v1\"\n[[routes]]\nname = \"fleet\"\nfrom = \"devices/+/events\"\n\
              to = \"gateways/{gateway}/fleet\"\nbatch = { max_delay = \"20ms\" }\n";
    publish_document(cloud.port, v1);
    let status = status_for(cloud.port, "v1");
    assert_eq!(status["result"], "applied", "{status}");
    assert_eq!(status["version"], "v1", "{status}");
    assert!(status["errors"].as_array().unwrap().is_empty(), "{status}");
    assert!(route_names(&gateway).contains(&"fleet".to_owned()), "{}", gateway.status());
    let event = ("devices/d1/events".to_owned(), event_json("d1", 1, 1).into_bytes());
    publish_all(setup.devices_port, "d1", vec![event]).await.unwrap();
    let got = sub.wait_distinct(1, WAIT);
    assert_eq!(got.topics, vec!["gateways/gw-test/fleet".to_owned()], "v1's route did not carry the event");

    // v2 names a section the file does not let the cloud manage, and a bad route: refused
    // whole, reported, and v1 stays in effect.
    let v2 = "version = \"v2\"\n[cloud]\nurl = \"mqtt://10.0.0.1:1883\"\n[[routes]]\nname = \"broken\"\nto = \"\"\n";
    publish_document(cloud.port, v2);
    let status = status_for(cloud.port, "v2");
    assert_eq!(status["result"], "refused", "{status}");
    assert_eq!(status["version"], "v1", "the version in effect stays v1: {status}");
    let errors = status["errors"].to_string();
    assert!(errors.contains("cloud: this section cannot be managed remotely"), "{status}");
    let v3 = "version = \"v3\"\n[[routes]]\nname = \"broken\"\nfrom = \"devices/+/events\"\nto = \"\"\n";
    publish_document(cloud.port, v3);
    let status = status_for(cloud.port, "v3");
    assert_eq!(status["result"], "refused", "{status}");
    assert!(status["errors"].to_string().contains("routes[0].to"), "errors name the key path: {status}");
    assert!(gateway.log_text().contains("config reload refused"), "{}", gateway.log_text());
    let event = ("devices/d1/events".to_owned(), event_json("d1", 1, 2).into_bytes());
    publish_all(setup.devices_port, "d1", vec![event]).await.unwrap();
    let got = sub.wait_distinct(2, WAIT);
    assert!(got.topics.iter().all(|t| t == "gateways/gw-test/fleet"), "{:?}", got.topics);

    // A restart with the cloud down runs v1 again, from the journal.
    gateway.terminate();
    cloud.stop();
    let gateway = Gateway::start(&setup);
    assert_eq!(route_names(&gateway), vec!["fleet".to_owned()], "{}", gateway.status());
    assert!(gateway.log_text().contains("kept from the last run"), "{}", gateway.log_text());
}
