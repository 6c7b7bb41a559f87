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
    let settings = Settings::of(&table);
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
    let devices = devices::validate_devices(&mut errors, devices, devices_link, &gateway.id, &mut secret_files);
    let mut store = validate_store(&mut errors, store);
    let cloud_link = cloud.take_link();
    let cloud = links::validate_cloud(&mut errors, cloud, cloud_link, &gateway.id, &mut secret_files);
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
    let routes = routes::validate_routes(&mut errors, routes, &cloud);
    // A window longer than a route's max_delay would hold its events past their batch's
    // deadline: the shortest max_delay caps it (config/README.md, `commit_window`).
    if let Some(shortest) = routes.iter().map(|r| r.batch.max_delay).min() {
        store.commit_window = store.commit_window.min(shortest);
    }
    let (commands, command_errors) = commands::validate(table.remove("commands"), &gateway.id, &cloud.client_id);
    for (path, message) in command_errors {
        errors.push(path, message);
    }
    let remote = remote::validate_remote(&mut errors, table.remove("remote_config"), &gateway.id, &cloud.client_id);
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
        Ok(Config {
            gateway,
            devices,
            store,
            cloud,
            http,
            log,
            routes,
            commands,
            remote,
            secret_files,
            inline_secrets,
            settings,
        })
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
/// `store.commit_window` by default: at 200 events/s, ~7 commits a second instead of ~200.
const COMMIT_WINDOW: Duration = Duration::from_millis(150);

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
        commit_window: duration(errors, "store.commit_window", raw.commit_window.as_ref(), COMMIT_WINDOW),
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

mod devices;
mod links;
mod remote;
mod routes;

#[cfg(test)]
mod tests;
