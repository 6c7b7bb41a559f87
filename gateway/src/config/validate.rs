//! Raw config -> [`Config`], collecting every error with its key path.
//!
//! Each section is deserialized on its own (so a typo in `[store]` does not hide a bad
//! route), then every value is checked; sizes and durations are parsed here, not by serde,
//! for the same reason. Defaults are chosen for a small box and written down in
//! `config/README.md`; keep the two in step.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::raw;
use super::units::{ByteSize, RawUnit};
use super::*;
use crate::fields::FieldMap;
use crate::filters::Glob;
use crate::format::{BatchFormat, Compression, Encoding};

/// The default log filter: the gateway at `info`; the embedded broker's own logs off (it
/// logs ordinary disconnects as errors); rumqttc's at `warn`.
pub const DEFAULT_LOG_FILTER: &str = "info,rumqttd=off,rumqttc=warn";

/// Smallest `batch.max_bytes`: one event of the largest size must always fit a batch.
pub const MIN_BATCH_BYTES: u64 = 4096;

/// Collects errors under key paths.
struct Errors(Vec<ConfigError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError { path: path.into(), message: message.into() });
    }

    /// Takes the value of a check, or records its error and gives None.
    fn take<T>(&mut self, path: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.push(path, message)).ok()
    }
}

/// Deserializes one section, recording the first serde error with its path; a missing
/// section is its defaults, a broken one is None (its values are not checked further).
fn section<T: DeserializeOwned + Default>(errors: &mut Errors, path: &str, value: Option<toml::Value>) -> Option<T> {
    let Some(value) = value else {
        return Some(T::default());
    };
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(parsed) => Some(parsed),
        Err(err) => {
            let inner = err.path().to_string();
            let full = if inner == "." || inner.is_empty() { path.to_owned() } else { format!("{path}.{inner}") };
            errors.push(full, err.into_inner().message().to_owned());
            None
        }
    }
}

fn size(errors: &mut Errors, path: &str, raw: Option<&RawUnit>, default: u64) -> ByteSize {
    raw.map_or(Some(ByteSize(default)), |raw| errors.take(path, raw.size())).unwrap_or(ByteSize(default))
}

fn duration(errors: &mut Errors, path: &str, raw: Option<&RawUnit>, default: Duration) -> Duration {
    raw.map_or(Some(default), |raw| errors.take(path, raw.duration())).unwrap_or(default)
}

fn count(errors: &mut Errors, path: &str, raw: Option<i64>, default: u64, min: u64, max: u64) -> u64 {
    match raw {
        None => default,
        Some(n) if n >= 0 && (n as u64) >= min && (n as u64) <= max => n as u64,
        Some(n) => {
            errors.push(path, format!("expected a whole number from {min} to {max}, found {n}"));
            default
        }
    }
}

fn socket(errors: &mut Errors, path: &str, raw: Option<&str>, default: &str) -> Option<SocketAddr> {
    let text = raw.unwrap_or(default);
    errors.take(path, text.parse().map_err(|_| format!("expected an address like \"127.0.0.1:1883\", found {text:?}")))
}

fn choice<T: Copy>(errors: &mut Errors, path: &str, raw: Option<&str>, options: &[(&str, T)]) -> T {
    let default = options[0].1;
    let Some(text) = raw else { return default };
    match options.iter().find(|(name, _)| *name == text) {
        Some((_, value)) => *value,
        None => {
            let names: Vec<String> = options.iter().map(|(n, _)| format!("{n:?}")).collect();
            errors.push(path, format!("expected one of {}, found {text:?}", names.join(", ")));
            default
        }
    }
}

/// An id usable as an MQTT topic level and a client id.
fn check_id(errors: &mut Errors, path: &str, id: &str) {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) {
        errors.push(path, format!("expected 1-64 characters of A-Z a-z 0-9 - _ . :, found {id:?}"));
    }
}

pub(super) fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
    let mut errors = Errors(Vec::new());
    let mut table: toml::Table = match text.parse() {
        Ok(table) => table,
        Err(err) => {
            let message = err.message().to_owned();
            let at = err.span().map(|span| line_of(text, span.start)).map_or(String::new(), |l| format!(" (line {l})"));
            return Err(vec![ConfigError { path: "(file)".into(), message: format!("not valid TOML{at}: {message}") }]);
        }
    };
    let unknown: Vec<String> = table.keys().filter(|k| !raw::SECTIONS.contains(&k.as_str())).cloned().collect();
    for key in unknown {
        errors.push(key, format!("unknown section; expected one of {}", raw::SECTIONS.join(", ")));
    }
    let gateway: raw::Gateway = section(&mut errors, "gateway", table.remove("gateway")).unwrap_or_default();
    let mut devices: raw::Devices = section(&mut errors, "devices", table.remove("devices")).unwrap_or_default();
    let store: raw::Store = section(&mut errors, "store", table.remove("store")).unwrap_or_default();
    let mut cloud: raw::Cloud = section(&mut errors, "cloud", table.remove("cloud")).unwrap_or_default();
    let http: raw::Http = section(&mut errors, "http", table.remove("http")).unwrap_or_default();
    let log: raw::Log = section(&mut errors, "log", table.remove("log")).unwrap_or_default();
    let routes: Vec<Option<raw::Route>> = match table.remove("routes") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| section(&mut errors, &format!("routes[{i}]"), Some(item)))
            .collect(),
        Some(_) => {
            errors.push("routes", "expected [[routes]] entries (an array of tables)");
            Vec::new()
        }
    };

    let mut secret_files = Vec::new();
    // Secrets written in the file itself: then the file must be private too.
    let inline_secrets: Vec<&'static str> = [
        ("cloud.password", cloud.password.is_some()),
        ("devices.password", devices.password.is_some()),
        ("http.token", http.token.is_some()),
        ("devices.auth.users", devices.auth.as_ref().is_some_and(|a| a.users.is_some())),
    ]
    .into_iter()
    .filter_map(|(key, set)| set.then_some(key))
    .collect();
    let gateway = validate_gateway(&mut errors, gateway);
    let devices_link = devices.take_link();
    let devices = validate_devices(&mut errors, devices, devices_link, &gateway.id, &mut secret_files);
    let store = validate_store(&mut errors, store);
    let cloud_link = cloud.take_link();
    let cloud = validate_cloud(&mut errors, cloud, cloud_link, &gateway.id, &mut secret_files);
    let token = match (http.token, http.token_file.as_deref()) {
        (Some(_), Some(_)) => {
            errors.push("http.token_file", "set http.token or http.token_file, not both");
            None
        }
        (Some(token), None) if token.expose().len() < 16 => {
            errors.push("http.token", "too short to guess-proof: use at least 16 characters");
            None
        }
        (Some(token), None) => Some(token),
        (None, Some(path)) => {
            secret_files.push(SecretFile { key: "http.token_file".into(), path: path.into(), private_key: false });
            errors.take("http.token_file", Secret::from_file(path))
        }
        (None, None) => None,
    };
    let http = HttpConfig {
        listen: match http.listen.as_deref() {
            Some("") | Some("off") => None,
            other => socket(&mut errors, "http.listen", other, "127.0.0.1:9464"),
        },
        token,
    };
    let routes = validate_routes(&mut errors, routes, &cloud);
    let (commands, command_errors) = commands::validate(table.remove("commands"), &gateway.id, &cloud.client_id);
    for (path, message) in command_errors {
        errors.push(path, message);
    }
    let filter = log.filter.unwrap_or_else(|| DEFAULT_LOG_FILTER.into());
    if let Err(err) = tracing_subscriber::EnvFilter::try_new(&filter) {
        errors.push(
            "log.filter",
            format!("not a valid filter ({err}); e.g. \"info\" or \"info,edge_gateway::forward=debug\""),
        );
    }
    let format = choice(
        &mut errors,
        "log.format",
        log.format.as_deref(),
        &[("text", LogFormat::Text), ("json", LogFormat::Json)],
    );
    let log = LogConfig { filter, format };
    if errors.0.is_empty() {
        Ok(Config { gateway, devices, store, cloud, http, log, routes, commands, secret_files, inline_secrets })
    } else {
        Err(errors.0)
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn validate_gateway(errors: &mut Errors, raw: raw::Gateway) -> GatewayConfig {
    let id = raw.id.unwrap_or_else(|| "gw-01".into());
    check_id(errors, "gateway.id", &id);
    let data_dir = raw.data_dir.unwrap_or_else(|| "./data".into());
    if data_dir.is_empty() {
        errors.push("gateway.data_dir", "cannot be empty");
    }
    GatewayConfig { id, data_dir: PathBuf::from(data_dir) }
}

fn validate_devices(
    errors: &mut Errors,
    raw: raw::Devices,
    link: raw::Link,
    gateway_id: &str,
    secret_files: &mut Vec<SecretFile>,
) -> DevicesConfig {
    let max_payload = size(errors, "devices.max_payload", raw.max_payload.as_ref(), 16 * 1024);
    if !(256..=(16 << 20)).contains(&max_payload.bytes()) {
        errors.push("devices.max_payload", format!("expected from 256B to 16MiB, found {max_payload}"));
    }
    let mode = match raw.mode.as_deref().unwrap_or("embedded") {
        "embedded" => {
            if raw.url.is_some() {
                errors.push("devices.url", "only used with mode = \"external\"");
            }
            for key in link.keys_set() {
                errors.push(format!("devices.{key}"), "only used with mode = \"external\"");
            }
            let listen = socket(errors, "devices.listen", raw.listen.as_deref(), "0.0.0.0:1883");
            let listen_v5 =
                raw.listen_v5.as_deref().and_then(|text| socket(errors, "devices.listen_v5", Some(text), ""));
            if listen_v5.is_some() && listen_v5 == listen {
                errors.push("devices.listen_v5", "must differ from devices.listen");
            }
            let max_connections =
                count(errors, "devices.max_connections", raw.max_connections, 1000, 1, 100_000) as usize;
            let broker_memory = size(errors, "devices.broker_memory", raw.broker_memory.as_ref(), 2 << 20);
            if broker_memory.bytes() < 1 << 20 {
                errors.push("devices.broker_memory", format!("expected at least 1MiB, found {broker_memory}"));
            }
            DevicesMode::Embedded {
                listen: listen.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 1883))),
                listen_v5,
                max_connections,
                broker_memory,
                access: validate_device_auth(errors, raw.auth.unwrap_or_default()),
                tls: validate_device_tls(
                    errors,
                    raw.tls_cert_file.as_deref(),
                    raw.tls_key_file.as_deref(),
                    raw.tls_client_ca_file.as_deref(),
                ),
            }
        }
        "external" => {
            if raw.listen.is_some() || raw.listen_v5.is_some() {
                errors.push("devices.listen", "only used with mode = \"embedded\"; set devices.url");
            }
            let embedded_only = [
                ("tls_cert_file", raw.tls_cert_file.is_some()),
                ("tls_key_file", raw.tls_key_file.is_some()),
                ("tls_client_ca_file", raw.tls_client_ca_file.is_some()),
                ("auth", raw.auth.is_some()),
            ];
            for (key, _) in embedded_only.iter().filter(|(_, set)| *set) {
                errors.push(
                    format!("devices.{key}"),
                    "only used with mode = \"embedded\"; with mode = \"external\" the broker you run does its own \
                     authentication and TLS",
                );
            }
            let url = match raw.url.as_deref() {
                Some(url) => errors.take("devices.url", BrokerUrl::parse(url)),
                None => {
                    errors.push("devices.url", "required with mode = \"external\" (e.g. \"mqtt://127.0.0.1:1883\")");
                    None
                }
            };
            let client_id = match raw.client_id {
                Some(id) => {
                    check_id(errors, "devices.client_id", &id);
                    id
                }
                None => format!("{gateway_id}-ingest"),
            };
            let url = url.unwrap_or(BrokerUrl::plain("127.0.0.1", 1883));
            let security = validate_link(errors, "devices", &url, link, secret_files);
            DevicesMode::External { url, client_id, security }
        }
        other => {
            errors.push("devices.mode", format!("expected \"embedded\" or \"external\", found {other:?}"));
            DevicesMode::Embedded {
                listen: SocketAddr::from(([0, 0, 0, 0], 1883)),
                listen_v5: None,
                max_connections: 1,
                broker_memory: ByteSize(0),
                access: Access::Users(Default::default()),
                tls: None,
            }
        }
    };
    let unrouted = choice(
        errors,
        "devices.unrouted",
        raw.unrouted.as_deref(),
        &[("count", Unrouted::Count), ("dead_letter", Unrouted::DeadLetter)],
    );
    DevicesConfig { mode, max_payload, unrouted }
}

/// `[devices.auth]`: named users (config and/or file), or anonymous access. Saying nothing
/// means named users only, and none are listed: every device is refused (and the gateway
/// says so at start), never "anyone may connect".
fn validate_device_auth(errors: &mut Errors, raw: raw::DevicesAuth) -> Access {
    let mut users = Users::new();
    for (name, hash) in raw.users.iter().flatten() {
        if let Err(e) = users.add(name, hash) {
            errors.push(format!("devices.auth.users.{name}"), e);
        }
    }
    if let Some(path) = raw.users_file.as_deref() {
        if let Err(list) = users.add_file(path) {
            for e in list {
                errors.push("devices.auth.users_file", e);
            }
        }
    }
    if raw.allow_anonymous == Some(true) {
        if raw.users.is_some() || raw.users_file.is_some() {
            errors.push(
                "devices.auth.allow_anonymous",
                "cannot be combined with users or users_file: anonymous clients would get rights that named devices \
                 do not; choose one",
            );
        }
        return Access::Anonymous;
    }
    Access::Users(users)
}

/// `tls_cert_file` + `tls_key_file` (+ `tls_client_ca_file`): checked now, so that a bad file
/// is a config error naming the key, not a failure at start or at the first device.
fn validate_device_tls(
    errors: &mut Errors,
    cert: Option<&str>,
    key: Option<&str>,
    client_ca: Option<&str>,
) -> Option<DeviceTls> {
    match (cert, key) {
        (Some(cert), Some(key)) => {
            let tls = DeviceTls {
                cert_file: cert.to_owned(),
                key_file: key.to_owned(),
                client_ca_file: client_ca.map(str::to_owned),
            };
            match files::check_device_tls(&tls) {
                Ok(()) => Some(tls),
                Err((field, message)) => {
                    errors.push(format!("devices.{field}"), message);
                    None
                }
            }
        }
        (Some(_), None) => {
            errors.push("devices.tls_key_file", "required with devices.tls_cert_file");
            None
        }
        (None, Some(_)) => {
            errors.push("devices.tls_cert_file", "required with devices.tls_key_file");
            None
        }
        (None, None) => {
            if client_ca.is_some() {
                errors.push(
                    "devices.tls_client_ca_file",
                    "needs devices.tls_cert_file and devices.tls_key_file (client certificates are checked over TLS)",
                );
            }
            None
        }
    }
}

fn validate_store(errors: &mut Errors, raw: raw::Store) -> StoreConfig {
    let max_bytes = size(errors, "store.max_bytes", raw.max_bytes.as_ref(), 1 << 30);
    if max_bytes.bytes() < 1 << 20 {
        errors.push("store.max_bytes", format!("expected at least 1MiB, found {max_bytes}"));
    }
    let max_age = duration(errors, "store.max_age", raw.max_age.as_ref(), Duration::from_secs(7 * 86_400));
    if max_age < Duration::from_secs(1) {
        errors.push("store.max_age", "expected at least 1s");
    }
    let when_full = choice(
        errors,
        "store.when_full",
        raw.when_full.as_deref(),
        &[("drop_oldest", WhenFull::DropOldest), ("reject_new", WhenFull::RejectNew)],
    );
    let synchronous = choice(
        errors,
        "store.synchronous",
        raw.synchronous.as_deref(),
        &[("full", Synchronous::Full), ("normal", Synchronous::Normal)],
    );
    StoreConfig {
        max_bytes,
        max_age,
        when_full,
        synchronous,
        commit_max_events: count(errors, "store.commit_max_events", raw.commit_max_events, 4096, 1, 1_000_000) as usize,
        dead_letters_max: count(errors, "store.dead_letters_max", raw.dead_letters_max, 10_000, 1, 100_000_000),
        dead_letters_max_age: duration(
            errors,
            "store.dead_letters_max_age",
            raw.dead_letters_max_age.as_ref(),
            Duration::from_secs(30 * 86_400),
        ),
        // "0s" is the same as leaving it out: forwarded events are deleted on acknowledgement.
        keep_forwarded: raw
            .keep_forwarded
            .as_ref()
            .map(|raw| duration(errors, "store.keep_forwarded", Some(raw), Duration::ZERO))
            .filter(|d| !d.is_zero()),
    }
}

fn validate_cloud(
    errors: &mut Errors,
    raw: raw::Cloud,
    link: raw::Link,
    gateway_id: &str,
    secret_files: &mut Vec<SecretFile>,
) -> CloudConfig {
    let url = raw.url.as_deref().unwrap_or("mqtt://127.0.0.1:1884");
    let url = errors.take("cloud.url", BrokerUrl::parse(url));
    // A broken URL: judge the TLS keys as if it said what they imply, so they are checked too.
    let url = url.unwrap_or(BrokerUrl { host: String::new(), port: 0, tls: link.keys_set().next().is_some() });
    let security = validate_link(errors, "cloud", &url, link, secret_files);
    let client_id = match raw.client_id {
        Some(id) => {
            check_id(errors, "cloud.client_id", &id);
            id
        }
        None => gateway_id.to_owned(),
    };
    let max_packet_size = size(errors, "cloud.max_packet_size", raw.max_packet_size.as_ref(), 128 * 1024);
    if !(MIN_BATCH_BYTES + 1024..=256 << 20).contains(&max_packet_size.bytes()) {
        errors.push("cloud.max_packet_size", format!("expected from 5KiB to 256MiB, found {max_packet_size}"));
    }
    let backoff_min = duration(errors, "cloud.backoff_min", raw.backoff_min.as_ref(), Duration::from_millis(200));
    let backoff_max = duration(errors, "cloud.backoff_max", raw.backoff_max.as_ref(), Duration::from_secs(30));
    if backoff_min.is_zero() {
        errors.push("cloud.backoff_min", "must be more than 0");
    }
    if backoff_max < backoff_min {
        errors.push("cloud.backoff_max", format!("must be at least cloud.backoff_min ({backoff_min:?})"));
    }
    let keep_alive = duration(errors, "cloud.keep_alive", raw.keep_alive.as_ref(), Duration::from_secs(30));
    if keep_alive < Duration::from_secs(1) {
        errors.push("cloud.keep_alive", "expected at least 1s");
    }
    CloudConfig {
        url,
        security,
        client_id,
        keep_alive,
        max_packet_size,
        max_inflight: count(errors, "cloud.max_inflight", raw.max_inflight, 16, 1, 1000) as usize,
        connect_timeout: duration(
            errors,
            "cloud.connect_timeout",
            raw.connect_timeout.as_ref(),
            Duration::from_secs(10),
        ),
        backoff_min,
        backoff_max,
        shutdown_timeout: duration(
            errors,
            "cloud.shutdown_timeout",
            raw.shutdown_timeout.as_ref(),
            Duration::from_secs(5),
        ),
    }
}

/// The TLS and credential keys of a link the gateway dials (`[cloud]`, external
/// `[devices]`): what goes together, and every file readable and usable.
fn validate_link(
    errors: &mut Errors,
    section: &'static str,
    url: &BrokerUrl,
    link: raw::Link,
    secret_files: &mut Vec<SecretFile>,
) -> LinkSecurity {
    let at = |key: &str| format!("{section}.{key}");
    let tls_keys: Vec<&str> = link.keys_set().collect();
    let password = match (link.password, link.password_env, link.password_file) {
        (None, None, None) => None,
        (Some(password), None, None) if password.expose().is_empty() => {
            errors.push(at("password"), "is empty");
            None
        }
        (Some(password), None, None) => Some(password),
        (None, Some(name), None) => errors.take(&at("password_env"), Secret::from_env(&name)),
        (None, None, Some(path)) => {
            secret_files.push(SecretFile { key: at("password_file"), path: path.clone().into(), private_key: false });
            errors.take(&at("password_file"), Secret::from_file(&path))
        }
        _ => {
            errors.push(
                at("password"),
                format!("set at most one of {0}.password, {0}.password_env, {0}.password_file", section),
            );
            None
        }
    };
    if link.username.as_deref() == Some("") {
        errors.push(at("username"), "is empty");
    }
    if password.is_some() && link.username.is_none() {
        errors.push(at("username"), "required with a password (MQTT sends a password only with a user name)");
    }
    let security = LinkSecurity { section, tls: None, username: link.username.clone(), password };
    if !url.tls {
        for key in tls_keys {
            errors.push(at(key), format!("only used with an mqtts:// URL ({section}.url is mqtt://)"));
        }
        return security;
    }
    let client = match (link.cert_file, link.key_file) {
        (Some(cert_file), Some(key_file)) => {
            Some(ClientCert { cert_file: cert_file.into(), key_file: key_file.into() })
        }
        (Some(_), None) => {
            errors.push(at("key_file"), format!("required with {section}.cert_file (mutual TLS needs both)"));
            None
        }
        (None, Some(_)) => {
            errors.push(at("cert_file"), format!("required with {section}.key_file (mutual TLS needs both)"));
            None
        }
        (None, None) => None,
    };
    if let Some(client) = &client {
        secret_files.push(SecretFile { key: at("key_file"), path: client.key_file.clone(), private_key: true });
    }
    let alpn = link.alpn.unwrap_or_default();
    for (n, protocol) in alpn.iter().enumerate() {
        if protocol.is_empty() || protocol.len() > 255 {
            errors.push(format!("{section}.alpn[{n}]"), "an ALPN protocol name is 1-255 bytes");
        }
    }
    let settings = TlsSettings {
        section,
        ca_file: link.ca_file.map(PathBuf::from),
        client,
        alpn,
        server_name: link.server_name,
        insecure_skip_verify: link.insecure_skip_verify.unwrap_or(false),
    };
    for err in files::check_link(&settings) {
        errors.push(err.key, err.message);
    }
    LinkSecurity { tls: Some(settings), ..security }
}

fn validate_routes(errors: &mut Errors, raw: Vec<Option<raw::Route>>, cloud: &CloudConfig) -> Vec<RouteConfig> {
    if raw.is_empty() {
        errors.push("routes", "at least one [[routes]] entry is needed, or nothing is forwarded");
    }
    let mut names: Vec<String> = Vec::new();
    let mut routes = Vec::new();
    for (i, route) in raw.into_iter().enumerate() {
        let Some(route) = route else { continue };
        let at = |key: &str| format!("routes[{i}].{key}");
        let filter = validate_filter(errors, i, &route);
        let input = validate_input(errors, i, &route);
        let encoding = Encoding {
            format: choice(
                errors,
                &format!("routes[{i}].format"),
                route.format.as_deref(),
                &BatchFormat::ALL.iter().map(|&format| (format.name(), format)).collect::<Vec<_>>(),
            ),
            compress: choice(
                errors,
                &format!("routes[{i}].compress"),
                route.compress.as_deref(),
                &[("none", Compression::None), ("zstd", Compression::Zstd), ("lz4", Compression::Lz4)],
            ),
        };
        let priority = count(errors, &format!("routes[{i}].priority"), route.priority, 1, 1, 100) as u32;
        let max_age =
            route.max_age.as_ref().and_then(|raw| errors.take(&format!("routes[{i}].max_age"), raw.duration()));
        if max_age.is_some_and(|d| d < Duration::from_secs(1)) {
            errors.push(format!("routes[{i}].max_age"), "expected at least 1s");
        }
        let name = route.name.unwrap_or_default();
        check_id(errors, &at("name"), &name);
        if names.contains(&name) {
            errors.push(at("name"), format!("route name {name:?} is used twice"));
        }
        names.push(name.clone());
        let from = match route.from.as_deref() {
            Some(text) => errors.take(&at("from"), TopicFilter::parse(text)),
            None => {
                errors.push(at("from"), "required (e.g. \"devices/+/events\")");
                None
            }
        };
        if let Some(filter) = &from {
            if !filter.has_device_level() {
                errors.push(at("from"), format!("{filter} has no level naming the device; use {{device}} or +"));
            }
        }
        let to = match route.to.as_deref() {
            Some(text) => errors.take(&at("to"), TopicTemplate::parse(text)),
            None => {
                errors.push(at("to"), "required (e.g. \"gateways/{gateway}/telemetry\")");
                None
            }
        };
        let batch = route.batch.unwrap_or_default();
        let max_bytes = size(errors, &at("batch.max_bytes"), batch.max_bytes.as_ref(), 64 * 1024);
        let packet_room = cloud.max_packet_size.bytes().saturating_sub(1024);
        if max_bytes.bytes() < MIN_BATCH_BYTES || max_bytes.bytes() > packet_room {
            errors.push(
                at("batch.max_bytes"),
                format!("expected from 4KiB to cloud.max_packet_size - 1KiB ({}B), found {max_bytes}", packet_room),
            );
        }
        let batch = BatchConfig {
            max_events: count(errors, &at("batch.max_events"), batch.max_events, 500, 1, 100_000) as usize,
            max_bytes,
            max_delay: duration(errors, &at("batch.max_delay"), batch.max_delay.as_ref(), Duration::from_millis(200)),
        };
        if let (Some(from), Some(to)) = (from, to) {
            routes.push(RouteConfig { filter, input, priority, max_age, encoding, name, from, to, batch });
        }
    }
    routes
}

/// `input`, `event_type`, `fields`.
fn validate_input(errors: &mut Errors, i: usize, route: &raw::Route) -> Input {
    let at = |key: &str| format!("routes[{i}].{key}");
    match route.input.as_deref().unwrap_or("edge-event") {
        "edge-event" => {
            for (key, set) in [("event_type", route.event_type.is_some()), ("fields", route.fields.is_some())] {
                if set {
                    errors.push(at(key), "only used with input = \"json-fields\"");
                }
            }
            Input::EdgeEvent
        }
        "json-fields" => {
            let event_type = route.event_type.clone().or_else(|| route.name.clone()).unwrap_or_default();
            if let Err(err) = edge_event::validate_event_type(&event_type) {
                errors.push(at("event_type"), err.to_string());
            }
            let fields: Vec<(String, String)> = match &route.fields {
                None => Vec::new(),
                Some(raw::Fields::List(names)) => names.iter().map(|n| (n.clone(), n.clone())).collect(),
                Some(raw::Fields::Rename(map)) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            };
            if fields.len() > edge_event::MAX_READINGS {
                errors.push(
                    at("fields"),
                    format!("{} fields; an event holds at most {}", fields.len(), edge_event::MAX_READINGS),
                );
            }
            for (field, name) in &fields {
                if name.is_empty() || name.len() > edge_event::MAX_NAME_LEN {
                    errors.push(
                        at(&format!("fields.{field}")),
                        format!("reading name {name:?} must be 1-{} bytes", edge_event::MAX_NAME_LEN),
                    );
                }
            }
            Input::JsonFields { event_type, map: FieldMap { fields } }
        }
        other => {
            errors.push(at("input"), format!("expected \"edge-event\" or \"json-fields\", found {other:?}"));
            Input::EdgeEvent
        }
    }
}

/// A route's filter keys: globs, per-reading bounds and thresholds, the interval.
fn validate_filter(errors: &mut Errors, i: usize, route: &raw::Route) -> FilterRules {
    let at = |key: &str| format!("routes[{i}].{key}");
    let globs = |errors: &mut Errors, key: &str, list: &Option<Vec<String>>| -> Vec<Glob> {
        let list = list.as_deref().unwrap_or_default();
        for (n, pattern) in list.iter().enumerate() {
            if pattern.is_empty() {
                errors.push(format!("routes[{i}].{key}[{n}]"), "an empty pattern matches nothing");
            }
        }
        list.iter().map(|p| Glob::new(p)).collect()
    };
    let readings = |map: &Option<std::collections::BTreeMap<String, f64>>| -> Vec<(String, f64)> {
        map.iter().flatten().map(|(k, v)| (k.clone(), *v)).collect()
    };
    let rules = FilterRules {
        devices: globs(errors, "devices", &route.devices),
        types: globs(errors, "types", &route.types),
        min: readings(&route.min),
        max: readings(&route.max),
        deadband: readings(&route.deadband),
        min_interval: route.min_interval.as_ref().and_then(|raw| errors.take(&at("min_interval"), raw.duration())),
        keep_last: route.keep_last.unwrap_or(false),
    };
    for (name, min) in &rules.min {
        if let Some((_, max)) = rules.max.iter().find(|(n, _)| n == name) {
            if min > max {
                errors
                    .push(at(&format!("min.{name}")), format!("{min} is above max.{name} ({max}): nothing would pass"));
            }
        }
    }
    for (name, delta) in &rules.deadband {
        if !(delta.is_finite() && *delta > 0.0) {
            errors.push(at(&format!("deadband.{name}")), format!("expected a threshold above 0, found {delta}"));
        }
    }
    if rules.min_interval.is_some_and(|d| d.is_zero()) {
        errors.push(at("min_interval"), "must be more than 0");
    }
    if rules.keep_last && rules.min_interval.is_none() {
        errors.push(at("keep_last"), "needs min_interval: the held event is sent when the interval ends");
    }
    rules
}

#[cfg(test)]
mod tests;
