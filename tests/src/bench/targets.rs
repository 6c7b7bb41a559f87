//! Issue 8's (and issue 16's steady-load) targets for this 2-core machine, judged on the medians of an invocation.

use super::report::{number, Results, Row, Target};
use super::scenarios::count_label;
use super::systems::System;
use super::Options;

/// 40 MB, the RSS bound, in MiB.
const RSS_BOUND_MIB: f64 = 40e6 / 1048576.0;

fn gw(results: &Results, key: &str) -> Option<f64> {
    results.median(key, System::Gateway)
}

fn target(text: &str, measured: Option<(String, bool)>) -> Target {
    match measured {
        Some((measured, met)) => Target { target: text.into(), measured, met: Some(met) },
        None => Target { target: text.into(), measured: "not measured in this invocation".into(), met: None },
    }
}

/// Every target, in the order.
pub fn judge(r: &Results, o: &Options) -> Vec<Target> {
    let throughput = r.row("throughput.events_per_s");
    let backlog = count_label(o.backlog_events);
    vec![
        target(
            "sustained throughput >= 2x the Mosquitto bridge",
            throughput.and_then(|row| {
                let ratio = row.ratio_bridge()?;
                Some((
                    format!(
                        "{} vs {} ev/s = {ratio:.2}x",
                        number(row.median(System::Gateway)?),
                        number(row.median(System::Bridge)?)
                    ),
                    ratio >= 2.0,
                ))
            }),
        ),
        target("sustained throughput >= 60% of the broker-only ceiling", throughput.and_then(ceiling)),
        target("drain >= 100k events/s", drain(r)),
        target(
            &format!("p99 latency <= 25 ms at {} ev/s with max_delay = 10 ms", count_label(o.latency_rate as u64)),
            gw(r, "latency_10ms.p99_ms").map(|p99| (format!("p99 {p99:.1} ms"), p99 <= 25.0)),
        ),
        target("RSS <= 40 MB under load", rss_load(r)),
        target(&format!("RSS not growing with the backlog ({backlog} events)"), rss_flat(r)),
        target(
            &format!("start-up with a {backlog} backlog < 1 s"),
            gw(r, "backlog.startup_kill_ms").zip(gw(r, "backlog.startup_clean_ms")).map(|(kill, clean)| {
                (format!("{kill:.0} ms after kill -9, {clean:.0} ms after SIGTERM"), kill < 1000.0 && clean < 1000.0)
            }),
        ),
        target("zero events lost anywhere (every run)", lost(r)),
        target(
            "steady (issue 16): disk <= 500 B written per event",
            gw(r, "steady.disk_bytes_per_event").map(|b| (format!("{b:.0} B per event"), b <= 500.0)),
        ),
        target(
            "steady: <= 10 fsync-type calls per second",
            gw(r, "steady.fsync_per_s").map(|c| (format!("{c:.1} per second"), c <= 10.0)),
        ),
        target(
            "steady: CPU per event <= 2x the Mosquitto bridge",
            versus_bridge(r, "steady.cpu_ms_per_1k", "ms per 1k events"),
        ),
        target(
            "steady: device-ack latency p99 <= 250 ms",
            gw(r, "steady.ack_p99_ms").map(|p99| (format!("p99 {p99:.0} ms"), p99 <= 250.0)),
        ),
        target("steady: idle CPU within 2x the bridge's", versus_bridge(r, "steady.idle_cpu_ms", "ms")),
    ]
}

/// The gateway's median against 2x the bridge's.
fn versus_bridge(r: &Results, key: &str, unit: &str) -> Option<(String, bool)> {
    let row = r.row(key)?;
    let (gateway, bridge) = (row.median(System::Gateway)?, row.median(System::Bridge)?);
    let ratio = row.ratio_bridge()?;
    Some((format!("{gateway:.1} vs {bridge:.1} {unit} = {ratio:.2}x"), ratio <= 2.0))
}

fn ceiling(row: &Row) -> Option<(String, bool)> {
    let (system, value) = row.ceiling()?;
    let ratio = row.ratio_ceiling()?;
    Some((
        format!(
            "{} vs {} ev/s ({}) = {:.0}%",
            number(row.median(System::Gateway)?),
            number(value),
            system.title(),
            ratio * 100.0
        ),
        ratio >= 0.6,
    ))
}

fn drain(r: &Results) -> Option<(String, bool)> {
    let rates: Vec<(&str, f64)> =
        [("after an outage", "outage.drain_events_per_s"), ("of the big backlog", "backlog.drain_events_per_s")]
            .into_iter()
            .filter_map(|(what, key)| Some((what, gw(r, key)?)))
            .collect();
    if rates.is_empty() {
        return None;
    }
    let text = rates.iter().map(|(what, v)| format!("{} ev/s {what}", number(*v))).collect::<Vec<_>>().join(", ");
    Some((text, rates.iter().all(|(_, v)| *v >= 100_000.0)))
}

fn rss_load(r: &Results) -> Option<(String, bool)> {
    let peaks: Vec<(&str, f64)> = [
        ("the steady latency load", "rss.steady_peak_mib"),
        ("as fast as the devices can send", "rss.load_peak_mib"),
        ("filling the big backlog", "backlog.rss_fill_peak_mib"),
    ]
    .into_iter()
    .filter_map(|(what, key)| Some((what, gw(r, key)?)))
    .collect();
    if peaks.is_empty() {
        return None;
    }
    let text = peaks
        .iter()
        .map(|(what, mib)| format!("peak {mib:.1} MiB = {:.1} MB ({what})", mib * 1048576.0 / 1e6))
        .collect::<Vec<_>>()
        .join(", ");
    Some((text, peaks.iter().all(|(_, mib)| *mib <= RSS_BOUND_MIB)))
}

fn rss_flat(r: &Results) -> Option<(String, bool)> {
    let rest = gw(r, "backlog.rss_empty_mib").or(gw(r, "rss.rest_mib"))?;
    let restarted = gw(r, "backlog.rss_restart_mib")?;
    let filled = gw(r, "backlog.rss_filled_mib");
    let drained = gw(r, "backlog.rss_drain_peak_mib");
    let mut text = format!("empty at rest {rest:.1} MiB, restarted with the backlog {restarted:.1} MiB");
    if let Some(f) = filled {
        text += &format!(", just filled {f:.1} MiB");
    }
    if let Some(d) = drained {
        text += &format!(", peak while draining it {d:.1} MiB");
    }
    // The backlog itself: after a restart, and while it drains. Filling it is a burst of
    // load, judged by "RSS <= 40 MB under load".
    let flat = restarted <= rest + (rest * 0.1).max(2.0) && drained.is_none_or(|d| d <= RSS_BOUND_MIB);
    Some((text, flat))
}

fn lost(r: &Results) -> Option<(String, bool)> {
    let rows: Vec<&Row> = r.rows().iter().filter(|row| row.key.ends_with(".lost")).collect();
    if rows.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    let mut all_zero = true;
    for row in rows {
        let worst = row.samples.get(&System::Gateway).and_then(|v| v.iter().copied().reduce(f64::max));
        if let Some(worst) = worst {
            all_zero &= worst == 0.0;
            parts.push(format!("{} worst run {}", row.label, number(worst)));
        }
    }
    Some((parts.join("; "), all_zero))
}
