//! `edge-gateway replay --route R --since T [--until T]`: queue the kept forwarded events
//! of a route (`[store].keep_forwarded`) received in `[since, until)` for the cloud again,
//! marked as replays: through the running gateway, or on the journal when it is stopped
//! (they go out at its next start).

use std::path::PathBuf;
use std::process::ExitCode;

use super::client::{Client, ClientError};
use crate::api::wire;
use crate::config::Config;
use crate::time::{format_time, parse_rfc3339};

/// Arguments of `replay`.
#[derive(clap::Args)]
pub struct Args {
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
}

/// Queues the replay and says what happened; exit 1 for a bad window or an unknown route.
pub fn run(args: Args) -> ExitCode {
    super::with_config("replay", args.config, |config| print(config, &args.route, &args.since, args.until.as_deref()))
}

fn print(config: &Config, route: &str, since: &str, until: Option<&str>) -> Result<(), String> {
    let now = crate::store::now_ms();
    let since_ms = parse_time(since, now).map_err(|e| format!("--since: {e}"))?;
    let until_ms = match until {
        Some(text) => parse_time(text, now).map_err(|e| format!("--until: {e}"))?,
        None => now,
    };
    if since_ms >= until_ms {
        return Err(format!("--since ({}) must be before --until ({})", format_time(since_ms), format_time(until_ms)));
    }
    let done = replay_events(config, route, since_ms, until_ms).map_err(|e| e.to_string())?;
    let window = format!("received {} .. {}", format_time(since_ms), format_time(until_ms));
    let when = if done.running { "the running gateway sends them now" } else { "they go out at the next start" };
    println!("queued {} forwarded event(s) of route {route} ({window}) again, marked as replays; {when}", done.queued);
    if config.store.keep_forwarded.is_none() {
        println!("note: [store].keep_forwarded is off in this config: forwarded events are deleted when the cloud acknowledges them");
    }
    Ok(())
}

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// Events queued again.
    pub queued: u64,
    /// Whether the running gateway did it (else the journal was opened here).
    pub running: bool,
}

/// Queues again, for the cloud, the kept forwarded events of `route` received in
/// `[since_ms, until_ms)`: through the running gateway, or on the journal when it is stopped.
pub fn replay_events(config: &Config, route: &str, since_ms: i64, until_ms: i64) -> Result<Replayed, ClientError> {
    let journal = match Client::connect(config) {
        Client::Running(api) => {
            let request = wire::ReplayRequest { route: route.to_owned(), since_ms, until_ms: Some(until_ms) };
            let done: wire::ReplayQueued = api.post("/api/replay", &request)?;
            return Ok(Replayed { queued: done.queued, running: true });
        }
        Client::Stopped(journal) => journal,
    };
    let Some(index) = config.routes.iter().position(|r| r.name == route) else {
        let known: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
        return Err(ClientError::Protocol(format!(
            "no route {route:?} in the config; configured: {}",
            known.join(", ")
        )));
    };
    journal.with_store(|handle, _, _| async move {
        Ok(Replayed { queued: handle.replay(index, since_ms, until_ms).await?, running: false })
    })
}

/// A time for `--since` / `--until`: RFC 3339 (`2026-11-27T08:00:00Z`, `...+01:00`, fractions
/// allowed) or an age before `now_ms` such as `2h`, `90s`, `1d` (the config's durations).
pub fn parse_time(text: &str, now_ms: i64) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(age) = crate::config::units::parse_duration(text) {
        return Ok(now_ms - age.as_millis() as i64);
    }
    parse_rfc3339(text).ok_or_else(|| {
        format!("{text:?} is neither an RFC 3339 time (2026-11-27T08:00:00Z) nor an age like \"2h\" or \"30m\"")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_rfc3339_or_as_an_age() {
        let now = 1_764_230_400_000; // 2025-11-27T08:00:00Z
        assert_eq!(parse_time("2025-11-27T08:00:00Z", 0), Ok(now));
        assert_eq!(parse_time("2025-11-27T09:30:00.25+01:30", 0), Ok(now + 250));
        assert_eq!(parse_time("2000-02-29t00:00:00z", 0), Ok(951_782_400_000));
        assert_eq!(parse_time("2h", now), Ok(now - 7_200_000));
        assert_eq!(parse_time("90s", now), Ok(now - 90_000));
        for bad in ["yesterday", "2025-13-01T00:00:00Z", "2025-11-27T08:00:00", "2025-11-27T08:00:00+0100", ""] {
            assert!(parse_time(bad, now).is_err(), "{bad}");
        }
        assert_eq!(format_time(parse_time("2031-07-04T12:34:56Z", 0).unwrap()), "2031-07-04 12:34:56Z");
    }
}
