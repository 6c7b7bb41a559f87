//! `edge-gateway check-config`: exit 0 with a one-line summary (warnings on stderr: the
//! config's own, and the HTTP API's exposure, [`crate::api::exposure_warning`]), or 1 with
//! every error and its key path.

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
            for warning in config.warnings(&path).into_iter().chain(crate::api::exposure_warning(&config.http)) {
                eprintln!("warning: {warning}");
            }
            println!("{}: ok — {}", path.display(), config.summary());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}
