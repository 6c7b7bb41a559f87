//! Crash safety (README, "What it guarantees" 2): `kill -9` of the real gateway during load and
//! during an outage, then a restart. Every event the gateway had committed — known from
//! the `devices/{device}/ack` marks it published — must reach the cloud.

use std::collections::HashMap;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use edge_tests::clients::{device_events, publish_all, AckWatcher, CloudSubscriber, FirmwareDevice, Received};
use edge_tests::gateway::{Gateway, Setup};
use edge_tests::mosquitto::Mosquitto;
use edge_tests::proxy::Proxy;
use edge_tests::wait_until;

const WAIT: Duration = Duration::from_secs(90);

/// Asserts every `(device, 1, seq <= mark)` arrived, in order per device.
fn assert_committed_arrived(marks: &HashMap<String, u32>, got: &Received) {
    let distinct = got.distinct();
    for (device, &mark) in marks {
        let missing: Vec<u32> = (1..=mark).filter(|s| !distinct.contains(&(device.clone(), 1, *s))).collect();
        assert!(
            missing.is_empty(),
            "{device}: committed events lost: {} of them, first {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
    }
    got.in_order_per_device().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_committed_event() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let setup = Setup::new(cloud.port, data.path());
    let mut gateway = Gateway::start(&setup);
    let acks = AckWatcher::connect(setup.devices_port).await;

    let mut publishers = Vec::new();
    for d in 0..4 {
        let device = format!("k{d}");
        let port = setup.devices_port;
        publishers.push(tokio::spawn(async move { publish_all(port, &device, device_events(&device, 1, 5000)).await }));
    }
    wait_until(WAIT, "some events committed", || {
        let total: u32 = acks.marks().values().sum();
        (total > 2000).then_some(())
    });
    gateway.kill();
    let marks = acks.marks();
    drop(acks);
    for p in publishers {
        // Their connections died with the gateway: that is the point.
        let _ = p.await;
    }

    let gateway = Gateway::start(&setup);
    let committed: u32 = marks.values().sum();
    let got = sub.wait_distinct(committed as usize, WAIT);
    assert_committed_arrived(&marks, &got);
    wait_until(WAIT, "the journal to drain", || (gateway.queue_depth() == 0).then_some(()));
    let got = sub.snapshot();
    // Re-sends are limited to what was in flight: at most max_inflight batches of max_events.
    assert!(got.duplicates() <= 16 * 500, "{} duplicates", got.duplicates());
    println!(
        "committed before the kill: {committed}, received: {}, duplicates: {}",
        got.events.len(),
        got.duplicates()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_an_outage_keeps_the_backlog_and_a_restart_delivers_it_in_order() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let link = Proxy::start(cloud.port).await;
    link.cut();
    let data = tempfile::tempdir().unwrap();
    let setup = Setup::new(link.port, data.path());
    let mut gateway = Gateway::start(&setup);
    for d in 0..3 {
        let device = format!("o{d}");
        publish_all(setup.devices_port, &device, device_events(&device, 1, 1000)).await.unwrap();
    }
    wait_until(WAIT, "3000 events committed", || (gateway.queue_depth() == 3000).then_some(()));
    gateway.kill();

    let gateway = Gateway::start(&setup);
    assert_eq!(gateway.queue_depth(), 3000, "the backlog is known at start-up");
    // The restarted broker has no retained acks of its own: the gateway publishes every
    // device's committed mark again, so a reconnecting device learns what is stored.
    let acks = AckWatcher::connect(setup.devices_port).await;
    wait_until(WAIT, "the marks re-published", || {
        let marks = acks.marks();
        (0..3).all(|d| marks.get(&format!("o{d}")) == Some(&1000)).then_some(())
    });
    assert!(sub.snapshot().events.is_empty());
    link.restore();
    let got = sub.wait_distinct(3000, WAIT);
    let marks: HashMap<String, u32> = (0..3).map(|d| (format!("o{d}"), 1000)).collect();
    assert_committed_arrived(&marks, &got);
    assert_eq!(got.duplicates(), 0, "nothing was in flight at the kill");
}

/// Soak: 20 `kill -9` at random moments while 4 firmware-like devices publish (each
/// keeps its events until the gateway's ack covers them and re-sends the rest after a
/// reconnect), with cloud outages (the proxy cut) spanning some of the kills. At the end
/// every committed event — every seq a device saw acknowledged, which is all of them once
/// the devices are done — is at the cloud, in order per device, and the duplicates stay
/// within the in-flight window re-sent per kill or link loss (max_inflight x max_events).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_soak_under_load_and_outages_loses_no_acknowledged_event() {
    const KILLS: u32 = 20;
    const DEVICES: usize = 4;
    let started = Instant::now();
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let link = Proxy::start(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let setup = Setup::new(link.port, data.path());
    let mut gateway = Gateway::start(&setup);
    let stop = Arc::new(AtomicBool::new(false));
    let devices: Vec<_> = (0..DEVICES)
        .map(|d| {
            let (port, stop) = (setup.devices_port, stop.clone());
            tokio::spawn(FirmwareDevice::run(port, format!("soak{d}"), 400, 1000, stop, Duration::from_secs(120)))
        })
        .collect();
    let mut outages = 0;
    let mut cut = false;
    for kill in 0..KILLS {
        // A random moment: 0.3-1.5 s into this gateway's life, under load.
        tokio::time::sleep(Duration::from_millis(300 + rand::random::<u64>() % 1200)).await;
        if kill % 4 == 1 {
            link.cut();
            cut = true;
            outages += 1;
        } else if cut && kill % 4 == 3 {
            link.restore();
            cut = false;
        }
        gateway.kill();
        gateway = Gateway::start(&setup);
    }
    link.restore();
    stop.store(true, Ordering::SeqCst);
    let mut runs = Vec::new();
    for device in devices {
        runs.push(device.await.unwrap().expect("every event acknowledged in the end"));
    }
    let total: u32 = runs.iter().map(|r| r.last).sum();
    let got = sub.wait_distinct(total as usize, WAIT);
    let marks: HashMap<String, u32> = runs.iter().enumerate().map(|(d, r)| (format!("soak{d}"), r.acked)).collect();
    assert_committed_arrived(&marks, &got);
    wait_until(WAIT, "the journal to drain", || (gateway.queue_depth() == 0).then_some(()));
    let got = sub.snapshot();
    let bound = (KILLS as usize + outages) * 16 * 500;
    println!(
        "soak: {KILLS} kills, {outages} outages, {total} events from {DEVICES} devices ({} connections), \
         {} received at the cloud, {} duplicates (bound {bound}), {:.1} s",
        runs.iter().map(|r| r.connections).sum::<u32>(),
        got.events.len(),
        got.duplicates(),
        started.elapsed().as_secs_f64()
    );
    assert!(total > 4000, "the devices kept publishing through the kills: {total}");
    assert!(got.duplicates() <= bound, "{} duplicates > {bound}", got.duplicates());
}
