//! Dead letters over HTTP: `GET /api/dlq?after=ID&limit=N` (oldest first),
//! `GET /api/dlq/{id}` (404 when unknown), `POST /api/dlq/replay` and `POST /api/dlq/purge`
//! (body: [`wire::Selection`]).
//!
//! A replay hands each row to the device side's ingest, which runs the pipeline on it
//! again and deletes the dead letter once its outcome is committed; the answer says how
//! many were handed over, not how many became events. A row the rights of its original
//! publish keep out ([`Replay::of`]: a publish the device gate denied) is not handed over;
//! the answer lists it with why, and it stays a dead letter.
//!
//! Invariants: a selection by ids names at most [`MAX_IDS`] ids (400 beyond), and each
//! dead letter is handed over (or purged) once however often its id is repeated. `"all"`
//! has no such bound: it pages through the table on the server, so it works at any size.

use std::collections::BTreeSet;
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

/// Most ids one replay or purge request may name (as many as `GET /api/dlq` returns at
/// most); `"all"` is not bounded.
pub const MAX_IDS: usize = 10_000;

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
        let ids = match distinct_ids(&selection) {
            Ok(ids) => ids,
            Err(refused) => return (StatusCode::BAD_REQUEST, refused).into_response(),
        };
        for id in ids {
            match status.store.dead_letters(dead_letters::Query::One(id)).await {
                Ok(found) => rows.extend(found),
                Err(err) => return unavailable(err),
            }
        }
    }
    let mut answer = wire::DlqReplayed::default();
    for row in rows {
        match Replay::of(row) {
            Ok(replay) => {
                if status.replay.send(replay).is_err() {
                    return unavailable("the device side has stopped");
                }
                answer.queued += 1;
            }
            Err(refused) => answer.refused.push(refused),
        }
    }
    Json(answer).into_response()
}

async fn purge(State(status): Shared, Json(mut selection): Json<wire::Selection>) -> Response {
    match distinct_ids(&selection) {
        Ok(ids) => selection.ids = ids,
        Err(refused) => return (StatusCode::BAD_REQUEST, refused).into_response(),
    }
    match status.store.purge_dead_letters(selection.purge(now_ms())).await {
        Ok(deleted) => Json(wire::Purged { deleted }).into_response(),
        Err(err) => unavailable(err),
    }
}

/// The selection's ids, each once, in ascending order (oldest dead letter first); 400 for
/// more than [`MAX_IDS`].
fn distinct_ids(selection: &wire::Selection) -> Result<Vec<i64>, String> {
    if selection.ids.len() > MAX_IDS {
        return Err(format!(
            "{} ids in one request; at most {MAX_IDS}: send several requests, or \"all\": true\n",
            selection.ids.len()
        ));
    }
    Ok(selection.ids.iter().copied().collect::<BTreeSet<i64>>().into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_ids_are_selected_once_in_ascending_order() {
        let selection = wire::Selection::ids([7, 1, 7, 3, 1].repeat(1000));
        assert_eq!(distinct_ids(&selection).ok(), Some(vec![1, 3, 7]));
    }

    #[test]
    fn more_ids_than_the_bound_are_refused_with_the_bound_named() {
        assert!(distinct_ids(&wire::Selection::ids(vec![1; MAX_IDS])).is_ok());
        let refused = distinct_ids(&wire::Selection::ids(vec![1; MAX_IDS + 1])).unwrap_err();
        assert!(refused.starts_with("10001 ids in one request; at most 10000"), "{refused}");
    }
}
