//! Route filters: which events a route forwards, decided before the store so that a
//! dropped event costs no disk.
//!
//! Checked in this order, the first that refuses names the reason:
//! 1. `devices` / `types`: exact names or globs (`*` any run, `?` one character).
//! 2. `min` / `max`: per named reading; an event that carries the reading must have it
//!    within bounds (an event without it passes: the rule is about that reading).
//! 3. `min_interval`: at most one event per device per interval (gateway receive time).
//! 4. `deadband`: per named reading, forward only when it moved by at least the threshold
//!    since the last forwarded value of that device (the first value always passes; an
//!    event passes when any of its deadband readings moved enough).
//!
//! With `keep_last = true` (needs `min_interval`), the newest event dropped by the interval
//! or the deadband is held, one per device, and forwarded when the interval since the last
//! forwarded event has passed and nothing newer went out: a downsampled stream still ends
//! on its latest value.
//!
//! State (last forwarded time and values per device) survives restarts: it is committed to
//! the journal with the event that changed it ([`StateUpdate`]) and loaded at start-up.
//! Invariant: [`RouteFilter::check`] never passes an event a stateless rule refuses.

use std::collections::HashMap;
use std::time::Duration;

use edge_event::{Event, Value};

/// A name pattern: `*` matches any run of characters, `?` one character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(String);

impl Glob {
    /// A pattern.
    pub fn new(pattern: &str) -> Glob {
        Glob(pattern.to_owned())
    }

    /// Whether `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        fn go(p: &[u8], t: &[u8]) -> bool {
            match (p.first(), t.first()) {
                (None, None) => true,
                (Some(b'*'), _) => go(&p[1..], t) || (!t.is_empty() && go(p, &t[1..])),
                (Some(b'?'), Some(_)) => go(&p[1..], &t[1..]),
                (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
                _ => false,
            }
        }
        go(self.0.as_bytes(), text.as_bytes())
    }
}

/// Why a filter refused an event: the `filter` label of the drop metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Not one of `devices`.
    Device,
    /// Not one of `types`.
    Type,
    /// A reading outside `min` / `max`.
    Range,
    /// Within `min_interval` of the last forwarded event.
    Interval,
    /// No deadband reading moved enough.
    Deadband,
}

impl Refusal {
    /// How many refusals there are (keep `Deadband` last, or update this).
    pub const COUNT: usize = Refusal::Deadband as usize + 1;

    /// Every refusal, in label order (index = `refusal as usize`).
    pub const ALL: [Refusal; Self::COUNT] = [Self::Device, Self::Type, Self::Range, Self::Interval, Self::Deadband];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Device => "devices",
            Self::Type => "types",
            Self::Range => "range",
            Self::Interval => "min_interval",
            Self::Deadband => "deadband",
        }
    }
}

/// The filter rules of one route (all optional).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FilterRules {
    /// Device names or globs; empty = all.
    pub devices: Vec<Glob>,
    /// Event types or globs; empty = all.
    pub types: Vec<Glob>,
    /// Lowest allowed value per reading.
    pub min: Vec<(String, f64)>,
    /// Highest allowed value per reading.
    pub max: Vec<(String, f64)>,
    /// Smallest change per reading that is forwarded.
    pub deadband: Vec<(String, f64)>,
    /// Least time between forwarded events of a device.
    pub min_interval: Option<Duration>,
    /// Forward the newest dropped event when the interval ends.
    pub keep_last: bool,
}

impl FilterRules {
    /// Whether any rule needs per-device state.
    pub fn is_stateful(&self) -> bool {
        self.min_interval.is_some() || !self.deadband.is_empty()
    }
}

/// What a route remembers of a device: when it last forwarded one of its events, and the
/// deadband readings of that event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceState {
    /// Receive time (ms) of the last forwarded event.
    pub last_ms: i64,
    /// Last forwarded value per deadband reading.
    pub values: Vec<(String, f64)>,
}

/// A state change to commit with the event that caused it.
#[derive(Debug, Clone, PartialEq)]
pub struct StateUpdate {
    /// Route name.
    pub route: String,
    /// Device id.
    pub device: String,
    /// The new state.
    pub state: DeviceState,
}

/// A route's filter with its per-device state.
#[derive(Debug, Default)]
pub struct RouteFilter {
    rules: FilterRules,
    state: HashMap<String, DeviceState>,
    /// Newest dropped event per device (with `keep_last`), with its receive time.
    held: HashMap<String, (Event, i64)>,
}

/// A numeric view of a reading, for range and deadband.
fn number(event: &Event, name: &str) -> Option<f64> {
    event.readings.iter().find(|r| r.name.as_str() == name).and_then(|r| match &r.value {
        Value::F32(v) => Some(f64::from(*v)),
        Value::F64(v) => Some(*v),
        Value::I64(v) => Some(*v as f64),
        Value::Bool(v) => Some(f64::from(u8::from(*v))),
        _ => None,
    })
}

impl RouteFilter {
    /// A filter with no state yet.
    pub fn new(rules: FilterRules) -> RouteFilter {
        RouteFilter { rules, state: HashMap::new(), held: HashMap::new() }
    }

    /// New rules from a reload (docs/architecture.md, "Live reload"). The per-device state
    /// is kept: when a device's last event was forwarded, and its deadband values, stay
    /// true whatever the rules (a restart restores it the same way). Events held for
    /// `keep_last` stay held only if the new rules still hold them and refuse the same
    /// devices, types and ranges; otherwise they stay refused.
    pub fn set_rules(&mut self, rules: FilterRules) {
        let same_stateless = (&rules.devices, &rules.types, &rules.min, &rules.max)
            == (&self.rules.devices, &self.rules.types, &self.rules.min, &self.rules.max);
        if !(rules.keep_last && same_stateless) {
            self.held.clear();
        }
        self.rules = rules;
    }

    /// Forgets the events held for `keep_last` (the route was removed by a reload).
    pub fn drop_held(&mut self) {
        self.held.clear();
    }

    /// Restores a device's state (from the journal at start-up).
    pub fn restore(&mut self, device: String, state: DeviceState) {
        self.state.insert(device, state);
    }

    /// The stateless rules: devices, types, range.
    fn stateless(&self, event: &Event) -> Result<(), Refusal> {
        let rules = &self.rules;
        if !rules.devices.is_empty() && !rules.devices.iter().any(|g| g.matches(event.device.as_str())) {
            return Err(Refusal::Device);
        }
        if !rules.types.is_empty() && !rules.types.iter().any(|g| g.matches(event.kind.as_str())) {
            return Err(Refusal::Type);
        }
        let low = rules.min.iter().any(|(name, min)| number(event, name).is_some_and(|v| v < *min));
        let high = rules.max.iter().any(|(name, max)| number(event, name).is_some_and(|v| v > *max));
        if low || high {
            return Err(Refusal::Range);
        }
        Ok(())
    }

    /// Decides on one event received at `now_ms`. On a pass, returns the state update to
    /// commit with it (None for stateless routes).
    pub fn check(&mut self, event: &Event, now_ms: i64) -> Result<Option<StateUpdate>, Refusal> {
        self.stateless(event)?;
        if !self.rules.is_stateful() {
            return Ok(None);
        }
        let device = event.device.as_str();
        let previous = self.state.get(device);
        let refusal = previous.and_then(|prev| {
            let too_soon = self.rules.min_interval.is_some_and(|i| now_ms - prev.last_ms < i.as_millis() as i64);
            if too_soon {
                return Some(Refusal::Interval);
            }
            let mut considered = false;
            let moved = self.rules.deadband.iter().any(|(name, delta)| {
                let Some(value) = number(event, name) else {
                    return false;
                };
                let Some(last) = prev.values.iter().find(|(n, _)| n == name).map(|(_, v)| *v) else {
                    return true;
                };
                considered = true;
                (value - last).abs() >= *delta
            });
            (!self.rules.deadband.is_empty() && considered && !moved).then_some(Refusal::Deadband)
        });
        if let Some(refusal) = refusal {
            if self.rules.keep_last {
                self.held.insert(device.to_owned(), (event.clone(), now_ms));
            }
            return Err(refusal);
        }
        self.held.remove(device);
        Ok(Some(self.record(event, now_ms)))
    }

    fn record(&mut self, event: &Event, now_ms: i64) -> StateUpdate {
        let device = event.device.as_str().to_owned();
        let mut state = self.state.remove(&device).unwrap_or_default();
        state.last_ms = now_ms;
        for (name, _) in &self.rules.deadband {
            if let Some(value) = number(event, name) {
                match state.values.iter_mut().find(|(n, _)| n == name) {
                    Some(slot) => slot.1 = value,
                    None => state.values.push((name.clone(), value)),
                }
            }
        }
        self.state.insert(device.clone(), state.clone());
        StateUpdate { route: String::new(), device, state }
    }

    /// Held events (`keep_last`) whose device's interval has ended by `now_ms`: they are
    /// forwarded now, with their state updates.
    pub fn flush_due(&mut self, now_ms: i64) -> Vec<(Event, StateUpdate)> {
        let Some(interval) = self.rules.min_interval else {
            return Vec::new();
        };
        let interval = interval.as_millis() as i64;
        let due: Vec<String> = self
            .held
            .keys()
            .filter(|d| self.state.get(*d).is_none_or(|s| now_ms - s.last_ms >= interval))
            .cloned()
            .collect();
        let mut flushed = Vec::with_capacity(due.len());
        for device in due {
            if let Some((event, _)) = self.held.remove(&device) {
                let update = self.record(&event, now_ms);
                flushed.push((event, update));
            }
        }
        flushed
    }
}

#[cfg(test)]
mod tests;
