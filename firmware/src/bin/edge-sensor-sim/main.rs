//! `edge-sensor-sim`: N simulated sensors running the `edge-firmware` device code over
//! TCP against a gateway (or any MQTT broker that publishes the acks). A load generator
//! for demos and benchmarks, and a fault injector for tests: it exits 0 once the gateway
//! has confirmed every event, 1 if it gave up (`--timeout`), events were dropped, or the
//! gateway refused a device's login (`--password-file`).
//!
//! ```text
//! edge-sensor-sim --port 1883 --devices 50 --rate 20 --events 1000 --disconnect-every 10s
//! ```

mod fleet;
mod link;
mod readings;
mod run;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use edge_firmware::mqtt::QoS;
use edge_firmware::{Password, Settings, WhenFull};

use fleet::{Plan, Spec};

/// Simulated edge sensors: the firmware's device code, over TCP.
#[derive(Debug, Clone, Parser)]
#[command(name = "edge-sensor-sim", version)]
pub struct Args {
    /// Broker (gateway device side) host.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port.
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// Number of simulated devices.
    #[arg(long, default_value_t = 10)]
    pub devices: usize,
    /// Events per device; 0 records until `--duration` (or for ever).
    #[arg(long, default_value_t = 100)]
    pub events: u64,
    /// Events per second per device; 0 is as fast as the gateway confirms them.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Device ids are PREFIX-0000, PREFIX-0001, ...
    #[arg(long, default_value = "sim")]
    pub prefix: String,
    /// First boot id of every device (default: the clock's milliseconds, so that a new
    /// run is a new boot for the gateway's duplicate check).
    #[arg(long)]
    pub boot: Option<u32>,
    /// Worker threads (default: one per core, at most one per device).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Drop each device's link this often (e.g. "5s", "500ms"), staggered across devices.
    #[arg(long, value_parser = parse_duration)]
    pub disconnect_every: Option<Duration>,
    /// Reboot each device (new boot id, seqs from 1, ring kept) after every N events.
    #[arg(long)]
    pub reboot_every: Option<u64>,
    /// Record this many extra events at once, every `--burst-every`.
    #[arg(long, default_value_t = 0)]
    pub burst: u64,
    /// How often to burst (default 5s when `--burst` is set).
    #[arg(long, value_parser = parse_duration)]
    pub burst_every: Option<Duration>,
    /// What a full ring does: refuse-new holds the generator back (no event lost).
    #[arg(long, value_enum, default_value_t = Policy::RefuseNew)]
    pub when_full: Policy,
    /// QoS of event publishes.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Most QoS 1 publishes awaiting a PUBACK, per device.
    #[arg(long, default_value_t = 64)]
    pub max_inflight: usize,
    /// Stop recording after this long (then wait for the confirmations).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Give up (exit 1) if not every event is confirmed by then.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Seed of the readings and schedules.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Only the final summary, no progress lines.
    #[arg(long)]
    pub quiet: bool,
    /// Log every device in with user name = its device id and the password on this
    /// file's one line (a password is never an argument: it would show in `ps`).
    #[arg(long)]
    pub password_file: Option<std::path::PathBuf>,
    /// Speak TLS, trusting only the CA certificates in this PEM file (feature `tls`).
    #[cfg(feature = "tls")]
    #[arg(long)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// The name the gateway's certificate must carry (default: `--host`).
    #[cfg(feature = "tls")]
    #[arg(long)]
    pub tls_server_name: Option<String>,
}

/// What a full ring does (`--when-full`).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Policy {
    /// Drop the oldest unconfirmed events (counted).
    DropOldest,
    /// Hold the generator back until the gateway confirms.
    RefuseNew,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 =
        number.parse().map_err(|_| format!("expected a duration like \"5s\" or \"200ms\", found {text:?}"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" | "" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit {unit:?} in {text:?}: use ms, s or m")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.devices == 0 {
        eprintln!("edge-sensor-sim: --devices must be at least 1");
        return ExitCode::from(2);
    }
    let password = match args.password_file.as_deref().map(read_password).transpose() {
        Ok(password) => password,
        Err(message) => {
            eprintln!("edge-sensor-sim: {message}");
            return ExitCode::from(2);
        }
    };
    match run::run(&args, spec(&args, password)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("edge-sensor-sim: {message}");
            ExitCode::from(2)
        }
    }
}

/// The password on the one line of `path` (a trailing newline is not part of it).
fn read_password(path: &std::path::Path) -> Result<Password, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("--password-file {}: {e}", path.display()))?;
    let line = text.strip_suffix('\n').unwrap_or(&text);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.is_empty() || line.contains('\n') {
        return Err(format!("--password-file {}: expected the password on one line", path.display()));
    }
    // Once per process, shared by every device: `Settings` holds `'static` credentials.
    Ok(Password::new(Box::leak(line.as_bytes().to_vec().into_boxed_slice())))
}

/// What every device is and does, from the arguments.
fn spec(args: &Args, password: Option<Password>) -> Spec {
    let first_boot = args.boot.unwrap_or_else(|| {
        let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(1);
        // Wraps every 49 days: the gateway only compares boot ids for equality.
        ms as u32
    });
    let settings = Settings {
        when_full: match args.when_full {
            Policy::DropOldest => WhenFull::DropOldest,
            Policy::RefuseNew => WhenFull::RefuseNew,
        },
        qos: if args.qos == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce },
        max_inflight: args.max_inflight,
        retry_min_ms: 50,
        retry_max_ms: 2_000,
        password,
        ..Settings::default()
    };
    let plan = Arc::new(Plan {
        events: args.events,
        rate: args.rate.max(0.0),
        disconnect_every: args.disconnect_every,
        reboot_every: args.reboot_every,
        duration: args.duration,
        burst: args.burst,
        burst_every: args.burst_every.or((args.burst > 0).then_some(Duration::from_secs(5))),
    });
    Spec { prefix: args.prefix.clone(), count: args.devices, first_boot, settings, plan, seed: args.seed }
}
