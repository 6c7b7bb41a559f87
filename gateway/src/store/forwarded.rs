//! Forwarded events kept for replay (`store.keep_forwarded`).
//!
//! # Design
//!
//! When the cloud acknowledges a batch and `keep_forwarded` is set, its rows move from
//! `events` (the queue) to `forwarded` in the same transaction, stamped with the time of the
//! acknowledgement. So the queue stays exactly "not yet forwarded": queue reads, depth and
//! bytes counters, `max_age` and the forwarder are unchanged and never skip kept rows, and no
//! index is added to the commit path.
//!
//! # Invariants
//!
//! - `forwarded.id` grows in acknowledgement order, which per route is queue order; its
//!   `forwarded_ms` grows with it (one clock), so retention deletes from the lowest ids.
//! - Kept rows count against `store.max_bytes` (they are pages of the same file) and are the
//!   first to go when the journal is full: before `drop_oldest` drops an event still
//!   waiting, and before `reject_new` refuses a new one. Deleting them loses nothing the
//!   cloud has not got, so they are not counted as drops.
//! - A replay copies kept rows of one route whose gateway receive time is in
//!   `[since, until)` back into the queue as new rows with `replay = 1`, in their original
//!   order. Copies of copies are never made: kept rows that were themselves replays are
//!   skipped, so replaying a window twice sends each event once per replay.
//! - Nothing here runs at start-up.

use rusqlite::{params, Connection};

/// Rows looked at per replay step (one transaction each, so commits go on between steps).
pub const REPLAY_SCAN: i64 = 20_000;

/// Moves the acknowledged rows `first..=last` of route `route_db` into `forwarded`; the
/// caller deletes them from `events` next, in the same transaction.
pub fn keep(conn: &Connection, route_db: i64, first: i64, last: i64, now_ms: i64) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(
        "INSERT INTO forwarded (event_id, route, received_ms, forwarded_ms, replay, payload)
         SELECT id, route, received_ms, ?4, replay, payload FROM events
         WHERE route = ?1 AND id BETWEEN ?2 AND ?3 ORDER BY id",
    )?
    .execute(params![route_db, first, last, now_ms])?;
    Ok(())
}

/// Deletes up to `limit` of the oldest kept rows acknowledged before `cutoff_ms`; how many.
pub fn expire(conn: &Connection, cutoff_ms: i64, limit: i64) -> Result<u64, rusqlite::Error> {
    let n = conn
        .prepare_cached(
            "DELETE FROM forwarded WHERE id IN (SELECT id FROM forwarded ORDER BY id LIMIT ?1) AND forwarded_ms < ?2",
        )?
        .execute(params![limit, cutoff_ms])?;
    Ok(n as u64)
}

/// Deletes up to `limit` of the oldest kept rows, whatever their age (`drop_oldest`); how many.
pub fn evict(conn: &Connection, limit: i64) -> Result<u64, rusqlite::Error> {
    let n = conn
        .prepare_cached("DELETE FROM forwarded WHERE id IN (SELECT id FROM forwarded ORDER BY id LIMIT ?1)")?
        .execute(params![limit])?;
    Ok(n as u64)
}

/// What one replay step did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Step {
    /// Rows queued again.
    pub rows: i64,
    /// Their payload bytes.
    pub bytes: i64,
    /// Resume after this `forwarded.id`; None when the whole table has been looked at.
    pub next: Option<i64>,
}

/// Queues again the kept, non-replay rows of `route_db` received in `[since_ms, until_ms)`
/// among `forwarded.id` in `(after, after + REPLAY_SCAN]`, as new queue rows marked replay,
/// received now (their age and `max_age` count from the replay), numbered `first_id`,
/// `first_id + 1`, ... in their original order: the writer's next event ids
/// (`store/ids.rs`), so they queue behind everything; it skips the `rows` it returns.
pub fn replay_step(
    conn: &Connection,
    route_db: i64,
    since_ms: i64,
    until_ms: i64,
    after: i64,
    first_id: i64,
    now_ms: i64,
) -> Result<Step, rusqlite::Error> {
    // Retention deletes from the lowest ids: start where the kept rows start.
    let (min, max): (Option<i64>, Option<i64>) =
        conn.query_row("SELECT min(id), max(id) FROM forwarded", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let (Some(min), Some(max)) = (min, max) else {
        return Ok(Step::default());
    };
    let after = after.max(min - 1);
    let end = after.saturating_add(REPLAY_SCAN);
    let mut stmt = conn.prepare_cached(
        "INSERT INTO events (id, route, received_ms, payload, replay)
         SELECT ?7 - 1 + row_number() OVER (ORDER BY id), route, ?6, payload, 1 FROM forwarded
         WHERE id > ?1 AND id <= ?2 AND route = ?3 AND replay = 0 AND received_ms >= ?4 AND received_ms < ?5
         ORDER BY id
         RETURNING length(payload)",
    )?;
    let mut step = Step::default();
    let mut rows = stmt.query(params![after, end, route_db, since_ms, until_ms, now_ms, first_id])?;
    while let Some(row) = rows.next()? {
        step.rows += 1;
        step.bytes += row.get::<_, i64>(0)?;
    }
    step.next = (max > end).then_some(end);
    Ok(step)
}
