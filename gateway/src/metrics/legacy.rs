//! Read-only views of stage metrics under the names `http.rs`, `read_api.rs` and `admin.rs`
//! read before the per-stage split (`m.link_up.get()`, `m.routes[i].depth.get()`). A view
//! holds its stage's metrics and picks one field, so it always shows the live value.
//! Delete this file once those callers read the stage fields (`m.forward.link_up`, ...) or
//! the store's handle.

use std::sync::Arc;

use crate::forward::metrics::ForwardMetrics;
use crate::meter::{Counter, Gauge};
use crate::store::metrics::StoreMetrics;

/// A live, read-only view of one metric of a stage's metrics `S`.
pub struct View<S, T> {
    section: Arc<S>,
    index: usize,
    pick: fn(&S, usize) -> &T,
}

impl<S, T> View<S, T> {
    /// The metric `pick(section, index)` (`index`: a route, for per-route metrics).
    pub(super) fn new(section: &Arc<S>, index: usize, pick: fn(&S, usize) -> &T) -> View<S, T> {
        View { section: section.clone(), index, pick }
    }
}

impl<S, T> std::ops::Deref for View<S, T> {
    type Target = T;
    fn deref(&self) -> &T {
        (self.pick)(&self.section, self.index)
    }
}

impl<S, T: std::fmt::Debug> std::fmt::Debug for View<S, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

/// One route's figures under their former names.
#[derive(Debug)]
pub struct RouteView {
    /// Route name.
    pub name: String,
    /// Events waiting in the store.
    pub depth: View<StoreMetrics, Gauge>,
    /// Payload bytes waiting in the store.
    pub bytes: View<StoreMetrics, Gauge>,
    /// Receive time (ms since epoch) of the oldest waiting event; 0 when empty.
    pub oldest_ms: View<StoreMetrics, Gauge>,
    /// Events the cloud acknowledged.
    pub forwarded: View<ForwardMetrics, Counter>,
    /// Batches the cloud acknowledged.
    pub batches: View<ForwardMetrics, Counter>,
}

impl RouteView {
    pub(super) fn new(
        names: &[String],
        i: usize,
        store: &Arc<StoreMetrics>,
        forward: &Arc<ForwardMetrics>,
    ) -> RouteView {
        RouteView {
            name: names[i].clone(),
            depth: View::new(store, i, |m, i| &m.routes[i].depth),
            bytes: View::new(store, i, |m, i| &m.routes[i].bytes),
            oldest_ms: View::new(store, i, |m, i| &m.routes[i].oldest_ms),
            forwarded: View::new(forward, i, |m, i| &m.routes[i].forwarded),
            batches: View::new(forward, i, |m, i| &m.routes[i].batches),
        }
    }
}
