//! The forwarder's metrics: the cloud link (up, since when, reconnections) and, per route,
//! what the cloud acknowledged (events, batches, batch sizes), with the receive-to-PUBACK
//! latency. The forwarder is their only writer; they only report (its decisions come from
//! the store's handle and its own state).
//!
//! Adding a metric: a field here, and a line in [`ForwardMetrics::render`].

use std::sync::Arc;

use crate::meter::{Counter, DropReason, Drops, Exposition, Gauge, Histogram, LastError, Render, Slots};

const LATENCY_BOUNDS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0, 3600.0];
const BATCH_BOUNDS: &[f64] = &[1.0, 5.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0];

/// One route's forwarding figures.
#[derive(Debug)]
pub struct RouteForwarded {
    /// Route name (the `route` label).
    pub name: String,
    /// Events the cloud acknowledged.
    pub forwarded: Counter,
    /// Batches the cloud acknowledged.
    pub batches: Counter,
    /// Batch sizes (events per acknowledged batch).
    pub batch_size: Histogram,
}

impl RouteForwarded {
    /// Zeroed figures for route `name`.
    fn named(name: &str) -> RouteForwarded {
        RouteForwarded {
            name: name.to_owned(),
            forwarded: Counter::default(),
            batches: Counter::default(),
            batch_size: Histogram::new(BATCH_BOUNDS),
        }
    }
}

/// Everything the forwarder reports.
#[derive(Debug)]
pub struct ForwardMetrics {
    /// 1 while the cloud link is connected.
    pub link_up: Gauge,
    /// When the link last went up or down (ms since the epoch; 0 = never up yet).
    pub link_changed_ms: Gauge,
    /// Cloud (re)connections after the first.
    pub reconnects: Counter,
    /// Receive-to-PUBACK latency of forwarded events, seconds.
    pub latency: Histogram,
    /// Per route slot (config order at start, then routes added by reloads).
    pub routes: Slots<RouteForwarded>,
}

impl ForwardMetrics {
    /// Zeroed metrics for these routes.
    pub fn new(route_names: &[String]) -> ForwardMetrics {
        ForwardMetrics {
            link_up: Gauge::default(),
            link_changed_ms: Gauge::default(),
            reconnects: Counter::default(),
            latency: Histogram::new(LATENCY_BOUNDS),
            routes: Slots::new(route_names.iter().map(|name| RouteForwarded::named(name))),
        }
    }

    /// Makes sure route slot `slot` (named `name`) has its metrics.
    pub fn add_route(&self, slot: usize, name: &str) {
        self.routes.ensure(slot, || RouteForwarded::named(name));
    }

    /// Events acknowledged by the cloud, all routes.
    pub fn forwarded(&self) -> u64 {
        self.routes.all().iter().map(|r| r.forwarded.get()).sum()
    }

    /// Records the cloud link going up or down at `now_ms`.
    pub fn set_link(&self, up: bool, now_ms: i64) {
        let value = u64::from(up);
        if self.link_up.get() != value || self.link_changed_ms.get() == 0 {
            self.link_changed_ms.set(now_ms.max(0) as u64);
        }
        self.link_up.set(value);
    }
}

impl Render for ForwardMetrics {
    fn render(&self, out: &mut Exposition) {
        let routes = self.routes.all();
        out.single("edge_gateway_cloud_link_up", "gauge", "1 while connected to the cloud broker.", self.link_up.get());
        out.single("edge_gateway_cloud_reconnects_total", "counter", "Cloud reconnections.", self.reconnects.get());
        let mut forwarded =
            out.family("edge_gateway_events_forwarded_total", "counter", "Events acknowledged by the cloud.");
        for route in &routes {
            forwarded.sample(&format!("route=\"{}\"", route.name), route.forwarded.get());
        }
        let mut batches =
            out.family("edge_gateway_batches_sent_total", "counter", "Batches acknowledged by the cloud.");
        for route in &routes {
            batches.sample(&format!("route=\"{}\"", route.name), route.batches.get());
        }
        for route in &routes {
            let labels = format!("route=\"{}\"", route.name);
            out.histogram(
                "edge_gateway_batch_size_events",
                "Events per acknowledged batch.",
                &labels,
                &route.batch_size,
            );
        }
        let latency = "Receive-to-cloud-ack latency of forwarded events.";
        out.histogram("edge_gateway_latency_seconds", latency, "", &self.latency);
    }
}

/// What the forwarder reports to: its own metrics and the pipeline-wide figures it feeds
/// (drops by `invalid`; the last error).
#[derive(Debug, Clone)]
pub struct ForwardMeters {
    /// The forwarder's own metrics.
    pub forward: Arc<ForwardMetrics>,
    /// Dropped events, by reason.
    pub drops: Arc<Drops>,
    /// The last error, for `/api/status`.
    pub last_error: Arc<LastError>,
}

impl ForwardMeters {
    /// Counts `n` drops for `reason`.
    pub fn count_drop(&self, reason: DropReason, n: u64) {
        self.drops.count(reason, n);
    }
}
