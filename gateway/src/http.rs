//! The local HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (the process and its
//! stages run), `/readyz` (journal open and devices side listening; a cloud outage is
//! reported, not a failure: buffering is normal operation), `/api/status` (JSON), the dead
//! letters under `/api/dlq`, and the read API of [`crate::read_api`] (`/api/devices`,
//! `/api/replay`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::extract::{Path, Query, Request};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::Secret;
use crate::devices::auth::AuthFailure;
use crate::devices::Replay;
use crate::metrics::{DropReason, Metrics};
use crate::store::dead_letters::{self, Purge};
use crate::store::{now_ms, StoreHandle};

/// What the endpoints read.
pub struct Status {
    /// Gateway id.
    pub gateway_id: String,
    /// Shared metrics.
    pub metrics: Arc<Metrics>,
    /// Set once the journal is open and the device side listens.
    pub ready: AtomicBool,
    /// Cleared when a stage has stopped unexpectedly.
    pub healthy: AtomicBool,
    /// Process start.
    pub started: Instant,
    /// The journal (dead letters).
    pub store: StoreHandle,
    /// Where replayed dead letters go (the device side's ingest).
    pub replay: std::sync::mpsc::Sender<Replay>,
    /// `[http].token`.
    pub token: Option<Secret>,
}

/// Refuses a request without the configured bearer token (compared in constant time).
async fn authorize(State(status): State<Arc<Status>>, request: Request, next: Next) -> Response {
    if let Some(token) = &status.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let expected = token.expose().as_bytes();
        let same =
            given.len() == expected.len() && given.bytes().zip(expected).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0;
        if !same {
            let body = "this endpoint wants Authorization: Bearer <[http].token>\n";
            return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response();
        }
    }
    next.run(request).await
}

#[derive(Serialize)]
struct RouteStatus<'a> {
    name: &'a str,
    queue_depth: u64,
    queue_bytes: u64,
    oldest_age_seconds: u64,
    forwarded: u64,
    batches: u64,
}

#[derive(Serialize)]
struct StatusBody<'a> {
    gateway: &'a str,
    version: &'static str,
    uptime_seconds: u64,
    ready: bool,
    cloud_link_up: bool,
    /// When the link last changed state (ms since the epoch), None before the first attempt.
    cloud_link_since_ms: Option<u64>,
    cloud_reconnects: u64,
    /// The last error worth attention: `{ "at_ms": .., "message": .. }`.
    last_error: Option<serde_json::Value>,
    events_received: u64,
    events_committed: u64,
    /// Device publishes per second (last second).
    events_in_per_second: u64,
    /// Events acknowledged by the cloud per second (last second).
    events_out_per_second: u64,
    dead_letters: u64,
    /// Device clients connected to the embedded broker now.
    devices_connected: u64,
    /// Device logins refused so far.
    device_auth_failures: u64,
    store_bytes: u64,
    /// What is wrong with the journal, if anything (e.g. the disk is full).
    store_error: Option<&'static str>,
    dropped: std::collections::BTreeMap<&'static str, u64>,
    routes: Vec<RouteStatus<'a>>,
}

/// Binds `listen` (the error names the address) and serves until `shutdown`.
pub async fn serve(listen: SocketAddr, status: Arc<Status>, shutdown: CancellationToken) -> Result<(), std::io::Error> {
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen for HTTP on {listen}: {e} (change [http].listen)"))
    })?;
    tracing::info!(%listen, "HTTP endpoints listening");
    // With [http].token, everything but the liveness probe and the static page (which
    // carries no data; it sends the token it is given in its URL fragment) wants it.
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/readyz", get(readyz))
        .route("/api/status", get(api_status))
        .route("/api/dlq", get(dlq_list))
        .route("/api/dlq/:id", get(dlq_show))
        .route("/api/dlq/replay", post(dlq_replay))
        .route("/api/dlq/purge", post(dlq_purge))
        .merge(crate::read_api::routes())
        .route_layer(middleware::from_fn_with_state(status.clone(), authorize));
    let app =
        Router::new().route("/", get(status_page)).route("/healthz", get(healthz)).merge(protected).with_state(status);
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

async fn metrics(State(status): State<Arc<Status>>) -> Response {
    let body = status.metrics.render(now_ms().max(0) as u64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn healthz(State(status): State<Arc<Status>>) -> Response {
    if status.healthy.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "a pipeline stage has stopped; see the log\n").into_response()
    }
}

/// The journal's trouble, if any: a full disk (events are dropped per `store.when_full`),
/// or a failed last commit.
fn store_problem(m: &Metrics) -> Option<&'static str> {
    if m.disk_full.get() == 1 {
        Some("disk full: new events are dropped per store.when_full until space returns")
    } else if m.store_ok.get() == 0 {
        Some("the last journal commit failed; see the log")
    } else {
        None
    }
}

async fn readyz(State(status): State<Arc<Status>>) -> Response {
    let link = if status.metrics.link_up.get() == 1 { "up" } else { "down (buffering)" };
    // A full disk is reported, not a failure: the gateway still serves and applies its
    // policy (like a cloud outage, it is degraded operation, not unreadiness).
    let journal = store_problem(&status.metrics).map(|p| format!("; journal: {p}")).unwrap_or_default();
    if status.ready.load(Ordering::Relaxed) && status.healthy.load(Ordering::Relaxed) {
        (StatusCode::OK, format!("ready; cloud link {link}{journal}\n")).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready; cloud link {link}{journal}\n")).into_response()
    }
}

async fn api_status(State(status): State<Arc<Status>>) -> Json<serde_json::Value> {
    let m = &status.metrics;
    let now = now_ms().max(0) as u64;
    let body = StatusBody {
        gateway: &status.gateway_id,
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: status.started.elapsed().as_secs(),
        ready: status.ready.load(Ordering::Relaxed),
        cloud_link_up: m.link_up.get() == 1,
        cloud_link_since_ms: Some(m.link_changed_ms.get()).filter(|ms| *ms > 0),
        cloud_reconnects: m.reconnects.get(),
        last_error: m
            .last_error
            .lock()
            .ok()
            .and_then(|last| last.clone())
            .map(|(at_ms, message)| serde_json::json!({ "at_ms": at_ms, "message": message })),
        events_received: m.received.get(),
        events_committed: m.committed.get(),
        events_in_per_second: m.rate_in.get(),
        events_out_per_second: m.rate_out.get(),
        dead_letters: m.dead_letters.get(),
        devices_connected: m.devices.connected.get(),
        device_auth_failures: AuthFailure::ALL.iter().map(|f| m.devices.auth_failures[*f as usize].get()).sum(),
        store_bytes: m.store_bytes.get(),
        store_error: store_problem(m),
        dropped: DropReason::ALL.iter().map(|r| (r.label(), m.dropped(*r))).collect(),
        routes: m
            .routes
            .iter()
            .map(|r| RouteStatus {
                name: &r.name,
                queue_depth: r.depth.get(),
                queue_bytes: r.bytes.get(),
                oldest_age_seconds: match r.oldest_ms.get() {
                    0 => 0,
                    oldest => now.saturating_sub(oldest) / 1000,
                },
                forwarded: r.forwarded.get(),
                batches: r.batches.get(),
            })
            .collect(),
    };
    Json(serde_json::to_value(body).unwrap_or_default())
}

/// `GET /api/dlq?after=ID&limit=N` query.
#[derive(serde::Deserialize)]
struct Page {
    after: Option<i64>,
    limit: Option<usize>,
}

/// Body of `POST /api/dlq/replay` and `/api/dlq/purge`: which dead letters.
#[derive(serde::Deserialize)]
pub struct Selection {
    /// These ids.
    #[serde(default)]
    pub ids: Vec<i64>,
    /// All of them.
    #[serde(default)]
    pub all: bool,
    /// (purge) Those older than this many milliseconds.
    pub older_than_ms: Option<i64>,
}

fn store_error(err: impl std::fmt::Display) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, format!("journal unavailable: {err}\n")).into_response()
}

async fn dlq_list(State(status): State<Arc<Status>>, Query(page): Query<Page>) -> Response {
    let query =
        dead_letters::Query::Page { after: page.after.unwrap_or(0), limit: page.limit.unwrap_or(100).min(10_000) };
    match status.store.dead_letters(query).await {
        Ok(rows) => Json(rows).into_response(),
        Err(err) => store_error(err),
    }
}

async fn dlq_show(State(status): State<Arc<Status>>, Path(id): Path<i64>) -> Response {
    match status.store.dead_letters(dead_letters::Query::One(id)).await {
        Ok(mut rows) => match rows.pop() {
            Some(row) => Json(row).into_response(),
            None => (StatusCode::NOT_FOUND, format!("no dead letter {id}\n")).into_response(),
        },
        Err(err) => store_error(err),
    }
}

async fn dlq_replay(State(status): State<Arc<Status>>, Json(selection): Json<Selection>) -> Response {
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
                Err(err) => return store_error(err),
            }
        }
    } else {
        for id in &selection.ids {
            match status.store.dead_letters(dead_letters::Query::One(*id)).await {
                Ok(found) => rows.extend(found),
                Err(err) => return store_error(err),
            }
        }
    }
    let queued = rows.len();
    for row in rows {
        if status.replay.send(Replay { id: row.id, topic: row.topic, payload: row.payload }).is_err() {
            return store_error("the device side has stopped");
        }
    }
    Json(serde_json::json!({ "queued": queued })).into_response()
}

async fn dlq_purge(State(status): State<Arc<Status>>, Json(selection): Json<Selection>) -> Response {
    let purge = match (selection.all, selection.older_than_ms) {
        (true, _) => Purge::All,
        (false, Some(age)) => Purge::OlderThan(now_ms() - age),
        (false, None) => Purge::Ids(selection.ids),
    };
    match status.store.purge_dead_letters(purge).await {
        Ok(deleted) => Json(serde_json::json!({ "deleted": deleted })).into_response(),
        Err(err) => store_error(err),
    }
}

/// `GET /`: the live status page, one self-contained HTML file that polls `/api/status`.
async fn status_page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], include_str!("status.html")).into_response()
}
