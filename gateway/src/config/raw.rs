//! The config file as written: serde structs with `deny_unknown_fields`, every key optional
//! where a default exists. Sizes and durations stay raw ([`RawUnit`]) so that validation can
//! report all of their errors at once; [`super::Config`] is what the rest of the gateway sees.

use serde::Deserialize;

use super::units::RawUnit;
use super::Secret;

/// The keys that secure a link the gateway dials (`[cloud]`, and `[devices]` in external
/// mode): TLS files and settings, MQTT user name and password.
#[derive(Debug, Default)]
pub struct Link {
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    pub alpn: Option<Vec<String>>,
    pub server_name: Option<String>,
    pub insecure_skip_verify: Option<bool>,
}

impl Link {
    /// The TLS keys that are set (`insecure_skip_verify = false` does not count).
    pub fn keys_set(&self) -> impl Iterator<Item = &'static str> {
        [
            ("ca_file", self.ca_file.is_some()),
            ("cert_file", self.cert_file.is_some()),
            ("key_file", self.key_file.is_some()),
            ("alpn", self.alpn.is_some()),
            ("server_name", self.server_name.is_some()),
            ("insecure_skip_verify", self.insecure_skip_verify == Some(true)),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
    }
}

/// Moves the [`Link`] keys out of a section struct that has the same field names.
macro_rules! take_link {
    ($section:expr) => {
        Link {
            ca_file: $section.ca_file.take(),
            cert_file: $section.cert_file.take(),
            key_file: $section.key_file.take(),
            username: $section.username.take(),
            password: $section.password.take(),
            password_env: $section.password_env.take(),
            password_file: $section.password_file.take(),
            alpn: $section.alpn.take(),
            server_name: $section.server_name.take(),
            insecure_skip_verify: $section.insecure_skip_verify.take(),
        }
    };
}

/// `[gateway]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    pub id: Option<String>,
    pub data_dir: Option<String>,
}

/// `[devices]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Devices {
    pub mode: Option<String>,
    pub listen: Option<String>,
    pub listen_v5: Option<String>,
    pub url: Option<String>,
    pub client_id: Option<String>,
    pub max_connections: Option<i64>,
    pub max_payload: Option<RawUnit>,
    pub broker_memory: Option<RawUnit>,
    pub unrouted: Option<String>,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    pub alpn: Option<Vec<String>>,
    pub server_name: Option<String>,
    pub insecure_skip_verify: Option<bool>,
    pub tls_cert_file: Option<String>,
    pub tls_key_file: Option<String>,
    pub tls_client_ca_file: Option<String>,
    pub auth: Option<DevicesAuth>,
}

impl Devices {
    /// Its link keys (external mode).
    pub fn take_link(&mut self) -> Link {
        take_link!(self)
    }
}

/// `[devices.auth]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicesAuth {
    pub allow_anonymous: Option<bool>,
    pub users: Option<std::collections::BTreeMap<String, String>>,
    pub users_file: Option<String>,
}

/// `[store]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Store {
    pub max_bytes: Option<RawUnit>,
    pub max_age: Option<RawUnit>,
    pub when_full: Option<String>,
    pub synchronous: Option<String>,
    pub commit_max_events: Option<i64>,
    pub commit_window: Option<RawUnit>,
    pub dead_letters_max: Option<i64>,
    pub dead_letters_max_age: Option<RawUnit>,
    pub keep_forwarded: Option<RawUnit>,
}

/// `[cloud]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cloud {
    pub url: Option<String>,
    pub client_id: Option<String>,
    pub keep_alive: Option<RawUnit>,
    pub max_packet_size: Option<RawUnit>,
    pub max_inflight: Option<i64>,
    pub connect_timeout: Option<RawUnit>,
    pub backoff_min: Option<RawUnit>,
    pub backoff_max: Option<RawUnit>,
    pub shutdown_timeout: Option<RawUnit>,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    pub alpn: Option<Vec<String>>,
    pub server_name: Option<String>,
    pub insecure_skip_verify: Option<bool>,
}

impl Cloud {
    /// Its link keys.
    pub fn take_link(&mut self) -> Link {
        take_link!(self)
    }
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    pub filter: Option<String>,
    pub format: Option<String>,
}

/// `[http]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    pub listen: Option<String>,
    pub token: Option<Secret>,
    pub token_file: Option<String>,
}

/// One `[[routes]]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub batch: Option<Batch>,
    pub devices: Option<Vec<String>>,
    pub types: Option<Vec<String>>,
    pub min: Option<std::collections::BTreeMap<String, f64>>,
    pub max: Option<std::collections::BTreeMap<String, f64>>,
    pub deadband: Option<std::collections::BTreeMap<String, f64>>,
    pub min_interval: Option<RawUnit>,
    pub keep_last: Option<bool>,
    pub input: Option<String>,
    pub priority: Option<i64>,
    pub max_age: Option<RawUnit>,
    pub format: Option<String>,
    pub compress: Option<String>,
    pub event_type: Option<String>,
    pub fields: Option<Fields>,
}

/// `routes[n].fields`: a list of names, or a table of `json field = "reading name"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Fields {
    /// `["temperature", "humidity"]`.
    List(Vec<String>),
    /// `{ temperature = "celsius" }`.
    Rename(std::collections::BTreeMap<String, String>),
}

/// `routes[n].batch`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    pub max_events: Option<i64>,
    pub max_bytes: Option<RawUnit>,
    pub max_delay: Option<RawUnit>,
}

/// `[remote_config]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    pub enabled: Option<bool>,
    pub topic: Option<String>,
    pub sections: Option<Vec<String>>,
    pub client_id: Option<String>,
}

/// The sections a config file may hold.
pub const SECTIONS: [&str; 9] =
    ["gateway", "devices", "store", "cloud", "http", "log", "routes", "commands", "remote_config"];
