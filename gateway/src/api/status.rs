//! How the gateway is doing: `/` (the status page), `/healthz` (the process and its stages
//! run), `/readyz` (journal open and devices side listening), `/api/status` (JSON,
//! [`wire::Status`]) and `/metrics` (Prometheus text, rendered by [`crate::metrics`]).
//!
//! `/healthz` and `/` are open (a liveness probe and a page without data); the rest sit
//! behind the token. A cloud outage or a full disk is degraded operation, reported in the
//! body, never a failed readiness probe.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::{wire, Shared, Status};
use crate::devices::auth::AuthFailure;
use crate::meter::DropReason;
use crate::store::now_ms;

/// Routes anyone may call: the page and the liveness probe.
pub(super) fn open() -> Router<Arc<Status>> {
    Router::new().route("/", get(status_page)).route("/healthz", get(healthz))
}

/// Routes behind the token.
pub(super) fn protected() -> Router<Arc<Status>> {
    Router::new().route("/metrics", get(metrics)).route("/readyz", get(readyz)).route("/api/status", get(api_status))
}

async fn metrics(State(status): Shared) -> Response {
    let body = status.metrics.render(now_ms().max(0) as u64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn healthz(State(status): Shared) -> Response {
    if status.healthy.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "a pipeline stage has stopped; see the log\n").into_response()
    }
}

async fn readyz(State(status): Shared) -> Response {
    let link = if status.metrics.forward.link_up.get() == 1 { "up" } else { "down (buffering)" };
    // A full disk is reported, not a failure: the gateway still serves and applies its
    // policy (like a cloud outage, it is degraded operation, not unreadiness).
    let journal = status.metrics.store.problem().map(|p| format!("; journal: {p}")).unwrap_or_default();
    if status.ready.load(Ordering::Relaxed) && status.healthy.load(Ordering::Relaxed) {
        (StatusCode::OK, format!("ready; cloud link {link}{journal}\n")).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready; cloud link {link}{journal}\n")).into_response()
    }
}

async fn api_status(State(status): Shared) -> Json<serde_json::Value> {
    let m = &status.metrics;
    let now = now_ms().max(0) as u64;
    let body = wire::Status {
        gateway: status.gateway_id.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_seconds: status.started.elapsed().as_secs(),
        ready: status.ready.load(Ordering::Relaxed),
        cloud_link_up: m.forward.link_up.get() == 1,
        cloud_link_since_ms: Some(m.forward.link_changed_ms.get()).filter(|ms| *ms > 0),
        cloud_reconnects: m.forward.reconnects.get(),
        last_error: m.last_error.get().map(|(at_ms, message)| wire::LastError { at_ms, message }),
        events_received: m.ingest.received.get(),
        events_committed: m.store.committed.get(),
        events_in_per_second: m.rate_in.get(),
        events_out_per_second: m.rate_out.get(),
        dead_letters: m.store.dead_letters.get(),
        devices_connected: m.devices.connected.get(),
        device_auth_failures: AuthFailure::ALL.iter().map(|f| m.devices.auth_failures[*f as usize].get()).sum(),
        store_bytes: m.store.bytes.get(),
        store_error: m.store.problem().map(str::to_owned),
        dropped: DropReason::ALL.iter().map(|r| (r.label().to_owned(), m.dropped(*r))).collect(),
        routes: m
            .store
            .routes
            .iter()
            .zip(&m.forward.routes)
            .map(|(queue, sent)| wire::RouteStatus {
                name: queue.name.clone(),
                queue_depth: queue.depth.get(),
                queue_bytes: queue.bytes.get(),
                oldest_age_seconds: match queue.oldest_ms.get() {
                    0 => 0,
                    oldest => now.saturating_sub(oldest) / 1000,
                },
                forwarded: sent.forwarded.get(),
                batches: sent.batches.get(),
            })
            .collect(),
        last_reload: status.reload.as_ref().and_then(|r| r.reloader.last()),
    };
    // Through a `Value`: its keys come out sorted, as this endpoint has always sent them.
    Json(serde_json::to_value(body).unwrap_or_default())
}

/// `GET /`: the live status page, one self-contained HTML file that polls `/api/status`.
async fn status_page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], include_str!("status.html")).into_response()
}
