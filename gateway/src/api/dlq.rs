//! Dead letters over HTTP: `GET /api/dlq?after=ID&limit=N` (oldest first),
//! `GET /api/dlq/{id}` (404 when unknown), `POST /api/dlq/replay` and `POST /api/dlq/purge`
//! (body: [`wire::Selection`]).
//!
//! A replay hands each row to the device side's ingest, which runs the pipeline on it
//! again and deletes the dead letter once its outcome is committed; the answer says how
//! many were handed over, not how many became events.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::{unavailable, wire, Shared, Status};
use crate::pipeline::Replay;
use crate::store::dead_letters;
use crate::store::now_ms;

/// The dead-letter routes (the caller adds the token layer).
pub(super) fn routes() -> Router<Arc<Status>> {
    Router::new()
        .route("/api/dlq", get(list))
        .route("/api/dlq/:id", get(show))
        .route("/api/dlq/replay", post(replay))
        .route("/api/dlq/purge", post(purge))
}

async fn list(State(status): Shared, Query(page): Query<wire::DlqPage>) -> Response {
    let query =
        dead_letters::Query::Page { after: page.after.unwrap_or(0), limit: page.limit.unwrap_or(100).min(10_000) };
    match status.store.dead_letters(query).await {
        Ok(rows) => Json(rows).into_response(),
        Err(err) => unavailable(err),
    }
}

async fn show(State(status): Shared, Path(id): Path<i64>) -> Response {
    match status.store.dead_letters(dead_letters::Query::One(id)).await {
        Ok(mut rows) => match rows.pop() {
            Some(row) => Json(row).into_response(),
            None => (StatusCode::NOT_FOUND, format!("no dead letter {id}\n")).into_response(),
        },
        Err(err) => unavailable(err),
    }
}

async fn replay(State(status): Shared, Json(selection): Json<wire::Selection>) -> Response {
    let mut rows = Vec::new();
    if selection.all {
        let mut after = 0;
        loop {
            match status.store.dead_letters(dead_letters::Query::Page { after, limit: 1000 }).await {
                Ok(page) if page.is_empty() => break,
                Ok(page) => {
                    after = page.last().map_or(after, |r| r.id);
                    rows.extend(page);
                }
                Err(err) => return unavailable(err),
            }
        }
    } else {
        for id in &selection.ids {
            match status.store.dead_letters(dead_letters::Query::One(*id)).await {
                Ok(found) => rows.extend(found),
                Err(err) => return unavailable(err),
            }
        }
    }
    let queued = rows.len() as u64;
    for row in rows {
        if status.replay.send(Replay { id: row.id, topic: row.topic, payload: row.payload }).is_err() {
            return unavailable("the device side has stopped");
        }
    }
    Json(wire::DlqReplayed { queued }).into_response()
}

async fn purge(State(status): Shared, Json(selection): Json<wire::Selection>) -> Response {
    match status.store.purge_dead_letters(selection.purge(now_ms())).await {
        Ok(deleted) => Json(wire::Purged { deleted }).into_response(),
        Err(err) => unavailable(err),
    }
}
