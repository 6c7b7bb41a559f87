//! The big backlog: N events (1M by default) buffered while the cloud is cut, then what
//! that costs and how the edge comes back with it.
//!
//! Gateway: fill, RSS and disk; `kill -9` and restart (start-up with WAL recovery, RSS at
//! rest with the backlog); SIGTERM and restart with the link back (clean start-up), then
//! drain everything and count it. Bridge: fill, RSS; SIGTERM (Mosquitto writes its
//! persistence file only then, or every 30 minutes), restart, drain and count. A `kill -9`
//! of the bridge's edge loses the whole backlog (see the field notes), so the bench does
//! not time that start-up.
//!
//! Start-up is spawn -> `/readyz` 200 for the gateway, spawn -> accepting connections for
//! Mosquitto (which loads its persistence file before it listens).

use std::time::{Duration, Instant};

use super::load::{self, Load, SendLog};
use super::procs::{dir_bytes, vm_mib, GatewayProc};
use super::report::{Metric, Results};
use super::scenarios::{await_depth, count_label, poll, rate, LIMIT, STALL_RECONNECT};
use super::systems::{Sut, System};
use super::Options;

const FILL: Metric = Metric::higher("backlog.fill_events_per_s", "ev/s");
const RSS_EMPTY: Metric = Metric::lower("backlog.rss_empty_mib", "MiB");
const RSS_FILL_PEAK: Metric = Metric::lower("backlog.rss_fill_peak_mib", "MiB");
const RSS_FILLED: Metric = Metric::lower("backlog.rss_filled_mib", "MiB");
const DISK_RUNNING: Metric = Metric::lower("backlog.disk_per_event", "B");
const STARTUP_KILL: Metric = Metric::lower("backlog.startup_kill_ms", "ms");
const RSS_RESTART: Metric = Metric::lower("backlog.rss_restart_mib", "MiB");
const DISK_CLEAN: Metric = Metric::lower("backlog.disk_per_event_clean", "B");
const STARTUP_CLEAN: Metric = Metric::lower("backlog.startup_clean_ms", "ms");
const DRAIN: Metric = Metric::higher("backlog.drain_events_per_s", "ev/s");
const LOST: Metric = Metric::lower("backlog.lost", "events");
const RSS_DRAIN: Metric = Metric::lower("backlog.rss_drain_peak_mib", "MiB");

/// Fills `sut` with the backlog while its cloud link is cut; returns the load and how
/// many events the edge holds.
async fn fill(r: &mut Results, sut: &Sut, o: &Options) -> Result<(Load, u64), String> {
    sut.cut();
    if let Some(gateway) = &sut.gateway {
        poll(Duration::from_secs(10), || gateway.link_up() == Some(false)).await;
    }
    if let Some(rss) = sut.rss_mib() {
        r.add(RSS_EMPTY, "RSS at rest, empty, before filling", sut.system, rss);
    }
    let load = Load::spread(o.backlog_events, o.backlog_publishers, None);
    sut.counter.expect(&load, None);
    let sent = load::run(sut.devices_port, load, SendLog::new(&load).into()).await?;
    // The gateway has it when it is committed; Mosquitto when it acknowledged it.
    let (held, filled) = match sut.gateway {
        Some(_) => await_depth(sut, load.total()).await,
        None => (load.total(), sent.acked),
    };
    let n = count_label(load.total());
    let label = format!("filling a {n} backlog (cloud cut, {} devices)", load.publishers);
    r.add(FILL, &label, sut.system, rate(held, sent.started, filled));
    if let Some(rss) = sut.rss_mib() {
        r.add(RSS_FILLED, &format!("RSS with a {n} backlog, just filled"), sut.system, rss);
    }
    if let Some(peak) = sut.peak_rss_mib() {
        r.add(RSS_FILL_PEAK, &format!("RSS peak while filling the {n} backlog"), sut.system, peak);
    }
    if let Some(status) = sut.gateway.as_ref().and_then(|g| g.status()) {
        o.say(format!(
            "  backlog    edge-gateway     filled: {} accepted, {} received by ingest, {} committed, dropped {}",
            load.total(),
            status["events_received"],
            status["events_committed"],
            status["dropped"]
        ));
    }
    Ok((load, held))
}

/// Waits for the whole backlog at the cloud; records drain rate, loss and peak RSS.
async fn drain(r: &mut Results, sut: &Sut, load: &Load, restored: Instant) -> (u64, f64) {
    let tally = sut.counter.wait(load.total(), STALL_RECONNECT, LIMIT).await;
    let first = tally.first.unwrap_or(restored);
    let drained = rate(tally.distinct, first, tally.last.unwrap_or(restored));
    let n = count_label(load.total());
    let lost = load.total() - tally.distinct;
    let s = sut.system;
    r.add(DRAIN, &format!("drain of a {n} backlog"), s, drained);
    r.add(LOST, &format!("lost ({n} backlog, restarts included)"), s, lost as f64);
    if let Some(peak) = sut.peak_rss_mib() {
        let label = format!("RSS peak from restart to the {n} backlog drained");
        r.add(RSS_DRAIN, &label, s, peak);
    }
    (lost, drained)
}

fn startup_label(n: &str, after: &str) -> String {
    format!("start-up with a {n} backlog after {after} (spawn -> ready)")
}

/// The gateway with a big backlog.
pub async fn gateway(r: &mut Results, o: &Options) -> Result<(), String> {
    let mut sut = Sut::start(System::Gateway, &o.sut(None, true)).await?;
    let (load, held) = fill(r, &sut, o).await?;
    let n = count_label(load.total());
    let s = System::Gateway;
    let per_event = |bytes: u64| bytes as f64 / held.max(1) as f64;
    let disk = per_event(dir_bytes(sut.data.path()));
    r.add(DISK_RUNNING, "disk per buffered event, running (journal + WAL)", s, disk);

    let mut proc = sut.gateway.take().ok_or("no gateway")?;
    let conf = proc.conf.clone();
    proc.kill();
    let mut proc = GatewayProc::spawn(&conf)?;
    let after_kill = proc.ready(Duration::from_secs(120)).await?;
    let depth = proc.queue_depth().unwrap_or(0);
    r.add(STARTUP_KILL, &startup_label(&n, "kill -9"), s, ms(after_kill));
    if let Some(rss) = vm_mib(proc.pid(), "VmRSS") {
        r.add(RSS_RESTART, &format!("RSS with a {n} backlog, restarted, at rest"), s, rss);
    }

    proc.terminate();
    let disk = per_event(dir_bytes(sut.data.path()));
    r.add(DISK_CLEAN, "disk per buffered event, after a clean shutdown", s, disk);
    sut.restore();
    let restored = Instant::now();
    let mut proc = GatewayProc::spawn(&conf)?;
    let after_term = proc.ready(Duration::from_secs(120)).await?;
    r.add(STARTUP_CLEAN, &startup_label(&n, "SIGTERM"), s, ms(after_term));
    sut.gateway = Some(proc);
    let (lost, drained) = drain(r, &sut, &load, restored).await;
    o.say(format!(
        "  backlog    edge-gateway     {held} held ({depth} after kill -9), start-up {} / {} ms \
         (kill / term), drain {drained:.0} ev/s, lost {lost}",
        after_kill.as_millis(),
        after_term.as_millis()
    ));
    Ok(())
}

/// The Mosquitto bridge with the same backlog.
pub async fn bridge(r: &mut Results, o: &Options) -> Result<(), String> {
    let mut sut = Sut::start(System::Bridge, &o.sut(None, true)).await?;
    let (load, held) = fill(r, &sut, o).await?;
    let n = count_label(load.total());
    let s = System::Bridge;
    let edge = sut.edge.as_mut().ok_or("no edge broker")?;
    let saving = edge.terminate().unwrap_or_default();
    let bytes = edge.persisted_bytes();
    let startup = edge.restart().await?;
    let disk = bytes as f64 / held.max(1) as f64;
    r.add(DISK_CLEAN, "disk per buffered event, after a clean shutdown", s, disk);
    r.add(STARTUP_CLEAN, &startup_label(&n, "SIGTERM"), s, ms(startup));
    if let Some(rss) = sut.rss_mib() {
        r.add(RSS_RESTART, &format!("RSS with a {n} backlog, restarted, at rest"), s, rss);
    }
    let restored = Instant::now();
    sut.restore();
    let (lost, drained) = drain(r, &sut, &load, restored).await;
    o.say(format!(
        "  backlog    Mosquitto bridge {held} held, save {} ms, start-up {} ms, drain \
         {drained:.0} ev/s, lost {lost}",
        saving.as_millis(),
        startup.as_millis()
    ));
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
