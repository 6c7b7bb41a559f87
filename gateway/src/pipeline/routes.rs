//! [`RouteControl`]: what a reload calls to change the routes and the cloud credentials of
//! a running gateway (docs/architecture.md, "Live reload"), without a restart and without
//! touching a device connection.
//!
//! Routes live in *slots* (`store::RouteIndex`), stable for the life of the process and
//! keyed by route name: the routes configured at start take slots 0.., a new name appends
//! a slot, a changed route keeps its slot, a removed one keeps its slot but is inactive.
//! Every stage holds the same slots, so an event ingested under the old route set and
//! committed after the change is still stored under the route that took it. The order of
//! one reload makes sure nothing is lost:
//!
//! 1. the journal: a slot for each new name (its `routes` row, made by the writer, so the
//!    one-writer rule holds) and the new `max_age` of each changed route;
//! 2. the forwarder: new and changed slots (it may send them from now on);
//! 3. ingest: the whole new route set at once, between two publishes; the reload waits
//!    until ingest follows it;
//! 4. the forwarder, then the journal: removed slots (nothing more is sent; their rows stay,
//!    and no longer expire, until a route of that name is configured again).

use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, Mutex};

use crate::config::{CloudConfig, LinkSecurity, RouteConfig, Unrouted};
use crate::forward::{ForwardMeters, RouteSlot};
use crate::ingest::RouteUpdate;
use crate::store::{RouteSpec, StoreHandle};

/// How long a reload waits for ingest to take the new routes (it takes them before its
/// next publish, or at its next tick, `pipeline::TICK`, when idle).
const INGEST_TAKES_ROUTES: Duration = Duration::from_secs(10);

/// Changes routes and cloud credentials of the running stages. Built in `app`'s start
/// from what the stages are given ([`Wiring`]); reloads are applied one at a time.
pub struct RouteControl {
    store: StoreHandle,
    forwarder: mpsc::UnboundedSender<RouteSlot>,
    ingest: std_mpsc::Sender<RouteUpdate>,
    security: watch::Sender<LinkSecurity>,
    /// The forwarder's metrics: a new route's series appear with the route, not when the
    /// forwarder (perhaps busy connecting) takes it.
    forward_metrics: ForwardMeters,
    /// The slots as the last reload left them (index = slot).
    slots: Mutex<Vec<Slot>>,
}

/// One route slot: the route's last settings, and whether it is configured.
#[derive(Clone)]
struct Slot {
    route: RouteConfig,
    active: bool,
}

/// The ends the stages are started with: ingest's ([`crate::ingest::Ingest::with_updates`]),
/// the forwarder's (`forward::Setup::changes` and `forward::Setup::security`), and the
/// downlink's cloud credentials.
pub struct Wiring {
    /// For ingest.
    pub ingest: std_mpsc::Receiver<RouteUpdate>,
    /// For the forwarder: route slots.
    pub forwarder: mpsc::UnboundedReceiver<RouteSlot>,
    /// For every cloud connection: the credentials to use at its next connect.
    pub security: watch::Receiver<LinkSecurity>,
}

impl RouteControl {
    /// A control for the stages started with `routes` (slot = position) and `cloud`, with
    /// the ends to give them; `forward_metrics` are the forwarder's.
    pub fn new(
        store: StoreHandle,
        routes: &[RouteConfig],
        cloud: &CloudConfig,
        forward_metrics: ForwardMeters,
    ) -> (RouteControl, Wiring) {
        let (forwarder, forwarder_rx) = mpsc::unbounded_channel();
        let (ingest, ingest_rx) = std_mpsc::channel();
        let (security, security_rx) = watch::channel(cloud.security.clone());
        let slots = routes.iter().map(|route| Slot { route: route.clone(), active: true }).collect();
        let control = RouteControl { store, forwarder, ingest, security, forward_metrics, slots: Mutex::new(slots) };
        (control, Wiring { ingest: ingest_rx, forwarder: forwarder_rx, security: security_rx })
    }

    /// Makes `routes` (validated) the running route set, and `unrouted` what happens to a
    /// publish no route takes. One line per change (`route "x" added`, `route "y" removed:
    /// ...`, `route "z" changed: to, batch`); Err names the step that failed, and the
    /// stages are left on a consistent route set (the old one, but for journal slots made
    /// for new names, which stay unused until configured).
    pub async fn apply_routes(&self, routes: &[RouteConfig], unrouted: Unrouted) -> Result<Vec<String>, String> {
        let mut slots = self.slots.lock().await;
        let mut next = slots.clone();
        let mut lines = Vec::new();
        // 1. The journal: slots for new names, max_age of the others.
        let ready = match self.journal_slots(routes, &mut next, &mut lines).await {
            Ok(ready) => ready,
            Err(err) => {
                self.undo_journal(&next, &slots).await;
                *slots = inactive_news(&next, &slots);
                return Err(err);
            }
        };
        let removed: Vec<usize> = (0..next.len())
            .filter(|&slot| next[slot].active && !routes.iter().any(|r| r.name == next[slot].route.name))
            .collect();
        for &slot in &removed {
            next[slot].active = false;
        }
        // 2. The forwarder: new and changed slots.
        for change in ready {
            self.forward_metrics.forward.add_route(change.slot, &change.route.name);
            self.forwarder.send(change).map_err(|_| "the forwarder has stopped; restart the gateway".to_owned())?;
        }
        // 3. Ingest: the whole set, and wait until it follows it.
        if let Err(err) = self.hand_to_ingest(&next, unrouted, &mut lines).await {
            *slots = inactive_news(&next, &slots);
            return Err(err);
        }
        // 4. Removed slots: the forwarder stops sending them, the journal keeps their rows.
        for &slot in &removed {
            let route = next[slot].route.clone();
            let name = route.name.clone();
            let spec = RouteSpec { name: name.clone(), max_age: route.max_age };
            let _ = self.forwarder.send(RouteSlot { slot, route, active: false, last_batch: 0 });
            let kept = match self.store.route_slot(spec, false).await {
                Ok(state) => state.depth,
                Err(_) => self.store.committed().depth(slot),
            };
            lines.push(format!(
                "route {name:?} removed: {kept} events kept in the journal until a route named {name:?} is configured again"
            ));
        }
        *slots = next;
        Ok(lines)
    }

    /// Step 1: the journal's slot of every route in `routes` (made for a new name), set
    /// active in `next`; a line per added or changed route; what the forwarder is to take.
    async fn journal_slots(
        &self,
        routes: &[RouteConfig],
        next: &mut Vec<Slot>,
        lines: &mut Vec<String>,
    ) -> Result<Vec<RouteSlot>, String> {
        let mut ready = Vec::new();
        for route in routes {
            let known = next.iter().position(|s| s.route.name == route.name);
            let spec = RouteSpec { name: route.name.clone(), max_age: route.max_age };
            let state = self.store.route_slot(spec, true).await.map_err(|err| {
                format!("journal: cannot keep route {:?}: {err}; the routes did not change", route.name)
            })?;
            let name = &route.name;
            let line = match known {
                Some(slot) if slot == state.slot => match (next[slot].active, changed_keys(&next[slot].route, route)) {
                    (false, _) if state.depth > 0 => {
                        format!(
                            "route {name:?} added: its {} events kept in the journal are forwarded again",
                            state.depth
                        )
                    }
                    (false, _) => format!("route {name:?} added"),
                    (true, keys) if keys.is_empty() => continue,
                    (true, keys) => format!("route {name:?} changed: {}", keys.join(", ")),
                },
                None if state.slot == next.len() => {
                    next.push(Slot { route: route.clone(), active: false });
                    match state.depth {
                        0 => format!("route {name:?} added"),
                        kept => format!("route {name:?} added: its {kept} events kept in the journal are forwarded"),
                    }
                }
                _ => {
                    return Err(format!(
                        "internal: the journal gave route {name:?} slot {}, not the one expected; the routes did not \
                         change",
                        state.slot
                    ))
                }
            };
            lines.push(line);
            next[state.slot] = Slot { route: route.clone(), active: true };
            let last_batch = state.last_batch;
            ready.push(RouteSlot { slot: state.slot, route: route.clone(), active: true, last_batch });
        }
        Ok(ready)
    }

    /// Step 3: hands ingest the route set of `next` and waits until it follows it. A busy
    /// ingest is not an error: it takes the set before its next publish (a line says so).
    async fn hand_to_ingest(&self, next: &[Slot], unrouted: Unrouted, lines: &mut Vec<String>) -> Result<(), String> {
        let (applied, taken) = oneshot::channel();
        let update = RouteUpdate {
            routes: next.iter().map(|s| s.active.then(|| s.route.clone())).collect(),
            keep_unrouted: unrouted == Unrouted::DeadLetter,
            applied,
        };
        if self.ingest.send(update).is_err() {
            return Err("device ingest has stopped: the routes did not change for it; restart the gateway".into());
        }
        match tokio::time::timeout(INGEST_TAKES_ROUTES, taken).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err("device ingest stopped before it took the new routes; restart the gateway".into()),
            Err(_) => {
                lines.push(format!(
                    "device ingest was busy for {INGEST_TAKES_ROUTES:?}: it follows the new routes from its next \
                     publish (events it takes until then for a removed route are kept in the journal)"
                ));
                Ok(())
            }
        }
    }

    /// Gives every cloud connection (the forwarder's, the downlink's) `cloud`'s user name,
    /// password and TLS files (CA, client certificate and key) for its next connect; the
    /// connections up keep theirs. Every other `[cloud]` key, TLS ones included (`alpn`,
    /// `server_name`, `insecure_skip_verify`), keeps its running value: it needs a restart.
    pub fn apply_cloud(&self, cloud: &CloudConfig) -> Vec<String> {
        let changed = self.security.send_if_modified(|current| {
            let mut next = current.clone();
            next.username.clone_from(&cloud.security.username);
            next.password.clone_from(&cloud.security.password);
            if let (Some(tls), Some(new)) = (next.tls.as_mut(), cloud.security.tls.as_ref()) {
                tls.ca_file.clone_from(&new.ca_file);
                tls.client.clone_from(&new.client);
            }
            let differs = next != *current;
            *current = next;
            differs
        });
        if changed {
            vec!["cloud credentials: used from the next connection".to_owned()]
        } else {
            Vec::new()
        }
    }

    /// After a failed journal step: the journal's slots go back to `before` (its `max_age`
    /// and active flags); slots it made for new names stay, inactive.
    async fn undo_journal(&self, next: &[Slot], before: &[Slot]) {
        for slot in inactive_news(next, before) {
            let spec = RouteSpec { name: slot.route.name.clone(), max_age: slot.route.max_age };
            let _ = self.store.route_slot(spec, slot.active).await;
        }
    }
}

/// `before`, plus the slots `next` added (known to the journal, inactive).
fn inactive_news(next: &[Slot], before: &[Slot]) -> Vec<Slot> {
    let mut slots = before.to_vec();
    slots.extend(next[before.len()..].iter().map(|s| Slot { route: s.route.clone(), active: false }));
    slots
}

/// The keys of a route that differ between `old` and `new`, in config order.
fn changed_keys(old: &RouteConfig, new: &RouteConfig) -> Vec<&'static str> {
    let checks = [
        ("from", old.from != new.from),
        ("to", old.to != new.to),
        ("input", old.input != new.input),
        ("batch", old.batch != new.batch),
        ("filters", old.filter != new.filter),
        ("priority", old.priority != new.priority),
        ("max_age", old.max_age != new.max_age),
        ("format", old.encoding.format != new.encoding.format),
        ("compress", old.encoding.compress != new.encoding.compress),
    ];
    checks.into_iter().filter(|(_, differs)| *differs).map(|(key, _)| key).collect()
}

#[cfg(test)]
#[path = "routes_tests.rs"]
mod tests;
