//! Counters and gauges of the pipeline, shared by every stage and rendered as Prometheus
//! text on `/metrics`. Plain atomics: updating a metric on the hot path costs one relaxed
//! add, and nothing here allocates per event.
//!
//! Names follow DESIGN.md: `edge_gateway_events_{received,committed,forwarded,dropped}_total`
//! (dropped by `reason`), `edge_gateway_dead_letters_total`, per-route queue gauges, batch
//! size and end-to-end latency histograms, cloud link state and reconnects.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::devices::auth::AuthFailure;
use crate::filters::Refusal;

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

/// Why the device listener closed a connection before or instead of serving it. The label
/// values are part of the metrics contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionRefusal {
    /// Credentials refused (see `edge_gateway_device_auth_failures_total` for why).
    Auth,
    /// `devices.max_connections` reached, or too many connections still handshaking.
    Limit,
    /// The TLS handshake failed (e.g. no valid client certificate).
    Tls,
    /// No valid MQTT CONNECT in time.
    Protocol,
    /// A will on a topic the device may not publish on.
    Acl,
}

impl ConnectionRefusal {
    /// Every reason, in label order (index = `reason as usize`).
    pub const ALL: [ConnectionRefusal; 5] = [Self::Auth, Self::Limit, Self::Tls, Self::Protocol, Self::Acl];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Limit => "limit",
            Self::Tls => "tls",
            Self::Protocol => "protocol",
            Self::Acl => "acl",
        }
    }
}

/// What a device was denied (the `action` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// A publish outside `devices/{its id}/...`, or on its own ack or commands topic.
    Publish,
    /// A subscription other than its own ack and commands topics.
    Subscribe,
}

impl Denial {
    /// Every action, in label order.
    pub const ALL: [Denial; 2] = [Denial::Publish, Denial::Subscribe];

    /// The `action` label value.
    pub fn label(self) -> &'static str {
        match self {
            Denial::Publish => "publish",
            Denial::Subscribe => "subscribe",
        }
    }
}

/// Why the gateway closed a device connection it had accepted (the `reason` label of
/// `edge_gateway_device_disconnects_total`). The label values are part of the metrics
/// contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceDisconnect {
    /// A publish or subscription outside the device's own topics.
    Denied,
    /// A packet over `devices.max_payload`.
    TooLarge,
    /// A packet that breaks the MQTT protocol.
    Protocol,
    /// A newer connection with the same client id (MQTT-3.1.4-2).
    Takeover,
    /// The embedded broker closed it (keep-alive expired, or a protocol error it found).
    Broker,
}

impl DeviceDisconnect {
    /// Every reason, in label order (index = `reason as usize`).
    pub const ALL: [DeviceDisconnect; 5] = [Self::Denied, Self::TooLarge, Self::Protocol, Self::Takeover, Self::Broker];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Denied => "denied",
            Self::TooLarge => "too_large",
            Self::Protocol => "protocol",
            Self::Takeover => "takeover",
            Self::Broker => "broker",
        }
    }
}

/// Device-side connection figures (the device listener in front of the embedded broker).
#[derive(Debug, Default)]
pub struct DeviceMetrics {
    /// Device clients connected now (CONNACK accepted, socket still open).
    pub connected: Gauge,
    /// Refused credentials, by [`AuthFailure`] (index = `failure as usize`).
    pub auth_failures: [Counter; 4],
    /// Connections closed before being served, by [`ConnectionRefusal`].
    pub refused: [Counter; 5],
    /// Publishes / subscriptions denied, by [`Denial`].
    pub denied: [Counter; 2],
    /// Packets larger than `devices.max_payload` (the device is disconnected).
    pub too_large: Counter,
    /// Times the gate held a device back because the journal was behind (back-pressure).
    pub backpressure: Counter,
    /// Accepted connections the gateway closed, by [`DeviceDisconnect`].
    pub disconnects: [Counter; 5],
}

impl DeviceMetrics {
    /// Counts a refused login (and the refused connection).
    pub fn count_auth_failure(&self, failure: AuthFailure) {
        self.auth_failures[failure as usize].add(1);
        self.refused[ConnectionRefusal::Auth as usize].add(1);
    }

    /// Counts a connection refused for `reason`.
    pub fn count_refused(&self, reason: ConnectionRefusal) {
        self.refused[reason as usize].add(1);
    }

    /// Refused connections so far for `reason`.
    pub fn refused(&self, reason: ConnectionRefusal) -> u64 {
        self.refused[reason as usize].get()
    }

    fn render(&self, out: &mut String) {
        let mut family =
            |name: &str, kind: &str, help: &str, label: &str, rows: &mut dyn Iterator<Item = (&str, u64)>| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for (value, n) in rows {
                    let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
                }
            };
        family(
            "edge_gateway_device_auth_failures_total",
            "counter",
            "Device logins refused, by reason.",
            "reason",
            &mut AuthFailure::ALL.iter().map(|f| (f.label(), self.auth_failures[*f as usize].get())),
        );
        family(
            "edge_gateway_device_connections_refused_total",
            "counter",
            "Device connections refused or closed before being served, by reason.",
            "reason",
            &mut ConnectionRefusal::ALL.iter().map(|r| (r.label(), self.refused[*r as usize].get())),
        );
        family(
            "edge_gateway_device_disconnects_total",
            "counter",
            "Accepted device connections the gateway closed, by reason.",
            "reason",
            &mut DeviceDisconnect::ALL.iter().map(|r| (r.label(), self.disconnects[*r as usize].get())),
        );
        family(
            "edge_gateway_device_denied_total",
            "counter",
            "Device publishes and subscriptions outside the device's own topics (device disconnected).",
            "action",
            &mut Denial::ALL.iter().map(|d| (d.label(), self.denied[*d as usize].get())),
        );
        let _ = writeln!(
            out,
            "# HELP edge_gateway_devices_connected Device clients connected now.\n\
             # TYPE edge_gateway_devices_connected gauge\nedge_gateway_devices_connected {}",
            self.connected.get()
        );
        let _ = writeln!(
            out,
            "# HELP edge_gateway_device_packets_too_large_total Device packets over devices.max_payload (device disconnected).\n\
             # TYPE edge_gateway_device_packets_too_large_total counter\nedge_gateway_device_packets_too_large_total {}",
            self.too_large.get()
        );
        let _ = writeln!(
            out,
            "# HELP edge_gateway_device_backpressure_total Times the device gate held devices back because the journal was behind.\n\
             # TYPE edge_gateway_device_backpressure_total counter\nedge_gateway_device_backpressure_total {}",
            self.backpressure.get()
        );
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
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
    fn new(bounds: &'static [f64]) -> Self {
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

    fn render(&self, out: &mut String, name: &str, help: &str, labels: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {sum}\n{name}_count{braces} {count}");
    }
}

const LATENCY_BOUNDS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0, 3600.0];
const BATCH_BOUNDS: &[f64] = &[1.0, 5.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0];

/// A per-route series: name, type, help, and how to read it (route, now in ms).
type PerRoute = (&'static str, &'static str, &'static str, fn(&RouteMetrics, u64) -> u64);

/// Per-route figures.
#[derive(Debug)]
pub struct RouteMetrics {
    /// Route name (the `route` label).
    pub name: String,
    /// Events waiting in the store.
    pub depth: Gauge,
    /// Payload bytes waiting in the store.
    pub bytes: Gauge,
    /// Receive time (ms since epoch) of the oldest waiting event; 0 when empty.
    pub oldest_ms: Gauge,
    /// Events the cloud acknowledged.
    pub forwarded: Counter,
    /// Batches the cloud acknowledged.
    pub batches: Counter,
    /// Batch sizes (events per acknowledged batch).
    pub batch_size: Histogram,
    /// Events this route's filters refused, by rule (index = position in [`Refusal::ALL`]).
    pub filtered: [Counter; Refusal::COUNT],
}

impl RouteMetrics {
    /// Counts one event refused by `refusal`.
    pub fn count_filtered(&self, refusal: Refusal) {
        self.filtered[refusal as usize].add(1);
    }
}

/// Every metric of the gateway.
#[derive(Debug)]
pub struct Metrics {
    /// Device publishes taken from the broker.
    pub received: Counter,
    /// Events committed to the journal (once per event, whatever its routes).
    pub committed: Counter,
    /// Dropped events, by reason (index = position in [`DropReason::ALL`]).
    pub dropped: [Counter; DropReason::COUNT],
    /// Dead letters written.
    pub dead_letters: Counter,
    /// Forwarded events queued again by a replay.
    pub replayed: Counter,
    /// Dead letters dropped by their bounds (count, age).
    pub dead_letters_dropped: Counter,
    /// 1 while the cloud link is connected.
    pub link_up: Gauge,
    /// Device publishes received per second, over the last second (for `/api/status`).
    pub rate_in: Gauge,
    /// Events acknowledged by the cloud per second, over the last second.
    pub rate_out: Gauge,
    /// When the link last went up or down (ms since the epoch; 0 = never up yet).
    pub link_changed_ms: Gauge,
    /// The last error worth a person's attention (time in ms, message), e.g. why the cloud
    /// link is down. Written rarely, read by `/api/status`.
    pub last_error: std::sync::Mutex<Option<(i64, String)>>,
    /// Cloud (re)connections after the first.
    pub reconnects: Counter,
    /// Bytes of the journal in use.
    pub store_bytes: Gauge,
    /// 0 after a failed commit (disk full, I/O error), 1 after a successful one.
    pub store_ok: Gauge,
    /// Commits that failed (their events were not stored and not acknowledged).
    pub commit_failures: Counter,
    /// Failed journal writes by kind (index = position in [`StoreErrorKind::ALL`]).
    pub store_errors: [Counter; 3],
    /// 1 while the journal's disk is full (set by a failed write, cleared once events fit).
    pub disk_full: Gauge,
    /// Receive-to-PUBACK latency of forwarded events, seconds.
    pub latency: Histogram,
    /// Per route, in config order.
    pub routes: Vec<RouteMetrics>,
    /// Cloud-to-device commands.
    pub commands: crate::downlink::metrics::CommandMetrics,
    /// The device listener.
    pub devices: DeviceMetrics,
}

impl Metrics {
    /// Zeroed metrics for these routes.
    pub fn new(route_names: &[String]) -> Metrics {
        Metrics {
            received: Counter::default(),
            committed: Counter::default(),
            dropped: Default::default(),
            dead_letters: Counter::default(),
            replayed: Counter::default(),
            dead_letters_dropped: Counter::default(),
            link_up: Gauge::default(),
            link_changed_ms: Gauge::default(),
            rate_in: Gauge::default(),
            rate_out: Gauge::default(),
            last_error: std::sync::Mutex::new(None),
            reconnects: Counter::default(),
            store_bytes: Gauge::default(),
            store_ok: Gauge(AtomicU64::new(1)),
            commit_failures: Counter::default(),
            store_errors: Default::default(),
            disk_full: Gauge::default(),
            latency: Histogram::new(LATENCY_BOUNDS),
            routes: route_names
                .iter()
                .map(|name| RouteMetrics {
                    name: name.clone(),
                    depth: Gauge::default(),
                    bytes: Gauge::default(),
                    oldest_ms: Gauge::default(),
                    forwarded: Counter::default(),
                    batches: Counter::default(),
                    batch_size: Histogram::new(BATCH_BOUNDS),
                    filtered: Default::default(),
                })
                .collect(),
            commands: Default::default(),
            devices: DeviceMetrics::default(),
        }
    }

    /// Events acknowledged by the cloud, all routes.
    pub fn forwarded(&self) -> u64 {
        self.routes.iter().map(|r| r.forwarded.get()).sum()
    }

    /// Records the cloud link going up or down at `now_ms`.
    pub fn set_link(&self, up: bool, now_ms: i64) {
        let value = u64::from(up);
        if self.link_up.get() != value || self.link_changed_ms.get() == 0 {
            self.link_changed_ms.set(now_ms.max(0) as u64);
        }
        self.link_up.set(value);
    }

    /// Remembers an error for `/api/status`.
    pub fn note_error(&self, now_ms: i64, message: impl Into<String>) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some((now_ms, message.into()));
        }
    }

    /// Counts `n` drops for `reason`.
    pub fn count_drop(&self, reason: DropReason, n: u64) {
        self.dropped[reason as usize].add(n);
    }

    /// Counts one failed journal write of `kind`.
    pub fn count_store_error(&self, kind: StoreErrorKind) {
        self.store_errors[kind as usize].add(1);
    }

    /// Drops so far for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize].get()
    }

    /// Prometheus text exposition format.
    pub fn render(&self, now_ms: u64) -> String {
        let mut out = String::with_capacity(4096);
        let mut simple = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        simple("edge_gateway_events_received_total", "counter", "Device publishes received.", self.received.get());
        simple(
            "edge_gateway_events_committed_total",
            "counter",
            "Events committed to the journal.",
            self.committed.get(),
        );
        simple("edge_gateway_dead_letters_total", "counter", "Payloads kept as dead letters.", self.dead_letters.get());
        simple(
            "edge_gateway_events_replayed_total",
            "counter",
            "Forwarded events queued again by a replay.",
            self.replayed.get(),
        );
        simple(
            "edge_gateway_dead_letters_dropped_total",
            "counter",
            "Dead letters dropped by store.dead_letters_max / _max_age.",
            self.dead_letters_dropped.get(),
        );
        simple("edge_gateway_cloud_link_up", "gauge", "1 while connected to the cloud broker.", self.link_up.get());
        simple("edge_gateway_cloud_reconnects_total", "counter", "Cloud reconnections.", self.reconnects.get());
        simple("edge_gateway_store_bytes", "gauge", "Journal bytes in use.", self.store_bytes.get());
        simple(
            "edge_gateway_store_ok",
            "gauge",
            "0 after a failed journal commit, 1 after a good one.",
            self.store_ok.get(),
        );
        simple("edge_gateway_store_disk_full", "gauge", "1 while the journal's disk is full.", self.disk_full.get());
        simple(
            "edge_gateway_store_commit_failures_total",
            "counter",
            "Journal commits that failed.",
            self.commit_failures.get(),
        );
        let _ = writeln!(out, "# HELP edge_gateway_store_errors_total Failed journal writes, by kind.");
        let _ = writeln!(out, "# TYPE edge_gateway_store_errors_total counter");
        for (kind, counter) in StoreErrorKind::ALL.iter().zip(&self.store_errors) {
            let _ = writeln!(out, "edge_gateway_store_errors_total{{kind=\"{}\"}} {}", kind.label(), counter.get());
        }
        let _ = writeln!(out, "# HELP edge_gateway_events_dropped_total Events not forwarded, by reason.");
        let _ = writeln!(out, "# TYPE edge_gateway_events_dropped_total counter");
        for (reason, counter) in DropReason::ALL.iter().zip(&self.dropped) {
            let _ =
                writeln!(out, "edge_gateway_events_dropped_total{{reason=\"{}\"}} {}", reason.label(), counter.get());
        }
        let per_route: [PerRoute; 5] = [
            ("edge_gateway_events_forwarded_total", "counter", "Events acknowledged by the cloud.", |r, _| {
                r.forwarded.get()
            }),
            ("edge_gateway_batches_sent_total", "counter", "Batches acknowledged by the cloud.", |r, _| {
                r.batches.get()
            }),
            ("edge_gateway_queue_depth", "gauge", "Events waiting in the journal.", |r, _| r.depth.get()),
            ("edge_gateway_queue_bytes", "gauge", "Payload bytes waiting in the journal.", |r, _| r.bytes.get()),
            ("edge_gateway_queue_oldest_age_seconds", "gauge", "Age of the oldest waiting event.", |r, now| {
                let oldest = r.oldest_ms.get();
                if oldest == 0 {
                    0
                } else {
                    now.saturating_sub(oldest) / 1000
                }
            }),
        ];
        for (name, kind, help, value) in per_route {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for route in &self.routes {
                let _ = writeln!(out, "{name}{{route=\"{}\"}} {}", route.name, value(route, now_ms));
            }
        }
        let _ = writeln!(out, "# HELP edge_gateway_filtered_total Events a route's rules refused, by rule.");
        let _ = writeln!(out, "# TYPE edge_gateway_filtered_total counter");
        for route in &self.routes {
            for (refusal, counter) in Refusal::ALL.iter().zip(&route.filtered) {
                let _ = writeln!(
                    out,
                    "edge_gateway_filtered_total{{route=\"{}\",filter=\"{}\"}} {}",
                    route.name,
                    refusal.label(),
                    counter.get()
                );
            }
        }
        self.commands.render(&mut out);
        for route in &self.routes {
            route.batch_size.render(
                &mut out,
                "edge_gateway_batch_size_events",
                "Events per acknowledged batch.",
                &format!("route=\"{}\"", route.name),
            );
        }
        self.latency.render(
            &mut out,
            "edge_gateway_latency_seconds",
            "Receive-to-cloud-ack latency of forwarded events.",
            "",
        );
        self.devices.render(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_drop_reason_is_listed_at_its_own_index() {
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i);
        }
        let metrics = Metrics::new(&[]);
        metrics.count_drop(DropReason::Overrun, 2);
        assert!(metrics.render(0).contains("edge_gateway_events_dropped_total{reason=\"overrun\"} 2"));
    }

    #[test]
    fn rendered_metrics_carry_route_labels_and_drop_reasons() {
        let metrics = Metrics::new(&["telemetry".into()]);
        metrics.count_drop(DropReason::Duplicate, 3);
        metrics.routes[0].depth.set(7);
        metrics.latency.observe_n(0.004, 2);
        let text = metrics.render(0);
        assert!(text.contains("edge_gateway_events_dropped_total{reason=\"duplicate\"} 3"));
        assert!(text.contains("edge_gateway_queue_depth{route=\"telemetry\"} 7"));
        assert!(text.contains("edge_gateway_latency_seconds_bucket{le=\"0.005\"} 2"));
        assert!(text.contains("edge_gateway_latency_seconds_count 2"));
        assert_eq!(metrics.dropped(DropReason::Duplicate), 3);
    }
}
