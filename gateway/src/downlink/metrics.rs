//! Metrics of the downlink, rendered on `/metrics` with the gateway's own:
//! `edge_gateway_commands_total{status}` (statuses the cloud acknowledged, so each counts
//! once), `edge_gateway_commands_open` (accepted, not finished), `edge_gateway_command_statuses_pending`
//! (statuses waiting for the cloud), `edge_gateway_commands_link_up` (the command session).

use std::fmt::Write as _;

use crate::metrics::{Counter, Gauge};

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

    /// Appends the Prometheus text.
    pub fn render(&self, out: &mut String) {
        let _ =
            writeln!(out, "# HELP edge_gateway_commands_total Command statuses acknowledged by the cloud, by status.");
        let _ = writeln!(out, "# TYPE edge_gateway_commands_total counter");
        for (status, counter) in STATUSES.iter().zip(&self.statuses) {
            let _ = writeln!(out, "edge_gateway_commands_total{{status=\"{status}\"}} {}", counter.get());
        }
        let gauges = [
            ("edge_gateway_commands_open", "Commands accepted and not finished.", self.open.get()),
            ("edge_gateway_command_statuses_pending", "Command statuses waiting for the cloud.", self.pending.get()),
            (
                "edge_gateway_commands_link_up",
                "1 while the command session to the cloud is connected.",
                self.link_up.get(),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
    }
}
