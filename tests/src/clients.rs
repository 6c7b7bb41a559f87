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
    /// The topic of each batch, in arrival order.
    pub topics: Vec<String>,
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
                    // The gateway's config document and its status are not batches.
                    Ok(Event::Incoming(Packet::Publish(publish)))
                        if publish.topic.ends_with("/config") || publish.topic.ends_with("/config/status") => {}
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let batch: serde_json::Value =
                            serde_json::from_slice(&publish.payload).expect("a batch is JSON");
                        let now = Instant::now();
                        let (lock, cvar) = &*shared;
                        let mut r = lock.lock().expect("lock");
                        r.batches += 1;
                        r.topics.push(publish.topic.clone());
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
            topics: r.topics.clone(),
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

/// How a [`FirmwareDevice`] ended.
#[derive(Debug, Clone, Copy)]
pub struct DeviceRun {
    /// Events numbered (seqs `1..=last`, boot 1).
    pub last: u32,
    /// Highest seq the gateway acknowledged on `devices/{device}/ack`.
    pub acked: u32,
    /// Connections made (1 + reconnects).
    pub connections: u32,
}

/// A device that behaves like the firmware (guarantee 6): numbers its events (boot 1), keeps
/// each until the gateway's `devices/{device}/ack` covers it, holds at most `window`
/// unacknowledged, and after every reconnect re-sends all of them from the ack on. It
/// produces `rate` events per second until `stop` is set, then waits (up to `timeout`) until
/// the gateway has acknowledged all of them.
pub struct FirmwareDevice;

impl FirmwareDevice {
    /// Runs the device against the broker on `port`.
    pub async fn run(
        port: u16,
        device: String,
        rate: u32,
        window: u32,
        stop: Arc<std::sync::atomic::AtomicBool>,
        timeout: Duration,
    ) -> Result<DeviceRun, String> {
        use std::sync::atomic::Ordering;
        let started = Instant::now();
        let (mut last, mut acked, mut connections) = (0u32, 0u32, 0u32);
        let ack_topic = format!("devices/{device}/ack");
        let events_topic = format!("devices/{device}/events");
        loop {
            let finishing = stop.load(Ordering::SeqCst);
            if finishing && acked >= last {
                return Ok(DeviceRun { last, acked, connections });
            }
            if started.elapsed() > timeout {
                return Err(format!("{device}: {acked} of {last} acknowledged after {timeout:?}"));
            }
            let mut options = MqttOptions::new(device.clone(), "127.0.0.1", port);
            options.set_keep_alive(Duration::from_secs(5)).set_clean_session(true);
            let (client, mut eventloop) = AsyncClient::new(options, window as usize + 16);
            // The event loop in its own task (its poll is not cancel-safe); events come here.
            let (events_tx, mut events) = tokio::sync::mpsc::channel(1024);
            let poller = tokio::spawn(async move {
                loop {
                    let event = eventloop.poll().await;
                    let failed = event.is_err();
                    if events_tx.send(event).await.is_err() || failed {
                        return;
                    }
                }
            });
            let mut next = acked + 1;
            let mut subscribed = false;
            loop {
                let event = match tokio::time::timeout(Duration::from_millis(20), events.recv()).await {
                    Ok(Some(event)) => Ok(event),
                    Ok(None) => break,
                    Err(elapsed) => Err(elapsed),
                };
                match event {
                    Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                        connections += 1;
                        if client.try_subscribe(ack_topic.clone(), QoS::AtLeastOnce).is_err() {
                            break;
                        }
                    }
                    Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => subscribed = true,
                    Ok(Ok(Event::Incoming(Packet::Publish(p)))) if p.topic == ack_topic => {
                        if let Ok(ack) = edge_event::Ack::decode_json(&p.payload) {
                            if ack.boot == 1 {
                                acked = acked.max(ack.seq.min(last));
                            }
                        }
                    }
                    Ok(Ok(_)) | Err(_) => {}
                    Ok(Err(_)) => break,
                }
                if stop.load(Ordering::SeqCst) {
                    if acked >= last {
                        break;
                    }
                } else {
                    // The rate: events numbered so far may not run ahead of the clock.
                    let due = (started.elapsed().as_secs_f64() * f64::from(rate)) as u32;
                    last = last.max(due.min(acked + window));
                }
                // Send what is numbered and not sent on this connection (re-sends included).
                while subscribed && next <= last {
                    let payload = crate::event_json(&device, 1, next).into_bytes();
                    if client.try_publish(events_topic.clone(), QoS::AtLeastOnce, false, payload).is_err() {
                        break;
                    }
                    next += 1;
                }
                if started.elapsed() > timeout {
                    break;
                }
            }
            let _ = client.try_disconnect();
            poller.abort();
            if !(stop.load(Ordering::SeqCst) && acked >= last) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
