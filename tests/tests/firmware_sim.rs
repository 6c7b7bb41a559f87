//! Simulated sensors (the firmware's device code in `edge-sensor-sim`) -> the real gateway
//! -> Mosquitto as the cloud. The gateway is SIGKILLed and restarted mid-run, devices
//! disconnect and reboot on schedule, and the cloud still gets every `(device, boot, seq)`
//! (README, "What it guarantees" 6: the firmware keeps each event until the gateway's ack covers it).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use edge_tests::clients::{CloudSubscriber, Received};
use edge_tests::gateway::{Gateway, Setup};
use edge_tests::mosquitto::Mosquitto;
use edge_tests::sim::Sim;
use edge_tests::wait_until;

const WAIT: Duration = Duration::from_secs(90);

/// `(boot, seq)`s the cloud received per device.
fn by_device(got: &Received) -> HashMap<String, BTreeSet<(u32, u32)>> {
    let mut map: HashMap<String, BTreeSet<(u32, u32)>> = HashMap::new();
    for (device, boot, seq) in &got.events {
        map.entry(device.clone()).or_default().insert((*boot, *seq));
    }
    map
}

fn committed(gateway: &Gateway) -> u64 {
    gateway.status()["events_committed"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_of_every_simulated_device_reaches_the_cloud_across_a_gateway_sigkill() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let setup = Setup::new(cloud.port, data.path());
    let mut gateway = Gateway::start(&setup);
    // 8 devices x 2,000 events at 1,000/s each: a few seconds of traffic, and at any
    // moment some events sent but not yet acked, which the kill makes the devices re-send.
    let (devices, events) = (8u32, 2000u32);
    let mut sim = Sim::start(
        setup.devices_port,
        &[
            "--devices",
            &devices.to_string(),
            "--events",
            &events.to_string(),
            "--rate",
            "1000",
            "--prefix",
            "kill",
            "--boot",
            "100",
            "--timeout",
            "80s",
        ],
    );
    let total = u64::from(devices * events);
    wait_until(WAIT, "a quarter of the events committed", || (committed(&gateway) >= total / 4).then_some(()));
    gateway.kill();
    assert!(sim.child.try_wait().unwrap().is_none(), "the simulator outlives the gateway");
    let gateway = Gateway::start(&setup);

    let status = sim.wait(WAIT);
    println!("{}", sim.output());
    assert!(
        status.success(),
        "the simulator did not get every event confirmed ({status}):\n{}\n{}",
        sim.output(),
        gateway.log_text()
    );
    assert_eq!(sim.summary("confirmed"), total);
    assert!(sim.summary("link_errors") >= u64::from(devices), "every device lost its link");
    assert!(sim.summary("resent") > 0, "unconfirmed events were sent again");

    let got = sub.wait_distinct(total as usize, WAIT);
    let by_device = by_device(&got);
    assert_eq!(by_device.len(), devices as usize);
    for (device, ids) in &by_device {
        let want: BTreeSet<(u32, u32)> = (1..=events).map(|seq| (100, seq)).collect();
        assert_eq!(ids.len(), want.len(), "{device}: {} missing", want.difference(ids).count());
        assert_eq!(ids, &want, "{device}");
    }
    got.in_order_per_device().unwrap();
    let event = got.raw.iter().find(|e| e["device"] == "kill-0000").expect("a thermometer event");
    assert_eq!(event["type"], "temperature");
    assert!(event["readings"]["celsius"]["value"].as_f64().is_some_and(|c| (10.0..35.0).contains(&c)), "{event}");
    assert!(event["ts"].as_u64().is_some_and(|ts| ts > 1_700_000_000_000), "{event}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_reboots_disconnects_and_bursts_keep_every_event_of_every_boot() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(&Setup::new(cloud.port, data.path()));
    let args = [
        "--devices",
        "3",
        "--events",
        "200",
        "--rate",
        "100",
        "--prefix",
        "chaos",
        "--boot",
        "40",
        "--reboot-every",
        "50",
        "--disconnect-every",
        "300ms",
        "--burst",
        "25",
        "--burst-every",
        "700ms",
        "--timeout",
        "80s",
    ];
    let mut sim = Sim::start(gateway.setup.devices_port, &args);
    let status = sim.wait(WAIT);
    assert!(status.success(), "not every event confirmed ({status}):\n{}\n{}", sim.output(), gateway.log_text());
    assert!(
        sim.summary("connects") >= 3 * 4,
        "each device reconnected after each disconnect and reboot:\n{}",
        sim.output()
    );

    let got = sub.wait_distinct(600, WAIT);
    let devices = by_device(&got);
    assert_eq!(devices.len(), 3);
    // 200 events, a reboot after every 50: boots 40, 41, 42, 43 with seqs 1..=50 each.
    let want: BTreeSet<(u32, u32)> = (40..=43).flat_map(|boot| (1..=50).map(move |seq| (boot, seq))).collect();
    for (device, ids) in &devices {
        assert_eq!(ids, &want, "{device}");
    }
    got.in_order_per_device().unwrap();
}
