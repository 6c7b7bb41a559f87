//! Back-pressure from the journal to the devices, through the device gate.
//!
//! rumqttd acknowledges a device's QoS 1 publish as soon as it is in its memory, and its
//! in-process link cannot slow it down: when the ingest link falls behind (the journal
//! writer is the bottleneck under a flood), rumqttd overwrites what the link has not read
//! yet. Those events are lost for devices that do not re-send until acked. The gate is the
//! one place that can wait: it stops relaying a device's packets while too much is unread,
//! so the device's TCP window and its MQTT inflight window fill up and it slows down,
//! instead of its events being overwritten.
//!
//! Accounting: the gate counts the publishes it hands on (and their bytes): to the broker,
//! or straight into the ingest thread's queue for a named device's events
//! ([`super::arrivals`]); the ingest thread counts the publishes it takes (device topics
//! only: the gateway's own acks and commands do not pass the gate). Their difference is
//! what waits in the broker and the queue. The gate waits while that, at the gate's average
//! packet size (larger than what rumqttd counts, so the estimate errs on the safe side), is
//! over half of `devices.broker_memory`.
//!
//! While a device is held back, nothing of it is relayed, pings included: a hold longer than
//! 1.5x its keep-alive makes the broker drop the connection (the device reconnects and
//! re-sends what was not acknowledged). The journal would have to stall that long first.
//!
//! Invariant: the count can only drift when a publish the gate forwarded never reaches the
//! link (a connection cut mid-packet); the ingest thread resynchronises whenever it has been
//! idle for a tick (nothing unread then), so a drift can never stop the gate for good.

use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::Notify;

/// The shared counters of the gate (producer) and the ingest link (consumer).
pub struct Inflow {
    forwarded: AtomicU64,
    forwarded_bytes: AtomicU64,
    taken: AtomicU64,
    /// Bytes of unread publishes the broker may hold before the gate waits.
    budget: u64,
    room: Notify,
    /// A gate task waits for room (so the link's per-publish path skips the notify lock
    /// otherwise). Set before the waiter's last check, read after the taker's increment:
    /// one of the two always sees the other (SeqCst).
    waiting: AtomicBool,
    /// How often the gate had to wait (a metric of floods the journal could not keep up with).
    waits: AtomicU64,
    /// The ingest thread, which may sleep through the writer's commit window
    /// (`devices::arrivals`): a gate that has to wait wakes it.
    taker: std::sync::OnceLock<std::thread::Thread>,
}

impl Inflow {
    /// Counters for a broker with `broker_memory` bytes for messages.
    pub fn new(broker_memory: u64) -> Inflow {
        Inflow {
            forwarded: AtomicU64::new(0),
            forwarded_bytes: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            budget: (broker_memory / 2).max(64 * 1024),
            room: Notify::new(),
            waiting: AtomicBool::new(false),
            waits: AtomicU64::new(0),
            taker: std::sync::OnceLock::new(),
        }
    }

    /// Publishes in the broker that the link has not taken yet.
    pub fn unread(&self) -> u64 {
        self.forwarded.load(Ordering::SeqCst).saturating_sub(self.taken.load(Ordering::SeqCst))
    }

    fn full(&self) -> bool {
        let forwarded = self.forwarded.load(Ordering::Acquire).max(1);
        let average = (self.forwarded_bytes.load(Ordering::Relaxed) / forwarded).max(32);
        self.unread().saturating_mul(average) > self.budget
    }

    /// The gate: waits until the broker has room for more publishes; true if it waited.
    pub async fn wait_for_room(&self) -> bool {
        if !self.full() {
            return false;
        }
        self.waits.fetch_add(1, Ordering::Relaxed);
        if let Some(taker) = self.taker.get() {
            taker.unpark();
        }
        loop {
            let mut notified = pin!(self.room.notified());
            notified.as_mut().enable();
            self.waiting.store(true, Ordering::SeqCst);
            if !self.full() {
                return true;
            }
            notified.await;
        }
    }

    /// The ingest thread names itself, to be woken when a gate has to wait.
    pub fn set_taker(&self, thread: std::thread::Thread) {
        let _ = self.taker.set(thread);
    }

    /// The gate handed `publishes` publishes of `bytes` bytes (whole packets) to the broker.
    pub fn forwarded(&self, publishes: u64, bytes: u64) {
        if publishes > 0 {
            self.forwarded_bytes.fetch_add(bytes, Ordering::Relaxed);
            self.forwarded.fetch_add(publishes, Ordering::Release);
        }
    }

    /// The ingest link took `publishes` device publishes.
    pub fn taken(&self, publishes: u64) {
        if publishes > 0 {
            self.taken.fetch_add(publishes, Ordering::SeqCst);
            if self.waiting.load(Ordering::SeqCst) && !self.full() {
                self.waiting.store(false, Ordering::SeqCst);
                self.room.notify_waiters();
            }
        }
    }

    /// The ingest link found nothing to read for a tick: nothing is unread.
    pub fn idle(&self) {
        let forwarded = self.forwarded.load(Ordering::Acquire);
        if self.taken.load(Ordering::Acquire) != forwarded {
            self.taken.store(forwarded, Ordering::Release);
        }
        self.waiting.store(false, Ordering::SeqCst);
        self.room.notify_waiters();
    }

    /// How often the gate has waited for room.
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }
}

/// Whether a topic's publishes reach the broker through the gate (device traffic), as
/// opposed to the gateway's own acks and commands, which it publishes on the broker directly.
pub fn through_gate(topic: &str) -> bool {
    let Some(rest) = topic.strip_prefix("devices/") else { return true };
    !(rest.ends_with("/ack") || rest.ends_with("/commands")) || rest.matches('/').count() != 1
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn only_the_gateways_own_topics_bypass_the_gate() {
        assert!(through_gate("devices/d1/events"));
        assert!(through_gate("devices/d1/commands/status"));
        assert!(through_gate("zigbee2mqtt/d1"));
        assert!(!through_gate("devices/d1/ack"));
        assert!(!through_gate("devices/d1/commands"));
    }

    #[tokio::test]
    async fn the_gate_waits_while_the_budget_is_used_and_resumes_when_the_link_takes() {
        // 64 KiB budget (the floor), 1 KiB packets: 64 unread fill it.
        let inflow = Arc::new(Inflow::new(0));
        inflow.forwarded(64, 64 * 1024);
        assert!(!inflow.full(), "exactly the budget is still room");
        inflow.forwarded(1, 1024);
        let waiting = tokio::spawn({
            let inflow = inflow.clone();
            async move { inflow.wait_for_room().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "over the budget the gate waits");
        inflow.taken(1);
        tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("resumed").expect("task");
        assert_eq!(inflow.waits(), 1);
        assert_eq!(inflow.unread(), 64);
    }

    #[tokio::test]
    async fn an_idle_link_resynchronises_a_count_that_drifted() {
        let inflow = Arc::new(Inflow::new(0));
        // Publishes cut mid-packet: the gate counted them, the link never sees them.
        inflow.forwarded(500, 500 * 1024);
        let waiting = tokio::spawn({
            let inflow = inflow.clone();
            async move { inflow.wait_for_room().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        inflow.idle();
        tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("resumed").expect("task");
        assert_eq!(inflow.unread(), 0);
    }
}
