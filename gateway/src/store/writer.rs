//! The writer thread: the only owner of the journal connection. See the module essay in
//! `store/mod.rs` for the invariants; this file keeps them.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension};
use tracing::{debug, error, info, warn};

use super::schema::{RouteState, State};
use super::{Command, Committed, DeadLetter, DeviceAck, Done, Incoming, NewEvent, Row, StoreError};
use crate::config::{StoreConfig, WhenFull};
use crate::metrics::{DropReason, Metrics};

/// How often retention, vacuum and the oldest-age gauges run.
const MAINTENANCE_EVERY: Duration = Duration::from_millis(500);
/// Rows deleted per retention statement (keeps each transaction short).
const RETENTION_CHUNK: i64 = 20_000;

pub struct Writer {
    conn: Connection,
    config: StoreConfig,
    /// Per route (config order): its own `max_age`, overriding the store's.
    route_max_age: Vec<Option<Duration>>,
    routes: Vec<RouteState>,
    /// route db id -> config index.
    route_index: HashMap<i64, usize>,
    devices: HashMap<String, (u32, u32)>,
    metrics: Arc<Metrics>,
    committed: Arc<Committed>,
    acks: Option<mpsc::Sender<Vec<DeviceAck>>>,
    page_size: u64,
    /// `reject_new` is refusing events until usage falls below 95% of the bound (so that
    /// what is kept is the oldest run, without holes).
    rejecting: bool,
    /// Journal bytes in use after the last commit.
    used_bytes: u64,
    last_full_log: Option<Instant>,
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
    done: Vec<Done>,
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
}

/// Estimated journal bytes of one row beyond its payload (row header, index entry, page slack).
const ROW_OVERHEAD: u64 = 64;

impl Writer {
    pub fn new(
        conn: Connection,
        config: StoreConfig,
        route_max_age: Vec<Option<Duration>>,
        state: State,
        metrics: Arc<Metrics>,
        committed: Arc<Committed>,
        acks: Option<mpsc::Sender<Vec<DeviceAck>>>,
    ) -> Writer {
        let page_size = conn.query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0)).unwrap_or(4096).max(512) as u64;
        let route_index = state.routes.iter().enumerate().map(|(i, r)| (r.db_id, i)).collect();
        let mut writer = Writer {
            conn,
            config,
            route_max_age,
            routes: state.routes,
            route_index,
            devices: state.devices,
            metrics,
            committed,
            acks,
            page_size,
            rejecting: false,
            used_bytes: 0,
            last_full_log: None,
        };
        writer.refresh_gauges();
        writer
    }

    pub fn run(mut self, rx: mpsc::Receiver<Command>) {
        // Retained acks live in the device broker's memory and are gone after a restart:
        // publish every known mark once, so a device that reconnects learns what is stored.
        let known: Vec<String> = self.devices.keys().cloned().collect();
        self.publish_marks(known.iter());
        let mut next_maintenance = Instant::now();
        loop {
            let wait = next_maintenance.saturating_duration_since(Instant::now());
            let first = match rx.recv_timeout(wait) {
                Ok(command) => Some(command),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut stop = false;
            if let Some(first) = first {
                let mut commands = vec![first];
                let mut events = 0;
                while events < self.config.commit_max_events {
                    match rx.try_recv() {
                        Ok(Command::Ingest(items)) => {
                            events += items.len();
                            commands.push(Command::Ingest(items));
                        }
                        Ok(other) => commands.push(other),
                        Err(_) => break,
                    }
                }
                stop = self.apply(commands);
            }
            if stop {
                break;
            }
            if Instant::now() >= next_maintenance {
                if let Err(err) = self.maintenance() {
                    error!(error = %err, "journal maintenance failed; will retry");
                }
                next_maintenance = Instant::now() + MAINTENANCE_EVERY;
            }
        }
        if let Err(err) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            warn!(error = %err, "final WAL checkpoint failed (the data is safe in the WAL)");
        }
        info!("journal closed");
    }

    /// Applies one group of commands; returns true on shutdown.
    fn apply(&mut self, commands: Vec<Command>) -> bool {
        let mut group = Group::default();
        let mut reads = Vec::new();
        let mut purged = Vec::new();
        let mut stop = false;
        let result = (|| -> Result<(), rusqlite::Error> {
            self.conn.execute_batch("BEGIN IMMEDIATE")?;
            for command in commands {
                match command {
                    Command::Ingest(items) => {
                        for item in items {
                            match item {
                                Incoming::Event(event) => self.insert_event(&mut group, event)?,
                                Incoming::DeadLetter(letter) => self.insert_dead_letter(&mut group, letter)?,
                            }
                        }
                    }
                    Command::Ack { route, first, last, batch } => {
                        self.delete_acked(&mut group, route, first, last, batch)?
                    }
                    Command::Read { route, after, limit, reply } => reads.push((route, after, limit, reply)),
                    Command::DeadLetters { query, reply } => {
                        let _ = reply.send(super::dead_letters::read(&self.conn, query).map_err(StoreError::from));
                    }
                    Command::Purge { purge, reply } => {
                        let deleted = super::dead_letters::purge(&self.conn, &purge)?;
                        if let Some(reply) = reply {
                            purged.push((reply, deleted));
                        }
                    }
                    Command::Shutdown => stop = true,
                }
            }
            if group.dead_letters > 0 {
                group.dead_letters_dropped +=
                    super::dead_letters::enforce_bounds(&self.conn, self.config.dead_letters_max, 0)?;
            }
            if self.config.when_full == WhenFull::DropOldest {
                self.make_room(&mut group)?;
            }
            self.write_counters(&group)?;
            self.conn.execute_batch("COMMIT")
        })();
        let failure = match result {
            Ok(()) => {
                self.after_commit(group);
                None
            }
            Err(err) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                self.after_failure(group, &err);
                Some(err.to_string())
            }
        };
        for (reply, deleted) in purged {
            let _ = reply.send(match &failure {
                None => Ok(deleted),
                Some(err) => Err(StoreError::Failed(err.clone())),
            });
        }
        for (route, after, limit, reply) in reads {
            let _ = reply.send(self.read(route, after, limit).map_err(StoreError::from));
        }
        stop
    }

    fn insert_event(&mut self, group: &mut Group, event: NewEvent) -> Result<(), rusqlite::Error> {
        let mark = self.devices.get(&event.device).copied();
        let retransmit = matches!(mark, Some((boot, seq)) if boot == event.boot && event.seq <= seq);
        if retransmit && !event.held {
            group.duplicates += 1;
            // A device re-sending what is committed may have missed the ack (e.g. the gateway
            // restarted): tell it again.
            group.remind.insert(event.device.clone());
            group.done.extend(event.done);
            return Ok(());
        }
        let growth = (event.payload.len() as u64 + ROW_OVERHEAD) * event.routes.len() as u64;
        if growth > 0
            && self.config.when_full == WhenFull::RejectNew
            && (self.rejecting || self.used_bytes + group.added_bytes + growth > self.config.max_bytes.bytes())
        {
            self.rejecting = true;
            group.rejected += 1;
            // No `done`: an external broker keeps the message and redelivers it later.
            return Ok(());
        }
        let mut insert =
            self.conn.prepare_cached("INSERT INTO events (route, received_ms, payload) VALUES (?1, ?2, ?3)")?;
        for &route in &event.routes {
            let Some(state) = self.routes.get(route) else {
                continue;
            };
            insert.execute(params![state.db_id, event.received_ms, event.payload])?;
            let delta = group.route_delta.entry(route).or_default();
            delta.0 += 1;
            delta.1 += event.payload.len() as i64;
            *group.inserted.entry(route).or_default() += 1;
        }
        drop(insert);
        for update in &event.filter_state {
            let values = serde_json::to_string(&update.state.values).unwrap_or_else(|_| "[]".into());
            self.conn
                .prepare_cached(
                    "INSERT INTO filter_state (route, device, last_ms, state_values) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(route, device) DO UPDATE SET last_ms = excluded.last_ms, state_values = excluded.state_values",
                )?
                .execute(params![update.route, update.device, update.state.last_ms, values])?;
        }
        group.added_bytes += growth;
        group.last_seen_ms = group.last_seen_ms.max(event.received_ms);
        // A held (keep_last) event moved its device's mark when it was first filtered.
        if !event.held {
            group.marks_before.entry(event.device.clone()).or_insert(mark);
            self.devices.insert(event.device, (event.boot, event.seq));
        }
        if !event.routes.is_empty() {
            group.committed_events += 1;
        }
        group.done.extend(event.done);
        Ok(())
    }

    fn insert_dead_letter(&mut self, group: &mut Group, letter: DeadLetter) -> Result<(), rusqlite::Error> {
        self.conn
            .prepare_cached("INSERT INTO dead_letters (received_ms, topic, reason, payload) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![letter.received_ms, letter.topic, letter.reason, letter.payload])?;
        group.dead_letters += 1;
        group.done.extend(letter.done);
        Ok(())
    }

    fn delete_acked(
        &mut self,
        group: &mut Group,
        route: usize,
        first: i64,
        last: i64,
        batch: u64,
    ) -> Result<(), rusqlite::Error> {
        let Some(state) = self.routes.get(route) else {
            return Ok(());
        };
        let mut stmt = self
            .conn
            .prepare_cached("DELETE FROM events WHERE route = ?1 AND id BETWEEN ?2 AND ?3 RETURNING length(payload)")?;
        let sizes = stmt.query_map(params![state.db_id, first, last], |r| r.get::<_, i64>(0))?;
        let delta = group.route_delta.entry(route).or_default();
        for size in sizes {
            delta.0 -= 1;
            delta.1 -= size?;
        }
        group.batches.push((route, batch));
        Ok(())
    }

    fn write_counters(&mut self, group: &Group) -> Result<(), rusqlite::Error> {
        // One mark per device per group, not per event.
        for device in group.marks_before.keys() {
            let Some(&(boot, seq)) = self.devices.get(device) else {
                continue;
            };
            self.conn
                .prepare_cached(
                    "INSERT INTO devices (device, boot, seq, last_seen_ms) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(device) DO UPDATE SET boot = excluded.boot, seq = excluded.seq, last_seen_ms = excluded.last_seen_ms",
                )?
                .execute(params![device, boot, seq, group.last_seen_ms])?;
        }
        for (&route, &(rows, bytes)) in &group.route_delta {
            self.conn
                .prepare_cached(
                    "UPDATE routes SET depth = MAX(depth + ?1, 0), bytes = MAX(bytes + ?2, 0) WHERE id = ?3",
                )?
                .execute(params![rows, bytes, self.routes[route].db_id])?;
        }
        for &(route, batch) in &group.batches {
            self.conn
                .prepare_cached("UPDATE routes SET last_batch = MAX(last_batch, ?1) WHERE id = ?2")?
                .execute(params![batch as i64, self.routes[route].db_id])?;
        }
        Ok(())
    }

    fn after_commit(&mut self, group: Group) {
        self.metrics.store_ok.set(1);
        let mut notify = false;
        for (&route, &(rows, bytes)) in &group.route_delta {
            let state = &mut self.routes[route];
            state.depth = state.depth.saturating_add_signed(rows);
            state.bytes = state.bytes.saturating_add_signed(bytes);
            // Depth before the counter: the forwarder reads the counter, then the depth.
            if let Some(m) = self.metrics.routes.get(route) {
                m.depth.set(state.depth);
            }
        }
        // Rows *inserted*, not the net change: a group that also deletes acknowledged rows
        // must still tell the forwarder about every new row (counting the net change once
        // starved the forwarder under load until its 2 s sweep).
        for (&route, &rows) in &group.inserted {
            self.committed.counts[route].fetch_add(rows, Ordering::Release);
            notify = true;
        }
        for &(route, batch) in &group.batches {
            self.routes[route].last_batch = self.routes[route].last_batch.max(batch);
        }
        if notify {
            self.committed.notify.notify_waiters();
            self.committed.notify.notify_one();
        }
        self.metrics.committed.add(group.committed_events);
        self.metrics.dead_letters.add(group.dead_letters);
        self.metrics.dead_letters_dropped.add(group.dead_letters_dropped);
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
        for done in group.done {
            done();
        }
        self.metrics.count_drop(DropReason::Full, group.dropped_full);
        if group.dropped_full > 0 {
            self.log_full(group.dropped_full, "dropped the oldest events (when_full = \"drop_oldest\")");
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

    /// `reject_new` accepts again once deletions (acks, TTL) brought usage under 95%.
    /// Only deletions end it: an estimate that was too cautious must not let a later event
    /// in after an earlier one was refused.
    fn maybe_stop_rejecting(&mut self) {
        if self.rejecting && self.used_bytes < self.config.max_bytes.bytes() / 100 * 95 {
            self.rejecting = false;
        }
    }

    fn after_failure(&mut self, group: Group, err: &rusqlite::Error) {
        self.metrics.store_ok.set(0);
        self.metrics.commit_failures.add(1);
        self.metrics.note_error(super::now_ms(), format!("journal commit failed: {err}"));
        // Nothing of the group is durable: undo the in-memory marks so that the devices'
        // retransmits are accepted, and run no `done` (external brokers redeliver).
        for (device, before) in group.marks_before {
            match before {
                Some(mark) => self.devices.insert(device, mark),
                None => self.devices.remove(&device),
            };
        }
        error!(error = %err, events = group.committed_events, "commit failed; the group was not stored and devices were not acknowledged");
    }

    fn read(&mut self, route: usize, after: i64, limit: usize) -> Result<Vec<Row>, rusqlite::Error> {
        let Some(state) = self.routes.get(route) else {
            return Ok(Vec::new());
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, received_ms, payload FROM events WHERE route = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![state.db_id, after, limit as i64], |r| {
            Ok(Row { id: r.get(0)?, received_ms: r.get(1)?, payload: r.get(2)? })
        })?;
        rows.collect()
    }

    /// Deletes the rows `sql` (a `DELETE ... RETURNING route, length(payload)`) picks, in its
    /// own transaction, keeping the counters; counts them under `reason`.
    fn drop_rows(
        &mut self,
        sql: &str,
        params: &[&dyn rusqlite::ToSql],
        reason: DropReason,
    ) -> Result<u64, rusqlite::Error> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let delta = match self.drop_rows_in_transaction(sql, params) {
            Ok(delta) => delta,
            Err(err) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(err);
            }
        };
        let group = Group { route_delta: delta, ..Group::default() };
        if let Err(err) = self.write_counters(&group).and_then(|()| self.conn.execute_batch("COMMIT")) {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(err);
        }
        let dropped: i64 = group.route_delta.values().map(|d| -d.0).sum();
        for (&route, &(rows, bytes)) in &group.route_delta {
            let state = &mut self.routes[route];
            state.depth = state.depth.saturating_add_signed(rows);
            state.bytes = state.bytes.saturating_add_signed(bytes);
        }
        self.metrics.count_drop(reason, dropped as u64);
        Ok(dropped as u64)
    }

    /// Runs a `DELETE ... RETURNING route, length(payload)`; the per-route change.
    fn drop_rows_in_transaction(
        &mut self,
        sql: &str,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<HashMap<usize, (i64, i64)>, rusqlite::Error> {
        let mut delta: HashMap<usize, (i64, i64)> = HashMap::new();
        let mut stmt = self.conn.prepare_cached(sql)?;
        let mut rows = stmt.query(params)?;
        while let Some(row) = rows.next()? {
            let db_id: i64 = row.get(0)?;
            let size: i64 = row.get(1)?;
            if let Some(&route) = self.route_index.get(&db_id) {
                let d = delta.entry(route).or_default();
                d.0 -= 1;
                d.1 -= size;
            }
        }
        Ok(delta)
    }

    /// Within the group's transaction: deletes the oldest rows until the journal is back
    /// under 95% of `max_bytes`, so the bound holds at every commit (`drop_oldest`).
    fn make_room(&mut self, group: &mut Group) -> Result<(), rusqlite::Error> {
        let max = self.config.max_bytes.bytes();
        let target = max / 100 * 95;
        let mut used = self.current_used()?;
        if used <= max {
            return Ok(());
        }
        for _ in 0..32 {
            if used <= target {
                break;
            }
            let (rows, bytes) =
                self.routes.iter().fold((0i64, 0i64), |(r, b), s| (r + s.depth as i64, b + s.bytes as i64));
            let (rows, bytes) = group.route_delta.values().fold((rows, bytes), |(r, b), d| (r + d.0, b + d.1));
            // Estimate rows to free from the average row (payload + index + overhead).
            let per_row = (bytes.max(1) / rows.max(1)).max(1) as u64 + ROW_OVERHEAD;
            let want = ((used - target) / per_row).max(64) as i64;
            let sql = "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT ?1) RETURNING route, length(payload)";
            let delta = self.drop_rows_in_transaction(sql, params![want.min(RETENTION_CHUNK)])?;
            let dropped: i64 = delta.values().map(|d| -d.0).sum();
            for (route, (r, b)) in delta {
                let entry = group.route_delta.entry(route).or_default();
                entry.0 += r;
                entry.1 += b;
            }
            group.dropped_full += dropped as u64;
            used = self.current_used()?;
            if dropped == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Journal bytes in use now (pages minus free pages), inside or outside a transaction.
    fn current_used(&self) -> Result<u64, rusqlite::Error> {
        let pages: i64 = self.conn.query_row(
            "SELECT (SELECT page_count FROM pragma_page_count()) - (SELECT freelist_count FROM pragma_freelist_count())",
            [],
            |r| r.get(0),
        )?;
        Ok(pages.max(0) as u64 * self.page_size)
    }

    fn log_full(&mut self, count: u64, what: &str) {
        self.metrics.note_error(super::now_ms(), format!("journal full: {what}"));
        let quiet = self.last_full_log.is_some_and(|t| t.elapsed() < Duration::from_secs(10));
        if !quiet {
            warn!(count, max_bytes = %self.config.max_bytes, "journal full: {what}; further messages suppressed for 10s");
            self.last_full_log = Some(Instant::now());
        }
    }

    /// Drops, per route, the events older than its `max_age` (or `store.max_age`). Rows are
    /// in receive order within a route, so each pass looks only at the oldest rows.
    fn expire(&mut self) -> Result<(), rusqlite::Error> {
        let now = super::now_ms();
        for index in 0..self.routes.len() {
            let max_age = self.route_max_age.get(index).copied().flatten().unwrap_or(self.config.max_age);
            let cutoff = now - max_age.as_millis() as i64;
            let db_id = self.routes[index].db_id;
            let sql = "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE route = ?1 ORDER BY id LIMIT ?2) \
                       AND received_ms < ?3 RETURNING route, length(payload)";
            let mut expired = 0;
            for _ in 0..10 {
                let n = self.drop_rows(sql, params![db_id, RETENTION_CHUNK, cutoff], DropReason::Ttl)?;
                expired += n;
                if n < RETENTION_CHUNK as u64 {
                    break;
                }
            }
            if expired > 0 {
                self.refresh_gauges();
                self.maybe_stop_rejecting();
                warn!(count = expired, ?max_age, route = index, "dropped events older than their max_age");
            }
        }
        Ok(())
    }

    fn maintenance(&mut self) -> Result<(), rusqlite::Error> {
        self.expire()?;
        let cutoff = super::now_ms() - self.config.dead_letters_max_age.as_millis() as i64;
        let dropped = super::dead_letters::enforce_bounds(&self.conn, self.config.dead_letters_max, cutoff)?;
        self.metrics.dead_letters_dropped.add(dropped);
        let (pages, free): (i64, i64) = self.conn.query_row(
            "SELECT (SELECT page_count FROM pragma_page_count()), (SELECT freelist_count FROM pragma_freelist_count())",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if free > 1024 && free * 10 > pages {
            debug!(free_pages = free, "giving free journal pages back to the file system");
            // Each step of this pragma frees one page: step it to the end. The checkpoint
            // then lets the file itself shrink.
            let mut vacuum = self.conn.prepare("PRAGMA incremental_vacuum(4096)")?;
            let mut steps = vacuum.query([])?;
            while steps.next()?.is_some() {}
            drop(steps);
            drop(vacuum);
            self.conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);")?;
        }
        for (i, route) in self.routes.iter().enumerate() {
            let oldest: Option<i64> = self
                .conn
                .prepare_cached("SELECT received_ms FROM events WHERE route = ?1 ORDER BY id LIMIT 1")?
                .query_row(params![route.db_id], |r| r.get(0))
                .optional()?;
            if let Some(m) = self.metrics.routes.get(i) {
                m.oldest_ms.set(oldest.unwrap_or(0).max(0) as u64);
            }
        }
        self.refresh_gauges();
        Ok(())
    }

    /// Re-reads the bytes in use and publishes the per-route gauges.
    fn refresh_gauges(&mut self) {
        if let Ok(used) = self.current_used() {
            self.used_bytes = used;
        }
        self.metrics.store_bytes.set(self.used_bytes);
        for (state, metrics) in self.routes.iter().zip(&self.metrics.routes) {
            metrics.depth.set(state.depth);
            metrics.bytes.set(state.bytes);
        }
    }
}
