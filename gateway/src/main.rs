//! The `edge-gateway` binary: parses arguments, loads the config, runs the gateway.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use edge_gateway::config::{Config, LoadError};

/// IoT edge gateway: keeps device events in a local journal and forwards them to the cloud.
#[derive(Parser)]
#[command(name = "edge-gateway", version, about, long_about = None)]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// Config file [default: config/gateway.toml, then /etc/edge-gateway/gateway.toml].
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check a config file: exit 0 with a summary, or 1 with every error and its key path.
    CheckConfig {
        /// Config file [default: config/gateway.toml, then /etc/edge-gateway/gateway.toml].
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn config_path(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        let local = Path::new("config/gateway.toml");
        if local.exists() {
            local.to_owned()
        } else {
            PathBuf::from("/etc/edge-gateway/gateway.toml")
        }
    })
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=off,rumqttc=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|err| {
        eprintln!("{err}");
        if let LoadError::Invalid { errors, .. } = &err {
            eprintln!("{} error(s)", errors.len());
        }
        ExitCode::FAILURE
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => {
            let path = config_path(config);
            match load(&path) {
                Ok(config) => {
                    println!("{}: ok — {}", path.display(), config.summary());
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            }
        }
        Command::Run { config } => {
            init_logs(cli.log_format);
            let path = config_path(config);
            let config = match load(&path) {
                Ok(config) => config,
                Err(code) => return code,
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(err) => {
                    eprintln!("cannot start the async runtime: {err}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(edge_gateway::run(config, shutdown_signal())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!("{err}");
                    eprintln!("edge-gateway: {err}");
                    ExitCode::FAILURE
                }
            }
        }
    }
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
