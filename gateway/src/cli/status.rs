//! `edge-gateway status`: the running gateway's `/api/status` as a short table, and an exit
//! code for scripts ([`Health`]). It only asks the running gateway: a stopped one has no
//! status, so there is no journal fallback here.

use std::path::PathBuf;
use std::process::ExitCode;

use super::client::Api;
use crate::api::wire;
use crate::config::Config;

/// Arguments of `status`.
#[derive(clap::Args)]
pub struct Args {
    /// Config file (for [http].listen) [default: config/gateway.toml, then /etc/edge-gateway/gateway.toml].
    #[arg(long, short)]
    config: Option<PathBuf>,
}

/// How `edge-gateway status` ends, for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Running, healthy, cloud link up (exit 0).
    Healthy,
    /// Running but something needs attention: cloud link down (buffering), a stage stopped,
    /// a failed commit, not ready (exit 1).
    Degraded,
    /// Nothing answers on `[http].listen` (exit 2).
    Unreachable,
}

/// Prints the status; exits 0 healthy, 1 degraded, 2 unreachable (1 for a bad config).
pub fn run(args: Args) -> ExitCode {
    let config = match super::load(&super::config_path(args.config)) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let (text, health) = status(&config);
    print!("{text}");
    ExitCode::from(match health {
        Health::Healthy => 0,
        Health::Degraded => 1,
        Health::Unreachable => 2,
    })
}

/// The running gateway's status as a short table, and its health.
pub fn status(config: &Config) -> (String, Health) {
    let Some(addr) = config.http.listen else {
        return ("[http] is off in this config: nothing to ask\n".into(), Health::Unreachable);
    };
    let api = Api::new(config);
    let Some((200, body)) = api.request("GET", "/api/status", "") else {
        return (format!("no gateway answers on {addr}\n"), Health::Unreachable);
    };
    let Ok(status) = serde_json::from_str::<wire::Status>(&body) else {
        return (format!("unexpected answer from {addr}: {body}\n"), Health::Unreachable);
    };
    let healthy = matches!(api.request("GET", "/healthz", ""), Some((200, _)));
    let health = if status.ready && healthy && status.cloud_link_up && status.store_error.is_none() {
        Health::Healthy
    } else {
        Health::Degraded
    };
    (table(&status, healthy), health)
}

fn table(status: &wire::Status, healthy: bool) -> String {
    let mut out = format!(
        "gateway {} (v{}), up {}s: {}, {}, cloud link {}\n",
        status.gateway,
        status.version,
        status.uptime_seconds,
        if status.ready { "ready" } else { "NOT READY" },
        if healthy { "healthy" } else { "UNHEALTHY (see the log)" },
        if status.cloud_link_up { "up" } else { "DOWN (buffering)" },
    );
    out.push_str(&format!(
        "devices: {} connected, {} logins refused\n",
        status.devices_connected, status.device_auth_failures
    ));
    out.push_str(&format!(
        "events: {} received, {} committed, {} dead letters; journal {} bytes; {} reconnects\n",
        status.events_received,
        status.events_committed,
        status.dead_letters,
        status.store_bytes,
        status.cloud_reconnects
    ));
    let drops: Vec<String> =
        status.dropped.iter().filter(|(_, n)| **n != 0).map(|(reason, n)| format!("{reason} {n}")).collect();
    out.push_str(&format!("dropped: {}\n", if drops.is_empty() { "none".to_owned() } else { drops.join(", ") }));
    if let Some(problem) = &status.store_error {
        out.push_str(&format!("JOURNAL: {problem}\n"));
    }
    if let Some(reload) = &status.last_reload {
        let at = crate::time::format_time(reload.at_ms as i64);
        let mut line = format!("last reload: {} at {at} ({})", reload.result.label(), reload.trigger);
        if !reload.errors.is_empty() {
            line += &format!(": {}", reload.errors.join("; "));
        }
        if !reload.needs_restart.is_empty() {
            line += &format!("; needs a restart: {}", reload.needs_restart.join(", "));
        }
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(&format!("{:<20} {:>10} {:>12} {:>10} {:>12}\n", "ROUTE", "QUEUED", "BYTES", "OLDEST", "FORWARDED"));
    for route in &status.routes {
        out.push_str(&format!(
            "{:<20} {:>10} {:>12} {:>9}s {:>12}\n",
            route.name, route.queue_depth, route.queue_bytes, route.oldest_age_seconds, route.forwarded
        ));
    }
    out
}
