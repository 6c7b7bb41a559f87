//! Real MQTT clients (rumqttc): device publishers and a cloud subscriber that parses every
//! batch and counts events by `(device, boot, seq)`.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

/// An event as the cloud received it.
pub type EventId = (String, u32, u32);

/// Everything a cloud subscriber has seen.
#[derive(Debug, Default)]
pub struct Received {
    /// Events in arrival order.
    pub events: Vec<EventId>,
    /// Full JSON of each event, in arrival order.
    pub raw: Vec<serde_json::Value>,
    /// Batches received.
    pub batches: u64,
    /// Receive instant of each event, for latency.
    pub at: Vec<Instant>,
    /// Distinct events (kept as they arrive, so waiting on a count is cheap).
    pub seen: std::collections::HashSet<EventId>,
}

impl Received {
    /// Distinct events.
    pub fn distinct(&self) -> std::collections::HashSet<EventId> {
        self.seen.clone()
    }

    /// Events received more than once.
    pub fn duplicates(&self) -> usize {
        self.events.len() - self.distinct().len()
    }

    /// True when, per device, first arrivals are in increasing (boot order kept, seq) order.
    pub fn in_order_per_device(&self) -> Result<(), String> {
        let mut last: HashMap<&str, (u32, u32)> = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for (device, boot, seq) in &self.events {
            if !seen.insert((device.as_str(), *boot, *seq)) {
                continue;
            }
            if let Some(&(b, s)) = last.get(device.as_str()) {
                if b == *boot && *seq < s {
                    return Err(format!("{device}: seq {seq} arrived after {s}"));
                }
            }
            last.insert(device, (*boot, *seq));
        }
        Ok(())
    }
}

/// A cloud-side subscriber on `gateways/#` (QoS 1, persistent session).
pub struct CloudSubscriber {
    received: Arc<(Mutex<Received>, Condvar)>,
    task: tokio::task::JoinHandle<()>,
}

impl CloudSubscriber {
    /// Connects to the broker on `port`; returns once subscribed.
    pub async fn connect(port: u16) -> CloudSubscriber {
        let mut options = MqttOptions::new(format!("cloud-sub-{}", rand::random::<u32>()), "127.0.0.1", port);
        options.set_clean_session(false).set_max_packet_size(1 << 20, 1 << 20).set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        client.subscribe("gateways/#", QoS::AtLeastOnce).await.expect("subscribe");
        let received = Arc::new((Mutex::new(Received::default()), Condvar::new()));
        let shared = received.clone();
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        let mut subscribed_tx = Some(subscribed_tx);
        let task = tokio::spawn(async move {
            let _client = client;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = subscribed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let batch: serde_json::Value =
                            serde_json::from_slice(&publish.payload).expect("a batch is JSON");
                        let now = Instant::now();
                        let (lock, cvar) = &*shared;
                        let mut r = lock.lock().expect("lock");
                        r.batches += 1;
                        for event in batch["events"].as_array().expect("events array") {
                            let id = (
                                event["device"].as_str().expect("device").to_owned(),
                                event["boot"].as_u64().expect("boot") as u32,
                                event["seq"].as_u64().expect("seq") as u32,
                            );
                            r.seen.insert(id.clone());
                            r.events.push(id);
                            r.raw.push(event.clone());
                            r.at.push(now);
                        }
                        cvar.notify_all();
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed_rx).await.expect("no SUBACK").expect("subscriber");
        CloudSubscriber { received, task }
    }

    /// Blocks until `n` distinct events arrived (or `timeout`), then returns a snapshot.
    /// Call it from a multi-threaded runtime (it uses `block_in_place`).
    pub fn wait_distinct(&self, n: usize, timeout: Duration) -> Received {
        tokio::task::block_in_place(|| self.wait_blocking(n, timeout))
    }

    fn wait_blocking(&self, n: usize, timeout: Duration) -> Received {
        let (lock, cvar) = &*self.received;
        let deadline = Instant::now() + timeout;
        let mut r = lock.lock().expect("lock");
        while r.seen.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            r = cvar.wait_timeout(r, left.min(Duration::from_millis(200))).expect("lock").0;
        }
        Received {
            events: r.events.clone(),
            raw: r.raw.clone(),
            batches: r.batches,
            at: r.at.clone(),
            seen: r.seen.clone(),
        }
    }

    /// A snapshot now.
    pub fn snapshot(&self) -> Received {
        self.wait_distinct(0, Duration::ZERO)
    }
}

impl Drop for CloudSubscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Publishes `events` (topic, payload) with QoS 1 from one client and returns when every
/// PUBACK has arrived (the broker accepted them all).
pub async fn publish_all(port: u16, client_id: &str, events: Vec<(String, Vec<u8>)>) -> Result<(), String> {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30)).set_inflight(100).set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 200);
    let total = events.len();
    let sender = tokio::spawn(async move {
        for (topic, payload) in events {
            if client.publish(topic, QoS::AtLeastOnce, false, payload).await.is_err() {
                return client;
            }
        }
        client
    });
    let mut acked = 0;
    let mut sent = 0;
    while acked < total {
        match tokio::time::timeout(Duration::from_secs(30), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(Event::Outgoing(Outgoing::Publish(_)))) => sent += 1,
            Ok(Ok(_)) => {}
            Ok(Err(err)) => return Err(format!("{client_id}: {err} after {acked}/{total} acks ({sent} sent)")),
            Err(_) => return Err(format!("{client_id}: stalled at {acked}/{total} acks")),
        }
    }
    let client = sender.await.map_err(|e| e.to_string())?;
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
    Ok(())
}

/// `count` JSON events of `device` (boot 1, seqs from `first`) for `devices/{device}/events`.
pub fn device_events(device: &str, first: u32, count: u32) -> Vec<(String, Vec<u8>)> {
    (first..first + count)
        .map(|seq| (format!("devices/{device}/events"), crate::event_json(device, 1, seq).into_bytes()))
        .collect()
}

/// Watches `devices/+/ack` on the device broker: the highest committed seq per device.
pub struct AckWatcher {
    marks: Arc<Mutex<HashMap<String, u32>>>,
    task: tokio::task::JoinHandle<()>,
}

impl AckWatcher {
    /// Subscribes on the device broker at `port`.
    pub async fn connect(port: u16) -> AckWatcher {
        let mut options = MqttOptions::new(format!("ack-watch-{}", rand::random::<u32>()), "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(options, 10);
        client.subscribe("devices/+/ack", QoS::AtLeastOnce).await.expect("subscribe");
        let marks = Arc::new(Mutex::new(HashMap::new()));
        let shared = marks.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        let task = tokio::spawn(async move {
            let _client = client;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let device = p.topic.trim_start_matches("devices/").trim_end_matches("/ack").to_owned();
                        if let Ok(ack) = edge_event::Ack::decode_json(&p.payload) {
                            let mut m = shared.lock().expect("lock");
                            let e = m.entry(device).or_insert(0);
                            *e = (*e).max(ack.seq);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx).await.expect("no SUBACK").expect("ack watcher");
        AckWatcher { marks, task }
    }

    /// Highest acked seq per device so far.
    pub fn marks(&self) -> HashMap<String, u32> {
        self.marks.lock().expect("lock").clone()
    }
}

impl Drop for AckWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}
