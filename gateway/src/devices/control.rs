//! The device side while it runs: what its gates share and a reload changes ([`Live`]), and
//! the handle a reload applies a new `[devices]` through ([`Control`]; docs/architecture.md,
//! "Live reload").
//!
//! Live with the embedded broker: the users (`[devices.auth]`: `users`, `users_file`,
//! `allow_anonymous`) and so each device's rights, which follow from its identity;
//! `max_connections` and `max_payload` up to what the broker was started with; the device
//! TLS certificate, key and client CA (new handshakes use them). A revoked login's open
//! connections are closed ([`super::places`]); nothing else closes a connection. Everything
//! else is read at start and reported by [`Control::needs_restart`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use blake2::{Blake2b512, Digest};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use super::auth::{AuthFailure, Authenticator, Identity, UsersChange};
use super::places::{Places, Revoked};
use crate::config::{Access, ByteSize, DeviceTls, DevicesConfig, DevicesMode, Unrouted};

/// What the gates of one embedded broker share and a reload changes.
pub struct Live {
    /// Who may connect.
    pub auth: Arc<Authenticator>,
    /// `max_connections`, and who holds them.
    pub places: Arc<Places>,
    max_payload: AtomicUsize,
    tls: RwLock<Option<TlsAcceptor>>,
}

impl Live {
    /// The state a broker starts with.
    pub fn new(
        access: Access,
        max_connections: usize,
        max_payload: usize,
        tls: Option<Arc<ServerConfig>>,
    ) -> Arc<Live> {
        Arc::new(Live {
            auth: Authenticator::new(access),
            places: Places::new(max_connections),
            max_payload: AtomicUsize::new(max_payload),
            tls: RwLock::new(tls.map(TlsAcceptor::from)),
        })
    }

    /// The largest packet body a device connecting now may send (`devices.max_payload`).
    pub fn max_payload(&self) -> usize {
        self.max_payload.load(Ordering::Relaxed)
    }

    /// TLS for a connection accepted now.
    pub fn acceptor(&self) -> Option<TlsAcceptor> {
        self.tls.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// The device side's reload handle (cheap to clone).
#[derive(Clone)]
pub struct Control(Arc<Inner>);

struct Inner {
    embedded: Option<Started>,
    running: Mutex<Running>,
}

/// `[devices]` as it runs: the config at start with the live keys of each reload.
struct Running {
    devices: DevicesConfig,
    /// Of the device TLS files' contents in use: a certificate renewed in place is seen.
    tls_digest: Option<[u8; 64]>,
}

/// What the embedded broker was started with, and its gates' live state.
struct Started {
    live: Arc<Live>,
    /// rumqttd's own packet limit: `max_payload` above it needs a restart.
    max_payload: ByteSize,
    /// rumqttd's router was sized for this many: `max_connections` above it needs a restart.
    max_connections: usize,
}

impl Control {
    /// The handle of a device side started with `devices`; `live` for the embedded broker.
    pub fn new(devices: &DevicesConfig, live: Option<Arc<Live>>) -> Control {
        let (embedded, tls_digest) = match (&devices.mode, live) {
            (DevicesMode::Embedded { max_connections, tls, .. }, Some(live)) => {
                let started = Started { live, max_payload: devices.max_payload, max_connections: *max_connections };
                (Some(started), tls.as_ref().and_then(|tls| tls_digest(tls).ok()))
            }
            _ => (None, None),
        };
        let running = Running { devices: devices.clone(), tls_digest };
        Control(Arc::new(Inner { embedded, running: Mutex::new(running) }))
    }

    /// Applies what can change live of a new, validated `[devices]`, and returns one line
    /// per change; keys that need a restart are left as they run ([`Control::needs_restart`]
    /// names them). Err only when something could not be applied (a TLS file that cannot be
    /// loaded now): then nothing changed. Call it on every reload: a users file or a
    /// certificate renewed under the same name is a change too.
    pub fn apply(&self, new: &DevicesConfig) -> Result<Vec<String>, String> {
        let mut guard = self.0.running.lock().unwrap_or_else(PoisonError::into_inner);
        let Running { devices: running, tls_digest: running_digest } = &mut *guard;
        let Some(started) = &self.0.embedded else { return Ok(Vec::new()) };
        let live = &started.live;
        let (
            DevicesMode::Embedded { max_connections: old_max, access: old_access, tls: old_tls, .. },
            DevicesMode::Embedded { max_connections, access, tls, .. },
        ) = (&running.mode, &new.mode)
        else {
            return Ok(Vec::new());
        };
        // TLS first: the only step that can fail.
        let tls_swap = match (old_tls, tls) {
            (Some(old), Some(files)) => {
                let digest = tls_digest(files)?;
                if old != files || *running_digest != Some(digest) {
                    let config = super::gate::server_config(files).map_err(|(key, e)| format!("devices.{key}: {e}"))?;
                    Some((TlsAcceptor::from(config), digest))
                } else {
                    None
                }
            }
            _ => None,
        };
        let mut lines = Vec::new();
        let (old_max, old_access) = (*old_max, old_access.clone());
        if new.max_payload != running.max_payload && new.max_payload <= started.max_payload {
            live.max_payload.store(new.max_payload.bytes() as usize, Ordering::Relaxed);
            lines.push(format!(
                "devices.max_payload: {} -> {} (connections made from now on; open ones keep the limit they \
                 connected with)",
                running.max_payload, new.max_payload
            ));
            running.max_payload = new.max_payload;
        }
        let mut new_max = old_max;
        if *max_connections != old_max && *max_connections <= started.max_connections {
            new_max = *max_connections;
            live.places.set_max(new_max);
            let held = live.places.held();
            let mut line = format!("devices.max_connections: {old_max} -> {new_max}");
            if held > new_max {
                line += &format!(
                    " ({held} connected now: none is closed; new connections are refused until fewer than {new_max})"
                );
            }
            lines.push(line);
        }
        if *access != old_access {
            let (change, revoked) = live.places.revise(&live.auth, || live.auth.replace(access));
            lines.extend(users_lines(&change, &revoked));
            // The same warnings as at start (devices/embedded.rs).
            match access {
                Access::Users(users) if users.is_empty() => lines.push(
                    "devices.auth: no users are listed and allow_anonymous is not set: every device connection is \
                     refused from now on"
                        .into(),
                ),
                Access::Anonymous => lines.push(
                    "devices.auth.allow_anonymous = true: any client that reaches the device port may connect and \
                     publish on any topic"
                        .into(),
                ),
                Access::Users(_) => {}
            }
        }
        if let Some((acceptor, digest)) = tls_swap {
            *live.tls.write().unwrap_or_else(PoisonError::into_inner) = Some(acceptor);
            *running_digest = Some(digest);
            lines.push(
                "devices TLS: certificate, key and client CA re-read (new handshakes use them; open connections \
                 stay)"
                    .into(),
            );
        }
        if let DevicesMode::Embedded { max_connections, access: running_access, tls: running_tls, .. } =
            &mut running.mode
        {
            *max_connections = new_max;
            *running_access = access.clone();
            if running_tls.is_some() && tls.is_some() {
                running_tls.clone_from(tls);
            }
        }
        Ok(lines)
    }

    /// The keys of a new `[devices]` that differ from the running ones and cannot change
    /// live, one line each ("devices.listen: A -> B needs a restart"). Pure: changes nothing.
    pub fn needs_restart(&self, new: &DevicesConfig) -> Vec<String> {
        let running = self.0.running.lock().unwrap_or_else(PoisonError::into_inner);
        let caps = self.0.embedded.as_ref().map(|s| (s.max_payload, s.max_connections));
        needs_restart(&running.devices, new, caps)
    }
}

/// Most user names a line lists.
const NAMES_SHOWN: usize = 10;

fn names(list: &[String]) -> String {
    let mut shown = list.iter().take(NAMES_SHOWN).map(String::as_str).collect::<Vec<_>>().join(", ");
    if list.len() > NAMES_SHOWN {
        shown += &format!(" and {} more", list.len() - NAMES_SHOWN);
    }
    shown
}

fn connections(n: usize) -> String {
    match n {
        1 => "1 open connection".into(),
        n => format!("{n} open connections"),
    }
}

/// The lines of a users change and the connections it revoked.
fn users_lines(change: &UsersChange, revoked: &[Revoked]) -> Vec<String> {
    let mut lines = Vec::new();
    let anonymous = revoked.iter().filter(|r| r.identity == Identity::Anonymous).count();
    if let Some(on) = change.anonymous {
        let mut line = format!("devices.auth.allow_anonymous: {} -> {on}", !on);
        if !on {
            line += &format!(": {} closed", connections(anonymous).replace("open", "anonymous"));
        }
        lines.push(line);
    }
    let mut parts = Vec::new();
    for (count, what, list) in [
        (change.added.len(), "added", &change.added),
        (change.removed.len(), "removed", &change.removed),
        (change.changed.len(), "with a new password", &change.changed),
    ] {
        if count > 0 {
            parts.push(format!("{count} {what} ({})", names(list)));
        }
    }
    if !parts.is_empty() {
        let mut line = format!("device users: {}", parts.join(", "));
        let named: Vec<&Revoked> = revoked.iter().filter(|r| r.identity != Identity::Anonymous).collect();
        if !named.is_empty() {
            let gone = named.iter().filter(|r| r.why == AuthFailure::UnknownUser).count();
            let rotated = named.len() - gone;
            let mut closed = Vec::new();
            if gone > 0 {
                closed.push(format!("{} of removed users", connections(gone)));
            }
            if rotated > 0 {
                closed.push(format!("{} logged in with a replaced password", connections(rotated)));
            }
            line += &format!(": {} closed", closed.join(", "));
        }
        lines.push(line);
    }
    lines
}

/// [`Control::needs_restart`] for a running `[devices]`; `caps` = the embedded broker's
/// (max_payload, max_connections) at start.
fn needs_restart(running: &DevicesConfig, new: &DevicesConfig, caps: Option<(ByteSize, usize)>) -> Vec<String> {
    let mut lines = Vec::new();
    fn differs(lines: &mut Vec<String>, key: &str, from: String, to: String) {
        if from != to {
            lines.push(format!("{key}: {from} -> {to} needs a restart"));
        }
    }
    let addr = |a: &Option<SocketAddr>| a.map_or("none".to_owned(), |a| a.to_string());
    match (&running.mode, &new.mode, caps) {
        (
            DevicesMode::Embedded { listen, listen_v5, broker_memory, tls, .. },
            DevicesMode::Embedded {
                listen: new_listen,
                listen_v5: new_v5,
                broker_memory: new_memory,
                tls: new_tls,
                max_connections,
                ..
            },
            Some((max_payload, most)),
        ) => {
            differs(&mut lines, "devices.listen", listen.to_string(), new_listen.to_string());
            differs(&mut lines, "devices.listen_v5", addr(listen_v5), addr(new_v5));
            differs(&mut lines, "devices.broker_memory", broker_memory.to_string(), new_memory.to_string());
            let on = |tls: &Option<DeviceTls>| if tls.is_some() { "TLS" } else { "no TLS" }.to_owned();
            differs(&mut lines, "devices.tls_cert_file", on(tls), on(new_tls));
            if *max_connections > most {
                lines.push(format!(
                    "devices.max_connections: {max_connections} needs a restart: the embedded broker was started \
                     for {most} (up to that applies live)"
                ));
            }
            if new.max_payload > max_payload {
                lines.push(format!(
                    "devices.max_payload: {} needs a restart: the embedded broker was started with {max_payload} \
                     (up to that applies live)",
                    new.max_payload
                ));
            }
        }
        (
            DevicesMode::External { url, client_id, security },
            DevicesMode::External { url: new_url, client_id: new_id, security: new_security },
            _,
        ) => {
            differs(&mut lines, "devices.url", url.to_string(), new_url.to_string());
            differs(&mut lines, "devices.client_id", client_id.clone(), new_id.clone());
            // Debug never shows a password: a changed password alone is not seen here.
            if format!("{security:?}") != format!("{new_security:?}") {
                lines.push("devices: the external broker's TLS or credentials changed: needs a restart".into());
            }
            differs(&mut lines, "devices.max_payload", running.max_payload.to_string(), new.max_payload.to_string());
        }
        (old, new_mode, _) => differs(&mut lines, "devices.mode", mode_name(old).into(), mode_name(new_mode).into()),
    }
    let unrouted = |u: Unrouted| match u {
        Unrouted::Count => "count".to_owned(),
        Unrouted::DeadLetter => "dead_letter".to_owned(),
    };
    differs(&mut lines, "devices.unrouted", unrouted(running.unrouted), unrouted(new.unrouted));
    lines
}

fn mode_name(mode: &DevicesMode) -> &'static str {
    match mode {
        DevicesMode::Embedded { .. } => "embedded",
        DevicesMode::External { .. } => "external",
    }
}

/// A digest of the device TLS files' contents.
fn tls_digest(tls: &DeviceTls) -> Result<[u8; 64], String> {
    let mut hasher = Blake2b512::new();
    let files = [("tls_cert_file", Some(&tls.cert_file)), ("tls_key_file", Some(&tls.key_file))];
    for (key, path) in files.into_iter().chain([("tls_client_ca_file", tls.client_ca_file.as_ref())]) {
        let Some(path) = path else { continue };
        let bytes = std::fs::read(path).map_err(|e| format!("devices.{key}: cannot read {path}: {e}"))?;
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    Ok(hasher.finalize().into())
}

#[cfg(test)]
#[path = "control_tests.rs"]
mod tests;
