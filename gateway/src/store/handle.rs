//! The stages' handle on the journal: a channel to the writer thread, the per-route commit
//! counters the forwarder watches, and the bound on events waiting for the writer.
//! Invariant: every request goes through the one writer (see the `store` module essay);
//! nothing here touches the file.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, RwLock};

use tokio::sync::{oneshot, Notify};

use super::{
    dead_letters, forwarded, read_model, DeadLetterRow, DeviceDetail, Incoming, RouteIndex, RouteSpec, Row, SlotState,
    StoreError,
};

pub(super) enum Command {
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
    /// A route slot added or updated by a reload (docs/architecture.md, "Live reload").
    Route {
        spec: RouteSpec,
        active: bool,
        reply: oneshot::Sender<Result<SlotState, StoreError>>,
    },
    RemoteConfig {
        document: Option<crate::config::RemoteDocument>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Shutdown,
}

impl Command {
    /// Whether the writer must act on it before the commit window ends: a read or a request
    /// someone waits for, and events whose sender waits for their commit (`done`). Events
    /// without one, the cloud's acknowledgements and connection changes wait for the window.
    pub(super) fn urgent(&self) -> bool {
        match self {
            Command::Ingest(items) => items.iter().any(|item| match item {
                Incoming::Event(event) => event.done.is_some(),
                Incoming::DeadLetter(letter) => letter.done.is_some(),
            }),
            Command::Ack { .. } | Command::Connection { .. } | Command::Purge { reply: None, .. } => false,
            Command::Read { .. }
            | Command::DeadLetters { .. }
            | Command::Purge { .. }
            | Command::Devices { .. }
            | Command::Replay { .. }
            | Command::Route { .. }
            | Command::RemoteConfig { .. }
            | Command::Shutdown => true,
        }
    }
}

/// Per-route queue figures the forwarder decides from, kept by the writer: rows committed
/// since start (a counter that only grows, with a wake-up after each commit that added
/// rows) and rows waiting. The metrics gauges only report the same numbers.
///
/// Order: the writer stores a route's depth, then adds to its count (`Release`); a reader
/// that loads the count (`Acquire`) and then the depth sees a depth at least as new as the
/// count, so a commit in between is counted twice (harmless: a short read corrects it),
/// never missed.
#[derive(Debug)]
pub struct Queues {
    pub(super) counts: Vec<AtomicU64>,
    pub(super) depth: Vec<AtomicU64>,
    pub(super) notify: Notify,
}

/// Route slots a process can add by reloads beyond those configured at start (a slot is
/// never reused for another name: docs/architecture.md, "Live reload").
pub const SPARE_ROUTE_SLOTS: usize = 256;

impl Queues {
    /// Zeroed figures for `routes` route slots.
    pub(super) fn new(routes: usize) -> Queues {
        Queues {
            counts: (0..routes).map(|_| AtomicU64::new(0)).collect(),
            depth: (0..routes).map(|_| AtomicU64::new(0)).collect(),
            notify: Notify::new(),
        }
    }

    /// Rows committed to `route` since start.
    pub fn count(&self, route: RouteIndex) -> u64 {
        self.counts.get(route).map_or(0, |c| c.load(Ordering::Acquire))
    }

    /// Rows of `route` waiting in the journal (committed, not yet acknowledged), as of the
    /// writer's last commit or upkeep.
    pub fn depth(&self, route: RouteIndex) -> u64 {
        self.depth.get(route).map_or(0, |d| d.load(Ordering::Relaxed))
    }

    /// Resolves after the next commit that added rows.
    pub async fn changed(&self) {
        self.notify.notified().await
    }

    /// The writer: `route` now holds `depth` rows (before [`Queues::add_committed`]).
    pub(super) fn set_depth(&self, route: RouteIndex, depth: u64) {
        if let Some(d) = self.depth.get(route) {
            d.store(depth, Ordering::Relaxed);
        }
    }

    /// The writer: `rows` more rows were committed to `route`.
    pub(super) fn add_committed(&self, route: RouteIndex, rows: u64) {
        if let Some(c) = self.counts.get(route) {
            c.fetch_add(rows, Ordering::Release);
        }
    }

    /// The writer: wake the forwarder (one waiter: `notify_one` wakes it, or leaves a
    /// permit for its next wait, so a commit between two waits is never missed).
    pub(super) fn notify(&self) {
        self.notify.notify_one();
    }
}

/// Events handed to the writer that it has not taken out of its channel yet, and the bound
/// [`StoreHandle::ingest_bounded`] keeps them under. Invariant: a sender waits only while
/// the writer runs and something is queued (so one group larger than the bound still
/// passes, and nothing waits on a writer that has stopped).
#[derive(Debug)]
pub(super) struct Queued {
    pub(super) state: Mutex<QueuedState>,
    pub(super) taken: Condvar,
    pub(super) limit: usize,
    /// The writer thread, which sleeps through an open commit window unless woken
    /// (`writer/window.rs`): set by the writer itself before its first wait.
    pub(super) writer: std::sync::OnceLock<std::thread::Thread>,
    /// Events queued from which the writer is woken to commit a full group
    /// (`store.commit_max_events`).
    pub(super) wake_at: usize,
    /// When the writer's open commit window ends: nanoseconds after `base`, plus one (0: no
    /// window open). Read by the device ingest thread ([`StoreHandle::window_due`]).
    window: AtomicU64,
    base: std::time::Instant,
}

#[derive(Debug, Default)]
pub(super) struct QueuedState {
    pub(super) events: usize,
    closed: bool,
}

impl Queued {
    /// A bound of `limit` events, the writer woken when `wake_at` wait.
    pub(super) fn new(limit: usize, wake_at: usize) -> Queued {
        Queued {
            state: Mutex::default(),
            taken: Condvar::new(),
            limit,
            writer: std::sync::OnceLock::new(),
            wake_at: wake_at.max(1),
            window: AtomicU64::new(0),
            base: std::time::Instant::now(),
        }
    }

    /// The writer: its commit window ends at `due` (None: no window open).
    pub(super) fn set_window(&self, due: Option<std::time::Instant>) {
        let nanos = due.map_or(0, |due| due.saturating_duration_since(self.base).as_nanos() as u64 + 1);
        self.window.store(nanos, Ordering::Release);
    }

    fn window_due(&self) -> Option<std::time::Instant> {
        match self.window.load(Ordering::Acquire) {
            0 => None,
            nanos => Some(self.base + std::time::Duration::from_nanos(nanos - 1)),
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, QueuedState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts `n` events in, first waiting for room when `wait`; wakes the writer when a
    /// full group waits, or before this sender waits.
    pub(super) fn add(&self, n: usize, wait: bool) {
        let mut state = self.lock();
        while wait && !state.closed && state.events > 0 && state.events + n > self.limit {
            self.wake_writer();
            state = self.taken.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        state.events += n;
        if state.events >= self.wake_at {
            self.wake_writer();
        }
    }

    /// Ends the writer's sleep through a commit window (a no-op before it first waits).
    pub(super) fn wake_writer(&self) {
        if let Some(writer) = self.writer.get() {
            writer.unpark();
        }
    }

    /// The writer took `n` events out of the channel.
    pub(super) fn take(&self, n: usize) {
        let mut state = self.lock();
        state.events = state.events.saturating_sub(n);
        drop(state);
        self.taken.notify_all();
    }

    /// The writer stopped: nobody waits any more.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.taken.notify_all();
    }
}

/// Closes [`Queued`] when the writer thread ends, even by a panic.
pub(super) struct CloseOnDrop(pub(super) Arc<Queued>);

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
    pub(super) tx: mpsc::Sender<Command>,
    pub(super) committed: Arc<Queues>,
    pub(super) queued: Arc<Queued>,
    /// Route names by slot: config order at start, then the routes reloads added
    /// (index = [`RouteIndex`]). Appended by the writer only.
    pub(super) routes: Arc<RwLock<Vec<String>>>,
}

impl StoreHandle {
    /// Sends `command` to the writer, waking it from a commit window when the command
    /// cannot wait for the window's end ([`Command::urgent`]).
    pub(super) fn send(&self, command: Command) -> Result<(), StoreError> {
        let urgent = command.urgent();
        self.tx.send(command).map_err(|_| StoreError::Closed)?;
        if urgent {
            self.queued.wake_writer();
        }
        Ok(())
    }

    /// Hands events and dead letters to the writer (committed in the next group).
    pub fn ingest(&self, items: Vec<Incoming>) -> Result<(), StoreError> {
        self.queued.add(items.len(), false);
        self.send(Command::Ingest(items))
    }

    /// [`StoreHandle::ingest`], but first waits while the writer has more than
    /// [`INGEST_QUEUE_EVENTS`] events it has not taken yet (blocking: for a thread of its
    /// own, never an async task).
    pub fn ingest_bounded(&self, items: Vec<Incoming>) -> Result<(), StoreError> {
        self.queued.add(items.len(), true);
        self.send(Command::Ingest(items))
    }

    /// When the writer's open commit window ends (None: none is open): events handed over
    /// before then join its commit; a source may hold its own until shortly before
    /// (`devices::arrivals`).
    pub fn window_due(&self) -> Option<std::time::Instant> {
        self.queued.window_due()
    }

    /// Up to `limit` rows of `route` with ids above `after`, oldest first.
    pub async fn read(&self, route: RouteIndex, after: i64, limit: usize) -> Result<Vec<Row>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Read { route, after, limit, reply })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// The cloud acknowledged batch `batch` of `route`, rows `first..=last`: delete them.
    pub fn ack(&self, route: RouteIndex, first: i64, last: i64, batch: u64) -> Result<(), StoreError> {
        self.send(Command::Ack { route, first, last, batch })
    }

    /// Reads dead letters.
    pub async fn dead_letters(&self, query: dead_letters::Query) -> Result<Vec<DeadLetterRow>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::DeadLetters { query, reply })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Deletes dead letters; returns how many.
    pub async fn purge_dead_letters(&self, purge: dead_letters::Purge) -> Result<u64, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Purge { purge, reply: Some(reply) })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Deletes dead letters without waiting (a replay's `done`, run on the writer thread).
    pub fn forget_dead_letters(&self, ids: Vec<i64>) {
        let _ = self.send(Command::Purge { purge: dead_letters::Purge::Ids(ids), reply: None });
    }

    /// The read model: every device (with its latest readings when asked), or one.
    pub async fn devices(&self, query: read_model::Query) -> Result<Vec<DeviceDetail>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Devices { query, reply })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// The hook for the device side: `device` connected (`true`) or disconnected at `at_ms`.
    /// Recorded in the read model's `connected` column with the next commit group; until a
    /// device side calls it, `connected` stays unknown (NULL).
    pub fn device_connection(&self, device: &str, connected: bool, at_ms: i64) {
        let _ = self.send(Command::Connection { device: device.to_owned(), connected, at_ms });
    }

    /// Queues again, marked as replays, the kept forwarded events of `route` received in
    /// `[since_ms, until_ms)` (see [`forwarded`]); how many. Runs in steps, so commits go on.
    pub async fn replay(&self, route: RouteIndex, since_ms: i64, until_ms: i64) -> Result<u64, StoreError> {
        let mut after = 0;
        let mut total = 0;
        loop {
            let (reply, rx) = oneshot::channel();
            self.send(Command::Replay { route, since_ms, until_ms, after, reply })?;
            let step = rx.await.map_err(|_| StoreError::Closed)??;
            total += step.rows.max(0) as u64;
            match step.next {
                Some(next) => after = next,
                None => return Ok(total),
            }
        }
    }

    /// The index of the route called `name`, as the journal knows the routes.
    pub fn route(&self, name: &str) -> Option<RouteIndex> {
        self.route_names().iter().position(|r| r == name)
    }

    /// The route names by slot (index = [`RouteIndex`]): config order, then the routes
    /// reloads added (a removed route keeps its slot).
    pub fn route_names(&self) -> Vec<String> {
        self.routes.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The slot of route `spec.name`, added (its `routes` row made, by the writer) when the
    /// journal has none yet in this process; `active` false marks a removed route, whose
    /// rows are kept and no longer expire. Answered at once, not after the commit window.
    pub async fn route_slot(&self, spec: RouteSpec, active: bool) -> Result<SlotState, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Route { spec, active, reply })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// The per-route queue figures: rows committed since start, rows waiting.
    pub fn committed(&self) -> &Arc<Queues> {
        &self.committed
    }

    /// Asks the writer to commit what it has and stop; join its thread to wait.
    pub fn shutdown(&self) {
        let _ = self.send(Command::Shutdown);
    }
}
