//! The journal's schema and every migration (events, commands, read model), and the small
//! state read at start-up (per-route counters, per-device high-water marks) — never the
//! queue itself. Only [`super::journal`] calls these: it opens the file and sets the pragmas.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{params, Connection, ErrorCode};

use super::StoreError;
use crate::filters::{DeviceState, StateUpdate};

/// Schema version written to `PRAGMA user_version`. 2: the read model and kept forwarded
/// events ([`migrate_read_model`]); 3: who published a dead letter
/// ([`migrate_dead_letter_publisher`]); 4: event ids handed out by the writer under
/// `meta.events_id_reserved` (`store/ids.rs`): a new journal's `events.id` has no
/// `AUTOINCREMENT`, so a gateway that does not know the reservation would reuse ids.
pub const SCHEMA_VERSION: i64 = 4;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS routes (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    depth      INTEGER NOT NULL DEFAULT 0,   -- rows waiting, kept with every insert/delete
    bytes      INTEGER NOT NULL DEFAULT 0,   -- payload bytes waiting
    last_batch INTEGER NOT NULL DEFAULT 0    -- last batch number the cloud acknowledged
);
-- id: the queue order, only grows, never reused. Handed out by the writer, every committed
-- id at most meta.events_id_reserved (store/ids.rs); no AUTOINCREMENT, which would write
-- sqlite_sequence in every commit. A journal made before version 4 keeps its AUTOINCREMENT
-- table (only new tables are created here) and is numbered the same way.
CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY,
    route       INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    payload     BLOB NOT NULL            -- postcard-encoded edge-event
);
CREATE INDEX IF NOT EXISTS events_by_route ON events (route, id);
CREATE TABLE IF NOT EXISTS devices (
    device       TEXT PRIMARY KEY,
    boot         INTEGER NOT NULL,
    seq          INTEGER NOT NULL,    -- highest committed seq of that boot
    last_seen_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL              -- gateway_boot: +1 at every start;
                                        -- events_id_reserved: store/ids.rs
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS filter_state (
    route        TEXT NOT NULL,
    device       TEXT NOT NULL,
    last_ms      INTEGER NOT NULL,   -- receive time of the last forwarded event
    state_values TEXT NOT NULL,      -- JSON [[reading, value], ...] of deadband readings
    PRIMARY KEY (route, device)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ms INTEGER NOT NULL,
    topic       TEXT NOT NULL,
    reason      TEXT NOT NULL,
    payload     BLOB NOT NULL
);
-- The last config document from the cloud that was applied ([remote_config]); one row.
-- A new table only: an older gateway ignores it, so no version bump.
CREATE TABLE IF NOT EXISTS remote_config (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    version    TEXT NOT NULL,
    document   TEXT NOT NULL,
    applied_ms INTEGER NOT NULL
);
";

/// Additive migration step for cloud-to-device commands (`crate::downlink::store`): two
/// tables, created when missing. Only new tables, so no version bump is needed: an older
/// gateway ignores them, and running it again is a no-op.
pub(super) fn migrate_commands(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS commands (
            seq         INTEGER PRIMARY KEY AUTOINCREMENT,  -- arrival order: per-device order
            device      TEXT NOT NULL,
            id          TEXT NOT NULL,                      -- the cloud's id
            name        TEXT NOT NULL,
            payload     TEXT NOT NULL,                      -- JSON text
            deadline_ms INTEGER NOT NULL,
            state       TEXT NOT NULL,  -- accepted | delivered | done | failed | expired
            received_ms INTEGER NOT NULL,
            updated_ms  INTEGER NOT NULL,
            UNIQUE (device, id)
        );
        CREATE INDEX IF NOT EXISTS commands_open ON commands (state, device, seq);
        CREATE TABLE IF NOT EXISTS command_status (
            id      INTEGER PRIMARY KEY AUTOINCREMENT,      -- publish order
            device  TEXT NOT NULL,
            command TEXT,                                   -- NULL: a command without an id
            status  TEXT NOT NULL,
            message TEXT,
            ts      INTEGER NOT NULL
        );",
    )
}

/// Version 2 (issue 9), additive only, idempotent, and without reading any event: the read
/// model (`device_view`, `latest_readings`: one row per device and per (device, reading
/// name), kept by the writer in the commit's transaction), `forwarded` (events the cloud
/// acknowledged, kept for `store.keep_forwarded`, replayable) and `events.replay` (1 on a
/// replayed copy). `ADD COLUMN` with a constant default does not rewrite the table.
fn migrate_read_model(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS device_view (
            device       TEXT PRIMARY KEY,
            last_seen_ms INTEGER,             -- gateway receive time of its newest committed event
            boot         INTEGER,             -- (boot, seq) of that event
            seq          INTEGER,
            events       INTEGER NOT NULL DEFAULT 0,   -- events committed (not duplicates)
            connected    INTEGER,             -- 1 / 0, NULL = unknown (StoreHandle::device_connection)
            connected_ms INTEGER              -- when `connected` last changed
        ) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS latest_readings (
            device      TEXT NOT NULL,
            name        TEXT NOT NULL,
            value       TEXT NOT NULL,        -- JSON value as the cloud batch writes it
            unit        TEXT,
            type        TEXT NOT NULL,        -- the event's type
            ts_ms       INTEGER,              -- the event's ts (device clock), NULL when unknown
            received_ms INTEGER NOT NULL,     -- gateway receive time
            PRIMARY KEY (device, name)
        ) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS forwarded (
            id           INTEGER PRIMARY KEY, -- order of acknowledgement (= queue order per route)
            event_id     INTEGER NOT NULL,    -- its events.id
            route        INTEGER NOT NULL,
            received_ms  INTEGER NOT NULL,
            forwarded_ms INTEGER NOT NULL,    -- when the cloud acknowledged it
            replay       INTEGER NOT NULL,
            payload      BLOB NOT NULL
        );",
    )?;
    if !has_column(conn, "events", "replay")? {
        conn.execute_batch("ALTER TABLE events ADD COLUMN replay INTEGER NOT NULL DEFAULT 0")?;
    }
    Ok(())
}

/// Version 3 (issue 15 item 6), additive and idempotent: `dead_letters.publisher`, the
/// device the gate authenticated for a publish it refused, so that a replay can apply that
/// device's rights again (SECURITY.md, "Dead-letter replay"). NULL for every other dead
/// letter and for those kept before this migration; `ADD COLUMN` without a default does not
/// rewrite the table.
fn migrate_dead_letter_publisher(conn: &Connection) -> Result<(), rusqlite::Error> {
    if !has_column(conn, "dead_letters", "publisher")? {
        conn.execute_batch("ALTER TABLE dead_letters ADD COLUMN publisher TEXT")?;
    }
    Ok(())
}

/// Whether `table` has `column` (a journal not yet migrated by this version may lack it:
/// read-only connections never migrate).
pub(super) fn has_column(conn: &Connection, table: &str, column: &str) -> Result<bool, rusqlite::Error> {
    let n: i64 =
        conn.query_row("SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2", params![table, column], |r| {
            r.get(0)
        })?;
    Ok(n > 0)
}

/// A configured route as the journal knows it.
#[derive(Debug, Clone)]
pub struct RouteState {
    /// `routes.id`.
    pub db_id: i64,
    /// Rows waiting.
    pub depth: u64,
    /// Payload bytes waiting.
    pub bytes: u64,
    /// Last acknowledged batch number.
    pub last_batch: u64,
}

/// What start-up reads.
#[derive(Debug)]
pub struct State {
    /// Per configured route, in config order.
    pub routes: Vec<RouteState>,
    /// Per device: `(boot, highest committed seq)`.
    pub devices: HashMap<String, (u32, u32)>,
    /// Route filter state.
    pub filter_state: Vec<StateUpdate>,
    /// This start's number (the boot id of events the gateway numbers itself).
    pub gateway_boot: u32,
    /// Where the event ids continue: above every id ever handed out.
    pub event_ids: super::ids::EventIds,
}

pub(super) fn classify(path: &Path, source: rusqlite::Error) -> StoreError {
    match source.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            StoreError::Corrupt { path: path.to_owned(), source }
        }
        _ => StoreError::Open { path: path.to_owned(), source },
    }
}

/// Refuses a journal written by a newer gateway (before anything is written to it).
pub fn check_version(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| classify(path, e))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::TooNew { path: path.to_owned(), found: version, known: SCHEMA_VERSION });
    }
    Ok(())
}

/// Creates what is missing and runs every migration (events, commands, read model, dead
/// letter publishers), then records [`SCHEMA_VERSION`]. Idempotent.
pub fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    conn.execute_batch(SCHEMA).map_err(|e| classify(path, e))?;
    migrate_commands(conn).map_err(|e| classify(path, e))?;
    migrate_read_model(conn).map_err(|e| classify(path, e))?;
    migrate_dead_letter_publisher(conn).map_err(|e| classify(path, e))?;
    conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}")).map_err(|e| classify(path, e))
}

/// The `routes` row of route `name` (made when missing: a route configured for the first
/// time, at start or by a reload), with its counters.
pub fn route_state(conn: &Connection, name: &str) -> Result<RouteState, rusqlite::Error> {
    conn.execute("INSERT INTO routes (name) VALUES (?1) ON CONFLICT(name) DO NOTHING", params![name])?;
    conn.query_row("SELECT id, depth, bytes, last_batch FROM routes WHERE name = ?1", params![name], |r| {
        Ok(RouteState {
            db_id: r.get(0)?,
            depth: r.get::<_, i64>(1)?.max(0) as u64,
            bytes: r.get::<_, i64>(2)?.max(0) as u64,
            last_batch: r.get::<_, i64>(3)?.max(0) as u64,
        })
    })
}

/// Reads what start-up needs (per-route counters, device marks, filter state, where the
/// event ids continue) and counts this start in `meta.gateway_boot`; never the queue itself.
pub fn read_state(conn: &Connection, path: &Path, route_names: &[String]) -> Result<State, StoreError> {
    let mut routes = Vec::with_capacity(route_names.len());
    for name in route_names {
        routes.push(route_state(conn, name).map_err(|e| classify(path, e))?);
    }
    let orphans: Vec<(String, i64)> = conn
        .prepare("SELECT name, depth FROM routes WHERE depth > 0")
        .and_then(|mut stmt| stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .map_err(|e| classify(path, e))?;
    for (name, depth) in orphans.iter().filter(|(name, _)| !route_names.contains(name)) {
        tracing::warn!(route = %name, depth, "a route no longer in the config still has events in the journal; they are kept (and count towards store.max_bytes) until the route is configured again");
    }

    let mut devices = HashMap::new();
    let mut stmt = conn.prepare("SELECT device, boot, seq FROM devices").map_err(|e| classify(path, e))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?, r.get::<_, u32>(2)?)))
        .map_err(|e| classify(path, e))?;
    for row in rows {
        let (device, boot, seq) = row.map_err(|e| classify(path, e))?;
        devices.insert(device, (boot, seq));
    }
    drop(stmt);
    let filter_state = conn
        .prepare("SELECT route, device, last_ms, state_values FROM filter_state")
        .and_then(|mut stmt| {
            stmt.query_map([], |r| {
                let values: String = r.get(3)?;
                Ok(StateUpdate {
                    route: r.get(0)?,
                    device: r.get(1)?,
                    state: DeviceState {
                        last_ms: r.get(2)?,
                        values: serde_json::from_str(&values).unwrap_or_default(),
                    },
                })
            })?
            .collect()
        })
        .map_err(|e| classify(path, e))?;
    let gateway_boot: i64 = conn
        .query_row(
            "INSERT INTO meta (key, value) VALUES ('gateway_boot', 1)
             ON CONFLICT(key) DO UPDATE SET value = value + 1 RETURNING value",
            [],
            |r| r.get(0),
        )
        .map_err(|e| classify(path, e))?;
    let gateway_boot = u32::try_from(gateway_boot).unwrap_or(u32::MAX);
    let event_ids = super::ids::EventIds::read(conn).map_err(|e| classify(path, e))?;
    Ok(State { routes, devices, filter_state, gateway_boot, event_ids })
}
