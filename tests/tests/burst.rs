//! A burst from many devices at once: rumqttd's in-process link is QoS 0 and skips a
//! reader that falls behind its in-memory segments, so the gateway must keep up. Every
//! event the broker accepted (PUBACKed) must be committed and reach the cloud.

use std::time::{Duration, Instant};

use edge_tests::clients::{device_events, publish_all, CloudSubscriber};
use edge_tests::gateway::{Gateway, Setup};
use edge_tests::mosquitto::Mosquitto;

/// 50 clients; events each (200,000 in all with EDGE_BURST_EVENTS=4000).
fn per_client() -> u32 {
    std::env::var("EDGE_BURST_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_from_fifty_clients_is_committed_and_forwarded_without_loss() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(&Setup::new(cloud.port, data.path()));
    let per_client = per_client();
    let total = 50 * per_client as usize;

    let started = Instant::now();
    let mut publishers = Vec::new();
    for c in 0..50 {
        let device = format!("burst{c:02}");
        let port = gateway.setup.devices_port;
        publishers
            .push(tokio::spawn(async move { publish_all(port, &device, device_events(&device, 1, per_client)).await }));
    }
    for p in publishers {
        p.await.unwrap().expect("the broker accepts every publish");
    }
    let accepted = started.elapsed();
    let got = sub.wait_distinct(total, Duration::from_secs(120));
    let delivered = started.elapsed();
    let status = gateway.status();
    println!(
        "burst: {total} events from 50 clients; broker accepted all in {accepted:?} ({:.0}/s); \
         cloud had all in {delivered:?} ({:.0}/s); committed {}, duplicates {}",
        total as f64 / accepted.as_secs_f64(),
        total as f64 / delivered.as_secs_f64(),
        status["events_committed"],
        got.duplicates(),
    );
    assert_eq!(status["events_received"], total as u64, "the link delivered every accepted publish: {status}");
    assert_eq!(got.distinct().len(), total, "every accepted event reaches the cloud");
    got.in_order_per_device().unwrap();
}

/// With the smallest broker memory, a burst from 50 clients would outrun ingest: rumqttd
/// overwrites what the gateway has not taken. The device gate's back-pressure
/// (`devices::inflow`) holds the devices back instead: nothing is overrun, every accepted
/// publish is committed and reaches the cloud. (Overruns would still be counted, reason
/// `overrun`, as an upper bound: the count includes the gateway's own ack publishes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_broker_memory_is_held_back_not_overrun() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(cloud.port, data.path());
    setup.devices = "broker_memory = \"1MiB\"\n".into();
    let gateway = Gateway::start(&setup);
    // 100k at least: without the back-pressure, this flood overran half of them (53,185 of
    // 100,000 in a debug build on 2 cores).
    let per_client = per_client().max(2000);
    let total = u64::from(50 * per_client);
    let mut publishers = Vec::new();
    for c in 0..50 {
        let device = format!("flood{c:02}");
        let port = setup.devices_port;
        publishers
            .push(tokio::spawn(async move { publish_all(port, &device, device_events(&device, 1, per_client)).await }));
    }
    for p in publishers {
        p.await.unwrap().expect("the broker accepts every publish");
    }
    let accounted = |s: &serde_json::Value| {
        s["events_received"].as_u64().unwrap_or(0) + s["dropped"]["overrun"].as_u64().unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while accounted(&gateway.status()) < total {
        assert!(
            std::time::Instant::now() < deadline,
            "not every publish is accounted for: {total} accepted, {}",
            gateway.status()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Everything received is committed (no duplicates or bad payloads here): wait for the
    // journal to catch up before taking the figures.
    edge_tests::wait_until(Duration::from_secs(120), "every received event committed", || {
        let s = gateway.status();
        (s["events_committed"] == s["events_received"]).then_some(())
    });
    let status = gateway.status();
    let committed = status["events_committed"].as_u64().unwrap();
    let got = sub.wait_distinct(committed as usize, Duration::from_secs(120));
    println!(
        "flood: {total} accepted, {} overrun, {committed} committed, {} at the cloud",
        status["dropped"]["overrun"],
        got.distinct().len()
    );
    assert_eq!(got.distinct().len() as u64, committed, "everything committed reaches the cloud");
    assert_eq!(status["dropped"]["overrun"], 0, "back-pressure, not overrun: {status}");
    assert_eq!(committed, total, "every accepted publish is committed: {status}");
}
