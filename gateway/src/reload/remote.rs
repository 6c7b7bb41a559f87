//! Configuration from the cloud (`[remote_config]`, off by default): a session of its own on
//! the cloud broker (`{cloud.client_id}-config`) subscribed to the retained document on
//! `remote_config.topic`, which it hands to the reload task like a reload; the outcome is
//! published, retained, on `{topic}/status`. docs/operations.md, "Configuration from the
//! cloud", has the document format.
//!
//! Invariants:
//! - A document is applied like a reload of the file with the document's sections in place
//!   of the file's: validated whole first; a bad one changes nothing (the one in effect
//!   stays) and is reported on the status topic, in the log and the metrics.
//! - Only the sections `remote_config.sections` allows (a subset of `routes`, `log`) can be
//!   replaced; a document that names any other section is refused whole.
//! - A document that was applied is kept in the journal before its status is published,
//!   so a restart with the cloud down runs it again ([`at_start`]).
//! - The retained document is delivered again on every connection: the same payload as the
//!   last one handled (applied or refused), or the document in effect, is not applied or
//!   reported again.
//! - Only a document applied whole is kept in the journal; the config session uses `[cloud]`
//!   as it was at start (credentials changed by a reload reach it at the next restart).

use std::path::Path;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet, QoS};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Handle, Outcome};
use crate::config::{CloudConfig, Config, RemoteConfig, RemoteDocument};
use crate::link::{self, OnError};
use crate::store::{Journal, StoreHandle};
use crate::util::RateLimited;

/// The config to start with: the file's, with the cloud's document of an earlier run over
/// it when `[remote_config]` is on and that document still validates with this file.
pub fn at_start(config: Config, path: Option<&Path>) -> (Config, Option<RemoteDocument>) {
    let Some(path) = path.filter(|_| config.remote.enabled) else {
        return (config, None);
    };
    let document = match crate::store::remote_config::last_applied(&Journal::of(&config)) {
        Ok(Some(document)) => document,
        Ok(None) => return (config, None),
        Err(err) => {
            warn!(error = %err, "cannot read the cloud's config document kept in the journal; running the file alone");
            return (config, None);
        }
    };
    let merged = std::fs::read_to_string(path)
        .map_err(|e| vec![e.to_string()])
        .and_then(|text| document.merge(&text, &config.remote.sections))
        .and_then(|text| Config::parse(&text).map_err(|errors| errors.iter().map(ToString::to_string).collect()));
    match merged {
        Ok(merged) => {
            info!(version = %document.version, "running the cloud's config document kept from the last run over the file");
            (merged, Some(document))
        }
        Err(errors) => {
            warn!(
                version = %document.version,
                "the cloud's config document kept from the last run does not fit this file; running the file alone \
                 until the cloud sends another:\n  {}",
                errors.join("\n  ")
            );
            (config, None)
        }
    }
}

/// What the session needs.
pub struct Session {
    /// `[remote_config]`.
    pub remote: RemoteConfig,
    /// `[cloud]` (the broker, its TLS and credentials, backoff).
    pub cloud: CloudConfig,
    /// The gateway id (in the status).
    pub gateway_id: String,
    /// The reload task.
    pub reload: Handle,
    /// Where the applied document is kept.
    pub store: StoreHandle,
    /// The document in effect at start (not applied again when the cloud repeats it).
    pub in_effect: Option<RemoteDocument>,
    /// The last payload handled, applied or not (not handled again when it comes again).
    pub last_payload: Option<Vec<u8>>,
}

/// Runs the session until `shutdown`, reconnecting with a doubling delay.
pub async fn run(mut session: Session, shutdown: CancellationToken) {
    let mut delay = session.cloud.backoff_min;
    let mut failures = RateLimited::new(Duration::from_secs(30));
    info!(topic = %session.remote.topic, sections = ?session.remote.sections, "configuration from the cloud enabled");
    loop {
        let (end, connected) = session.connection(&shutdown).await;
        let Some(reason) = end else { return };
        if connected {
            delay = session.cloud.backoff_min;
        }
        if let Some(suppressed) = failures.allow() {
            warn!(cloud = %session.cloud.url, %reason, suppressed, "remote config session down; the config in effect stays");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(session.cloud.backoff_max);
    }
}

impl Session {
    /// One connection: None on shutdown, else why it ended; and whether it got a CONNACK.
    async fn connection(&mut self, shutdown: &CancellationToken) -> (Option<String>, bool) {
        let mut options = match crate::tls::mqtt_options(&self.remote.client_id, &self.cloud.url, &self.cloud.security)
        {
            Ok(options) => options,
            Err(err) => return (Some(format!("cannot set up TLS: {err}")), false),
        };
        options
            .set_clean_session(true)
            .set_keep_alive(self.cloud.keep_alive)
            .set_max_packet_size(256 * 1024, 64 * 1024);
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        eventloop.network_options.set_connection_timeout(self.cloud.connect_timeout.as_secs().max(1));
        let mut poller = link::spawn_poller(eventloop, 16, OnError::Stop);
        let mut connected = false;
        let end = loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => break None,
                event = poller.events.recv() => event,
            };
            match event {
                Some(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                    connected = true;
                    if let Err(err) = client.subscribe(self.remote.topic.clone(), QoS::AtLeastOnce).await {
                        break Some(format!("cannot subscribe: {err}"));
                    }
                }
                Some(Ok(Event::Incoming(Packet::Publish(publish)))) if publish.topic == self.remote.topic => {
                    if let Some((outcome, received)) = self.take(&publish.payload).await {
                        let status = status_json(&self.gateway_id, &outcome, received);
                        if let Err(err) =
                            client.publish(self.remote.status_topic.clone(), QoS::AtLeastOnce, true, status).await
                        {
                            break Some(format!("cannot publish the status: {err}"));
                        }
                    }
                }
                Some(Ok(Event::Incoming(Packet::Disconnect))) => break Some("the cloud broker disconnected us".into()),
                Some(Ok(_)) => {}
                Some(Err(err)) => break Some(err.to_string()),
                None => break Some("event loop ended".into()),
            }
        };
        let _ = client.try_disconnect();
        drop(poller);
        (end, connected)
    }

    /// Applies a document (unless it is the one in effect, or the same payload as the last
    /// one handled: the broker delivers the retained document again on every connection);
    /// the outcome to report, and the version of the document received (None: unreadable,
    /// or cleared).
    async fn take(&mut self, payload: &[u8]) -> Option<(Outcome, Option<String>)> {
        if self.last_payload.as_deref() == Some(payload) {
            return None;
        }
        self.last_payload = Some(payload.to_vec());
        let document = if payload.is_empty() { Ok(None) } else { RemoteDocument::parse(payload).map(Some) };
        let received = document.as_ref().ok().and_then(|d| d.as_ref().map(|d| d.version.clone()));
        if let Ok(document) = &document {
            if *document == self.in_effect {
                return None;
            }
        }
        let outcome = self.reload.apply_remote(document.clone()).await?;
        // Only a document applied whole is kept: a failed part leaves the one before as what
        // a restart runs (the status says `failed` and names the part).
        if outcome.result == super::ReloadResult::Applied {
            let document = document.ok().flatten();
            if let Err(err) = self.store.remember_remote_config(document.clone()).await {
                warn!(error = %err, "cannot keep the cloud's config document in the journal; a restart runs the file alone");
            }
            self.in_effect = document;
        }
        Some((outcome, received))
    }
}

/// The status message: the outcome, with the gateway, the version of the document received
/// and the version in effect (after a refusal: the one before).
fn status_json(gateway: &str, outcome: &Outcome, received: Option<String>) -> Vec<u8> {
    let body = serde_json::json!({
        "gateway": gateway,
        "result": outcome.result,
        "received_version": received,
        "version": outcome.remote_version,
        "at_ms": outcome.at_ms,
        "applied": outcome.applied,
        "needs_restart": outcome.needs_restart,
        "errors": outcome.errors,
    });
    body.to_string().into_bytes()
}
