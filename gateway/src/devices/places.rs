//! The places of `devices.max_connections`, and who holds them.
//!
//! A device connection takes a place once its CONNECT is accepted (gate.rs, step 3) and
//! holds it until its relay ends; every listener of the broker shares the same places. Each
//! place remembers the [`Grant`] its login was given, so that a reload that replaces the
//! users table can close the connections the new table would not admit
//! (docs/architecture.md, "Live reload").
//!
//! Invariants:
//! - No connection holds a place the current table does not admit, once a revision has
//!   returned: [`Places::revise`] replaces the table and revokes under the same lock that
//!   [`Places::take`] checks a grant under, so a login verified against the old table
//!   either is revoked by the revision or finds the new table when it takes its place.
//! - Lowering the limit closes no connection: new ones are refused until fewer are held.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use super::auth::{AuthFailure, Authenticator, Grant, Identity};

/// The places of one embedded broker (all its listeners).
#[derive(Debug)]
pub struct Places {
    max: AtomicUsize,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    next: u64,
    by_id: HashMap<u64, Holder>,
}

#[derive(Debug)]
struct Holder {
    grant: Grant,
    /// Taken when the place is revoked.
    revoke: Option<oneshot::Sender<AuthFailure>>,
}

/// Why no place was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max_connections` places are held.
    Full,
    /// The table changed since the login was checked and no longer admits it.
    Stale(AuthFailure),
}

/// A connection revoked by a revision: who it was and why the new table refuses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// The connection's identity.
    pub identity: Identity,
    /// Why the new table refuses it.
    pub why: AuthFailure,
}

/// Why a revoked connection was closed, for its log line.
pub fn revocation_detail(why: AuthFailure) -> &'static str {
    match why {
        AuthFailure::UnknownUser => "its user was removed from [devices.auth] by a reload",
        AuthFailure::BadPassword => "its user's password hash was changed by a reload",
        AuthFailure::Anonymous => "anonymous access was turned off by a reload",
        AuthFailure::ClientIdMismatch => "a reload no longer admits it",
    }
}

impl Places {
    /// `max` places, none held.
    pub fn new(max: usize) -> Arc<Places> {
        Arc::new(Places { max: AtomicUsize::new(max), held: Mutex::new(Held::default()) })
    }

    /// The limit now.
    pub fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    /// Sets the limit; returns the old one. Held places stay held.
    pub fn set_max(&self, max: usize) -> usize {
        let _held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        self.max.swap(max, Ordering::Relaxed)
    }

    /// Places held now.
    pub fn held(&self) -> usize {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).by_id.len()
    }

    /// A place for a connection granted `grant`, if one is free and `auth` still admits it.
    pub fn take(self: &Arc<Self>, grant: Grant, auth: &Authenticator) -> Result<Place, Refused> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        auth.validate(&grant).map_err(Refused::Stale)?;
        if held.by_id.len() >= self.max() {
            return Err(Refused::Full);
        }
        let id = held.next;
        held.next += 1;
        let (revoke, revoked) = oneshot::channel();
        held.by_id.insert(id, Holder { grant, revoke: Some(revoke) });
        Ok(Place { places: self.clone(), id, revoked })
    }

    /// Runs `change` (a new users table for `auth`) with no place taken meanwhile, then
    /// revokes every held place the table no longer admits. Returns what `change` returned
    /// and the connections revoked (each closes on its own, soon after).
    pub fn revise<T>(&self, auth: &Authenticator, change: impl FnOnce() -> T) -> (T, Vec<Revoked>) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let changed = change();
        let mut revoked = Vec::new();
        for holder in held.by_id.values_mut() {
            let Err(why) = auth.validate(&holder.grant) else { continue };
            if let Some(revoke) = holder.revoke.take() {
                let _ = revoke.send(why);
                revoked.push(Revoked { identity: holder.grant.identity.clone(), why });
            }
        }
        (changed, revoked)
    }
}

/// A held place; given back when dropped.
#[derive(Debug)]
pub struct Place {
    places: Arc<Places>,
    id: u64,
    revoked: oneshot::Receiver<AuthFailure>,
}

impl Place {
    /// Resolves when a reload revoked this connection's grant, with why.
    pub async fn revoked(&mut self) -> AuthFailure {
        match (&mut self.revoked).await {
            Ok(why) => why,
            // The sender lives as long as the place: never reached.
            Err(_) => std::future::pending().await,
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.places.held.lock().unwrap_or_else(PoisonError::into_inner).by_id.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Access, Users};
    use crate::devices::auth::hash_password;

    fn access(names: &[(&str, &str)]) -> Access {
        let mut users = Users::new();
        for (name, hash) in names {
            users.add(name, hash).unwrap();
        }
        Access::Users(users)
    }

    #[tokio::test]
    async fn a_revision_revokes_the_places_the_new_table_refuses_and_only_those() {
        let (h1, h2) = (hash_password("a").unwrap(), hash_password("b").unwrap());
        let auth = Authenticator::new(access(&[("d1", &h1), ("d2", &h2)]));
        let places = Places::new(10);
        let mut p1 = places.take(Grant::device("d1", &h1), &auth).unwrap();
        let mut p2 = places.take(Grant::device("d2", &h2), &auth).unwrap();
        let (change, revoked) = places.revise(&auth, || auth.replace(&access(&[("d1", &h1)])));
        assert_eq!(change.removed, vec!["d2".to_string()]);
        let d2 = Identity::Device("d2".into());
        assert_eq!(revoked, vec![Revoked { identity: d2, why: AuthFailure::UnknownUser }]);
        assert_eq!(p2.revoked().await, AuthFailure::UnknownUser);
        let still = tokio::time::timeout(std::time::Duration::from_millis(50), p1.revoked()).await;
        assert!(still.is_err(), "d1 is still admitted");
        assert_eq!(places.held(), 2, "a revoked place is held until its connection ends");
        drop(p2);
        assert_eq!(places.held(), 1);
        // A later revision does not revoke it again; a changed hash does revoke d1.
        let (_, revoked) = places.revise(&auth, || auth.replace(&access(&[("d1", &h2)])));
        assert_eq!(revoked.len(), 1);
        assert_eq!(p1.revoked().await, AuthFailure::BadPassword);
    }

    #[tokio::test]
    async fn a_login_checked_against_the_old_table_cannot_take_a_place() {
        let h1 = hash_password("a").unwrap();
        let auth = Authenticator::new(access(&[("d1", &h1)]));
        let places = Places::new(10);
        let checked = Grant::device("d1", &h1);
        places.revise(&auth, || auth.replace(&access(&[])));
        assert_eq!(places.take(checked, &auth).unwrap_err(), Refused::Stale(AuthFailure::UnknownUser));
        places.revise(&auth, || auth.replace(&Access::Anonymous));
        let anonymous = places.take(Grant::anonymous(), &auth).unwrap();
        let (_, revoked) = places.revise(&auth, || auth.replace(&access(&[("d1", &h1)])));
        assert_eq!(revoked[0].why, AuthFailure::Anonymous);
        drop(anonymous);
        assert_eq!(places.take(Grant::anonymous(), &auth).unwrap_err(), Refused::Stale(AuthFailure::Anonymous));
    }

    #[test]
    fn a_lower_limit_refuses_new_places_until_enough_are_given_back() {
        let auth = Authenticator::new(Access::Anonymous);
        let places = Places::new(3);
        let mut held: Vec<Place> = (0..3).map(|_| places.take(Grant::anonymous(), &auth).unwrap()).collect();
        assert_eq!(places.take(Grant::anonymous(), &auth).unwrap_err(), Refused::Full);
        assert_eq!(places.set_max(1), 3);
        assert_eq!(places.held(), 3, "no connection is closed");
        held.pop();
        held.pop();
        assert_eq!(places.take(Grant::anonymous(), &auth).unwrap_err(), Refused::Full, "1 held, limit 1");
        held.pop();
        held.push(places.take(Grant::anonymous(), &auth).unwrap());
        places.set_max(2);
        held.push(places.take(Grant::anonymous(), &auth).unwrap());
        assert_eq!(places.take(Grant::anonymous(), &auth).unwrap_err(), Refused::Full);
    }
}
