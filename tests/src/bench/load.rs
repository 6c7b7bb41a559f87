//! The load generator: one rumqttc connection per device, QoS 1, ~100-byte JSON events,
//! either as fast as the broker acknowledges them or at a fixed total rate.
//!
//! A load is finished when every publish has its PUBACK: the system under test has
//! accepted all of it. The instant each event was handed to the client is kept in a
//! [`SendLog`], so the cloud-side [`super::counter::Counter`] can compute latency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// How long a publisher may wait for any progress before it gives up.
const STALL: Duration = Duration::from_secs(30);
/// Unacknowledged publishes per connection (rumqttd's default inflight is 100 too).
const INFLIGHT: u16 = 100;

/// What to send: `publishers` devices, `per_publisher` events each.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Connections, one device each (`d000`, `d001`, ...).
    pub publishers: usize,
    /// Events per device (seqs `1..=per_publisher`).
    pub per_publisher: u32,
    /// Total events per second over all devices; None = as fast as acknowledged.
    pub rate: Option<f64>,
    /// Boot id of every event: a fresh one per load, so that nothing left over from an
    /// earlier load is counted.
    pub boot: u32,
}

impl Load {
    /// A load with a fresh random boot id.
    pub fn new(publishers: usize, per_publisher: u32, rate: Option<f64>) -> Load {
        Load {
            publishers: publishers.max(1),
            per_publisher: per_publisher.max(1),
            rate,
            boot: rand::random::<u32>() | 1,
        }
    }

    /// `total` events spread over `publishers` devices (rounded up to a multiple).
    pub fn spread(total: u64, publishers: usize, rate: Option<f64>) -> Load {
        let publishers = publishers.max(1);
        let per = total.div_ceil(publishers as u64).max(1);
        Load::new(publishers, per as u32, rate)
    }

    /// Every event of the load.
    pub fn total(&self) -> u64 {
        self.publishers as u64 * u64::from(self.per_publisher)
    }
}

/// The device id of publisher `index`.
pub fn device(index: usize) -> String {
    format!("d{index:03}")
}

/// Publisher index of a device id made by [`device`].
pub fn device_index(device: &str) -> Option<usize> {
    device.strip_prefix('d')?.parse().ok()
}

/// One event, JSON, about 100 bytes: the device-side JSON form (the `edge-event` crate, shared/src/lib.rs).
pub fn payload(device: &str, boot: u32, seq: u32, ts_ms: u64) -> Vec<u8> {
    format!(
        r#"{{"device":"{device}","boot":{boot},"seq":{seq},"ts":{ts_ms},"type":"temperature","readings":{{"celsius":21.5}}}}"#
    )
    .into_bytes()
}

/// When each event of a load was handed to its client, as nanoseconds after `epoch`
/// (0 = not sent yet).
pub struct SendLog {
    epoch: Instant,
    per_publisher: u32,
    slots: Vec<AtomicU64>,
}

impl SendLog {
    /// An empty log for `load`.
    pub fn new(load: &Load) -> SendLog {
        SendLog {
            epoch: Instant::now(),
            per_publisher: load.per_publisher,
            slots: (0..load.total()).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn slot(&self, publisher: usize, seq: u32) -> Option<&AtomicU64> {
        if seq == 0 || seq > self.per_publisher {
            return None;
        }
        self.slots.get(publisher * self.per_publisher as usize + (seq - 1) as usize)
    }

    /// Records that event `seq` of `publisher` is being sent now.
    pub fn record(&self, publisher: usize, seq: u32) {
        if let Some(slot) = self.slot(publisher, seq) {
            let nanos = self.epoch.elapsed().as_nanos().max(1) as u64;
            slot.store(nanos, Ordering::Relaxed);
        }
    }

    /// When event `seq` of `publisher` was sent, if it was.
    pub fn sent(&self, publisher: usize, seq: u32) -> Option<Instant> {
        match self.slot(publisher, seq)?.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(self.epoch + Duration::from_nanos(nanos)),
        }
    }
}

/// What a finished load reports.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    /// When the first publisher started.
    pub started: Instant,
    /// When the last PUBACK arrived.
    pub acked: Instant,
}

/// The password of every device user of a named load ([`run_named`]).
pub const DEVICE_PASSWORD: &str = "bench-device-password";

/// Where the devices of a named load ([`run_named`]) hand the publishes they get on their
/// own `devices/{id}/ack`, and whether a device has had every ack it waits for.
pub trait Acks: Send + Sync {
    /// A publish one of the devices got (its topic names the device).
    fn receive(&self, topic: &str, payload: &[u8]);
    /// Whether device `index` has been acknowledged up to its last event.
    fn covered(&self, index: usize) -> bool;
}

/// [`Acks`] for a named load that does not wait for its device acks (a warm-up).
pub struct NoAcks;

impl Acks for NoAcks {
    fn receive(&self, _topic: &str, _payload: &[u8]) {}

    fn covered(&self, _index: usize) -> bool {
        true
    }
}

/// Runs `load` against the broker on `port` until every publish is acknowledged.
pub async fn run(port: u16, load: Load, log: Arc<SendLog>) -> Result<Sent, String> {
    run_with(port, load, log, None, None).await
}

/// [`run`] as named devices, the way firmware runs: each device logs in as its own user
/// (client id = user name = [`device`], password [`DEVICE_PASSWORD`]), subscribes to its own
/// `devices/{id}/ack` and stays connected until `acks` says it is covered (at most 10 s
/// after its last PUBACK).
pub async fn run_named(port: u16, load: Load, log: Arc<SendLog>, acks: Arc<dyn Acks>) -> Result<Sent, String> {
    run_with(port, load, log, Some(acks), None).await
}

/// [`run`] (or [`run_named`] with `acks`), but every device first connects (and subscribes)
/// and then waits at `connected` (a barrier of `load.publishers + 1`) before its first
/// event, so the caller can start measuring once everyone is connected: a steady load's
/// cost without the connects (a password check per device).
pub async fn run_connected(
    port: u16,
    load: Load,
    log: Arc<SendLog>,
    acks: Option<Arc<dyn Acks>>,
    connected: Arc<tokio::sync::Barrier>,
) -> Result<Sent, String> {
    run_with(port, load, log, acks, Some(connected)).await
}

async fn run_with(
    port: u16,
    load: Load,
    log: Arc<SendLog>,
    acks: Option<Arc<dyn Acks>>,
    connected: Option<Arc<tokio::sync::Barrier>>,
) -> Result<Sent, String> {
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(load.publishers);
    for index in 0..load.publishers {
        let log = log.clone();
        let device = Device { port, index, load, acks: acks.clone(), connected: connected.clone() };
        tasks.push(tokio::spawn(publish_device(device, log, started)));
    }
    let mut errors = Vec::new();
    let mut acked = started;
    for task in tasks {
        match task.await {
            Ok(Ok(last)) => acked = acked.max(last),
            Ok(Err(err)) => errors.push(err),
            Err(err) => errors.push(format!("publisher task: {err}")),
        }
    }
    if errors.is_empty() {
        Ok(Sent { started, acked })
    } else {
        Err(errors.join("; "))
    }
}

/// One device of a load, and how it runs.
struct Device {
    port: u16,
    index: usize,
    load: Load,
    acks: Option<Arc<dyn Acks>>,
    connected: Option<Arc<tokio::sync::Barrier>>,
}

/// One device: a sender task queues its events (paced when the load has a rate) while
/// this task drives the connection and counts PUBACKs; returns when the last one came.
async fn publish_device(this: Device, log: Arc<SendLog>, started: Instant) -> Result<Instant, String> {
    let Device { port, index, load, acks, connected } = this;
    let device = device(index);
    let client_id = if acks.is_some() { device.clone() } else { format!("bench-{}-{device}", load.boot) };
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30)).set_inflight(INFLIGHT).set_max_packet_size(1 << 20, 1 << 20);
    if acks.is_some() {
        options.set_credentials(device.as_str(), DEVICE_PASSWORD);
    }
    let (client, mut eventloop) = AsyncClient::new(options, 2 * INFLIGHT as usize);
    if acks.is_some() {
        // Queued before the first publish: the SUBSCRIBE goes first.
        let ack_topic = format!("devices/{device}/ack");
        client.subscribe(ack_topic, QoS::AtLeastOnce).await.map_err(|e| format!("{device}: {e}"))?;
    }
    let started = match connected {
        Some(connected) => {
            // CONNACK, and the SUBACK of a named device, before the barrier.
            let mut waiting = if acks.is_some() { 2 } else { 1 };
            while waiting > 0 {
                match tokio::time::timeout(STALL, eventloop.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::ConnAck(_) | Packet::SubAck(_)))) => waiting -= 1,
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => return Err(format!("{device}: {err} while connecting")),
                    Err(_) => return Err(format!("{device}: not connected within {STALL:?}")),
                }
            }
            connected.wait().await;
            Instant::now()
        }
        None => started,
    };
    let topic = format!("devices/{device}/events");
    let total = load.per_publisher;
    // Spread the devices over one interval so that the paced load is even.
    let interval = load.rate.map(|rate| Duration::from_secs_f64(load.publishers as f64 / rate.max(1e-3)));
    let offset = interval.map(|i| i.mul_f64(index as f64 / load.publishers as f64));
    let sender = {
        let device = device.clone();
        tokio::spawn(async move {
            for seq in 1..=total {
                if let (Some(interval), Some(offset)) = (interval, offset) {
                    let due = started + offset + interval * (seq - 1);
                    tokio::time::sleep_until(due.into()).await;
                }
                log.record(index, seq);
                let body = payload(&device, load.boot, seq, wall_ms());
                if client.publish(topic.as_str(), QoS::AtLeastOnce, false, body).await.is_err() {
                    break;
                }
            }
            client
        })
    };
    let mut acked = 0u32;
    let receive = |event: &Event| {
        if let (Event::Incoming(Packet::Publish(p)), Some(acks)) = (event, &acks) {
            acks.receive(&p.topic, &p.payload);
        }
    };
    while acked < total {
        match tokio::time::timeout(STALL, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(event)) => receive(&event),
            Ok(Err(err)) => {
                sender.abort();
                return Err(format!("{device}: {err} after {acked}/{total} acks"));
            }
            Err(_) => {
                sender.abort();
                return Err(format!("{device}: no progress for {STALL:?} at {acked}/{total} acks"));
            }
        }
    }
    let last_ack = Instant::now();
    if let Some(acks) = &acks {
        // The device ack follows the commit: stay until it covers the last event.
        let until = Instant::now() + Duration::from_secs(10);
        while !acks.covered(index) && Instant::now() < until {
            match tokio::time::timeout_at(until.into(), eventloop.poll()).await {
                Ok(Ok(event)) => receive(&event),
                Ok(Err(err)) => return Err(format!("{device}: {err} while waiting for its device ack")),
                Err(_) => break,
            }
        }
    }
    let client = sender.await.map_err(|e| e.to_string())?;
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
    Ok(last_ack)
}

/// Milliseconds since the Unix epoch (the events' `ts`).
fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_about_a_hundred_bytes_and_valid() {
        let body = payload(&device(7), 12345, 42, 1_764_000_000_123);
        assert!((95..=115).contains(&body.len()), "{}", body.len());
        let (event, _) = edge_event::decode_any(&body).unwrap();
        event.validate(None).unwrap();
        assert_eq!(device_index(event.device.as_str()), Some(7));
    }

    #[test]
    fn the_send_log_keeps_one_instant_per_event() {
        let load = Load::new(3, 4, None);
        let log = SendLog::new(&load);
        assert!(log.sent(2, 4).is_none());
        log.record(2, 4);
        assert!(log.sent(2, 4).is_some());
        assert!(log.sent(2, 5).is_none());
        assert!(log.sent(0, 0).is_none());
    }
}
