//! The journal: every accepted event, durably, until the cloud has acknowledged it.
//!
//! # Design
//!
//! One SQLite file (`{data_dir}/journal.db`) in WAL mode, owned by one thread (the
//! *writer*, [`writer`]). Every other stage talks to it through a [`StoreHandle`]: ingest
//! sends events, the forwarder reads batches and acknowledges them. One owner means no
//! lock contention, no `SQLITE_BUSY`, and one place where the invariants hold:
//!
//! 1. **Committed means durable.** An event counts as committed (device ack published,
//!    external broker acked, forwarder told) only after the transaction that inserted it
//!    committed. With `synchronous = FULL` (the default) that survives a power cut; with
//!    `NORMAL` it survives `kill -9`, and a power cut may lose the last ~second.
//! 2. **Deleted only when acknowledged.** A row leaves `events` only when (a) the cloud sent
//!    the PUBACK of the publish that carried it ([`StoreHandle::ack`]), or (b) a configured
//!    bound dropped it (`max_bytes` with `drop_oldest`, `max_age`), counted by reason.
//! 3. **Order.** `events.id` is `AUTOINCREMENT`: ids only grow, never reused, even when the
//!    table empties. A route's queue is its rows in id order; a batch is a contiguous id range
//!    of one route, so a crash can never lose half a batch.
//! 4. **Bounded memory, fast start.** Queue depth and bytes per route are counters kept in
//!    the `routes` table, updated in the same transaction as the rows; start-up reads those
//!    counters and the per-device high-water marks, never the queue itself.
//!
//! # Group commit
//!
//! The writer takes everything waiting in its channel (up to `store.commit_max_events`
//! events) into one transaction. Under no load that is one event and no added latency;
//! under load the next group forms while the previous commit is being synced.
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
//!   deletes the oldest rows and tries again; when that cannot make room (on a really full
//!   file system SQLite cannot record a deletion either), or with `reject_new`, the group is
//!   committed without its events, which are counted as dropped (`full`). Acknowledgements
//!   that could not be written are retried with the next group. While the disk stays full,
//!   events are tried once a second (no busy retrying); `edge_gateway_store_disk_full` and
//!   `/api/status` say so until events fit again.
//! - **Damaged file** (`SQLITE_CORRUPT`, `SQLITE_NOTADB`, at open or on any later
//!   statement): never worked around. The process stops with exit code 1 and leaves
//!   `journal.db.damaged` beside the file, so that later starts refuse it at once
//!   ([`StoreError::Damaged`]); nothing is deleted or rewritten (docs/operations.md has the
//!   recovery). A torn WAL tail is SQLite's own recovery: the torn transaction is discarded.
//!
//! # Read model and replay
//!
//! The writer also keeps, in the same transactions, the read model of [`read_model`] (latest
//! reading per device and name, per-device last seen / counts / connection state), and, with
//! `store.keep_forwarded`, the acknowledged events of [`forwarded`] that a replay can queue
//! again. Neither is read at start-up.

pub mod dead_letters;
pub mod forwarded;
pub mod read_model;
mod schema;
mod skim;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use tokio::sync::{oneshot, Notify};

pub use dead_letters::DeadLetterRow;
pub use read_model::{DeviceDetail, DeviceSummary, LatestReading};
pub(crate) use schema::migrate_commands;

use crate::config::StoreConfig;
use crate::filters::StateUpdate;
use crate::metrics::Metrics;

/// Index of a route in the config's `[[routes]]` list.
pub type RouteIndex = usize;

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
        "another edge-gateway is running on {path} (it holds {path}/journal.lock): stop it, or give this \
         one its own [gateway].data_dir"
    )]
    Locked {
        /// The data folder.
        path: PathBuf,
    },
    /// An earlier run found the journal damaged while running (it left `journal.db.damaged`
    /// beside it). Nothing was changed since.
    #[error(
        "the journal {path} is damaged ({reason}; found by an earlier run, see {marker}). Nothing \
         was changed. Stop the gateway, move journal.db, its -wal/-shm files and {marker} aside \
         to keep the data for recovery (docs/operations.md, \"The journal is damaged\": `sqlite3 \
         .dump` saves the readable rows), then start again with an empty journal"
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

enum Command {
    Ingest(Vec<Incoming>),
    Read {
        route: RouteIndex,
        after: i64,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<Row>, StoreError>>,
    },
    Ack {
        route: RouteIndex,
        first: i64,
        last: i64,
        batch: u64,
    },
    DeadLetters {
        query: dead_letters::Query,
        reply: oneshot::Sender<Result<Vec<DeadLetterRow>, StoreError>>,
    },
    Purge {
        purge: dead_letters::Purge,
        reply: Option<oneshot::Sender<Result<u64, StoreError>>>,
    },
    Devices {
        query: read_model::Query,
        reply: oneshot::Sender<Result<Vec<DeviceDetail>, StoreError>>,
    },
    Connection {
        device: String,
        connected: bool,
        at_ms: i64,
    },
    Replay {
        route: RouteIndex,
        since_ms: i64,
        until_ms: i64,
        after: i64,
        reply: oneshot::Sender<Result<forwarded::Step, StoreError>>,
    },
    Shutdown,
}

/// Per-route counters the forwarder watches: rows committed since start.
#[derive(Debug)]
pub struct Committed {
    counts: Vec<AtomicU64>,
    notify: Notify,
}

impl Committed {
    /// Rows committed to `route` since start.
    pub fn count(&self, route: RouteIndex) -> u64 {
        self.counts.get(route).map_or(0, |c| c.load(Ordering::Acquire))
    }

    /// Resolves after the next commit that added rows.
    pub async fn changed(&self) {
        self.notify.notified().await
    }
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

/// Events handed to the writer that it has not taken out of its channel yet, and the bound
/// [`StoreHandle::ingest_bounded`] keeps them under. Invariant: a sender waits only while
/// the writer runs and something is queued (so one group larger than the bound still
/// passes, and nothing waits on a writer that has stopped).
#[derive(Debug)]
struct Queued {
    state: Mutex<QueuedState>,
    taken: Condvar,
    limit: usize,
}

#[derive(Debug, Default)]
struct QueuedState {
    events: usize,
    closed: bool,
}

impl Queued {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueuedState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts `n` events in, first waiting for room when `wait`.
    fn add(&self, n: usize, wait: bool) {
        let mut state = self.lock();
        while wait && !state.closed && state.events > 0 && state.events + n > self.limit {
            state = self.taken.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        state.events += n;
    }

    /// The writer took `n` events out of the channel.
    fn take(&self, n: usize) {
        let mut state = self.lock();
        state.events = state.events.saturating_sub(n);
        drop(state);
        self.taken.notify_all();
    }

    /// The writer stopped: nobody waits any more.
    fn close(&self) {
        self.lock().closed = true;
        self.taken.notify_all();
    }
}

/// Closes [`Queued`] when the writer thread ends, even by a panic.
struct CloseOnDrop(Arc<Queued>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Most events waiting in the writer's channel before [`StoreHandle::ingest_bounded`]
/// waits: 32 of ingest's 256-event groups, ~2 MiB (an item costs ~250 B of heap). A
/// group commit takes at most `store.commit_max_events` of them at a time.
pub const INGEST_QUEUE_EVENTS: usize = 8_192;

/// The other stages' handle on the journal. Cheap to clone.
#[derive(Clone)]
pub struct StoreHandle {
    tx: mpsc::Sender<Command>,
    committed: Arc<Committed>,
    queued: Arc<Queued>,
}

impl StoreHandle {
    /// Hands events and dead letters to the writer (committed in the next group).
    pub fn ingest(&self, items: Vec<Incoming>) -> Result<(), StoreError> {
        self.queued.add(items.len(), false);
        self.tx.send(Command::Ingest(items)).map_err(|_| StoreError::Closed)
    }

    /// [`StoreHandle::ingest`], but first waits while the writer has more than
    /// [`INGEST_QUEUE_EVENTS`] events it has not taken yet (blocking: for a thread of its
    /// own, never an async task).
    pub fn ingest_bounded(&self, items: Vec<Incoming>) -> Result<(), StoreError> {
        self.queued.add(items.len(), true);
        self.tx.send(Command::Ingest(items)).map_err(|_| StoreError::Closed)
    }

    /// Up to `limit` rows of `route` with ids above `after`, oldest first.
    pub async fn read(&self, route: RouteIndex, after: i64, limit: usize) -> Result<Vec<Row>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Read { route, after, limit, reply }).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// The cloud acknowledged batch `batch` of `route`, rows `first..=last`: delete them.
    pub fn ack(&self, route: RouteIndex, first: i64, last: i64, batch: u64) -> Result<(), StoreError> {
        self.tx.send(Command::Ack { route, first, last, batch }).map_err(|_| StoreError::Closed)
    }

    /// Reads dead letters.
    pub async fn dead_letters(&self, query: dead_letters::Query) -> Result<Vec<DeadLetterRow>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::DeadLetters { query, reply }).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Deletes dead letters; returns how many.
    pub async fn purge_dead_letters(&self, purge: dead_letters::Purge) -> Result<u64, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Purge { purge, reply: Some(reply) }).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Deletes dead letters without waiting (a replay's `done`, run on the writer thread).
    pub fn forget_dead_letters(&self, ids: Vec<i64>) {
        let _ = self.tx.send(Command::Purge { purge: dead_letters::Purge::Ids(ids), reply: None });
    }

    /// The read model: every device (with its latest readings when asked), or one.
    pub async fn devices(&self, query: read_model::Query) -> Result<Vec<DeviceDetail>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Devices { query, reply }).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// The hook for the device side: `device` connected (`true`) or disconnected at `at_ms`.
    /// Recorded in the read model's `connected` column with the next commit group; until a
    /// device side calls it, `connected` stays unknown (NULL).
    pub fn device_connection(&self, device: &str, connected: bool, at_ms: i64) {
        let _ = self.tx.send(Command::Connection { device: device.to_owned(), connected, at_ms });
    }

    /// Queues again, marked as replays, the kept forwarded events of `route` received in
    /// `[since_ms, until_ms)` (see [`forwarded`]); how many. Runs in steps, so commits go on.
    pub async fn replay(&self, route: RouteIndex, since_ms: i64, until_ms: i64) -> Result<u64, StoreError> {
        let mut after = 0;
        let mut total = 0;
        loop {
            let (reply, rx) = oneshot::channel();
            self.tx
                .send(Command::Replay { route, since_ms, until_ms, after, reply })
                .map_err(|_| StoreError::Closed)?;
            let step = rx.await.map_err(|_| StoreError::Closed)??;
            total += step.rows.max(0) as u64;
            match step.next {
                Some(next) => after = next,
                None => return Ok(total),
            }
        }
    }

    /// The per-route commit counters.
    pub fn committed(&self) -> &Arc<Committed> {
        &self.committed
    }

    /// Asks the writer to commit what it has and stop; join its thread to wait.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown);
    }
}

/// Opens (or creates) the journal under `data_dir` and starts its writer thread.
/// `acks` receives, after every commit, the new high-water mark of each device in it.
pub fn open(
    data_dir: &Path,
    config: &StoreConfig,
    routes: &[RouteSpec],
    metrics: Arc<Metrics>,
    acks: Option<mpsc::Sender<Vec<DeviceAck>>>,
) -> Result<(StoreHandle, Opened, JoinHandle<()>), StoreError> {
    open_with(data_dir, config, routes, metrics, acks, true)
}

/// [`open`], with the read model on or off (off only to measure what it costs).
pub(crate) fn open_with(
    data_dir: &Path,
    config: &StoreConfig,
    routes: &[RouteSpec],
    metrics: Arc<Metrics>,
    acks: Option<mpsc::Sender<Vec<DeviceAck>>>,
    read_model: bool,
) -> Result<(StoreHandle, Opened, JoinHandle<()>), StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir { path: data_dir.to_owned(), source })?;
    let lock = lock_data_dir(data_dir)?;
    let path = data_dir.join("journal.db");
    let marker = damaged_marker(&path);
    if let Ok(reason) = std::fs::read_to_string(&marker) {
        return Err(StoreError::Damaged { path, marker, reason: reason.trim().to_owned() });
    }
    let route_names: Vec<String> = routes.iter().map(|r| r.name.clone()).collect();
    let route_max_age = routes.iter().map(|r| r.max_age).collect();
    let (conn, mut state) = schema::open(&path, config, &route_names)?;
    let committed =
        Arc::new(Committed { counts: route_names.iter().map(|_| AtomicU64::new(0)).collect(), notify: Notify::new() });
    let opened = Opened {
        depth: state.routes.iter().map(|r| r.depth).collect(),
        last_batch: state.routes.iter().map(|r| r.last_batch).collect(),
        filter_state: std::mem::take(&mut state.filter_state),
        gateway_boot: state.gateway_boot,
    };
    let (tx, rx) = mpsc::channel();
    let queued = Arc::new(Queued { state: Mutex::default(), taken: Condvar::new(), limit: INGEST_QUEUE_EVENTS });
    let mut writer = writer::Writer::new(conn, config.clone(), route_max_age, state, metrics, committed.clone(), acks);
    writer.read_model = read_model;
    let taken = queued.clone();
    let thread = std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            let _close = CloseOnDrop(taken.clone());
            writer.run(rx, |n| taken.take(n));
            // The lock is released when the writer has committed its last group and closed.
            drop(lock);
        })
        .map_err(|source| StoreError::DataDir { path: data_dir.to_owned(), source })?;
    Ok((StoreHandle { tx, committed, queued }, opened, thread))
}

/// Takes the data folder's lock (`journal.lock`, an advisory `flock` the kernel drops when
/// the process dies, so a `kill -9` never leaves it stale): two gateways on one journal
/// would each believe they own the queue and forward every event twice.
fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File, StoreError> {
    let path = data_dir.join("journal.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StoreError::DataDir { path: path.clone(), source })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked { path: data_dir.to_owned() }),
        Err(std::fs::TryLockError::Error(source)) => Err(StoreError::DataDir { path, source }),
    }
}

/// The file a run leaves beside a journal it found damaged (`journal.db.damaged`), so that
/// the next start refuses it instead of running until the damaged page is read again.
pub fn damaged_marker(journal: &Path) -> PathBuf {
    let mut name = journal.as_os_str().to_owned();
    name.push(".damaged");
    PathBuf::from(name)
}

/// Milliseconds since the Unix epoch, by the gateway's clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod read_tests;
#[cfg(test)]
mod tests;
