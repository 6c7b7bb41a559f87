//! Event ids: the queue order (`store/mod.rs`, invariant 3), handed out by the writer.
//!
//! # Design
//!
//! `events.id` only grows and is never reused, not even after the table has emptied or
//! across a restart or a crash: a route's queue is its rows in id order, a batch is a
//! contiguous id range, the forwarder reads `id > cursor`, and kept forwarded events
//! (`forwarded.event_id`) and their replays are told apart by id.
//!
//! SQLite's `AUTOINCREMENT` would keep that promise by writing its counter
//! (`sqlite_sequence`) in every transaction that inserts: at a steady load, one more page
//! in every commit's WAL writes (BENCHMARKS.md, "Steady load"). Instead the writer numbers
//! the rows itself, from a counter in memory, and makes the counter durable in blocks:
//!
//! - `meta.events_id_reserved` = R: no id above R was ever handed out. The writer hands out
//!   an id above R only in a transaction that also raises R to that id + [`BLOCK`], so a
//!   commit writes `meta` once every [`BLOCK`] ids rather than `sqlite_sequence` every time.
//!   The writer's copy of R moves only once that transaction has committed. A rolled-back
//!   transaction gives its ids back (nobody saw them): within a run ids stay dense, as
//!   SQLite's were.
//! - At start the counter continues above the largest of R, the largest id in `events` (a
//!   seek to the last row, not a scan) and, for a journal made before this rule, its
//!   `sqlite_sequence` value. Ids that a crash or a restart left unused are skipped: ids
//!   only have to grow, not to be dense.
//!
//! A journal created before this rule keeps its `AUTOINCREMENT` table (changing that would
//! rebuild the table, i.e. read the whole backlog at start); the writer gives its rows
//! explicit ids too (SQLite then moves `sqlite_sequence` along as before), so both kinds of
//! journal run the same code. `forwarded.event_id` is not read at start (it has no index):
//! those ids came from the same counter, so they are at most R (or `sqlite_sequence`).

use rusqlite::{params, Connection, OptionalExtension};

/// Ids reserved by one write of `meta.events_id_reserved`: at 200 events a second, one
/// write every 20 s; a restart skips at most this many.
pub const BLOCK: i64 = 4096;

/// The writer's id counter (see the module doc).
#[derive(Debug)]
pub struct EventIds {
    /// The next id to hand out.
    next: i64,
    /// `next` after the last commit: where a rolled-back transaction leaves it.
    committed_next: i64,
    /// Ids up to this one are covered by the committed reservation.
    reserved: i64,
}

impl EventIds {
    /// Where the counter continues after a restart: above every id that was ever handed out.
    pub fn read(conn: &Connection) -> rusqlite::Result<EventIds> {
        let reserved: i64 = conn
            .query_row("SELECT value FROM meta WHERE key = 'events_id_reserved'", [], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        // The plain form, which SQLite answers from the last row of the table (no scan).
        let max: Option<i64> = conn.query_row("SELECT max(id) FROM events", [], |r| r.get(0))?;
        // Journals made with AUTOINCREMENT; every journal has sqlite_sequence (dead_letters
        // uses AUTOINCREMENT), but a hand-made one may not.
        let has_sequence: bool = conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = 'sqlite_sequence'",
            [],
            |r| r.get(0),
        )?;
        let sequence: i64 = if has_sequence {
            conn.query_row("SELECT seq FROM sqlite_sequence WHERE name = 'events'", [], |r| r.get(0))
                .optional()?
                .unwrap_or(0)
        } else {
            0
        };
        let next = reserved.max(max.unwrap_or(0)).max(sequence).max(0) + 1;
        Ok(EventIds { next, committed_next: next, reserved })
    }

    /// Hands out the next id.
    pub fn take(&mut self) -> i64 {
        let id = self.next;
        self.next += 1;
        id
    }

    /// The id [`EventIds::take`] would hand out next (the first of a run numbered by SQL).
    pub fn peek(&self) -> i64 {
        self.next
    }

    /// `n` ids from [`EventIds::peek`] on were used by a statement that numbered its rows.
    pub fn skip(&mut self, n: i64) {
        self.next += n.max(0);
    }

    /// Inside the transaction that used the ids, before its commit: when it handed out an
    /// id above the reservation, raises `meta.events_id_reserved` and returns the new value,
    /// to pass to [`EventIds::committed`] once the transaction has committed.
    pub fn reserve(&self, conn: &Connection) -> rusqlite::Result<Option<i64>> {
        let used = self.next - 1;
        if used <= self.reserved {
            return Ok(None);
        }
        let reserved = used + BLOCK;
        conn.prepare_cached(
            "INSERT INTO meta (key, value) VALUES ('events_id_reserved', ?1)
             ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
        )?
        .execute(params![reserved])?;
        Ok(Some(reserved))
    }

    /// The transaction that used the ids (and raised the reservation to `reserved`, if
    /// [`EventIds::reserve`] said so) has committed.
    pub fn committed(&mut self, reserved: Option<i64>) {
        self.committed_next = self.next;
        if let Some(reserved) = reserved {
            self.reserved = self.reserved.max(reserved);
        }
    }

    /// The transaction was rolled back: its ids were never seen, hand them out again.
    pub fn rolled_back(&mut self) {
        self.next = self.committed_next;
    }
}
