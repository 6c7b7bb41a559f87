//! Routes changed by a reload (docs/architecture.md, "Live reload"): ingest takes a new
//! route set between two publishes, on its own thread, and says when it has, so the reload
//! knows from when on events follow it. Routes are held by slot (`store::RouteIndex`): a
//! new route takes the next slot, a removed one keeps its slot, matched by nothing.

use tokio::sync::oneshot;

use super::Ingest;
use crate::config::RouteConfig;
use crate::filters::RouteFilter;

/// A new route set for ingest.
pub struct RouteUpdate {
    /// By slot: the route now configured there, or None (removed, or never used).
    pub routes: Vec<Option<RouteConfig>>,
    /// Keep publishes no route takes as dead letters (`devices.unrouted`).
    pub keep_unrouted: bool,
    /// Told once ingest follows the new set: every publish processed after it does.
    pub applied: oneshot::Sender<()>,
}

impl Ingest {
    /// Takes route sets from reloads, from `updates`, before each publish and each tick.
    pub fn with_updates(mut self, updates: std::sync::mpsc::Receiver<RouteUpdate>) -> Ingest {
        self.updates = Some(updates);
        self
    }

    /// The name of the route in `slot` ("" when none: never asked for a removed slot).
    pub(super) fn route_name(&self, slot: usize) -> String {
        self.routes.get(slot).and_then(Option::as_ref).map(|r| r.name.clone()).unwrap_or_default()
    }

    /// Applies the route sets waiting (one atomic load when there are none).
    pub(super) fn take_updates(&mut self) {
        loop {
            let next = match &self.updates {
                Some(updates) => updates.try_recv().ok(),
                None => None,
            };
            let Some(update) = next else { return };
            self.set_routes(update);
        }
    }

    /// Follows `update`. A slot whose filter rules changed keeps its per-device state
    /// ([`RouteFilter::set_rules`]); a removed slot forgets its held events.
    fn set_routes(&mut self, update: RouteUpdate) {
        let RouteUpdate { routes, keep_unrouted, applied } = update;
        for (slot, route) in routes.iter().enumerate() {
            match (route, self.filters.get_mut(slot)) {
                (Some(route), Some(filter)) => {
                    let unchanged =
                        self.routes.get(slot).and_then(Option::as_ref).is_some_and(|old| old.filter == route.filter);
                    if !unchanged {
                        filter.set_rules(route.filter.clone());
                    }
                }
                (Some(route), None) => self.filters.push(RouteFilter::new(route.filter.clone())),
                (None, Some(filter)) => filter.drop_held(),
                (None, None) => self.filters.push(RouteFilter::default()),
            }
            if let Some(route) = route {
                self.metrics.ingest.add_route(slot, &route.name);
            }
        }
        self.routes = routes;
        self.keep_unrouted = keep_unrouted;
        let _ = applied.send(());
    }
}
