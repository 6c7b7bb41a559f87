//! Route slots added or changed by a reload (docs/architecture.md, "Live reload"): the
//! writer makes the `routes` row of a new route name (so the one-writer rule holds), gives
//! it the next slot, and publishes its counters before anyone can send it an event.

use super::Writer;
use crate::store::{schema, RouteSpec, SlotState, StoreError};

impl Writer {
    /// The slot of `spec.name`: an existing one takes the new `max_age` and `active` flag;
    /// a name this process has no slot for gets the next one (its `routes` row made when
    /// missing, its counters read from it: rows kept from an earlier run are sent again).
    pub(super) fn route_slot(&mut self, spec: RouteSpec, active: bool) -> Result<SlotState, StoreError> {
        let known =
            self.names.read().unwrap_or_else(std::sync::PoisonError::into_inner).iter().position(|n| *n == spec.name);
        if let Some(slot) = known {
            if let Some(max_age) = self.route_max_age.get_mut(slot) {
                *max_age = spec.max_age;
            }
            if let Some(flag) = self.route_active.get_mut(slot) {
                *flag = active;
            }
            let state = &self.routes[slot];
            return Ok(SlotState { slot, depth: state.depth, last_batch: state.last_batch });
        }
        let slot = self.routes.len();
        if slot >= self.committed.counts.len() {
            return Err(StoreError::Failed(format!(
                "no route slot left for route {:?}: this process has had {slot} route names; restart the gateway",
                spec.name
            )));
        }
        // Autocommit: no transaction is open between two groups.
        let state = schema::route_state(&self.conn, &spec.name)?;
        self.route_index.insert(state.db_id, slot);
        self.route_max_age.push(spec.max_age);
        self.route_active.push(active);
        self.metrics.store.add_route(slot, &spec.name);
        if let Some(m) = self.metrics.store.routes.get(slot) {
            m.depth.set(state.depth);
            m.bytes.set(state.bytes);
        }
        self.committed.set_depth(slot, state.depth);
        let found = SlotState { slot, depth: state.depth, last_batch: state.last_batch };
        self.routes.push(state);
        self.names.write().unwrap_or_else(std::sync::PoisonError::into_inner).push(spec.name);
        Ok(found)
    }
}
