//! The HTTP server's connections: how many at once, how long a client may take to send a
//! request, how large a body may be. Fixed limits, documented in docs/operations.md ("HTTP
//! API: exposure and limits"):
//!
//! | limit                   | value    | beyond it                                        |
//! |-------------------------|----------|--------------------------------------------------|
//! | [`MAX_CONNECTIONS`]     | 64       | the next connection waits, unaccepted, in the listen backlog |
//! | [`HEADER_READ_TIMEOUT`] | 5 s      | the connection is closed                         |
//! | [`BODY_READ_TIMEOUT`]   | 10 s     | 408, connection closed                           |
//! | [`MAX_BODY_BYTES`]      | 256 KiB  | 413 (a body up to 1 MiB is read and dropped first, so the client sees the answer) |
//!
//! Invariants:
//! - A connection holds one of [`MAX_CONNECTIONS`] slots from accept to close; a slot is
//!   taken before `accept`, so connections beyond the cap are not refused but left in the
//!   kernel's backlog until a slot frees.
//! - No connection holds its slot without progress for long: the request head (request
//!   line and headers) must arrive within [`HEADER_READ_TIMEOUT`] of the server starting to
//!   wait for it, which includes an idle keep-alive connection waiting for its next request;
//!   the body within [`BODY_READ_TIMEOUT`]. So idle or slow ("slowloris") connections free
//!   their slots within seconds and a real client is served after at most that wait.
//! - Every body is read whole (at most [`MAX_BODY_BYTES`]) before a handler runs.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body_util::BodyExt;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::util::RateLimited;

/// Most connections served at once. The API's clients are few (a scraper, the CLI, a
/// browser's handful): 64 leaves room for them and bounds what idle sockets can take.
pub const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send a request head, from when the server waits for it.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to send a request body, once its head is read.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request body: room for the most ids a replay or purge takes
/// ([`super::dlq::MAX_IDS`], up to 20 digits each).
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// How long in-flight requests may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` with the limits above until `shutdown`, then lets requests in
/// flight finish for up to [`SHUTDOWN_GRACE`].
pub(super) async fn run(listener: TcpListener, app: Router, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let mut accept_log = RateLimited::new(Duration::from_secs(60));
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot,
        };
        // The semaphore is never closed.
        let Ok(slot) = slot else { break };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(err) => {
                    // Out of file descriptors, mostly: wait for some to close instead of spinning.
                    if let Some(suppressed) = accept_log.allow() {
                        tracing::warn!(error = %err, suppressed, "cannot accept an HTTP connection");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A client that hangs up or times out is its own business: nothing to log.
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
}

/// Middleware: reads the whole body (at most [`MAX_BODY_BYTES`], within
/// [`BODY_READ_TIMEOUT`]) before the handler runs; 413 or 408 otherwise.
pub(super) async fn read_body(request: Request, next: Next) -> Response {
    let declared =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > DRAIN_BYTES as u64) {
        return too_large();
    }
    let (parts, mut body) = request.into_parts();
    match tokio::time::timeout(BODY_READ_TIMEOUT, read_whole(&mut body)).await {
        Ok(BodyRead::Whole(bytes)) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Ok(BodyRead::TooLarge) => too_large(),
        Ok(BodyRead::Broken(err)) => {
            (StatusCode::BAD_REQUEST, format!("cannot read the request body: {err}\n")).into_response()
        }
        Err(_) => {
            let body = format!("the request body did not arrive within {} s\n", BODY_READ_TIMEOUT.as_secs());
            (StatusCode::REQUEST_TIMEOUT, [(header::CONNECTION, "close")], body).into_response()
        }
    }
}

/// A body over [`MAX_BODY_BYTES`] is still read (and dropped) up to this size before the
/// 413, so that the client, which sends its body before it reads, gets the answer and not a
/// connection reset (closing a socket with unread data resets it).
const DRAIN_BYTES: usize = 4 * MAX_BODY_BYTES;

/// What [`read_whole`] got.
enum BodyRead {
    Whole(Vec<u8>),
    TooLarge,
    Broken(axum::Error),
}

async fn read_whole(body: &mut Body) -> BodyRead {
    let mut bytes = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let data = match frame {
            Ok(frame) => frame.into_data().unwrap_or_default(),
            Err(err) => return BodyRead::Broken(err),
        };
        seen = seen.saturating_add(data.len());
        if seen > DRAIN_BYTES {
            return BodyRead::TooLarge;
        }
        if seen <= MAX_BODY_BYTES {
            bytes.extend_from_slice(&data);
        }
    }
    if seen > MAX_BODY_BYTES {
        BodyRead::TooLarge
    } else {
        BodyRead::Whole(bytes)
    }
}

fn too_large() -> Response {
    let body = format!(
        "request body over {MAX_BODY_BYTES} bytes (the API's limit); select fewer dead letters per request, or \"all\"\n"
    );
    (StatusCode::PAYLOAD_TOO_LARGE, [(header::CONNECTION, "close")], body).into_response()
}
