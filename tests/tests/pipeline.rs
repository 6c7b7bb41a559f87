//! The main job, end to end: devices -> gateway (real binary) -> Mosquitto as the cloud.

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use edge_tests::clients::{device_events, publish_all, CloudSubscriber};
use edge_tests::gateway::{Gateway, Setup};
use edge_tests::mosquitto::Mosquitto;
use edge_tests::proxy::Proxy;
use edge_tests::{event_json, wait_until};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_from_mosquitto_pub_and_many_devices_reach_the_cloud_once_with_fields_intact() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(&Setup::new(cloud.port, data.path()));
    let port = gateway.setup.devices_port.to_string();

    // A person with mosquitto_pub.
    for seq in 1..=5 {
        let status = Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-q",
                "1",
                "-t",
                "devices/hand/events",
                "-m",
                &event_json("hand", 3, seq),
            ])
            .status()
            .unwrap();
        assert!(status.success());
    }
    // Five devices publishing concurrently.
    let mut publishers = Vec::new();
    for d in 0..5 {
        let device = format!("dev{d}");
        let port = gateway.setup.devices_port;
        publishers.push(tokio::spawn(async move { publish_all(port, &device, device_events(&device, 1, 400)).await }));
    }
    for p in publishers {
        p.await.unwrap().unwrap();
    }
    let got = sub.wait_distinct(2005, WAIT);
    assert_eq!(got.distinct().len(), 2005, "every event arrives");
    assert_eq!(got.duplicates(), 0, "no duplicates without a fault");
    got.in_order_per_device().unwrap();
    let hand = got.raw.iter().find(|e| e["device"] == "hand" && e["seq"] == 2).expect("hand-sent event");
    assert_eq!(hand["boot"], 3);
    assert_eq!(hand["ts"], 1764000000123u64);
    assert_eq!(hand["type"], "temperature");
    assert_eq!(hand["readings"]["celsius"], 21.5);
    assert_eq!(hand["readings"]["humidity"], 40.0);

    // Everything acknowledged leaves the journal.
    wait_until(Duration::from_secs(10), "the queue to empty", || (gateway.queue_depth() == 0).then_some(()));
    let status = gateway.status();
    assert_eq!(status["events_committed"], 2005);
    assert_eq!(status["routes"][0]["forwarded"], 2005);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_in_the_journal_while_the_cloud_is_down_and_all_arrive_in_order_after() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let link = Proxy::start(cloud.port).await;
    link.cut();
    let data = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(&Setup::new(link.port, data.path()));
    let devices = gateway.setup.devices_port;
    assert_eq!(gateway.status()["cloud_link_up"], false, "the cloud is down, the gateway is ready anyway");
    let http = gateway.setup.http_port;
    let (code, body) = edge_tests::http::get(http, "/readyz").unwrap();
    assert_eq!((code, body.trim()), (200, "ready; cloud link down (buffering)"));
    assert_eq!(edge_tests::http::get(http, "/healthz").unwrap().0, 200);
    assert_eq!(edge_tests::http::metric(http, "edge_gateway_cloud_link_up"), Some(0.0));
    let status = gateway.status();
    assert!(status["last_error"]["message"].as_str().unwrap().starts_with("cloud link down"), "{status}");
    assert!(status["cloud_link_since_ms"].as_u64().unwrap() > 0, "{status}");

    for d in 0..4 {
        let device = format!("d{d}");
        if let Err(e) = publish_all(devices, &device, device_events(&device, 1, 500)).await {
            panic!("{e}\n{}", gateway.log_text());
        }
    }
    wait_until(WAIT, "2000 events in the journal", || (gateway.queue_depth() == 2000).then_some(()));
    assert!(sub.snapshot().events.is_empty());

    link.restore();
    // Events keep coming while the backlog drains.
    for d in 0..4 {
        let device = format!("d{d}");
        publish_all(devices, &device, device_events(&device, 501, 100)).await.unwrap();
    }
    let got = sub.wait_distinct(2400, WAIT);
    assert_eq!(got.distinct().len(), 2400, "{}", state(&gateway));
    got.in_order_per_device().unwrap();

    // A second outage in the middle of the flow: the link is cut under the gateway.
    link.cut();
    for d in 0..4 {
        let device = format!("d{d}");
        publish_all(devices, &device, device_events(&device, 601, 100)).await.unwrap();
    }
    link.restore();
    let got = sub.wait_distinct(2800, WAIT);
    assert_eq!(got.distinct().len(), 2800, "{}", state(&gateway));
    got.in_order_per_device().unwrap();
    assert!(gateway.status()["cloud_reconnects"].as_u64().unwrap() >= 1);
    wait_until(Duration::from_secs(10), "the queue to empty", || (gateway.queue_depth() == 0).then_some(()));
    assert_eq!(edge_tests::http::metric(http, "edge_gateway_cloud_link_up"), Some(1.0));
    let committed = edge_tests::http::metric(http, "edge_gateway_events_committed_total");
    assert_eq!(committed, Some(2800.0));
    let depth = edge_tests::http::metric(http, "edge_gateway_queue_depth{route=\"telemetry\"}");
    assert_eq!(depth, Some(0.0));
    let forwarded = edge_tests::http::metric(http, "edge_gateway_events_forwarded_total{route=\"telemetry\"}");
    assert!(forwarded.unwrap() >= 2800.0);
    let (_, text) = edge_tests::http::get(http, "/metrics").unwrap();
    let samples = edge_tests::http::parse_prometheus(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(samples.len() > 40, "{} samples", samples.len());
    let status = gateway.status();
    assert!(status["events_in_per_second"].is_u64() && status["events_out_per_second"].is_u64(), "{status}");
    let latencies = edge_tests::http::metric(http, "edge_gateway_latency_seconds_count");
    assert!(latencies.unwrap() >= 2800.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payloads_become_dead_letters_with_reasons_and_the_pipeline_goes_on() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let mut gateway = Gateway::start(&Setup::new(cloud.port, data.path()));
    let bad: Vec<(String, Vec<u8>)> = vec![
        ("devices/d1/events".into(), b"not json at all".to_vec()),
        ("devices/d1/events".into(), b"{\"device\":\"d1\",\"boot\":1}".to_vec()),
        ("devices/d1/events".into(), event_json("other", 1, 1).into_bytes()),
        ("devices/d1/events".into(), vec![0xff, 0xfe, 0x00]),
        (
            "devices/d1/events".into(),
            br#"{"device":"d1","boot":1,"seq":9,"type":"t","readings":{"x":"\ud800"}}"#.to_vec(),
        ),
        ("devices/d1/events".into(), event_json("d1", 1, 1).into_bytes()),
    ];
    publish_all(gateway.setup.devices_port, "d1", bad).await.unwrap();
    let got = sub.wait_distinct(1, WAIT);
    assert_eq!(got.events, vec![("d1".to_owned(), 1, 1)], "the good event after the bad ones arrives");
    wait_until(Duration::from_secs(10), "5 dead letters", || (gateway.status()["dead_letters"] == 5).then_some(()));
    assert_eq!(gateway.status()["dropped"]["invalid"], 5);
    assert_eq!(gateway.terminate().map(|s| s.success()), Some(true));

    let conn = rusqlite::Connection::open(data.path().join("journal.db")).unwrap();
    let letters: Vec<(String, String, Vec<u8>)> = conn
        .prepare("SELECT topic, reason, payload FROM dead_letters ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(letters.len(), 5);
    assert!(letters.iter().all(|(topic, _, _)| topic == "devices/d1/events"));
    assert_eq!(letters[0].2, b"not json at all", "raw bytes are kept");
    assert!(letters[1].1.contains("seq"), "a missing field is named: {}", letters[1].1);
    assert!(letters[2].1.contains("names device \"d1\" but the event says \"other\""), "{}", letters[2].1);
    for (_, reason, _) in &letters {
        assert!(reason.len() > 15, "a reason a person can act on: {reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_commits_what_was_received_and_a_restart_delivers_it() {
    let mut cloud = Mosquitto::down();
    let data = tempfile::tempdir().unwrap();
    let setup = Setup::new(cloud.port, data.path());
    let mut gateway = Gateway::start(&setup);
    publish_all(setup.devices_port, "d1", device_events("d1", 1, 300)).await.unwrap();
    wait_until(WAIT, "300 events committed", || (gateway.queue_depth() == 300).then_some(()));
    let exit = gateway.terminate().expect("exit status");
    assert!(exit.success(), "graceful shutdown exits 0: {exit:?}\n{}", gateway.log_text());
    assert!(gateway.log_text().contains("journal closed"));

    cloud.restart();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let gateway = Gateway::start(&setup);
    let got = sub.wait_distinct(300, WAIT);
    assert_eq!(got.distinct(), (1..=300).map(|s| ("d1".to_owned(), 1, s)).collect::<HashSet<_>>());
    got.in_order_per_device().unwrap();
    drop(gateway);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retransmits_of_committed_events_are_dropped_and_counted() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(&Setup::new(cloud.port, data.path()));
    publish_all(gateway.setup.devices_port, "d1", device_events("d1", 1, 50)).await.unwrap();
    sub.wait_distinct(50, WAIT);
    publish_all(gateway.setup.devices_port, "d1", device_events("d1", 41, 20)).await.unwrap();
    let got = sub.wait_distinct(60, WAIT);
    assert_eq!(got.distinct().len(), 60, "{}", state(&gateway));
    assert_eq!(got.events.len(), 60, "the 10 retransmits never reach the cloud");
    wait_until(Duration::from_secs(10), "10 duplicates counted", || {
        (gateway.status()["dropped"]["duplicate"] == 10).then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt5_device_is_served_on_its_own_listener() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(cloud.port, data.path());
    let v5 = edge_tests::free_port();
    setup.devices = format!("listen_v5 = \"127.0.0.1:{v5}\"\n");
    let gateway = Gateway::start(&setup);
    let port = v5.to_string();
    let event = event_json("v5dev", 1, 1);
    let args = ["-V", "5", "-p", &port, "-q", "1", "-t", "devices/v5dev/events", "-m", &event];
    let status = Command::new("mosquitto_pub").args(args).status().unwrap();
    assert!(status.success(), "mosquitto_pub -V 5 failed; the gateway's log:\n{}", gateway.log_text());
    let got = sub.wait_distinct(1, WAIT);
    assert_eq!(got.events, vec![("v5dev".to_owned(), 1, 1)]);
}

/// The gateway's status and log, for a failure message: where the events stopped.
fn state(gateway: &Gateway) -> String {
    let status = edge_tests::http::get(gateway.setup.http_port, "/api/status").map(|(_, body)| body);
    format!("status: {}\nlog:\n{}", status.unwrap_or_default(), gateway.log_text())
}
