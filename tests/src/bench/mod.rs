//! The benchmark of issue 8: the gateway against the alternatives, on this machine, in one
//! invocation, under the same load. `cargo run --release -p edge-tests --bin bench -- --help`.
//!
//! - [`load`]: the load generator (one rumqttc connection per device, QoS 1, ~100-byte
//!   JSON events, as fast as acknowledged or at a fixed rate).
//! - [`counter`]: the cloud-side subscriber, counting by `(device, boot, seq)`.
//! - [`systems`]: what is measured — Mosquitto alone, rumqttd alone, a Mosquitto bridge with
//!   persistence, the gateway with its default config — each started fresh per measurement.
//! - [`procs`], [`rumqttd`]: the processes, with their pids (RSS) and files (disk).
//! - [`scenarios`], [`backlog`]: throughput, latency, outage-then-drain, the 1M backlog.
//! - [`steady`]: the cost of an event at a modest steady load (issue 16): CPU, disk
//!   writes, fsync-type calls, device-ack latency, idle CPU.
//! - [`report`]: medians over runs, ratios, the table and the JSON; [`targets`]: issue 8's
//!   targets judged on the medians.
//!
//! Every run interleaves the systems (same machine state for each), and every number in
//! the table is the median over `--runs`; ratios compare medians of the same invocation.

pub mod backlog;
pub mod counter;
pub mod load;
pub mod procs;
pub mod report;
pub mod rumqttd;
pub mod scenarios;
pub mod steady;
pub mod systems;
pub mod targets;

use std::path::PathBuf;
use std::time::Duration;

use report::{Results, Target};
use systems::System;

/// A part of the bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// As fast as possible, every system.
    Throughput,
    /// A fixed moderate rate, every system (the gateway with `max_delay` 10 ms and default).
    Latency,
    /// N events while the cloud is cut, then drain: bridge and gateway.
    Outage,
    /// A big backlog: RSS, disk, start-up, drain: gateway (and bridge).
    Backlog,
    /// A modest steady load: cost per event (issue 16): bridge and gateway.
    Steady,
}

impl Scenario {
    /// All of them, in order.
    pub const ALL: [Scenario; 5] =
        [Scenario::Throughput, Scenario::Latency, Scenario::Outage, Scenario::Backlog, Scenario::Steady];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Throughput => "throughput",
            Scenario::Latency => "latency",
            Scenario::Outage => "outage",
            Scenario::Backlog => "backlog",
            Scenario::Steady => "steady",
        }
    }

    /// Parses a name.
    pub fn parse(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// What to run, and how big.
#[derive(Debug, Clone)]
pub struct Options {
    /// Repetitions; the table shows medians.
    pub runs: usize,
    /// Which scenarios.
    pub scenarios: Vec<Scenario>,
    /// Device connections for throughput and outage.
    pub publishers: usize,
    /// Events of the throughput scenario.
    pub throughput_events: u64,
    /// Longest wait for them, from the first publish.
    pub throughput_limit: Duration,
    /// Events per second of the latency scenario.
    pub latency_rate: f64,
    /// Seconds of the latency scenario.
    pub latency_secs: f64,
    /// Device connections of the latency scenario.
    pub latency_publishers: usize,
    /// Events buffered in the outage scenario.
    pub outage_events: u64,
    /// Events of the big backlog.
    pub backlog_events: u64,
    /// Device connections filling it.
    pub backlog_publishers: usize,
    /// Also fill the bridge with the big backlog.
    pub backlog_bridge: bool,
    /// An executable that serves rumqttd (`serve-rumqttd PORT`); None skips that baseline.
    pub rumqttd_exe: Option<PathBuf>,
    /// Devices of the steady scenario.
    pub steady_devices: usize,
    /// Events per second per device in the steady scenario.
    pub steady_rate: f64,
    /// Seconds of the steady load.
    pub steady_secs: f64,
    /// Seconds without traffic over which idle CPU is measured (steady scenario).
    pub idle_secs: f64,
    /// Which systems (rumqttd alone also needs `rumqttd_exe`).
    pub systems: Vec<System>,
    /// The gateway's `max_delay` outside the latency scenario; None = the default config.
    pub max_delay: Option<String>,
    /// Progress lines on stderr.
    pub progress: bool,
}

impl Options {
    /// The full bench: what BENCHMARKS.md reports.
    pub fn full() -> Options {
        Options {
            runs: 3,
            scenarios: Scenario::ALL.to_vec(),
            publishers: 20,
            throughput_events: 200_000,
            throughput_limit: Duration::from_secs(120),
            latency_rate: 5000.0,
            latency_secs: 10.0,
            latency_publishers: 10,
            outage_events: 100_000,
            backlog_events: 1_000_000,
            backlog_publishers: 50,
            backlog_bridge: true,
            steady_devices: 20,
            steady_rate: 10.0,
            steady_secs: 30.0,
            idle_secs: 20.0,
            rumqttd_exe: None,
            systems: System::ALL.to_vec(),
            max_delay: None,
            progress: true,
        }
    }

    /// A CI-sized smoke run: one run, small counts.
    pub fn quick() -> Options {
        Options {
            runs: 1,
            throughput_events: 20_000,
            throughput_limit: Duration::from_secs(60),
            latency_secs: 2.0,
            outage_events: 10_000,
            backlog_events: 50_000,
            backlog_publishers: 20,
            steady_secs: 10.0,
            idle_secs: 5.0,
            ..Options::full()
        }
    }

    /// Smaller still, for the debug-build smoke test.
    pub fn smoke() -> Options {
        Options {
            publishers: 5,
            throughput_events: 2_000,
            latency_rate: 1000.0,
            latency_secs: 1.0,
            latency_publishers: 5,
            outage_events: 2_000,
            backlog_events: 5_000,
            backlog_publishers: 5,
            steady_devices: 2,
            steady_secs: 2.0,
            idle_secs: 1.0,
            progress: false,
            ..Options::quick()
        }
    }

    fn systems(&self) -> Vec<System> {
        System::ALL
            .into_iter()
            .filter(|s| self.systems.contains(s))
            .filter(|s| *s != System::Rumqttd || self.rumqttd_exe.is_some())
            .collect()
    }

    fn has(&self, system: System) -> bool {
        self.systems().contains(&system)
    }
}

/// What an invocation produced.
#[derive(Debug, Clone, Default)]
pub struct Bench {
    /// Every sample.
    pub results: Results,
    /// Issue 8's targets, judged on the medians.
    pub targets: Vec<Target>,
    /// Measurements that failed (the system did not start, a publisher gave up, ...).
    pub errors: Vec<String>,
}

/// Runs the bench. Needs a multi-threaded tokio runtime.
pub async fn run(options: &Options) -> Bench {
    let mut bench = Bench::default();
    let r = &mut bench.results;
    for run in 1..=options.runs {
        options.say(format!("run {run}/{}", options.runs));
        for scenario in &options.scenarios {
            let mut outcomes = Vec::new();
            match scenario {
                Scenario::Throughput => {
                    for system in options.systems() {
                        outcomes.push(scenarios::throughput(r, system, options).await);
                    }
                }
                Scenario::Latency => {
                    for system in options.systems() {
                        let delays: &[scenarios::Delay] = match system {
                            System::Gateway => &[scenarios::Delay::Short, scenarios::Delay::Default],
                            _ => &[scenarios::Delay::Short],
                        };
                        for delay in delays {
                            outcomes.push(scenarios::latency(r, system, *delay, options).await);
                        }
                    }
                }
                Scenario::Outage => {
                    for system in [System::Bridge, System::Gateway] {
                        if options.has(system) {
                            outcomes.push(scenarios::outage(r, system, options).await);
                        }
                    }
                }
                Scenario::Steady => {
                    for system in [System::Bridge, System::Gateway] {
                        if options.has(system) {
                            outcomes.push(steady::steady(r, system, options).await);
                        }
                    }
                }
                Scenario::Backlog => {
                    if options.has(System::Gateway) {
                        outcomes.push(backlog::gateway(r, options).await);
                    }
                    if options.backlog_bridge && options.has(System::Bridge) {
                        outcomes.push(backlog::bridge(r, options).await);
                    }
                }
            }
            for err in outcomes.into_iter().filter_map(Result::err) {
                options.say(format!("  FAILED ({}): {err}", scenario.name()));
                bench.errors.push(format!("{}: {err}", scenario.name()));
            }
        }
    }
    bench.targets = targets::judge(&bench.results, options);
    bench
}
