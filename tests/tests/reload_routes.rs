//! Routes reloaded live, end to end (issue 17, docs/architecture.md "Live reload"): the real
//! binary, Mosquitto as the cloud, devices publishing all along over connections that must
//! stay up, while SIGHUP adds a route and removes another, then configures the removed one
//! again. Every event of the surviving route reaches the cloud, per device in order; the
//! added route carries what was published after its reload; the removed route's rows stay
//! in the journal and are delivered when it is configured again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use edge_tests::clients::{CloudSubscriber, EventId};
use edge_tests::gateway::{Gateway, Setup};
use edge_tests::mosquitto::Mosquitto;
use edge_tests::{http, wait_until};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

const WAIT: Duration = Duration::from_secs(60);
const DEVICES: [&str; 3] = ["d1", "d2", "d3"];

/// A route taking every device's events; its batches wait up to `max_delay`.
fn route(name: &str, max_delay: &str) -> String {
    format!(
        "[[routes]]\nname = \"{name}\"\nfrom = \"devices/+/events\"\nto = \"gateways/{{gateway}}/{name}\"\n\
         batch = {{ max_events = 100000, max_delay = \"{max_delay}\" }}\n"
    )
}

/// A device on one MQTT connection, publishing `seq` 1, 2, ... (QoS 1) every 5 ms from its
/// CONNACK until `stop`; then it waits for every PUBACK and returns its last seq. Any loss of its
/// connection is an error: a reload must not touch device connections.
async fn device(port: u16, id: &'static str, stop: Arc<AtomicBool>) -> Result<u32, String> {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30)).set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let mut pace = tokio::time::interval(Duration::from_millis(5));
    let (mut seq, mut acked, mut connacks) = (0u32, 0u32, 0);
    loop {
        tokio::select! {
            _ = pace.tick(), if connacks > 0 => {
                if stop.load(Ordering::Relaxed) {
                    if acked == seq {
                        return Ok(seq);
                    }
                    continue;
                }
                let next = seq + 1;
                let payload = format!(r#"{{"device":"{id}","boot":1,"seq":{next},"type":"t","readings":{{"v":{next}}}}}"#);
                // A full request queue (the broker holds the device back) skips a tick.
                if client.try_publish(format!("devices/{id}/events"), QoS::AtLeastOnce, false, payload).is_ok() {
                    seq = next;
                }
            }
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connacks += 1;
                    if connacks > 1 {
                        return Err(format!("{id}: reconnected"));
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(Event::Incoming(Packet::Disconnect)) => return Err(format!("{id}: disconnected by the gateway")),
                Ok(_) => {}
                Err(err) => return Err(format!("{id}: connection lost at seq {seq}: {err}")),
            }
        }
    }
}

/// Per device, the seqs `route` carried, in arrival order.
fn seqs_by_device(events: &[EventId]) -> HashMap<String, Vec<u32>> {
    let mut by_device: HashMap<String, Vec<u32>> = HashMap::new();
    for (device, _, seq) in events {
        by_device.entry(device.clone()).or_default().push(*seq);
    }
    by_device
}

/// Writes `routes` into the running gateway's config file, sends SIGHUP and returns the
/// lines of the reload, which must have applied.
fn reload(gateway: &Gateway, routes: &str) -> Vec<String> {
    let mut setup = gateway.setup.clone();
    setup.routes = routes.to_owned();
    std::fs::write(gateway.config_path(), setup.toml()).unwrap();
    let outcome = gateway.reload();
    assert_eq!(outcome["result"], "applied", "{outcome}");
    assert!(outcome["needs_restart"].as_array().is_some_and(Vec::is_empty), "{outcome}");
    outcome["applied"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_owned()).collect()
}

fn queue_depth(gateway: &Gateway, route: &str) -> Option<f64> {
    http::metric(gateway.setup.http_port, &format!("edge_gateway_queue_depth{{route=\"{route}\"}}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_added_and_one_removed_by_sighup_while_devices_publish_lose_nothing() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(cloud.port, data.path());
    // "kept" holds its batches for an hour: what it takes waits in the journal.
    setup.routes = route("stay", "20ms") + &route("kept", "1h");
    let gateway = Gateway::start(&setup);
    let stop = Arc::new(AtomicBool::new(false));
    let devices: Vec<_> = DEVICES.iter().map(|id| tokio::spawn(device(setup.devices_port, id, stop.clone()))).collect();
    wait_until(WAIT, "3 devices connected", || {
        let m = http::metric(setup.http_port, "edge_gateway_devices_connected");
        (m == Some(3.0)).then_some(())
    });
    wait_until(WAIT, "events on stay", || (sub.snapshot().of_route("stay").len() >= 60).then_some(()));

    // Reload 1: "added" is new, "kept" is removed.
    let lines = reload(&gateway, &(route("stay", "20ms") + &route("added", "20ms")));
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0], r#"route "added" added"#);
    assert!(lines[1].starts_with(r#"route "kept" removed: "#), "{lines:?}");
    assert!(lines[1].ends_with(r#"events kept in the journal until a route named "kept" is configured again"#));
    // Once the cloud has an event of "added", every event ingested before the reload is
    // committed (the journal commits in order): "kept"'s queue is final.
    wait_until(WAIT, "events on added", || (!sub.snapshot().of_route("added").is_empty()).then_some(()));
    let kept_at_removal = queue_depth(&gateway, "kept").unwrap();
    assert!(kept_at_removal > 0.0, "kept had rows waiting");
    wait_until(WAIT, "more events on added", || (sub.snapshot().of_route("added").len() >= 90).then_some(()));
    assert_eq!(queue_depth(&gateway, "kept"), Some(kept_at_removal), "a removed route keeps its rows, takes no more");

    // Reload 2: "kept" is configured again, and sends now.
    let lines = reload(&gateway, &(route("stay", "20ms") + &route("added", "20ms") + &route("kept", "20ms")));
    let back = format!("route \"kept\" added: its {kept_at_removal} events kept in the journal are forwarded again");
    assert_eq!(lines, vec![back]);
    wait_until(WAIT, "events on kept after it came back", || {
        (sub.snapshot().of_route("kept").len() as f64 > kept_at_removal + 30.0).then_some(())
    });
    assert_eq!(http::metric(setup.http_port, "edge_gateway_devices_connected"), Some(3.0), "no device was dropped");
    stop.store(true, Ordering::Relaxed);
    let mut last = HashMap::new();
    for (id, task) in DEVICES.iter().zip(devices) {
        last.insert(id.to_string(), task.await.unwrap().unwrap());
    }
    let total: u32 = last.values().sum();
    wait_until(WAIT, "every event on stay", || (sub.snapshot().of_route("stay").len() as u32 >= total).then_some(()));
    wait_until(WAIT, "kept's queue empty", || (queue_depth(&gateway, "kept") == Some(0.0)).then_some(()));
    wait_until(WAIT, "added's queue empty", || (queue_depth(&gateway, "added") == Some(0.0)).then_some(()));
    let got = sub.snapshot();

    let stay = seqs_by_device(&got.of_route("stay"));
    let added = seqs_by_device(&got.of_route("added"));
    let kept = seqs_by_device(&got.of_route("kept"));
    for id in DEVICES {
        let last = last[id];
        assert_eq!(stay[id], (1..=last).collect::<Vec<_>>(), "{id}: every event on stay, once, in order");
        // added: a run from its first event to the last one, in order.
        let first = added[id][0];
        assert_eq!(added[id], (first..=last).collect::<Vec<_>>(), "{id}: added carries all from its reload on");
        // kept: what it took before its removal (from seq 1), then all from its return on.
        let run = kept[id].windows(2).position(|w| w[1] != w[0] + 1).map_or(kept[id].len(), |at| at + 1);
        assert_eq!(kept[id][..run], (1..=run as u32).collect::<Vec<_>>(), "{id}: kept's rows from before its removal");
        let back = kept[id][run..].first().copied().unwrap_or(last + 1);
        assert_eq!(kept[id][run..], (back..=last).collect::<Vec<_>>(), "{id}: kept after its return");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_cloud_password_is_used_from_the_next_connection_after_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let (cloud, secured) = Mosquitto::start_with_user("gw", "the-right-one");
    let sub = CloudSubscriber::connect(cloud.port).await;
    let mut setup = Setup::new(cloud.port, dir.path());
    setup.cloud_url = format!("mqtt://127.0.0.1:{secured}");
    setup.cloud += "username = \"gw\"\npassword = \"a-wrong-one\"\n";
    let gateway = Gateway::start(&setup);
    edge_tests::clients::publish_all(setup.devices_port, "d1", edge_tests::clients::device_events("d1", 1, 10))
        .await
        .unwrap();
    wait_until(WAIT, "10 events kept while the cloud refuses the gateway", || {
        (gateway.queue_depth() == 10).then_some(())
    });

    gateway.edit_config("a-wrong-one", "the-right-one");
    let outcome = gateway.reload();
    assert_eq!(outcome["result"], "applied", "{outcome}");
    assert_eq!(outcome["applied"][0], "cloud credentials: used from the next connection", "{outcome}");
    assert!(!outcome.to_string().contains("the-right-one"), "the secret never shows: {outcome}");
    let got = sub.wait_distinct(10, WAIT);
    assert_eq!(got.of_route("telemetry").len(), 10);
}
