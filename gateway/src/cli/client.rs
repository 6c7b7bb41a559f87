//! The one client of the terminal commands: the running gateway's HTTP API, or, when no
//! gateway answers on `[http].listen`, its journal file.
//!
//! [`Client::connect`] decides once per command (a `GET /healthz`); the command then does its
//! work on one side only, so an answer never mixes the two. On the journal side:
//! - reads go through a read-only SQLite connection (safe next to a running writer: WAL);
//! - deletes run in short transactions on a read-write connection (SQLite's locking keeps
//!   the file consistent even if a gateway without HTTP is running);
//! - anything that needs the pipeline (replays) opens the journal as the gateway does, in
//!   [`Journal::with_store`], the one place here that opens the store.
//!
//! The HTTP side is a deliberately small HTTP/1.1 client (`Connection: close`, one request
//! per connection): the API is local, answers are small, and it keeps the CLI free of an
//! HTTP client stack.

use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::{self, Opened, StoreHandle};

/// Why a terminal command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
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
    /// A response was not what the API returns, or the command could not run at all.
    #[error("unexpected answer from the gateway: {0}")]
    Protocol(String),
}

/// Where a command does its work.
pub enum Client<'a> {
    /// A gateway answers on `[http].listen`: ask it.
    Running(Api<'a>),
    /// None answers: work on its journal file.
    Stopped(Journal<'a>),
}

impl<'a> Client<'a> {
    /// The running gateway if one answers `/healthz` on `[http].listen`, else its journal.
    pub fn connect(config: &'a Config) -> Client<'a> {
        let api = Api::new(config);
        if api.request("GET", "/healthz", "").is_some() {
            Client::Running(api)
        } else {
            Client::Stopped(Journal { config })
        }
    }
}

/// The running gateway's HTTP API, as `[http]` of the config describes it.
pub struct Api<'a> {
    config: &'a Config,
}

impl<'a> Api<'a> {
    /// The API at `[http].listen` (a wildcard address is asked on 127.0.0.1), with
    /// `[http].token` when set.
    pub fn new(config: &'a Config) -> Api<'a> {
        Api { config }
    }

    /// One HTTP/1.1 request; `(status, body)`, or None when nothing answers (or `[http]` is
    /// off).
    pub fn request(&self, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
        let addr = self.config.http.listen?;
        let auth = self
            .config
            .http
            .token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {}\r\n", t.expose()))
            .unwrap_or_default();
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

    /// `GET path`, its JSON body as `T`; any status but 200 is [`ClientError::Api`].
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call("GET", path, "")
    }

    /// `POST path` with `body` as JSON, the answer as `T`.
    pub fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T, ClientError> {
        let body = serde_json::to_string(body).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.call("POST", path, &body)
    }

    fn call<T: DeserializeOwned>(&self, method: &str, path: &str, body: &str) -> Result<T, ClientError> {
        let (status, body) =
            self.request(method, path, body).ok_or_else(|| ClientError::Protocol("no answer".into()))?;
        if status != 200 {
            return Err(ClientError::Api { status, body: body.trim().to_owned() });
        }
        serde_json::from_str(&body).map_err(|e| ClientError::Protocol(e.to_string()))
    }
}

/// The journal file of a stopped gateway.
pub struct Journal<'a> {
    config: &'a Config,
}

impl Journal<'_> {
    /// The journal file under `[gateway].data_dir`.
    pub fn path(&self) -> PathBuf {
        store::Journal::of(self.config).path().to_owned()
    }

    /// A read-only connection (never creates the file).
    pub fn read_only(&self) -> Result<Connection, ClientError> {
        self.connect(OpenFlags::SQLITE_OPEN_READ_ONLY)
    }

    /// A read-write connection for short deleting transactions (never creates the file).
    pub fn writable(&self) -> Result<Connection, ClientError> {
        self.connect(OpenFlags::SQLITE_OPEN_READ_WRITE)
    }

    fn connect(&self, flags: OpenFlags) -> Result<Connection, ClientError> {
        let conn = Connection::open_with_flags(self.path(), flags).map_err(|e| self.error(e))?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(|e| self.error(e))?;
        Ok(conn)
    }

    /// A SQLite error on this journal, naming the file.
    pub fn error(&self, source: rusqlite::Error) -> ClientError {
        ClientError::Journal { path: self.path().display().to_string(), source }
    }

    /// Opens the journal as the gateway does (routes of the config, fresh metrics, the
    /// writer thread), runs `work` on a current-thread runtime, then stops the writer and
    /// waits for it: what `work` handed the writer is committed when this returns.
    pub fn with_store<T, F, Fut>(&self, work: F) -> Result<T, ClientError>
    where
        F: FnOnce(StoreHandle, Opened, Arc<Metrics>) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let config = self.config;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError::Protocol(format!("cannot start a runtime: {e}")))?;
        runtime.block_on(async {
            let metrics = Arc::new(Metrics::of(config));
            let store::Store { handle, opened, writer } = store::start(config, metrics.clone(), None)?;
            let result = work(handle, opened, metrics).await;
            writer.close().await;
            result
        })
    }
}
