//! The reload's metrics: reloads by result, and when the running config was last loaded
//! successfully (at start, or by a reload that applied). The reload is their only writer.

use crate::meter::{Counter, Exposition, Gauge, Render};

/// How a reload ended (the `result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadResult {
    /// The file was valid; what can change live was applied (what needs a restart is
    /// listed in the outcome).
    Applied,
    /// The file was unreadable or invalid: nothing changed.
    Refused,
    /// The file was valid but a stage could not apply its part (named in the outcome);
    /// the other parts were applied.
    Failed,
}

impl ReloadResult {
    /// Every result, in label order.
    pub const ALL: [ReloadResult; 3] = [ReloadResult::Applied, ReloadResult::Refused, ReloadResult::Failed];

    /// The `result` label.
    pub fn label(self) -> &'static str {
        match self {
            ReloadResult::Applied => "applied",
            ReloadResult::Refused => "refused",
            ReloadResult::Failed => "failed",
        }
    }
}

/// Everything the reload reports.
#[derive(Debug, Default)]
pub struct ReloadMetrics {
    /// Reloads by result (index = position in [`ReloadResult::ALL`]).
    pub reloads: [Counter; 3],
    /// When the config running now was last loaded whole and valid (start or an applied
    /// reload), seconds since the epoch.
    pub last_success_s: Gauge,
    /// 1 when the last reload (or the start) succeeded, 0 after a refused or failed one.
    pub last_successful: Gauge,
}

impl ReloadMetrics {
    /// Metrics for a gateway that loaded its config at `now_s`.
    pub fn started(now_s: u64) -> ReloadMetrics {
        let metrics = ReloadMetrics::default();
        metrics.last_success_s.set(now_s);
        metrics.last_successful.set(1);
        metrics
    }

    /// Counts one reload.
    pub fn count(&self, result: ReloadResult, now_s: u64) {
        self.reloads[result as usize].add(1);
        let ok = result == ReloadResult::Applied;
        self.last_successful.set(u64::from(ok));
        if ok {
            self.last_success_s.set(now_s);
        }
    }
}

impl Render for ReloadMetrics {
    fn render(&self, out: &mut Exposition) {
        let help = "Config reloads (SIGHUP, `edge-gateway reload`), by result: applied, refused (invalid file: nothing changed), failed (a stage could not apply its part).";
        let mut reloads = out.family("edge_gateway_config_reloads_total", "counter", help);
        for (result, counter) in ReloadResult::ALL.iter().zip(&self.reloads) {
            reloads.sample(&format!("result=\"{}\"", result.label()), counter.get());
        }
        out.single(
            "edge_gateway_config_last_reload_success_timestamp_seconds",
            "gauge",
            "When the running config was last loaded successfully (start or reload), seconds since the epoch.",
            self.last_success_s.get(),
        );
        out.single(
            "edge_gateway_config_last_reload_successful",
            "gauge",
            "1 when the last config reload (or the start) succeeded, 0 after a refused or failed one.",
            self.last_successful.get(),
        );
    }
}
