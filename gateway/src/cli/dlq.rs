//! `edge-gateway dlq list|show|replay|purge`: the dead letters, through the running gateway
//! or, when it is stopped, on its journal ([`Client`]).
//!
//! A replay on a stopped gateway opens the journal as the gateway would and runs the same
//! ingest pipeline here: each replayed row is deleted once its outcome (an event, or a new
//! dead letter) is committed, so a row is never both replayed and kept. Online or offline,
//! a row the rights of its original publish keep out is refused, named with why, and kept
//! ([`Replay::of`]).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::client::{Client, ClientError, Journal};
use crate::api::wire::{self, DeadLetterRow, ReplayRefused, Selection};
use crate::config::Config;
use crate::ingest::Ingest;
use crate::pipeline::Replay;
use crate::store::dead_letters::{self, Query};
use crate::store::{self, Incoming};
use crate::time::format_time;

/// Arguments of `dlq`.
#[derive(clap::Args)]
pub struct Args {
    /// Config file [default: config/gateway.toml, then /etc/edge-gateway/gateway.toml].
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// The `dlq` subcommands.
#[derive(Subcommand)]
pub enum Command {
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

/// Runs a `dlq` subcommand; exit 1 with `edge-gateway dlq: <error>` on failure.
pub fn run(args: Args) -> ExitCode {
    super::with_config("dlq", args.config, |config| dlq(config, args.command))
}

fn dlq(config: &Config, command: Command) -> Result<(), String> {
    let selection = |ids: Vec<i64>, all: bool| -> Result<Selection, String> {
        match (all, ids.is_empty()) {
            (true, _) => Ok(Selection::all()),
            (false, false) => Ok(Selection::ids(ids)),
            (false, true) => Err("name the ids, or --all".into()),
        }
    };
    match command {
        Command::List { limit, after, json } => {
            let rows = list(config, after, limit).map_err(|e| e.to_string())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?);
            } else {
                print!("{}", super::table::dead_letters(&rows));
            }
        }
        Command::Show { id } => match show(config, id).map_err(|e| e.to_string())? {
            Some(row) => {
                println!(
                    "id:       {}\nreceived: {}\ntopic:    {}\nreason:   {}",
                    row.id,
                    format_time(row.received_ms),
                    row.topic,
                    row.reason
                );
                if let Some(publisher) = &row.publisher {
                    println!("publisher: device {publisher:?}");
                }
                println!("payload ({}):\n{}", if row.payload_is_hex { "hex" } else { "text" }, row.payload_text);
            }
            None => return Err(format!("no dead letter {id}")),
        },
        Command::Replay { ids, all } => {
            let done = replay(config, &selection(ids, all)?).map_err(|e| e.to_string())?;
            match done.committed {
                Some(events) => println!(
                    "replayed {} dead letter(s): {events} became events, the rest are dead letters again (see `dlq list`)",
                    done.replayed
                ),
                None => println!("queued {} dead letter(s) for replay in the running gateway", done.replayed),
            }
            if !done.refused.is_empty() {
                println!("refused {} dead letter(s), kept as they are:", done.refused.len());
            }
            for refused in &done.refused {
                println!("  {}: {}", refused.id, refused.reason);
            }
        }
        Command::Purge { ids, all, older_than } => {
            let selection = match older_than {
                Some(text) => Selection::older_than(
                    crate::config::units::parse_duration(&text).map_err(|e| format!("--older-than: {e}"))?.as_millis()
                        as i64,
                ),
                None => selection(ids, all)?,
            };
            let deleted = purge(config, &selection).map_err(|e| e.to_string())?;
            println!("deleted {deleted} dead letter(s)");
        }
    }
    Ok(())
}

/// Dead letters with ids above `after`, oldest first, at most `limit`.
pub fn list(config: &Config, after: i64, limit: usize) -> Result<Vec<DeadLetterRow>, ClientError> {
    match Client::connect(config) {
        Client::Running(api) => api.get(&format!("/api/dlq?after={after}&limit={limit}")),
        Client::Stopped(journal) => {
            dead_letters::read(&journal.read_only()?, Query::Page { after, limit }).map_err(|e| journal.error(e))
        }
    }
}

/// One dead letter; `Ok(None)` when there is no such id.
pub fn show(config: &Config, id: i64) -> Result<Option<DeadLetterRow>, ClientError> {
    match Client::connect(config) {
        Client::Running(api) => match api.get(&format!("/api/dlq/{id}")) {
            Ok(row) => Ok(Some(row)),
            Err(ClientError::Api { status: 404, .. }) => Ok(None),
            Err(err) => Err(err),
        },
        Client::Stopped(journal) => {
            let mut rows = dead_letters::read(&journal.read_only()?, Query::One(id)).map_err(|e| journal.error(e))?;
            Ok(rows.pop())
        }
    }
}

/// Deletes dead letters; returns how many.
pub fn purge(config: &Config, selection: &Selection) -> Result<u64, ClientError> {
    match Client::connect(config) {
        Client::Running(api) => Ok(api.post::<wire::Purged>("/api/dlq/purge", selection)?.deleted),
        Client::Stopped(journal) => {
            dead_letters::purge(&journal.writable()?, &selection.purge(store::now_ms())).map_err(|e| journal.error(e))
        }
    }
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// Dead letters sent through the pipeline.
    pub replayed: u64,
    /// (stopped gateway only) How many became events; the rest are dead letters again.
    pub committed: Option<u64>,
    /// Dead letters the rights of their original publish keep out, each with why
    /// ([`crate::pipeline::Replay::of`]); they stay dead letters.
    pub refused: Vec<ReplayRefused>,
}

/// Sends dead letters through the pipeline again (e.g. after a config fix). A running
/// gateway does it itself; otherwise the journal is opened and the pipeline run here.
pub fn replay(config: &Config, selection: &Selection) -> Result<Replayed, ClientError> {
    match Client::connect(config) {
        Client::Running(api) => {
            let done: wire::DlqReplayed = api.post("/api/dlq/replay", selection)?;
            Ok(Replayed { replayed: done.queued, committed: None, refused: done.refused })
        }
        Client::Stopped(journal) => replay_offline(config, &journal, selection),
    }
}

fn replay_offline(config: &Config, journal: &Journal, selection: &Selection) -> Result<Replayed, ClientError> {
    journal.with_store(|handle, opened, metrics| async move {
        let mut rows = Vec::new();
        if selection.all {
            let mut after = 0;
            loop {
                let page = handle.dead_letters(Query::Page { after, limit: 1000 }).await?;
                let Some(last) = page.last() else { break };
                after = last.id;
                rows.extend(page);
            }
        } else {
            // Each once, oldest first, as the running gateway does (`api::dlq`).
            let ids: BTreeSet<i64> = selection.ids.iter().copied().collect();
            for id in ids {
                rows.extend(handle.dead_letters(Query::One(id)).await?);
            }
        }
        let mut ingest =
            Ingest::new(config.routes.clone(), metrics.clone(), opened.filter_state.clone(), opened.gateway_boot);
        let mut items: Vec<Incoming> = Vec::new();
        let (mut replayed, mut refused) = (0, Vec::new());
        for row in rows {
            let replay = match Replay::of(row) {
                Ok(replay) => replay,
                Err(refusal) => {
                    refused.push(refusal);
                    continue;
                }
            };
            let forget = handle.clone();
            let id = replay.id();
            replay.run(&mut ingest, Some(Box::new(move || forget.forget_dead_letters(vec![id]))), &mut items);
            replayed += 1;
        }
        handle.ingest(items)?;
        // Two round trips: the first returns after the replay's commit (whose `done`s queue
        // the deletions), the second after those deletions.
        handle.dead_letters(Query::Page { after: 0, limit: 1 }).await?;
        handle.dead_letters(Query::Page { after: 0, limit: 1 }).await?;
        Ok(Replayed { replayed, committed: Some(metrics.store.committed.get()), refused })
    })
}
