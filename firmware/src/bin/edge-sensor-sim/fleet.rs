//! The simulated fleet: devices spread over a few worker threads, each thread polling its
//! devices in turn (the device code never blocks, so one thread runs many). Each device
//! records events at its rate, bursts, disconnects and reboots on schedule, and counts.
//!
//! Devices answer the demo commands from the cloud (see [`Sim::command`]): `ping` (done,
//! "pong"), `set_interval` (`{"ms":N}` or `N`: the device's event period), `reboot` (a new
//! boot id, after the answer is sent); anything else fails.
//!
//! A device is done when it has recorded its `--events` and the gateway has confirmed
//! (or its ring dropped, counted) every one of them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edge_event::command::Command;
use edge_firmware::host::SystemClock;
use edge_firmware::{BootId, Device, Error, Outcome, Settings};

use crate::link::SimLink;
use crate::readings::{Rng, Sensor};

/// Ring size of a simulated device: 1,024 events in 64 KiB.
pub type SimDevice = Device<SimLink, SystemClock, 1024, 65536>;

/// What every device does; from the command line.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Events per device; 0 = until stopped.
    pub events: u64,
    /// Events per second per device; 0 = as fast as the ring takes them.
    pub rate: f64,
    /// Drop the link every this often (staggered across devices).
    pub disconnect_every: Option<Duration>,
    /// Start a new boot after every this many events.
    pub reboot_every: Option<u64>,
    /// Stop recording after this long (then wait for the confirmations).
    pub duration: Option<Duration>,
    /// Record this many events at once...
    pub burst: u64,
    /// ...this often.
    pub burst_every: Option<Duration>,
}

/// Everything needed to build the fleet's devices.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Device ids are `{prefix}-{index:04}`.
    pub prefix: String,
    /// Number of devices.
    pub count: usize,
    /// Boot id of every device's first boot (a persisted counter, in effect).
    pub first_boot: u32,
    /// Device settings.
    pub settings: Settings,
    /// The schedule.
    pub plan: Arc<Plan>,
    /// Seed of the readings and schedules.
    pub seed: u64,
}

/// Counters summed over devices.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    /// Events taken into the rings.
    pub recorded: u64,
    /// Events the gateway confirmed.
    pub confirmed: u64,
    /// Events waiting for an ack.
    pub pending: u64,
    /// Events dropped by full rings.
    pub dropped: u64,
    /// Event publishes, re-sends included.
    pub published: u64,
    /// Re-sends.
    pub resent: u64,
    /// Sessions accepted by the broker.
    pub connects: u64,
    /// Sessions lost.
    pub link_errors: u64,
    /// Incoming packets too large for a device's receive buffer, skipped.
    pub oversized: u64,
    /// Devices online now.
    pub online: u64,
    /// Devices done.
    pub done: u64,
}

impl Totals {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Totals) {
        self.recorded += other.recorded;
        self.confirmed += other.confirmed;
        self.pending += other.pending;
        self.dropped += other.dropped;
        self.published += other.published;
        self.resent += other.resent;
        self.connects += other.connects;
        self.link_errors += other.link_errors;
        self.oversized += other.oversized;
        self.online += other.online;
        self.done += other.done;
    }
}

/// A worker's latest totals, read by the progress line.
pub type Counters = Arc<Mutex<Totals>>;

/// The latest link error seen by any device, for the progress line.
pub type LastError = Arc<std::sync::Mutex<Option<String>>>;

/// The first refused login, if any: it ends the run (retrying cannot help).
pub type Refusal = Arc<std::sync::Mutex<Option<String>>>;

/// What the workers report to the supervisor besides counters.
#[derive(Clone, Default)]
pub struct Shared {
    /// The latest link error.
    pub last_error: LastError,
    /// The first refused login.
    pub refusal: Refusal,
}

/// One simulated device and its schedule.
pub struct Sim {
    device: SimDevice,
    sensor: Sensor,
    plan: Arc<Plan>,
    /// Events due but not recorded yet (the ring refused them, or a burst).
    owed: u64,
    next_due_ms: f64,
    next_disconnect_ms: Option<u64>,
    next_burst_ms: Option<u64>,
    /// Past `--duration`: record nothing more.
    finished_recording: bool,
    boot: u32,
    /// Events per second (the plan's, until a `set_interval` command).
    rate: f64,
}

impl Sim {
    /// Device `index` of the fleet.
    pub fn new(index: usize, spec: &Spec, transport: SimLink) -> Result<Sim, Error> {
        let name = format!("{}-{index:04}", spec.prefix);
        let boot = spec.first_boot;
        let device = Device::new(&name, BootId::new(boot), transport, SystemClock, spec.settings)?;
        let plan = spec.plan.clone();
        // Stagger the schedules so that the fleet does not act in lockstep.
        let phase = |every: Duration| {
            let ms = every.as_millis() as u64;
            ms + ms * index as u64 / spec.count.max(1) as u64
        };
        let mut rng = Rng::new(spec.seed ^ index as u64);
        Ok(Sim {
            device,
            sensor: Sensor::new(index, spec.seed),
            next_due_ms: rng.unit() * period_ms(plan.rate),
            next_disconnect_ms: plan.disconnect_every.map(phase),
            next_burst_ms: plan.burst_every.map(phase),
            owed: 0,
            finished_recording: false,
            boot,
            rate: plan.rate,
            plan,
        })
    }

    fn remaining(&self) -> u64 {
        match self.plan.events {
            _ if self.finished_recording => 0,
            0 => u64::MAX,
            n => n.saturating_sub(self.device.stats().recorded),
        }
    }

    /// True once every event is recorded and confirmed (or dropped).
    pub fn is_done(&self) -> bool {
        self.remaining() == 0 && self.device.pending() == 0
    }

    /// Records what is due, applies the chaos schedule, polls; true if anything happened.
    pub fn step(&mut self, now_ms: u64, last_error: &LastError, refusal: &Refusal) -> bool {
        let now = now_ms as f64;
        if self.plan.duration.is_some_and(|d| now_ms >= d.as_millis() as u64) {
            self.finished_recording = true;
        }
        if self.rate > 0.0 {
            let period = period_ms(self.rate);
            while self.next_due_ms <= now {
                self.owed += 1;
                self.next_due_ms += period;
            }
        } else {
            self.owed = self.remaining().min(256);
        }
        if let Some(at) = self.next_burst_ms.filter(|&at| at <= now_ms) {
            self.owed += self.plan.burst;
            self.next_burst_ms = self.plan.burst_every.map(|every| at + every.as_millis() as u64);
        }
        if let Some(at) = self.next_disconnect_ms.filter(|&at| at <= now_ms) {
            self.device.disconnect(now_ms);
            self.next_disconnect_ms = self.plan.disconnect_every.map(|every| at + every.as_millis() as u64);
        }
        let mut busy = self.record(now_ms);
        let mut action = None;
        let boot = self.boot;
        let polled = self.device.poll_commands(now_ms, |command| {
            let (outcome, then) = Sim::command(command, boot);
            action = then;
            println!("[command] {} {} {}: {:?}", command.id, command.name, command.payload, outcome);
            outcome
        });
        match action {
            Some(Action::Interval(ms)) => {
                self.rate = 1000.0 / ms as f64;
                self.next_due_ms = now + ms as f64;
            }
            Some(Action::Reboot) => {
                self.boot = BootId::after(self.boot).get();
                self.device.reboot(BootId::new(self.boot), now_ms);
            }
            None => {}
        }
        match polled {
            Ok(activity) => busy |= !activity.is_idle(),
            Err(err) if err.is_login_refused() => {
                let why = if matches!(err, Error::Refused { code: 4 }) {
                    "bad user name or password"
                } else {
                    "not authorised"
                };
                let line =
                    format!("{}: the gateway refused the login: {why} ({err})", self.device.numbering().device());
                if let Ok(mut first) = refusal.lock() {
                    first.get_or_insert(line);
                }
            }
            Err(err) => {
                let cause = self.device.transport().last_error().unwrap_or("");
                let line = format!("{}: {err} ({cause})", self.device.numbering().device());
                if let Ok(mut last) = last_error.lock() {
                    *last = Some(line);
                }
            }
        }
        busy
    }

    /// The answer to a demo command, and what to do once it is sent.
    fn command(command: &Command<'_>, boot: u32) -> (Outcome, Option<Action>) {
        match command.name {
            "ping" => (Outcome::done("pong"), None),
            "set_interval" => match command.payload_u64(Some("ms")).or_else(|| command.payload_u64(None)) {
                Some(ms @ 1..=3_600_000) => (Outcome::done(&format!("interval {ms} ms")), Some(Action::Interval(ms))),
                _ => (Outcome::failed("set_interval needs {\"ms\": 1..3600000}"), None),
            },
            "reboot" => {
                let next = BootId::after(boot).get();
                (Outcome::done(&format!("rebooting as boot {next}")), Some(Action::Reboot))
            }
            other => (Outcome::failed(&format!("unknown command {other:?}")), None),
        }
    }

    fn record(&mut self, now_ms: u64) -> bool {
        let mut recorded = false;
        self.owed = self.owed.min(self.remaining());
        while self.owed > 0 {
            let Ok(mut event) = self.device.event(self.sensor.event_type()) else {
                break;
            };
            if self.sensor.fill(&mut event).is_err() || self.device.publish(&mut event).is_err() {
                // The ring is full (policy refuse-new): try again on a later step.
                break;
            }
            self.owed -= 1;
            recorded = true;
            let count = self.device.stats().recorded;
            let reboot = self.plan.reboot_every.is_some_and(|n| n > 0 && count % n == 0);
            if reboot && self.remaining() > 0 {
                self.boot = BootId::after(self.boot).get();
                self.device.reboot(BootId::new(self.boot), now_ms);
            }
        }
        recorded
    }

    fn totals(&self) -> Totals {
        let s = self.device.stats();
        Totals {
            recorded: s.recorded,
            confirmed: s.confirmed,
            pending: self.device.pending() as u64,
            dropped: s.dropped,
            published: s.published,
            resent: s.resent,
            connects: s.connects,
            link_errors: s.link_errors,
            oversized: s.oversized,
            online: u64::from(self.device.is_online()),
            done: u64::from(self.is_done()),
        }
    }

    /// Closes the link politely.
    pub fn stop(&mut self, now_ms: u64) {
        self.device.disconnect(now_ms);
    }
}

/// What a command asks of the simulator after its answer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Action {
    /// A new event period, in ms.
    Interval(u64),
    /// A new boot.
    Reboot,
}

fn period_ms(rate: f64) -> f64 {
    if rate > 0.0 {
        1000.0 / rate
    } else {
        0.0
    }
}

/// Runs `sims` until they are all done or `stop` is set, publishing totals in `counters`.
pub fn work(mut sims: Vec<Sim>, started: Instant, counters: Counters, stop: Arc<AtomicBool>, shared: Shared) {
    let Shared { last_error, refusal } = shared;
    loop {
        let now_ms = started.elapsed().as_millis() as u64;
        let mut busy = false;
        for sim in &mut sims {
            busy |= sim.step(now_ms, &last_error, &refusal);
        }
        if refusal.lock().is_ok_and(|r| r.is_some()) {
            stop.store(true, Ordering::Relaxed);
        }
        let mut totals = Totals::default();
        for sim in &sims {
            totals.add(&sim.totals());
        }
        if let Ok(mut shared) = counters.lock() {
            *shared = totals;
        }
        if totals.done == sims.len() as u64 || stop.load(Ordering::Relaxed) {
            break;
        }
        if !busy {
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    let now_ms = started.elapsed().as_millis() as u64;
    for sim in &mut sims {
        sim.stop(now_ms);
    }
}
