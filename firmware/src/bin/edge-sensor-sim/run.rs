//! Runs the fleet: devices spread over worker threads, a progress line once a second,
//! the final summary, and the verdict (every event confirmed, or not).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use edge_firmware::host::TcpTransport;

use crate::fleet::{self, Counters, LastError, Shared, Sim, Spec, Totals};
use crate::link::{SimLink, Tls};
use crate::Args;

/// The worker threads and what the supervisor shares with them.
struct Running {
    started: Instant,
    workers: Vec<JoinHandle<()>>,
    counters: Vec<Counters>,
    stop: Arc<AtomicBool>,
    shared: Shared,
    /// One message per worker that has finished.
    done: mpsc::Receiver<()>,
}

/// Runs the simulation to its end; true if every event was confirmed.
pub fn run(args: &Args, spec: Spec) -> Result<bool, String> {
    let groups = build(args, &spec)?;
    let running = start(groups)?;
    let timed_out = supervise(args, &running);
    for worker in running.workers {
        let _ = worker.join();
    }
    let complete = summary(args, &totals(&running.counters), running.started.elapsed(), timed_out);
    if let Some(refusal) = running.shared.refusal.lock().ok().and_then(|r| r.clone()) {
        eprintln!("edge-sensor-sim: {refusal}");
        return Ok(false);
    }
    Ok(complete)
}

/// The devices, dealt round-robin into one group per worker thread.
fn build(args: &Args, spec: &Spec) -> Result<Vec<Vec<Sim>>, String> {
    let addr =
        TcpTransport::new(&args.host, args.port).map_err(|e| format!("cannot resolve {}: {e}", args.host))?.addr();
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .clamp(1, args.devices);
    let tls = tls(args)?;
    let mut groups: Vec<Vec<Sim>> = (0..threads).map(|_| Vec::new()).collect();
    for index in 0..args.devices {
        let link = SimLink::new(addr, tls.as_ref())?;
        let sim = Sim::new(index, spec, link).map_err(|e| format!("device {index}: {e}"))?;
        groups[index % threads].push(sim);
    }
    Ok(groups)
}

/// The TLS settings from `--tls-ca` and `--tls-server-name`.
#[cfg(feature = "tls")]
fn tls(args: &Args) -> Result<Option<Tls>, String> {
    let Some(ca) = &args.tls_ca else { return Ok(None) };
    let pem = std::fs::read(ca).map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
    let config =
        edge_firmware::host::tls::client_config(&pem).map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
    Ok(Some(Tls { config, server_name: args.tls_server_name.clone().unwrap_or_else(|| args.host.clone()) }))
}

#[cfg(not(feature = "tls"))]
fn tls(_: &Args) -> Result<Option<Tls>, String> {
    Ok(None)
}

fn start(groups: Vec<Vec<Sim>>) -> Result<Running, String> {
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let shared = Shared::default();
    let (done_tx, done) = mpsc::channel();
    let mut workers = Vec::new();
    let mut counters = Vec::new();
    for (i, group) in groups.into_iter().enumerate() {
        let c = Counters::default();
        counters.push(c.clone());
        let (stop, shared, done_tx) = (stop.clone(), shared.clone(), done_tx.clone());
        let worker = std::thread::Builder::new()
            .name(format!("sim-{i}"))
            .spawn(move || {
                fleet::work(group, started, c, stop, shared);
                let _ = done_tx.send(());
            })
            .map_err(|e| format!("cannot start a worker thread: {e}"))?;
        workers.push(worker);
    }
    Ok(Running { started, workers, counters, stop, shared, done })
}

/// Prints a progress line every second until every worker is done; stops them at the
/// timeout. Returns true if it timed out.
fn supervise(args: &Args, running: &Running) -> bool {
    let mut finished = 0;
    let mut timed_out = false;
    let mut next_line = running.started + Duration::from_secs(1);
    let mut last_confirmed = 0;
    while finished < running.workers.len() {
        let elapsed = running.started.elapsed();
        if !timed_out && args.timeout.is_some_and(|t| elapsed >= t) {
            timed_out = true;
            running.stop.store(true, Ordering::Relaxed);
        }
        match running.done.recv_timeout(next_line.saturating_duration_since(Instant::now())) {
            Ok(()) => finished += 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let t = totals(&running.counters);
                if !args.quiet {
                    let rate = t.confirmed - last_confirmed;
                    println!("{}", progress_line(elapsed, &t, rate, args.devices, &running.shared.last_error));
                }
                last_confirmed = t.confirmed;
                next_line += Duration::from_secs(1);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    timed_out
}

fn totals(counters: &[Counters]) -> Totals {
    let mut sum = Totals::default();
    for c in counters {
        if let Ok(t) = c.lock() {
            sum.add(&t);
        }
    }
    sum
}

fn progress_line(
    elapsed: Duration,
    t: &Totals,
    confirmed_last_second: u64,
    devices: usize,
    last_error: &LastError,
) -> String {
    let mut line = format!(
        "[{:>6.1}s] sent {} confirmed {} pending {} | {}/s | online {}/{} resent {} dropped {} link_errors {}",
        elapsed.as_secs_f64(),
        t.recorded,
        t.confirmed,
        t.pending,
        confirmed_last_second,
        t.online,
        devices,
        t.resent,
        t.dropped,
        t.link_errors
    );
    if t.online < devices as u64 {
        if let Some(err) = last_error.lock().ok().and_then(|e| e.clone()) {
            line.push_str(&format!(" | last error: {err}"));
        }
    }
    line
}

/// Prints the summary line; true if every event was recorded and confirmed.
fn summary(args: &Args, t: &Totals, elapsed: Duration, timed_out: bool) -> bool {
    let expected = args.events * args.devices as u64;
    let all_recorded = args.events == 0 || t.recorded == expected;
    let complete = !timed_out && all_recorded && t.dropped == 0 && t.confirmed == t.recorded;
    let verdict = match (timed_out, complete) {
        (true, _) => "timed out",
        (false, true) => "all confirmed",
        (false, false) => "incomplete",
    };
    let rate = t.confirmed as f64 / elapsed.as_secs_f64().max(0.001);
    println!(
        "edge-sensor-sim: {verdict} after {:.1}s: sent {} confirmed {} pending {} dropped {} published {} resent {} connects {} link_errors {} oversized {} ({rate:.0} events/s)",
        elapsed.as_secs_f64(),
        t.recorded,
        t.confirmed,
        t.pending,
        t.dropped,
        t.published,
        t.resent,
        t.connects,
        t.link_errors,
        t.oversized
    );
    complete
}
