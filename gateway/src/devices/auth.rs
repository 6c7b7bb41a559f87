//! Who may connect to the embedded broker: device users with argon2 password hashes (PHC
//! strings), or anonymous access when the config says so. The config checks the names and
//! hashes ([`crate::config::Access`]); the [`Authenticator`] builds its table from them at
//! start, and a reload replaces it ([`Authenticator::replace`]; docs/architecture.md, "Live
//! reload").
//!
//! Invariants:
//! - A device's identity is its user name, and its MQTT client id must equal it: the
//!   identity the topic rights ([`super::gate`]) are checked against is always known.
//! - Passwords are never stored, logged or printed: only their argon2 hashes (from the
//!   config) and, in the cache, keyed BLAKE2b digests under a key that lives in this process.
//! - Argon2 is slow by design. At most one verification runs at a time, on a blocking
//!   thread, so a storm of reconnects or wrong passwords uses at most one core; a device
//!   that reconnects with a password already verified is answered from the cache.
//! - After a reload, only the new table decides: a cached verification or refusal counts
//!   only under the hash it was made with, and every open connection the new table would
//!   not admit (user removed, hash changed, anonymous access off) is closed
//!   ([`super::places`]).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

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

/// A user's password hash (PHC string) as the table, the caches and the grants share it.
type Hash = Arc<str>;

/// User name -> hash; None = anonymous access.
type Table = Option<HashMap<String, Hash>>;

fn table_of(access: &Access) -> Table {
    match access {
        Access::Anonymous => None,
        Access::Users(users) => Some(users.iter().map(|(name, hash)| (name.to_owned(), Hash::from(hash))).collect()),
    }
}

/// What a login was granted: the identity, and the hash its password was verified against
/// (None for anonymous access). A connection holds it for as long as it is open, and is
/// closed when the table no longer admits it ([`Authenticator::validate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Who the connection is.
    pub identity: Identity,
    hash: Option<Hash>,
}

impl Grant {
    /// A grant under anonymous access.
    pub fn anonymous() -> Grant {
        Grant { identity: Identity::Anonymous, hash: None }
    }

    /// A device's grant for `hash` (tests of the users of grants).
    #[cfg(test)]
    pub(crate) fn device(id: &str, hash: &str) -> Grant {
        Grant { identity: Identity::Device(id.to_owned()), hash: Some(hash.into()) }
    }
}

/// What [`Authenticator::replace`] changed, by user name (sorted).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UsersChange {
    /// Users now listed that were not.
    pub added: Vec<String>,
    /// Users no longer listed.
    pub removed: Vec<String>,
    /// Users whose password hash changed.
    pub changed: Vec<String>,
    /// `Some(new)` when anonymous access was switched on (true) or off (false).
    pub anonymous: Option<bool>,
}

impl UsersChange {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty() && self.anonymous.is_none()
    }
}

/// Checks CONNECT credentials, with a cache and one argon2 verification at a time. The
/// table can be replaced while the gateway runs ([`Authenticator::replace`], on a reload).
///
/// Each cache entry remembers the hash its password was checked against and counts only
/// while that is the user's hash: a verification that raced a replace can never make a
/// replaced password pass, nor a refusal under the old hash refuse the new password.
pub struct Authenticator {
    table: RwLock<Table>,
    key: [u8; 32],
    verified: Mutex<HashMap<[u8; 64], Hash>>,
    refused: Mutex<HashMap<[u8; 64], Hash>>,
    one_at_a_time: tokio::sync::Semaphore,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        let users = table.as_ref().map(|users| users.keys().cloned().collect::<std::collections::BTreeSet<_>>());
        f.debug_struct("Authenticator").field("users", &users).finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator for `access`, with its own lookup table of the users.
    pub fn new(access: Access) -> Arc<Authenticator> {
        Arc::new(Authenticator {
            table: RwLock::new(table_of(&access)),
            key: rand::random(),
            verified: Mutex::new(HashMap::new()),
            refused: Mutex::new(HashMap::new()),
            one_at_a_time: tokio::sync::Semaphore::new(1),
        })
    }

    /// True when identities are checked (named users).
    pub fn checks_identity(&self) -> bool {
        self.table.read().unwrap_or_else(PoisonError::into_inner).is_some()
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
        self.grant(client_id, username, password).await.map(|grant| grant.identity)
    }

    /// Decides on a CONNECT's credentials; a success says against which hash.
    pub async fn grant(
        &self,
        client_id: &str,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) -> Result<Grant, AuthFailure> {
        let hash = {
            let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
            let Some(users) = &*table else { return Ok(Grant::anonymous()) };
            let Some(user) = username else { return Err(AuthFailure::Anonymous) };
            let Some(hash) = users.get(user) else { return Err(AuthFailure::UnknownUser) };
            hash.clone()
        };
        let Some(user) = username else { return Err(AuthFailure::Anonymous) };
        if client_id != user {
            return Err(AuthFailure::ClientIdMismatch);
        }
        let Some(password) = password else { return Err(AuthFailure::BadPassword) };
        let granted = || Grant { identity: Identity::Device(user.to_owned()), hash: Some(hash.clone()) };
        let digest = self.digest(user, password);
        let known =
            |set: &Mutex<HashMap<[u8; 64], Hash>>| set.lock().is_ok_and(|s| s.get(&digest).is_some_and(|h| *h == hash));
        if known(&self.verified) {
            return Ok(granted());
        }
        if known(&self.refused) {
            return Err(AuthFailure::BadPassword);
        }
        let ok = {
            let _turn = self.one_at_a_time.acquire().await.map_err(|_| AuthFailure::BadPassword)?;
            // A connection that queued behind the same password is answered by the cache.
            if known(&self.verified) {
                return Ok(granted());
            }
            verify_on_auth_thread(hash.to_string(), password.to_vec()).await
        };
        let set = if ok { &self.verified } else { &self.refused };
        if let Ok(mut set) = set.lock() {
            if set.len() >= CACHE_MAX {
                set.clear();
            }
            set.insert(digest, hash.clone());
        }
        if ok {
            Ok(granted())
        } else {
            Err(AuthFailure::BadPassword)
        }
    }

    /// Whether the table now admits a connection granted `grant`: anonymous access admits
    /// every connection; named users admit a device whose user is listed with the hash it
    /// was verified against. Err says why not (for the log and the revocation count).
    pub fn validate(&self, grant: &Grant) -> Result<(), AuthFailure> {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        let Some(users) = &*table else { return Ok(()) };
        let (Identity::Device(id), Some(hash)) = (&grant.identity, &grant.hash) else {
            return Err(AuthFailure::Anonymous);
        };
        match users.get(id) {
            None => Err(AuthFailure::UnknownUser),
            Some(current) if current == hash => Ok(()),
            Some(_) => Err(AuthFailure::BadPassword),
        }
    }

    /// Replaces the table with `access` (a reload), and forgets the cached passwords of
    /// users removed or whose hash changed. Returns what changed.
    pub fn replace(&self, access: &Access) -> UsersChange {
        let new = table_of(access);
        let change = {
            let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
            let change = diff(&table, &new);
            *table = new;
            change
        };
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        let current: HashSet<&str> = table.iter().flat_map(|users| users.values().map(|h| &**h)).collect();
        for cache in [&self.verified, &self.refused] {
            if let Ok(mut cache) = cache.lock() {
                cache.retain(|_, hash| current.contains(&**hash));
            }
        }
        change
    }

    /// Cached verifications and refusals (tests).
    #[cfg(test)]
    fn cached(&self) -> (usize, usize) {
        let len = |set: &Mutex<HashMap<[u8; 64], Hash>>| set.lock().map(|s| s.len()).unwrap_or(0);
        (len(&self.verified), len(&self.refused))
    }
}

fn diff(old: &Table, new: &Table) -> UsersChange {
    let empty = HashMap::new();
    let (old_users, new_users) = (old.as_ref().unwrap_or(&empty), new.as_ref().unwrap_or(&empty));
    let mut change =
        UsersChange { anonymous: (old.is_none() != new.is_none()).then_some(new.is_none()), ..UsersChange::default() };
    for (name, hash) in new_users {
        match old_users.get(name) {
            None => change.added.push(name.clone()),
            Some(old_hash) if old_hash != hash => change.changed.push(name.clone()),
            Some(_) => {}
        }
    }
    change.removed = old_users.keys().filter(|name| !new_users.contains_key(*name)).cloned().collect();
    for list in [&mut change.added, &mut change.removed, &mut change.changed] {
        list.sort();
    }
    change
}

/// A password check waiting for the auth thread: the PHC string, the password, the answer.
type Check = (String, Vec<u8>, tokio::sync::oneshot::Sender<bool>);

/// Runs the check on the one `device-auth` thread (started at the first check), with one
/// working memory for argon2 kept there ([`verify_with`]). argon2 needs 19 MiB per check
/// with the default parameters; allocated and freed per check, on the runtime's blocking
/// pool, it left the allocator's arenas holding it and raised glibc's dynamic mmap
/// threshold, so that later large buffers were never returned either: 20 named devices
/// connecting left ~190 MiB of RSS behind (BENCHMARKS.md, "Steady load"). Checks are one at
/// a time anyway ([`Authenticator`]'s `one_at_a_time`).
async fn verify_on_auth_thread(hash: String, password: Vec<u8>) -> bool {
    static CHECKS: std::sync::OnceLock<Option<std::sync::Mutex<std::sync::mpsc::Sender<Check>>>> =
        std::sync::OnceLock::new();
    let checks = CHECKS.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Check>();
        let spawned = std::thread::Builder::new().name("device-auth".into()).spawn(move || {
            let mut memory = Vec::new();
            while let Ok((hash, password, answer)) = rx.recv() {
                let _ = answer.send(verify_with(&hash, &password, &mut memory));
            }
        });
        spawned.ok().map(|_| std::sync::Mutex::new(tx))
    });
    let (answer, answered) = tokio::sync::oneshot::channel();
    let check = (hash, password, answer);
    let unsent = match checks.as_ref().and_then(|tx| tx.lock().ok()) {
        Some(tx) => tx.send(check).err().map(|std::sync::mpsc::SendError(back)| back),
        None => Some(check),
    };
    // No auth thread (it could not be started, or it ended): the blocking pool.
    let Some((hash, password, _)) = unsent else { return answered.await.unwrap_or(false) };
    tokio::task::spawn_blocking(move || verify(&hash, &password)).await.unwrap_or(false)
}

/// [`verify`] with `memory` as argon2's working memory, grown to what the hash's parameters
/// need and kept by the caller for the next check (so it is allocated once, not per check).
pub fn verify_with(hash: &str, password: &[u8], memory: &mut Vec<argon2::Block>) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else { return false };
    let (Ok(algorithm), Ok(params)) =
        (argon2::Algorithm::try_from(parsed.algorithm), argon2::Params::try_from(&parsed))
    else {
        return false;
    };
    let version = match parsed.version.map(argon2::Version::try_from) {
        None => argon2::Version::default(),
        Some(Ok(version)) => version,
        Some(Err(_)) => return false,
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else { return false };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else { return false };
    let blocks = params.block_count();
    if memory.len() < blocks {
        *memory = vec![argon2::Block::default(); blocks];
    }
    let mut out = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt, &mut out, &mut memory[..blocks])
        .is_ok_and(|()| crate::util::ct::constant_time_eq(&out, expected.as_bytes()))
}

/// Verifies `password` against a PHC string (argon2, constant time in the password).
pub fn verify(hash: &str, password: &[u8]) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| Argon2::default().verify_password(password, &parsed).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Users;

    #[test]
    fn a_check_with_kept_memory_agrees_with_verify_and_allocates_once() {
        let hash = hash_password("s3cret").unwrap();
        let mut memory = Vec::new();
        assert!(verify_with(&hash, b"s3cret", &mut memory));
        let (len, at) = (memory.len(), memory.as_ptr());
        assert!(len > 0, "argon2's working memory, kept");
        assert!(!verify_with(&hash, b"wrong", &mut memory));
        assert!(verify(&hash, b"s3cret") && !verify(&hash, b"wrong"));
        assert_eq!((memory.len(), memory.as_ptr()), (len, at), "the same memory, not a new one");
        assert!(!verify_with("not a hash", b"s3cret", &mut memory));
    }

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

    #[tokio::test]
    async fn a_replaced_table_decides_at_once_and_forgets_the_cache_of_removed_and_changed_users() {
        let old = users(&[("d1", "pw-1"), ("d2", "pw-2"), ("d3", "pw-3")]);
        let auth = Authenticator::new(Access::Users(old));
        let g1 = auth.grant("d1", Some("d1"), Some(b"pw-1")).await.unwrap();
        let g2 = auth.grant("d2", Some("d2"), Some(b"pw-2")).await.unwrap();
        let g3 = auth.grant("d3", Some("d3"), Some(b"pw-3")).await.unwrap();
        assert_eq!(auth.grant("d2", Some("d2"), Some(b"new-pw-2")).await, Err(AuthFailure::BadPassword));
        assert_eq!(auth.cached(), (3, 1));
        // d1 stays, d2 gets a new password, d3 goes, d4 comes.
        let mut new = Users::new();
        let d1_hash = auth.table.read().unwrap().as_ref().unwrap()["d1"].to_string();
        new.add("d1", &d1_hash).unwrap();
        new.add("d2", &hash_password("new-pw-2").unwrap()).unwrap();
        new.add("d4", &hash_password("pw-4").unwrap()).unwrap();
        let change = auth.replace(&Access::Users(new));
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            change,
            UsersChange { added: names(&["d4"]), removed: names(&["d3"]), changed: names(&["d2"]), anonymous: None }
        );
        assert_eq!(auth.cached(), (1, 0), "only d1's verification is kept");
        assert_eq!(auth.validate(&g1), Ok(()));
        assert_eq!(auth.validate(&g2), Err(AuthFailure::BadPassword), "verified against the replaced hash");
        assert_eq!(auth.validate(&g3), Err(AuthFailure::UnknownUser));
        assert!(auth.check("d1", Some("d1"), Some(b"pw-1")).await.is_ok());
        assert_eq!(auth.check("d2", Some("d2"), Some(b"pw-2")).await, Err(AuthFailure::BadPassword));
        // Refused under the old hash, right under the new one.
        assert!(auth.check("d2", Some("d2"), Some(b"new-pw-2")).await.is_ok());
        assert_eq!(auth.check("d3", Some("d3"), Some(b"pw-3")).await, Err(AuthFailure::UnknownUser));
        assert!(auth.check("d4", Some("d4"), Some(b"pw-4")).await.is_ok());
    }

    #[tokio::test]
    async fn a_stale_cache_entry_never_passes_a_replaced_password() {
        // A verification that raced a replace left its entry under the old hash: it must not count.
        let auth = Authenticator::new(Access::Users(users(&[("d1", "old")])));
        auth.check("d1", Some("d1"), Some(b"old")).await.unwrap();
        let old_entries: Vec<_> = auth.verified.lock().unwrap().drain().collect();
        auth.replace(&Access::Users(users(&[("d1", "new")])));
        auth.verified.lock().unwrap().extend(old_entries);
        assert_eq!(auth.check("d1", Some("d1"), Some(b"old")).await, Err(AuthFailure::BadPassword));
    }

    #[tokio::test]
    async fn switching_anonymous_access_on_and_off() {
        let auth = Authenticator::new(Access::Anonymous);
        let anonymous = auth.grant("c", None, None).await.unwrap();
        let change = auth.replace(&Access::Users(users(&[("d1", "pw")])));
        assert_eq!(change.anonymous, Some(false));
        assert_eq!(change.added, vec!["d1".to_string()]);
        assert!(auth.checks_identity());
        assert_eq!(auth.validate(&anonymous), Err(AuthFailure::Anonymous), "anonymous connections go");
        assert_eq!(auth.check("c", None, None).await, Err(AuthFailure::Anonymous));
        let device = auth.grant("d1", Some("d1"), Some(b"pw")).await.unwrap();
        let change = auth.replace(&Access::Anonymous);
        assert_eq!((change.anonymous, change.removed), (Some(true), vec!["d1".to_string()]));
        assert_eq!(auth.validate(&device), Ok(()), "anonymous access admits every connection");
        assert_eq!(auth.cached(), (0, 0));
        assert!(auth.replace(&Access::Anonymous).is_empty());
    }
}
