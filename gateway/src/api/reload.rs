//! `POST /api/reload`: reload the config file now, as `SIGHUP` does, and answer its
//! outcome ([`wire::ReloadOutcome`]; 200 when applied, 422 when the file was refused or a
//! part failed). `POST /api/config/diff` (body: a config file's text): what reloading it
//! would change, key by key, and whether each change is live ([`wire::ConfigPreview`]);
//! nothing is applied. Both sit behind the token.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};

use super::{wire, Shared, Status};
use crate::reload::ReloadResult;

/// The reload routes (the caller adds the token layer).
pub(super) fn routes() -> Router<Arc<Status>> {
    Router::new().route("/api/reload", post(reload)).route("/api/config/diff", post(diff))
}

async fn reload(State(status): Shared) -> Response {
    let Some(handle) = &status.reload else {
        return (StatusCode::SERVICE_UNAVAILABLE, "this gateway cannot reload its config\n").into_response();
    };
    match handle.reload("api").await {
        Some(outcome) => {
            let code =
                if outcome.result == ReloadResult::Applied { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
            (code, Json::<wire::ReloadOutcome>(outcome)).into_response()
        }
        None => (StatusCode::SERVICE_UNAVAILABLE, "the gateway is stopping\n").into_response(),
    }
}

async fn diff(State(status): Shared, text: String) -> Response {
    let Some(handle) = status.reload.clone() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "this gateway cannot reload its config\n").into_response();
    };
    // Validation reads the files the text names: off the async runtime.
    match tokio::task::spawn_blocking(move || handle.reloader.preview(&text)).await {
        Ok(preview) => Json::<wire::ConfigPreview>(preview).into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")).into_response(),
    }
}
