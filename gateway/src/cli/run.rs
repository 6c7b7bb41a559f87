//! `edge-gateway run`: loads the config, starts the logs, and runs the gateway
//! ([`crate::app::run`]) until SIGTERM or SIGINT; SIGHUP reloads the config
//! ([`crate::reload`]).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{LogConfig, LogFormat};

/// Arguments of `run`.
#[derive(clap::Args)]
pub struct Args {
    /// Config file [default: config/gateway.toml, then /etc/edge-gateway/gateway.toml].
    #[arg(long, short)]
    config: Option<PathBuf>,
}

/// `--log-format`, a global flag.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LogFormatArg {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Runs the gateway; exit 1 for a bad config or a start-up error (printed and logged).
pub fn run(args: Args, log_format: Option<LogFormatArg>) -> ExitCode {
    let path = super::config_path(args.config);
    let config = match super::load(&path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let log_filter = init_logs(&config.log, log_format);
    for warning in config.warnings(&path).into_iter().chain(crate::api::exposure_warning(&config.http)) {
        tracing::warn!("{warning}");
    }
    // One worker thread unless TOKIO_WORKER_THREADS says otherwise: the async side relays
    // and waits (the journal writer, ingest and the inner broker have threads of their own),
    // and a second worker mostly costs wake-ups between the two at a steady load without
    // adding throughput (docs/operations.md, "Sizing").
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(1);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let options = crate::Options { config_path: Some(path), log_filter: Some(log_filter) };
    match runtime.block_on(crate::run(config, options, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            eprintln!("edge-gateway: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Logs as `[log]` says; `RUST_LOG` and `--log-format` win over the config. Answers
/// how a reload sets a new `[log].filter` (not while `RUST_LOG` is set: it keeps winning).
fn init_logs(config: &LogConfig, cli: Option<LogFormatArg>) -> crate::app::LogFilter {
    use tracing_subscriber::EnvFilter;
    let from_env = EnvFilter::try_from_default_env().ok();
    let env_wins = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(&config.filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let json = match cli {
        Some(format) => matches!(format, LogFormatArg::Json),
        None => config.format == LogFormat::Json,
    };
    let set: Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync> = if json {
        let builder = builder.json().with_filter_reloading();
        let handle = builder.reload_handle();
        builder.init();
        Box::new(move |filter| handle.reload(filter).map_err(|e| e.to_string()))
    } else {
        let builder = builder.with_filter_reloading();
        let handle = builder.reload_handle();
        builder.init();
        Box::new(move |filter| handle.reload(filter).map_err(|e| e.to_string()))
    };
    Box::new(move |new: &str| {
        if env_wins {
            return Ok(format!("log.filter = {new:?} is kept for the next start: RUST_LOG is set and wins"));
        }
        let filter = EnvFilter::try_new(new).map_err(|e| format!("not a valid filter: {e}"))?;
        set(filter)?;
        Ok(format!("log.filter = {new:?}"))
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            tracing::warn!(error = %err, "cannot watch SIGTERM; only Ctrl-C stops the gateway gracefully");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
