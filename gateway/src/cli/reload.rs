//! `edge-gateway reload`: asks the running gateway to re-read its config file now
//! (`POST /api/reload`, the same reload as `SIGHUP`) and prints what it applied, what needs
//! a restart and what it refused. Exit 0 when applied, 1 when refused or a part failed, 2
//! when no gateway answers (then `kill -HUP` or `systemctl reload edge-gateway` does the
//! same without the API).

use std::path::PathBuf;
use std::process::ExitCode;

use super::client::Api;
use crate::api::wire::ReloadOutcome;
use crate::reload::ReloadResult;

/// Arguments of `reload`.
#[derive(clap::Args)]
pub struct Args {
    /// Config file (for [http].listen and the token; the gateway re-reads the file it was
    /// started with) [default: config/gateway.toml, then /etc/edge-gateway/gateway.toml].
    #[arg(long, short)]
    config: Option<PathBuf>,
}

/// Reloads the running gateway's config.
pub fn run(args: Args) -> ExitCode {
    let path = super::config_path(args.config);
    let config = match super::load(&path) {
        Ok(config) => config,
        Err(code) => {
            eprintln!("edge-gateway reload: not sent: the running gateway keeps its config");
            return code;
        }
    };
    let Some(addr) = config.http.listen else {
        eprintln!("edge-gateway reload: [http] is off in {}: send SIGHUP instead (kill -HUP <pid>)", path.display());
        return ExitCode::from(2);
    };
    match Api::new(&config).request("POST", "/api/reload", "") {
        None => {
            eprintln!("edge-gateway reload: no gateway answers on {addr}");
            ExitCode::from(2)
        }
        Some((401, _)) => {
            eprintln!(
                "edge-gateway reload: the gateway refused the token of {}: if [http].token changed, the running gateway \
                 still wants the old one; send SIGHUP instead (systemctl reload edge-gateway, or kill -HUP <pid>)",
                path.display()
            );
            ExitCode::FAILURE
        }
        Some((_, body)) => match serde_json::from_str::<ReloadOutcome>(&body) {
            Ok(outcome) => {
                print!("{}", describe(&outcome));
                if outcome.result == ReloadResult::Applied {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(_) => {
                eprintln!("edge-gateway reload: {}", body.trim());
                ExitCode::FAILURE
            }
        },
    }
}

/// The outcome as lines for a person.
pub fn describe(outcome: &ReloadOutcome) -> String {
    let mut text = match outcome.result {
        ReloadResult::Applied if outcome.applied.is_empty() && outcome.needs_restart.is_empty() => {
            "reload: applied (no change)\n".to_owned()
        }
        ReloadResult::Applied => "reload: applied\n".to_owned(),
        ReloadResult::Refused => "reload: refused, nothing changed (the old config keeps running):\n".to_owned(),
        ReloadResult::Failed => "reload: partly applied; these parts failed:\n".to_owned(),
    };
    for error in &outcome.errors {
        text += &format!("  error: {error}\n");
    }
    for line in &outcome.applied {
        text += &format!("  applied: {line}\n");
    }
    for key in &outcome.needs_restart {
        text += &format!("  needs a restart: {key}\n");
    }
    text
}
