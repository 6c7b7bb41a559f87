//! Sustained throughput, latency at a fixed rate, and outage-then-drain: each measured on
//! a freshly started system, with the same load for every system of an invocation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::load::{self, Load, SendLog};
use super::procs::dir_bytes;
use super::report::{Metric, Results};
use super::systems::{Sut, SutOptions, System};
use super::Options;

/// No new event for this long: whatever has not arrived is lost (or stuck).
pub const STALL: Duration = Duration::from_secs(20);
/// The same, when a reconnect (with backoff) comes first.
pub const STALL_RECONNECT: Duration = Duration::from_secs(45);
/// Hard cap on any one wait.
pub const LIMIT: Duration = Duration::from_secs(600);

const THROUGHPUT: Metric = Metric::higher("throughput.events_per_s", "ev/s");
const ACCEPTED: Metric = Metric::higher("throughput.accepted_per_s", "ev/s");
const T_LOST: Metric = Metric::lower("throughput.lost", "events");
const T_LATE: Metric = Metric::lower("throughput.late", "events");
const T_DUPLICATES: Metric = Metric::lower("throughput.duplicates", "events");
const RSS_REST: Metric = Metric::lower("rss.rest_mib", "MiB");
const RSS_LOAD: Metric = Metric::lower("rss.load_peak_mib", "MiB");
const RSS_STEADY: Metric = Metric::lower("rss.steady_peak_mib", "MiB");
const L_LOST: Metric = Metric::lower("latency.lost", "events");
const DRAIN: Metric = Metric::higher("outage.drain_events_per_s", "ev/s");
const RECONNECT: Metric = Metric::lower("outage.reconnect_s", "s");
const O_LOST: Metric = Metric::lower("outage.lost", "events");
const O_DUPLICATES: Metric = Metric::lower("outage.duplicates", "events");
const O_RSS: Metric = Metric::lower("outage.rss_buffered_mib", "MiB");
const O_RAM: Metric = Metric::lower("outage.memory_per_event", "B");
const O_DISK: Metric = Metric::lower("outage.disk_per_event", "B");

/// Events per second over `n` events between two instants.
pub fn rate(n: u64, from: Instant, to: Instant) -> f64 {
    let secs = to.saturating_duration_since(from).as_secs_f64();
    if secs > 0.0 {
        n as f64 / secs
    } else {
        f64::NAN
    }
}

/// `1M`, `200k`, `500`: event counts in labels.
pub fn count_label(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(100_000) {
        format!("{}M", n as f64 / 1e6)
    } else if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

/// Polls `check` every 10 ms until it holds, or `timeout`.
pub async fn poll(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if check() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls the gateway's queue depth until it reaches `n` or stops moving for `STALL`;
/// returns the depth and when it last grew.
pub async fn await_depth(sut: &Sut, n: u64) -> (u64, Instant) {
    let mut last = (0, Instant::now());
    let Some(gateway) = &sut.gateway else {
        return last;
    };
    loop {
        let depth = gateway.queue_depth().unwrap_or(last.0);
        if depth != last.0 {
            last = (depth, Instant::now());
        }
        if depth >= n || last.1.elapsed() > STALL {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// As fast as the devices can publish: end-to-end events/s, loss, RSS at rest and peak.
/// Bounded by `throughput_limit`: what has not arrived by then counts as late (still in
/// the gateway's journal) or lost, and the rate is over the whole limit.
pub async fn throughput(r: &mut Results, system: System, o: &Options) -> Result<(), String> {
    let sut = Sut::start(system, &o.sut(None, false)).await?;
    let rest = sut.rss_mib();
    let load = Load::spread(o.throughput_events, o.publishers, None);
    sut.counter.expect(&load, None);
    let sent = load::run(sut.devices_port, load, SendLog::new(&load).into()).await?;
    let left = o.throughput_limit.saturating_sub(sent.started.elapsed());
    let tally = sut.counter.wait(load.total(), STALL, left).await;
    let missing = load.total() - tally.distinct;
    let (end, late) = match missing {
        0 => (tally.last.unwrap_or(sent.started), 0),
        _ => (Instant::now(), sut.gateway.as_ref().and_then(|g| g.queue_depth()).unwrap_or(0)),
    };
    let end_to_end = rate(tally.distinct, sent.started, end);
    let accepted = rate(load.total(), sent.started, sent.acked);
    let n = count_label(load.total());
    let label = |what: &str| format!("{what} ({n} events, {} devices)", load.publishers);
    r.add(THROUGHPUT, &label("sustained throughput, device -> cloud subscriber"), system, end_to_end);
    r.add(ACCEPTED, &label("accepted by the edge (PUBACKs)"), system, accepted);
    let limit = o.throughput_limit.as_secs();
    r.add(T_LATE, &format!("not at the cloud after {limit} s, still queued (throughput)"), system, late as f64);
    r.add(T_LOST, "lost (throughput)", system, missing.saturating_sub(late) as f64);
    r.add(T_DUPLICATES, "duplicates (throughput)", system, tally.duplicates as f64);
    if let Some(rest) = rest {
        r.add(RSS_REST, "RSS at rest (empty)", system, rest);
    }
    if let Some(peak) = sut.peak_rss_mib() {
        r.add(RSS_LOAD, "RSS peak under sustained load", system, peak);
    }
    o.say(format!(
        "  throughput {:<16} {end_to_end:>9.0} ev/s end to end, {accepted:>9.0} ev/s accepted, \
         late {late}, lost {}, dup {}",
        system.title(),
        missing.saturating_sub(late),
        tally.duplicates
    ));
    Ok(())
}

/// Which gateway config a latency measurement uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delay {
    /// `max_delay = "10ms"` (issue 8's target setting).
    Short,
    /// The default (`config/gateway.toml`).
    Default,
}

/// At a fixed moderate rate: latency from device publish to cloud receipt.
pub async fn latency(r: &mut Results, system: System, delay: Delay, o: &Options) -> Result<(), String> {
    let mut sut_options = o.sut(None, false);
    sut_options.max_delay = (delay == Delay::Short).then(|| "10ms".to_owned());
    let sut = Sut::start(system, &sut_options).await?;
    let total = (o.latency_rate * o.latency_secs).round() as u64;
    let load = Load::spread(total, o.latency_publishers, Some(o.latency_rate));
    let log = Arc::new(SendLog::new(&load));
    sut.counter.expect(&load, Some(log.clone()));
    load::run(sut.devices_port, load, log).await?;
    let tally = sut.counter.wait(load.total(), STALL, LIMIT).await;
    let rate_label = format!("{} ev/s", count_label(o.latency_rate as u64));
    // The brokers and the bridge have no max_delay: the same sample serves both rows.
    let variants: &[Delay] = match system {
        System::Gateway => &[delay],
        _ => &[Delay::Short, Delay::Default],
    };
    for variant in variants {
        let (metrics, gw) = match variant {
            Delay::Short => (LATENCY_10MS, "gw max_delay 10ms"),
            Delay::Default => (LATENCY_DEFAULT, "gw default max_delay"),
        };
        for (metric, (q, name)) in metrics.into_iter().zip([(0.5, "p50"), (0.99, "p99"), (1.0, "max")]) {
            if let Some(ms) = tally.latency_ms(q) {
                r.add(metric, &format!("latency {name} @ {rate_label} ({gw})"), system, ms);
            }
        }
    }
    let lost = load.total() - tally.distinct;
    r.add(L_LOST, "lost (latency runs)", system, lost as f64);
    if let (Delay::Short, Some(peak)) = (delay, sut.peak_rss_mib()) {
        r.add(RSS_STEADY, &format!("RSS peak at a steady {rate_label}"), system, peak);
    }
    o.say(format!(
        "  latency    {:<16} {delay:?}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, lost {lost}",
        system.title(),
        tally.latency_ms(0.5).unwrap_or(f64::NAN),
        tally.latency_ms(0.99).unwrap_or(f64::NAN),
        tally.latency_ms(1.0).unwrap_or(f64::NAN),
    ));
    Ok(())
}

const LATENCY_10MS: [Metric; 3] = [
    Metric::lower("latency_10ms.p50_ms", "ms"),
    Metric::lower("latency_10ms.p99_ms", "ms"),
    Metric::lower("latency_10ms.max_ms", "ms"),
];
const LATENCY_DEFAULT: [Metric; 3] = [
    Metric::lower("latency_default.p50_ms", "ms"),
    Metric::lower("latency_default.p99_ms", "ms"),
    Metric::lower("latency_default.max_ms", "ms"),
];

/// N events while the cloud link is cut, then the link back: drain rate, loss, and what
/// the buffered events cost in memory and on disk.
pub async fn outage(r: &mut Results, system: System, o: &Options) -> Result<(), String> {
    let sut = Sut::start(system, &o.sut(None, true)).await?;
    let rest = sut.rss_mib().unwrap_or(f64::NAN);
    sut.cut();
    if let Some(gateway) = &sut.gateway {
        poll(Duration::from_secs(10), || gateway.link_up() == Some(false)).await;
    }
    let load = Load::spread(o.outage_events, o.publishers, None);
    sut.counter.expect(&load, None);
    load::run(sut.devices_port, load, SendLog::new(&load).into()).await?;
    let buffered = match &sut.gateway {
        Some(_) => await_depth(&sut, load.total()).await.0,
        None => load.total(),
    };
    let leaked = sut.counter.distinct();
    let rss = sut.rss_mib().unwrap_or(f64::NAN);
    let disk = match (&sut.gateway, &sut.edge) {
        (Some(_), _) => dir_bytes(sut.data.path()),
        (None, Some(edge)) => edge.persisted_bytes(),
        _ => 0,
    };
    let restored = Instant::now();
    sut.restore();
    let tally = sut.counter.wait(load.total(), STALL_RECONNECT, LIMIT).await;
    let first = tally.first.unwrap_or(restored);
    let drain = rate(tally.distinct, first, tally.last.unwrap_or(restored));
    let reconnect = first.saturating_duration_since(restored).as_secs_f64();
    let lost = load.total() - tally.distinct;
    let n = count_label(load.total());
    let per_event = |bytes: f64| bytes / buffered.max(1) as f64;
    r.add(DRAIN, &format!("drain after an outage ({n} buffered)"), system, drain);
    r.add(RECONNECT, "link back -> first event at the cloud", system, reconnect);
    r.add(O_LOST, "lost (outage)", system, lost as f64);
    r.add(O_DUPLICATES, "duplicates (outage)", system, tally.duplicates as f64);
    r.add(O_RSS, &format!("RSS with {n} buffered"), system, rss);
    let growth = (rss - rest).max(0.0) * 1048576.0;
    r.add(O_RAM, "RAM per buffered event (RSS growth / N)", system, per_event(growth));
    r.add(O_DISK, "disk per buffered event, while running", system, per_event(disk as f64));
    o.say(format!(
        "  outage     {:<16} drain {drain:>9.0} ev/s, reconnect {reconnect:.2} s, lost {lost}, \
         dup {}, leaked during the outage {leaked}",
        system.title(),
        tally.duplicates,
    ));
    Ok(())
}

impl Options {
    /// How to start a system for this invocation.
    pub fn sut(&self, max_delay: Option<&str>, proxy: bool) -> SutOptions {
        SutOptions {
            proxy,
            max_delay: max_delay.map(str::to_owned).or(self.max_delay.clone()),
            rumqttd_exe: self.rumqttd_exe.clone(),
            named_devices: None,
        }
    }

    /// A progress line on stderr (when enabled), with the seconds since the first one.
    pub fn say(&self, line: String) {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        if self.progress {
            let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
            eprintln!("[{t:7.1}s] {line}");
        }
    }
}
