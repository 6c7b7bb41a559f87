//! Time without a clock, end to end: devices with no RTC and no SNTP send the age of their
//! readings (edge-event format version 2, or JSON `"age_ms"`), the real gateway dates each
//! event `received - age` with its own clock, and Mosquitto as the cloud receives that `ts`.
//!
//! The bound is exact, with no slack: the gateway receives the publish after this test
//! started sending it and before the cloud got the batch, and every clock here is the same
//! machine's, so `ts` lies in `[sent_from - age, cloud_received - age]`.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edge_event::{age_at_send, encode, encode_dated, Dating, Event, Reading, Timestamp, Value, MAX_ENCODED_LEN};
use edge_tests::clients::{publish_all, CloudSubscriber, Received};
use edge_tests::gateway::{Gateway, Setup};
use edge_tests::mosquitto::Mosquitto;

const WAIT: Duration = Duration::from_secs(30);
const HOUR_MS: u64 = 3_600_000;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis() as u64
}

fn event(device: &str, seq: u32) -> Event {
    let mut event = Event::new(device, 1, seq, Timestamp::Unknown, "temperature").unwrap();
    event.push_reading(Reading::new("celsius", Value::F32(21.5)).unwrap()).unwrap();
    event
}

/// The `ts` the cloud received for `(device, seq)`; `None` for `"ts": null`.
fn cloud_ts(got: &Received, device: &str, seq: u32) -> Option<u64> {
    let raw = got.raw.iter().find(|e| e["device"] == device && e["seq"] == seq).expect("the event reached the cloud");
    raw["ts"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_without_a_wall_clock_reach_the_cloud_dated_by_their_age_at_receive() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let setup = Setup::new(cloud.port, data.path());
    let gateway = Gateway::start(&setup);
    let topic = "devices/no-rtc/events".to_owned();
    let mut buf = [0u8; MAX_ENCODED_LEN];

    // 1: sent with its age (a device that encodes at each send): taken 90 s ago.
    let len = encode_dated(&event("no-rtc", 1), Dating::Age(90_000), &mut buf).unwrap();
    let aged = buf[..len].to_vec();
    // 2: as firmware stores it (uptime 5 s at recording) and re-sends it after an hour in
    // its ring: the age is computed at this send, so the event is dated an hour back.
    let len = encode_dated(&event("no-rtc", 2), Dating::Uptime(5_000), &mut buf).unwrap();
    let stored = buf[..len].to_vec();
    let held = age_at_send(&stored, 5_000 + HOUR_MS, &mut buf).unwrap().to_vec();
    // 3: version 1 without a ts (old firmware): stays unknown.
    let len = encode(&event("no-rtc", 3), &mut buf).unwrap();
    let plain = buf[..len].to_vec();

    let sent_from = now_ms();
    publish_all(setup.devices_port, "no-rtc", vec![(topic.clone(), aged), (topic.clone(), held), (topic, plain)])
        .await
        .unwrap();
    // 4: JSON from an independent client (mosquitto_pub), taken 2.5 s ago.
    let json =
        r#"{"device":"json-dev","boot":1,"seq":1,"age_ms":2500,"type":"temperature","readings":{"celsius":21.5}}"#;
    let status = Command::new("mosquitto_pub")
        .args(["-p", &setup.devices_port.to_string(), "-q", "1", "-t", "devices/json-dev/events", "-m", json])
        .status()
        .expect("mosquitto_pub runs (apt-get install mosquitto-clients)");
    assert!(status.success(), "mosquitto_pub failed: {status}");

    let got = sub.wait_distinct(4, WAIT);
    let received_by = now_ms();
    assert_eq!(got.distinct().len(), 4, "every event reached the cloud:\n{}", gateway.log_text());
    for (device, seq, age) in [("no-rtc", 1, 90_000), ("no-rtc", 2, HOUR_MS), ("json-dev", 1, 2_500)] {
        let ts = cloud_ts(&got, device, seq).unwrap_or_else(|| panic!("{device}/{seq} has no ts"));
        let (earliest, latest) = (sent_from - age, received_by - age);
        assert!(
            (earliest..=latest).contains(&ts),
            "{device}/{seq}: ts {ts} outside [{earliest}, {latest}] (the gateway's receive time minus {age} ms)"
        );
    }
    assert_eq!(cloud_ts(&got, "no-rtc", 3), None, "an event with neither ts nor age stays unknown");
}
