//! The gateway's configuration: one TOML file, parsed into [`raw`] structs and validated
//! in one place ([`validate`]) into the typed [`Config`] the rest of the gateway uses.
//!
//! Invariant: a [`Config`] exists only if every key was valid. Loading reports *every*
//! error it finds, each with its key path (`routes[1].batch.max_bytes: ...`); one bad
//! section does not hide the errors of another.

mod raw;
pub mod secret;
pub mod units;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use secret::Secret;
pub use units::ByteSize;

pub use crate::devices::auth::Access;
pub use crate::devices::gate::DeviceTls;
use crate::fields::FieldMap;
use crate::filters::FilterRules;
use crate::forward::encoding::Encoding;
use crate::routes::{TopicFilter, TopicTemplate};

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[gateway]`.
    pub gateway: GatewayConfig,
    /// `[devices]`.
    pub devices: DevicesConfig,
    /// `[store]`.
    pub store: StoreConfig,
    /// `[cloud]`.
    pub cloud: CloudConfig,
    /// `[http]`.
    pub http: HttpConfig,
    /// `[log]`.
    pub log: LogConfig,
    /// `[[routes]]`, in file order.
    pub routes: Vec<RouteConfig>,
}

/// `[gateway]`: who this gateway is and where it keeps its data.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Gateway id, carried in every batch (`"gateway"`) and in `{gateway}` topics.
    pub id: String,
    /// Folder of the SQLite journal (`journal.db`); created when missing.
    pub data_dir: PathBuf,
}

/// `[devices]`: where the sensors' events come from.
#[derive(Debug, Clone)]
pub struct DevicesConfig {
    /// Embedded broker or client of an existing broker.
    pub mode: DevicesMode,
    /// Largest device payload accepted (bigger ones are refused by the broker).
    pub max_payload: ByteSize,
    /// What happens to a publish no route takes.
    pub unrouted: Unrouted,
}

/// What happens to a device publish whose topic no route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unrouted {
    /// Counted (`reason="no_route"`) and dropped.
    Count,
    /// Counted and kept as a dead letter.
    DeadLetter,
}

/// How the gateway meets its devices.
#[derive(Debug, Clone)]
pub enum DevicesMode {
    /// The gateway runs an MQTT broker (rumqttd) that sensors connect to.
    Embedded {
        /// Listen address (MQTT 3.1.1).
        listen: SocketAddr,
        /// Optional second listener for MQTT 5 clients.
        listen_v5: Option<SocketAddr>,
        /// Most simultaneous device connections.
        max_connections: usize,
        /// Memory the broker may use to hold messages between devices and the gateway.
        broker_memory: ByteSize,
        /// Who may connect (`[devices.auth]`).
        access: Access,
        /// TLS on the device listeners (`tls_cert_file`, `tls_key_file`, `tls_client_ca_file`).
        tls: Option<DeviceTls>,
    },
    /// The gateway is a client (QoS 1, persistent session, acknowledging only after commit)
    /// of an existing local broker such as Mosquitto.
    External {
        /// The broker's URL.
        url: BrokerUrl,
        /// Client id on that broker (the session is kept under it).
        client_id: String,
    },
}

/// `[store]`: bounds and durability of the journal.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Disk the journal may use (pages in use, indexes included).
    pub max_bytes: ByteSize,
    /// Events older than this (since they were received) are dropped, reason `ttl`.
    pub max_age: Duration,
    /// What to do when `max_bytes` is reached.
    pub when_full: WhenFull,
    /// SQLite `synchronous`: the durability window, see [`Synchronous`].
    pub synchronous: Synchronous,
    /// Most events committed in one transaction (group commit).
    pub commit_max_events: usize,
    /// Most dead letters kept (the oldest go first).
    pub dead_letters_max: u64,
    /// Dead letters older than this are dropped.
    pub dead_letters_max_age: Duration,
}

/// What a full store does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Delete the oldest events to make room (counted as dropped, reason `full`).
    DropOldest,
    /// Refuse new events (counted as dropped, reason `full`; devices get no ack for them).
    RejectNew,
}

/// SQLite's `synchronous` in WAL mode, i.e. what survives what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// Every commit is fsynced: survives a power cut. The default.
    Full,
    /// Commits survive a process crash (`kill -9`), but a power cut may lose the commits
    /// since the last WAL checkpoint (up to about a second of events).
    Normal,
}

/// `[cloud]`: the upstream MQTT broker.
#[derive(Debug, Clone)]
pub struct CloudConfig {
    /// Broker URL (`mqtt://host:port`).
    pub url: BrokerUrl,
    /// Client id on the cloud broker.
    pub client_id: String,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// Largest MQTT packet the cloud accepts; no batch is bigger.
    pub max_packet_size: ByteSize,
    /// Most batches published and not yet acknowledged.
    pub max_inflight: usize,
    /// How long a connection attempt may take.
    pub connect_timeout: Duration,
    /// First reconnect delay (doubles, with jitter, up to `backoff_max`).
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// On shutdown, how long to wait for the acks of batches in flight.
    pub shutdown_timeout: Duration,
}

/// `[http]`.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Where `/metrics`, `/healthz`, `/readyz` and `/api/status` are served; None = off.
    pub listen: Option<SocketAddr>,
    /// When set, every endpoint but `/healthz` and the static page `/` wants
    /// `Authorization: Bearer <token>`.
    pub token: Option<Secret>,
}

/// `[log]`: what is logged and how.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A `RUST_LOG`-style filter (`info`, `info,edge_gateway::forward=debug`); the
    /// `RUST_LOG` environment variable, when set, wins.
    pub filter: String,
    /// Line format; `--log-format` on the command line wins.
    pub format: LogFormat,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for collectors.
    Json,
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Unique name (metrics label, `{route}`, batch `"route"`).
    pub name: String,
    /// Device-side topic filter.
    pub from: TopicFilter,
    /// Cloud topic template.
    pub to: TopicTemplate,
    /// Batching policy.
    pub batch: BatchConfig,
    /// Which events the route forwards (see [`crate::filters`]).
    pub filter: FilterRules,
    /// What its device payloads are.
    pub input: Input,
    /// Weight in the forwarder's round robin (1-100): batches per turn under a backlog.
    pub priority: u32,
    /// Overrides `store.max_age` for this route's events.
    pub max_age: Option<Duration>,
    /// Batch format and compression on the wire.
    pub encoding: Encoding,
}

/// The payload format a route takes from devices.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// `edge-event` envelopes, postcard or JSON (the default).
    EdgeEvent,
    /// Plain JSON objects or bare numbers from off-the-shelf sensors (see [`crate::fields`]).
    JsonFields {
        /// Event type given to these events.
        event_type: String,
        /// Which fields, under which names.
        map: FieldMap,
    },
}

/// When a batch is sent: whichever bound is reached first.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// Most events per batch.
    pub max_events: usize,
    /// Largest encoded batch (also capped by the cloud's packet size).
    pub max_bytes: ByteSize,
    /// Longest time the first event of a batch waits for company.
    pub max_delay: Duration,
}

/// An MQTT broker address from a URL such as `mqtt://127.0.0.1:1884`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or address.
    pub host: String,
    /// TCP port (1883 when the URL has none).
    pub port: u16,
}

impl BrokerUrl {
    /// Parses `mqtt://host[:port]`; `mqtts://` is refused until TLS lands, with that reason.
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest = if let Some(rest) = text.strip_prefix("mqtt://") {
            rest
        } else if text.starts_with("mqtts://") {
            return Err(format!("{text:?}: TLS (mqtts://) is not supported by this build yet; use mqtt://"));
        } else {
            return Err(format!("expected a URL like \"mqtt://host:1883\", found {text:?}"));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
                let port = port.parse::<u16>().map_err(|_| format!("bad port {port:?} in {text:?}"))?;
                (host, port)
            }
            _ => (rest, 1883),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('/') {
            return Err(format!("no host in {text:?}"));
        }
        Ok(BrokerUrl { host: host.to_owned(), port })
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mqtt://{}:{}", self.host, self.port)
    }
}

/// One thing wrong with a config, at a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path, e.g. `routes[1].batch.max_bytes`.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a config could not be loaded: every error, with the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file was read but is not a valid config.
    #[error("invalid config {path}:\n{}", .errors.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every error found.
        errors: Vec<ConfigError>,
    },
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read { path: path.to_owned(), source })?;
        Config::parse(&text).map_err(|errors| LoadError::Invalid { path: path.to_owned(), errors })
    }

    /// Parses and validates config text; `Err` holds every error found.
    pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
        validate::parse(text)
    }

    /// A one-line summary for `check-config` and the start-up log.
    pub fn summary(&self) -> String {
        let devices = match &self.devices.mode {
            DevicesMode::Embedded { listen, listen_v5, access, tls, .. } => {
                let v5 = listen_v5.map_or(String::new(), |v5| format!(" (MQTT 5 on {v5})"));
                let tls = match tls {
                    None => "",
                    Some(DeviceTls { client_ca_file: None, .. }) => ", TLS",
                    Some(_) => ", TLS with client certificates",
                };
                let auth = match access {
                    Access::Anonymous => "ANONYMOUS access".to_owned(),
                    Access::Users(users) => format!("{} device user(s)", users.len()),
                };
                format!("embedded broker on {listen}{v5}{tls}, {auth}")
            }
            DevicesMode::External { url, .. } => format!("client of {url}"),
        };
        let routes: Vec<&str> = self.routes.iter().map(|r| r.name.as_str()).collect();
        format!(
            "gateway {} | devices: {devices} | cloud: {} | store: {} (max {}) | routes: {}",
            self.gateway.id,
            self.cloud.url,
            self.gateway.data_dir.display(),
            self.store.max_bytes,
            routes.join(", ")
        )
    }
}
