//! `edge-gateway check-config`: exit 0 with a one-line summary (warnings on stderr: the
//! config's own, the HTTP API's exposure, [`crate::api::exposure_warning`], and a journal
//! others can read, [`crate::store::Journal::exposure_warnings`]), or 1 with every error and
//! its key path.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `check-config`.
#[derive(clap::Args)]
pub struct Args {
    /// Config file [default: config/gateway.toml, then /etc/edge-gateway/gateway.toml].
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Also show how the file differs from the running gateway's config, key by key, and
    /// which changes a reload applies live (exit 2 when no gateway answers).
    #[arg(long)]
    diff: bool,
}

/// Checks the config file.
pub fn run(args: Args) -> ExitCode {
    let path = super::config_path(args.config);
    match super::load(&path) {
        Ok(config) => {
            let journal = crate::store::Journal::of(&config).exposure_warnings();
            let http = crate::api::exposure_warning(&config.http);
            for warning in config.warnings(&path).into_iter().chain(http).chain(journal) {
                eprintln!("warning: {warning}");
            }
            println!("{}: ok — {}", path.display(), config.summary());
            if args.diff {
                return diff(&path, &config);
            }
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// Prints how the file differs from the running config (`POST /api/config/diff`: the
/// gateway compares, so secrets never leave it and relative paths resolve as a reload's).
fn diff(path: &std::path::Path, config: &crate::config::Config) -> ExitCode {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) => {
            eprintln!("edge-gateway check-config: cannot read {}: {err}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let Some(addr) = config.http.listen else {
        eprintln!("edge-gateway check-config --diff: [http] is off: no running gateway to compare with");
        return ExitCode::from(2);
    };
    let answer = super::client::Api::new(config).request("POST", "/api/config/diff", &text);
    let preview =
        match answer.map(|(code, body)| (code, serde_json::from_str::<crate::api::wire::ConfigPreview>(&body), body)) {
            None => {
                eprintln!("edge-gateway check-config --diff: no gateway answers on {addr}");
                return ExitCode::from(2);
            }
            Some((200, Ok(preview), _)) => preview,
            Some((code, _, body)) => {
                eprintln!("edge-gateway check-config --diff: the gateway answered {code}: {}", body.trim());
                return ExitCode::FAILURE;
            }
        };
    for error in &preview.errors {
        println!("  refused by the running gateway: {error}");
    }
    if preview.changes.is_empty() && preview.errors.is_empty() {
        println!("no difference from the running config");
    }
    for change in &preview.changes {
        let how = if change.live { "live" } else { "needs a restart" };
        println!("  {} ({how})", change.change);
    }
    if preview.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
