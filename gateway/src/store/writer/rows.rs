//! What one group writes, row by row, inside the group's transaction: events (with the
//! duplicate check and `reject_new`), dead letters, replay copies, acknowledged deletions,
//! the per-route and per-device counters and the event id reservation (`store/ids.rs`).
//! Nothing here commits or touches memory the caller cannot roll back (`Group` is applied
//! only after the commit; ids taken are given back on rollback). Also the one read of the
//! queue: a route's rows in id order, for the forwarder.

use rusqlite::params;

use super::{Group, Writer, ROW_OVERHEAD};
use crate::config::WhenFull;
use crate::store::{DeadLetter, NewEvent, Row};

impl Writer {
    pub(super) fn insert_event(
        &mut self,
        group: &mut Group,
        index: usize,
        event: &mut NewEvent,
    ) -> Result<(), rusqlite::Error> {
        let mark = self.devices.get(&event.device).copied();
        let retransmit = matches!(mark, Some((boot, seq)) if boot == event.boot && event.seq <= seq);
        if retransmit && !event.held {
            group.duplicates += 1;
            // A device re-sending what is committed may have missed the ack (e.g. the gateway
            // restarted): tell it again.
            group.remind.insert(event.device.clone());
            group.done.extend(event.done.take().map(|d| (index, d)));
            return Ok(());
        }
        let growth = (event.payload.len() as u64 + ROW_OVERHEAD) * event.routes.len() as u64;
        let full = |w: &Writer, group: &Group| {
            w.rejecting || w.used_bytes + group.added_bytes + growth > w.config.max_bytes.bytes()
        };
        if growth > 0 && self.config.when_full == WhenFull::RejectNew && full(self, group) {
            // Kept forwarded events go before anything new is refused: the cloud has them.
            self.free_kept(group)?;
        }
        if growth > 0 && self.config.when_full == WhenFull::RejectNew && full(self, group) {
            self.rejecting = true;
            group.rejected += 1;
            // No `done`: an external broker keeps the message and redelivers it later.
            return Ok(());
        }
        let mut insert =
            self.conn.prepare_cached("INSERT INTO events (id, route, received_ms, payload) VALUES (?1, ?2, ?3, ?4)")?;
        for &route in &event.routes {
            let Some(state) = self.routes.get(route) else {
                continue;
            };
            insert.execute(params![self.ids.take(), state.db_id, event.received_ms, event.payload])?;
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
        // A held (keep_last) event was counted when it was first committed.
        if self.read_model && !event.held {
            group.view.note(&event.device, event.boot, event.seq, event.received_ms, &event.payload);
        }
        // A held (keep_last) event moved its device's mark when it was first filtered.
        if !event.held {
            group.marks_before.entry(event.device.clone()).or_insert(mark);
            match self.devices.get_mut(&event.device) {
                Some(m) => *m = (event.boot, event.seq),
                None => {
                    self.devices.insert(event.device.clone(), (event.boot, event.seq));
                }
            }
        }
        if !event.routes.is_empty() {
            group.committed_events += 1;
        }
        group.done.extend(event.done.take().map(|d| (index, d)));
        Ok(())
    }

    pub(super) fn insert_dead_letter(
        &mut self,
        group: &mut Group,
        index: usize,
        letter: &mut DeadLetter,
    ) -> Result<(), rusqlite::Error> {
        self.conn
            .prepare_cached(
                "INSERT INTO dead_letters (received_ms, topic, reason, payload, publisher) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![letter.received_ms, letter.topic, letter.reason, letter.payload, letter.publisher])?;
        group.dead_letters += 1;
        group.done.extend(letter.done.take().map(|d| (index, d)));
        Ok(())
    }

    /// One step of a replay, inside the group's transaction: the copies are new queue rows.
    pub(super) fn replay_step(
        &mut self,
        group: &mut Group,
        route: usize,
        since_ms: i64,
        until_ms: i64,
        after: i64,
    ) -> Result<crate::store::forwarded::Step, rusqlite::Error> {
        let Some(state) = self.routes.get(route) else {
            return Ok(crate::store::forwarded::Step::default());
        };
        let step = crate::store::forwarded::replay_step(
            &self.conn,
            state.db_id,
            since_ms,
            until_ms,
            after,
            self.ids.peek(),
            crate::store::now_ms(),
        )?;
        self.ids.skip(step.rows);
        if step.rows > 0 {
            let delta = group.route_delta.entry(route).or_default();
            delta.0 += step.rows;
            delta.1 += step.bytes;
            *group.inserted.entry(route).or_default() += step.rows as u64;
            group.replayed += step.rows as u64;
        }
        Ok(step)
    }

    pub(super) fn delete_acked(
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
        if self.config.keep_forwarded.is_some() {
            crate::store::forwarded::keep(&self.conn, state.db_id, first, last, crate::store::now_ms())?;
        }
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

    pub(super) fn write_counters(&mut self, group: &mut Group) -> Result<(), rusqlite::Error> {
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
        // Every id this transaction handed out is under the reservation it commits with.
        group.reserved = self.ids.reserve(&self.conn)?;
        Ok(())
    }

    /// Up to `limit` rows of `route` with ids above `after`, oldest first.
    pub(super) fn read(&mut self, route: usize, after: i64, limit: usize) -> Result<Vec<Row>, rusqlite::Error> {
        let Some(state) = self.routes.get(route) else {
            return Ok(Vec::new());
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, received_ms, payload, replay FROM events WHERE route = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![state.db_id, after, limit as i64], |r| {
            Ok(Row { id: r.get(0)?, received_ms: r.get(1)?, payload: r.get(2)?, replay: r.get(3)? })
        })?;
        rows.collect()
    }
}
