//! The pipeline's glue: what passes between the stages, and how the stages are started
//! and stopped. The stages themselves live in their own modules (docs/architecture.md
//! has the data flow); this module holds what belongs to none of them alone:
//!
//! - [`Source`]: what a device source (the embedded broker or a client of an external one)
//!   is given at start: the ingest stage, the journal's handle, the device acks to publish
//!   and the dead letters an operator replays.
//! - [`batcher`]: [`Batcher`], which runs ingest on a source's publishes and hands groups
//!   to the journal's writer.
//! - [`Replay`] and [`Denied`]: dead letters on their way back in (only those the rights of
//!   their original publish allow), and publishes the device gate refused on their way to
//!   the dead-letter table, with the device that sent them.
//! - [`stages`]: [`Stages`], the started stages in start order; stopped in reverse.
//! - [`routes`]: [`RouteControl`], which a reload calls to change the routes and the cloud
//!   credentials of the running stages, in an order that loses nothing.
//!
//! Nothing here decides anything about an event: ingest decides, the journal keeps.

pub mod batcher;
pub mod routes;
pub mod stages;

use std::sync::mpsc;

pub use batcher::{Batcher, TICK};
pub use routes::{RouteControl, Wiring};
pub use stages::{Running, Stages};

use serde::{Deserialize, Serialize};

use crate::ingest::Ingest;
use crate::rights::may_publish;
use crate::store::{DeadLetterRow, DeviceAck, Done, Incoming, StoreHandle};

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
///
/// Made only by [`Replay::of`], which applies the rights of the original publish: a replay
/// may not turn a publish the device gate refused into another device's event
/// (SECURITY.md, "Dead-letter replay"). So every source's batcher, and the CLI on a stopped
/// gateway, only ever runs dead letters that pass.
#[derive(Debug, Clone)]
pub struct Replay {
    id: i64,
    topic: String,
    payload: Vec<u8>,
    publisher: Option<String>,
}

/// A dead letter that a replay refuses, and why (a full sentence that says what to do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayRefused {
    /// Dead letter id.
    pub id: i64,
    /// Why it is not replayed.
    pub reason: String,
}

impl Replay {
    /// The replay of `row`, when the rights of its original publish allow it:
    /// - a dead letter with a publisher (the device the gate authenticated) is replayed only
    ///   if that device may publish on its topic ([`may_publish`], the gate's own rule), so
    ///   a denied publish stays denied;
    /// - one without a publisher is refused when its reason is the gate's denial (kept
    ///   before the journal recorded publishers: who sent it is unknown);
    /// - any other (a payload ingest refused; the gate had let its publish through) is
    ///   replayed.
    pub fn of(row: DeadLetterRow) -> Result<Replay, ReplayRefused> {
        let id = row.id;
        let refused = |reason: String| ReplayRefused { id, reason };
        match row.publisher.as_deref() {
            Some(device) if !may_publish(device, &row.topic) => {
                return Err(refused(format!(
                    "published by device {device:?}, which may not publish on {:?} (a device publishes only under \
                     devices/{device}/); a replay applies the rights of the original publish, so it stays denied \
                     (remove it with `edge-gateway dlq purge {id}`)",
                    row.topic
                )));
            }
            None if is_gate_denial(&row.reason) => {
                return Err(refused(format!(
                    "refused by the device gate before the journal kept who published it, so the rights of its \
                     publisher cannot be checked again; not replayed (remove it with `edge-gateway dlq purge {id}`)"
                )));
            }
            _ => {}
        }
        Ok(Replay { id, topic: row.topic, payload: row.payload, publisher: row.publisher })
    }

    /// The dead letter's id.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// Runs ingest on the dead letter again, appending to `out` what it became; a new dead
    /// letter keeps the publisher, so its rights still hold at the next replay.
    pub fn run(self, ingest: &mut Ingest, done: Option<Done>, out: &mut Vec<Incoming>) {
        let first = out.len();
        ingest.process(&self.topic, &self.payload, done, out);
        for item in &mut out[first..] {
            if let Incoming::DeadLetter(letter) = item {
                letter.publisher.clone_from(&self.publisher);
            }
        }
    }
}

/// Whether `reason` is the device gate's refusal of a publish (devices/gate.rs writes
/// `device "ID" may not publish on "TOPIC": ...`).
fn is_gate_denial(reason: &str) -> bool {
    reason.starts_with("device \"") && reason.contains("\" may not publish on \"")
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
    /// The device the gate authenticated (its rights decide a later replay).
    pub publisher: String,
}

impl Denied {
    /// A publish by device `publisher` on `topic`, refused for `reason`.
    pub fn by(publisher: &str, topic: String, payload: Vec<u8>, reason: String) -> Denied {
        Denied { topic, payload, reason, publisher: publisher.to_owned() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(topic: &str, reason: &str, publisher: Option<&str>) -> DeadLetterRow {
        DeadLetterRow {
            id: 7,
            received_ms: 0,
            topic: topic.into(),
            reason: reason.into(),
            publisher: publisher.map(Into::into),
            payload: b"{}".to_vec(),
            payload_text: "{}".into(),
            payload_is_hex: false,
        }
    }

    /// The gate's sentence for dev1 publishing on dev2's topic (devices/gate.rs).
    const DENIAL: &str = "device \"dev1\" may not publish on \"devices/dev2/events\": a device publishes only under \
                          devices/dev1/ (not on its ack or commands topics); the device was disconnected";

    #[test]
    fn a_denied_publish_stays_denied_and_the_refusal_names_the_publisher() {
        let refused = Replay::of(row("devices/dev2/events", DENIAL, Some("dev1"))).unwrap_err();
        assert_eq!(refused.id, 7);
        assert!(refused
            .reason
            .starts_with("published by device \"dev1\", which may not publish on \"devices/dev2/events\""));
        assert!(refused.reason.contains("dlq purge 7"), "{}", refused.reason);
    }

    #[test]
    fn a_denial_kept_before_publishers_were_recorded_is_refused() {
        let refused = Replay::of(row("devices/dev2/events", DENIAL, None)).unwrap_err();
        assert!(refused.reason.contains("before the journal kept who published it"), "{}", refused.reason);
    }

    #[test]
    fn letters_the_rights_allow_are_replayed() {
        let bad_payload = "undecodable payload: unexpected end of input";
        assert_eq!(Replay::of(row("devices/dev1/events", bad_payload, None)).map(|r| r.id()), Ok(7));
        assert!(Replay::of(row("devices/dev1/events", bad_payload, Some("dev1"))).is_ok());
        // A reason that merely mentions a device is not the gate's denial.
        assert!(Replay::of(row("zigbee2mqtt/x", "invalid event: device \"x\" is too long", None)).is_ok());
    }

    #[test]
    fn a_replay_that_is_a_dead_letter_again_keeps_its_publisher() {
        let routes = "[[routes]]\nname = \"t\"\nfrom = \"devices/+/events\"\nto = \"up\"\n";
        let config = crate::config::Config::parse(routes).unwrap();
        let metrics = std::sync::Arc::new(crate::metrics::Metrics::new(&["t".to_owned()]));
        let mut ingest = Ingest::new(config.routes, metrics, Vec::new(), 1);
        let replay = Replay::of(row("devices/dev1/events", "undecodable payload", Some("dev1"))).unwrap();
        let mut out = Vec::new();
        replay.run(&mut ingest, None, &mut out);
        let [Incoming::DeadLetter(letter)] = &out[..] else { panic!("not a dead letter") };
        assert_eq!(letter.publisher.as_deref(), Some("dev1"));
    }
}
