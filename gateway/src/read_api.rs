//! The read API and replay: `GET /api/devices`, `GET /api/devices/{id}`, `POST /api/replay`
//! (behind `[http].token` like the rest of `/api`), and the terminal commands
//! `edge-gateway devices [ID]` and `edge-gateway replay --route R --since T [--until T]`.
//!
//! Everything here is local: it reads the read model of [`crate::store::read_model`] and
//! the kept forwarded events of [`crate::store::forwarded`], so it works with the cloud down.
//! Each command first asks the running gateway (its HTTP API); when none answers, it works
//! on the journal file: `devices` through a read-only connection (safe next to a writer, WAL),
//! `replay` by opening the journal as the gateway would and running the same replay steps.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::admin::{self, format_time, AdminError};
use crate::config::Config;
use crate::http::Status;
use crate::metrics::Metrics;
use crate::store::read_model::{self, DeviceDetail};
use crate::store::{self, now_ms};

/// The routes of the read API (the caller adds the token layer).
pub fn routes() -> Router<Arc<Status>> {
    Router::new()
        .route("/api/devices", get(list_devices))
        .route("/api/devices/:id", get(show_device))
        .route("/api/replay", post(replay))
}

/// `GET /api/devices?readings=true&limit=N` query.
#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    readings: bool,
    limit: Option<usize>,
}

fn unavailable(err: impl std::fmt::Display) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, format!("journal unavailable: {err}\n")).into_response()
}

/// Every device (id, last seen, last boot/seq, events, connected, reading count), by id;
/// with `?readings=true` each also carries its latest readings; `?limit=N`: the first N.
async fn list_devices(State(status): State<Arc<Status>>, Query(query): Query<ListQuery>) -> Response {
    let limit = query.limit.unwrap_or(usize::MAX);
    match status.store.devices(read_model::Query::List { readings: query.readings, limit }).await {
        Ok(devices) if query.readings => Json(devices).into_response(),
        Ok(devices) => Json(devices.into_iter().map(|d| d.summary).collect::<Vec<_>>()).into_response(),
        Err(err) => unavailable(err),
    }
}

/// One device with its latest readings; 404 when unknown.
async fn show_device(State(status): State<Arc<Status>>, Path(id): Path<String>) -> Response {
    match status.store.devices(read_model::Query::One(id.clone())).await {
        Ok(mut found) => match found.pop() {
            Some(device) => Json(device).into_response(),
            None => (StatusCode::NOT_FOUND, format!("no device {id:?} is known\n")).into_response(),
        },
        Err(err) => unavailable(err),
    }
}

/// Body of `POST /api/replay`.
#[derive(Debug, Deserialize)]
pub struct ReplayRequest {
    /// Route name.
    pub route: String,
    /// Events received at or after this (ms since the epoch).
    pub since_ms: i64,
    /// ... and before this; default: now.
    pub until_ms: Option<i64>,
}

async fn replay(State(status): State<Arc<Status>>, Json(request): Json<ReplayRequest>) -> Response {
    let Some(route) = status.metrics.routes.iter().position(|r| r.name == request.route) else {
        let known: Vec<&str> = status.metrics.routes.iter().map(|r| r.name.as_str()).collect();
        let body = format!("no route {:?}; configured: {}\n", request.route, known.join(", "));
        return (StatusCode::BAD_REQUEST, body).into_response();
    };
    let until_ms = request.until_ms.unwrap_or_else(now_ms);
    match status.store.replay(route, request.since_ms, until_ms).await {
        Ok(queued) => {
            tracing::info!(route = %request.route, since_ms = request.since_ms, until_ms, queued, "replay queued");
            Json(serde_json::json!({ "route": request.route, "queued": queued })).into_response()
        }
        Err(err) => unavailable(err),
    }
}

/// The devices the read model knows (one, with its readings, when `id` is given): from the
/// running gateway, else from the journal. `Ok(None)`: that device is unknown.
pub fn devices(config: &Config, id: Option<&str>) -> Result<Option<Vec<DeviceDetail>>, AdminError> {
    if admin::running(config) {
        return match id {
            Some(id) => match admin::api(config, "GET", &format!("/api/devices/{}", encode_path(id)), "") {
                Ok(value) => Ok(Some(vec![from_json(value)?])),
                Err(AdminError::Api { status: 404, .. }) => Ok(None),
                Err(err) => Err(err),
            },
            None => from_json(admin::api(config, "GET", "/api/devices?readings=true", "")?).map(Some),
        };
    }
    let conn = admin::open_journal(config, false)?;
    let path = admin::journal_path(config).display().to_string();
    let query = match id {
        Some(id) => read_model::Query::One(id.to_owned()),
        None => read_model::Query::List { readings: true, limit: usize::MAX },
    };
    match read_model::answer(&conn, &query) {
        Ok(found) if id.is_some() && found.is_empty() => Ok(None),
        Ok(found) => Ok(Some(found)),
        // A journal that no gateway of this version has opened yet has no read model.
        Err(err) if err.to_string().contains("no such table") => Ok(id.is_none().then(Vec::new)),
        Err(source) => Err(AdminError::Journal { path, source }),
    }
}

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, AdminError> {
    serde_json::from_value(value).map_err(|e| AdminError::Protocol(e.to_string()))
}

/// Percent-encodes a path segment (device ids are topic-safe, but be safe anyway).
fn encode_path(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A time since `ms` as "12s ago", "3m ago", "2h ago", "4d ago".
fn ago(now_ms: i64, ms: i64) -> String {
    let s = (now_ms - ms).max(0) / 1000;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86_399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

fn connected(c: Option<bool>) -> &'static str {
    match c {
        Some(true) => "yes",
        Some(false) => "no",
        None => "?",
    }
}

/// Devices as a terminal table: one line per device, then its latest readings indented.
pub fn devices_table(devices: &[DeviceDetail], now_ms: i64) -> String {
    let width = devices.iter().map(|d| d.summary.device.chars().count()).max().unwrap_or(0).max(12);
    let mut out = format!(
        "{:<width$} {:<21} {:>9} {:>14} {:>9} {:>9} {:>8}\n",
        "DEVICE", "LAST SEEN (UTC)", "AGO", "BOOT/SEQ", "EVENTS", "CONNECTED", "READINGS"
    );
    for d in devices {
        let s = &d.summary;
        let (seen, since) = match s.last_seen_ms {
            Some(ms) => (format_time(ms), ago(now_ms, ms)),
            None => ("-".to_owned(), "-".to_owned()),
        };
        let mark = match (s.boot, s.seq) {
            (Some(boot), Some(seq)) => format!("{boot}/{seq}"),
            _ => "-".to_owned(),
        };
        out.push_str(&format!(
            "{:<width$} {:<21} {:>9} {:>14} {:>9} {:>9} {:>8}\n",
            s.device,
            seen,
            since,
            mark,
            s.events,
            connected(s.connected),
            s.reading_count
        ));
        for r in &d.readings {
            let value = match &r.unit {
                Some(unit) => format!("{} {unit}", r.value),
                None => r.value.to_string(),
            };
            let ts = r.ts_ms.map_or_else(|| "no device time".to_owned(), format_time);
            out.push_str(&format!(
                "    {:<22} {:<24} {} ({}, device time {ts})\n",
                r.name,
                value,
                r.kind,
                ago(now_ms, r.received_ms)
            ));
        }
    }
    out
}

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// Events queued again.
    pub queued: u64,
    /// Whether the running gateway did it (else the journal was opened here).
    pub running: bool,
}

/// Queues again, for the cloud, the kept forwarded events of `route` received in
/// `[since_ms, until_ms)`: through the running gateway, or on the journal when it is stopped
/// (they go out at its next start).
pub fn replay_events(config: &Config, route: &str, since_ms: i64, until_ms: i64) -> Result<Replayed, AdminError> {
    if admin::running(config) {
        let body = serde_json::json!({ "route": route, "since_ms": since_ms, "until_ms": until_ms }).to_string();
        let value = admin::api(config, "POST", "/api/replay", &body)?;
        let queued = value["queued"].as_u64().ok_or_else(|| AdminError::Protocol(value.to_string()))?;
        return Ok(Replayed { queued, running: true });
    }
    let Some(index) = config.routes.iter().position(|r| r.name == route) else {
        let known: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
        return Err(AdminError::Protocol(format!(
            "no route {route:?} in the config; configured: {}",
            known.join(", ")
        )));
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AdminError::Protocol(format!("cannot start a runtime: {e}")))?;
    runtime.block_on(async {
        let names: Vec<String> = config.routes.iter().map(|r| r.name.clone()).collect();
        let metrics = Arc::new(Metrics::new(&names));
        let specs: Vec<store::RouteSpec> =
            config.routes.iter().map(|r| store::RouteSpec { name: r.name.clone(), max_age: r.max_age }).collect();
        let (handle, _, writer) = store::open(&config.gateway.data_dir, &config.store, &specs, metrics, None)?;
        let result = handle.replay(index, since_ms, until_ms).await;
        handle.shutdown();
        let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        Ok(Replayed { queued: result?, running: false })
    })
}

/// A time for `--since` / `--until`: RFC 3339 (`2026-11-27T08:00:00Z`, `...+01:00`, fractions
/// allowed) or an age before `now_ms` such as `2h`, `90s`, `1d` (the config's durations).
pub fn parse_time(text: &str, now_ms: i64) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(age) = crate::config::units::parse_duration(text) {
        return Ok(now_ms - age.as_millis() as i64);
    }
    parse_rfc3339(text).ok_or_else(|| {
        format!("{text:?} is neither an RFC 3339 time (2026-11-27T08:00:00Z) nor an age like \"2h\" or \"30m\"")
    })
}

fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = text.get(from..from + len)?;
        part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok()).flatten()
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &text[start..i.min(start + 3)];
        millis = digits.parse::<i64>().ok()? * 10i64.pow(3 - digits.len() as u32);
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let minutes = num(i + 1, 2)? * 60 + num(i + 4, 2)?;
            if *sign == b'+' {
                minutes
            } else {
                -minutes
            }
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant), the inverse of `admin::format_time`.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    Some(secs * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_rfc3339_or_as_an_age() {
        let now = 1_764_230_400_000; // 2025-11-27T08:00:00Z
        assert_eq!(parse_time("2025-11-27T08:00:00Z", 0), Ok(now));
        assert_eq!(parse_time("2025-11-27T09:30:00.25+01:30", 0), Ok(now + 250));
        assert_eq!(parse_time("2000-02-29t00:00:00z", 0), Ok(951_782_400_000));
        assert_eq!(parse_time("2h", now), Ok(now - 7_200_000));
        assert_eq!(parse_time("90s", now), Ok(now - 90_000));
        for bad in ["yesterday", "2025-13-01T00:00:00Z", "2025-11-27T08:00:00", "2025-11-27T08:00:00+0100", ""] {
            assert!(parse_time(bad, now).is_err(), "{bad}");
        }
        assert_eq!(format_time(parse_time("2031-07-04T12:34:56Z", 0).unwrap()), "2031-07-04 12:34:56Z");
    }
}
