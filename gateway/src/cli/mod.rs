//! The terminal commands of the `edge-gateway` binary, one file per subcommand; `main.rs`
//! parses the command line and calls the subcommand's `run`.
//!
//! | file               | subcommand                                       |
//! |--------------------|--------------------------------------------------|
//! | [`run`]            | `run`: the gateway itself ([`crate::app::run`])  |
//! | [`check_config`]   | `check-config`                                   |
//! | [`status`]         | `status` (exit 0 healthy, 1 degraded, 2 unreachable) |
//! | [`hash_password`]  | `hash-password`                                  |
//! | [`dlq`]            | `dlq list|show|replay|purge`                     |
//! | [`devices`]        | `devices [ID]`                                   |
//! | [`replay`]         | `replay --route R --since T [--until T]`         |
//! | [`reload`]         | `reload` (exit 0 applied, 1 refused, 2 unreachable) |
//!
//! Shared: [`client`] (the running gateway's API, or its journal when it is stopped) and
//! [`table`] (terminal tables). The commands print to stdout, errors to stderr as
//! `edge-gateway <command>: <error>`, and exit 1 on failure; the e2e tests pin these.
//! Depends on [`crate::api::wire`] for the bodies it reads; the API never imports this.

pub mod check_config;
pub mod client;
pub mod devices;
pub mod dlq;
pub mod hash_password;
pub mod reload;
pub mod replay;
pub mod run;
pub mod status;
pub mod table;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub use client::{Client, ClientError};

use crate::config::{Config, LoadError};

/// The config file: the one given, else `config/gateway.toml` when it exists, else
/// `/etc/edge-gateway/gateway.toml`.
pub fn config_path(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        let local = Path::new("config/gateway.toml");
        if local.exists() {
            local.to_owned()
        } else {
            PathBuf::from("/etc/edge-gateway/gateway.toml")
        }
    })
}

/// Loads the config; on failure prints every error (and their count) and gives exit 1.
pub fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|err| {
        eprintln!("{err}");
        if let LoadError::Invalid { errors, .. } = &err {
            eprintln!("{} error(s)", errors.len());
        }
        ExitCode::FAILURE
    })
}

/// Loads the config (`given` or the default) and runs `command` on it: exit 0, or the
/// error as `edge-gateway <name>: <error>` and exit 1.
fn with_config(name: &str, given: Option<PathBuf>, command: impl FnOnce(&Config) -> Result<(), String>) -> ExitCode {
    let config = match load(&config_path(given)) {
        Ok(config) => config,
        Err(code) => return code,
    };
    match command(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("edge-gateway {name}: {err}");
            ExitCode::FAILURE
        }
    }
}
