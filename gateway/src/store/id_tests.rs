//! Tests of event ids (`store/ids.rs`, invariant 3 of `store/mod.rs`) on a real SQLite file:
//! they only grow, through an emptied queue, reopens, a crash, a journal made with
//! `AUTOINCREMENT`, and replays.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::ids::BLOCK;
use super::*;
use crate::config::StoreConfig;
use crate::metrics::Metrics;

fn event(seq: u32) -> Incoming {
    super::tests::event("d1", 1, seq, 10)
}

struct Open {
    handle: StoreHandle,
    writer: WriterGuard,
    /// The next batch number to acknowledge with.
    batch: u64,
}

fn open(dir: &Path, keep_forwarded: Option<Duration>) -> Open {
    let config = StoreConfig { keep_forwarded, ..super::test_config::store_config() };
    let metrics = Arc::new(Metrics::new(&["r".into()]));
    let routes = [RouteSpec { name: "r".into(), max_age: None }];
    let store = Journal::new(dir).open(&config, &routes, metrics, None).unwrap();
    Open { handle: store.handle, writer: store.writer, batch: store.opened.last_batch[0] + 1 }
}

/// The queue of route "r", once the writer has applied everything sent before.
async fn queue(store: &Open) -> Vec<Row> {
    store.handle.read(0, 0, 1_000_000).await.unwrap()
}

/// Commits the events `seqs` and returns their ids.
async fn add(store: &Open, seqs: std::ops::RangeInclusive<u32>) -> Vec<i64> {
    let n = seqs.clone().count();
    store.handle.ingest(seqs.map(event).collect()).unwrap();
    let rows = queue(store).await;
    let ids: Vec<i64> = rows[rows.len() - n..].iter().map(|r| r.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow in commit order");
    ids
}

/// Acknowledges the whole queue, as the cloud's PUBACK does: the table is empty after.
async fn forward_all(store: &mut Open) {
    let rows = queue(store).await;
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        store.handle.ack(0, first.id, last.id, store.batch).unwrap();
        store.batch += 1;
    }
    assert!(queue(store).await.is_empty());
}

fn db(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(Journal::new(dir).path()).unwrap()
}

fn events_sql(conn: &rusqlite::Connection) -> String {
    conn.query_row("SELECT sql FROM sqlite_schema WHERE name = 'events'", [], |r| r.get(0)).unwrap()
}

fn reserved(conn: &rusqlite::Connection) -> Option<i64> {
    use rusqlite::OptionalExtension;
    conn.query_row("SELECT value FROM meta WHERE key = 'events_id_reserved'", [], |r| r.get(0)).optional().unwrap()
}

#[tokio::test]
async fn a_new_journal_numbers_its_events_without_writing_sqlite_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), None);
    let ids = add(&store, 1..=3).await;
    store.writer.join();
    let conn = db(dir.path());
    assert!(!events_sql(&conn).contains("AUTOINCREMENT"), "{}", events_sql(&conn));
    let sequence: i64 =
        conn.query_row("SELECT count(*) FROM sqlite_sequence WHERE name = 'events'", [], |r| r.get(0)).unwrap();
    assert_eq!(sequence, 0, "no sqlite_sequence row (a page write per commit) for events");
    assert!(reserved(&conn).unwrap() >= ids[2], "the reservation covers every id handed out");
}

#[tokio::test]
async fn ids_keep_growing_after_the_queue_empties_and_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path(), None);
    let first = add(&store, 1..=5).await;
    forward_all(&mut store).await;
    let second = add(&store, 6..=10).await;
    assert!(second[0] > first[4], "an emptied table does not restart the ids: {first:?} then {second:?}");
    forward_all(&mut store).await;
    store.writer.join();

    // Nothing is left in `events`: only the reservation remembers the ids.
    assert_eq!(db(dir.path()).query_row("SELECT count(*) FROM events", [], |r| r.get::<_, i64>(0)).unwrap(), 0);
    let mut store = open(dir.path(), None);
    let third = add(&store, 11..=15).await;
    assert!(third[0] > second[4], "after a reopen of an empty journal: {second:?} then {third:?}");

    // More than one block of ids in one run, then an empty table again.
    let n = BLOCK as u32 + 10;
    let many = add(&store, 16..=15 + n).await;
    assert!(many[0] > third[4]);
    forward_all(&mut store).await;
    store.writer.join();
    let store = open(dir.path(), None);
    let after = add(&store, 16 + n..=16 + n).await;
    assert!(after[0] > *many.last().unwrap(), "after more than {BLOCK} ids: {} then {after:?}", many.last().unwrap());
    store.writer.join();
}

#[tokio::test]
async fn a_crash_never_reuses_an_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path(), None);
    let before = add(&store, 1..=5).await;
    forward_all(&mut store).await;
    // What kill -9 leaves now: the committed transactions, and nothing the writer would
    // write on its way out (the copy is taken while it runs).
    let crashed = tempfile::tempdir().unwrap();
    let copy = Journal::new(crashed.path()).path().to_owned();
    Journal::new(dir.path()).read_only().unwrap().execute("VACUUM INTO ?1", [copy.to_str().unwrap()]).unwrap();
    store.writer.join();

    let store = open(crashed.path(), None);
    assert!(queue(&store).await.is_empty());
    let after = add(&store, 6..=8).await;
    assert!(after[0] > before[4], "{before:?} then, after the crash, {after:?}");
    store.writer.join();
}

/// The journal as gateways before `store/ids.rs` made it: `events.id` is `AUTOINCREMENT`
/// (schema version 3), ids 1..=50 were handed out, and only id 1 still waits.
fn old_journal(dir: &Path) {
    let conn = db(dir);
    conn.execute_batch(&format!(
        "CREATE TABLE routes (
             id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, depth INTEGER NOT NULL DEFAULT 0,
             bytes INTEGER NOT NULL DEFAULT 0, last_batch INTEGER NOT NULL DEFAULT 0);
         CREATE TABLE events (
             id INTEGER PRIMARY KEY AUTOINCREMENT, route INTEGER NOT NULL,
             received_ms INTEGER NOT NULL, payload BLOB NOT NULL);
         CREATE INDEX events_by_route ON events (route, id);
         INSERT INTO routes (id, name, depth, bytes) VALUES (1, 'r', 1, 3);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50)
             INSERT INTO events (route, received_ms, payload) SELECT 1, {now}, x'010203' FROM n;
         DELETE FROM events WHERE id > 1;
         PRAGMA user_version = 3;",
        now = now_ms()
    ))
    .unwrap();
}

#[tokio::test]
async fn an_old_journal_keeps_its_autoincrement_table_and_its_ids_keep_growing() {
    let dir = tempfile::tempdir().unwrap();
    old_journal(dir.path());
    let mut store = open(dir.path(), None);
    let new = add(&store, 1..=3).await;
    assert!(new[0] > 50, "ids handed out before (up to 50) are not reused: {new:?}");
    let queue_ids: Vec<i64> = queue(&store).await.iter().map(|r| r.id).collect();
    assert_eq!(queue_ids, [vec![1], new.clone()].concat(), "the old row first, then the new ones");
    forward_all(&mut store).await;
    store.writer.join();

    let conn = db(dir.path());
    assert!(events_sql(&conn).contains("AUTOINCREMENT"), "not rebuilt: {}", events_sql(&conn));
    let sequence: i64 =
        conn.query_row("SELECT seq FROM sqlite_sequence WHERE name = 'events'", [], |r| r.get(0)).unwrap();
    assert_eq!(sequence, new[2], "SQLite still moves the old counter along");
    drop(conn);
    let store = open(dir.path(), None);
    let later = add(&store, 4..=4).await;
    assert!(later[0] > new[2], "{new:?} then, after a reopen of the emptied old journal, {later:?}");
    store.writer.join();
}

#[tokio::test]
async fn replays_get_ids_above_everything() {
    let keep = Some(Duration::from_secs(3600));
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path(), keep);
    let forwarded = add(&store, 1..=5).await;
    forward_all(&mut store).await;
    let waiting = add(&store, 6..=7).await;
    assert_eq!(store.handle.replay(0, 0, i64::MAX).await.unwrap(), 5);
    let copies: Vec<i64> = queue(&store).await.iter().filter(|r| r.replay).map(|r| r.id).collect();
    assert_eq!(copies.len(), 5);
    assert!(copies[0] > waiting[1] && copies.windows(2).all(|w| w[0] < w[1]), "{waiting:?} then {copies:?}");
    let next = add(&store, 8..=8).await;
    assert!(next[0] > copies[4], "events after a replay queue behind it: {copies:?} then {next:?}");
    forward_all(&mut store).await;
    store.writer.join();

    // An empty queue after a reopen: the copies of a second replay still come after all.
    let store = open(dir.path(), keep);
    assert_eq!(store.handle.replay(0, 0, i64::MAX).await.unwrap(), 8, "each kept event once, no copies of copies");
    let again: Vec<i64> = queue(&store).await.iter().map(|r| r.id).collect();
    assert!(again[0] > next[0], "{next:?} then {again:?} ({forwarded:?} first forwarded)");
    store.writer.join();
}
