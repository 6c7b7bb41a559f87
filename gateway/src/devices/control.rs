//! The device side while it runs: what its gates share and a reload changes ([`Live`]), and
//! the handle a reload applies a new `[devices]` through ([`Control`]; docs/architecture.md,
//! "Live reload").
//!
//! Live with the embedded broker: the users (`[devices.auth]`: `users`, `users_file`,
//! `allow_anonymous`) and so each device's rights, which follow from its identity;
//! `max_connections` and `max_payload` up to what the broker was started with; the device
//! TLS certificate, key and client CA (new handshakes use them). A revoked login's open
//! connections are closed ([`super::places`]); nothing else closes a connection. Every
//! other key of `[devices]` is read at start: a reload names it as needing a restart.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use blake2::{Blake2b512, Digest};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use super::auth::{AuthFailure, Authenticator, Identity, UsersChange};
use super::places::{Places, Revoked};
use crate::config::{Access, ByteSize, DeviceTls, DevicesConfig, DevicesMode};

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

/// The device side's reload handle (cheap to clone). A reload calls one apply function per
/// group of keys that changed (`app.rs` registers them as reload parts); each answers one
/// line per change, or Err when it cannot apply the new values live, and then changes
/// nothing (the keys keep needing a restart, and the reload names them).
#[derive(Clone)]
pub struct Control(Arc<Option<Embedded>>);

/// The embedded broker's side: what it was started with, its gates' live state, and the
/// live keys as they run.
struct Embedded {
    live: Arc<Live>,
    /// rumqttd's own packet limit: `max_payload` above it needs a restart.
    max_payload: ByteSize,
    /// rumqttd's router was sized for this many: `max_connections` above it needs a restart.
    max_connections: usize,
    running: Mutex<Running>,
}

/// The live keys as they run.
struct Running {
    max_payload: ByteSize,
    max_connections: usize,
    access: Access,
    tls: Option<DeviceTls>,
    /// Of the TLS files' contents in use: a certificate renewed in place is seen.
    tls_digest: Option<[u8; 64]>,
}

/// The parts of a new `[devices]` that can change live.
struct Wanted<'a> {
    max_payload: ByteSize,
    max_connections: usize,
    access: &'a Access,
    tls: &'a Option<DeviceTls>,
}

impl Control {
    /// The handle of a device side started with `devices`; `live` for the embedded broker.
    pub fn new(devices: &DevicesConfig, live: Option<Arc<Live>>) -> Control {
        let embedded = match (&devices.mode, live) {
            (DevicesMode::Embedded { max_connections, access, tls, .. }, Some(live)) => Some(Embedded {
                live,
                max_payload: devices.max_payload,
                max_connections: *max_connections,
                running: Mutex::new(Running {
                    max_payload: devices.max_payload,
                    max_connections: *max_connections,
                    access: access.clone(),
                    tls: tls.clone(),
                    tls_digest: tls.as_ref().and_then(|tls| tls_digest(tls).ok()),
                }),
            }),
            _ => None,
        };
        Control(Arc::new(embedded))
    }

    /// The embedded side, its running keys and what `new` wants; Err when the device side
    /// is not the embedded broker, before or after.
    fn embedded<'a>(
        &'a self,
        new: &'a DevicesConfig,
    ) -> Result<(&'a Embedded, std::sync::MutexGuard<'a, Running>, Wanted<'a>), String> {
        let Some(embedded) = self.0.as_ref() else {
            return Err("the device side runs in external mode: [devices] changes need a restart".into());
        };
        let DevicesMode::Embedded { max_connections, access, tls, .. } = &new.mode else {
            return Err("devices.mode changed: needs a restart".into());
        };
        let running = embedded.running.lock().unwrap_or_else(PoisonError::into_inner);
        let wanted = Wanted { max_payload: new.max_payload, max_connections: *max_connections, access, tls };
        Ok((embedded, running, wanted))
    }

    /// `[devices.auth]` (`users`, `users_file`, `allow_anonymous`): the new table at once;
    /// the open connections it no longer admits are closed ([`super::places`]).
    pub fn apply_users(&self, new: &DevicesConfig) -> Result<Vec<String>, String> {
        let (embedded, mut running, wanted) = self.embedded(new)?;
        if *wanted.access == running.access {
            return Ok(Vec::new());
        }
        let live = &embedded.live;
        let (change, revoked) = live.places.revise(&live.auth, || live.auth.replace(wanted.access));
        running.access = wanted.access.clone();
        let mut lines = users_lines(&change, &revoked);
        // The same warnings as at start (devices/embedded.rs).
        match wanted.access {
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
        Ok(lines)
    }

    /// `max_connections` and `max_payload`, each up to the value the broker was started
    /// with; Err (nothing changed) when one is above it.
    pub fn apply_limits(&self, new: &DevicesConfig) -> Result<Vec<String>, String> {
        let (embedded, mut running, wanted) = self.embedded(new)?;
        let mut over = Vec::new();
        if wanted.max_connections > embedded.max_connections {
            over.push(format!(
                "devices.max_connections = {} needs a restart: the embedded broker was started for {} (up to that \
                 applies live)",
                wanted.max_connections, embedded.max_connections
            ));
        }
        if wanted.max_payload > embedded.max_payload {
            over.push(format!(
                "devices.max_payload = {} needs a restart: the embedded broker was started with {} (up to that \
                 applies live)",
                wanted.max_payload, embedded.max_payload
            ));
        }
        if !over.is_empty() {
            return Err(over.join("; "));
        }
        let live = &embedded.live;
        let mut lines = Vec::new();
        if wanted.max_payload != running.max_payload {
            live.max_payload.store(wanted.max_payload.bytes() as usize, Ordering::Relaxed);
            lines.push(format!(
                "devices.max_payload: {} -> {} (connections made from now on; open ones keep the limit they \
                 connected with)",
                running.max_payload, wanted.max_payload
            ));
            running.max_payload = wanted.max_payload;
        }
        if wanted.max_connections != running.max_connections {
            let (old, new_max) = (running.max_connections, wanted.max_connections);
            live.places.set_max(new_max);
            let held = live.places.held();
            let mut line = format!("devices.max_connections: {old} -> {new_max}");
            if held > new_max {
                line += &format!(
                    " ({held} connected now: none is closed; new connections are refused until fewer than {new_max})"
                );
            }
            lines.push(line);
            running.max_connections = new_max;
        }
        Ok(lines)
    }

    /// `tls_cert_file`, `tls_key_file`, `tls_client_ca_file`: read again, and used for the
    /// handshakes after this when their contents changed. Err (nothing changed) when a
    /// file cannot be loaded, or TLS would be turned on or off (a restart).
    pub fn apply_tls(&self, new: &DevicesConfig) -> Result<Vec<String>, String> {
        let (embedded, mut running, wanted) = self.embedded(new)?;
        let files = match (&running.tls, wanted.tls) {
            (Some(_), Some(files)) => files,
            (None, None) => return Ok(Vec::new()),
            (None, Some(_)) => return Err("devices.tls_cert_file: turning TLS on needs a restart".into()),
            (Some(_), None) => return Err("devices.tls_cert_file: turning TLS off needs a restart".into()),
        };
        let digest = tls_digest(files)?;
        if running.tls.as_ref() == Some(files) && running.tls_digest == Some(digest) {
            return Ok(Vec::new());
        }
        let config = super::gate::server_config(files).map_err(|(key, e)| format!("devices.{key}: {e}"))?;
        *embedded.live.tls.write().unwrap_or_else(PoisonError::into_inner) = Some(TlsAcceptor::from(config));
        running.tls = Some(files.clone());
        running.tls_digest = Some(digest);
        Ok(vec!["devices TLS: certificate, key and client CA re-read (new handshakes use them; open connections \
                 stay)"
            .into()])
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
