//! Route slots changed by a reload (docs/architecture.md, "Live reload"). A slot is the
//! route's index in the journal's handle (`store::RouteIndex`), stable for the life of the
//! process: a new route appends one, a changed route takes its new settings for its next
//! batch (batches in flight keep theirs, their acks delete the same rows), a removed route
//! keeps its slot but sends nothing more, and one configured again resumes from its oldest
//! kept row.

use tokio::time::Instant;

use super::{ForwardMeters, RouteState};
use crate::config::RouteConfig;
use crate::store::Queues;

/// A route slot as a reload leaves it.
#[derive(Debug, Clone)]
pub struct RouteSlot {
    /// The slot (the journal gave it first: `store::StoreHandle::route_slot`).
    pub slot: usize,
    /// The route's settings (the last ones, for a removed route).
    pub route: RouteConfig,
    /// False: removed, nothing more is sent; its rows stay in the journal.
    pub active: bool,
    /// The last batch number the cloud acknowledged (for a slot new to the forwarder).
    pub last_batch: u64,
}

/// Applies `change` to `routes`. With `committed` (a connection is up) a slot that becomes
/// active looks at its queue at once: what it already holds (rows kept from before a
/// removal or an earlier run) goes out without waiting for `max_delay`. Without, the next
/// connection reads every slot's queue anyway.
pub(super) fn apply(
    routes: &mut Vec<RouteState>,
    change: RouteSlot,
    committed: Option<&Queues>,
    metrics: &ForwardMeters,
) {
    let RouteSlot { slot, route, active, last_batch } = change;
    metrics.forward.add_route(slot, &route.name);
    while routes.len() <= slot {
        // Slots arrive in order; a gap (none expected) stays an inactive placeholder.
        routes.push(RouteState {
            config: route.clone(),
            active: false,
            cursor: 0,
            ahead: 0,
            seen: 0,
            waiting_since: None,
            next_batch: last_batch + 1,
            credit: 0,
        });
    }
    let state = &mut routes[slot];
    let resumed = active && !state.active;
    state.config = route;
    state.active = active;
    if let (true, Some(queues)) = (resumed, committed) {
        // Counter first, then depth (store/handle.rs, `Queues`).
        state.seen = queues.count(slot);
        state.ahead = queues.depth(slot);
        state.waiting_since = (state.ahead > 0).then(|| Instant::now() - state.config.batch.max_delay);
    }
}
