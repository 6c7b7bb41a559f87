//! The gateway's configuration: one TOML file, parsed into [`raw`] structs and validated
//! in one place ([`validate`]) into the typed [`Config`] the rest of the gateway uses.
//!
//! Invariants:
//! - A [`Config`] exists only if every key was valid. Loading reports *every* error it
//!   finds, each with its key path (`routes[1].batch.max_bytes: ...`); one bad section does
//!   not hide the errors of another.
//! - Config is the ground floor: it imports no stage (devices, downlink, forward, store,
//!   ingest, http, tls, app, metrics...). It produces plain values ([`Access`],
//!   [`DeviceTls`], [`CommandsConfig`], the route's [`crate::format::Encoding`]); the stages
//!   build what they run with from them at start (the authenticator's table, the device
//!   listener's and the links' TLS configurations). Besides the TOML it only reads the files
//!   it names, to check them ([`files`]) or to take a secret from them.

mod access;
pub mod commands;
pub mod files;
mod raw;
pub mod remote;
pub mod secret;
pub mod settings;
pub mod units;
mod url;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use access::{Access, Users};
pub use commands::CommandsConfig;
pub use remote::{RemoteConfig, RemoteDocument};
pub use secret::Secret;
pub use settings::{Change, Settings};
pub use units::ByteSize;
pub use url::BrokerUrl;

use crate::fields::FieldMap;
use crate::filters::FilterRules;
use crate::format::Encoding;
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
    /// `[commands]`: cloud-to-device commands (the downlink stage).
    pub commands: CommandsConfig,
    /// `[remote_config]`: configuration from the cloud (the remote stage).
    pub remote: RemoteConfig,
    /// Files the config names that hold secrets (password and token files, private keys),
    /// for the start-up check of who else can read them.
    pub secret_files: Vec<SecretFile>,
    /// Keys whose secrets are written in the config file itself (`cloud.password`,
    /// `http.token`, `devices.auth.users`...): the file must then be private too.
    pub inline_secrets: Vec<&'static str>,
    /// The file's settings, key by key, for comparing two configs (a reload,
    /// `check-config --diff`).
    pub settings: Settings,
}

/// A file named by the config that holds a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretFile {
    /// Key path that names it (`cloud.key_file`).
    pub key: String,
    /// The file.
    pub path: PathBuf,
    /// A private key: the group must not read it either.
    pub private_key: bool,
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
        /// TLS and credentials for it.
        security: LinkSecurity,
    },
}

/// TLS on the embedded broker's device listeners: the files, checked at load. The device
/// stage builds its server configuration from them at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceTls {
    /// The certificate chain (`tls_cert_file`).
    pub cert_file: String,
    /// Its private key (`tls_key_file`).
    pub key_file: String,
    /// The CA that client certificates must chain to (`tls_client_ca_file`; then they are
    /// required).
    pub client_ca_file: Option<String>,
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
    /// How long the writer holds the first write of a group for more to join it before it
    /// commits (capped at the shortest route `batch.max_delay`): fewer commits, fsyncs and
    /// page writes at a modest load, at the price of this much added device-ack latency.
    pub commit_window: Duration,
    /// Most dead letters kept (the oldest go first).
    pub dead_letters_max: u64,
    /// Dead letters older than this are dropped.
    pub dead_letters_max_age: Duration,
    /// Keep forwarded events this long after the cloud acknowledged them, for replay
    /// (`edge-gateway replay`); None (the default) deletes them on acknowledgement.
    pub keep_forwarded: Option<Duration>,
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
    /// Broker URL (`mqtt://host:port` or `mqtts://host:port`).
    pub url: BrokerUrl,
    /// TLS and credentials for the link.
    pub security: LinkSecurity,
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

/// How a link the gateway dials is secured: TLS (with `mqtts://` URLs) and MQTT credentials.
/// `Debug` never shows the password ([`Secret`]); key files are only named, never read here.
#[derive(Debug, Clone)]
pub struct LinkSecurity {
    /// The config section the keys come from (`cloud`, `devices`), for messages.
    pub section: &'static str,
    /// TLS settings: Some exactly when the URL is `mqtts://`.
    pub tls: Option<TlsSettings>,
    /// MQTT user name.
    pub username: Option<String>,
    /// MQTT password (only with a user name).
    pub password: Option<Secret>,
}

/// TLS settings of one link; the files are checked at config load and read again at every
/// connect (so renewed certificates are picked up without a restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The config section the keys come from (`cloud`, `devices`), for messages.
    pub section: &'static str,
    /// PEM file of the CA certificate(s) to trust; None = the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate for mutual TLS.
    pub client: Option<ClientCert>,
    /// ALPN protocol names offered (e.g. `x-amzn-mqtt-ca`).
    pub alpn: Vec<String>,
    /// Name the server's certificate must be valid for, when not the URL's host.
    pub server_name: Option<String>,
    /// Accept any server certificate (lab use only; warned at start and on every connect).
    pub insecure_skip_verify: bool,
}

/// A client certificate and its private key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
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

    /// What deserves a warning at start (and in `check-config`) without being an error:
    /// secrets readable by other users (the config file itself, password, token and key
    /// files), certificate checks turned off, a password sent without TLS off this machine.
    pub fn warnings(&self, config_path: &Path) -> Vec<String> {
        let mut warnings = Vec::new();
        let config_file = (!self.inline_secrets.is_empty()).then_some(("config file", config_path, false));
        let files = config_file
            .into_iter()
            .chain(self.secret_files.iter().map(|f| (f.key.as_str(), f.path.as_path(), f.private_key)));
        for (what, path, private_key) in files {
            if let Some(mode) = secret::readable_by_others(path, private_key) {
                let fix = if private_key { "chmod 600" } else { "chmod 600 or 640" };
                let holds = if what == "config file" {
                    format!("it holds {}", self.inline_secrets.join(", "))
                } else {
                    "it holds secrets".to_owned()
                };
                warnings.push(format!(
                    "{what}: {} is readable by other users (mode {mode:03o}); {holds}: {fix} it",
                    path.display()
                ));
            }
        }
        let mut links = vec![("cloud", &self.cloud.url, &self.cloud.security)];
        if let DevicesMode::External { url, security, .. } = &self.devices.mode {
            links.push(("devices", url, security));
        }
        for (section, url, security) in links {
            if security.tls.as_ref().is_some_and(|t| t.insecure_skip_verify) {
                warnings.push(format!(
                    "{section}.insecure_skip_verify = true: the broker's certificate is NOT verified; anyone on the path can \
                     pose as {url} (lab use only)"
                ));
            }
            let loopback =
                url.host == "localhost" || url.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if security.password.is_some() && !url.tls && !loopback {
                warnings.push(format!("{section}.password is sent to {url} without TLS; use an mqtts:// URL"));
            }
        }
        warnings
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
        let cloud = match &self.cloud.security.tls {
            Some(tls) if tls.insecure_skip_verify => format!("{} (certificate NOT verified)", self.cloud.url),
            Some(TlsSettings { client: Some(_), .. }) => format!("{} (mutual TLS)", self.cloud.url),
            _ => self.cloud.url.to_string(),
        };
        let routes: Vec<&str> = self.routes.iter().map(|r| r.name.as_str()).collect();
        format!(
            "gateway {} | devices: {devices} | cloud: {} | store: {} (max {}) | routes: {}",
            self.gateway.id,
            cloud,
            self.gateway.data_dir.display(),
            self.store.max_bytes,
            routes.join(", ")
        )
    }
}
