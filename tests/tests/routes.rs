//! Routes end to end: fan-out to several routes, and each filter rule (devices/types,
//! range, min_interval with keep_last, deadband) against the real binary and a real cloud.

use std::time::Duration;

use edge_tests::clients::{publish_all, CloudSubscriber};
use edge_tests::gateway::{Gateway, Setup};
use edge_tests::mosquitto::Mosquitto;
use edge_tests::{http, wait_until};

const WAIT: Duration = Duration::from_secs(60);

/// A JSON event with one reading.
fn reading(device: &str, seq: u32, kind: &str, name: &str, value: f64) -> (String, Vec<u8>) {
    let json = format!(
        r#"{{"device":"{device}","boot":1,"seq":{seq},"type":"{kind}","readings":{{"{name}":{value:?}}}}}"#
    );
    (format!("devices/{device}/events"), json.into_bytes())
}

fn route(name: &str, extra: &str) -> String {
    format!(
        "[[routes]]\nname = \"{name}\"\nfrom = \"devices/{{device}}/events\"\nto = \"gateways/{{route}}\"\n\
         batch = {{ max_events = 100, max_delay = \"10ms\" }}\n{extra}\n"
    )
}

fn filtered(http_port: u16, route: &str, filter: &str) -> f64 {
    let series = format!("edge_gateway_filtered_total{{route=\"{route}\",filter=\"{filter}\"}}");
    http::metric(http_port, &series).unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_fans_out_to_every_matching_route_and_each_route_applies_its_rules() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(cloud.port, data.path());
    setup.routes = [
        route("all", ""),
        route("kitchen", "devices = [\"kitchen-*\"]\ntypes = [\"temp*\"]"),
        route(
            "sane",
            "min = { celsius = -40.0 }\nmax = { celsius = 85.0 }",
        ),
    ]
    .concat();
    let gateway = Gateway::start(&setup);
    let events = vec![
        reading("kitchen-1", 1, "temperature", "celsius", 21.5),
        reading("kitchen-1", 2, "door", "open", 1.0),
        reading("hall", 1, "temperature", "celsius", 19.0),
        reading("hall", 2, "temperature", "celsius", 999.0),
    ];
    publish_all(setup.devices_port, "mixed", events)
        .await
        .unwrap();
    // all: 4; kitchen: 1; sane: 3 (the 999 is out of range; the door has no celsius).
    let got = sub.wait_distinct(4, WAIT);
    wait_until(WAIT, "8 rows forwarded", || {
        let s = gateway.status();
        let total: u64 = s["routes"]
            .as_array()?
            .iter()
            .map(|r| r["forwarded"].as_u64().unwrap_or(0))
            .sum();
        (total == 8).then_some(())
    });
    let status = gateway.status();
    let forwarded: Vec<u64> = status["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["forwarded"].as_u64().unwrap())
        .collect();
    assert_eq!(forwarded, vec![4, 1, 3], "{status}");
    assert_eq!(got.distinct().len(), 4);
    assert_eq!(filtered(setup.http_port, "kitchen", "devices"), 2.0);
    assert_eq!(filtered(setup.http_port, "kitchen", "types"), 1.0);
    assert_eq!(filtered(setup.http_port, "sane", "range"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_interval_downsamples_and_keep_last_still_delivers_the_latest_value() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(cloud.port, data.path());
    setup.routes = route("slow", "min_interval = \"1s\"\nkeep_last = true");
    let gateway = Gateway::start(&setup);
    let burst: Vec<_> = (1..=50)
        .map(|seq| reading("s1", seq, "temperature", "celsius", f64::from(seq)))
        .collect();
    publish_all(setup.devices_port, "s1", burst).await.unwrap();
    // The first passes at once; the other 49 come within the interval: only the newest of
    // them (seq 50) is forwarded when the interval ends.
    let got = sub.wait_distinct(2, WAIT);
    let seqs: Vec<u32> = got.events.iter().map(|(_, _, s)| *s).collect();
    assert_eq!(seqs, vec![1, 50], "first and latest");
    assert_eq!(filtered(setup.http_port, "slow", "min_interval"), 49.0);
    drop(gateway);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadband_state_survives_a_restart() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(cloud.port, data.path());
    setup.routes = route("changes", "deadband = { celsius = 1.0 }");
    let mut gateway = Gateway::start(&setup);
    let first = vec![
        reading("t1", 1, "temperature", "celsius", 20.0),
        reading("t1", 2, "temperature", "celsius", 20.5),
        reading("t1", 3, "temperature", "celsius", 21.0),
    ];
    publish_all(setup.devices_port, "t1", first).await.unwrap();
    let got = sub.wait_distinct(2, WAIT);
    assert_eq!(
        got.events.iter().map(|e| e.2).collect::<Vec<_>>(),
        vec![1, 3]
    );
    gateway.terminate();

    let gateway = Gateway::start(&setup);
    // 21.9 is within 1.0 of the last forwarded 21.0: dropped even after the restart.
    let second = vec![
        reading("t1", 4, "temperature", "celsius", 21.9),
        reading("t1", 5, "temperature", "celsius", 22.0),
    ];
    publish_all(setup.devices_port, "t1", second).await.unwrap();
    let got = sub.wait_distinct(3, WAIT);
    assert_eq!(
        got.events.iter().map(|e| e.2).collect::<Vec<_>>(),
        vec![1, 3, 5]
    );
    assert_eq!(filtered(setup.http_port, "changes", "deadband"), 1.0);
    drop(gateway);
}
