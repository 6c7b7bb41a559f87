//! `edge-gateway devices [ID] [--json]`: the devices the read model knows and their latest
//! readings, from the running gateway or from its journal when it is stopped. Local only,
//! so it works with the cloud down.

use std::path::PathBuf;
use std::process::ExitCode;

use super::client::{Client, ClientError};
use crate::api::wire::DeviceDetail;
use crate::config::Config;
use crate::store::read_model;

/// Arguments of `devices`.
#[derive(clap::Args)]
pub struct Args {
    /// One device: its latest readings.
    id: Option<String>,
    /// JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Config file [default: config/gateway.toml, then /etc/edge-gateway/gateway.toml].
    #[arg(long, short)]
    config: Option<PathBuf>,
}

/// Prints the devices as a table or JSON; exit 1 for an unknown device.
pub fn run(args: Args) -> ExitCode {
    super::with_config("devices", args.config, |config| print(config, args.id.as_deref(), args.json))
}

fn print(config: &Config, id: Option<&str>, json: bool) -> Result<(), String> {
    let now = crate::store::now_ms();
    let Some(found) = devices(config, id).map_err(|e| e.to_string())? else {
        return Err(format!("no device {:?} is known", id.unwrap_or_default()));
    };
    if json {
        let text = match id {
            Some(_) => serde_json::to_string_pretty(&found.first()),
            None => serde_json::to_string_pretty(&found),
        };
        println!("{}", text.map_err(|e| e.to_string())?);
    } else {
        print!("{}", super::table::devices(&found, now));
    }
    Ok(())
}

/// The devices the read model knows (one, with its readings, when `id` is given): from the
/// running gateway, else from the journal. `Ok(None)`: that device is unknown.
pub fn devices(config: &Config, id: Option<&str>) -> Result<Option<Vec<DeviceDetail>>, ClientError> {
    let journal = match Client::connect(config) {
        Client::Running(api) => {
            return match id {
                Some(id) => match api.get(&format!("/api/devices/{}", encode_path(id))) {
                    Ok(device) => Ok(Some(vec![device])),
                    Err(ClientError::Api { status: 404, .. }) => Ok(None),
                    Err(err) => Err(err),
                },
                None => api.get("/api/devices?readings=true").map(Some),
            }
        }
        Client::Stopped(journal) => journal,
    };
    let query = match id {
        Some(id) => read_model::Query::One(id.to_owned()),
        None => read_model::Query::List { readings: true, limit: usize::MAX },
    };
    match read_model::answer(&journal.read_only()?, &query) {
        Ok(found) if id.is_some() && found.is_empty() => Ok(None),
        Ok(found) => Ok(Some(found)),
        // A journal that no gateway of this version has opened yet has no read model.
        Err(err) if err.to_string().contains("no such table") => Ok(id.is_none().then(Vec::new)),
        Err(source) => Err(journal.error(source)),
    }
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
