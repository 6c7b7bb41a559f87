//! Faults on the cloud link (issue 8): a link that stalls (open but silent) must not wedge
//! the gateway; it notices (keep-alive, connect timeout), retries within its backoff bounds,
//! and delivers everything in order once the link is back.

use std::time::{Duration, Instant};

use edge_tests::clients::{device_events, publish_all, CloudSubscriber};
use edge_tests::gateway::{Gateway, Setup};
use edge_tests::mosquitto::Mosquitto;
use edge_tests::proxy::Proxy;
use edge_tests::wait_until;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_cloud_link_is_detected_retried_within_bounds_and_drained_after() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let link = Proxy::start(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(link.port, data.path());
    setup.cloud =
        "keep_alive = \"1s\"\nconnect_timeout = \"1s\"\nbackoff_min = \"100ms\"\nbackoff_max = \"400ms\"\n".into();
    let gateway = Gateway::start(&setup);
    publish_all(setup.devices_port, "s1", device_events("s1", 1, 200)).await.unwrap();
    sub.wait_distinct(200, WAIT);

    link.stall();
    let stalled = Instant::now();
    let attempts_before = link.accepted();
    publish_all(setup.devices_port, "s1", device_events("s1", 201, 300)).await.unwrap();
    // The gateway notices the silent link (keep-alive) and keeps trying (connect timeout).
    wait_until(WAIT, "the stall noticed", || (gateway.status()["cloud_link_up"] == false).then_some(()));
    wait_until(WAIT, "new connection attempts", || (link.accepted() >= attempts_before + 3).then_some(()));
    let stall_time = stalled.elapsed().as_secs_f64();
    let attempts = link.accepted() - attempts_before;
    assert_eq!(gateway.queue_depth(), 300, "nothing acknowledged leaves, nothing is lost");
    // Each attempt costs at least the backoff minimum: no tight reconnect loop.
    assert!(attempts as f64 <= stall_time / 0.1 + 2.0, "{attempts} attempts in {stall_time:.1} s");

    link.restore();
    let got = sub.wait_distinct(500, WAIT);
    assert_eq!(got.distinct().len(), 500);
    got.in_order_per_device().unwrap();
    wait_until(WAIT, "the journal drained", || (gateway.queue_depth() == 0).then_some(()));
}
