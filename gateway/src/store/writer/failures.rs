//! What the writer does when a commit fails: a full disk (`SQLITE_FULL`) applies
//! `store.when_full`, stores what still fits of the group, oldest first, and is then probed
//! once a second without busy looping ([`Attempt`]); a damaged file stops the process and
//! leaves a marker; other errors are counted and logged, rate-limited. The invariants are
//! in the `store` module's essay ("Failures").

use std::time::{Duration, Instant};

use rusqlite::params;
use tracing::{error, warn};

use super::{Group, Writer, RETENTION_CHUNK};
use crate::config::WhenFull;
use crate::meter::DropReason;
use crate::store::metrics::StoreErrorKind;
use crate::store::Incoming;

/// While the disk is full, how often events are tried again (the rest are refused without
/// touching the disk).
pub(super) const DISK_FULL_PROBE_EVERY: Duration = Duration::from_secs(1);
/// At most one error line per this long for failing commits (the count of the others follows).
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(10);

/// `SQLITE_FULL`: the file system (or a size limit) has no room for the journal.
pub(super) fn is_disk_full(err: &rusqlite::Error) -> bool {
    err.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
}

/// How the writer tries one group, and again after each full-disk failure.
///
/// A group that meets a full disk is stored as far as it fits, oldest first: its first
/// `limit` items are tried, `limit` halving after every try, and each part that commits
/// is kept, until a try of one item fails; the rest is refused. Refusing the whole group
/// instead would leave the room it did not fill (up to a group's worth, and a group grows
/// with load, to about `store.commit_max_events`) to whatever events come next, stored after
/// the refused ones: holes in a device's run that depend on timing. A probe (the disk was
/// already full) is tried whole or not at all, so it cannot slip events into the little
/// room a refused single event left.
pub(super) struct Attempt {
    /// Write the events (false: only the rest of the work; the events are refused).
    pub(super) with_events: bool,
    /// How many of the group's items, oldest first, this try writes.
    pub(super) limit: usize,
    /// The disk was full before this group: a probe.
    probe: bool,
    /// `drop_oldest` has tried deleting the oldest rows for this group.
    tried_freeing: bool,
}

impl Attempt {
    /// The first try: the whole group of `items`.
    pub(super) fn new(with_events: bool, probe: bool, items: usize) -> Attempt {
        Attempt { with_events, limit: items, probe, tried_freeing: false }
    }

    /// The first `limit` items committed and `left` remain: the room left is less than
    /// what just committed, so the next part is half as large.
    pub(super) fn stored_part(&mut self, left: usize) {
        self.limit = (self.limit / 2).max(1).min(left);
    }
}

impl Writer {
    /// A try of `attempt` failed for lack of space, with `items` in the group: choose the
    /// next one. `drop_oldest` first deletes the oldest rows and tries again whole; then
    /// (or at once with `reject_new`) the group is halved, unless it is a probe; when a
    /// single item did not fit, the events are refused and a probe once a second follows.
    pub(super) fn after_full(&mut self, attempt: &mut Attempt, items: usize) {
        if self.config.when_full == WhenFull::DropOldest && !attempt.tried_freeing {
            attempt.tried_freeing = true;
            if self.free_oldest(items) {
                return;
            }
        }
        if !attempt.probe && attempt.limit > 1 {
            attempt.limit /= 2;
            return;
        }
        // Nothing (more) fits: refuse, and only probe now and then until a commit stores
        // events again.
        self.when_full_gave_up = true;
        attempt.with_events = false;
        attempt.limit = items;
    }

    /// The disk is full and `items` could not be stored: count their events as dropped
    /// (`full`); their `done` is not run (an external broker redelivers them later).
    pub(super) fn refuse_events(&mut self, items: &mut Vec<Incoming>) {
        let refused = items.iter().filter(|i| matches!(i, Incoming::Event(e) if !e.routes.is_empty())).count() as u64;
        items.retain(|i| matches!(i, Incoming::DeadLetter(_)));
        if refused > 0 {
            self.metrics.count_drop(DropReason::Full, refused);
            self.log_full(refused, "disk full: refused new events");
        }
    }

    /// `drop_oldest` on a full disk: deletes the oldest rows (at least twice what the group
    /// needs, or 5% of the queue) so that the group fits. False when nothing could be freed.
    pub(super) fn free_oldest(&mut self, needed: usize) -> bool {
        let depth: u64 = self.routes.iter().map(|r| r.depth).sum();
        let want = (needed as u64 * 2).max(depth / 20).max(256).min(RETENTION_CHUNK as u64) as i64;
        let sql = "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT ?1) RETURNING route, length(payload)";
        match self.drop_rows(sql, params![want], DropReason::Full) {
            Ok(0) => false,
            Ok(dropped) => {
                self.log_full(dropped, "disk full: dropped the oldest events (when_full = \"drop_oldest\")");
                self.refresh_gauges();
                true
            }
            Err(err) => {
                self.note_store_error(&err);
                false
            }
        }
    }

    pub(super) fn after_failure(&mut self, group: Group, err: &rusqlite::Error) {
        self.metrics.store.ok.set(0);
        self.metrics.store.commit_failures.add(1);
        self.note_store_error(err);
        // Nothing of the group is durable: undo the in-memory marks so that the devices'
        // retransmits are accepted, and run no `done` (external brokers redeliver).
        for (device, before) in group.marks_before {
            match before {
                Some(mark) => self.devices.insert(device, mark),
                None => self.devices.remove(&device),
            };
        }
        // Rate-limited: on a full disk every group fails until the policy makes room.
        self.failures_unlogged += 1;
        if self.last_failure_log.is_none_or(|t| t.elapsed() >= FAILURE_LOG_EVERY) {
            let hint = if is_disk_full(err) { " (disk full: applying store.when_full)" } else { "" };
            error!(error = %err, events = group.committed_events, failed_commits = self.failures_unlogged,
                "commit failed{hint}; the group was not stored and devices were not acknowledged; further messages suppressed for 10s");
            self.failures_unlogged = 0;
            self.last_failure_log = Some(Instant::now());
        }
    }

    /// A damaged journal (`SQLITE_CORRUPT` / `SQLITE_NOTADB` on any statement) cannot be
    /// worked around without losing rows silently: leave its `.damaged` marker beside it (so
    /// that a restart refuses it instead of running into the damage again), say what to do,
    /// and stop the process with exit code 1. Nothing is deleted or rewritten.
    pub(super) fn stop_if_damaged(&self, err: &rusqlite::Error) {
        if !matches!(
            err.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
        ) {
            return;
        }
        let path = self.journal.path().to_owned();
        let marker = self.journal.damaged_marker();
        if let Err(io) = std::fs::write(&marker, format!("{err}\n")) {
            warn!(error = %io, marker = %marker.display(), "cannot leave the damaged-journal marker");
        }
        let err = crate::store::StoreError::Damaged { path, marker, reason: err.to_string() };
        error!("{err}");
        eprintln!("edge-gateway: {err}");
        std::process::exit(1);
    }

    /// Counts a failed write by kind; a full disk is remembered until events fit again.
    pub(super) fn note_store_error(&mut self, err: &rusqlite::Error) {
        self.stop_if_damaged(err);
        let kind = if is_disk_full(err) {
            StoreErrorKind::DiskFull
        } else if matches!(err.sqlite_error_code(), Some(rusqlite::ErrorCode::SystemIoFailure)) {
            StoreErrorKind::Io
        } else {
            StoreErrorKind::Other
        };
        self.metrics.store.count_error(kind);
        if kind == StoreErrorKind::DiskFull {
            self.metrics.store.disk_full.set(1);
            if !self.disk_full {
                self.disk_full = true;
                self.last_probe = Some(Instant::now());
                self.metrics
                    .note_error(crate::store::now_ms(), format!("journal: disk full ({err}); store.when_full applies"));
            }
        } else {
            self.metrics.note_error(crate::store::now_ms(), format!("journal commit failed: {err}"));
        }
    }
}
