//! The devices view: `GET /api/devices` and `GET /api/devices/{id}`, answered from the read
//! model of [`crate::store::read_model`], so it works with the cloud down.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::{unavailable, wire, Shared, Status};
use crate::store::read_model;

/// The devices routes (the caller adds the token layer).
pub(super) fn routes() -> Router<Arc<Status>> {
    Router::new().route("/api/devices", get(list)).route("/api/devices/:id", get(show))
}

/// Every device (id, last seen, last boot/seq, events, connected, reading count), by id;
/// with `?readings=true` each also carries its latest readings; `?limit=N`: the first N.
async fn list(State(status): Shared, Query(query): Query<wire::DevicesQuery>) -> Response {
    let limit = query.limit.unwrap_or(usize::MAX);
    match status.store.devices(read_model::Query::List { readings: query.readings, limit }).await {
        Ok(devices) if query.readings => Json(devices).into_response(),
        Ok(devices) => Json(devices.into_iter().map(|d| d.summary).collect::<Vec<_>>()).into_response(),
        Err(err) => unavailable(err),
    }
}

/// One device with its latest readings; 404 when unknown.
async fn show(State(status): Shared, Path(id): Path<String>) -> Response {
    match status.store.devices(read_model::Query::One(id.clone())).await {
        Ok(mut found) => match found.pop() {
            Some(device) => Json(device).into_response(),
            None => (StatusCode::NOT_FOUND, format!("no device {id:?} is known\n")).into_response(),
        },
        Err(err) => unavailable(err),
    }
}
