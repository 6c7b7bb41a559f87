//! Metrics of the downlink, rendered on `/metrics` with the gateway's own:
//! `edge_gateway_commands_total{status}` (statuses the cloud acknowledged, so each counts
//! once), `edge_gateway_commands_open` (accepted, not finished), `edge_gateway_command_statuses_pending`
//! (statuses waiting for the cloud), `edge_gateway_commands_link_up` (the command session).
//! The downlink's two sides are their only writers; they only report.
//!
//! Adding a metric: a field here, and a line in the [`Render`] impl.

use std::sync::Arc;

use crate::meter::{Counter, Exposition, Gauge, LastError, Render};

/// The status names, in label order.
pub const STATUSES: [&str; 5] = ["accepted", "delivered", "done", "failed", "expired"];

/// Counters and gauges of cloud-to-device commands.
#[derive(Debug, Default)]
pub struct CommandMetrics {
    /// Per status of [`STATUSES`]: statuses the cloud acknowledged.
    pub statuses: [Counter; 5],
    /// Open commands (accepted or delivered).
    pub open: Gauge,
    /// Statuses waiting for the cloud's PUBACK.
    pub pending: Gauge,
    /// 1 while the command session is connected.
    pub link_up: Gauge,
}

impl CommandMetrics {
    /// Counts one acknowledged status.
    pub fn count_status(&self, status: &str) {
        if let Some(i) = STATUSES.iter().position(|s| *s == status) {
            self.statuses[i].add(1);
        }
    }
}

impl Render for CommandMetrics {
    fn render(&self, out: &mut Exposition) {
        let help = "Command statuses acknowledged by the cloud, by status.";
        let mut family = out.family("edge_gateway_commands_total", "counter", help);
        for (status, counter) in STATUSES.iter().zip(&self.statuses) {
            family.sample(&format!("status=\"{status}\""), counter.get());
        }
        out.single("edge_gateway_commands_open", "gauge", "Commands accepted and not finished.", self.open.get());
        let help = "Command statuses waiting for the cloud.";
        out.single("edge_gateway_command_statuses_pending", "gauge", help, self.pending.get());
        let help = "1 while the command session to the cloud is connected.";
        out.single("edge_gateway_commands_link_up", "gauge", help, self.link_up.get());
    }
}

/// What the downlink reports to: its own metrics and the last error (cheap to clone).
#[derive(Debug, Clone)]
pub struct CommandMeters {
    /// The downlink's own metrics.
    pub commands: Arc<CommandMetrics>,
    /// The last error, for `/api/status`.
    pub last_error: Arc<LastError>,
}

impl CommandMeters {
    /// Remembers an error for `/api/status`.
    pub fn note_error(&self, now_ms: i64, message: impl Into<String>) {
        self.last_error.note(now_ms, message);
    }
}
