//! The cloud-side subscriber of the bench: counts every event by `(device, boot, seq)`,
//! whether it came alone (a broker or a bridge forwards each device publish) or inside a
//! gateway batch, and measures latency against the load's [`SendLog`].
//!
//! Unlike [`crate::clients::CloudSubscriber`], which keeps every event for the tests'
//! assertions, this one keeps a bit per expected event, so a million events cost 125 KB
//! and counting keeps up with a broker delivering 200k messages a second.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::Deserialize;

use super::load::{device_index, Load, SendLog};

/// One event as the cloud sees it; other fields are skipped.
#[derive(Deserialize)]
struct Id<'a> {
    #[serde(borrow)]
    device: Cow<'a, str>,
    boot: u32,
    seq: u32,
}

/// A gateway batch: `{"gateway":..,"route":..,"batch":N,"events":[...]}`.
#[derive(Deserialize)]
struct Batch<'a> {
    #[serde(borrow)]
    events: Vec<Id<'a>>,
}

/// What is being counted now.
struct Expected {
    load: Load,
    log: Option<Arc<SendLog>>,
    /// One bit per event: `publisher * per_publisher + seq - 1`.
    seen: Vec<u64>,
}

#[derive(Default)]
struct State {
    expected: Option<Expected>,
    duplicates: u64,
    foreign: u64,
    unparsable: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    latencies_us: Vec<u32>,
}

struct Shared {
    state: Mutex<State>,
    distinct: AtomicU64,
}

/// What the subscriber has counted for the current load.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Events of the load seen at least once.
    pub distinct: u64,
    /// Events of the load seen again.
    pub duplicates: u64,
    /// Events of other loads (e.g. a warm-up) or of no load.
    pub foreign: u64,
    /// Messages that were neither an event nor a batch.
    pub unparsable: u64,
    /// First and last arrival of an event of the load.
    pub first: Option<Instant>,
    /// See `first`.
    pub last: Option<Instant>,
    /// Send-to-receipt latency of each first arrival, in microseconds, sorted.
    pub latencies_us: Vec<u32>,
}

impl Tally {
    /// The `q` quantile (0..=1) of the latencies, in milliseconds.
    pub fn latency_ms(&self, q: f64) -> Option<f64> {
        if self.latencies_us.is_empty() {
            return None;
        }
        let rank = ((self.latencies_us.len() - 1) as f64 * q).round() as usize;
        Some(f64::from(self.latencies_us[rank]) / 1000.0)
    }
}

/// A subscriber on `devices/+/events` and `gateways/#` (QoS 1, persistent session).
pub struct Counter {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Counter {
    /// Connects to the broker on `port` (retrying for a few seconds while it starts) and
    /// returns once both subscriptions are acknowledged.
    pub async fn connect(port: u16) -> Result<Counter, String> {
        let mut options = MqttOptions::new(format!("bench-cloud-{}", rand::random::<u32>()), "127.0.0.1", port);
        options.set_clean_session(false).set_keep_alive(Duration::from_secs(30)).set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        for filter in ["devices/+/events", "gateways/#"] {
            client.subscribe(filter, QoS::AtLeastOnce).await.map_err(|e| e.to_string())?;
        }
        let shared = Arc::new(Shared { state: Mutex::new(State::default()), distinct: AtomicU64::new(0) });
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut subacks = 0;
        while subacks < 2 {
            match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
                Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => subacks += 1,
                Ok(Ok(_)) => {}
                Ok(Err(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(Err(err)) => return Err(format!("cloud subscriber on {port}: {err}")),
                Err(_) => return Err(format!("cloud subscriber on {port}: no SUBACK")),
            }
        }
        let task = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let _client = client;
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::Publish(publish))) => {
                            shared.receive(&publish.topic, &publish.payload)
                        }
                        Ok(_) => {}
                        // Persistent session: the broker keeps what arrives meanwhile.
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            })
        };
        Ok(Counter { shared, task })
    }

    /// Starts counting `load` (and forgets the previous one); with `log`, measures latency.
    pub fn expect(&self, load: &Load, log: Option<Arc<SendLog>>) {
        let mut state = self.shared.lock();
        *state = State {
            expected: Some(Expected { load: *load, log, seen: vec![0; load.total().div_ceil(64) as usize] }),
            latencies_us: Vec::with_capacity(load.total().min(1 << 22) as usize),
            ..State::default()
        };
        self.shared.distinct.store(0, Ordering::SeqCst);
    }

    /// Distinct events of the load so far.
    pub fn distinct(&self) -> u64 {
        self.shared.distinct.load(Ordering::SeqCst)
    }

    /// Waits until `n` distinct events arrived, or nothing new arrived for `stall`, or
    /// `limit` has passed; then returns the tally (check `distinct` for loss).
    pub async fn wait(&self, n: u64, stall: Duration, limit: Duration) -> Tally {
        let start = Instant::now();
        let mut last_count = self.distinct();
        let mut last_change = Instant::now();
        loop {
            let count = self.distinct();
            if count >= n {
                break;
            }
            if count != last_count {
                last_count = count;
                last_change = Instant::now();
            }
            if last_change.elapsed() >= stall || start.elapsed() >= limit {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.tally()
    }

    /// The tally now.
    pub fn tally(&self) -> Tally {
        let state = self.shared.lock();
        let mut latencies_us = state.latencies_us.clone();
        latencies_us.sort_unstable();
        Tally {
            distinct: self.distinct(),
            duplicates: state.duplicates,
            foreign: state.foreign,
            unparsable: state.unparsable,
            first: state.first,
            last: state.last,
            latencies_us,
        }
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn receive(&self, topic: &str, payload: &[u8]) {
        let now = Instant::now();
        let mut state = self.lock();
        if topic.starts_with("gateways/") {
            match serde_json::from_slice::<Batch>(payload) {
                Ok(batch) => {
                    for id in &batch.events {
                        self.count(&mut state, id, now);
                    }
                }
                Err(_) => state.unparsable += 1,
            }
        } else {
            match serde_json::from_slice::<Id>(payload) {
                Ok(id) => self.count(&mut state, &id, now),
                Err(_) => state.unparsable += 1,
            }
        }
    }

    fn count(&self, state: &mut State, id: &Id<'_>, now: Instant) {
        let State { expected, duplicates, foreign, first, last, latencies_us, .. } = state;
        let Some(expected) = expected else {
            *foreign += 1;
            return;
        };
        let load = &expected.load;
        let publisher = match device_index(&id.device) {
            Some(p) if p < load.publishers && id.boot == load.boot => p,
            _ => {
                *foreign += 1;
                return;
            }
        };
        if id.seq == 0 || id.seq > load.per_publisher {
            *foreign += 1;
            return;
        }
        let bit = publisher * load.per_publisher as usize + (id.seq - 1) as usize;
        let (word, mask) = (bit / 64, 1u64 << (bit % 64));
        if expected.seen[word] & mask != 0 {
            *duplicates += 1;
            return;
        }
        expected.seen[word] |= mask;
        self.distinct.fetch_add(1, Ordering::SeqCst);
        first.get_or_insert(now);
        *last = Some(now);
        if let Some(sent) = expected.log.as_ref().and_then(|l| l.sent(publisher, id.seq)) {
            let us = now.saturating_duration_since(sent).as_micros();
            latencies_us.push(us.min(u128::from(u32::MAX)) as u32);
        }
    }
}
