//! The `edge-gateway` binary: parses the command line and hands it to the subcommand's
//! `run` in [`edge_gateway::cli`], where each subcommand lives in its own file.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use edge_gateway::cli::{check_config, devices, dlq, hash_password, reload, replay, run, status};

/// IoT edge gateway: keeps device events in a local journal and forwards them to the cloud.
#[derive(Parser)]
#[command(name = "edge-gateway", version, about, long_about = None)]
struct Cli {
    /// Log format.
    /// Log format [default: `[log].format`, else text].
    #[arg(long, value_enum, global = true)]
    log_format: Option<run::LogFormatArg>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run(run::Args),
    /// Check a config file: exit 0 with a summary, or 1 with every error and its key path.
    CheckConfig(check_config::Args),
    /// Print the running gateway's status; exit 0 healthy, 1 degraded, 2 unreachable.
    Status(status::Args),
    /// Print an argon2id hash (PHC string) of a device password, for [devices.auth] users or
    /// users_file. The password is read from a prompt without echo (asked twice), or from
    /// stdin when it is not a terminal; never from the command line.
    HashPassword,
    /// Dead letters: list, show, replay (after a fix), purge. Talks to the running gateway,
    /// or to its journal when it is stopped.
    Dlq(dlq::Args),
    /// Devices and their latest readings (all, or one with ID), from the running gateway or
    /// from its journal when it is stopped. Works with the cloud down.
    Devices(devices::Args),
    /// Send forwarded events of a route again (kept for `[store].keep_forwarded`), marked as
    /// replays: those the gateway received in [--since, --until).
    Replay(replay::Args),
    /// Re-read the running gateway's config file and apply what can change live (like
    /// SIGHUP); prints what was applied, what needs a restart, or why the file was refused.
    Reload(reload::Args),
}

fn main() -> ExitCode {
    // SIGHUP means "reload the config" (`systemctl reload`); until `run` takes it over, catch
    // it (a flag nobody reads) rather than let its default action end the process
    // (docs/operations.md, "Changing the config"). Other subcommands keep ignoring it.
    if let Err(err) = signal_hook::flag::register(signal_hook::consts::SIGHUP, std::sync::Arc::new(Default::default()))
    {
        eprintln!("edge-gateway: cannot catch SIGHUP ({err}); a reload during start-up would stop it");
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run::run(args, cli.log_format),
        Command::CheckConfig(args) => check_config::run(args),
        Command::Status(args) => status::run(args),
        Command::HashPassword => hash_password::run(),
        Command::Dlq(args) => dlq::run(args),
        Command::Devices(args) => devices::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Reload(args) => reload::run(args),
    }
}
