//! The ingest batcher: the glue between a device source and the journal. A source hands
//! it every publish; it runs [`Ingest`] on them and hands groups (up to 256) to the store's
//! writer, with the dead letters the device gate made and the dead letters an operator
//! replays. One per source, on the source's own thread or task.
//!
//! Invariants: a group is handed over whole, in arrival order; a replayed dead letter is
//! deleted only by its `done`, after what it became is committed (docs/architecture.md);
//! replays are [`Replay`]s, so only dead letters the rights of their original publish allow
//! reach ingest again, and a denied publish keeps its publisher into the dead-letter table.

use std::sync::mpsc;

use super::{Denied, Replay};
use crate::ingest::Ingest;
use crate::store::{self, StoreHandle};

/// How often an idle source runs [`Batcher::tick`].
pub const TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// Flushes a batch of processed publishes to the store when it is big enough or the
/// source has nothing more right now.
pub struct Batcher {
    ingest: Ingest,
    store: StoreHandle,
    pending: Vec<store::Incoming>,
    replays: mpsc::Receiver<Replay>,
    denied: Option<mpsc::Receiver<Denied>>,
    /// Receive time of the group being formed, read when its first publish came in (a
    /// group is at most 256 publishes, about a millisecond under full load).
    group_ms: i64,
    /// Wait for room in the writer's queue ([`store::StoreHandle::ingest_bounded`]).
    bounded: bool,
}

impl Batcher {
    /// A batcher for one source: its ingest stage, the journal, and the replays it takes.
    pub fn new(ingest: Ingest, store: StoreHandle, replays: mpsc::Receiver<Replay>) -> Self {
        Batcher { ingest, store, pending: Vec::with_capacity(256), replays, denied: None, group_ms: 0, bounded: false }
    }

    /// Also takes the publishes the device gate refused, as dead letters.
    pub fn with_denied(mut self, denied: mpsc::Receiver<Denied>) -> Self {
        self.denied = Some(denied);
        self
    }

    /// Hands groups over with [`store::StoreHandle::ingest_bounded`]: for a source
    /// on a thread of its own, never an async task.
    pub fn bounded(mut self) -> Self {
        self.bounded = true;
        self
    }

    /// Processes one publish; flushes when 256 are waiting.
    pub fn push(&mut self, topic: &str, payload: &[u8], done: Option<store::Done>) -> Result<(), store::StoreError> {
        if self.pending.is_empty() {
            self.group_ms = store::now_ms();
        }
        self.ingest.process_at(topic, payload, done, &mut self.pending, self.group_ms);
        if self.pending.len() >= 256 {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands everything waiting to the store (and takes replays, up to 1,000 a time).
    pub fn flush(&mut self) -> Result<(), store::StoreError> {
        for _ in 0..1000 {
            let Ok(replay) = self.replays.try_recv() else { break };
            let store = self.store.clone();
            let id = replay.id();
            let done: store::Done = Box::new(move || store.forget_dead_letters(vec![id]));
            // A `Replay` exists only when the rights of the original publish allow it.
            replay.run(&mut self.ingest, Some(done), &mut self.pending);
        }
        while let Some(Ok(denied)) = self.denied.as_ref().map(mpsc::Receiver::try_recv) {
            let letter = self.ingest.denied(denied.topic, denied.payload, denied.reason, denied.publisher);
            self.pending.push(letter);
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        let group = std::mem::replace(&mut self.pending, Vec::with_capacity(256));
        if self.bounded {
            self.store.ingest_bounded(group)
        } else {
            self.store.ingest(group)
        }
    }

    /// Counts publishes the device broker lost before ingest took them.
    pub fn overrun(&self, lost: u64) {
        self.ingest.count_overrun(lost);
    }

    /// Whether publishes wait to be handed over.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Periodic work while the source is idle: events held by `keep_last` filters whose
    /// interval ended go to the store.
    pub fn tick(&mut self) -> Result<(), store::StoreError> {
        let held = self.ingest.flush_held();
        self.pending.extend(held);
        self.flush()
    }
}
