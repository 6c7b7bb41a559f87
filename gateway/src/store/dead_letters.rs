//! The dead-letter table: payloads that could not become events, kept with their reason
//! so that a person can read them, fix the config or the device, and replay them.
//!
//! Bounded by count (`store.dead_letters_max`) and age (`store.dead_letters_max_age`): the
//! oldest go first and are counted (`edge_gateway_dead_letters_dropped_total`). A replay
//! deletes a dead letter only after what the replay produced was committed (see
//! `pipeline::Replay`), so a crash in between keeps it. A dead letter the device gate made
//! keeps its publisher, and a replay applies that device's rights again: a denied publish
//! stays denied (SECURITY.md, "Dead-letter replay").

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterRow {
    /// Its id (grows with time).
    pub id: i64,
    /// Gateway receive time, ms since the Unix epoch.
    pub received_ms: i64,
    /// Device-side topic.
    pub topic: String,
    /// Why it was refused.
    pub reason: String,
    /// The device that published it, when the gate knew (a publish it refused); None for
    /// every other dead letter and for those kept before the journal recorded publishers.
    #[serde(default)]
    pub publisher: Option<String>,
    /// The raw payload (not in the API's JSON, which carries `payload_text`; empty when a
    /// row comes from there).
    #[serde(skip)]
    pub payload: Vec<u8>,
    /// The payload as text when it is UTF-8, else as hex (for people and JSON).
    pub payload_text: String,
    /// Whether `payload_text` is hex.
    pub payload_is_hex: bool,
}

impl DeadLetterRow {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeadLetterRow> {
        let payload: Vec<u8> = row.get(4)?;
        let (payload_text, payload_is_hex) = match std::str::from_utf8(&payload) {
            Ok(text) => (text.to_owned(), false),
            Err(_) => (payload.iter().map(|b| format!("{b:02x}")).collect(), true),
        };
        Ok(DeadLetterRow {
            id: row.get(0)?,
            received_ms: row.get(1)?,
            topic: row.get(2)?,
            reason: row.get(3)?,
            publisher: row.get(5)?,
            payload,
            payload_text,
            payload_is_hex,
        })
    }
}

/// Which dead letters to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    /// The one with this id.
    One(i64),
    /// Up to `limit`, oldest first, with ids above `after`.
    Page {
        /// Exclusive lower id bound.
        after: i64,
        /// Most rows.
        limit: usize,
    },
}

/// Which dead letters to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// These ids.
    Ids(Vec<i64>),
    /// Those received before this time (ms since the epoch).
    OlderThan(i64),
    /// All of them.
    All,
}

/// Reads dead letters (also from a journal not yet migrated to version 3, through a
/// read-only connection of the CLI: its rows have no publisher).
pub fn read(conn: &Connection, query: Query) -> rusqlite::Result<Vec<DeadLetterRow>> {
    let publisher = if super::schema::has_column(conn, "dead_letters", "publisher")? { "publisher" } else { "NULL" };
    let columns = format!("SELECT id, received_ms, topic, reason, payload, {publisher} FROM dead_letters");
    let columns = columns.as_str();
    match query {
        Query::One(id) => Ok(conn
            .prepare_cached(&format!("{columns} WHERE id = ?1"))?
            .query_row(params![id], DeadLetterRow::from_row)
            .optional()?
            .into_iter()
            .collect()),
        Query::Page { after, limit } => conn
            .prepare_cached(&format!("{columns} WHERE id > ?1 ORDER BY id LIMIT ?2"))?
            .query_map(params![after, limit as i64], DeadLetterRow::from_row)?
            .collect(),
    }
}

/// Deletes dead letters; returns how many.
pub fn purge(conn: &Connection, purge: &Purge) -> rusqlite::Result<u64> {
    let deleted = match purge {
        Purge::Ids(ids) => {
            let mut stmt = conn.prepare_cached("DELETE FROM dead_letters WHERE id = ?1")?;
            let mut n = 0;
            for id in ids {
                n += stmt.execute(params![id])?;
            }
            n
        }
        Purge::OlderThan(cutoff) => conn.execute("DELETE FROM dead_letters WHERE received_ms < ?1", params![cutoff])?,
        Purge::All => conn.execute("DELETE FROM dead_letters", [])?,
    };
    Ok(deleted as u64)
}

/// Applies the bounds; returns how many were dropped.
pub fn enforce_bounds(conn: &Connection, max_count: u64, cutoff_ms: i64) -> rusqlite::Result<u64> {
    let by_count = conn
        .prepare_cached("DELETE FROM dead_letters WHERE id <= (SELECT MAX(id) FROM dead_letters) - ?1")?
        .execute(params![max_count as i64])?;
    let by_age = conn.prepare_cached("DELETE FROM dead_letters WHERE received_ms < ?1")?.execute(params![cutoff_ms])?;
    Ok((by_count + by_age) as u64)
}
