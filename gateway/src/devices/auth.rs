//! Who may connect to the embedded broker: device users with argon2 password hashes (PHC
//! strings), or anonymous access when the config says so. The config checks the names and
//! hashes ([`crate::config::Access`]); the [`Authenticator`] builds its table from them at start.
//!
//! Invariants:
//! - A device's identity is its user name, and its MQTT client id must equal it: the
//!   identity the topic rights ([`super::gate`]) are checked against is always known.
//! - Passwords are never stored, logged or printed: only their argon2 hashes (from the
//!   config) and, in the cache, keyed BLAKE2b digests under a key that lives in this process.
//! - Argon2 is slow by design. At most one verification runs at a time, on a blocking
//!   thread, so a storm of reconnects or wrong passwords uses at most one core; a device
//!   that reconnects with a password already verified is answered from the cache.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use blake2::{Blake2b512, Digest};

use crate::config::Access;

/// Most digests kept per cache (verified, refused) before it starts over.
const CACHE_MAX: usize = 4096;

/// A new argon2id PHC string for `password` (random salt, the crate's default parameters:
/// 19 MiB, 2 passes, 1 lane, as OWASP recommends).
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// Why a connection was refused. The label values are part of the metrics contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No user name, and anonymous access is off.
    Anonymous,
    /// The user name is not listed.
    UnknownUser,
    /// Wrong (or no) password.
    BadPassword,
    /// The client id is not the user name.
    ClientIdMismatch,
}

impl AuthFailure {
    /// Every failure, in label order (index = `failure as usize`).
    pub const ALL: [AuthFailure; 4] =
        [AuthFailure::Anonymous, AuthFailure::UnknownUser, AuthFailure::BadPassword, AuthFailure::ClientIdMismatch];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            AuthFailure::Anonymous => "anonymous",
            AuthFailure::UnknownUser => "unknown_user",
            AuthFailure::BadPassword => "bad_password",
            AuthFailure::ClientIdMismatch => "client_id_mismatch",
        }
    }
}

/// Who a connection is, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Anonymous access: anything goes.
    Anonymous,
    /// This device (user name = client id = device id).
    Device(String),
}

/// Checks CONNECT credentials, with a cache and one argon2 verification at a time.
pub struct Authenticator {
    /// User name -> PHC hash, built from the config's [`Access`] at start; None = anonymous.
    users: Option<HashMap<String, String>>,
    key: [u8; 32],
    verified: Mutex<HashSet<[u8; 64]>>,
    refused: Mutex<HashSet<[u8; 64]>>,
    one_at_a_time: tokio::sync::Semaphore,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let users = self.users.as_ref().map(|users| users.keys().collect::<std::collections::BTreeSet<_>>());
        f.debug_struct("Authenticator").field("users", &users).finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator for `access`, with its own lookup table of the users.
    pub fn new(access: Access) -> Arc<Authenticator> {
        let users = match &access {
            Access::Anonymous => None,
            Access::Users(users) => Some(users.iter().map(|(name, hash)| (name.to_owned(), hash.to_owned())).collect()),
        };
        Arc::new(Authenticator {
            users,
            key: rand::random(),
            verified: Mutex::new(HashSet::new()),
            refused: Mutex::new(HashSet::new()),
            one_at_a_time: tokio::sync::Semaphore::new(1),
        })
    }

    /// True when identities are checked (named users).
    pub fn checks_identity(&self) -> bool {
        self.users.is_some()
    }

    fn digest(&self, user: &str, password: &[u8]) -> [u8; 64] {
        let mut hasher = Blake2b512::new();
        hasher.update(self.key);
        hasher.update((user.len() as u64).to_le_bytes());
        hasher.update(user.as_bytes());
        hasher.update(password);
        hasher.finalize().into()
    }

    /// Decides on a CONNECT's credentials.
    pub async fn check(
        &self,
        client_id: &str,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) -> Result<Identity, AuthFailure> {
        let Some(users) = &self.users else { return Ok(Identity::Anonymous) };
        let Some(user) = username else { return Err(AuthFailure::Anonymous) };
        let Some(hash) = users.get(user) else { return Err(AuthFailure::UnknownUser) };
        if client_id != user {
            return Err(AuthFailure::ClientIdMismatch);
        }
        let Some(password) = password else { return Err(AuthFailure::BadPassword) };
        let digest = self.digest(user, password);
        let known = |set: &Mutex<HashSet<[u8; 64]>>| set.lock().is_ok_and(|s| s.contains(&digest));
        if known(&self.verified) {
            return Ok(Identity::Device(user.to_owned()));
        }
        if known(&self.refused) {
            return Err(AuthFailure::BadPassword);
        }
        let ok = {
            let _turn = self.one_at_a_time.acquire().await.map_err(|_| AuthFailure::BadPassword)?;
            // A connection that queued behind the same password is answered by the cache.
            if known(&self.verified) {
                return Ok(Identity::Device(user.to_owned()));
            }
            let hash = hash.clone();
            let password = password.to_vec();
            tokio::task::spawn_blocking(move || verify(&hash, &password)).await.unwrap_or(false)
        };
        let set = if ok { &self.verified } else { &self.refused };
        if let Ok(mut set) = set.lock() {
            if set.len() >= CACHE_MAX {
                set.clear();
            }
            set.insert(digest);
        }
        if ok {
            Ok(Identity::Device(user.to_owned()))
        } else {
            Err(AuthFailure::BadPassword)
        }
    }
}

/// Verifies `password` against a PHC string (argon2, constant time in the password).
pub fn verify(hash: &str, password: &[u8]) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| Argon2::default().verify_password(password, &parsed).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Users;

    fn users(pairs: &[(&str, &str)]) -> Users {
        let mut users = Users::new();
        for (name, password) in pairs {
            users.add(name, &hash_password(password).unwrap()).unwrap();
        }
        users
    }

    #[tokio::test]
    async fn right_password_wrong_password_unknown_user_and_client_id() {
        let auth = Authenticator::new(Access::Users(users(&[("sensor-1", "s3cret-pass")])));
        let ok = auth.check("sensor-1", Some("sensor-1"), Some(b"s3cret-pass")).await;
        assert_eq!(ok, Ok(Identity::Device("sensor-1".into())));
        // Cached: same answer.
        assert!(auth.check("sensor-1", Some("sensor-1"), Some(b"s3cret-pass")).await.is_ok());
        assert_eq!(auth.check("sensor-1", Some("sensor-1"), Some(b"wrong")).await, Err(AuthFailure::BadPassword));
        assert_eq!(auth.check("sensor-1", Some("sensor-1"), Some(b"wrong")).await, Err(AuthFailure::BadPassword));
        assert_eq!(auth.check("sensor-1", Some("sensor-1"), None).await, Err(AuthFailure::BadPassword));
        assert_eq!(auth.check("x", Some("x"), Some(b"s3cret-pass")).await, Err(AuthFailure::UnknownUser));
        assert_eq!(
            auth.check("other", Some("sensor-1"), Some(b"s3cret-pass")).await,
            Err(AuthFailure::ClientIdMismatch)
        );
        assert_eq!(auth.check("sensor-1", None, None).await, Err(AuthFailure::Anonymous));
    }

    #[tokio::test]
    async fn anonymous_access_lets_anyone_in() {
        let auth = Authenticator::new(Access::Anonymous);
        assert_eq!(auth.check("c", None, None).await, Ok(Identity::Anonymous));
        assert!(!auth.checks_identity());
    }

    #[test]
    fn hashes_are_checked_and_never_printed() {
        let mut users = Users::new();
        assert!(users.add("d1", "plain").unwrap_err().contains("not a PHC password hash"));
        assert!(users.add("a/b", &hash_password("x").unwrap()).is_err());
        let hash = hash_password("pw").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        users.add("d1", &hash).unwrap();
        assert!(users.add("d1", &hash).unwrap_err().contains("twice"));
        assert_eq!(format!("{users:?}"), "{\"d1\"}");
        assert!(verify(&hash, b"pw") && !verify(&hash, b"pw2"));
    }
}
