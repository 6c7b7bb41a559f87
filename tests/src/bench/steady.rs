//! The `steady` scenario (issue 16): what one event costs at a realistic, modest load —
//! D devices x R events/s for S seconds, evenly paced, QoS 1 — on the gateway and on the
//! Mosquitto bridge (persistence on), one after the other in the same invocation.
//!
//! Measured on the process the devices talk to (all its threads), over the window from the
//! first publish until every event is at the cloud and, for the gateway, its journal is
//! empty again (the deletes after the cloud's PUBACK belong to the cost of an event):
//!
//! - CPU: `utime + stime` of `/proc/PID/stat`, per 1,000 events;
//! - disk: `write_bytes` of `/proc/PID/io` (bytes the process caused to be written to the
//!   block layer), per event;
//! - fsync-type calls: `perf stat` counting the `fsync`, `fdatasync`, `sync_file_range` and
//!   `msync` syscall tracepoints of the process (no ptrace: the counted process is not
//!   slowed), per second; "–" when `perf` cannot attach;
//! - device-ack latency (gateway only: a Mosquitto bridge has no durable ack): the gateway's
//!   devices log in as named users (`devices.auth.users`, the production set-up) and each
//!   subscribes to its own `devices/{id}/ack`, as firmware does; each `{"boot":B,"seq":S}`
//!   covers every event of that device and boot up to S, and each event's latency is its
//!   publish call -> the first ack that covers it. The bridge's devices publish the same
//!   events anonymously (Mosquitto checks a password at connect only);
//! - RSS at the end, and idle CPU: the CPU time of its threads (`/proc/PID/task/*/schedstat`,
//!   nanoseconds) over `idle_secs` without traffic, after the warm-up and before the load.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::load::{self, device_index, Load, SendLog};
use super::report::{Metric, Results};
use super::scenarios::{poll, LIMIT, STALL};
use super::systems::{Sut, System};
use super::Options;

const CPU: Metric = Metric::lower("steady.cpu_ms_per_1k", "ms");
const DISK: Metric = Metric::lower("steady.disk_bytes_per_event", "B");
const FSYNC: Metric = Metric::lower("steady.fsync_per_s", "calls/s");
const ACK_P50: Metric = Metric::lower("steady.ack_p50_ms", "ms");
const ACK_P99: Metric = Metric::lower("steady.ack_p99_ms", "ms");
const RSS: Metric = Metric::lower("steady.rss_mib", "MiB");
const IDLE: Metric = Metric::lower("steady.idle_cpu_ms", "ms");
const LOST: Metric = Metric::lower("steady.lost", "events");

/// The syscalls counted as fsync-type.
const SYNC_CALLS: [&str; 4] = ["fsync", "fdatasync", "sync_file_range", "msync"];

/// CPU time (user + system, all threads) of a process, in milliseconds.
pub fn cpu_ms(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: the fields start after its closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line (1-based), 12 and 13 here.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 * 1000.0 / clock_ticks())
}

/// CPU time of every live thread of a process, nanoseconds by thread id, from
/// `/proc/PID/task/*/schedstat` (nanoseconds: fine enough for the few milliseconds of an
/// idle process, where `/proc/PID/stat` counts in 10 ms ticks).
pub fn thread_cpu(pid: u32) -> Option<HashMap<u32, u64>> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut threads = HashMap::new();
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else { continue };
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        if let Some(nanos) = stat.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()) {
            threads.insert(tid, nanos);
        }
    }
    Some(threads)
}

/// Milliseconds of CPU the threads spent between two [`thread_cpu`] readings: each thread
/// alive at the end counts from the first reading (or from its start). A thread that ended
/// in between is not counted: only the runtime's blocking pool ends threads, and it does
/// so after 10 s without work (its work, the password checks at connect, came before).
pub fn cpu_between(before: &HashMap<u32, u64>, after: &HashMap<u32, u64>) -> f64 {
    let nanos: u64 = after.iter().map(|(tid, &n)| n.saturating_sub(before.get(tid).copied().unwrap_or(0))).sum();
    nanos as f64 / 1e6
}

/// `sysconf(_SC_CLK_TCK)`, by `getconf` (100 on every Linux the bench has seen).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// `write_bytes` of `/proc/PID/io`.
pub fn write_bytes(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines().find_map(|l| l.strip_prefix("write_bytes:"))?.trim().parse().ok()
}

/// `perf stat` counting the fsync-type syscalls of a process until [`SyncCounter::stop`].
pub struct SyncCounter {
    child: Child,
    out: tempfile::NamedTempFile,
}

impl SyncCounter {
    /// Attaches to `pid` (every thread it has now); None when perf is missing or refused.
    pub fn start(pid: u32) -> Option<SyncCounter> {
        let out = tempfile::NamedTempFile::new().ok()?;
        let events: Vec<String> = SYNC_CALLS.iter().map(|c| format!("syscalls:sys_enter_{c}")).collect();
        let child = Command::new("perf")
            .args(["stat", "-x", ",", "-e", &events.join(","), "-o"])
            .arg(out.path())
            .args(["-p", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        // perf needs a moment to open its counters; it writes nothing until it stops.
        std::thread::sleep(Duration::from_millis(300));
        Some(SyncCounter { child, out })
    }

    /// Stops it (SIGINT) and returns the calls counted; None when perf counted nothing usable.
    pub fn stop(mut self) -> Option<u64> {
        let _ = Command::new("kill").arg("-INT").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
        let text = std::fs::read_to_string(self.out.path()).ok()?;
        let counts: Vec<u64> = text
            .lines()
            .filter(|l| l.contains("syscalls:sys_enter_"))
            .filter_map(|l| l.split(',').next()?.trim().parse().ok())
            .collect();
        (!counts.is_empty()).then(|| counts.iter().sum())
    }
}

/// The devices' own acks (each device subscribes to its `devices/{id}/ack`, as firmware
/// does): for each event of the load, when the first ack covering it arrived.
struct AckWatch {
    shared: Mutex<AckState>,
}

struct AckState {
    load: Load,
    log: Arc<SendLog>,
    /// Per publisher: the highest seq of the load's boot covered so far.
    covered: Vec<u32>,
    latencies_us: Vec<u32>,
}

impl AckWatch {
    fn new(load: Load, log: Arc<SendLog>) -> AckWatch {
        let state = AckState {
            load,
            log,
            covered: vec![0; load.publishers],
            latencies_us: Vec::with_capacity(load.total() as usize),
        };
        AckWatch { shared: Mutex::new(state) }
    }

    /// Events covered by an ack so far.
    fn covered_total(&self) -> u64 {
        self.shared.lock().map_or(0, |s| s.covered.iter().map(|&c| u64::from(c)).sum())
    }

    /// The sorted latencies, microseconds.
    fn latencies_us(&self) -> Vec<u32> {
        let mut v = self.shared.lock().map_or_else(|_| Vec::new(), |s| s.latencies_us.clone());
        v.sort_unstable();
        v
    }
}

impl load::Acks for AckWatch {
    fn receive(&self, topic: &str, payload: &[u8]) {
        if let Ok(mut state) = self.shared.lock() {
            state.receive(topic, payload);
        }
    }

    fn covered(&self, index: usize) -> bool {
        self.shared.lock().is_ok_and(|s| s.covered.get(index).is_some_and(|&c| c >= s.load.per_publisher))
    }
}

#[derive(serde::Deserialize)]
struct Mark {
    boot: u32,
    seq: u32,
}

impl AckState {
    fn receive(&mut self, topic: &str, payload: &[u8]) {
        let now = Instant::now();
        let Some(index) = topic.strip_prefix("devices/").and_then(|t| t.split('/').next()).and_then(device_index)
        else {
            return;
        };
        let Ok(mark) = serde_json::from_slice::<Mark>(payload) else { return };
        if mark.boot != self.load.boot || index >= self.covered.len() {
            return;
        }
        let upto = mark.seq.min(self.load.per_publisher);
        for seq in self.covered[index] + 1..=upto {
            if let Some(sent) = self.log.sent(index, seq) {
                self.latencies_us.push(now.saturating_duration_since(sent).as_micros().min(u32::MAX as u128) as u32);
            }
        }
        self.covered[index] = self.covered[index].max(upto);
    }
}

fn quantile_ms(sorted_us: &[u32], q: f64) -> Option<f64> {
    let rank = ((sorted_us.len().checked_sub(1)?) as f64 * q).round() as usize;
    Some(f64::from(sorted_us[rank]) / 1000.0)
}

/// One steady measurement of `system` (the gateway or the bridge).
pub async fn steady(r: &mut Results, system: System, o: &Options) -> Result<(), String> {
    let mut options = o.sut(None, false);
    options.named_devices = Some(o.steady_devices);
    let sut = Sut::start(system, &options).await?;
    let pid = sut.pid().ok_or("no pid")?;
    let rate = o.steady_devices as f64 * o.steady_rate;
    let label = format!("{} devices x {} ev/s = {} ev/s", o.steady_devices, o.steady_rate, rate);

    let idle_from = thread_cpu(pid).ok_or("cannot read /proc/PID/task")?;
    tokio::time::sleep(Duration::from_secs_f64(o.idle_secs)).await;
    let idle = thread_cpu(pid).map_or(f64::NAN, |now| cpu_between(&idle_from, &now));

    let total = (rate * o.steady_secs).round() as u64;
    let load = Load::spread(total, o.steady_devices, Some(rate));
    let log = Arc::new(SendLog::new(&load));
    sut.counter.expect(&load, Some(log.clone()));
    // The gateway's devices log in as named users and take their own acks (the production
    // set-up, and the gate's direct path: docs/architecture.md, step 2); the bridge's
    // devices publish the same events (it has no device acks).
    let acks = match system {
        System::Gateway => Some(Arc::new(AckWatch::new(load, log.clone()))),
        _ => None,
    };
    // The window starts once every device is connected (the connects, a password check
    // each for the gateway, are not the steady cost of an event).
    let connected = Arc::new(tokio::sync::Barrier::new(load.publishers + 1));
    let acks_dyn = acks.clone().map(|acks| acks as Arc<dyn load::Acks>);
    let running = tokio::spawn(load::run_connected(sut.devices_port, load, log, acks_dyn, connected.clone()));
    let syncs = SyncCounter::start(pid);
    connected.wait().await;
    // CPU in nanoseconds per thread (schedstat): at smoke size a system may spend less than
    // one 10 ms clock tick, which `/proc/PID/stat` would report as 0.
    let (cpu0, disk0, t0) = (thread_cpu(pid), write_bytes(pid), Instant::now());
    running.await.map_err(|e| format!("the load: {e}"))??;
    let tally = sut.counter.wait(load.total(), STALL, LIMIT).await;
    if let Some(acks) = &acks {
        poll(Duration::from_secs(10), || acks.covered_total() >= load.total()).await;
    }
    if let Some(gateway) = &sut.gateway {
        poll(Duration::from_secs(10), || gateway.queue_depth() == Some(0)).await;
    }
    let (cpu1, disk1, secs) = (thread_cpu(pid), write_bytes(pid), t0.elapsed().as_secs_f64());
    let calls = syncs.and_then(SyncCounter::stop);

    let n = load.total() as f64;
    let lost = load.total() - tally.distinct;
    let cpu = cpu0.zip(cpu1).map(|(a, b)| cpu_between(&a, &b) / n * 1000.0);
    let disk = disk0.zip(disk1).map(|(a, b)| b.saturating_sub(a) as f64 / n);
    let fsync = calls.map(|c| c as f64 / secs);
    if let Some(cpu) = cpu {
        r.add(CPU, &format!("CPU per 1k events @ {label}"), system, cpu);
    }
    if let Some(disk) = disk {
        r.add(DISK, "disk written per event (/proc/PID/io write_bytes)", system, disk);
    }
    if let Some(fsync) = fsync {
        r.add(FSYNC, "fsync-type calls per second (perf, syscall tracepoints)", system, fsync);
    }
    let latencies = acks.as_ref().map(|acks| acks.latencies_us()).unwrap_or_default();
    let (p50, p99) = (quantile_ms(&latencies, 0.5), quantile_ms(&latencies, 0.99));
    if let (Some(p50), Some(p99)) = (p50, p99) {
        r.add(ACK_P50, "device ack latency p50 (publish -> retained devices/{id}/ack)", system, p50);
        r.add(ACK_P99, "device ack latency p99", system, p99);
    }
    if let Some(rss) = sut.rss_mib() {
        r.add(RSS, "RSS after the steady load", system, rss);
    }
    r.add(IDLE, &format!("idle CPU, {} s without traffic", o.idle_secs), system, idle);
    r.add(LOST, "lost (steady)", system, lost as f64);
    let show = |x: Option<f64>| x.map_or_else(|| "–".to_owned(), |v| format!("{v:.1}"));
    o.say(format!(
        "  steady     {:<16} {label}: cpu {} ms/1k, disk {} B/ev, fsync {} /s, ack p50 {} p99 {} ms, \
         idle {idle:.0} ms, lost {lost}",
        system.title(),
        show(cpu),
        show(disk),
        show(fsync),
        show(p50),
        show(p99),
    ));
    Ok(())
}
