//! Ingest's metrics: device publishes taken from the broker, and per route the events its
//! filters refused, by rule. Ingest is their only writer; they only report.
//!
//! Adding a metric: a field here, and a line in [`IngestMetrics::render`].

use std::sync::Arc;

use crate::filters::Refusal;
use crate::meter::{Counter, DropReason, Drops, Exposition, LastError, Render, Slots};

/// One route's filter refusals.
#[derive(Debug)]
pub struct RouteFiltered {
    /// Route name (the `route` label).
    pub name: String,
    /// Events this route's filters refused, by rule (index = position in [`Refusal::ALL`]).
    pub filtered: [Counter; Refusal::COUNT],
}

impl RouteFiltered {
    /// Zeroed counters for route `name`.
    fn named(name: &str) -> RouteFiltered {
        RouteFiltered { name: name.to_owned(), filtered: Default::default() }
    }

    /// Counts one event refused by `refusal`.
    pub fn count_filtered(&self, refusal: Refusal) {
        self.filtered[refusal as usize].add(1);
    }
}

/// Everything ingest reports.
#[derive(Debug)]
pub struct IngestMetrics {
    /// Device publishes taken from the broker.
    pub received: Counter,
    /// Per route slot (config order at start, then routes added by reloads).
    pub routes: Slots<RouteFiltered>,
}

impl IngestMetrics {
    /// Zeroed metrics for these routes.
    pub fn new(route_names: &[String]) -> IngestMetrics {
        IngestMetrics {
            received: Counter::default(),
            routes: Slots::new(route_names.iter().map(|name| RouteFiltered::named(name))),
        }
    }

    /// Makes sure route slot `slot` (named `name`) has its metrics.
    pub fn add_route(&self, slot: usize, name: &str) {
        self.routes.ensure(slot, || RouteFiltered::named(name));
    }
}

impl Render for IngestMetrics {
    fn render(&self, out: &mut Exposition) {
        out.single("edge_gateway_events_received_total", "counter", "Device publishes received.", self.received.get());
        let help = "Events a route's rules refused, by rule.";
        let mut filtered = out.family("edge_gateway_filtered_total", "counter", help);
        for route in self.routes.all() {
            for (refusal, counter) in Refusal::ALL.iter().zip(&route.filtered) {
                filtered.sample(&format!("route=\"{}\",filter=\"{}\"", route.name, refusal.label()), counter.get());
            }
        }
    }
}

/// What ingest reports to: its own metrics and the drops it counts (`no_route`, `filter`,
/// `invalid`, `overrun`, `denied`).
#[derive(Debug, Clone)]
pub struct IngestMeters {
    /// Ingest's own metrics.
    pub ingest: Arc<IngestMetrics>,
    /// Dropped events, by reason.
    pub drops: Arc<Drops>,
    /// The last error, for `/api/status`.
    pub last_error: Arc<LastError>,
}

impl IngestMeters {
    /// Counts `n` drops for `reason`.
    pub fn count_drop(&self, reason: DropReason, n: u64) {
        self.drops.count(reason, n);
    }

    /// Drops so far for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops.get(reason)
    }
}
