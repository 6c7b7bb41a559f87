//! The metrics registry: holds each stage's metrics and renders them as Prometheus text on
//! `/metrics`. It defines no metric of its own (beyond two status figures for
//! `/api/status`): each stage owns its metrics in its own module, behind [`Render`]:
//!
//! | stage | module | families |
//! |---|---|---|
//! | ingest | `ingest::metrics` | received, filtered by rule |
//! | journal | `store::metrics` | committed, dead letters, replayed, store size/health/errors, queue depth/bytes/age |
//! | forwarder | `forward::metrics` | cloud link, reconnects, forwarded, batches, batch size, latency |
//! | downlink | `downlink::metrics` | command statuses, open, pending, command link |
//! | device side | `devices::metrics` | connections, refused logins/connections, denials, too large, back-pressure |
//! | reload | `reload::metrics` | config reloads by result, last successful load |
//! | several | [`crate::meter::Drops`] | events dropped by reason |
//!
//! Each stage gets a small handle on its part (`StoreMeters`, `ForwardMeters`, ...; built
//! from the registry with `From`), so no stage imports this module. A metric only reports:
//! no stage decides from one (the forwarder reads queue depth from the store's handle).
//!
//! Adding a metric: a field and a render line in the owning stage's metrics file. It is
//! published after the families of [`ORDER`], which pins the order `/metrics` has had
//! since before the per-stage split (dashboards and people diff it).

use std::sync::Arc;

use crate::devices::metrics::DeviceMeters;
pub use crate::devices::metrics::{ConnectionRefusal, Denial, DeviceMetrics};
use crate::downlink::metrics::{CommandMeters, CommandMetrics};
use crate::forward::metrics::{ForwardMeters, ForwardMetrics};
use crate::ingest::metrics::{IngestMeters, IngestMetrics};
pub use crate::meter::{Counter, DropReason, Gauge, Histogram};
use crate::meter::{Drops, Exposition, LastError, Render};
use crate::reload::ReloadMetrics;
pub use crate::store::metrics::StoreErrorKind;
use crate::store::metrics::{StoreMeters, StoreMetrics};

/// The published order of the families (any family not listed follows them, in the order
/// the stages render it).
pub const ORDER: &[&str] = &[
    "edge_gateway_events_received_total",
    "edge_gateway_events_committed_total",
    "edge_gateway_dead_letters_total",
    "edge_gateway_events_replayed_total",
    "edge_gateway_dead_letters_dropped_total",
    "edge_gateway_cloud_link_up",
    "edge_gateway_cloud_reconnects_total",
    "edge_gateway_store_bytes",
    "edge_gateway_store_ok",
    "edge_gateway_store_disk_full",
    "edge_gateway_store_commit_failures_total",
    "edge_gateway_store_errors_total",
    "edge_gateway_events_dropped_total",
    "edge_gateway_events_forwarded_total",
    "edge_gateway_batches_sent_total",
    "edge_gateway_queue_depth",
    "edge_gateway_queue_bytes",
    "edge_gateway_queue_oldest_age_seconds",
    "edge_gateway_filtered_total",
    "edge_gateway_commands_total",
    "edge_gateway_commands_open",
    "edge_gateway_command_statuses_pending",
    "edge_gateway_commands_link_up",
    "edge_gateway_batch_size_events",
    "edge_gateway_latency_seconds",
    "edge_gateway_device_auth_failures_total",
    "edge_gateway_device_connections_refused_total",
    "edge_gateway_device_disconnects_total",
    "edge_gateway_device_denied_total",
    "edge_gateway_devices_connected",
    "edge_gateway_device_packets_too_large_total",
    "edge_gateway_device_backpressure_total",
];

/// Every stage's metrics, and the order they are published in.
#[derive(Debug)]
pub struct Metrics {
    /// Ingest's.
    pub ingest: Arc<IngestMetrics>,
    /// The journal's.
    pub store: Arc<StoreMetrics>,
    /// The forwarder's.
    pub forward: Arc<ForwardMetrics>,
    /// The downlink's (cloud-to-device commands).
    pub commands: Arc<CommandMetrics>,
    /// The device side's.
    pub devices: Arc<DeviceMetrics>,
    /// Config reloads'.
    pub reload: Arc<ReloadMetrics>,
    /// Events dropped, by reason (fed by ingest, the journal and the forwarder).
    pub drops: Arc<Drops>,
    /// The last error worth a person's attention, for `/api/status`.
    pub last_error: Arc<LastError>,
    /// Device publishes received per second, over the last second (`/api/status`; set by
    /// `app`'s watcher from the counters).
    pub rate_in: Gauge,
    /// Events acknowledged by the cloud per second, over the last second (likewise).
    pub rate_out: Gauge,
}

impl Metrics {
    /// Zeroed metrics for these routes (config order).
    pub fn new(route_names: &[String]) -> Metrics {
        let ingest = Arc::new(IngestMetrics::new(route_names));
        let store = Arc::new(StoreMetrics::new(route_names));
        let forward = Arc::new(ForwardMetrics::new(route_names));
        Metrics {
            ingest,
            store,
            forward,
            commands: Arc::default(),
            devices: Arc::default(),
            reload: Arc::new(ReloadMetrics::started(crate::store::now_ms().max(0) as u64 / 1000)),
            drops: Arc::default(),
            last_error: Arc::default(),
            rate_in: Gauge::default(),
            rate_out: Gauge::default(),
        }
    }

    /// Zeroed metrics for `config`'s routes.
    pub fn of(config: &crate::Config) -> Metrics {
        let names: Vec<String> = config.routes.iter().map(|r| r.name.clone()).collect();
        Metrics::new(&names)
    }

    /// Events acknowledged by the cloud, all routes.
    pub fn forwarded(&self) -> u64 {
        self.forward.forwarded()
    }

    /// Drops so far for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops.get(reason)
    }

    /// Prometheus text exposition format, ages as of `now_ms`.
    pub fn render(&self, now_ms: u64) -> String {
        let mut out = Exposition::new(now_ms);
        let parts: [&dyn Render; 7] =
            [&*self.ingest, &*self.store, &*self.forward, &*self.drops, &*self.commands, &*self.devices, &*self.reload];
        for part in parts {
            part.render(&mut out);
        }
        let mut families = out.into_families();
        // Stable: families of one name (a histogram per route) keep their order.
        families.sort_by_key(|(name, _)| ORDER.iter().position(|n| n == name).unwrap_or(ORDER.len()));
        families.into_iter().map(|(_, text)| text).collect()
    }
}

impl From<&Metrics> for StoreMeters {
    fn from(m: &Metrics) -> StoreMeters {
        StoreMeters { store: m.store.clone(), drops: m.drops.clone(), last_error: m.last_error.clone() }
    }
}

impl From<&Metrics> for ForwardMeters {
    fn from(m: &Metrics) -> ForwardMeters {
        ForwardMeters { forward: m.forward.clone(), drops: m.drops.clone(), last_error: m.last_error.clone() }
    }
}

impl From<&Metrics> for IngestMeters {
    fn from(m: &Metrics) -> IngestMeters {
        IngestMeters { ingest: m.ingest.clone(), drops: m.drops.clone(), last_error: m.last_error.clone() }
    }
}

impl From<&Metrics> for DeviceMeters {
    fn from(m: &Metrics) -> DeviceMeters {
        DeviceMeters { devices: m.devices.clone() }
    }
}

impl From<&Metrics> for CommandMeters {
    fn from(m: &Metrics) -> CommandMeters {
        CommandMeters { commands: m.commands.clone(), last_error: m.last_error.clone() }
    }
}

/// `From<Arc<Metrics>>` for each stage's handle, for callers holding the registry's `Arc`.
macro_rules! from_arc {
    ($($meters:ty),*) => {$(
        impl From<Arc<Metrics>> for $meters {
            fn from(m: Arc<Metrics>) -> $meters {
                <$meters>::from(&*m)
            }
        }
    )*};
}
from_arc!(StoreMeters, ForwardMeters, IngestMeters, DeviceMeters, CommandMeters);

#[cfg(test)]
mod tests;
