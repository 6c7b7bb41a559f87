//! The config file as written: serde structs with `deny_unknown_fields`, every key optional
//! where a default exists. Sizes and durations stay raw ([`RawUnit`]) so that validation can
//! report all of their errors at once; [`super::Config`] is what the rest of the gateway sees.

use serde::Deserialize;

use super::units::RawUnit;

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
    pub tls_cert_file: Option<String>,
    pub tls_key_file: Option<String>,
    pub tls_client_ca_file: Option<String>,
    pub auth: Option<DevicesAuth>,
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
    pub dead_letters_max: Option<i64>,
    pub dead_letters_max_age: Option<RawUnit>,
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
    pub token: Option<String>,
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

/// The sections a config file may hold.
pub const SECTIONS: [&str; 7] = ["gateway", "devices", "store", "cloud", "http", "log", "routes"];
