//! How device publishes reach ingest in embedded mode: two ways in, one thread that takes them
//! in order (docs/architecture.md, "The device gate").
//!
//! - **Direct**: a named device's QoS 0 and 1 publishes on its event topics. The gate reads
//!   them anyway (to check the topic rights), so it hands them to the ingest thread itself and
//!   sends the device's PUBACK when they are in the ingest thread's queue: the point at which
//!   rumqttd used to send it. No other client may subscribe to a named device's event topics,
//!   so the embedded broker has nothing to do with them; skipping it saves its parse, its
//!   segment copy, its PUBACK and the link's wake-up for every event.
//! - **Relayed**: everything else that reaches rumqttd (anonymous clients' publishes, which
//!   other anonymous clients may watch; QoS 2 publishes; wills; devices' command status).
//!   The link thread ([`follow_link`]) takes them from rumqttd's in-process link and queues
//!   them behind whatever is already queued.
//!
//! Invariants: one device's direct publishes are queued in the order it sent them, before its
//! PUBACKs go out; the ingest thread ([`take`]) is the only consumer, so per-device order
//! holds up to the journal. What waits in the queue and in rumqttd is bounded together by
//! [`Inflow`]: the gate waits for room before it queues or relays publishes.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use rumqttd::local::{LinkError, LinkRx};
use rumqttd::Notification;
use tracing::{error, warn};

use super::inflow::{self, Inflow};
use crate::pipeline::Batcher;
use crate::store::StoreHandle;

/// One publish, as ingest takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Its topic (an MQTT 5 alias already resolved).
    pub topic: String,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// What the ingest thread's queue carries.
#[derive(Debug)]
pub enum Arrival {
    /// Publishes the gate took from a device itself, in the order the device sent them.
    Direct(Vec<Publish>),
    /// Publishes from rumqttd's link; `through_gate` of them came in through the gate (the
    /// rest are the gateway's own acks and commands, which ingest skips).
    Relayed {
        /// The publishes.
        publishes: Vec<Publish>,
        /// How many passed the gate (for [`Inflow::taken`]).
        through_gate: u64,
    },
    /// rumqttd overwrote this many publishes before the link took them.
    Overrun(u64),
}

/// The queue into the ingest thread: unbounded, but what waits in it is bounded by
/// [`Inflow`], whose budget the gate respects before it queues.
pub type Queue = mpsc::Sender<Arrival>;

/// Most publishes the link thread gathers into one [`Arrival::Relayed`].
const LINK_GROUP: usize = 256;

/// The link thread: takes what rumqttd forwards to the ingest link and queues it; ends when
/// the link or the queue is gone.
pub fn follow_link(mut link_rx: LinkRx, queue: Queue) {
    // rumqttd numbers the messages of a filter's log consecutively; a gap between two
    // forwards is messages it overwrote before we read them (it skips a slow reader).
    let mut last_offset: Option<u64> = None;
    let mut overruns = crate::util::RateLimited::new(Duration::from_secs(10));
    let mut publishes = Vec::new();
    let mut through_gate = 0;
    loop {
        // Wait for the first; then take what is there without waiting, up to a group.
        let next = if publishes.is_empty() { link_rx.recv() } else { link_rx.recv_deadline(Instant::now()) };
        match next {
            Ok(Some(Notification::Forward(forward))) => {
                if let Some((_, offset)) = forward.cursor {
                    if let Some(lost) = last_offset.and_then(|last| offset.checked_sub(last + 1)).filter(|n| *n > 0) {
                        if let Some(suppressed) = overruns.allow() {
                            error!(
                                lost,
                                suppressed,
                                "the device broker overwrote publishes before the gateway could take them \
                                 (a burst beyond devices.broker_memory); counted as dropped, reason overrun"
                            );
                        }
                        if queue.send(Arrival::Overrun(lost)).is_err() {
                            return;
                        }
                    }
                    last_offset = Some(offset);
                }
                let Ok(topic) = String::from_utf8(forward.publish.topic.to_vec()) else {
                    // The gate refuses such topics; only a local client could send one.
                    warn!("device publish with a topic that is not UTF-8 ignored");
                    through_gate += 1;
                    continue;
                };
                through_gate += u64::from(inflow::through_gate(&topic));
                publishes.push(Publish { topic, payload: forward.publish.payload.to_vec() });
                if publishes.len() < LINK_GROUP {
                    continue;
                }
            }
            Ok(Some(Notification::Unschedule)) => {
                if link_rx.ready().is_err() {
                    break;
                }
                continue;
            }
            Ok(_) => continue,
            Err(LinkError::RecvTimeout(_)) => {}
            Err(err) => {
                error!(error = %err, "lost the link to the embedded broker; no more relayed device events will be taken");
                break;
            }
        }
        if !publishes.is_empty() || through_gate > 0 {
            let group = Arrival::Relayed { publishes: std::mem::take(&mut publishes), through_gate };
            through_gate = 0;
            if queue.send(group).is_err() {
                return;
            }
        }
    }
    if !publishes.is_empty() {
        let _ = queue.send(Arrival::Relayed { publishes, through_gate });
    }
}

/// How long before the writer's window ends the ingest thread hands over what it held.
const HAND_OVER_BEFORE: Duration = Duration::from_millis(10);

/// How long the ingest thread may hold arrivals: until shortly before the writer's open
/// commit window ends (events handed over then join that commit all the same), or None.
fn hold(store: &StoreHandle) -> Option<Duration> {
    let until = store.window_due()?.checked_sub(HAND_OVER_BEFORE)?;
    until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
}

/// The ingest thread: takes every arrival in queue order and hands it to the store in groups;
/// ends when every sender (the gates and the link thread) is gone.
///
/// While the writer holds a commit window open, this thread sleeps until shortly before it
/// ends instead of waking for each arrival (a queued publish does not wake a thread that
/// is not waiting on the queue): what it then hands over still joins that commit, so the
/// device ack comes no later, and a modest load costs one wake-up per window instead of one
/// per event. A gate that finds the budget used up wakes it ([`Inflow::wait_for_room`]).
pub fn take(queue: mpsc::Receiver<Arrival>, mut batcher: Batcher, inflow: &Inflow, store: &StoreHandle) {
    inflow.set_taker(std::thread::current());
    loop {
        // Take what is there without waiting while a group is pending; otherwise sleep
        // through the writer's window, or wait up to a tick.
        let next = if batcher.has_pending() {
            queue.try_recv().map_err(|e| match e {
                mpsc::TryRecvError::Empty => mpsc::RecvTimeoutError::Timeout,
                mpsc::TryRecvError::Disconnected => mpsc::RecvTimeoutError::Disconnected,
            })
        } else if let Some(hold) = hold(store) {
            std::thread::park_timeout(hold);
            match queue.try_recv() {
                Ok(arrival) => Ok(arrival),
                Err(mpsc::TryRecvError::Empty) => continue,
                Err(mpsc::TryRecvError::Disconnected) => Err(mpsc::RecvTimeoutError::Disconnected),
            }
        } else {
            queue.recv_timeout(crate::pipeline::TICK)
        };
        let result = match next {
            Ok(Arrival::Direct(publishes)) => {
                inflow.taken(publishes.len() as u64);
                push(&mut batcher, &publishes)
            }
            Ok(Arrival::Relayed { publishes, through_gate }) => {
                inflow.taken(through_gate);
                push(&mut batcher, &publishes)
            }
            Ok(Arrival::Overrun(lost)) => {
                batcher.overrun(lost);
                Ok(())
            }
            Err(mpsc::RecvTimeoutError::Timeout) if batcher.has_pending() => batcher.flush(),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // A whole tick without a publish: nothing waits in the queue or the broker.
                inflow.idle();
                batcher.tick()
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        if result.is_err() {
            break;
        }
    }
    let _ = batcher.flush();
}

fn push(batcher: &mut Batcher, publishes: &[Publish]) -> Result<(), crate::store::StoreError> {
    for publish in publishes {
        // The gateway's own acks and commands pass the link too (it takes `#`).
        if super::is_gateway_to_device(&publish.topic) {
            continue;
        }
        batcher.push(&publish.topic, &publish.payload, None)?;
    }
    Ok(())
}
