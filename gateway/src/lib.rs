//! edge-gateway: device MQTT in, a durable SQLite journal, batched and acknowledged
//! forwarding to cloud MQTT.
//!
//! The stages, in the order an event meets them:
//! - [`devices`]: the embedded broker (rumqttd) or a client of an existing one; device acks.
//! - [`ingest`]: decode and validate (`edge-event`), pick routes, or make a dead letter.
//! - [`fields`]: plain-JSON payloads of off-the-shelf sensors (`input = "json-fields"`).
//! - [`routes`]: topic filters with a device level, cloud topic templates.
//! - [`filters`]: per-route rules (devices, types, range, interval, deadband) before the store.
//! - [`store`]: the journal (SQLite, WAL, group commit, retention). Durable from here on.
//! - [`forward`]: batches per route to the cloud (rumqttc, QoS 1); delete on PUBACK only.
//!   Their bodies are written by a [`format`](mod@format) (one file per format, one registry line each).
//! - [`downlink`]: cloud-to-device commands, kept in SQLite until the device answers.
//! - [`api`]: the local HTTP API (server only): status page, `/healthz`, `/readyz`,
//!   `/metrics`, `/api/status`, dead letters, devices, replay; [`api::wire`] its JSON bodies.
//!
//! Around them: [`pipeline`] (the ingest batcher, what a device source is started with,
//! replayed and denied dead letters, and [`pipeline::Stages`], which stops the stages in
//! reverse start order), [`app::run`] (the gateway as a list of stages), [`reload`] (`SIGHUP`:
//! re-read the config, apply what can change live, name what needs a restart), [`link`] (the MQTT
//! event-loop poller and reconnect backoff every client link uses), [`tls`] (TLS and
//! credentials of the links the gateway dials), [`config`] (the TOML file, validated into
//! plain values; it imports no stage), [`metrics`] (the registry of every stage's metrics,
//! built from [`meter`]); [`cli`] holds the terminal commands (one file per subcommand; one
//! client that asks the running gateway's API or reads its journal). Leaves: [`rights`] (which topics a device may publish and subscribe to: the gate and dead-letter replays ask it), [`time`]
//! (RFC 3339 and the civil-date algorithm), [`util`] (constant-time compare, rate-limited
//! logging). docs/architecture.md has the data flow, the threads and each stage's
//! invariants.

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod devices;
pub mod downlink;
pub mod fields;
pub mod filters;
pub mod format;
pub mod forward;
pub mod ingest;
pub mod link;
pub mod meter;
pub mod metrics;
pub mod pipeline;
pub mod reload;
pub mod rights;
pub mod routes;
pub mod store;
pub mod time;
pub mod tls;
pub mod util;

pub use app::{run, Options, RunError};
pub use config::Config;
