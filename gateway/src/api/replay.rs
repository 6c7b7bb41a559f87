//! `POST /api/replay` ([`wire::ReplayRequest`]): queue the kept forwarded events of a route
//! (`[store].keep_forwarded`) received in `[since_ms, until_ms)` for the cloud again, marked
//! as replays. The forwarder sends them like any queued event.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};

use super::{unavailable, wire, Shared, Status};
use crate::store::now_ms;

/// The replay route (the caller adds the token layer).
pub(super) fn routes() -> Router<Arc<Status>> {
    Router::new().route("/api/replay", post(replay))
}

async fn replay(State(status): Shared, Json(request): Json<wire::ReplayRequest>) -> Response {
    let Some(route) = status.store.route(&request.route) else {
        let known = status.store.route_names().join(", ");
        let body = format!("no route {:?}; configured: {known}\n", request.route);
        return (StatusCode::BAD_REQUEST, body).into_response();
    };
    let until_ms = request.until_ms.unwrap_or_else(now_ms);
    match status.store.replay(route, request.since_ms, until_ms).await {
        Ok(queued) => {
            tracing::info!(route = %request.route, since_ms = request.since_ms, until_ms, queued, "replay queued");
            Json(wire::ReplayQueued { queued, route: request.route }).into_response()
        }
        Err(err) => unavailable(err),
    }
}
