//! The firmware's async path against the real gateway: the `async_tokio` example runs
//! `edge_firmware::asynch::AsyncDevice` over tokio's `TcpStream` through
//! `embedded-io-adapters`, sleeping until each poll's deadline; every event it records
//! reaches the cloud (Mosquitto) and the gateway's acks empty its ring. The example has no
//! wall clock (`Uptime`): every event reaches the cloud dated by the gateway from the age
//! the device sent, within the run.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edge_tests::clients::CloudSubscriber;
use edge_tests::gateway::{Gateway, Setup};
use edge_tests::mosquitto::Mosquitto;
use edge_tests::sim::{example, Sim};

const WAIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_async_device_over_embedded_io_async_delivers_every_event_through_the_real_gateway() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let setup = Setup::new(cloud.port, data.path());
    let gateway = Gateway::start(&setup);
    let binary = example("async_tokio", "async,std");
    let port = setup.devices_port.to_string();
    let started = now_ms();
    let mut run = Sim::spawn(Command::new(binary).args([&port, "async-1", "500", "3"]));
    let status = run.wait(WAIT);
    let output = run.output();
    assert!(status.success(), "({status}):\n{output}\n{}", gateway.log_text());
    assert!(output.contains("all confirmed: recorded 500 confirmed 500 connects 1"), "{output}");

    let got = sub.wait_distinct(500, WAIT);
    let received_by = now_ms();
    let ids: BTreeSet<(u32, u32)> =
        got.events.iter().filter(|(d, _, _)| d == "async-1").map(|(_, b, s)| (*b, *s)).collect();
    assert_eq!(ids, (1..=500).map(|seq| (3, seq)).collect());
    got.in_order_per_device().unwrap();
    // Taken after `started`; dated `received - age`, before the cloud had them all.
    for raw in got.raw.iter().filter(|e| e["device"] == "async-1") {
        let ts = raw["ts"].as_u64().unwrap_or_else(|| panic!("an event without ts: {raw}"));
        assert!((started..=received_by).contains(&ts), "ts {ts} outside [{started}, {received_by}]: {raw}");
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis() as u64
}
