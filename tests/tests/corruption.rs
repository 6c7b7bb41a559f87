//! A damaged journal (issue 8), against the real binary: each case gives a clear error or a
//! documented recovery (docs/operations.md, "The journal is damaged"), never silent loss.
//!
//! - A torn WAL: `kill -9`, then the `-wal` file cut in the middle of its last frame (what a
//!   power cut during a commit leaves). SQLite discards the torn transaction at open; every
//!   commit before it survives and is forwarded.
//! - A damaged page in the middle of `journal.db`: the gateway must not wedge or drop data
//!   silently; it stops with an error naming the file and the recovery.
//! - A journal from a future schema version: refused at start, exit code 1, with both
//!   versions named; the file is left as it was.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use edge_tests::clients::{device_events, publish_all, CloudSubscriber};
use edge_tests::gateway::{Gateway, Setup};
use edge_tests::mosquitto::Mosquitto;
use edge_tests::proxy::Proxy;
use edge_tests::wait_until;

const WAIT: Duration = Duration::from_secs(60);

/// Starts a gateway behind a cut link, commits `count` events of `device`, and returns it.
async fn filled(setup: &Setup, device: &str, count: u32) -> Gateway {
    let gateway = Gateway::start(setup);
    publish_all(setup.devices_port, device, device_events(device, 1, count)).await.unwrap();
    wait_until(WAIT, "the events committed", || (gateway.queue_depth() == u64::from(count)).then_some(()));
    gateway
}

/// Runs the gateway on `setup` until it exits by itself: (exit code, log).
fn refused(setup: &Setup) -> (Option<i32>, String) {
    let mut gateway = Gateway::spawn(setup);
    wait_until(WAIT, "the gateway to exit", || gateway.log_text().contains("edge-gateway: ").then_some(()));
    let code = gateway.wait().and_then(|s| s.code());
    (code, gateway.log_text())
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_wal_frame_loses_only_the_torn_commit_and_the_rest_is_forwarded() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let link = Proxy::start(cloud.port).await;
    link.cut();
    let data = tempfile::tempdir().unwrap();
    let setup = Setup::new(link.port, data.path());
    let mut gateway = filled(&setup, "wal-a", 1000).await;
    // One more commit of its own: the last transaction in the WAL, the one to tear.
    publish_all(setup.devices_port, "wal-b", device_events("wal-b", 1, 1)).await.unwrap();
    wait_until(WAIT, "the last event committed", || (gateway.queue_depth() == 1001).then_some(()));
    gateway.kill();

    let wal = data.path().join("journal.db-wal");
    let len = size(&wal);
    let frame = 24 + 4096;
    assert!(len > 32 + frame, "the WAL holds frames after kill -9: {len} bytes");
    // Cut the last frame in half.
    let torn = len - frame / 2;
    std::fs::OpenOptions::new().write(true).open(&wal).unwrap().set_len(torn).unwrap();

    let gateway = Gateway::start(&setup);
    let depth = gateway.queue_depth();
    assert_eq!(depth, 1000, "the torn commit (wal-b's event) is discarded, every earlier one survives");
    link.restore();
    let got = sub.wait_distinct(1000, WAIT);
    let distinct = got.distinct();
    let missing: Vec<u32> = (1..=1000).filter(|s| !distinct.contains(&("wal-a".to_owned(), 1, *s))).collect();
    assert!(missing.is_empty(), "committed before the torn frame and lost: {missing:?}");
    got.in_order_per_device().unwrap();
    wait_until(WAIT, "the journal drained", || (gateway.queue_depth() == 0).then_some(()));
    println!("torn WAL: {len} -> {torn} bytes; 1000 earlier events kept and forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_database_page_stops_the_gateway_with_the_file_and_the_recovery_named() {
    let cloud = Mosquitto::start();
    let sub = CloudSubscriber::connect(cloud.port).await;
    let link = Proxy::start(cloud.port).await;
    link.cut();
    let data = tempfile::tempdir().unwrap();
    let setup = Setup::new(link.port, data.path());
    let mut gateway = filled(&setup, "page", 20_000).await;
    // A clean stop: everything checkpointed into journal.db.
    assert!(gateway.terminate().unwrap().success());
    let db = data.path().join("journal.db");
    let len = size(&db);
    assert!(len > 64 * 4096, "a journal of some size: {len}");
    let mut file = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    let middle = len / 2 / 4096 * 4096;
    file.seek(SeekFrom::Start(middle + 100)).unwrap();
    file.write_all(&[0xA5; 1000]).unwrap();
    drop(file);

    // Start-up reads counters, not the queue (no full scan): the damage shows when the
    // forwarder reads that page. The gateway then stops, naming the file and the recovery.
    link.restore();
    let (code, log) = refused(&setup);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("is damaged"), "{log}");
    assert!(log.contains(&db.display().to_string()), "the file is named: {log}");
    assert!(log.contains("operations.md") && log.contains(".dump"), "the recovery is named: {log}");
    assert_eq!(size(&db), len, "the file is left as it was");
    // A restart does not run into the damage again: it refuses the journal at once.
    let (code, again) = refused(&setup);
    assert_eq!(code, Some(1), "{again}");
    assert!(again.contains("found by an earlier run") && again.contains("journal.db.damaged"), "{again}");
    assert!(!again.contains("cloud link up") && !again.contains("gateway ready"), "{again}");
    let forwarded = sub.snapshot().distinct().len();
    println!("damaged page: exit 1; {forwarded} of 20000 events before the damage forwarded; restart refused");

    // The recovery of docs/operations.md, step by step (needs the sqlite3 shell).
    if Command::new("sqlite3").arg("-version").output().is_err() {
        println!("damaged page: no sqlite3 shell here; the documented recovery was not exercised");
        return;
    }
    let aside = data.path().join("damaged");
    std::fs::create_dir(&aside).unwrap();
    for name in ["journal.db", "journal.db-wal", "journal.db-shm", "journal.db.damaged"] {
        let _ = std::fs::rename(data.path().join(name), aside.join(name));
    }
    let recover = format!(
        "sqlite3 {aside}/journal.db .dump | sed 's/^ROLLBACK; -- due to errors$/COMMIT;/' | sqlite3 {data}/journal.db; \
         sqlite3 {data}/journal.db \"{RECOUNT}\"",
        aside = aside.display(),
        data = data.path().display()
    );
    // Rows of the damaged page come out as garbage and are refused by the schema's
    // constraints on the way in (sqlite3 reports them and goes on): that is expected.
    let out = Command::new("sh").arg("-c").arg(&recover).output().unwrap();
    assert!(out.status.success(), "the recount failed: {}", String::from_utf8_lossy(&out.stderr));
    let gateway = Gateway::start(&setup);
    let kept = gateway.queue_depth();
    assert!(kept > 0 && kept < 20_000, "the recovered journal holds the rows that could be read: {kept}");
    wait_until(WAIT, "the recovered journal drained", || (gateway.queue_depth() == 0).then_some(()));
    // Some recovered rows may have been at the cloud already (acknowledged just before the
    // exit, not yet deleted): duplicates, not loss. Every recovered row is an event there.
    let got = sub.wait_distinct(kept as usize, WAIT);
    assert!(got.distinct().len() >= kept as usize);
    got.in_order_per_device().unwrap();
    println!(
        "damaged page, recovered: {kept} rows saved and forwarded; {} of 20000 events at the cloud in all",
        got.distinct().len()
    );
}

/// The documented recount after the dump: the per-route counters from the rows that are
/// really there.
const RECOUNT: &str = "UPDATE routes SET depth = (SELECT count(*) FROM events WHERE route = routes.id), \
     bytes = (SELECT coalesce(sum(length(payload)), 0) FROM events WHERE route = routes.id);";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_from_a_newer_gateway_is_refused_and_left_alone() {
    let cloud = Mosquitto::down();
    let data = tempfile::tempdir().unwrap();
    let setup = Setup::new(cloud.port, data.path());
    let mut gateway = filled(&setup, "future", 10).await;
    assert!(gateway.terminate().unwrap().success());
    let db = data.path().join("journal.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(conn);
    let before = std::fs::read(&db).unwrap();

    let (code, log) = refused(&setup);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("schema version 99") && log.contains("knows up to 4"), "{log}");
    assert!(log.contains("upgrade the gateway"), "{log}");
    assert_eq!(std::fs::read(&db).unwrap(), before, "the journal is not touched");
}
