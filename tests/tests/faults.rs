//! Faults on the cloud link (issue 8), injected by the TCP proxy between the real gateway
//! and a real Mosquitto: a cut link, a stalled one (open, silent), a slow one (latency and a
//! bandwidth cap: the cloud acknowledges slowly), and resets (RST at once, or after some
//! bytes, mid-publish). For each, the gateway
//!
//! - never loses an event: every `(device, boot, seq)` is counted at a cloud subscriber,
//!   in order per device;
//! - never wedges: it drains its journal to 0 once the link is back;
//! - reconnects within its backoff bounds: the gaps between the connections the proxy
//!   accepts are never shorter than `backoff_min` allows (plus `connect_timeout` when a
//!   connection stays silent) and never longer than `backoff_max` plus slack.
//!
//! And with a slow cloud, its memory does not grow with the backlog.

use std::time::{Duration, Instant};

use edge_tests::clients::{device_events, publish_all, CloudSubscriber};
use edge_tests::gateway::{Gateway, Setup};
use edge_tests::mosquitto::Mosquitto;
use edge_tests::proxy::{Mode, Proxy};
use edge_tests::wait_until;

const WAIT: Duration = Duration::from_secs(60);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_millis(400);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Scheduling and connection set-up on a loaded 2-core machine (debug build).
const SLACK: Duration = Duration::from_millis(2000);

/// One fault and what to expect of it.
struct Fault {
    mode: Mode,
    /// Events published while the fault lasts.
    during: u32,
    /// Connection attempts to see before the link is restored.
    attempts: u64,
    /// Nothing reaches the cloud while it lasts (so the journal holds all of `during`).
    blocks: bool,
    /// The shortest gap between two attempts: a silent connection costs the connect timeout.
    floor: Duration,
    /// Everything must arrive while the fault lasts (a slow link still delivers).
    delivers: bool,
}

fn setup(link: &Proxy, data: &std::path::Path) -> Setup {
    let mut setup = Setup::new(link.port, data);
    setup.cloud = format!(
        "keep_alive = \"1s\"\nconnect_timeout = \"{}ms\"\nbackoff_min = \"{}ms\"\nbackoff_max = \"{}ms\"\n",
        CONNECT_TIMEOUT.as_millis(),
        BACKOFF_MIN.as_millis(),
        BACKOFF_MAX.as_millis()
    );
    // Small batches (~6.5 KB): several per connection, so a reset cuts some mid-flight.
    setup.batch = "{ max_events = 50, max_bytes = \"64KiB\", max_delay = \"20ms\" }".into();
    setup
}

/// Checks the gaps between the connections accepted from `first` on. `failing`: every
/// attempt fails at once (or after the connect timeout), so a gap is a backoff delay and has a
/// ceiling; otherwise a connection may live a while before it drops, and only the floor holds.
fn assert_backoff_bounds(times: &[Instant], first: usize, floor: Duration, failing: bool, what: &str) -> Vec<Duration> {
    let gaps: Vec<Duration> = times[first.min(times.len())..].windows(2).map(|w| w[1] - w[0]).collect();
    let ceiling = if failing { floor - BACKOFF_MIN + BACKOFF_MAX + SLACK } else { Duration::MAX };
    for (i, gap) in gaps.iter().enumerate() {
        // Timers never fire early; 5 ms for the clocks of two processes.
        assert!(
            *gap + Duration::from_millis(5) >= floor,
            "{what}: attempt {i} came {gap:?} after the one before (< {floor:?}): {gaps:?}"
        );
        assert!(*gap <= ceiling, "{what}: attempt {i} came {gap:?} after the one before (> {ceiling:?}): {gaps:?}");
    }
    gaps
}

async fn survive(name: &str, fault: Fault) {
    let started = Instant::now();
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let link = Proxy::start(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let setup = setup(&link, data.path());
    let gateway = Gateway::start(&setup);
    let device = format!("f-{name}");
    publish_all(setup.devices_port, &device, device_events(&device, 1, 200)).await.unwrap();
    sub.wait_distinct(200, WAIT);
    // The cloud has them, but the gateway may not have its PUBACK yet: a fault now would keep
    // the last batch queued (and be counted against the fault's events). Wait for the ack.
    wait_until(WAIT, "the first 200 acknowledged", || (gateway.queue_depth() == 0).then_some(()));

    let first = link.accepted() as usize;
    link.set(fault.mode);
    publish_all(setup.devices_port, &device, device_events(&device, 201, fault.during)).await.unwrap();
    if fault.blocks {
        wait_until(WAIT, "the events committed during the fault", || {
            (gateway.queue_depth() == u64::from(fault.during)).then_some(())
        });
    }
    wait_until(WAIT, "connection attempts during the fault", || {
        (link.accepted() >= first as u64 + fault.attempts).then_some(())
    });
    if fault.blocks {
        wait_until(WAIT, "the link reported down", || (gateway.status()["cloud_link_up"] == false).then_some(()));
        assert_eq!(gateway.queue_depth(), u64::from(fault.during), "{name}: nothing leaves, nothing is lost");
        assert_eq!(sub.snapshot().distinct().len(), 200, "{name}: nothing got through");
    }
    let total = 200 + fault.during as usize;
    if fault.delivers {
        let got = sub.wait_distinct(total, WAIT);
        assert_eq!(got.distinct().len(), total, "{name}: events lost while the fault lasts");
        wait_until(WAIT, "the journal drained", || (gateway.queue_depth() == 0).then_some(()));
    }
    let gaps = assert_backoff_bounds(&link.accepted_at(), first, fault.floor, fault.blocks, name);

    link.restore();
    let got = sub.wait_distinct(total, WAIT);
    assert_eq!(got.distinct().len(), total, "{name}: events lost");
    got.in_order_per_device().unwrap();
    wait_until(WAIT, "the journal drained", || (gateway.queue_depth() == 0).then_some(()));
    // Everything after the restore: still within the bounds (the first gap spans the restore).
    assert_backoff_bounds(&link.accepted_at(), first, fault.floor.min(BACKOFF_MIN), fault.blocks, name);
    assert!(gateway.log_text().contains("cloud link down") || fault.attempts == 0, "{name}: the outage is logged");
    println!(
        "{name}: {} attempts during the fault, gaps {:?}..{:?}, {} duplicates, {:.1} s",
        gaps.len() + 1,
        gaps.iter().min(),
        gaps.iter().max(),
        got.duplicates(),
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_loses_nothing_reconnects_within_bounds_and_drains() {
    let fault = Fault { mode: Mode::Cut, during: 300, attempts: 6, blocks: true, floor: BACKOFF_MIN, delivers: false };
    survive("cut", fault).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_link_is_detected_retried_within_bounds_and_drained_after() {
    // Open but silent: the keep-alive notices the old connection, the connect timeout each
    // new one, so every attempt costs at least connect_timeout + backoff_min.
    let fault = Fault {
        mode: Mode::Stall,
        during: 300,
        attempts: 4,
        blocks: true,
        floor: CONNECT_TIMEOUT + BACKOFF_MIN,
        delivers: false,
    };
    survive("stall", fault).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_reset_at_once_loses_nothing_and_drains() {
    let fault = Fault {
        mode: Mode::Reset { after: 0 },
        during: 300,
        attempts: 6,
        blocks: true,
        floor: BACKOFF_MIN,
        delivers: false,
    };
    survive("reset-at-once", fault).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_reset_mid_publish_resends_what_was_in_flight() {
    // 20 KB per connection: a few batches of ~6.5 KB pass, the next is cut mid-packet. What
    // was in flight is sent again on the next connection; progress continues meanwhile.
    let fault = Fault {
        mode: Mode::Reset { after: 20_000 },
        during: 3000,
        attempts: 4,
        blocks: false,
        floor: BACKOFF_MIN,
        delivers: false,
    };
    survive("reset-mid-publish", fault).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_cloud_still_gets_everything_in_order() {
    let slow = Mode::Slow { delay: Duration::from_millis(20), bytes_per_second: 50_000, chunk: 4096 };
    let fault = Fault { mode: slow, during: 1000, attempts: 0, blocks: false, floor: BACKOFF_MIN, delivers: true };
    survive("slow", fault).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_does_not_grow_with_the_backlog_behind_a_slow_cloud() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let link = Proxy::start(cloud.port).await;
    let data = tempfile::tempdir().unwrap();
    let mut setup = setup(&link, data.path());
    // A small device-broker memory, filled by a warm-up with the link up: after it, RSS no
    // longer grows with traffic through the broker, only (if wrongly) with the backlog.
    setup.devices = "broker_memory = \"2MiB\"\n".into();
    setup.cloud = "keep_alive = \"5s\"\n".into();
    let gateway = Gateway::start(&setup);
    let devices: Vec<String> = (0..4).map(|d| format!("m{d}")).collect();
    let send = |first: u32, count: u32| {
        let port = setup.devices_port;
        let devices = devices.clone();
        async move {
            let sends = devices
                .into_iter()
                .map(|d| tokio::spawn(async move { publish_all(port, &d, device_events(&d, first, count)).await }));
            for send in sends.collect::<Vec<_>>() {
                send.await.unwrap().unwrap();
            }
        }
    };
    // Committed or counted as overrun (a burst beyond the small broker memory: a known
    // limit for devices without the firmware's acks, not what this test is about).
    let accounted = |n: u64| {
        wait_until(WAIT, "the events committed or counted", || {
            let s = gateway.status();
            let done = s["events_committed"].as_u64().unwrap_or(0) + s["dropped"]["overrun"].as_u64().unwrap_or(0);
            (done >= n).then_some(())
        })
    };
    send(1, 5000).await;
    accounted(20_000);
    wait_until(WAIT, "the warm-up forwarded", || (gateway.queue_depth() == 0).then_some(()));

    link.set(Mode::Slow { delay: Duration::from_millis(50), bytes_per_second: 20_000, chunk: 4096 });
    // The first backlog outgrows SQLite's page cache (`cache_size`, 2 MiB), which fills as
    // the file grows and then stays: from there on, only a per-event cost would show. Rounds
    // of 40k events until the journal is past 12 MiB (overruns of the small device broker
    // make the count per round vary).
    let mut next = 5001;
    let mut sent = 20_000;
    while gateway.status()["store_bytes"].as_u64().unwrap_or(0) < 12 << 20 {
        assert!(next < 100_000, "the journal does not grow: {}", gateway.status());
        send(next, 10_000).await;
        (next, sent) = (next + 10_000, sent + 40_000);
        accounted(sent);
    }
    let (depth1, rss1) = (gateway.queue_depth(), gateway.rss_kib().unwrap());
    for _ in 0..4 {
        send(next, 10_000).await;
        (next, sent) = (next + 10_000, sent + 40_000);
        accounted(sent);
    }
    let (depth2, rss2) = (gateway.queue_depth(), gateway.rss_kib().unwrap());
    println!("slow cloud: backlog {depth1} -> {depth2} events, RSS {rss1} -> {rss2} KiB");
    let grown = depth2.saturating_sub(depth1);
    assert!(grown >= 80_000, "the backlog grew: {depth1} -> {depth2}");
    // Held in memory, an event would cost >= ~100 bytes (its ~50-byte payload, a Vec, the
    // allocator's overhead). Allow 40 bytes per added event for allocator noise (a few MiB
    // either way between runs): a per-event cost still fails this.
    let allowed = grown * 40 / 1024;
    assert!(
        rss2 <= rss1 + allowed,
        "RSS grew with the backlog: {rss1} -> {rss2} KiB (allowed +{allowed}) for {depth1} -> {depth2} events"
    );
    let committed = gateway.status()["events_committed"].as_u64().unwrap() as usize;

    link.restore();
    let got = sub.wait_distinct(committed, WAIT);
    assert_eq!(got.distinct().len(), committed, "every committed event arrives");
    got.in_order_per_device().unwrap();
    wait_until(WAIT, "the journal drained", || (gateway.queue_depth() == 0).then_some(()));
}
