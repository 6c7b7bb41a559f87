//! `[devices] mode = "external"`: the gateway as a client of an existing local broker
//! (a real Mosquitto). Its messages are acknowledged to that broker only after commit, so
//! even a `kill -9` loses nothing the local broker accepted — no device ack needed.

use std::process::Command;
use std::time::Duration;

use edge_tests::clients::{device_events, publish_all, CloudSubscriber};
use edge_tests::gateway::{Gateway, Setup};
use edge_tests::mosquitto::Mosquitto;
use edge_tests::{event_json, wait_until};

const WAIT: Duration = Duration::from_secs(90);

fn external(local: &Mosquitto, cloud: &Mosquitto, data: &std::path::Path) -> Setup {
    let mut setup = Setup::new(cloud.port, data);
    setup.devices = format!("mode = \"external\"\nurl = \"mqtt://127.0.0.1:{}\"\n", local.port);
    setup
}

/// The gateway subscribes after it connects: until then the local broker drops what
/// nobody subscribed to. Probes with an event until one is committed.
fn wait_for_subscription(local: &Mosquitto, gateway: &Gateway) {
    let port = local.port.to_string();
    let probe = event_json("probe", 1, 1);
    wait_until(WAIT, "the gateway's subscription", || {
        let args = ["-p", &port, "-q", "1", "-t", "devices/probe/events", "-m", &probe];
        let sent = Command::new("mosquitto_pub").args(args).status().ok()?;
        assert!(sent.success());
        (gateway.status()["events_committed"].as_u64()? >= 1).then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_to_an_existing_broker_reach_the_cloud() {
    let local = Mosquitto::start();
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(&external(&local, &cloud, data.path()));
    wait_for_subscription(&local, &gateway);
    publish_all(local.port, "d1", device_events("d1", 1, 500)).await.unwrap();
    let got = sub.wait_distinct(501, WAIT);
    assert_eq!(got.distinct().iter().filter(|(d, _, _)| d == "d1").count(), 500);
    got.in_order_per_device().unwrap();
    // The gateway's ack is published on the local broker, retained: a device subscribing
    // later learns its committed mark. (It may trail the cloud delivery by a moment.)
    wait_until(WAIT, "the retained ack to cover seq 500", || {
        let out = Command::new("mosquitto_sub")
            .args(["-p", &local.port.to_string(), "-t", "devices/d1/ack", "-C", "1", "-W", "5"])
            .output()
            .ok()?;
        (String::from_utf8_lossy(&out.stdout).trim() == r#"{"boot":1,"seq":500}"#).then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_nothing_the_local_broker_accepted() {
    let local = Mosquitto::start();
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let setup = external(&local, &cloud, data.path());
    let mut gateway = Gateway::start(&setup);
    wait_for_subscription(&local, &gateway);

    let port = local.port;
    let publisher = tokio::spawn(async move {
        for chunk in 0..10 {
            publish_all(port, "x1", device_events("x1", 1 + chunk * 1000, 1000)).await.unwrap();
        }
    });
    wait_until(WAIT, "some events committed", || (gateway.status()["events_committed"].as_u64()? > 3000).then_some(()));
    gateway.kill();
    publisher.await.unwrap();
    // Every one of the 10,000 was accepted by the local broker; the gateway died mid-way.
    let gateway = Gateway::start(&setup);
    let got = sub.wait_distinct(10_001, WAIT);
    let x1 = got.distinct().iter().filter(|(d, _, _)| d == "x1").count();
    assert_eq!(x1, 10_000, "every event the local broker accepted arrives");
    got.in_order_per_device().unwrap();
    drop(gateway);
}
