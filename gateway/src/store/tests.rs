//! Journal tests on a real SQLite file: commit, read, ack, dedupe, restart, retention,
//! and a damaged file.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use super::handle::Queued;
use super::*;
use crate::config::{ByteSize, StoreConfig, Synchronous, WhenFull};
use crate::metrics::{DropReason, Metrics};
use std::path::Path;

fn config(max_bytes: u64, when_full: WhenFull) -> StoreConfig {
    StoreConfig {
        max_bytes: ByteSize(max_bytes),
        max_age: Duration::from_secs(3600),
        when_full,
        synchronous: Synchronous::Normal,
        commit_max_events: 1000,
        commit_window: Duration::ZERO,
        dead_letters_max: 3,
        dead_letters_max_age: Duration::from_secs(3600),
        keep_forwarded: None,
    }
}

pub(super) fn event(device: &str, boot: u32, seq: u32, size: usize) -> Incoming {
    Incoming::Event(NewEvent {
        device: device.into(),
        boot,
        seq,
        routes: vec![0],
        payload: vec![7; size],
        received_ms: now_ms(),
        done: None,
        filter_state: Vec::new(),
        held: false,
    })
}

struct Open {
    handle: StoreHandle,
    opened: Opened,
    writer: WriterGuard,
    metrics: Arc<Metrics>,
    acks: mpsc::Receiver<Vec<DeviceAck>>,
}

fn open_store(dir: &Path, config: &StoreConfig) -> Open {
    let metrics = Arc::new(Metrics::new(&["r".into()]));
    let (tx, acks) = mpsc::channel();
    let routes = [RouteSpec { name: "r".into(), max_age: None }];
    let Store { handle, opened, writer } = Journal::new(dir).open(config, &routes, metrics.clone(), Some(tx)).unwrap();
    Open { handle, opened, writer, metrics, acks }
}

/// Rows waiting in route "r" as the forwarder sees them (the store's handle), checked to be
/// what `/metrics` reports too.
pub(super) fn depth(handle: &StoreHandle, metrics: &Metrics) -> u64 {
    let depth = handle.committed().depth(0);
    let line = format!("edge_gateway_queue_depth{{route=\"r\"}} {depth}\n");
    assert!(metrics.render(0).contains(&line), "the gauge reports the handle's depth {depth}");
    depth
}

fn close(store: Open) {
    store.writer.join();
}

/// Waits until the writer has applied everything sent before (reads are answered in order).
async fn sync(store: &Open) -> Vec<Row> {
    store.handle.read(0, 0, 1_000_000).await.unwrap()
}

#[tokio::test]
async fn committed_events_are_read_in_order_and_deleted_only_when_acked() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &config(1 << 30, WhenFull::DropOldest));
    store.handle.ingest((1..=5).map(|seq| event("d1", 1, seq, 10)).collect()).unwrap();
    let rows = sync(&store).await;
    assert_eq!(rows.len(), 5);
    assert!(rows.windows(2).all(|w| w[0].id < w[1].id));
    let acks = store.acks.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(acks, vec![DeviceAck { device: "d1".into(), boot: 1, seq: 5 }]);
    assert_eq!(depth(&store.handle, &store.metrics), 5);

    store.handle.ack(0, rows[0].id, rows[2].id, 1).unwrap();
    let left = sync(&store).await;
    assert_eq!(left.iter().map(|r| r.id).collect::<Vec<_>>(), vec![rows[3].id, rows[4].id]);
    assert_eq!(depth(&store.handle, &store.metrics), 2);
    close(store);
}

#[tokio::test]
async fn a_restart_keeps_the_queue_counters_and_device_marks_without_scanning() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &config(1 << 30, WhenFull::DropOldest));
    store.handle.ingest((1..=3).map(|seq| event("d1", 9, seq, 10)).collect()).unwrap();
    let rows = sync(&store).await;
    store.handle.ack(0, rows[0].id, rows[0].id, 4).unwrap();
    sync(&store).await;
    close(store);

    let store = open_store(dir.path(), &config(1 << 30, WhenFull::DropOldest));
    assert_eq!(store.opened.depth, vec![2]);
    assert_eq!(store.opened.last_batch, vec![4]);
    let marks = store.acks.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(marks, vec![DeviceAck { device: "d1".into(), boot: 9, seq: 3 }], "marks are re-published at start");
    // The retransmit of seq 3 is a duplicate, and reminds the device of its mark.
    store.handle.ingest(vec![event("d1", 9, 3, 10)]).unwrap();
    sync(&store).await;
    let marks = store.acks.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(marks, vec![DeviceAck { device: "d1".into(), boot: 9, seq: 3 }]);
    store.handle.ingest(vec![event("d1", 9, 4, 10)]).unwrap();
    let rows = sync(&store).await;
    assert_eq!(rows.len(), 3);
    assert_eq!(store.metrics.dropped(DropReason::Duplicate), 1);
    close(store);
}

#[tokio::test]
async fn ids_keep_growing_after_the_queue_empties() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &config(1 << 30, WhenFull::DropOldest));
    store.handle.ingest(vec![event("d1", 1, 1, 10)]).unwrap();
    let first = sync(&store).await[0].id;
    store.handle.ack(0, first, first, 1).unwrap();
    assert!(sync(&store).await.is_empty());
    store.handle.ingest(vec![event("d1", 1, 2, 10)]).unwrap();
    assert!(sync(&store).await[0].id > first, "a reused id would hide the row from a forwarder cursor");
    close(store);
}

#[tokio::test]
async fn a_new_boot_starts_a_new_mark() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &config(1 << 30, WhenFull::DropOldest));
    store.handle.ingest(vec![event("d1", 1, 50, 1), event("d1", 2, 1, 1), event("d1", 2, 1, 1)]).unwrap();
    assert_eq!(sync(&store).await.len(), 2);
    assert_eq!(store.metrics.dropped(DropReason::Duplicate), 1);
    close(store);
}

#[tokio::test]
async fn drop_oldest_keeps_the_newest_events_within_max_bytes_and_counts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let max = 2 << 20;
    let store = open_store(dir.path(), &config(max, WhenFull::DropOldest));
    for chunk in 0..40u32 {
        store.handle.ingest((0..100).map(|i| event("d1", 1, chunk * 100 + i + 1, 1000)).collect()).unwrap();
    }
    let rows = sync(&store).await;
    let dropped = store.metrics.dropped(DropReason::Full);
    assert!(dropped > 0, "4 MB into a 2 MiB journal must drop");
    assert_eq!(rows.len() as u64 + dropped, 4000);
    assert!(store.metrics.store.bytes.get() <= max, "{} > {max}", store.metrics.store.bytes.get());
    // The newest survive: the last row is the last event.
    let last = edge_seq(&rows);
    assert_eq!(last, rows.len());
    close(store);
}

/// Rows are inserted in seq order, so the survivors must be a suffix: contiguous ids.
fn edge_seq(rows: &[Row]) -> usize {
    let first = rows[0].id;
    rows.iter().enumerate().take_while(|(i, r)| r.id == first + *i as i64).count()
}

#[tokio::test]
async fn reject_new_keeps_the_oldest_events_and_counts_the_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &config(1 << 20, WhenFull::RejectNew));
    for chunk in 0..30u32 {
        store.handle.ingest((0..100).map(|i| event("d1", 1, chunk * 100 + i + 1, 1000)).collect()).unwrap();
    }
    let rows = sync(&store).await;
    let rejected = store.metrics.dropped(DropReason::Full);
    assert!(rejected > 0);
    assert_eq!(rows.len() as u64 + rejected, 3000);
    let first = rows[0].id;
    assert_eq!(rows.last().unwrap().id, first + rows.len() as i64 - 1, "the oldest are kept, in one run");
    close(store);
}

#[tokio::test]
async fn dead_letters_are_kept_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &config(1 << 30, WhenFull::DropOldest));
    let letters = (0..5)
        .map(|i| {
            Incoming::DeadLetter(DeadLetter {
                topic: "devices/d1/events".into(),
                payload: vec![i],
                reason: format!("bad {i}"),
                received_ms: now_ms(),
                publisher: None,
                done: None,
            })
        })
        .collect();
    store.handle.ingest(letters).unwrap();
    sync(&store).await;
    close(store);
    let conn = rusqlite::Connection::open(Journal::new(dir.path()).path()).unwrap();
    let reasons: Vec<String> = conn
        .prepare("SELECT reason FROM dead_letters ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(reasons, vec!["bad 2", "bad 3", "bad 4"]);
}

#[tokio::test]
async fn dead_letters_from_before_publishers_are_read_migrated_and_their_denials_stay_refused() {
    use crate::pipeline::Replay;
    let dir = tempfile::tempdir().unwrap();
    let path = Journal::new(dir.path()).path().to_owned();
    // A version 2 journal's dead letters: no publisher column.
    let old = rusqlite::Connection::open(&path).unwrap();
    // Received now: older rows would be dropped by `dead_letters_max_age` at open.
    old.execute_batch(&format!(
        "CREATE TABLE dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT, received_ms INTEGER NOT NULL,
             topic TEXT NOT NULL, reason TEXT NOT NULL, payload BLOB NOT NULL);
         INSERT INTO dead_letters (received_ms, topic, reason, payload) VALUES
             ({now}, 'devices/dev2/events', 'device \"dev1\" may not publish on \"devices/dev2/events\": a device publishes only under devices/dev1/ (not on its ack or commands topics); the device was disconnected', x'7b7d'),
             ({now}, 'devices/dev1/events', 'undecodable payload: unexpected end of input', x'ff');
         PRAGMA user_version = 2;",
        now = now_ms()
    ))
    .unwrap();
    // The CLI reads a stopped gateway's journal without migrating it.
    let rows = dead_letters::read(&old, dead_letters::Query::Page { after: 0, limit: 10 }).unwrap();
    assert_eq!(rows.iter().map(|r| r.publisher.clone()).collect::<Vec<_>>(), [None, None]);
    drop(old);

    let store = open_store(dir.path(), &config(1 << 30, WhenFull::DropOldest));
    let denial = |publisher: &str| DeadLetter {
        topic: "devices/dev2/events".into(),
        payload: b"{}".to_vec(),
        reason: format!("device {publisher:?} may not publish on \"devices/dev2/events\""),
        received_ms: now_ms(),
        publisher: Some(publisher.into()),
        done: None,
    };
    store.handle.ingest(vec![Incoming::DeadLetter(denial("dev1"))]).unwrap();
    let rows = store.handle.dead_letters(dead_letters::Query::Page { after: 0, limit: 10 }).await.unwrap();
    let publishers: Vec<Option<&str>> = rows.iter().map(|r| r.publisher.as_deref()).collect();
    assert_eq!(publishers, [None, None, Some("dev1")]);
    let replays: Vec<Result<i64, String>> =
        rows.into_iter().map(|row| Replay::of(row).map(|r| r.id()).map_err(|r| r.reason)).collect();
    assert!(matches!(&replays[0], Err(why) if why.contains("before the journal kept who published")), "{replays:?}");
    assert_eq!(replays[1], Ok(2), "not a denial: replayed as before");
    assert!(matches!(&replays[2], Err(why) if why.starts_with("published by device \"dev1\"")), "{replays:?}");
    close(store);
}

#[test]
fn a_damaged_journal_is_a_clear_error_and_is_not_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let path = Journal::new(dir.path()).path().to_owned();
    std::fs::write(&path, vec![0x42; 8192]).unwrap();
    let metrics = Arc::new(Metrics::new(&["r".into()]));
    let routes = [RouteSpec { name: "r".into(), max_age: None }];
    let err =
        Journal::new(dir.path()).open(&config(1 << 30, WhenFull::DropOldest), &routes, metrics, None).err().unwrap();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{text}");
    assert!(text.contains(FILE_NAME) && text.contains("move the file"), "{text}");
    assert_eq!(std::fs::read(&path).unwrap(), vec![0x42; 8192]);
}

#[tokio::test]
async fn space_of_forwarded_events_is_given_back_to_the_file_system() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &config(1 << 30, WhenFull::DropOldest));
    for chunk in 0..20u32 {
        store.handle.ingest((0..500).map(|i| event("d1", 1, chunk * 500 + i + 1, 1000)).collect()).unwrap();
    }
    let rows = sync(&store).await;
    let first = rows[0].id;
    let last = rows.last().unwrap().id;
    let db = Journal::new(dir.path()).path().to_owned();
    // Checkpoint so the file itself holds the pages, then measure it full.
    store.handle.ack(0, first, first, 1).unwrap();
    sync(&store).await;
    let full = std::fs::metadata(&db).unwrap().len();
    store.handle.ack(0, first, last, 2).unwrap();
    sync(&store).await;
    // Maintenance (every 500 ms) vacuums incrementally and checkpoints: the file shrinks.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::fs::metadata(&db).unwrap().len() >= full / 4 {
        assert!(std::time::Instant::now() < deadline, "the journal file did not shrink below {} bytes", full / 4);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(store.metrics.store.bytes.get() < full / 4);
    close(store);
    let after = std::fs::metadata(&db).unwrap().len();
    assert!(after < full / 4, "file is {after} bytes after forwarding everything, was {full}");
}

#[tokio::test]
async fn the_forwarder_is_told_of_every_inserted_row_even_when_acks_delete_in_the_same_group() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &config(1 << 30, WhenFull::DropOldest));
    store.handle.ingest((1..=10).map(|seq| event("d1", 1, seq, 10)).collect()).unwrap();
    let rows = sync(&store).await;
    assert_eq!(store.handle.committed().count(0), 10);
    // Keep the writer busy with a big group, so that the ack (deleting 10 rows) and the 5
    // new rows queue up behind it and commit together: a net change of -5.
    store.handle.ingest((100..20_100).map(|seq| event("d2", 1, seq, 10)).collect()).unwrap();
    store.handle.ack(0, rows[0].id, rows[9].id, 1).unwrap();
    store.handle.ingest((11..=15).map(|seq| event("d1", 1, seq, 10)).collect()).unwrap();
    sync(&store).await;
    assert_eq!(store.handle.committed().count(0), 20_015, "every committed row is announced");
    close(store);
}

#[test]
fn a_bounded_sender_waits_for_the_writer_to_take_events_and_never_on_a_stopped_writer() {
    let queued = Arc::new(Queued::new(10, 10));
    queued.add(8, true);
    let (done_tx, done_rx) = mpsc::channel();
    let sender = queued.clone();
    std::thread::spawn(move || {
        sender.add(5, true);
        done_tx.send(()).unwrap();
    });
    assert!(done_rx.recv_timeout(Duration::from_millis(200)).is_err(), "8 + 5 > 10: the sender waits");
    queued.take(8);
    done_rx.recv_timeout(Duration::from_secs(10)).expect("room made: the sender goes on");
    assert_eq!(queued.lock().events, 5);
    queued.take(5);
    queued.add(20, true); // a group larger than the bound passes when nothing is queued
    let (done_tx, done_rx) = mpsc::channel();
    let sender = queued.clone();
    std::thread::spawn(move || {
        sender.add(1, true);
        done_tx.send(()).unwrap();
    });
    assert!(done_rx.recv_timeout(Duration::from_millis(200)).is_err());
    queued.close();
    done_rx.recv_timeout(Duration::from_secs(10)).expect("a stopped writer releases every sender");
}

#[tokio::test]
async fn the_writer_guard_commits_and_releases_the_data_folder_when_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::new(dir.path());
    let cfg = config(1 << 30, WhenFull::DropOldest);
    let routes = [RouteSpec { name: "r".into(), max_age: None }];
    let metrics = || Arc::new(Metrics::new(&["r".into()]));
    let store = journal.open(&cfg, &routes, metrics(), None).unwrap();
    let second = journal.open(&cfg, &routes, metrics(), None).err().unwrap();
    assert!(matches!(second, StoreError::Locked { .. }), "{second}");
    assert!(second.to_string().contains(&journal.lock_path().display().to_string()), "{second}");
    store.handle.ingest(vec![event("d1", 1, 1, 10)]).unwrap();
    drop(store);
    let again = journal.open(&cfg, &routes, metrics(), None).unwrap();
    assert_eq!(again.opened.depth, vec![1], "the last group was committed before the lock was released");
    again.writer.close().await;
}

#[tokio::test]
async fn events_within_the_commit_window_share_one_commit_and_their_acks_follow_it() {
    let dir = tempfile::tempdir().unwrap();
    let window = Duration::from_millis(1000);
    let store = open_store(dir.path(), &StoreConfig { commit_window: window, ..config(1 << 30, WhenFull::DropOldest) });
    let first = std::time::Instant::now();
    for device in ["d1", "d2", "d3"] {
        store.handle.ingest(vec![event(device, 1, 1, 10)]).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut marks = store.acks.recv_timeout(Duration::from_secs(5)).unwrap();
    let acked = first.elapsed();
    marks.sort_by(|a, b| a.device.cmp(&b.device));
    let devices: Vec<&str> = marks.iter().map(|m| m.device.as_str()).collect();
    assert_eq!(devices, ["d1", "d2", "d3"], "one commit, one set of acks");
    assert!(acked >= window, "acknowledged after {acked:?}, before the window of {window:?} ended");
    assert_eq!(sync(&store).await.len(), 3);
    close(store);
}

/// A full disk (here a file that may grow by 256 more 1 KiB pages, `Journal::open_with_room`)
/// in the middle of one large group: the oldest events that fit are stored and the rest
/// refused, so a device keeps one run from its first event, whatever the size of the
/// group that met the full disk; and while the disk stays full, a probe cannot slip later
/// events into room the refused ones left (a hole, and a device ack past refused events).
#[tokio::test]
async fn a_full_disk_keeps_the_oldest_events_that_fit_and_a_probe_leaves_no_hole() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new(&["r".into()]));
    let (tx, acks) = mpsc::channel();
    let routes = [RouteSpec { name: "r".into(), max_age: None }];
    let cfg = config(1 << 30, WhenFull::RejectNew);
    let Store { handle, opened, writer } =
        Journal::new(dir.path()).open_with_room(&cfg, &routes, (&*metrics).into(), Some(tx), 256).unwrap();
    let store = Open { handle, opened, writer, metrics, acks };
    let mark = |store: &Open| store.acks.try_iter().flatten().filter(|a| a.device == "d1").map(|a| a.seq).last();
    let disk_full_errors = |store: &Open| store.metrics.store.errors[metrics::StoreErrorKind::DiskFull as usize].get();

    // One group of 2,000 events of 300 bytes: more than twice the 256 KiB of room.
    store.handle.ingest((1..=2000).map(|seq| event("d1", 1, seq, 300)).collect()).unwrap();
    let rows = sync(&store).await;
    let kept = rows.len() as u32;
    assert!(kept > 200, "the oldest events that fit are stored: {kept} of 2000");
    assert_eq!(edge_seq(&rows), rows.len(), "one run of ids");
    assert_eq!(mark(&store), Some(kept), "rows are seqs 1..={kept}: the device's mark is the last of them");
    assert_eq!(store.metrics.dropped(DropReason::Full), u64::from(2000 - kept), "the rest is refused and counted");
    assert_eq!(store.metrics.store.disk_full.get(), 1);

    // Later events, one at a time, until a probe (once a second) has tried one: refused.
    let errors = disk_full_errors(&store);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut seq = 2000;
    let mut rows = rows.len();
    while disk_full_errors(&store) == errors && rows == kept as usize {
        assert!(std::time::Instant::now() < deadline, "no probe within 10 s");
        seq += 1;
        store.handle.ingest(vec![event("d1", 1, seq, 300)]).unwrap();
        rows = sync(&store).await.len();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rows as u32, kept, "nothing stored after the refused events (up to seq {seq})");
    assert_eq!(mark(&store), None, "the mark did not move");
    assert_eq!(store.metrics.dropped(DropReason::Full), u64::from(seq - kept));
    assert_eq!(store.metrics.store.disk_full.get(), 1, "still full");
    close(store);
}
