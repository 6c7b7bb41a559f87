//! The writer thread: the only owner of the journal's event connection. See the module
//! essay in `store/mod.rs` for the invariants; this file keeps them. The rows one group
//! writes are in [`rows`], the loop and its commit window in [`window`], retention in [`retention`], what a failed commit does (full
//! disk, damaged file) in [`failures`]. After each commit it publishes the queue figures
//! the forwarder decides from ([`super::Queues`]) and, separately, the store's metrics.

mod failures;
mod retention;
mod routes;
mod rows;
mod window;

use failures::{is_disk_full, Attempt, DISK_FULL_PROBE_EVERY};

use std::collections::HashMap;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tracing::info;

use super::schema::{RouteState, State};
use tokio::sync::oneshot;

use super::handle::{Command, Queues};
use super::metrics::StoreMeters;
use super::{DeviceAck, Done, Incoming, Journal, StoreError};
use crate::config::{StoreConfig, WhenFull};
use crate::meter::DropReason;

/// How often retention, vacuum and the oldest-age gauges run while the journal is written.
const MAINTENANCE_EVERY: Duration = Duration::from_millis(500);
/// How often they run when nothing was written since the last pass (an idle gateway: its
/// CPU at rest is mostly this pass; docs/operations.md, "Sizing").
const MAINTENANCE_IDLE_EVERY: Duration = Duration::from_secs(5);
/// Rows deleted per retention statement (keeps each transaction short).
const RETENTION_CHUNK: i64 = 20_000;

/// What the writer is opened with, besides its connection and the shared parts.
pub struct Parts {
    /// The file it writes (for the damaged marker).
    pub journal: Journal,
    /// `[store]`.
    pub config: StoreConfig,
    /// Per route (config order): its own `max_age`.
    pub route_max_age: Vec<Option<Duration>>,
    /// What start-up read.
    pub state: State,
    /// Route names by slot, shared with the handles (the writer appends).
    pub names: Arc<std::sync::RwLock<Vec<String>>>,
}

pub struct Writer {
    conn: Connection,
    journal: Journal,
    config: StoreConfig,
    /// Per route (config order): its own `max_age`, overriding the store's.
    route_max_age: Vec<Option<Duration>>,
    routes: Vec<RouteState>,
    /// Per route slot: false once a reload removed the route (its rows are kept and do not
    /// expire, as for a route missing from the config at start).
    route_active: Vec<bool>,
    /// Route names by slot, shared with the handles.
    names: Arc<std::sync::RwLock<Vec<String>>>,
    /// route db id -> config index.
    route_index: HashMap<i64, usize>,
    devices: HashMap<String, (u32, u32)>,
    /// Hands out `events.id` (`store/ids.rs`).
    ids: super::ids::EventIds,
    metrics: StoreMeters,
    committed: Arc<Queues>,
    acks: Option<mpsc::Sender<Vec<DeviceAck>>>,
    page_size: u64,
    /// `reject_new` is refusing events until usage falls below 95% of the bound (so that
    /// what is kept is the oldest run, without holes).
    rejecting: bool,
    /// Journal bytes in use after the last commit.
    used_bytes: u64,
    last_full_log: Option<Instant>,
    /// The last write failed for lack of space; cleared by a commit that stored events.
    disk_full: bool,
    /// The policy could not make room on the full disk (`drop_oldest` found nothing to
    /// delete, or deleting did not help): events are refused, with a probe once a second.
    when_full_gave_up: bool,
    /// When events were last tried on a full disk.
    last_probe: Option<Instant>,
    /// Acknowledgements whose deletion could not be committed yet.
    pending_acks: Vec<(usize, i64, i64, u64)>,
    /// Failed commits not logged yet, and when the last was.
    failures_unlogged: u64,
    last_failure_log: Option<Instant>,
    /// Keep the read model (always, but for measuring what it costs).
    pub read_model: bool,
    /// Read-model changes of committed groups not written yet, and when they are due
    /// (`read_model::WRITE_EVERY`).
    view: super::read_model::GroupView,
    view_due: Instant,
}

/// What one group changed, applied to memory only after its commit.
#[derive(Default)]
struct Group {
    /// Per route: rows and bytes added (negative: removed).
    route_delta: HashMap<usize, (i64, i64)>,
    /// Devices whose mark moved, with the mark before the group (for rollback).
    marks_before: HashMap<String, Option<(u32, u32)>>,
    /// Devices whose retransmits were dropped: their mark is published again.
    remind: std::collections::HashSet<String>,
    /// `done` of each item stored or deliberately dropped, with the item's index in the
    /// group (given back to the item when the transaction fails).
    done: Vec<(usize, Done)>,
    committed_events: u64,
    dead_letters: u64,
    duplicates: u64,
    rejected: u64,
    /// Dead letters dropped by their bounds.
    dead_letters_dropped: u64,
    /// Per route: rows inserted (what the forwarder is told about).
    inserted: HashMap<usize, u64>,
    /// Oldest rows deleted to keep `max_bytes` (`drop_oldest`).
    dropped_full: u64,
    /// Latest receive time in the group (the devices' last-seen time).
    last_seen_ms: i64,
    /// Estimated journal growth of the group so far (rows, index entries, overhead).
    added_bytes: u64,
    batches: Vec<(usize, u64)>,
    /// Rows queued again by replays.
    replayed: u64,
    /// The read model's changes (latest per device and reading).
    view: super::read_model::GroupView,
    /// The transaction wrote the read model (this group's changes and the ones held).
    view_written: bool,
    /// The event id reservation the transaction raised (`store/ids.rs`).
    reserved: Option<i64>,
}

/// Where a purge's result goes.
type PurgeReply = oneshot::Sender<Result<u64, StoreError>>;

/// What one group of commands asks the journal to write (kept whole, so that the group can
/// be tried again after a full disk).
#[derive(Default)]
struct Work {
    items: Vec<Incoming>,
    /// `(route, first, last, batch)` of acknowledged batches.
    acks: Vec<(usize, i64, i64, u64)>,
    purges: Vec<(super::dead_letters::Purge, Option<PurgeReply>)>,
    /// Replies of the purges that committed, with what they deleted.
    purged: Vec<(PurgeReply, u64)>,
    /// Device connection changes for the read model: `(device, connected, at_ms)`.
    connections: Vec<(String, bool, i64)>,
    /// Write the read model in this group, due or not (a devices query, shutdown).
    write_view: bool,
    /// Replay steps asked for, and (after the commit) their results.
    replays: Vec<(ReplayRequest, ReplayReply)>,
    replayed: Vec<(ReplayReply, super::forwarded::Step)>,
}

/// One replay step: `(route, since_ms, until_ms, after)`.
type ReplayRequest = (usize, i64, i64, i64);
/// Where a replay step's result goes.
type ReplayReply = oneshot::Sender<Result<super::forwarded::Step, StoreError>>;

/// Estimated journal bytes of one row beyond its payload (row header, index entry, page slack).
const ROW_OVERHEAD: u64 = 64;

impl Writer {
    pub fn new(
        conn: Connection,
        parts: Parts,
        metrics: StoreMeters,
        committed: Arc<Queues>,
        acks: Option<mpsc::Sender<Vec<DeviceAck>>>,
    ) -> Writer {
        let Parts { journal, config, route_max_age, state, names } = parts;
        let page_size = conn.query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0)).unwrap_or(4096).max(512) as u64;
        let route_index = state.routes.iter().enumerate().map(|(i, r)| (r.db_id, i)).collect();
        let mut writer = Writer {
            conn,
            journal,
            config,
            route_max_age,
            route_active: vec![true; state.routes.len()],
            names,
            routes: state.routes,
            route_index,
            devices: state.devices,
            ids: state.event_ids,
            metrics,
            committed,
            acks,
            page_size,
            rejecting: false,
            used_bytes: 0,
            last_full_log: None,
            disk_full: false,
            last_probe: None,
            when_full_gave_up: false,
            pending_acks: Vec::new(),
            failures_unlogged: 0,
            last_failure_log: None,
            read_model: true,
            view: super::read_model::GroupView::default(),
            view_due: Instant::now(),
        };
        writer.refresh_gauges();
        writer
    }

    /// Applies one group of commands; returns true on shutdown.
    ///
    /// A full disk (`SQLITE_FULL`) is not the end of the group: the policy is applied and the
    /// group is tried again. `drop_oldest` deletes the oldest rows and retries it whole;
    /// then (or at once with `reject_new`) the group is stored as far as it fits, oldest
    /// first, in halves, and the rest is retried without its events, which are counted as
    /// dropped (`full`); a probe on a disk already full is tried whole or not at all
    /// (failures.rs, `Attempt`). Acknowledgements that still could not be written are kept
    /// and retried with the next group, so acknowledged rows never linger until a restart
    /// and a row is never deleted without its ack.
    fn apply(&mut self, commands: Vec<Command>) -> bool {
        let mut work = Work { acks: std::mem::take(&mut self.pending_acks), ..Work::default() };
        let mut reads = Vec::new();
        let mut queries = Vec::new();
        let mut device_queries = Vec::new();
        let mut remote_configs = Vec::new();
        let mut stop = false;
        for command in commands {
            match command {
                Command::Ingest(items) => work.items.extend(items),
                Command::Ack { route, first, last, batch } => work.acks.push((route, first, last, batch)),
                Command::Read { route, after, limit, reply } => reads.push((route, after, limit, reply)),
                Command::DeadLetters { query, reply } => queries.push((query, reply)),
                Command::Purge { purge, reply } => work.purges.push((purge, reply)),
                // Answered after the commit (or rollback): never a state that may not last.
                Command::Devices { query, reply } => device_queries.push((query, reply)),
                Command::Connection { device, connected, at_ms } => work.connections.push((device, connected, at_ms)),
                Command::Replay { route, since_ms, until_ms, after, reply } => {
                    work.replays.push(((route, since_ms, until_ms, after), reply))
                }
                Command::Route { spec, active, reply } => {
                    let _ = reply.send(self.route_slot(spec, active));
                }
                Command::RemoteConfig { document, reply } => remote_configs.push((document, reply)),
                Command::Shutdown => stop = true,
            }
        }
        work.write_view = stop || !device_queries.is_empty();
        // While the disk is full, events are refused without trying them, except for a probe
        // now and then that finds out whether space has come back: no busy retrying.
        // `drop_oldest` keeps trying for as long as deleting the oldest rows makes room.
        let skipping = self.when_full_gave_up || self.config.when_full == WhenFull::RejectNew;
        let with_events =
            !(self.disk_full && skipping && self.last_probe.is_some_and(|t| t.elapsed() < DISK_FULL_PROBE_EVERY));
        if self.disk_full && with_events {
            self.last_probe = Some(Instant::now());
        }
        let mut attempt = Attempt::new(with_events, self.disk_full, work.items.len());
        let failure = loop {
            let mut group = Group::default();
            let result = self.transact(&mut group, &mut work, attempt.with_events, attempt.limit);
            match result {
                Ok(()) if attempt.with_events && attempt.limit < work.items.len() => {
                    // The oldest part of a group that filled the disk is stored: the rest
                    // goes on in smaller parts (failures.rs, `Attempt`).
                    self.after_commit(group, true);
                    work.items.drain(..attempt.limit);
                    work.acks.clear();
                    attempt.stored_part(work.items.len());
                }
                Ok(()) => {
                    if !attempt.with_events {
                        self.refuse_events(&mut work.items);
                    }
                    self.after_commit(group, false);
                    break None;
                }
                Err(err) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    self.ids.rolled_back();
                    // Give the `done`s back to their items: a retry may still commit them.
                    for (index, done) in group.done.drain(..) {
                        match work.items.get_mut(index) {
                            Some(Incoming::Event(e)) => e.done = Some(done),
                            Some(Incoming::DeadLetter(l)) => l.done = Some(done),
                            None => {}
                        }
                    }
                    let full = is_disk_full(&err);
                    self.after_failure(group, &err);
                    if full && attempt.with_events && !work.items.is_empty() {
                        self.after_full(&mut attempt, work.items.len());
                        continue;
                    }
                    // The acknowledgements could not be written: keep them for the next group.
                    self.pending_acks = std::mem::take(&mut work.acks);
                    if full {
                        self.refuse_events(&mut work.items);
                    }
                    break Some(err.to_string());
                }
            }
        };
        // A purge in `purged` committed, possibly with a part of a group that then met the
        // full disk: its deletions stand whatever happened to the rest.
        for (reply, deleted) in work.purged {
            let _ = reply.send(Ok(deleted));
        }
        for (_, reply) in work.purges {
            if let (Some(reply), Some(err)) = (reply, &failure) {
                let _ = reply.send(Err(StoreError::Failed(err.clone())));
            }
        }
        for (reply, step) in work.replayed {
            let _ = reply.send(Ok(step));
        }
        for (_, reply) in work.replays {
            let err = failure.clone().unwrap_or_else(|| "not run".into());
            let _ = reply.send(Err(StoreError::Failed(err)));
        }
        for (document, reply) in remote_configs {
            let saved = match &document {
                Some(document) => super::remote_config::save(&self.conn, document, super::now_ms()),
                None => super::remote_config::clear(&self.conn),
            };
            let _ = reply.send(saved.map_err(StoreError::from));
        }
        for (query, reply) in queries {
            let _ = reply.send(super::dead_letters::read(&self.conn, query).map_err(StoreError::from));
        }
        for (query, reply) in device_queries {
            let _ = reply.send(super::read_model::answer(&self.conn, &query).map_err(StoreError::from));
        }
        for (route, after, limit, reply) in reads {
            let rows = self.read(route, after, limit);
            if let Err(err) = &rows {
                self.stop_if_damaged(err);
            }
            let _ = reply.send(rows.map_err(StoreError::from));
        }
        stop
    }

    /// One transaction over `work` and its first `limit` items (their events only if
    /// `with_events`). On success the purge replies move to `work.purged`.
    fn transact(
        &mut self,
        group: &mut Group,
        work: &mut Work,
        with_events: bool,
        limit: usize,
    ) -> Result<(), rusqlite::Error> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        for &(route, first, last, batch) in &work.acks {
            self.delete_acked(group, route, first, last, batch)?;
        }
        let mut purged = Vec::new();
        for (purge, _) in &work.purges {
            purged.push(super::dead_letters::purge(&self.conn, purge)?);
        }
        for (device, connected, at_ms) in &work.connections {
            super::read_model::set_connection(&self.conn, device, *connected, *at_ms)?;
        }
        let mut steps = Vec::new();
        for &((route, since_ms, until_ms, after), _) in &work.replays {
            steps.push(self.replay_step(group, route, since_ms, until_ms, after)?);
        }
        for (index, item) in work.items.iter_mut().enumerate().take(limit) {
            match item {
                Incoming::Event(event) if with_events => self.insert_event(group, index, event)?,
                Incoming::Event(_) => {}
                Incoming::DeadLetter(letter) => self.insert_dead_letter(group, index, letter)?,
            }
        }
        // The read model is written once per read_model::WRITE_EVERY, not per commit.
        if work.write_view || Instant::now() >= self.view_due {
            self.view.write(&self.conn)?;
            group.view.write(&self.conn)?;
            group.view_written = true;
        }
        if group.dead_letters > 0 {
            group.dead_letters_dropped +=
                super::dead_letters::enforce_bounds(&self.conn, self.config.dead_letters_max, 0)?;
        }
        if self.config.when_full == WhenFull::DropOldest {
            self.make_room(group)?;
        }
        self.write_counters(group)?;
        self.conn.execute_batch("COMMIT")?;
        for ((_, reply), deleted) in work.purges.drain(..).zip(purged) {
            if let Some(reply) = reply {
                work.purged.push((reply, deleted));
            }
        }
        work.connections.clear();
        for ((_, reply), step) in work.replays.drain(..).zip(steps) {
            work.replayed.push((reply, step));
        }
        Ok(())
    }

    /// Applies a committed group to memory. `part`: the oldest part of a group that filled
    /// the disk, whose rest does not fit; the disk stays full.
    fn after_commit(&mut self, mut group: Group, part: bool) {
        self.metrics.store.ok.set(1);
        self.ids.committed(group.reserved);
        let view = std::mem::take(&mut group.view);
        if group.view_written {
            self.view = super::read_model::GroupView::default();
            self.view_due = Instant::now() + super::read_model::WRITE_EVERY;
        } else {
            self.view.absorb(view);
        }
        if !part && !group.inserted.is_empty() {
            self.when_full_gave_up = false;
        }
        if !part && self.disk_full && (!group.inserted.is_empty() || group.dead_letters > 0) {
            self.disk_full = false;
            self.metrics.store.disk_full.set(0);
            info!("journal: space is available again; events are stored");
        }
        let mut notify = false;
        for (&route, &(rows, bytes)) in &group.route_delta {
            let state = &mut self.routes[route];
            state.depth = state.depth.saturating_add_signed(rows);
            state.bytes = state.bytes.saturating_add_signed(bytes);
            // Depth before the counter: the forwarder reads the counter, then the depth.
            self.committed.set_depth(route, state.depth);
            if let Some(m) = self.metrics.store.routes.get(route) {
                m.depth.set(state.depth);
            }
        }
        // Rows *inserted*, not the net change: a group that also deletes acknowledged rows
        // must still tell the forwarder about every new row (counting the net change once
        // starved the forwarder under load until its 2 s sweep).
        for (&route, &rows) in &group.inserted {
            self.committed.add_committed(route, rows);
            notify = true;
        }
        for &(route, batch) in &group.batches {
            self.routes[route].last_batch = self.routes[route].last_batch.max(batch);
        }
        if notify {
            self.committed.notify();
        }
        // The rows this commit dropped to make room are counted before the commit itself:
        // whoever sees an event committed also sees the drops it caused, so committed and
        // dropped always add up (README, guarantees 1 and 5).
        self.metrics.count_drop(DropReason::Full, group.dropped_full);
        if group.dropped_full > 0 {
            self.log_full(group.dropped_full, "dropped the oldest events (when_full = \"drop_oldest\")");
        }
        self.metrics.store.committed.add(group.committed_events);
        self.metrics.store.replayed.add(group.replayed);
        self.metrics.store.dead_letters.add(group.dead_letters);
        self.metrics.store.dead_letters_dropped.add(group.dead_letters_dropped);
        self.metrics.count_drop(DropReason::Duplicate, group.duplicates);
        self.metrics.count_drop(DropReason::Full, group.rejected);
        if group.rejected > 0 {
            self.log_full(group.rejected, "refused new events (when_full = \"reject_new\")");
        }
        if !group.marks_before.is_empty() || !group.remind.is_empty() {
            let devices =
                group.marks_before.keys().chain(group.remind.iter().filter(|d| !group.marks_before.contains_key(*d)));
            self.publish_marks(devices);
        }
        for (_, done) in group.done {
            done();
        }
        self.refresh_gauges();
        if !group.batches.is_empty() {
            self.maybe_stop_rejecting();
        }
    }

    /// Sends the current mark of each of `devices` to the ack publisher.
    fn publish_marks<'d>(&self, devices: impl Iterator<Item = &'d String>) {
        let Some(acks) = &self.acks else { return };
        let marks: Vec<DeviceAck> = devices
            .filter_map(|d| self.devices.get(d).map(|&(boot, seq)| DeviceAck { device: d.clone(), boot, seq }))
            .collect();
        if !marks.is_empty() {
            let _ = acks.send(marks);
        }
    }

    /// Re-reads the bytes in use and publishes the per-route gauges.
    fn refresh_gauges(&mut self) {
        if let Ok(used) = self.current_used() {
            self.used_bytes = used;
        }
        self.metrics.store.bytes.set(self.used_bytes);
        for (route, (state, metrics)) in self.routes.iter().zip(self.metrics.store.routes.all()).enumerate() {
            self.committed.set_depth(route, state.depth);
            metrics.depth.set(state.depth);
            metrics.bytes.set(state.bytes);
        }
    }
}
