//! Tests of the read model and of kept forwarded events / replay, on a real SQLite file.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::read_model::Query;
use super::*;
use crate::config::{ByteSize, StoreConfig, WhenFull};
use crate::metrics::{DropReason, Metrics};
use std::path::Path;

/// The tests' events are received in 1970 (`received_ms` 1000, 2000...): a century of
/// `max_age`, or the writer's maintenance pass could expire them between their commit and
/// the read that checks them (it did, once in ~100 runs under load).
fn config(keep_forwarded: Option<Duration>) -> StoreConfig {
    let max_age = Duration::from_secs(100 * 365 * 86_400);
    StoreConfig { keep_forwarded, max_age, ..super::test_config::store_config() }
}

/// A real event (postcard, as ingest stores it).
fn payload(device: &str, boot: u32, seq: u32, kind: &str, readings: &str) -> Vec<u8> {
    let json = format!(
        r#"{{"device":"{device}","boot":{boot},"seq":{seq},"ts":{},"type":"{kind}","readings":{readings}}}"#,
        1_764_000_000_000u64 + u64::from(seq)
    );
    let event = edge_event::json::from_slice(json.as_bytes()).unwrap();
    edge_event::encode_to_vec(&event).unwrap()
}

fn event(device: &str, boot: u32, seq: u32, readings: &str, received_ms: i64) -> Incoming {
    Incoming::Event(NewEvent {
        device: device.into(),
        boot,
        seq,
        routes: vec![0],
        payload: payload(device, boot, seq, "env", readings),
        received_ms,
        done: None,
        filter_state: Vec::new(),
        held: false,
    })
}

struct Open {
    handle: StoreHandle,
    writer: WriterGuard,
    metrics: Arc<Metrics>,
}

fn open_store(dir: &Path, config: &StoreConfig, read_model: bool) -> Open {
    let metrics = Arc::new(Metrics::new(&["r".into()]));
    let routes = [RouteSpec { name: "r".into(), max_age: None }];
    let store = Journal::new(dir).open_with(config, &routes, (&*metrics).into(), None, read_model).unwrap();
    Open { handle: store.handle, writer: store.writer, metrics }
}

fn close(store: Open) {
    store.writer.join();
}

async fn queue(store: &Open) -> Vec<Row> {
    store.handle.read(0, 0, 1_000_000).await.unwrap()
}

fn kept(dir: &Path) -> Vec<(i64, i64)> {
    let conn = rusqlite::Connection::open(Journal::new(dir).path()).unwrap();
    let mut stmt = conn.prepare("SELECT event_id, received_ms FROM forwarded ORDER BY id").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap()
}

#[tokio::test]
async fn the_read_model_keeps_the_latest_reading_per_device_and_name_in_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &config(None), true);
    store
        .handle
        .ingest(vec![
            event("d1", 1, 1, r#"{"celsius":20.5,"humidity":40}"#, 1000),
            event("d1", 1, 2, r#"{"celsius":21.5}"#, 2000),
            event("d2", 7, 9, r#"{"on":true,"fix":"3d","raw":{"hex":"0a0b"}}"#, 1500),
        ])
        .unwrap();
    // In a later group: a retransmit (duplicate, not counted) and a newer event of d1.
    store.handle.ingest(vec![event("d1", 1, 2, r#"{"celsius":99}"#, 2500)]).unwrap();
    store.handle.ingest(vec![event("d1", 1, 3, r#"{"humidity":{"value":41.5,"unit":"%"}}"#, 3000)]).unwrap();
    queue(&store).await;
    assert_eq!(store.metrics.dropped(DropReason::Duplicate), 1);

    let list = store.handle.devices(Query::List { readings: false, limit: usize::MAX }).await.unwrap();
    let summaries: Vec<_> = list.iter().map(|d| d.summary.clone()).collect();
    assert_eq!(summaries.len(), 2);
    let d1 = &summaries[0];
    assert_eq!(d1.device, "d1");
    assert_eq!((d1.last_seen_ms, d1.boot, d1.seq, d1.events), (Some(3000), Some(1), Some(3), 3));
    assert_eq!((d1.connected, d1.reading_count), (None, 2), "connection state unknown until reported");
    assert_eq!((summaries[1].device.as_str(), summaries[1].events, summaries[1].reading_count), ("d2", 1, 3));

    let d1 = store.handle.devices(Query::One("d1".into())).await.unwrap().pop().unwrap();
    let by_name = |name: &str| d1.readings.iter().find(|r| r.name == name).unwrap().clone();
    assert_eq!(by_name("celsius").value, serde_json::json!(21.5), "the newest of the group wins");
    assert_eq!(by_name("celsius").ts_ms, Some(1_764_000_000_002));
    assert_eq!(by_name("celsius").received_ms, 2000);
    assert_eq!(by_name("humidity").value, serde_json::json!(41.5), "a later group overwrites");
    assert_eq!(by_name("humidity").unit.as_deref(), Some("%"));
    assert_eq!(by_name("humidity").kind, "env");
    let d2 = store.handle.devices(Query::One("d2".into())).await.unwrap().pop().unwrap();
    let values: Vec<_> = d2.readings.iter().map(|r| (r.name.as_str(), r.value.clone())).collect();
    assert_eq!(
        values,
        vec![
            ("fix", serde_json::json!("3d")),
            ("on", serde_json::json!(true)),
            ("raw", serde_json::json!({ "hex": "0a0b" }))
        ]
    );
    assert!(store.handle.devices(Query::One("nobody".into())).await.unwrap().is_empty());

    // The connection hook; a device known only by its connection has no readings.
    store.handle.device_connection("d1", true, 4000);
    store.handle.device_connection("d3", false, 4100);
    let list = store.handle.devices(Query::List { readings: true, limit: usize::MAX }).await.unwrap();
    let first = store.handle.devices(Query::List { readings: false, limit: 1 }).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].summary.device, "d1");
    assert_eq!(list[0].summary.connected, Some(true));
    assert_eq!(list[0].summary.connected_ms, Some(4000));
    assert_eq!(list[0].readings.len(), 2, "readings included when asked");
    assert_eq!(
        (list[2].summary.device.as_str(), list[2].summary.connected, list[2].summary.events),
        ("d3", Some(false), 0)
    );
    close(store);

    // Kept across a restart; nothing of it is read at start-up, it is just there.
    let store = open_store(dir.path(), &config(None), true);
    let d1 = store.handle.devices(Query::One("d1".into())).await.unwrap().pop().unwrap();
    assert_eq!((d1.summary.events, d1.readings.len()), (3, 2));
    close(store);
}

#[tokio::test]
async fn a_held_event_is_not_counted_twice_and_does_not_overwrite_newer_readings() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &config(None), true);
    store.handle.ingest(vec![event("d1", 1, 1, r#"{"celsius":1}"#, 1000)]).unwrap();
    store.handle.ingest(vec![event("d1", 1, 2, r#"{"celsius":2}"#, 2000)]).unwrap();
    let Incoming::Event(mut held) = event("d1", 1, 1, r#"{"celsius":1}"#, 3000) else { unreachable!() };
    held.held = true;
    store.handle.ingest(vec![Incoming::Event(held)]).unwrap();
    assert_eq!(queue(&store).await.len(), 3, "the held event is queued");
    let d1 = store.handle.devices(Query::One("d1".into())).await.unwrap().pop().unwrap();
    assert_eq!((d1.summary.events, d1.summary.seq), (2, Some(2)));
    assert_eq!(d1.readings[0].value, serde_json::json!(2));
    close(store);
}

#[tokio::test]
async fn without_keep_forwarded_an_ack_deletes_and_nothing_can_be_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &config(None), true);
    store.handle.ingest((1..=3).map(|s| event("d1", 1, s, r#"{"c":1}"#, 1000 * i64::from(s))).collect()).unwrap();
    let rows = queue(&store).await;
    store.handle.ack(0, rows[0].id, rows[2].id, 1).unwrap();
    assert!(queue(&store).await.is_empty());
    assert!(kept(dir.path()).is_empty());
    assert_eq!(store.handle.replay(0, 0, i64::MAX).await.unwrap(), 0);
    close(store);
}

#[tokio::test]
async fn kept_forwarded_events_replay_exactly_their_window_marked_and_expire_after_their_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &config(Some(Duration::from_secs(3600))), true);
    let base = now_ms() - 60_000;
    store
        .handle
        .ingest((1..=10).map(|s| event("d1", 1, s, r#"{"c":1}"#, base + 1000 * i64::from(s))).collect())
        .unwrap();
    let rows = queue(&store).await;
    assert_eq!(rows.len(), 10);
    assert!(rows.iter().all(|r| !r.replay));
    store.handle.ack(0, rows[0].id, rows[5].id, 1).unwrap();
    let left = queue(&store).await;
    assert_eq!(left.len(), 4, "acknowledged rows leave the queue");
    assert_eq!(super::tests::depth(&store.handle, &store.metrics), 4, "queue depth means not yet forwarded");
    let ids: Vec<i64> = kept(dir.path()).iter().map(|k| k.0).collect();
    assert_eq!(ids, rows[..6].iter().map(|r| r.id).collect::<Vec<_>>(), "kept in order");

    // [seq 3, seq 5): received at base+3000 and base+4000. Seq 8 is in the window's time
    // range of the second replay but not forwarded yet: not a replay.
    let queued = store.handle.replay(0, base + 3000, base + 5000).await.unwrap();
    assert_eq!(queued, 2);
    let now = queue(&store).await;
    assert_eq!(now.len(), 6);
    let copies: Vec<&Row> = now.iter().filter(|r| r.replay).collect();
    assert_eq!(copies.len(), 2);
    assert!(copies.iter().all(|c| c.id > left.last().unwrap().id), "copies queue behind");
    let seqs: Vec<u32> = copies.iter().map(|c| edge_event::decode(&c.payload).unwrap().seq).collect();
    assert_eq!(seqs, vec![3, 4], "exactly [since, until), in order");
    assert_eq!(store.metrics.store.replayed.get(), 2);
    assert_eq!(super::tests::depth(&store.handle, &store.metrics), 6);

    // Forward everything: the copies are kept too but never replayed again.
    store.handle.ack(0, now[0].id, now[5].id, 2).unwrap();
    assert!(queue(&store).await.is_empty());
    assert_eq!(kept(dir.path()).len(), 12);
    assert_eq!(store.handle.replay(0, base, base + 100_000).await.unwrap(), 10, "each event once, no copies of copies");
    close(store);

    // A short keep_forwarded: the kept rows go once it has passed.
    let store = open_store(dir.path(), &config(Some(Duration::from_millis(1500))), true);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !kept(dir.path()).is_empty() {
        assert!(Instant::now() < deadline, "kept rows never expired: {}", kept(dir.path()).len());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(store.metrics.dropped(DropReason::Ttl), 0, "expiry of forwarded rows is no loss");
    assert_eq!(queue(&store).await.len(), 10, "the queued copies are untouched");
    close(store);
}

#[tokio::test]
async fn drop_oldest_evicts_kept_forwarded_events_before_waiting_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(Some(Duration::from_secs(3600)));
    cfg.max_bytes = ByteSize(1 << 20);
    let store = open_store(dir.path(), &cfg, true);
    let big = |seq: u32| {
        let Incoming::Event(mut e) = event("d1", 1, seq, r#"{"c":1}"#, now_ms()) else { unreachable!() };
        e.payload.resize(2000, 0);
        Incoming::Event(e)
    };
    // ~600 KB forwarded and kept.
    store.handle.ingest((1..=300).map(big).collect()).unwrap();
    let rows = queue(&store).await;
    store.handle.ack(0, rows[0].id, rows[299].id, 1).unwrap();
    queue(&store).await;
    assert_eq!(kept(dir.path()).len(), 300);
    // ~400 KB more waiting: over the bound, the kept ones make room.
    store.handle.ingest((301..=500).map(big).collect()).unwrap();
    assert_eq!(queue(&store).await.len(), 200);
    assert_eq!(store.metrics.dropped(DropReason::Full), 0, "nothing waiting was dropped");
    let left = kept(dir.path()).len();
    assert!(left < 300, "kept rows were evicted: {left} left");
    if left > 0 {
        assert_eq!(kept(dir.path())[0].0, rows[300 - left].id, "the oldest went first");
    }
    close(store);
}

#[tokio::test]
async fn reject_new_deletes_kept_forwarded_events_before_refusing_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(Some(Duration::from_secs(3600)));
    cfg.max_bytes = ByteSize(1 << 20);
    cfg.when_full = WhenFull::RejectNew;
    let store = open_store(dir.path(), &cfg, true);
    let big = |seq: u32| {
        let Incoming::Event(mut e) = event("d1", 1, seq, r#"{"c":1}"#, now_ms()) else { unreachable!() };
        e.payload.resize(2000, 0);
        Incoming::Event(e)
    };
    store.handle.ingest((1..=300).map(big).collect()).unwrap();
    let rows = queue(&store).await;
    store.handle.ack(0, rows[0].id, rows[299].id, 1).unwrap();
    queue(&store).await;
    assert_eq!(kept(dir.path()).len(), 300);
    for chunk in 0..4u32 {
        store.handle.ingest((301 + chunk * 50..301 + (chunk + 1) * 50).map(big).collect()).unwrap();
    }
    assert_eq!(queue(&store).await.len(), 200, "nothing new was refused");
    assert_eq!(store.metrics.dropped(DropReason::Full), 0);
    assert!(kept(dir.path()).len() < 300, "kept rows made room");
    close(store);
}

/// CPU seconds (user + system) the `store-writer` thread has used, from /proc.
fn writer_cpu_seconds() -> f64 {
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let Some((_, rest)) = stat.split_once("(store-writer) ") else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After the name: state is field 3; utime and stime are fields 14 and 15 (1-based).
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        return ticks / 100.0;
    }
    panic!("no store-writer thread");
}

/// The read model's cost on the commit path: events through the writer with it on and off,
/// alternating, same process; the writer thread's CPU time per event (robust on a busy
/// machine) and the wall-clock rate. `cargo test --release -p edge-gateway
/// read_model_commit_cost -- --ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn read_model_commit_cost() {
    const EVENTS: u32 = 200_000;
    const DEVICES: u32 = 50;
    let mut cpu = [Vec::new(), Vec::new()];
    let mut rate = [Vec::new(), Vec::new()];
    // The shipped default group bound.
    let cfg = StoreConfig { commit_max_events: 4096, ..config(None) };
    for round in 0..10 {
        let on = round % 2 == 0;
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path(), &cfg, on);
        let events: Vec<Incoming> = (0..EVENTS)
            .map(|i| {
                let readings =
                    format!(r#"{{"celsius":{}.5,"humidity":{},"co2_ppm":{}}}"#, i % 30, 40 + i % 20, 400 + i);
                event(&format!("dev-{:03}", i % DEVICES), 1, 1 + i / DEVICES, &readings, 1000)
            })
            .collect();
        store.handle.read(0, 0, 1).await.unwrap();
        let cpu_before = writer_cpu_seconds();
        let started = Instant::now();
        // As ingest hands them over: small messages, grouped by the writer.
        let mut batch = Vec::new();
        for e in events {
            batch.push(e);
            if batch.len() == 10 {
                store.handle.ingest(std::mem::take(&mut batch)).unwrap();
            }
        }
        store.handle.ingest(batch).unwrap();
        // Answered after everything sent before it is committed.
        store.handle.read(0, 0, 1).await.unwrap();
        assert_eq!(store.metrics.store.committed.get(), u64::from(EVENTS));
        rate[usize::from(on)].push(f64::from(EVENTS) / started.elapsed().as_secs_f64());
        cpu[usize::from(on)].push((writer_cpu_seconds() - cpu_before) * 1e6 / f64::from(EVENTS));
        close(store);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (cpu_off, cpu_on) = (median(&mut cpu[0]), median(&mut cpu[1]));
    let (rate_off, rate_on) = (median(&mut rate[0]), median(&mut rate[1]));
    println!(
        "{EVENTS} events of {DEVICES} devices, 3 readings each, median of 5: writer CPU per event: read model off \
         {cpu_off:.2} us, on {cpu_on:.2} us (x{:.3}); wall-clock commit rate: off {rate_off:.0}/s, on {rate_on:.0}/s \
         (x{:.3})",
        cpu_on / cpu_off,
        rate_on / rate_off
    );
}
