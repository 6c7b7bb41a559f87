//! Bounded disk (README, "What it guarantees" 5), end to end: a small `store.max_bytes` while the
//! cloud is down. `drop_oldest` keeps the newest events and counts the rest; `reject_new`
//! keeps the oldest. Every event sent is either delivered or counted as dropped.

use std::time::Duration;

use edge_tests::clients::{device_events, publish_all, CloudSubscriber};
use edge_tests::gateway::{Gateway, Setup};
use edge_tests::mosquitto::Mosquitto;
use edge_tests::proxy::Proxy;
use edge_tests::wait_until;

const SENT: u32 = 30_000;

async fn fill_while_down(when_full: &str) -> (Vec<u32>, u64) {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let link = Proxy::start(cloud.port).await;
    link.cut();
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(link.port, data.path());
    setup.store = format!("max_bytes = \"1MiB\"\nwhen_full = \"{when_full}\"\n");
    let gateway = Gateway::start(&setup);
    publish_all(setup.devices_port, "r1", device_events("r1", 1, SENT)).await.unwrap();
    wait_until(Duration::from_secs(60), "every event committed or dropped", || {
        let s = gateway.status();
        let accounted = s["events_committed"].as_u64().unwrap_or(0) + s["dropped"]["full"].as_u64().unwrap_or(0);
        let enough =
            if when_full == "reject_new" { accounted >= u64::from(SENT) } else { s["events_committed"] == SENT };
        enough.then_some(())
    });
    let status = gateway.status();
    assert!(status["store_bytes"].as_u64().unwrap() <= 1 << 20, "{status}");
    let dropped = status["dropped"]["full"].as_u64().unwrap();
    assert!(dropped > 0, "30,000 events do not fit in 1 MiB: {status}");
    let kept = gateway.queue_depth();
    link.restore();
    let got = sub.wait_distinct(kept as usize, Duration::from_secs(60));
    assert_eq!(got.distinct().len() as u64, kept);
    got.in_order_per_device().unwrap();
    let mut seqs: Vec<u32> = got.distinct().into_iter().map(|(_, _, s)| s).collect();
    seqs.sort_unstable();
    assert_eq!(seqs.len() as u64 + dropped, u64::from(SENT), "delivered + dropped = sent");
    assert!(gateway.log_text().contains("journal full"), "the drop is logged");
    (seqs, dropped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_keeps_the_newest_events_and_counts_the_dropped() {
    let (seqs, _) = fill_while_down("drop_oldest").await;
    assert_eq!(*seqs.last().unwrap(), SENT, "the newest event survives");
    let first = seqs[0];
    assert_eq!(seqs, (first..=SENT).collect::<Vec<_>>(), "what survives is the newest run, without holes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_new_keeps_the_oldest_events_and_counts_the_refused() {
    let (seqs, _) = fill_while_down("reject_new").await;
    assert_eq!(seqs[0], 1, "the oldest event survives");
    assert_eq!(seqs, (1..=seqs.len() as u32).collect::<Vec<_>>(), "what survives is the oldest run, without holes");
}
