//! The CONNECT checks of the device gate (gate.rs, step 2), and the device's session at the
//! broker: how its session wishes are mapped onto rumqttd's (step 5), kept or discarded.

use std::net::SocketAddr;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::warn;

use super::{may_publish, read_frame, send, Gate};
use crate::devices::auth::{AuthFailure, Grant, Identity};
use crate::devices::metrics::ConnectionRefusal;
use crate::devices::mqtt::{self, v5, Refusal};
use crate::devices::places::{Place, Refused};
use crate::devices::relay;

/// A CONNECT the gate accepted, ready for the broker.
pub(super) struct Login {
    /// Who the device is, and the hash its password was verified against.
    pub grant: Grant,
    /// Its protocol level.
    pub level: u8,
    /// Its client id.
    pub client_id: String,
    /// Its MQTT 5 properties (defaults for 3.1.1).
    pub v5: v5::ConnectProperties,
    /// Clean Session / Clean Start as the device sent it.
    pub clean_start: bool,
    /// One of `devices.max_connections`, revoked when a reload no longer admits the login.
    pub place: Place,
    /// `devices.max_payload` when it logged in: the connection keeps it.
    pub max_payload: usize,
    /// The CONNECT's body, rewritten for the broker once the client id is claimed
    /// ([`Gate::forwarded_connect`]).
    pub body: Vec<u8>,
}

/// What the broker gets for a device's session wishes. rumqttd 0.20 knows one flag: a clean
/// connection neither resumes nor keeps a session; any other resumes the session it kept
/// and keeps it after, for good. MQTT 5 separates the two (Clean Start; Session Expiry
/// Interval, 0 when absent): the gate connects cleanly when there is nothing to resume or
/// keep, discards a kept session first when Clean Start asks for a new one that is to be
/// kept [MQTT-3.1.2-4], and discards it after the connection when its expiry is 0
/// [MQTT-3.1.2-23] (the gate does that in `session`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SessionPlan {
    /// The clean flag the broker gets.
    pub clean: bool,
    /// Discard the broker's kept session before connecting.
    pub discard_first: bool,
}

impl SessionPlan {
    /// The plan for a device of `level` with these wishes, when the broker keeps a session
    /// for its client id (`kept`) or not.
    pub fn new(level: u8, clean_start: bool, expiry: u32, kept: bool) -> SessionPlan {
        if level < 5 {
            return SessionPlan { clean: clean_start, discard_first: false };
        }
        if expiry == 0 && (clean_start || !kept) {
            return SessionPlan { clean: true, discard_first: false };
        }
        SessionPlan { clean: false, discard_first: clean_start && kept }
    }
}

impl Gate {
    /// Checks a CONNECT `body`: protocol level, credentials, will topic, connection limit.
    /// A refusal is answered (CONNACK), counted and logged here; then None.
    pub(super) async fn login(
        &self,
        client: &mut (impl AsyncWrite + Unpin),
        peer: SocketAddr,
        body: &[u8],
    ) -> Option<Login> {
        if let Some(level) = mqtt::protocol_level(body).filter(|level| *level != self.settings.level) {
            let served = if self.settings.level == 5 { "MQTT 5" } else { "MQTT 3.1.1" };
            let detail = format!("a CONNECT of protocol level {level} on a listener for {served} (CONNACK 1)");
            self.refuse(ConnectionRefusal::Protocol, peer, &detail);
            let _ = send(client, &mqtt::CONNACK_BAD_PROTOCOL).await;
            return None;
        }
        let connect = match mqtt::connect(body) {
            Ok(connect) => connect,
            Err(err) => {
                self.refuse(ConnectionRefusal::Protocol, peer, &err);
                return None;
            }
        };
        let level = connect.level;
        // Bounded: behind a storm of argon2 checks, a connection waits at most this long.
        let check = self.live.auth.grant(connect.client_id, connect.username, connect.password);
        let Ok(checked) = tokio::time::timeout(self.settings.connect_timeout, check).await else {
            self.refuse(ConnectionRefusal::Limit, peer, "password checks are backed up");
            let _ = send(client, &mqtt::connack_refusal(level, Refusal::Busy)).await;
            return None;
        };
        let grant = match checked {
            Ok(grant) => grant,
            Err(failure) => {
                self.metrics.devices.count_auth_failure(failure);
                if let Some(suppressed) = self.refusal_log.lock().ok().and_then(|mut log| log.allow()) {
                    warn!(
                        %peer, client_id = connect.client_id, user = connect.username.unwrap_or(""),
                        reason = failure.label(), suppressed, "device login refused"
                    );
                }
                let refusal = match failure {
                    AuthFailure::ClientIdMismatch => Refusal::NotAuthorized,
                    _ => Refusal::BadCredentials,
                };
                let _ = send(client, &mqtt::connack_refusal(level, refusal)).await;
                return None;
            }
        };
        if let (Identity::Device(id), Some(will)) = (&grant.identity, connect.will_topic) {
            if !may_publish(id, will) {
                self.refuse(ConnectionRefusal::Acl, peer, &format!("device {id:?} may not have a will on {will:?}"));
                let _ = send(client, &mqtt::connack_refusal(level, Refusal::NotAuthorized)).await;
                return None;
            }
        }
        let place = match self.live.places.take(grant.clone(), &self.live.auth) {
            Ok(place) => place,
            Err(Refused::Full) => {
                self.refuse(ConnectionRefusal::Limit, peer, "devices.max_connections reached");
                let _ = send(client, &mqtt::connack_refusal(level, Refusal::Busy)).await;
                return None;
            }
            // Checked against a users table that a reload replaced meanwhile.
            Err(Refused::Stale(failure)) => {
                self.metrics.devices.count_auth_failure(failure);
                if let Some(suppressed) = self.refusal_log.lock().ok().and_then(|mut log| log.allow()) {
                    let reason = failure.label();
                    warn!(%peer, client_id = connect.client_id, reason, suppressed, "device login refused after a reload");
                }
                let _ = send(client, &mqtt::connack_refusal(level, Refusal::BadCredentials)).await;
                return None;
            }
        };
        Some(Login {
            grant,
            level,
            client_id: connect.client_id.to_owned(),
            v5: connect.v5,
            clean_start: connect.clean,
            place,
            max_payload: self.live.max_payload(),
            body: body.to_vec(),
        })
    }

    /// The session plan for a logged-in device, and the CONNECT the broker gets. Only once
    /// the client id is claimed: an older connection with it decides, when it ends, whether
    /// the broker keeps a session (an empty client id never has one).
    pub(super) fn forwarded_connect(&self, login: &Login) -> Option<(SessionPlan, Vec<u8>)> {
        let id = &login.client_id;
        let kept = !id.is_empty() && self.settings.clients.has_session(id);
        let plan = SessionPlan::new(login.level, login.clean_start, login.v5.session_expiry, kept);
        // Parsed once already (in `login`): this cannot fail.
        let mut connect = mqtt::connect(&login.body).ok()?;
        connect.clean = plan.clean;
        Some((plan, mqtt::rewrite_connect(&login.body, &connect, &self.settings.token)))
    }
}

impl Gate {
    /// After a relay: whether the broker keeps the session (a connection that was not
    /// clean), and for MQTT 5 a session whose expiry is 0 discarded [MQTT-3.1.2-23] (not on
    /// a takeover: the newer connection decides).
    pub(super) async fn session_ended(&self, login: &Login, plan: SessionPlan, expiry: Option<u32>, taken_over: bool) {
        let client_id = login.client_id.as_str();
        if client_id.is_empty() {
            return;
        }
        let expiry = expiry.unwrap_or(login.v5.session_expiry);
        let discard = login.level == 5 && !plan.clean && expiry == 0 && !taken_over;
        let discarded = discard && self.discard_session(client_id).await;
        let kept = !plan.clean && !discarded;
        self.settings.clients.session_kept(client_id, kept);
    }

    /// Ends the session the broker keeps for `client_id`: a clean CONNECT, then DISCONNECT,
    /// and the broker's close awaited (relay.rs, rule 1). True when it was done.
    pub(super) async fn discard_session(&self, client_id: &str) -> bool {
        let connect = v5::clean_connect(self.settings.level, client_id, &self.settings.token);
        let done = async {
            let mut broker = TcpStream::connect(self.settings.broker).await.ok()?;
            broker.write_all(&connect).await.ok()?;
            let mut buf = Vec::with_capacity(16);
            let frame = read_frame(&mut broker, &mut buf, 1024).await.ok()?;
            if frame.kind != 2 || buf.get(frame.body + 1) != Some(&0) {
                return None;
            }
            broker.write_all(&[mqtt::DISCONNECT << 4, 0]).await.ok()?;
            relay::drain(broker).await.then_some(())
        };
        tokio::time::timeout(self.settings.connect_timeout, done).await.ok().flatten().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::SessionPlan;

    #[test]
    fn mqtt5_session_wishes_map_onto_one_clean_flag() {
        let plan = |clean, discard_first| SessionPlan { clean, discard_first };
        // MQTT 3.1.1: the flag as sent.
        assert_eq!(SessionPlan::new(4, true, 0, true), plan(true, false));
        assert_eq!(SessionPlan::new(4, false, 0, false), plan(false, false));
        // MQTT 5, expiry 0: nothing to keep; resume only a session that is there.
        assert_eq!(SessionPlan::new(5, true, 0, true), plan(true, false));
        assert_eq!(SessionPlan::new(5, false, 0, false), plan(true, false));
        assert_eq!(SessionPlan::new(5, false, 0, true), plan(false, false));
        // Expiry > 0: keep it; Clean Start discards an existing one first.
        assert_eq!(SessionPlan::new(5, true, 60, true), plan(false, true));
        assert_eq!(SessionPlan::new(5, true, 60, false), plan(false, false));
        assert_eq!(SessionPlan::new(5, false, 60, true), plan(false, false));
    }
}
