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
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}
