//! The cloud side of commands: a persistent session (`{cloud.client_id}-cmd`) subscribed
//! to `commands.topic`, acknowledging a command only after it is committed, and publishing
//! the status outbox in order, deleting a row only on its PUBACK.
//!
//! Each connection gets a fresh rumqttc client (as the forwarder does), so packet ids map
//! to status rows only within one connection: `Outgoing::Publish(pkid)` events come in
//! request order. After a reconnect the outbox is read again from its oldest row.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use edge_event::command::{Command, MAX_COMMAND_ID_LEN, MAX_COMMAND_NAME_LEN};
use rumqttc::{AsyncClient, ConnectionError, Event, Outgoing, Packet, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::metrics::CommandMeters;
use super::store::{Accepted, CommandStore, NewCommand};
use super::{now_ms, CommandsConfig, Wake};
use crate::config::CloudConfig;
use crate::link::{self, OnError};
use crate::util::RateLimited;

/// Most statuses published and not yet acknowledged.
const STATUS_INFLIGHT: usize = 50;

/// Runs the cloud side until `shutdown`, reconnecting with a doubling delay.
pub(super) async fn run(
    config: Arc<CommandsConfig>,
    cloud: CloudConfig,
    security: tokio::sync::watch::Receiver<crate::config::LinkSecurity>,
    store: CommandStore,
    wake: Arc<Wake>,
    metrics: CommandMeters,
    shutdown: CancellationToken,
) {
    let mut delay = cloud.backoff_min;
    let mut failures = RateLimited::new(Duration::from_secs(30));
    loop {
        let mut session = Session { config: &config, store: &store, wake: &wake, metrics: &metrics, connected: false };
        // The credentials as of this connect: a reload's apply from the next one.
        let cloud = CloudConfig { security: security.borrow().clone(), ..cloud.clone() };
        let end = session.run(&cloud, &shutdown).await;
        metrics.commands.link_up.set(0);
        match end {
            None => return,
            Some(reason) => {
                if session.connected {
                    delay = cloud.backoff_min;
                }
                if let Some(suppressed) = failures.allow() {
                    warn!(cloud = %cloud.url, client_id = %config.client_id, %reason, suppressed, "command session down; commands wait at the cloud broker");
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(cloud.backoff_max);
    }
}

struct Session<'a> {
    config: &'a CommandsConfig,
    store: &'a CommandStore,
    wake: &'a Wake,
    metrics: &'a CommandMeters,
    connected: bool,
}

impl Session<'_> {
    /// One connection; None on shutdown, else why it ended.
    async fn run(&mut self, cloud: &CloudConfig, shutdown: &CancellationToken) -> Option<String> {
        let mut options = match crate::tls::mqtt_options(&self.config.client_id, &cloud.url, &cloud.security) {
            Ok(options) => options,
            Err(err) => return Some(format!("cannot set up TLS: {err}")),
        };
        options
            .set_clean_session(false)
            .set_manual_acks(true)
            .set_keep_alive(cloud.keep_alive)
            .set_max_packet_size(64 * 1024, 64 * 1024)
            .set_inflight(100);
        let (client, mut eventloop) = AsyncClient::new(options, STATUS_INFLIGHT + 16);
        eventloop.network_options.set_connection_timeout(cloud.connect_timeout.as_secs().max(1));
        let mut poller = link::spawn_poller(eventloop, 64, OnError::Stop);
        let end = self.exchange(&client, &mut poller.events, shutdown).await;
        let _ = client.try_disconnect();
        drop(poller);
        end
    }

    async fn exchange(
        &mut self,
        client: &AsyncClient,
        events: &mut mpsc::Receiver<Result<Event, ConnectionError>>,
        shutdown: &CancellationToken,
    ) -> Option<String> {
        let mut cursor = 0;
        let mut awaiting: VecDeque<(i64, String)> = VecDeque::new();
        let mut inflight: HashMap<u16, (i64, String)> = HashMap::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = self.wake.outbox.notified(), if self.connected => {}
                event = events.recv() => match event {
                    Some(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                        self.connected = true;
                        self.metrics.commands.link_up.set(1);
                        info!(client_id = %self.config.client_id, topic = %self.config.topic, session_present = ack.session_present, "command session up");
                        if let Err(err) = client.subscribe(self.config.topic.clone(), QoS::AtLeastOnce).await {
                            return Some(format!("cannot subscribe: {err}"));
                        }
                    }
                    Some(Ok(Event::Incoming(Packet::Publish(publish)))) => {
                        if let Err(err) = self.take(&publish).await {
                            // Not acknowledged: the broker redelivers it on the next session.
                            return Some(format!("cannot store a command: {err}"));
                        }
                        if let Err(err) = client.ack(&publish).await {
                            return Some(format!("cannot acknowledge a command: {err}"));
                        }
                    }
                    Some(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                        if let Some(row) = awaiting.pop_front() {
                            inflight.insert(pkid, row);
                        }
                    }
                    Some(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                        if let Some((row, status)) = inflight.remove(&ack.pkid) {
                            if let Err(err) = self.store.run(move |s| s.published(row)).await {
                                return Some(format!("cannot update the status outbox: {err}"));
                            }
                            self.metrics.commands.count_status(&status);
                        }
                    }
                    Some(Ok(Event::Incoming(Packet::SubAck(ack)))) => {
                        if ack.return_codes.iter().any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) {
                            warn!(topic = %self.config.topic, client_id = %self.config.client_id, "the cloud broker refused the command subscription (check its ACLs); no commands will arrive");
                            self.metrics.note_error(now_ms(), format!("the cloud broker refused the subscription to {}", self.config.topic));
                        }
                        continue;
                    }
                    Some(Ok(Event::Incoming(Packet::Disconnect))) => return Some("the cloud broker disconnected us".into()),
                    Some(Ok(_)) => continue,
                    Some(Err(err)) => return Some(err.to_string()),
                    None => return Some("event loop ended".into()),
                },
            }
            if !self.connected {
                continue;
            }
            // Publish what the outbox holds beyond the cursor, up to the in-flight bound.
            let room = STATUS_INFLIGHT.saturating_sub(awaiting.len() + inflight.len());
            if room == 0 {
                continue;
            }
            let rows = match self.store.run(move |s| s.outbox(cursor, room)).await {
                Ok(rows) => rows,
                Err(err) => return Some(format!("cannot read the status outbox: {err}")),
            };
            for row in rows {
                let topic = self.config.status_topic_of(&row.device);
                if let Err(err) = client.publish(topic, QoS::AtLeastOnce, false, row.to_json()).await {
                    return Some(format!("publish refused by the client: {err}"));
                }
                cursor = row.row;
                awaiting.push_back((row.row, row.status));
            }
        }
    }

    /// Stores one command (or its refusal); only errors of the store are errors.
    async fn take(&self, publish: &rumqttc::Publish) -> rusqlite::Result<()> {
        let now = now_ms();
        let device = publish.topic.strip_prefix(self.config.topic_prefix()).unwrap_or(&publish.topic).to_owned();
        let parsed = parse(&device, &publish.payload, now, self.config);
        let store = self.store.clone();
        let result = match parsed {
            Ok(command) => {
                let (device, id) = (command.device.clone(), command.id.clone());
                let accepted = store.run(move |s| s.accept(&command, now)).await?;
                match accepted {
                    Accepted::Queued => info!(%device, command = %id, "command accepted"),
                    Accepted::Duplicate => info!(%device, command = %id, "command received again; already known"),
                    Accepted::Refused(reason) => warn!(%device, command = %id, %reason, "command refused"),
                }
                Ok(())
            }
            Err((id, reason)) => {
                warn!(%device, command = ?id, %reason, "command refused");
                store.run(move |s| s.refuse(&device, id.as_deref(), &reason, now)).await
            }
        };
        self.wake.queue.notify_one();
        self.wake.outbox.notify_one();
        result
    }
}

/// Reads a cloud command; on error, its id (if it had a usable one) and why.
fn parse(
    device: &str,
    payload: &[u8],
    now_ms: i64,
    config: &CommandsConfig,
) -> Result<NewCommand, (Option<String>, String)> {
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| (None, format!("not a JSON command: {e}")))?;
    let id = match value.get("id") {
        Some(serde_json::Value::String(id)) if !id.is_empty() && id.len() <= MAX_COMMAND_ID_LEN => id.clone(),
        _ => return Err((None, format!("\"id\" must be a string of 1 to {MAX_COMMAND_ID_LEN} bytes"))),
    };
    let fail = |reason: String| Err((Some(id.clone()), reason));
    if let Err(err) = edge_event::validate_device_id(device) {
        return fail(format!("the topic's device level {device:?} is not a device id: {err}"));
    }
    let name = match value.get("name") {
        Some(serde_json::Value::String(name)) if !name.is_empty() && name.len() <= MAX_COMMAND_NAME_LEN => name.clone(),
        _ => return fail(format!("\"name\" must be a string of 1 to {MAX_COMMAND_NAME_LEN} bytes")),
    };
    let payload = value.get("payload").map_or_else(|| "null".to_owned(), ToString::to_string);
    let deadline_ms = match value.get("deadline_ms") {
        None | Some(serde_json::Value::Null) => now_ms.saturating_add(config.default_deadline.as_millis() as i64),
        Some(v) => match v.as_u64().and_then(|d| i64::try_from(d).ok()) {
            Some(d) => d,
            None => return fail("\"deadline_ms\" must be a Unix time in ms (a whole number)".into()),
        },
    };
    let command = NewCommand { device: device.to_owned(), id: id.clone(), name, payload, deadline_ms };
    let max = config.max_size.bytes() as usize;
    if let Err(len) = encode(&command, max) {
        return fail(format!(
            "the command takes {len} bytes on the device side; commands.max_size is {}",
            config.max_size
        ));
    }
    Ok(command)
}

/// The postcard bytes the device gets, at most `max` of them; Err(length needed).
pub(super) fn encode(command: &NewCommand, max: usize) -> Result<Vec<u8>, usize> {
    let wire = Command {
        id: &command.id,
        name: &command.name,
        payload: &command.payload,
        deadline_ms: u64::try_from(command.deadline_ms).ok(),
    };
    let mut buf = vec![0u8; max];
    match wire.encode(&mut buf) {
        Ok(len) => {
            buf.truncate(len);
            Ok(buf)
        }
        Err(_) => {
            let mut big = vec![0u8; 4 + command.id.len() + command.name.len() + command.payload.len() + 16];
            Err(wire.encode(&mut big).unwrap_or(big.len()))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_read_with_defaults_and_refused_with_reasons() {
        let (config, _) = crate::config::commands::validate(None, "gw", "gw");
        let ok = parse("d1", br#"{"id":"c1","name":"set_interval","payload":{"ms":500}}"#, 1000, &config).unwrap();
        assert_eq!(ok.payload, r#"{"ms":500}"#);
        assert_eq!(ok.deadline_ms, 1000 + 86_400_000);
        let bytes = encode(&ok, 200).unwrap();
        assert_eq!(Command::decode(&bytes).unwrap().payload_u64(Some("ms")), Some(500));
        let no_payload = parse("d1", br#"{"id":"c2","name":"ping","deadline_ms":5}"#, 1000, &config).unwrap();
        assert_eq!((no_payload.payload.as_str(), no_payload.deadline_ms), ("null", 5));

        let err = |device: &str, json: &str| parse(device, json.as_bytes(), 0, &config).unwrap_err();
        assert_eq!(err("d1", "nope").0, None);
        assert!(err("d1", r#"{"id":7,"name":"x"}"#).1.contains("\"id\""));
        assert_eq!(err("d1", r#"{"id":"c","name":""}"#).0.as_deref(), Some("c"));
        assert!(err("bad device", r#"{"id":"c","name":"x"}"#).1.contains("device level"));
        assert!(err("d1", r#"{"id":"c","name":"x","deadline_ms":-1}"#).1.contains("deadline_ms"));
        let big = format!(r#"{{"id":"c","name":"x","payload":"{}"}}"#, "z".repeat(300));
        assert!(err("d1", &big).1.contains("commands.max_size is 200B"), "{:?}", err("d1", &big));
    }
}
