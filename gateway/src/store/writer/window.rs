//! The writer's loop and its commit window (docs/architecture.md, "The commit window").
//!
//! What a group costs on disk and in fsyncs hardly depends on how many events it holds: a
//! commit rewrites the pages it touches (the tail of the events table and its index, the
//! route's counters, the devices' marks, the read model) and syncs the WAL once. At a
//! modest steady load, committing each arrival on its own therefore costs a few KiB of
//! writes and an fsync per *event*. So the writer holds what arrives for up to
//! `store.commit_window` after the first write of a group, and commits it all at once:
//!
//! - events, acknowledgements of the cloud (their deletes) and device connection changes
//!   wait for the window, so a group's deletes ride in the same commit as its inserts;
//! - a group is committed at once when it reaches `store.commit_max_events`, so under a
//!   heavy load the window adds nothing (the next group is already waiting);
//! - reads of committed rows (the forwarder's) are answered at once: they see only what is
//!   committed, and the pending writes are still only in memory (with a zero window a read
//!   waits for the writes sent before it, as it always did);
//! - an operator's request (dead letters, devices, purge, replay) and shutdown commit what
//!   is pending first, so their answers include it;
//! - so does an event whose sender waits for its commit (`done`: the external broker mode
//!   acknowledges only then, and its broker sends no more than its in-flight window).
//!
//! Nothing is acknowledged early: a device's ack, an external broker's ack and the
//! forwarder's wake-up still follow the commit of the event (`store/mod.rs`, invariant 1);
//! a cloud acknowledgement only *delays* its delete, never the other way round (invariant 2).
//! The window is the price: it is added to the device-ack latency, and the config caps it
//! at the shortest route `batch.max_delay`.

use std::sync::mpsc;
use std::time::Instant;

use tracing::{error, info, warn};

use super::{Writer, MAINTENANCE_EVERY, MAINTENANCE_IDLE_EVERY};
use crate::store::handle::{Command, Queued};

/// Commands held for the next commit, and when that commit is due.
#[derive(Default)]
struct Pending {
    commands: Vec<Command>,
    events: usize,
    /// When the window of the first held write ends.
    due: Option<Instant>,
    /// Commit as soon as everything waiting in the channel is taken.
    now: bool,
}

impl Writer {
    /// Runs until shutdown; `queued` is told of every event taken out of `rx` and of the
    /// open window.
    pub(in crate::store) fn run(mut self, rx: mpsc::Receiver<Command>, queued: &Queued) {
        let taken = |n| queued.take(n);
        // Retained acks live in the device broker's memory and are gone after a restart:
        // publish every known mark once, so a device that reconnects learns what is stored.
        let known: Vec<String> = self.devices.keys().cloned().collect();
        self.publish_marks(known.iter());
        let window = self.config.commit_window;
        let mut next_maintenance = Instant::now();
        let mut busy = true;
        let mut pending = Pending::default();
        loop {
            queued.set_window(pending.due.filter(|_| !pending.now));
            let wake = pending.due.map_or(next_maintenance, |due| due.min(next_maintenance));
            let mut closed = false;
            // In an open window the writer sleeps: plain events do not wake it, only an
            // urgent command, a full group or the window's end do (`Queued::wake_writer`);
            // at a modest load that is one wake-up per group instead of one per arrival.
            // Otherwise it waits on the channel, and the first write opens a window.
            let first = if pending.due.is_some() && !pending.now {
                std::thread::park_timeout(wake.saturating_duration_since(Instant::now()));
                match rx.try_recv() {
                    Ok(command) => Some(command),
                    Err(mpsc::TryRecvError::Empty) => None,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        closed = true;
                        None
                    }
                }
            } else {
                match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
                    Ok(command) => Some(command),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        closed = true;
                        None
                    }
                }
            };
            if let Some(command) = first {
                let before = pending.events;
                self.hold(command, &mut pending, window);
                while pending.events < self.config.commit_max_events {
                    match rx.try_recv() {
                        Ok(command) => self.hold(command, &mut pending, window),
                        Err(mpsc::TryRecvError::Empty) => break,
                        Err(mpsc::TryRecvError::Disconnected) => {
                            closed = true;
                            break;
                        }
                    }
                }
                taken(pending.events - before);
            }
            let due = pending.due.is_some_and(|due| Instant::now() >= due);
            if pending.now || due || closed || pending.events >= self.config.commit_max_events {
                let group = std::mem::take(&mut pending);
                if !group.commands.is_empty() {
                    // Activity: maintenance (retention, gauges) at its busy pace again.
                    busy = true;
                    next_maintenance = next_maintenance.min(Instant::now() + MAINTENANCE_EVERY);
                    if self.apply(group.commands) {
                        break;
                    }
                }
            }
            if closed {
                break;
            }
            if Instant::now() >= next_maintenance {
                if let Err(err) = self.maintenance() {
                    self.stop_if_damaged(&err);
                    error!(error = %err, "journal maintenance failed; will retry");
                }
                // Nothing was written since the last pass: nothing it looks at changed but
                // the clock, so an idle journal is looked at 10x less often (retention of
                // an idle backlog then acts within MAINTENANCE_IDLE_EVERY).
                let every = if busy { MAINTENANCE_EVERY } else { MAINTENANCE_IDLE_EVERY };
                busy = false;
                next_maintenance = Instant::now() + every;
            }
        }
        if let Err(err) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            warn!(error = %err, "final WAL checkpoint failed (the data is safe in the WAL)");
        }
        info!("journal closed");
    }

    /// Holds a write for the group (starting its window), answers a read of committed rows
    /// at once, and asks for an immediate commit for anything a caller waits on.
    fn hold(&mut self, command: Command, pending: &mut Pending, window: std::time::Duration) {
        match command {
            // Without a window, a read waits for the writes before it (the old order).
            Command::Read { route, after, limit, reply } if !window.is_zero() => {
                let rows = self.read(route, after, limit);
                if let Err(err) = &rows {
                    self.stop_if_damaged(err);
                }
                let _ = reply.send(rows.map_err(crate::store::StoreError::from));
                return;
            }
            // A reload waits for it, and no held event can name a slot it adds.
            Command::Route { spec, active, reply } => {
                let _ = reply.send(self.route_slot(spec, active));
                return;
            }
            Command::Ingest(ref items) => pending.events += items.len(),
            _ => {}
        }
        // A `done` means a sender waits for this commit before it sends more (an external
        // broker's unacknowledged window, a replayed dead letter): holding it would throttle
        // that sender to its window per commit_window. So does a request someone waits for.
        if command.urgent() {
            pending.now = true;
        }
        if window.is_zero() {
            pending.now = true;
        }
        pending.due.get_or_insert_with(|| Instant::now() + window);
        pending.commands.push(command);
    }
}
