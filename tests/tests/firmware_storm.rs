//! No reconnect storm: a retained message larger than the device's receive buffer waits on
//! its commands topic on the real gateway. The firmware (in `edge-sensor-sim`) skips and
//! counts it at every SUBACK instead of dropping the session, so each device connects
//! once, and every event still reaches the cloud (Mosquitto). Before the fix: ~85
//! reconnects in 8 s, every pending event re-sent each time.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use edge_tests::clients::CloudSubscriber;
use edge_tests::gateway::{Gateway, Setup};
use edge_tests::mosquitto::Mosquitto;
use edge_tests::sim::Sim;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_oversized_command_is_skipped_without_a_reconnect_storm_and_events_still_arrive() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let setup = Setup::new(cloud.port, data.path());
    let gateway = Gateway::start(&setup);
    let big = "x".repeat(4096); // 16 times the default 256-byte receive buffer
    for device in ["storm-0000", "storm-0001"] {
        let out = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &setup.devices_port.to_string(), "-i", "retainer", "-q", "1", "-r"])
            .args(["-t", &format!("devices/{device}/commands"), "-m", &big])
            .output()
            .expect("mosquitto_pub (apt-get install mosquitto-clients)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    // 2 devices x 400 events at 100/s: 4 s of traffic through the retained message.
    let args = ["--devices", "2", "--events", "400", "--rate", "100", "--prefix", "storm", "--boot", "9"];
    let mut sim = Sim::start(setup.devices_port, &[&args[..], &["--timeout", "50s"]].concat());
    let status = sim.wait(WAIT);
    let output = sim.output();
    assert!(status.success(), "({status}):\n{output}\n{}", gateway.log_text());
    assert_eq!(sim.summary("confirmed"), 800);
    assert_eq!(sim.summary("connects"), 2, "one session per device, no storm:\n{output}");
    assert_eq!(sim.summary("link_errors"), 0, "{output}");
    assert_eq!(sim.summary("resent"), 0, "nothing re-sent: the sessions never dropped\n{output}");
    assert!(sim.summary("oversized") >= 2, "each device skipped the retained message:\n{output}");

    let got = sub.wait_distinct(800, WAIT);
    for device in ["storm-0000", "storm-0001"] {
        let ids: BTreeSet<(u32, u32)> =
            got.events.iter().filter(|(d, _, _)| d == device).map(|(_, b, s)| (*b, *s)).collect();
        assert_eq!(ids, (1..=400).map(|seq| (9, seq)).collect(), "{device}");
    }
}
