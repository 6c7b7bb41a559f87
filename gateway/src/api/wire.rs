//! The JSON bodies of the HTTP API, one definition each, shared by the server ([`crate::api`])
//! and the terminal client ([`crate::cli::client`]). Rows the journal already defines (dead
//! letters, devices, readings) are re-exported from the store, not copied.
//!
//! Every type here is both `Serialize` and `Deserialize`. Bodies the client reads carry
//! `#[serde(default)]`, so that a gateway of another version that lacks a field still gives
//! a readable answer (missing numbers read as 0, as the terminal commands always did).
//! Fields are only added, never renamed: scripts and the status page read these bodies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::pipeline::ReplayRefused;
pub use crate::store::dead_letters::DeadLetterRow;
use crate::store::dead_letters::Purge;
pub use crate::store::read_model::{DeviceDetail, DeviceSummary, LatestReading};

/// `GET /api/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    /// Gateway id.
    pub gateway: String,
    /// The gateway's version.
    pub version: String,
    /// Seconds since the process started.
    pub uptime_seconds: u64,
    /// Journal open and the device side listening.
    pub ready: bool,
    /// Whether the cloud link is connected.
    pub cloud_link_up: bool,
    /// When the link last changed state (ms since the epoch), None before the first attempt.
    pub cloud_link_since_ms: Option<u64>,
    /// Cloud reconnects so far.
    pub cloud_reconnects: u64,
    /// The last error worth attention.
    pub last_error: Option<LastError>,
    /// Device publishes received.
    pub events_received: u64,
    /// Events committed to the journal.
    pub events_committed: u64,
    /// Device publishes per second (last second).
    pub events_in_per_second: u64,
    /// Events acknowledged by the cloud per second (last second).
    pub events_out_per_second: u64,
    /// Dead letters kept.
    pub dead_letters: u64,
    /// Device clients connected to the embedded broker now.
    pub devices_connected: u64,
    /// Device logins refused so far.
    pub device_auth_failures: u64,
    /// Size of the journal.
    pub store_bytes: u64,
    /// What is wrong with the journal, if anything (e.g. the disk is full).
    pub store_error: Option<String>,
    /// Events dropped, by reason label.
    pub dropped: BTreeMap<String, u64>,
    /// One entry per configured route, in config order.
    pub routes: Vec<RouteStatus>,
    /// How the last config reload ended (None: no reload since the start).
    pub last_reload: Option<ReloadOutcome>,
}

/// How a config reload ended (`POST /api/reload`, `/api/status`'s `last_reload`).
pub use crate::reload::Outcome as ReloadOutcome;
/// What reloading a file would change (`POST /api/config/diff`).
pub use crate::reload::Preview as ConfigPreview;

/// `last_error` of [`Status`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LastError {
    /// When (ms since the epoch).
    pub at_ms: i64,
    /// What happened.
    pub message: String,
}

/// One route of [`Status`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteStatus {
    /// Route name.
    pub name: String,
    /// Events waiting for the cloud.
    pub queue_depth: u64,
    /// Their bytes.
    pub queue_bytes: u64,
    /// Age of the oldest waiting event, 0 when none waits.
    pub oldest_age_seconds: u64,
    /// Events acknowledged by the cloud.
    pub forwarded: u64,
    /// Batches acknowledged by the cloud.
    pub batches: u64,
}

/// Body of `POST /api/dlq/replay` and `/api/dlq/purge`: which dead letters. `all` wins over
/// `older_than_ms`, which wins over `ids`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Selection {
    /// These ids.
    pub ids: Vec<i64>,
    /// All of them.
    pub all: bool,
    /// (purge) Those older than this many milliseconds.
    pub older_than_ms: Option<i64>,
}

impl Selection {
    /// These ids.
    pub fn ids(ids: Vec<i64>) -> Selection {
        Selection { ids, ..Selection::default() }
    }

    /// Every dead letter.
    pub fn all() -> Selection {
        Selection { all: true, ..Selection::default() }
    }

    /// (purge) Those older than `ms` milliseconds.
    pub fn older_than(ms: i64) -> Selection {
        Selection { older_than_ms: Some(ms), ..Selection::default() }
    }

    /// The journal's purge for this selection, ages counted back from `now_ms`.
    pub fn purge(&self, now_ms: i64) -> Purge {
        match (self.all, self.older_than_ms) {
            (true, _) => Purge::All,
            (false, Some(age)) => Purge::OlderThan(now_ms - age),
            (false, None) => Purge::Ids(self.ids.clone()),
        }
    }
}

/// Answer of `POST /api/dlq/replay`: dead letters handed to the device side's ingest, and
/// those the rights of their original publish keep out, each with why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DlqReplayed {
    /// How many were handed over.
    pub queued: u64,
    /// The refused ones, oldest first (a gateway before issue 15 sends none).
    pub refused: Vec<ReplayRefused>,
}

/// Answer of `POST /api/dlq/purge`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purged {
    /// Dead letters deleted.
    pub deleted: u64,
}

/// `GET /api/dlq?after=ID&limit=N` query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlqPage {
    /// Only ids above this [default 0].
    pub after: Option<i64>,
    /// Most rows [default 100, at most 10,000].
    pub limit: Option<usize>,
}

/// `GET /api/devices?readings=true&limit=N` query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevicesQuery {
    /// Each device with its latest readings (else summaries only).
    #[serde(default)]
    pub readings: bool,
    /// The first N devices by id.
    pub limit: Option<usize>,
}

/// Body of `POST /api/replay`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayRequest {
    /// Route name.
    pub route: String,
    /// Events received at or after this (ms since the epoch).
    pub since_ms: i64,
    /// ... and before this; default: now.
    pub until_ms: Option<i64>,
}

/// Answer of `POST /api/replay`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayQueued {
    /// Events queued again.
    pub queued: u64,
    /// The route.
    pub route: String,
}
