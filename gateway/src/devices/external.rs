//! Client of an existing device broker (e.g. Mosquitto): QoS 1 subscriptions on a
//! persistent session, with manual acks. A device's message is acknowledged to that broker
//! only after the journal committed it (or deliberately dropped it), so a crash between
//! receipt and commit makes the broker redeliver instead of losing it.
//!
//! Acks carry packet ids of one connection: after a reconnect, an ack for a message of the
//! old connection would acknowledge a different message, so every `done` checks that its
//! connection is still the current one (the broker then redelivers; dedupe drops the copy).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::ack_message;
use crate::config::{BrokerUrl, ByteSize, LinkSecurity};
use crate::link::{self, Backoff, OnError};
use crate::pipeline::{Batcher, Source};
use crate::store::{DeviceAck, Done};
use crate::util::RateLimited;

/// The existing broker the gateway is a client of.
#[derive(Debug, Clone)]
pub struct Broker {
    /// Its URL.
    pub url: BrokerUrl,
    /// The gateway's client id there (the persistent session).
    pub client_id: String,
    /// TLS (`mqtts://`) and credentials.
    pub security: LinkSecurity,
    /// Largest device payload.
    pub max_payload: ByteSize,
}

/// Runs the client until `shutdown`; reconnects with a capped backoff on errors.
pub async fn run(broker: Broker, source: Source, shutdown: CancellationToken) {
    let Source { ingest, store, acks, replays } = source;
    let Broker { url, client_id, security, max_payload } = broker;
    let filters = ingest.filters();
    let Some(mut options) = link_options(&client_id, &url, &security, &shutdown).await else { return };
    options
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(max_payload.bytes() as usize + 1024, 64 * 1024)
        .set_inflight(1000);
    let (client, eventloop) = AsyncClient::new(options, 1024);
    let generation = Arc::new(AtomicU64::new(0));
    spawn_ack_publisher(client.clone(), acks);
    let mut batcher = Batcher::new(ingest, store, replays);
    let mut errors = RateLimited::new(Duration::from_secs(30));
    // The event loop runs in its own task (its poll is then never cancelled by the tick);
    // it backs off after a failed poll, since rumqttc reconnects on the very next one.
    let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut poller = link::spawn_poller(eventloop, 1024, OnError::Retry(backoff));
    let mut tick = tokio::time::interval(crate::pipeline::TICK);
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {
                if batcher.tick().is_err() {
                    break;
                }
                continue;
            }
            event = poller.events.recv() => match event {
                Some(event) => event,
                None => break,
            },
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                generation.fetch_add(1, Ordering::AcqRel);
                info!(broker = %url, "connected to the device broker");
                if security.tls.as_ref().is_some_and(|t| t.insecure_skip_verify) {
                    warn!(broker = %url, "devices.insecure_skip_verify: the device broker's certificate was NOT verified (lab use only)");
                }
                for filter in &filters {
                    if let Err(err) = client.subscribe(filter.clone(), QoS::AtLeastOnce).await {
                        warn!(error = %err, filter, "cannot subscribe on the device broker");
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) if super::is_gateway_to_device(&publish.topic) => {
                // The gateway's own protocol (a route filter such as `devices/#` takes it).
                let _ = client.try_ack(&publish);
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let topic = publish.topic.clone();
                let payload = publish.payload.clone();
                let done = ack_after_commit(client.clone(), publish, generation.clone());
                if batcher.push(&topic, &payload, Some(done)).and_then(|()| batcher.flush()).is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(err) => {
                if let Some(suppressed) = errors.allow() {
                    let error = crate::tls::describe(&err, "the device broker", &security);
                    warn!(%error, broker = %url, suppressed, "device broker connection failed; retrying");
                }
            }
        }
    }
    let _ = batcher.flush();
    let _ = client.try_disconnect();
    drop(poller);
}

/// The client options, TLS included; a TLS file that went bad since the config was checked
/// is logged and retried every 10 s (None on shutdown).
async fn link_options(
    client_id: &str,
    url: &BrokerUrl,
    security: &LinkSecurity,
    shutdown: &CancellationToken,
) -> Option<MqttOptions> {
    loop {
        match crate::tls::mqtt_options(client_id, url, security) {
            Ok(options) => return Some(options),
            Err(err) => warn!(error = %err, broker = %url, "cannot set up TLS for the device broker; retrying in 10 s"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
}

fn ack_after_commit(client: AsyncClient, publish: rumqttc::Publish, generation: Arc<AtomicU64>) -> Done {
    let mine = generation.load(Ordering::Acquire);
    Box::new(move || {
        if generation.load(Ordering::Acquire) == mine {
            let _ = client.try_ack(&publish);
        }
    })
}

fn spawn_ack_publisher(client: AsyncClient, acks: mpsc::Receiver<Vec<DeviceAck>>) {
    let spawned = std::thread::Builder::new().name("device-acks".into()).spawn(move || {
        while let Ok(marks) = acks.recv() {
            for mark in marks {
                let Some((topic, payload)) = ack_message(&mark) else { continue };
                if let Err(err) = client.try_publish(topic, QoS::AtLeastOnce, true, payload) {
                    warn!(error = %err, device = %mark.device, "device ack not published (device broker busy or down)");
                }
            }
        }
    });
    if let Err(err) = spawned {
        warn!(error = %err, "cannot start the device ack publisher; devices will not get acks");
    }
}
