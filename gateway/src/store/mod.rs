//! The journal: every accepted event, durably, until the cloud has acknowledged it.
//!
//! # Design
//!
//! One SQLite file in `[gateway].data_dir`, in WAL mode. [`Journal`] owns the file: its
//! name, the data folder's lock, the pragmas, every migration and every connection. Events
//! are written by one thread (the *writer*, `store/writer.rs`); every other stage talks to it
//! through a [`StoreHandle`]: ingest sends events, the forwarder reads batches and
//! acknowledges them. One owner means no lock contention on the event path, and one place
//! where the invariants hold:
//!
//! 1. **Committed means durable.** An event counts as committed (device ack published,
//!    external broker acked, forwarder told) only after the transaction that inserted it
//!    committed. With `synchronous = FULL` (the default) that survives a power cut; with
//!    `NORMAL` it survives `kill -9`, and a power cut may lose the last ~second.
//! 2. **Deleted only when acknowledged.** A row leaves `events` only when (a) the cloud sent
//!    the PUBACK of the publish that carried it ([`StoreHandle::ack`]), or (b) a configured
//!    bound dropped it (`max_bytes` with `drop_oldest`, `max_age`), counted by reason.
//! 3. **Order.** `events.id` only grows and is never reused: not when the table empties,
//!    not across a restart or a crash, not by a replay. The writer numbers the rows itself,
//!    and every committed id is at most the reservation `meta.events_id_reserved`, raised a
//!    block at a time in the transaction that passes it (`store/ids.rs`; a journal made
//!    before keeps its `AUTOINCREMENT` table and is numbered the same way). Ids may skip
//!    (after a restart), never repeat. A route's queue is its rows in id order; a batch is a
//!    contiguous id range of one route, so a crash can never lose half a batch.
//! 4. **Bounded memory, fast start.** Queue depth and bytes per route are counters kept in
//!    the `routes` table, updated in the same transaction as the rows; start-up reads those
//!    counters and the per-device high-water marks, never the queue itself.
//!
//! # Group commit
//!
//! The writer takes everything waiting in its channel (up to `store.commit_max_events`
//! events) into one transaction, and holds a group's first write for up to
//! `store.commit_window` for more to join it (`writer/window.rs`; docs/architecture.md,
//! "The commit window"): at a modest load one commit, one fsync and a dozen pages serve
//! tens of events and the deletes of the cloud's acknowledgements; under load the group
//! fills at once and the next forms while the previous commit is being synced.
//! After each commit the writer publishes, per route, the rows waiting and then the rows
//! committed ([`Queues`], on the handle): that is what the forwarder decides from. The
//! store's metrics ([`metrics`]) report the same numbers and are never read to decide.
//! The embedded device side hands events over with [`StoreHandle::ingest_bounded`]: at most
//! [`INGEST_QUEUE_EVENTS`] wait in the channel (a group larger than that still passes when
//! the channel is empty); past that, its thread waits for the writer to take some.
//!
//! # Duplicates
//!
//! `devices` holds, per device, the highest committed `(boot, seq)`. Within a boot, seqs
//! must grow: an event whose seq is not above the mark of its boot is a duplicate (a
//! retransmit) and is dropped, counted as `duplicate`. A different boot id starts a new
//! mark. The mark is what `devices/{device}/ack` publishes.
//!
//! # Failures
//!
//! - **Full disk** (`SQLITE_FULL`): nothing committed is touched (the failed transaction is
//!   rolled back). The writer keeps the group and applies `store.when_full`: `drop_oldest`
//!   deletes the oldest rows and tries again whole. When that cannot make room (on a really
//!   full file system SQLite cannot record a deletion either), or with `reject_new`, the
//!   group is stored *as far as it fits*, oldest first: its first half is tried, then half
//!   of that, each part that commits is kept, down to a single event that does not fit;
//!   the rest is committed without its events, which are counted as dropped (`full`).
//!   So what a device keeps is its events up to the one where the disk filled, one run
//!   without holes, however large the group was (a group grows with load, to about
//!   `store.commit_max_events`: refusing it whole used to leave room that later events
//!   took, after refused ones — holes whose number grew with machine load).
//!   Acknowledgements that could not be written are retried with the next group.
//! - **While the disk stays full**, events are refused without touching the disk, except
//!   that once a second the waiting group is tried as a *probe*, whole or not at all (a
//!   probe needs at least the room of one event, which the last refused one did not find;
//!   so while nothing frees space, no probe stores anything). A probe that commits ends the
//!   full state (`journal: space is available again` in the log): from then on events are
//!   stored as they fit again, and a device's events refused in between stay a counted
//!   hole before them (docs/operations.md, "The disk is full").
//!   `edge_gateway_store_disk_full` and `/api/status` say "full" from
//!   the first failed commit until a probe commits.
//! - **Damaged file** (`SQLITE_CORRUPT`, `SQLITE_NOTADB`, at open or on any later
//!   statement): never worked around. The process stops with exit code 1 and leaves a
//!   `.damaged` marker beside the file ([`damaged_marker`]), so that later starts refuse it at once
//!   ([`StoreError::Damaged`]); nothing is deleted or rewritten (docs/operations.md has the
//!   recovery). A torn WAL tail is SQLite's own recovery: the torn transaction is discarded.
//!
//! # Read model and replay
//!
//! The writer also keeps, in the same transactions, the read model of [`read_model`] (latest
//! reading per device and name, per-device last seen / counts / connection state), and, with
//! `store.keep_forwarded`, the acknowledged events of [`forwarded`] that a replay can queue
//! again. Neither is read at start-up.
//!
//! # The commands connection: the one deliberate second writer
//!
//! The downlink keeps cloud-to-device commands in the same file (`commands`,
//! `command_status`, made by `store/schema.rs` with everything else) through a connection of its
//! own ([`Journal::commands_connection`]), not through the writer. That is a deliberate
//! exception, kept because routing its dozen small transactions (accept, reply, expire,
//! outbox) through the writer's channel would add a request/reply type per statement for
//! traffic a thousand times smaller than events. It is safe because:
//! - it touches only its own two tables, which no other code reads or writes, so the
//!   writer's invariants (queue order, counters, marks, read model) cannot be broken by it;
//! - both connections take SQLite's write lock with `BEGIN IMMEDIATE` and a busy timeout
//!   (writer 5 s, commands 10 s), so each waits for the other's short transaction instead
//!   of failing: the writer can meet `SQLITE_BUSY` only if a command transaction held the
//!   lock for 5 s, which a few-row transaction does not;
//! - checkpoints stay the writer's: the commands connection never checkpoints, and a
//!   checkpoint that overlaps a command transaction only stops early (SQLite's own rule;
//!   the next one finishes it), so WAL growth stays bounded by `journal_size_limit`;
//! - it is handed out only while this process's writer runs, i.e. holds the data folder's
//!   lock, and the downlink is stopped before the writer.

pub mod dead_letters;
pub mod forwarded;
mod handle;
mod ids;
mod journal;
pub mod metrics;
pub mod read_model;
pub mod remote_config;
mod schema;
mod skim;
mod writer;

use std::path::PathBuf;

pub use dead_letters::DeadLetterRow;
pub use handle::{Queues, StoreHandle, INGEST_QUEUE_EVENTS, SPARE_ROUTE_SLOTS};
pub use journal::{damaged_marker, start, Journal, OfflineConnection, Store, WriterGuard, FILE_NAME};
pub use metrics::{StoreMeters, StoreMetrics};
pub use read_model::{DeviceDetail, DeviceSummary, LatestReading};

use crate::config::Config;
use crate::filters::StateUpdate;

/// A route's slot: its index in the config's `[[routes]]` list at start; a route a reload
/// adds gets the next free slot. Stable for the life of the process (docs/architecture.md,
/// "Live reload").
pub type RouteIndex = usize;

/// A route slot as the writer holds it ([`StoreHandle::route_slot`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotState {
    /// The slot.
    pub slot: RouteIndex,
    /// Rows waiting (kept from earlier runs or from before a removal).
    pub depth: u64,
    /// Last batch number the cloud acknowledged.
    pub last_batch: u64,
}

/// Called once the event (or dead letter) it came with is committed or deliberately
/// dropped: the external-broker mode acknowledges the device's publish here.
pub type Done = Box<dyn FnOnce() + Send>;

/// A decoded, validated event on its way into the journal.
pub struct NewEvent {
    /// Device id.
    pub device: String,
    /// Boot id.
    pub boot: u32,
    /// Sequence number within the boot.
    pub seq: u32,
    /// Routes that take it (one row each; empty when every route's filter dropped it —
    /// its device mark still moves, so the device is not left waiting for an ack).
    pub routes: Vec<RouteIndex>,
    /// The event, postcard-encoded (`edge_event::encode`).
    pub payload: Vec<u8>,
    /// Gateway receive time, ms since the Unix epoch.
    pub received_ms: i64,
    /// Run after commit.
    pub done: Option<Done>,
    /// Route filter state changed by this event, committed with it.
    pub filter_state: Vec<StateUpdate>,
    /// A `keep_last` event forwarded after it was first filtered: its device mark moved
    /// then, so it is not a duplicate now.
    pub held: bool,
}

/// A payload that could not be accepted, kept with its reason.
pub struct DeadLetter {
    /// Device-side topic.
    pub topic: String,
    /// The raw bytes as received.
    pub payload: Vec<u8>,
    /// Why it was refused (a full sentence).
    pub reason: String,
    /// Gateway receive time, ms since the Unix epoch.
    pub received_ms: i64,
    /// The device that published it, when the gate knows (a publish it refused): a replay
    /// applies that device's rights again (`crate::pipeline::Replay`).
    pub publisher: Option<String>,
    /// Run after commit.
    pub done: Option<Done>,
}

/// What ingest hands the store.
pub enum Incoming {
    /// An accepted event.
    Event(NewEvent),
    /// A refused payload.
    DeadLetter(DeadLetter),
}

/// One queued row of a route.
#[derive(Debug, Clone)]
pub struct Row {
    /// Journal id (grows with commit order).
    pub id: i64,
    /// Gateway receive time, ms since the Unix epoch.
    pub received_ms: i64,
    /// The postcard-encoded event.
    pub payload: Vec<u8>,
    /// A copy queued again by a replay (its batch is marked as one).
    pub replay: bool,
}

/// The highest committed `(boot, seq)` of a device: what `devices/{device}/ack` carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAck {
    /// Device id.
    pub device: String,
    /// Boot id.
    pub boot: u32,
    /// Highest committed seq of that boot.
    pub seq: u32,
}

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data folder or file could not be created or opened.
    #[error("cannot open the journal {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: rusqlite::Error,
    },
    /// The data folder could not be created.
    #[error("cannot create the data folder {path}: {source}")]
    DataDir {
        /// The folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a journal or is damaged. It is never deleted automatically.
    #[error(
        "the journal {path} is damaged or not an edge-gateway journal ({source}). Nothing was \
         changed. Stop the gateway, move the file (and its -wal/-shm files) aside to keep the data \
         for recovery (docs/operations.md, \"The journal is damaged\": `sqlite3 .dump` saves the \
         readable rows), then start again with an empty journal"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// Another gateway process has the data folder.
    #[error(
        "another edge-gateway is running on {path} (it holds {lock}): stop it, or give this one its own \
         [gateway].data_dir"
    )]
    Locked {
        /// The data folder.
        path: PathBuf,
        /// Its lock file.
        lock: PathBuf,
    },
    /// An earlier run found the journal damaged while running (it left its
    /// [`damaged_marker`] beside it). Nothing was changed since.
    #[error(
        "the journal {path} is damaged ({reason}; found by an earlier run, see {marker}). Nothing \
         was changed. Stop the gateway, move {file}, its -wal/-shm files and {marker} aside \
         to keep the data for recovery (docs/operations.md, \"The journal is damaged\": `sqlite3 \
         .dump` saves the readable rows), then start again with an empty journal",
        file = path.file_name().unwrap_or_default().to_string_lossy()
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// The marker file the earlier run wrote.
        marker: PathBuf,
        /// What SQLite said then.
        reason: String,
    },
    /// The journal was written by a newer gateway.
    #[error("the journal {path} has schema version {found}; this gateway knows up to {known}: upgrade the gateway")]
    TooNew {
        /// The file.
        path: PathBuf,
        /// Version in the file.
        found: i64,
        /// Newest version this build knows.
        known: i64,
    },
    /// A statement failed while running.
    #[error("journal error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The writer thread has stopped.
    #[error("the journal writer has stopped")]
    Closed,
    /// The transaction that carried a request did not commit.
    #[error("the journal commit failed: {0}")]
    Failed(String),
}

/// What the journal needs to know of a configured route.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    /// Route name (its queue is kept under it).
    pub name: String,
    /// Its own `max_age`, overriding `store.max_age`.
    pub max_age: Option<std::time::Duration>,
}

/// What the journal held at start-up.
#[derive(Debug, Clone)]
pub struct Opened {
    /// Rows waiting per route (config order).
    pub depth: Vec<u64>,
    /// Last batch number acknowledged per route.
    pub last_batch: Vec<u64>,
    /// Route filter state per (route, device).
    pub filter_state: Vec<StateUpdate>,
    /// This start's number, counted in the journal: the boot id the gateway gives events
    /// it numbers itself (`input = "json-fields"`).
    pub gateway_boot: u32,
}

impl RouteSpec {
    /// The specs of `config`'s `[[routes]]`, in config order.
    pub fn of(config: &Config) -> Vec<RouteSpec> {
        config.routes.iter().map(|r| RouteSpec { name: r.name.clone(), max_age: r.max_age }).collect()
    }
}

/// Milliseconds since the Unix epoch, by the gateway's clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod id_tests;
#[cfg(test)]
mod read_tests;
#[cfg(test)]
pub(crate) mod test_config;
#[cfg(test)]
mod tests;
