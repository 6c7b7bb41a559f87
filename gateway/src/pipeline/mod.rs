//! The pipeline's glue: what passes between the stages, and how the stages are started
//! and stopped. The stages themselves live in their own modules (docs/architecture.md
//! has the data flow); this module holds what belongs to none of them alone:
//!
//! - [`Source`]: what a device source (the embedded broker or a client of an external one)
//!   is given at start: the ingest stage, the journal's handle, the device acks to publish
//!   and the dead letters an operator replays.
//! - [`batcher`]: [`Batcher`], which runs ingest on a source's publishes and hands groups
//!   to the journal's writer.
//! - [`Replay`] and [`Denied`]: dead letters on their way back in, and publishes the device
//!   gate refused on their way to the dead-letter table.
//! - [`stages`]: [`Stages`], the started stages in start order; stopped in reverse.
//!
//! Nothing here decides anything about an event: ingest decides, the journal keeps.

pub mod batcher;
pub mod stages;

use std::sync::mpsc;

pub use batcher::{Batcher, TICK};
pub use stages::{Running, Stages};

use crate::ingest::Ingest;
use crate::store::{DeviceAck, StoreHandle};

/// What a device source is started with.
pub struct Source {
    /// The ingest stage (restored filter state included).
    pub ingest: Ingest,
    /// The journal.
    pub store: StoreHandle,
    /// After each commit, each device's new high-water mark, to publish on
    /// `devices/{id}/ack`.
    pub acks: mpsc::Receiver<Vec<DeviceAck>>,
    /// Dead letters sent through ingest again (`dlq replay`).
    pub replays: mpsc::Receiver<Replay>,
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

/// A publish the device gate refused (outside the device's topics), on its way to the
/// dead-letter table.
#[derive(Debug)]
pub struct Denied {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Why, naming the device.
    pub reason: String,
}
