//! Retention and upkeep of the journal, run by the writer: `max_bytes` (inside the
//! committing transaction, so the bound holds at every commit), `max_age` per route, the
//! dead letters' bounds, and giving free pages back to the file system.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rusqlite::{params, OptionalExtension};
use tracing::{debug, warn};

use super::{Group, Writer, RETENTION_CHUNK, ROW_OVERHEAD};
use crate::meter::DropReason;

impl Writer {
    /// Deletes the rows `sql` (a `DELETE ... RETURNING route, length(payload)`) picks, in its
    /// own transaction, keeping the counters; counts them under `reason`.
    pub(super) fn drop_rows(
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
        let mut group = Group { route_delta: delta, ..Group::default() };
        if let Err(err) = self.write_counters(&mut group).and_then(|()| self.conn.execute_batch("COMMIT")) {
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
    pub(super) fn make_room(&mut self, group: &mut Group) -> Result<(), rusqlite::Error> {
        let max = self.config.max_bytes.bytes();
        let target = max / 100 * 95;
        let mut used = self.current_used()?;
        if used <= max {
            return Ok(());
        }
        // Kept forwarded events go first: the cloud has them.
        for _ in 0..32 {
            if used <= target {
                return Ok(());
            }
            let want = ((used - target) / 256).clamp(64, RETENTION_CHUNK as u64) as i64;
            if crate::store::forwarded::evict(&self.conn, want)? == 0 {
                break;
            }
            used = self.current_used()?;
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
    pub(super) fn current_used(&self) -> Result<u64, rusqlite::Error> {
        let pages: i64 = self.conn.query_row(
            "SELECT (SELECT page_count FROM pragma_page_count()) - (SELECT freelist_count FROM pragma_freelist_count())",
            [],
            |r| r.get(0),
        )?;
        Ok(pages.max(0) as u64 * self.page_size)
    }

    pub(super) fn log_full(&mut self, count: u64, what: &str) {
        self.metrics.note_error(crate::store::now_ms(), format!("journal full: {what}"));
        let quiet = self.last_full_log.is_some_and(|t| t.elapsed() < Duration::from_secs(10));
        if !quiet {
            warn!(count, max_bytes = %self.config.max_bytes, "journal full: {what}; further messages suppressed for 10s");
            self.last_full_log = Some(Instant::now());
        }
    }

    /// Drops, per route, the events older than its `max_age` (or `store.max_age`). Rows are
    /// in receive order within a route, so each pass looks only at the oldest rows.
    pub(super) fn expire(&mut self) -> Result<(), rusqlite::Error> {
        let now = crate::store::now_ms();
        for index in 0..self.routes.len() {
            if !self.route_active.get(index).copied().unwrap_or(true) {
                continue;
            }
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

    /// Deletes kept forwarded events older than `store.keep_forwarded` (all of them when it
    /// is off, e.g. after a config change), a chunk per transaction.
    fn expire_forwarded(&mut self) -> Result<(), rusqlite::Error> {
        let now = crate::store::now_ms();
        let cutoff = match self.config.keep_forwarded {
            Some(keep) => now - keep.as_millis() as i64,
            None => i64::MAX,
        };
        for _ in 0..10 {
            self.conn.execute_batch("BEGIN IMMEDIATE")?;
            match crate::store::forwarded::expire(&self.conn, cutoff, RETENTION_CHUNK) {
                Ok(n) => {
                    self.conn.execute_batch("COMMIT")?;
                    if n < RETENTION_CHUNK as u64 {
                        break;
                    }
                }
                Err(err) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    return Err(err);
                }
            }
        }
        Ok(())
    }

    pub(super) fn maintenance(&mut self) -> Result<(), rusqlite::Error> {
        self.expire()?;
        self.expire_forwarded()?;
        let cutoff = crate::store::now_ms() - self.config.dead_letters_max_age.as_millis() as i64;
        let dropped = crate::store::dead_letters::enforce_bounds(&self.conn, self.config.dead_letters_max, cutoff)?;
        self.metrics.store.dead_letters_dropped.add(dropped);
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
            if let Some(m) = self.metrics.store.routes.get(i) {
                m.oldest_ms.set(oldest.unwrap_or(0).max(0) as u64);
            }
        }
        self.refresh_gauges();
        Ok(())
    }
}

impl Writer {
    /// `reject_new` accepts again once deletions (acks, TTL) brought usage under 95%.
    /// Only deletions end it: an estimate that was too cautious must not let a later event
    /// in after an earlier one was refused.
    pub(super) fn maybe_stop_rejecting(&mut self) {
        if self.rejecting && self.used_bytes < self.config.max_bytes.bytes() / 100 * 95 {
            self.rejecting = false;
        }
    }

    /// `reject_new`: deletes kept forwarded events (oldest first, inside the group's
    /// transaction) until usage is under 95% of `max_bytes` or none is left. Only a deletion
    /// ends `rejecting` (as in [`Writer::maybe_stop_rejecting`]).
    pub(super) fn free_kept(&mut self, group: &mut Group) -> Result<(), rusqlite::Error> {
        if self.config.keep_forwarded.is_none() {
            return Ok(());
        }
        let target = self.config.max_bytes.bytes() / 100 * 95;
        for _ in 0..32 {
            if crate::store::forwarded::evict(&self.conn, 256)? == 0 {
                break;
            }
            // Pages in use now, including what this group has written so far.
            let used = self.current_used()?;
            if used < target {
                self.used_bytes = used;
                group.added_bytes = 0;
                self.rejecting = false;
                break;
            }
        }
        Ok(())
    }
}
