//! The device side of commands: an MQTT client of the device broker that sends each
//! device's oldest open command on `devices/{device}/commands` (QoS 1, postcard) and takes
//! the devices' answers from `devices/+/commands/status`.
//!
//! When to send: at once when a command arrives or the previous one finished, when the
//! device says `ready` (it has just subscribed), and again every `commands.resend` while
//! the command stays unanswered; never a device's second command before its first is
//! finished. Every pass also expires commands past their deadline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use edge_event::command::{Reply, ReplyStatus};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::metrics::CommandMeters;
use super::{now_ms, CommandsConfig, DeviceBroker, Wake};
use crate::downlink::store::CommandStore;
use crate::link::{self, Backoff, OnError};
use crate::util::RateLimited;

/// Where devices answer.
pub const STATUS_FILTER: &str = "devices/+/commands/status";

/// How often the queue is looked at without a wake-up (deadlines, re-sends).
const PASS_EVERY: Duration = Duration::from_millis(500);

/// Longest message taken from a device's JSON answer.
const MAX_MESSAGE: usize = 256;

/// A device's answer, read from either form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Answer {
    pub(super) id: String,
    pub(super) status: ReplyStatus,
    pub(super) message: Option<String>,
}

/// Reads an answer: postcard ([`Reply`]) or JSON (`{"id","status","message"?}`).
pub(super) fn parse_answer(payload: &[u8]) -> Option<Answer> {
    let first = payload.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'{') {
        let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
        let status = ReplyStatus::from_name(value.get("status")?.as_str()?)?;
        let id = value.get("id").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        let message = value.get("message").and_then(|v| v.as_str()).map(|m| m.chars().take(MAX_MESSAGE).collect());
        return Some(Answer { id, status, message });
    }
    let reply = Reply::decode(payload).ok()?;
    let message = (!reply.message.is_empty()).then(|| reply.message.to_owned());
    Some(Answer { id: reply.id.to_owned(), status: reply.status, message })
}

/// Runs the device side until `shutdown`.
pub(super) async fn run(
    config: Arc<CommandsConfig>,
    broker: DeviceBroker,
    store: CommandStore,
    wake: Arc<Wake>,
    metrics: CommandMeters,
    shutdown: CancellationToken,
) {
    let mut options = match crate::tls::mqtt_options(&broker.client_id, &broker.url, &broker.security) {
        Ok(options) => options,
        Err(err) => {
            warn!(error = %err, "commands: cannot set up the device broker connection; commands are kept, not delivered");
            return;
        }
    };
    options.set_clean_session(true).set_keep_alive(Duration::from_secs(30)).set_max_packet_size(64 * 1024, 64 * 1024);
    let (client, eventloop) = AsyncClient::new(options, 256);
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut poller = link::spawn_poller(eventloop, 256, OnError::Retry(backoff));
    let mut sender = Sender {
        config: &config,
        store: &store,
        client: &client,
        metrics: &metrics,
        sent: HashMap::new(),
        online: false,
    };
    let mut errors = RateLimited::new(Duration::from_secs(30));
    let mut pass = tokio::time::interval(PASS_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = pass.tick() => {}
            _ = wake.queue.notified() => {}
            event = poller.events.recv() => match event {
                Some(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                    info!(broker = %broker.url, client_id = %broker.client_id, "command sender connected to the device broker");
                    if let Err(err) = client.subscribe(STATUS_FILTER, QoS::AtLeastOnce).await {
                        warn!(error = %err, "cannot subscribe to device answers");
                    }
                    sender.online = true;
                    sender.sent.clear();
                }
                Some(Ok(Event::Incoming(Packet::Publish(publish)))) => {
                    let Some(device) = edge_event::topic::command_status_device(&publish.topic) else { continue };
                    let device = device.to_owned();
                    match parse_answer(&publish.payload) {
                        Some(answer) => {
                            if let Err(err) = sender.answer(&device, answer, &wake).await {
                                warn!(error = %err, %device, "cannot store a device's answer; it will be asked again");
                            }
                        }
                        None => warn!(%device, "an answer on the command status topic that is neither a reply nor JSON; ignored"),
                    }
                }
                Some(Ok(_)) => continue,
                Some(Err(err)) => {
                    sender.online = false;
                    if let Some(suppressed) = errors.allow() {
                        warn!(error = %err, broker = %broker.url, suppressed, "command sender lost the device broker; retrying");
                    }
                    continue;
                }
                None => break,
            },
        }
        if let Err(err) = sender.pass(&wake).await {
            if let Some(suppressed) = errors.allow() {
                warn!(error = %err, suppressed, "cannot read the command queue; retrying");
            }
        }
    }
    let _ = client.try_disconnect();
    drop(poller);
}

struct Sender<'a> {
    config: &'a CommandsConfig,
    store: &'a CommandStore,
    client: &'a AsyncClient,
    metrics: &'a CommandMeters,
    /// Per device: the command last sent and when.
    sent: HashMap<String, (i64, Instant)>,
    online: bool,
}

impl Sender<'_> {
    async fn answer(&mut self, device: &str, answer: Answer, wake: &Wake) -> rusqlite::Result<()> {
        if answer.status == ReplyStatus::Ready {
            // Subscribed just now: whatever was sent before it may have gone nowhere.
            self.sent.remove(device);
            return Ok(());
        }
        let (owned, now) = (device.to_owned(), now_ms());
        let status = answer.status.as_str();
        let id = answer.id.clone();
        let changed =
            self.store.run(move |s| s.reply(&owned, &answer.id, status, answer.message.as_deref(), now)).await?;
        if changed {
            info!(%device, command = %id, status, "command answered by the device");
            wake.outbox.notify_one();
            if matches!(answer.status, ReplyStatus::Done | ReplyStatus::Failed) {
                self.sent.remove(device);
            }
        }
        Ok(())
    }

    /// Expires what is overdue, then sends each device's head command if it is new or
    /// unanswered for `resend`.
    async fn pass(&mut self, wake: &Wake) -> rusqlite::Result<()> {
        let now = now_ms();
        let ((heads, expired), (open, pending)) = self.store.run(move |s| Ok((s.heads(now)?, s.counts()?))).await?;
        self.metrics.commands.open.set(open);
        self.metrics.commands.pending.set(pending);
        if expired {
            wake.outbox.notify_one();
        }
        if !self.online {
            return Ok(());
        }
        for head in heads {
            let device = &head.command.device;
            let due = match self.sent.get(device) {
                Some((seq, at)) => *seq != head.seq || at.elapsed() >= self.config.resend,
                None => true,
            };
            if !due {
                continue;
            }
            let bytes = match super::cloud::encode(&head.command, self.config.max_size.bytes() as usize) {
                Ok(bytes) => bytes,
                Err(len) => {
                    warn!(%device, command = %head.command.id, len, "command larger than commands.max_size; it will expire");
                    continue;
                }
            };
            let topic = format!("devices/{device}/commands");
            if self.client.try_publish(topic, QoS::AtLeastOnce, false, bytes).is_err() {
                // The request queue is full (the broker is slow or gone): next pass.
                break;
            }
            self.sent.insert(device.clone(), (head.seq, Instant::now()));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_in_both_forms() {
        let mut buf = [0u8; 64];
        let len = Reply { id: "c1", status: ReplyStatus::Done, message: "pong" }.encode(&mut buf).unwrap();
        let expected = Answer { id: "c1".into(), status: ReplyStatus::Done, message: Some("pong".into()) };
        assert_eq!(parse_answer(&buf[..len]), Some(expected.clone()));
        assert_eq!(parse_answer(br#" {"id":"c1","status":"done","message":"pong"}"#), Some(expected));
        assert_eq!(parse_answer(br#"{"status":"ready"}"#).unwrap().status, ReplyStatus::Ready);
        assert_eq!(parse_answer(br#"{"id":"c1","status":"expired"}"#), None);
        assert_eq!(parse_answer(b"\x07junk"), None);
        assert_eq!(parse_answer(b""), None);
    }
}
