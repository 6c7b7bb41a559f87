//! How the device gate ends a relay, so that the embedded broker never removes one
//! connection twice.
//!
//! rumqttd 0.20 numbers connections with slab indices and gives a closed connection's index
//! to the next connection. It removes a connection when the router reads its DISCONNECT
//! (or a takeover or an error of its own), and again when the connection's network task
//! sees the socket close: the second removal names the index only, so when another
//! connection took the index in between, that connection is removed instead, without a
//! word (the `pipeline` test's "Connection closed by peer abruptly after 0/500 acks").
//! The network task sends no removal of its own when the router removed the connection
//! first (it notices that before its socket closes), so the gate keeps to two rules:
//!
//! 1. After a device's DISCONNECT, the gate sends nothing more to the broker and keeps its
//!    socket open until the broker closes it: the router's removal is then the only one.
//! 2. Any other end (the device's socket closed, a refusal, a takeover) half-closes the
//!    broker socket and waits until the broker closes it too: its network task has then
//!    already queued its (single) removal to the router, ahead of any later connect.
//!
//! A takeover (MQTT-3.1.4-2: a new connection with a live connection's client id) is done
//! by the gate ([`Clients`]): the old relay ends by rule 2, and only then does the new one
//! reach the broker, so rumqttd never does a takeover itself (its takeover raced the same
//! way). Waits are bounded ([`CLOSE_TIMEOUT`]); a broker that does not close in time is
//! logged.
//!
//! Invariant: a client id has at most one relay connected to the broker, and a relay holds
//! its [`Clients`] entry until the broker has closed its socket.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{watch, Notify};

/// How long the gate waits for the broker to close a connection that is ending.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The relays by client id, shared by every device listener of one broker, and the client
/// ids whose session the broker keeps after their connection (a connection that was not
/// clean), so that the gate can give MQTT 5 session expiry its meaning (gate.rs, step 5).
#[derive(Default)]
pub struct Clients {
    by_id: Mutex<HashMap<String, Arc<Slot>>>,
    kept: Mutex<HashSet<String>>,
}

/// One relay's place in [`Clients`].
pub struct Slot {
    /// Asks the relay to end (a newer connection took its client id).
    taken_over: Notify,
    /// True once the broker has closed the relay's socket (or it never had one).
    closed: watch::Sender<bool>,
}

impl Slot {
    /// Resolves when a newer connection with the same client id asked this one to end.
    pub async fn taken_over(&self) {
        self.taken_over.notified().await;
    }
}

/// Why waiting for an older connection with the same client id did not end well.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// An even newer connection took the client id meanwhile.
    TakenOver,
    /// The older connection did not close within [`CLOSE_TIMEOUT`].
    Stuck,
}

impl Clients {
    /// Takes `client_id` for a new connection: an older relay with it is asked to end, and
    /// this returns once the broker has closed that one (Ok(true): there was one). Empty
    /// ids (the broker assigns one) are never shared. The slot must be given back with
    /// [`Clients::release`] in every case.
    pub async fn claim(&self, client_id: &str) -> (Arc<Slot>, Result<bool, Claim>) {
        let slot = Arc::new(Slot { taken_over: Notify::new(), closed: watch::Sender::new(false) });
        if client_id.is_empty() {
            return (slot, Ok(false));
        }
        let old = self.by_id.lock().ok().and_then(|mut map| map.insert(client_id.to_owned(), slot.clone()));
        let Some(old) = old else { return (slot, Ok(false)) };
        old.taken_over.notify_one();
        let mut closed = old.closed.subscribe();
        let outcome = tokio::select! {
            done = tokio::time::timeout(CLOSE_TIMEOUT, closed.wait_for(|closed| *closed)) => {
                if done.is_ok() { Ok(true) } else { Err(Claim::Stuck) }
            }
            () = slot.taken_over() => Err(Claim::TakenOver),
        };
        (slot, outcome)
    }

    /// Whether the broker keeps a session for `client_id` (from a connection that was not
    /// clean and whose session the gate did not discard).
    pub fn has_session(&self, client_id: &str) -> bool {
        self.kept.lock().is_ok_and(|kept| kept.contains(client_id))
    }

    /// Notes whether the broker now keeps a session for `client_id`.
    pub fn session_kept(&self, client_id: &str, kept: bool) {
        if let Ok(mut set) = self.kept.lock() {
            if kept {
                set.insert(client_id.to_owned());
            } else {
                set.remove(client_id);
            }
        }
    }

    /// Gives the client id back (unless a newer connection holds it) and tells a newer
    /// connection waiting for it that this relay is closed.
    pub fn release(&self, client_id: &str, slot: &Arc<Slot>) {
        if let Ok(mut map) = self.by_id.lock() {
            if map.get(client_id).is_some_and(|held| Arc::ptr_eq(held, slot)) {
                map.remove(client_id);
            }
        }
        slot.closed.send_replace(true);
    }
}

/// Holds a client id in [`Clients`] until the relay is over (every return path).
pub struct Held<'a>(pub &'a Clients, pub &'a str, pub &'a Arc<Slot>);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.release(self.1, self.2);
    }
}

/// Ends the broker side of a relay: unless the device said DISCONNECT (rule 1), the write
/// side is shut; then `downlink` (which reads the broker's side to its end) runs until the
/// broker closes. None if it did not close within [`CLOSE_TIMEOUT`].
pub async fn close_broker<T>(
    mut broker_write: impl AsyncWrite + Unpin,
    said_disconnect: bool,
    downlink: impl std::future::Future<Output = T>,
) -> Option<T> {
    if !said_disconnect {
        let _ = broker_write.shutdown().await;
    }
    let closed = tokio::time::timeout(CLOSE_TIMEOUT, downlink).await.ok();
    drop(broker_write);
    closed
}

/// Reads a broker socket to its end (the broker closed it), at most [`CLOSE_TIMEOUT`].
pub async fn drain(mut broker: impl AsyncRead + Unpin) -> bool {
    let mut buf = [0u8; 512];
    let to_end = async { while let Ok(1..) = broker.read(&mut buf).await {} };
    tokio::time::timeout(CLOSE_TIMEOUT, to_end).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_connection_waits_until_the_old_one_with_its_client_id_is_closed() {
        let clients = Arc::new(Clients::default());
        let (old, first) = clients.claim("d1").await;
        assert_eq!(first, Ok(false));
        let claim = tokio::spawn({
            let clients = clients.clone();
            async move { clients.claim("d1").await.1 }
        });
        tokio::time::timeout(Duration::from_secs(5), old.taken_over()).await.expect("the old relay is asked to end");
        tokio::task::yield_now().await;
        assert!(!claim.is_finished(), "the new connection waits for the broker to close the old one");
        clients.release("d1", &old);
        assert_eq!(claim.await.unwrap(), Ok(true));
        let held = clients.by_id.lock().unwrap().get("d1").cloned();
        assert!(
            held.is_some_and(|slot| !Arc::ptr_eq(&slot, &old)),
            "the old relay's release leaves the new one's entry"
        );
    }

    #[tokio::test]
    async fn empty_client_ids_never_wait_for_each_other() {
        let clients = Clients::default();
        let (_a, first) = clients.claim("").await;
        let (_b, second) = clients.claim("").await;
        assert_eq!((first, second), (Ok(false), Ok(false)));
    }
}

#[cfg(test)]
#[path = "relay_tests.rs"]
mod gate_tests;
