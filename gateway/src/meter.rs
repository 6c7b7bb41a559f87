//! What every stage's metrics are made of: [`Counter`], [`Gauge`], [`Histogram`], the
//! [`Render`] trait and the Prometheus text it writes into ([`Exposition`]), and the two
//! pipeline-wide figures several stages feed: dropped events by [`DropReason`] ([`Drops`])
//! and the last error worth a person's attention ([`LastError`]).
//!
//! A leaf: it imports no stage. Each stage defines its own metrics in its own module
//! (`store::metrics`, `forward::metrics`, `ingest::metrics`, `devices::metrics`,
//! `downlink::metrics`); `crate::metrics::Metrics` only holds them and renders them.
//!
//! Invariants: updating a metric on the hot path is one relaxed atomic add or store and
//! never allocates; a metric only reports — no stage decides anything from one (what the
//! forwarder needs comes through the store's handle).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// A value that only goes up.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Per-route metrics, indexed by route slot, that grow when a reload adds a route
/// (docs/architecture.md, "Live reload"): append-only, so a slot's metrics never move and a
/// removed route's series stay. Reading one is a read lock and an `Arc` clone, on the
/// per-commit or per-batch path, never per event.
#[derive(Debug, Default)]
pub struct Slots<T>(RwLock<Vec<Arc<T>>>);

impl<T> Slots<T> {
    /// Slots holding `items`, in order.
    pub fn new(items: impl IntoIterator<Item = T>) -> Slots<T> {
        Slots(RwLock::new(items.into_iter().map(Arc::new).collect()))
    }

    /// The metrics of `slot`, if it exists.
    pub fn get(&self, slot: usize) -> Option<Arc<T>> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(slot).cloned()
    }

    /// Every slot's metrics, in slot order.
    pub fn all(&self) -> Vec<Arc<T>> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Makes sure `slot` exists, appending `make()` for each missing slot up to it.
    pub fn ensure(&self, slot: usize, make: impl Fn() -> T) {
        let mut slots = self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        while slots.len() <= slot {
            slots.push(Arc::new(make()));
        }
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// A gauge starting at `v`.
    pub fn new(v: u64) -> Gauge {
        Gauge(AtomicU64::new(v))
    }
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Takes one away (never below zero).
    pub fn dec(&self) {
        let _ = self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(1)));
    }
    /// Sets the value.
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A histogram with fixed bucket bounds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// An empty histogram with these upper bounds (ascending; `+Inf` is implied).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records `n` observations of `value`.
    pub fn observe_n(&self, value: f64, n: u64) {
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.buckets[i].fetch_add(n, Ordering::Relaxed);
        }
        self.count.fetch_add(n, Ordering::Relaxed);
        self.sum_micros.fetch_add((value * 1e6) as u64 * n, Ordering::Relaxed);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Something that writes its families into the exposition (a stage's metrics).
pub trait Render {
    /// Appends this part's families to `out`.
    fn render(&self, out: &mut Exposition);
}

/// The Prometheus text being written: families in the order they are started, each with
/// its `# HELP` and `# TYPE` lines. `crate::metrics::Metrics` puts the families in their
/// published order at the end.
#[derive(Debug)]
pub struct Exposition {
    now_ms: u64,
    families: Vec<(&'static str, String)>,
}

impl Exposition {
    /// An empty exposition rendered at `now_ms` (for ages).
    pub fn new(now_ms: u64) -> Exposition {
        Exposition { now_ms, families: Vec::new() }
    }

    /// When it is rendered, ms since the epoch.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Starts family `name` (`kind`: `counter`, `gauge` or `histogram`); add its samples
    /// to the returned [`Family`].
    pub fn family(&mut self, name: &'static str, kind: &str, help: &str) -> Family<'_> {
        let mut text = String::with_capacity(256);
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        let index = self.families.len();
        self.families.push((name, text));
        Family { name, text: &mut self.families[index].1 }
    }

    /// A family of one unlabeled sample.
    pub fn single(&mut self, name: &'static str, kind: &str, help: &str, value: u64) {
        self.family(name, kind, help).sample("", value);
    }

    /// A histogram family (`_bucket`, `_sum`, `_count`), its samples labeled `labels`
    /// (e.g. `route="telemetry"`; empty for none).
    pub fn histogram(&mut self, name: &'static str, help: &str, labels: &str, h: &Histogram) {
        let family = self.family(name, "histogram", help);
        let out = &mut *family.text;
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, bucket) in h.bounds.iter().zip(&h.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
        }
        let count = h.count();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {sum}\n{name}_count{braces} {count}");
    }

    /// The families, in the order they were started.
    pub fn into_families(self) -> Vec<(&'static str, String)> {
        self.families
    }
}

/// One family being written ([`Exposition::family`]).
pub struct Family<'a> {
    name: &'static str,
    text: &'a mut String,
}

impl Family<'_> {
    /// One sample: `name{labels} value` (`labels` like `route="x"`; empty for none).
    pub fn sample(&mut self, labels: &str, value: u64) -> &mut Self {
        let name = self.name;
        let _ = if labels.is_empty() {
            writeln!(self.text, "{name} {value}")
        } else {
            writeln!(self.text, "{name}{{{labels}}} {value}")
        };
        self
    }
}

/// Why an event was not forwarded. The label values are part of the metrics contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The store was full (`drop_oldest` deleted it, or `reject_new` refused it).
    Full,
    /// Older than `store.max_age`.
    Ttl,
    /// A route filter dropped it.
    Filter,
    /// No route took it.
    NoRoute,
    /// Its `(device, boot, seq)` was already committed.
    Duplicate,
    /// Undecodable or invalid (also kept as a dead letter).
    Invalid,
    /// Accepted by the embedded broker but overwritten in its memory before ingest took it
    /// (the broker outran the gateway: a burst larger than `devices.broker_memory`).
    Overrun,
    /// An authenticated device published on a topic it has no right to (kept as a dead
    /// letter; the device is disconnected).
    Denied,
}

impl DropReason {
    /// How many reasons there are (the last variant's index + 1: keep `Denied` last, or
    /// update this, so that [`DropReason::ALL`] cannot silently miss one).
    pub const COUNT: usize = DropReason::Denied as usize + 1;

    /// Every reason, in label order (index = `reason as usize`).
    pub const ALL: [DropReason; Self::COUNT] = [
        Self::Full,
        Self::Ttl,
        Self::Filter,
        Self::NoRoute,
        Self::Duplicate,
        Self::Invalid,
        Self::Overrun,
        Self::Denied,
    ];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Ttl => "ttl",
            Self::Filter => "filter",
            Self::NoRoute => "no_route",
            Self::Duplicate => "duplicate",
            Self::Invalid => "invalid",
            Self::Overrun => "overrun",
            Self::Denied => "denied",
        }
    }
}

/// Dropped events by reason (`edge_gateway_events_dropped_total`), counted by ingest, the
/// store and the forwarder, each for its own reasons.
#[derive(Debug, Default)]
pub struct Drops([Counter; DropReason::COUNT]);

impl Drops {
    /// Counts `n` drops for `reason`.
    pub fn count(&self, reason: DropReason, n: u64) {
        self.0[reason as usize].add(n);
    }

    /// Drops so far for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize].get()
    }
}

impl Render for Drops {
    fn render(&self, out: &mut Exposition) {
        let mut family = out.family("edge_gateway_events_dropped_total", "counter", "Events not forwarded, by reason.");
        for reason in DropReason::ALL {
            family.sample(&format!("reason=\"{}\"", reason.label()), self.get(reason));
        }
    }
}

/// The last error worth a person's attention (time in ms, message), e.g. why the cloud link
/// is down: written rarely, by any stage; read by `/api/status`. Not exported on `/metrics`.
#[derive(Debug, Default)]
pub struct LastError(Mutex<Option<(i64, String)>>);

impl LastError {
    /// Remembers `message`, noted at `now_ms`.
    pub fn note(&self, now_ms: i64, message: impl Into<String>) {
        if let Ok(mut last) = self.0.lock() {
            *last = Some((now_ms, message.into()));
        }
    }

    /// The error, if any: `(at_ms, message)`.
    pub fn get(&self) -> Option<(i64, String)> {
        self.0.lock().ok().and_then(|last| last.clone())
    }
}
