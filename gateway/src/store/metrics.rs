//! The journal's metrics: commits, dead letters, the file's size and health, failed writes,
//! and per route the queue's depth, bytes and oldest age. The writer thread is their only
//! writer. They only report: the forwarder learns of new rows and of queue depth from the
//! store's handle ([`super::Queues`]), never from these gauges.
//!
//! Adding a metric: a field here, and a line in [`StoreMetrics::render`].

use std::sync::Arc;

use crate::meter::{Counter, DropReason, Drops, Exposition, Gauge, LastError, Render, Slots};

/// Why a journal write failed (the `kind` label of `edge_gateway_store_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// `SQLITE_FULL`: no room on the file system.
    DiskFull,
    /// An I/O error.
    Io,
    /// Anything else.
    Other,
}

impl StoreErrorKind {
    /// Every kind, in label order (index = `kind as usize`).
    pub const ALL: [StoreErrorKind; 3] = [Self::DiskFull, Self::Io, Self::Other];

    /// The `kind` label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::DiskFull => "disk_full",
            Self::Io => "io",
            Self::Other => "other",
        }
    }
}

/// One route's queue, as reported.
#[derive(Debug)]
pub struct QueueMetrics {
    /// Route name (the `route` label).
    pub name: String,
    /// Events waiting in the store.
    pub depth: Gauge,
    /// Payload bytes waiting in the store.
    pub bytes: Gauge,
    /// Receive time (ms since epoch) of the oldest waiting event; 0 when empty.
    pub oldest_ms: Gauge,
}

impl QueueMetrics {
    /// Zeroed gauges for route `name`.
    fn named(name: &str) -> QueueMetrics {
        QueueMetrics {
            name: name.to_owned(),
            depth: Gauge::default(),
            bytes: Gauge::default(),
            oldest_ms: Gauge::default(),
        }
    }
}

/// Everything the journal reports.
#[derive(Debug)]
pub struct StoreMetrics {
    /// Events committed to the journal (once per event, whatever its routes).
    pub committed: Counter,
    /// Dead letters written.
    pub dead_letters: Counter,
    /// Forwarded events queued again by a replay.
    pub replayed: Counter,
    /// Dead letters dropped by their bounds (count, age).
    pub dead_letters_dropped: Counter,
    /// Bytes of the journal in use.
    pub bytes: Gauge,
    /// 0 after a failed commit (disk full, I/O error), 1 after a successful one.
    pub ok: Gauge,
    /// 1 while the journal's disk is full (set by a failed write, cleared once events fit).
    pub disk_full: Gauge,
    /// Commits that failed (their events were not stored and not acknowledged).
    pub commit_failures: Counter,
    /// Failed journal writes by kind (index = position in [`StoreErrorKind::ALL`]).
    pub errors: [Counter; 3],
    /// Per route slot (config order at start, then routes added by reloads; a removed
    /// route keeps its series: its rows stay in the journal).
    pub routes: Slots<QueueMetrics>,
}

impl StoreMetrics {
    /// Zeroed metrics for these routes.
    pub fn new(route_names: &[String]) -> StoreMetrics {
        StoreMetrics {
            committed: Counter::default(),
            dead_letters: Counter::default(),
            replayed: Counter::default(),
            dead_letters_dropped: Counter::default(),
            bytes: Gauge::default(),
            ok: Gauge::new(1),
            disk_full: Gauge::default(),
            commit_failures: Counter::default(),
            errors: Default::default(),
            routes: Slots::new(route_names.iter().map(|name| QueueMetrics::named(name))),
        }
    }

    /// Makes sure route slot `slot` (named `name`) has its metrics.
    pub fn add_route(&self, slot: usize, name: &str) {
        self.routes.ensure(slot, || QueueMetrics::named(name));
    }

    /// Counts one failed journal write of `kind`.
    pub fn count_error(&self, kind: StoreErrorKind) {
        self.errors[kind as usize].add(1);
    }

    /// The journal's trouble, if any: a full disk (events are dropped per
    /// `store.when_full`), or a failed last commit.
    pub fn problem(&self) -> Option<&'static str> {
        if self.disk_full.get() == 1 {
            Some("disk full: new events are dropped per store.when_full until space returns")
        } else if self.ok.get() == 0 {
            Some("the last journal commit failed; see the log")
        } else {
            None
        }
    }
}

impl Render for StoreMetrics {
    fn render(&self, out: &mut Exposition) {
        out.single(
            "edge_gateway_events_committed_total",
            "counter",
            "Events committed to the journal.",
            self.committed.get(),
        );
        out.single(
            "edge_gateway_dead_letters_total",
            "counter",
            "Payloads kept as dead letters.",
            self.dead_letters.get(),
        );
        let replayed = "Forwarded events queued again by a replay.";
        out.single("edge_gateway_events_replayed_total", "counter", replayed, self.replayed.get());
        let bounds = "Dead letters dropped by store.dead_letters_max / _max_age.";
        out.single("edge_gateway_dead_letters_dropped_total", "counter", bounds, self.dead_letters_dropped.get());
        out.single("edge_gateway_store_bytes", "gauge", "Journal bytes in use.", self.bytes.get());
        out.single(
            "edge_gateway_store_ok",
            "gauge",
            "0 after a failed journal commit, 1 after a good one.",
            self.ok.get(),
        );
        out.single(
            "edge_gateway_store_disk_full",
            "gauge",
            "1 while the journal's disk is full.",
            self.disk_full.get(),
        );
        let failures = "Journal commits that failed.";
        out.single("edge_gateway_store_commit_failures_total", "counter", failures, self.commit_failures.get());
        let mut errors = out.family("edge_gateway_store_errors_total", "counter", "Failed journal writes, by kind.");
        for (kind, counter) in StoreErrorKind::ALL.iter().zip(&self.errors) {
            errors.sample(&format!("kind=\"{}\"", kind.label()), counter.get());
        }
        let now = out.now_ms();
        let per_route: [PerRoute; 3] = [
            ("edge_gateway_queue_depth", "Events waiting in the journal.", |r, _| r.depth.get()),
            ("edge_gateway_queue_bytes", "Payload bytes waiting in the journal.", |r, _| r.bytes.get()),
            ("edge_gateway_queue_oldest_age_seconds", "Age of the oldest waiting event.", |r, now| {
                match r.oldest_ms.get() {
                    0 => 0,
                    oldest => now.saturating_sub(oldest) / 1000,
                }
            }),
        ];
        let routes = self.routes.all();
        for (name, help, value) in per_route {
            let mut family = out.family(name, "gauge", help);
            for route in &routes {
                family.sample(&format!("route=\"{}\"", route.name), value(route, now));
            }
        }
    }
}

/// A per-route gauge: name, help, and its value for a route at a time (ms).
type PerRoute = (&'static str, &'static str, fn(&QueueMetrics, u64) -> u64);

/// What the writer reports to: the journal's own metrics and the pipeline-wide figures it
/// feeds (drops by `duplicate`, `full`, `ttl`; the last error).
#[derive(Debug, Clone)]
pub struct StoreMeters {
    /// The journal's own metrics.
    pub store: Arc<StoreMetrics>,
    /// Dropped events, by reason.
    pub drops: Arc<Drops>,
    /// The last error, for `/api/status`.
    pub last_error: Arc<LastError>,
}

impl StoreMeters {
    /// Counts `n` drops for `reason`.
    pub fn count_drop(&self, reason: DropReason, n: u64) {
        self.drops.count(reason, n);
    }

    /// Remembers an error for `/api/status`.
    pub fn note_error(&self, now_ms: i64, message: impl Into<String>) {
        self.last_error.note(now_ms, message);
    }
}
