//! The `edge-gateway` binary: parses arguments, loads the config, runs the gateway.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use edge_gateway::admin::{self, Selection};
use edge_gateway::config::{Config, LoadError, LogConfig, LogFormat};
use edge_gateway::read_api;

/// IoT edge gateway: keeps device events in a local journal and forwards them to the cloud.
#[derive(Parser)]
#[command(name = "edge-gateway", version, about, long_about = None)]
struct Cli {
    /// Log format.
    /// Log format [default: `[log].format`, else text].
    #[arg(long, value_enum, global = true)]
    log_format: Option<CliLogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum CliLogFormat {
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
    /// Print the running gateway's status; exit 0 healthy, 1 degraded, 2 unreachable.
    Status {
        /// Config file (for [http].listen) [default: config/gateway.toml, then /etc/edge-gateway/gateway.toml].
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print an argon2id hash (PHC string) of a device password, for [devices.auth] users or
    /// users_file. The password is read from a prompt without echo (asked twice), or from
    /// stdin when it is not a terminal; never from the command line.
    HashPassword,
    /// Dead letters: list, show, replay (after a fix), purge. Talks to the running gateway,
    /// or to its journal when it is stopped.
    Dlq {
        /// Config file [default: config/gateway.toml, then /etc/edge-gateway/gateway.toml].
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Devices and their latest readings (all, or one with ID), from the running gateway or
    /// from its journal when it is stopped. Works with the cloud down.
    Devices {
        /// One device: its latest readings.
        id: Option<String>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Config file [default: config/gateway.toml, then /etc/edge-gateway/gateway.toml].
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Send forwarded events of a route again (kept for `[store].keep_forwarded`), marked as
    /// replays: those the gateway received in [--since, --until).
    Replay {
        /// Route name.
        #[arg(long)]
        route: String,
        /// Start: RFC 3339 (2026-11-27T08:00:00Z) or an age such as 2h.
        #[arg(long)]
        since: String,
        /// End (excluded) [default: now].
        #[arg(long)]
        until: Option<String>,
        /// Config file [default: config/gateway.toml, then /etc/edge-gateway/gateway.toml].
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead letters, oldest first.
    List {
        /// Most to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Only those with ids above this.
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter with its payload.
    Show {
        /// Its id.
        id: i64,
    },
    /// Send dead letters through the pipeline again (e.g. after fixing the config).
    Replay {
        /// Ids to replay.
        ids: Vec<i64>,
        /// Replay all of them.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
    /// Delete dead letters.
    Purge {
        /// Ids to delete.
        ids: Vec<i64>,
        /// Delete all of them.
        #[arg(long, conflicts_with_all = ["ids", "older_than"])]
        all: bool,
        /// Delete those older than this (e.g. "7d").
        #[arg(long, conflicts_with = "ids")]
        older_than: Option<String>,
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

/// Logs as `[log]` says; `RUST_LOG` and `--log-format` win over the config.
fn init_logs(config: &LogConfig, cli: Option<CliLogFormat>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let json = match cli {
        Some(format) => matches!(format, CliLogFormat::Json),
        None => config.format == LogFormat::Json,
    };
    if json {
        builder.json().init();
    } else {
        builder.init();
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
                    for warning in config.warnings(&path) {
                        eprintln!("warning: {warning}");
                    }
                    println!("{}: ok — {}", path.display(), config.summary());
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            }
        }
        Command::HashPassword => match read_password().and_then(|pw| edge_gateway::devices::auth::hash_password(&pw)) {
            Ok(hash) => {
                println!("{hash}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("edge-gateway hash-password: {err}");
                ExitCode::FAILURE
            }
        },
        Command::Status { config } => {
            let config = match load(&config_path(config)) {
                Ok(config) => config,
                Err(code) => return code,
            };
            let (text, health) = admin::status(&config);
            print!("{text}");
            ExitCode::from(match health {
                admin::Health::Healthy => 0,
                admin::Health::Degraded => 1,
                admin::Health::Unreachable => 2,
            })
        }
        Command::Dlq { config, command } => {
            let config = match load(&config_path(config)) {
                Ok(config) => config,
                Err(code) => return code,
            };
            match dlq(&config, command) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("edge-gateway dlq: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Devices { id, json, config } => {
            let config = match load(&config_path(config)) {
                Ok(config) => config,
                Err(code) => return code,
            };
            match devices(&config, id.as_deref(), json) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("edge-gateway devices: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Replay { route, since, until, config } => {
            let config = match load(&config_path(config)) {
                Ok(config) => config,
                Err(code) => return code,
            };
            match replay(&config, &route, &since, until.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("edge-gateway replay: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run { config } => {
            let path = config_path(config);
            let config = match load(&path) {
                Ok(config) => config,
                Err(code) => return code,
            };
            init_logs(&config.log, cli.log_format);
            for warning in config.warnings(&path) {
                tracing::warn!("{warning}");
            }
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

fn dlq(config: &Config, command: DlqCommand) -> Result<(), String> {
    let selection = |ids: Vec<i64>, all: bool| -> Result<Selection, String> {
        match (all, ids.is_empty()) {
            (true, _) => Ok(Selection::All),
            (false, false) => Ok(Selection::Ids(ids)),
            (false, true) => Err("name the ids, or --all".into()),
        }
    };
    match command {
        DlqCommand::List { limit, after, json } => {
            let rows = admin::list(config, after, limit).map_err(|e| e.to_string())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?);
            } else {
                print!("{}", admin::table(&rows));
            }
        }
        DlqCommand::Show { id } => match admin::show(config, id).map_err(|e| e.to_string())? {
            Some(row) => {
                println!(
                    "id:       {}\nreceived: {}\ntopic:    {}\nreason:   {}",
                    row.id,
                    admin::format_time(row.received_ms),
                    row.topic,
                    row.reason
                );
                println!("payload ({}):\n{}", if row.payload_is_hex { "hex" } else { "text" }, row.payload_text);
            }
            None => return Err(format!("no dead letter {id}")),
        },
        DlqCommand::Replay { ids, all } => {
            let done = admin::replay(config, &selection(ids, all)?).map_err(|e| e.to_string())?;
            match done.committed {
                Some(events) => println!(
                    "replayed {} dead letter(s): {events} became events, the rest are dead letters again (see `dlq list`)",
                    done.replayed
                ),
                None => println!("queued {} dead letter(s) for replay in the running gateway", done.replayed),
            }
        }
        DlqCommand::Purge { ids, all, older_than } => {
            let selection = match older_than {
                Some(text) => Selection::OlderThan(
                    edge_gateway::config::units::parse_duration(&text)
                        .map_err(|e| format!("--older-than: {e}"))?
                        .as_millis() as i64,
                ),
                None => selection(ids, all)?,
            };
            let deleted = admin::purge(config, &selection).map_err(|e| e.to_string())?;
            println!("deleted {deleted} dead letter(s)");
        }
    }
    Ok(())
}

fn devices(config: &Config, id: Option<&str>, json: bool) -> Result<(), String> {
    let now = edge_gateway::store::now_ms();
    let Some(found) = read_api::devices(config, id).map_err(|e| e.to_string())? else {
        return Err(format!("no device {:?} is known", id.unwrap_or_default()));
    };
    if json {
        let text = match id {
            Some(_) => serde_json::to_string_pretty(&found.first()),
            None => serde_json::to_string_pretty(&found),
        };
        println!("{}", text.map_err(|e| e.to_string())?);
    } else {
        print!("{}", read_api::devices_table(&found, now));
    }
    Ok(())
}

fn replay(config: &Config, route: &str, since: &str, until: Option<&str>) -> Result<(), String> {
    let now = edge_gateway::store::now_ms();
    let since_ms = read_api::parse_time(since, now).map_err(|e| format!("--since: {e}"))?;
    let until_ms = match until {
        Some(text) => read_api::parse_time(text, now).map_err(|e| format!("--until: {e}"))?,
        None => now,
    };
    if since_ms >= until_ms {
        return Err(format!(
            "--since ({}) must be before --until ({})",
            admin::format_time(since_ms),
            admin::format_time(until_ms)
        ));
    }
    let done = read_api::replay_events(config, route, since_ms, until_ms).map_err(|e| e.to_string())?;
    let window = format!("received {} .. {}", admin::format_time(since_ms), admin::format_time(until_ms));
    let when = if done.running { "the running gateway sends them now" } else { "they go out at the next start" };
    println!("queued {} forwarded event(s) of route {route} ({window}) again, marked as replays; {when}", done.queued);
    if config.store.keep_forwarded.is_none() {
        println!("note: [store].keep_forwarded is off in this config: forwarded events are deleted when the cloud acknowledges them");
    }
    Ok(())
}

/// The password to hash: prompted twice without echo on a terminal, else the first line of
/// stdin (without its line end).
fn read_password() -> Result<String, String> {
    use std::io::{BufRead, IsTerminal};
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("device password: ").map_err(|e| e.to_string())?;
        let again = rpassword::prompt_password("again: ").map_err(|e| e.to_string())?;
        if first != again {
            return Err("the two passwords differ".into());
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(|e| format!("cannot read stdin: {e}"))?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if password.is_empty() {
        return Err("empty password".into());
    }
    Ok(password)
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
