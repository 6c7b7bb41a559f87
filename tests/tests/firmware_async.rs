//! The firmware's async path against the real gateway: the `async_tokio` example runs
//! `edge_firmware::asynch::AsyncDevice` over tokio's `TcpStream` through
//! `embedded-io-adapters`, sleeping until each poll's deadline; every event it records
//! reaches the cloud (Mosquitto) and the gateway's acks empty its ring.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

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
    let mut run = Sim::spawn(Command::new(binary).args([&port, "async-1", "500", "3"]));
    let status = run.wait(WAIT);
    let output = run.output();
    assert!(status.success(), "({status}):\n{output}\n{}", gateway.log_text());
    assert!(output.contains("all confirmed: recorded 500 confirmed 500 connects 1"), "{output}");

    let got = sub.wait_distinct(500, WAIT);
    let ids: BTreeSet<(u32, u32)> =
        got.events.iter().filter(|(d, _, _)| d == "async-1").map(|(_, b, s)| (*b, *s)).collect();
    assert_eq!(ids, (1..=500).map(|seq| (3, seq)).collect());
    got.in_order_per_device().unwrap();
}
