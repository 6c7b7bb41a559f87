//! The operator commands that act on a gateway from the terminal: `edge-gateway dlq ...`.
//!
//! Each command first asks the running gateway (its HTTP API on `[http].listen`). When no
//! gateway answers, it works on the journal file directly: reads through a read-only SQLite
//! connection (safe next to a running writer, WAL), deletes in short transactions, and a
//! replay opens the journal as the gateway would and runs the same ingest pipeline. SQLite's
//! locking keeps the file consistent even if a gateway without HTTP is running.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::config::Config;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::store::dead_letters::{self, DeadLetterRow, Purge, Query};
use crate::store::{self, Incoming};

/// Why an admin command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The running gateway answered with an error.
    #[error("the gateway answered {status}: {body}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Its body.
        body: String,
    },
    /// The journal could not be read or written.
    #[error("journal {path}: {source}")]
    Journal {
        /// The file.
        path: String,
        /// The cause.
        source: rusqlite::Error,
    },
    /// The journal could not be opened for a replay.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// A response was not what the API returns.
    #[error("unexpected answer from the gateway: {0}")]
    Protocol(String),
}

/// Which dead letters a command is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// These ids.
    Ids(Vec<i64>),
    /// All of them.
    All,
    /// (purge) Those older than this many milliseconds.
    OlderThan(i64),
}

impl Selection {
    fn json(&self) -> String {
        match self {
            Selection::Ids(ids) => serde_json::json!({ "ids": ids }).to_string(),
            Selection::All => r#"{"all":true}"#.into(),
            Selection::OlderThan(ms) => serde_json::json!({ "older_than_ms": ms }).to_string(),
        }
    }
}

/// One HTTP/1.1 request to the gateway; `(status, body)`, or None when nothing answers.
pub(crate) fn request(config: &Config, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let addr = config.http.listen?;
    let auth =
        config.http.token.as_ref().map(|t| format!("Authorization: Bearer {}\r\n", t.expose())).unwrap_or_default();
    let target = if addr.ip().is_unspecified() { SocketAddr::from(([127, 0, 0, 1], addr.port())) } else { addr };
    let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// Whether a gateway answers `/healthz` on `[http].listen`.
pub(crate) fn running(config: &Config) -> bool {
    request(config, "GET", "/healthz", "").is_some()
}

pub(crate) fn api(config: &Config, method: &str, path: &str, body: &str) -> Result<serde_json::Value, AdminError> {
    let (status, body) = request(config, method, path, body).ok_or_else(|| AdminError::Protocol("no answer".into()))?;
    if status != 200 {
        return Err(AdminError::Api { status, body: body.trim().to_owned() });
    }
    serde_json::from_str(&body).map_err(|e| AdminError::Protocol(e.to_string()))
}

pub(crate) fn journal_path(config: &Config) -> std::path::PathBuf {
    config.gateway.data_dir.join("journal.db")
}

pub(crate) fn open_journal(config: &Config, writable: bool) -> Result<Connection, AdminError> {
    let path = journal_path(config);
    let flags = if writable { OpenFlags::SQLITE_OPEN_READ_WRITE } else { OpenFlags::SQLITE_OPEN_READ_ONLY };
    let journal_error = |source| AdminError::Journal { path: path.display().to_string(), source };
    let conn = Connection::open_with_flags(&path, flags).map_err(journal_error)?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(journal_error)?;
    Ok(conn)
}

/// Dead letters, oldest first: from the running gateway, or from the journal.
pub fn list(config: &Config, after: i64, limit: usize) -> Result<Vec<DeadLetterRow>, AdminError> {
    if running(config) {
        let value = api(config, "GET", &format!("/api/dlq?after={after}&limit={limit}"), "")?;
        return rows_from_json(value);
    }
    let conn = open_journal(config, false)?;
    dead_letters::read(&conn, Query::Page { after, limit })
        .map_err(|source| AdminError::Journal { path: journal_path(config).display().to_string(), source })
}

/// One dead letter.
pub fn show(config: &Config, id: i64) -> Result<Option<DeadLetterRow>, AdminError> {
    if running(config) {
        return match api(config, "GET", &format!("/api/dlq/{id}"), "") {
            Ok(value) => Ok(rows_from_json(serde_json::Value::Array(vec![value]))?.pop()),
            Err(AdminError::Api { status: 404, .. }) => Ok(None),
            Err(err) => Err(err),
        };
    }
    let conn = open_journal(config, false)?;
    let mut rows = dead_letters::read(&conn, Query::One(id))
        .map_err(|source| AdminError::Journal { path: journal_path(config).display().to_string(), source })?;
    Ok(rows.pop())
}

fn rows_from_json(value: serde_json::Value) -> Result<Vec<DeadLetterRow>, AdminError> {
    serde_json::from_value(value).map_err(|e| AdminError::Protocol(e.to_string()))
}

/// Deletes dead letters; returns how many.
pub fn purge(config: &Config, selection: &Selection) -> Result<u64, AdminError> {
    if running(config) {
        let value = api(config, "POST", "/api/dlq/purge", &selection.json())?;
        return value["deleted"].as_u64().ok_or_else(|| AdminError::Protocol(value.to_string()));
    }
    let conn = open_journal(config, true)?;
    let purge = match selection {
        Selection::Ids(ids) => Purge::Ids(ids.clone()),
        Selection::All => Purge::All,
        Selection::OlderThan(ms) => Purge::OlderThan(store::now_ms() - ms),
    };
    dead_letters::purge(&conn, &purge)
        .map_err(|source| AdminError::Journal { path: journal_path(config).display().to_string(), source })
}

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// Dead letters sent through the pipeline.
    pub replayed: u64,
    /// (stopped gateway only) How many became events; the rest are dead letters again.
    pub committed: Option<u64>,
}

/// Sends dead letters through the pipeline again (e.g. after a config fix). A running
/// gateway does it itself; otherwise the journal is opened and the pipeline run here.
pub fn replay(config: &Config, selection: &Selection) -> Result<Replayed, AdminError> {
    if running(config) {
        let value = api(config, "POST", "/api/dlq/replay", &selection.json())?;
        let replayed = value["queued"].as_u64().ok_or_else(|| AdminError::Protocol(value.to_string()))?;
        return Ok(Replayed { replayed, committed: None });
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AdminError::Protocol(format!("cannot start a runtime: {e}")))?;
    runtime.block_on(replay_offline(config, selection))
}

async fn replay_offline(config: &Config, selection: &Selection) -> Result<Replayed, AdminError> {
    let names: Vec<String> = config.routes.iter().map(|r| r.name.clone()).collect();
    let metrics = Arc::new(Metrics::new(&names));
    let specs: Vec<store::RouteSpec> =
        config.routes.iter().map(|r| store::RouteSpec { name: r.name.clone(), max_age: r.max_age }).collect();
    let (handle, opened, writer) = store::open(&config.gateway.data_dir, &config.store, &specs, metrics.clone(), None)?;
    let result = async {
        let mut rows = Vec::new();
        match selection {
            Selection::Ids(ids) => {
                for id in ids {
                    rows.extend(handle.dead_letters(Query::One(*id)).await?);
                }
            }
            _ => {
                let mut after = 0;
                loop {
                    let page = handle.dead_letters(Query::Page { after, limit: 1000 }).await?;
                    let Some(last) = page.last() else { break };
                    after = last.id;
                    rows.extend(page);
                }
            }
        }
        let mut ingest =
            Ingest::new(config.routes.clone(), metrics.clone(), opened.filter_state.clone(), opened.gateway_boot);
        let mut items: Vec<Incoming> = Vec::new();
        for row in &rows {
            let forget = handle.clone();
            let id = row.id;
            ingest.process(
                &row.topic,
                &row.payload,
                Some(Box::new(move || forget.forget_dead_letters(vec![id]))),
                &mut items,
            );
        }
        let replayed = rows.len() as u64;
        handle.ingest(items)?;
        // Two round trips: the first returns after the replay's commit (whose `done`s queue
        // the deletions), the second after those deletions.
        handle.dead_letters(Query::Page { after: 0, limit: 1 }).await?;
        handle.dead_letters(Query::Page { after: 0, limit: 1 }).await?;
        Ok::<_, store::StoreError>(Replayed { replayed, committed: Some(metrics.committed.get()) })
    }
    .await;
    handle.shutdown();
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    Ok(result?)
}

/// `ms` since the epoch as `YYYY-MM-DD HH:MM:SSZ` (UTC).
pub fn format_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// Dead letters as a table for the terminal.
pub fn table(rows: &[DeadLetterRow]) -> String {
    let mut out = format!("{:>8}  {:<20}  {:<32}  {}\n", "ID", "RECEIVED (UTC)", "TOPIC", "REASON");
    for row in rows {
        let reason: String = row.reason.chars().take(100).collect();
        out.push_str(&format!("{:>8}  {:<20}  {:<32}  {}\n", row.id, format_time(row.received_ms), row.topic, reason));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_utc_dates() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00Z");
        assert_eq!(format_time(1_764_000_000_123), "2025-11-24 16:00:00Z");
        assert_eq!(format_time(951_782_400_000), "2000-02-29 00:00:00Z");
    }
}

/// How `edge-gateway status` ends, for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Running, healthy, cloud link up (exit 0).
    Healthy,
    /// Running but something needs attention: cloud link down (buffering), a stage stopped,
    /// a failed commit, not ready (exit 1).
    Degraded,
    /// Nothing answers on `[http].listen` (exit 2).
    Unreachable,
}

/// The running gateway's status as a short table, and its health.
pub fn status(config: &Config) -> (String, Health) {
    let Some(addr) = config.http.listen else {
        return ("[http] is off in this config: nothing to ask\n".into(), Health::Unreachable);
    };
    let Some((200, body)) = request(config, "GET", "/api/status", "") else {
        return (format!("no gateway answers on {addr}\n"), Health::Unreachable);
    };
    let Ok(status) = serde_json::from_str::<serde_json::Value>(&body) else {
        return (format!("unexpected answer from {addr}: {body}\n"), Health::Unreachable);
    };
    let healthy = matches!(request(config, "GET", "/healthz", ""), Some((200, _)));
    let link_up = status["cloud_link_up"].as_bool().unwrap_or(false);
    let ready = status["ready"].as_bool().unwrap_or(false);
    let mut out = String::new();
    let n = |key: &str| status[key].as_u64().unwrap_or(0);
    out.push_str(&format!(
        "gateway {} (v{}), up {}s: {}, {}, cloud link {}\n",
        status["gateway"].as_str().unwrap_or("?"),
        status["version"].as_str().unwrap_or("?"),
        n("uptime_seconds"),
        if ready { "ready" } else { "NOT READY" },
        if healthy { "healthy" } else { "UNHEALTHY (see the log)" },
        if link_up { "up" } else { "DOWN (buffering)" },
    ));
    out.push_str(&format!(
        "devices: {} connected, {} logins refused\n",
        n("devices_connected"),
        n("device_auth_failures")
    ));
    out.push_str(&format!(
        "events: {} received, {} committed, {} dead letters; journal {} bytes; {} reconnects\n",
        n("events_received"),
        n("events_committed"),
        n("dead_letters"),
        n("store_bytes"),
        n("cloud_reconnects")
    ));
    let drops: Vec<String> = status["dropped"]
        .as_object()
        .map(|m| m.iter().filter(|(_, v)| v.as_u64() != Some(0)).map(|(k, v)| format!("{k} {v}")).collect())
        .unwrap_or_default();
    out.push_str(&format!("dropped: {}\n", if drops.is_empty() { "none".to_owned() } else { drops.join(", ") }));
    let store_error = status["store_error"].as_str();
    if let Some(problem) = store_error {
        out.push_str(&format!("JOURNAL: {problem}\n"));
    }
    out.push_str(&format!("{:<20} {:>10} {:>12} {:>10} {:>12}\n", "ROUTE", "QUEUED", "BYTES", "OLDEST", "FORWARDED"));
    for route in status["routes"].as_array().into_iter().flatten() {
        let r = |key: &str| route[key].as_u64().unwrap_or(0);
        out.push_str(&format!(
            "{:<20} {:>10} {:>12} {:>9}s {:>12}\n",
            route["name"].as_str().unwrap_or("?"),
            r("queue_depth"),
            r("queue_bytes"),
            r("oldest_age_seconds"),
            r("forwarded")
        ));
    }
    let health = if ready && healthy && link_up && store_error.is_none() { Health::Healthy } else { Health::Degraded };
    (out, health)
}
