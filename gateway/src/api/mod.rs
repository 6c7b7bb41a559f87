//! The gateway's local HTTP API (server side only; the terminal client is [`crate::cli`]):
//!
//! | file          | routes                                                        |
//! |---------------|---------------------------------------------------------------|
//! | [`status`]    | `/` (status page), `/healthz`, `/readyz`, `/api/status`, `/metrics` |
//! | [`dlq`]       | `/api/dlq`, `/api/dlq/{id}`, `/api/dlq/replay`, `/api/dlq/purge` |
//! | [`devices`]   | `/api/devices`, `/api/devices/{id}`                           |
//! | [`replay`]    | `/api/replay`                                                 |
//! | [`reload`]    | `/api/reload`, `/api/config/diff`                             |
//! | [`wire`]      | the JSON bodies, shared with the client                       |
//! | [`exposure`]  | the `Host` check of a loopback listener; the warning for a network one without a token |
//! | [`server`]    | connections: cap, header and body timeouts, body size         |
//!
//! Invariants:
//! - Who may reach the API is [`exposure`]'s: on a loopback address (the default) only
//!   requests whose `Host` names this machine are served (DNS-rebinding guard), checked
//!   before anything else; on another address without a token, start-up and `check-config`
//!   warn. Connections and bodies are bounded by [`server`] (SECURITY.md, "HTTP API").
//! - With `[http].token`, every route wants `Authorization: Bearer <token>` (compared in
//!   constant time, [`crate::util::ct`]) except the liveness probe `/healthz` and the static
//!   page `/`, which carries no data (it sends the token it is given in its URL fragment).
//! - Handlers only read metrics and ask the journal through its [`StoreHandle`]; a journal
//!   error is a 503 naming it, never a panic. A cloud outage is reported, not a failure:
//!   buffering is normal operation.
//! - Nothing here imports [`crate::cli`]; the client depends on [`wire`], not the reverse.

pub mod devices;
pub mod dlq;
pub mod exposure;
pub mod reload;
pub mod replay;
pub mod server;
pub mod status;
pub mod wire;

pub use exposure::exposure_warning;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::config::Secret;
use crate::metrics::Metrics;
use crate::pipeline::Replay;
use crate::store::StoreHandle;
use crate::util::ct::constant_time_eq;

/// What the endpoints read: the state every handler shares.
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
    /// The journal (dead letters, devices, replays).
    pub store: StoreHandle,
    /// Where replayed dead letters go (the device side's ingest).
    pub replay: std::sync::mpsc::Sender<Replay>,
    /// `[http].token`; a reload may change it (`app` shares the cell with the reload).
    pub token: Arc<RwLock<Option<Secret>>>,
    /// The config reload (`/api/reload`, `/api/config/diff`, the last outcome in
    /// `/api/status`).
    pub reload: Option<crate::reload::Handle>,
}

/// The state as handlers receive it.
pub(crate) type Shared = State<Arc<Status>>;

/// Serves on a listener bound earlier (so that the port is held from start-up on) until
/// `shutdown`.
pub async fn serve_on(
    listener: std::net::TcpListener,
    status: Arc<Status>,
    shutdown: CancellationToken,
) -> Result<(), std::io::Error> {
    let listen = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    tracing::info!(%listen, "HTTP endpoints listening");
    server::run(listener, router(status, listen), shutdown).await;
    Ok(())
}

/// Every route, the protected ones behind [`authorize`]; all behind the `Host` check of a
/// listener on `listen`, then [`server::read_body`].
fn router(status: Arc<Status>, listen: SocketAddr) -> Router {
    let protected = Router::new()
        .merge(status::protected())
        .merge(dlq::routes())
        .merge(devices::routes())
        .merge(replay::routes())
        .merge(reload::routes())
        .route_layer(middleware::from_fn_with_state(status.clone(), authorize));
    let host_check = Arc::new(exposure::HostCheck::new(listen));
    Router::new()
        .merge(status::open())
        .merge(protected)
        .with_state(status)
        .layer(middleware::from_fn(server::read_body))
        .layer(middleware::from_fn_with_state(host_check, exposure::check_host))
}

/// Refuses a request without the configured bearer token (compared in constant time).
async fn authorize(State(status): Shared, request: Request, next: Next) -> Response {
    let token = status.token.read().unwrap_or_else(PoisonError::into_inner).clone();
    if let Some(token) = token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !constant_time_eq(given.as_bytes(), token.expose().as_bytes()) {
            let body = "this endpoint wants Authorization: Bearer <[http].token>\n";
            return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response();
        }
    }
    next.run(request).await
}

/// 503 for a journal that cannot answer (or a stage that has stopped), naming the cause.
fn unavailable(err: impl std::fmt::Display) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, format!("journal unavailable: {err}\n")).into_response()
}
