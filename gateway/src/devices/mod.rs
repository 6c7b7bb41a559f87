//! The device side: where events come from and where device acks go.
//!
//! Two modes, one contract: every publish on a route's topic is handed to [`Ingest`] on a
//! dedicated thread and then to the store; after each commit, the highest committed
//! `(boot, seq)` of every device in it is published, retained, on `devices/{device}/ack`
//! (`{"boot":B,"seq":S}`), so firmware can free its retention ring (DESIGN.md guarantee 6).
//!
//! - [`embedded`]: rumqttd inside the gateway. It acknowledges a device's QoS 1 publish
//!   when the message is in its memory, before the journal has it; the device ack above
//!   closes that gap for firmware that waits for it. Devices reach it only through the
//!   [`gate`] (TLS, [`auth`], limits, per-device topic rights; [`mqtt`] is its parser;
//!   [`relay`] ends its relays so that the broker never removes a connection twice).
//! - [`external`]: a client of an existing broker (QoS 1, persistent session, manual acks):
//!   the broker's message is acknowledged only after the journal committed it.

pub mod auth;
pub mod embedded;
pub mod external;
pub mod gate;
pub mod inflow;
pub mod metrics;
pub mod mqtt;
pub mod relay;
pub mod rights;

use std::sync::mpsc;

use crate::ingest::Ingest;
use crate::store::DeviceAck;

/// Errors starting the device side.
#[derive(Debug, thiserror::Error)]
pub enum DevicesError {
    /// Another process (maybe another gateway) holds the port.
    #[error("cannot listen for devices on {addr}: {source} (is another gateway or MQTT broker running there? change [devices].listen)")]
    PortInUse {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The broker did not come up.
    #[error("the embedded broker did not start: {0}")]
    Broker(String),
    /// A thread could not be started.
    #[error("cannot start a device-side thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Topics of the gateway's own device protocol: what it publishes to devices
/// (`devices/{device}/ack`, `.../commands`) and the devices' answers to commands
/// (`.../commands/status`, taken by `crate::downlink`): never device events, even when a
/// route's filter would take them.
pub fn is_gateway_to_device(topic: &str) -> bool {
    edge_event::topic::ack_device(topic).is_some()
        || edge_event::topic::commands_device(topic).is_some()
        || edge_event::topic::command_status_device(topic).is_some()
}

/// The topic and payload (`{"boot":B,"seq":S}`) that carry a device's mark, written by
/// edge-event's own helpers. None only for a device id that cannot name a topic, which a
/// committed event never has (ids are validated at ingest).
pub fn ack_message(ack: &DeviceAck) -> Option<(String, Vec<u8>)> {
    let mut topic = edge_event::topic::Topic::new();
    edge_event::topic::write_ack_topic(&ack.device, &mut topic).ok()?;
    let mut buf = [0u8; edge_event::Ack::MAX_JSON_LEN];
    let len = edge_event::Ack { boot: ack.boot, seq: ack.seq }.encode_json(&mut buf).ok()?;
    Some((topic.as_str().to_owned(), buf[..len].to_vec()))
}

/// How often an idle source runs [`Batcher::tick`].
pub(crate) const TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// Flushes a batch of processed publishes to the store when it is big enough or the
/// source has nothing more right now.
pub(crate) struct Batcher {
    ingest: Ingest,
    store: crate::store::StoreHandle,
    pending: Vec<crate::store::Incoming>,
    replays: mpsc::Receiver<Replay>,
    denied: Option<mpsc::Receiver<gate::Denied>>,
    /// Receive time of the group being formed, read when its first publish came in (a
    /// group is at most 256 publishes, about a millisecond under full load).
    group_ms: i64,
    /// Wait for room in the writer's queue ([`crate::store::StoreHandle::ingest_bounded`]).
    bounded: bool,
}

/// A dead letter sent through the pipeline again (`dlq replay`): it is deleted only after
/// what it became (an event, or a new dead letter) is committed.
#[derive(Debug, Clone)]
pub struct Replay {
    /// Dead letter id.
    pub id: i64,
    /// Its topic.
    pub topic: String,
    /// Its raw payload.
    pub payload: Vec<u8>,
}

impl Batcher {
    pub(crate) fn new(ingest: Ingest, store: crate::store::StoreHandle, replays: mpsc::Receiver<Replay>) -> Self {
        Batcher { ingest, store, pending: Vec::with_capacity(256), replays, denied: None, group_ms: 0, bounded: false }
    }

    /// Also takes the publishes the device gate refused, as dead letters.
    pub(crate) fn with_denied(mut self, denied: mpsc::Receiver<gate::Denied>) -> Self {
        self.denied = Some(denied);
        self
    }

    /// Hands groups over with [`crate::store::StoreHandle::ingest_bounded`]: for a source
    /// on a thread of its own, never an async task.
    pub(crate) fn bounded(mut self) -> Self {
        self.bounded = true;
        self
    }

    /// Processes one publish; flushes when 256 are waiting.
    pub(crate) fn push(
        &mut self,
        topic: &str,
        payload: &[u8],
        done: Option<crate::store::Done>,
    ) -> Result<(), crate::store::StoreError> {
        if self.pending.is_empty() {
            self.group_ms = crate::store::now_ms();
        }
        self.ingest.process_at(topic, payload, done, &mut self.pending, self.group_ms);
        if self.pending.len() >= 256 {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands everything waiting to the store (and takes replays, up to 1,000 a time).
    pub(crate) fn flush(&mut self) -> Result<(), crate::store::StoreError> {
        for _ in 0..1000 {
            let Ok(replay) = self.replays.try_recv() else { break };
            let store = self.store.clone();
            let id = replay.id;
            let done: crate::store::Done = Box::new(move || store.forget_dead_letters(vec![id]));
            self.ingest.process(&replay.topic, &replay.payload, Some(done), &mut self.pending);
        }
        while let Some(Ok(denied)) = self.denied.as_ref().map(mpsc::Receiver::try_recv) {
            let letter = self.ingest.denied(&denied.topic, &denied.payload, denied.reason);
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
    pub(crate) fn overrun(&self, lost: u64) {
        self.ingest.count_overrun(lost);
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Periodic work while the source is idle: events held by `keep_last` filters whose
    /// interval ended go to the store.
    pub(crate) fn tick(&mut self) -> Result<(), crate::store::StoreError> {
        let held = self.ingest.flush_held();
        self.pending.extend(held);
        self.flush()
    }
}
