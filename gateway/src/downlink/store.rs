//! The command queue and the status outbox, in the journal file, through the connection
//! [`Journal::commands_connection`] hands out (the journal owns the file, its pragmas and
//! the tables' migration).
//!
//! # Invariants
//!
//! 1. **Committed before acknowledged.** [`CommandStore::accept`] commits the command and
//!    its first status in one transaction; only then does the cloud get its PUBACK.
//! 2. **One id, one command.** `(device, id)` is unique: a redelivered command (the cloud
//!    did not see our PUBACK) changes nothing and reports nothing again.
//! 3. **Order.** `commands.seq` only grows; a device's open commands go out oldest first,
//!    one at a time (the next only when the previous is finished).
//! 4. **Statuses in order, at least once.** Every state change writes its status row in the
//!    same transaction; rows leave `command_status` only when the cloud PUBACKed them, and
//!    are published in id order, so one command's statuses keep their order.
//! 5. **Bounded.** At most `max_per_device` / `max_total` open commands (more are refused
//!    with status `failed`); finished commands are forgotten after `keep_finished`.
//!
//! The journal's writer writes the same file: this connection is the one deliberate second
//! writer, and the `store` module essay ("The commands connection") says why that is safe:
//! both sides take the write lock with `BEGIN IMMEDIATE` and a busy timeout, so they wait
//! for each other instead of failing; command traffic is tiny next to events, and each
//! transaction here is a few rows of tables nothing else touches.

use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::config::{CommandsConfig, Synchronous};
use crate::store::{Journal, StoreError};

/// A command as the cloud sent it, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCommand {
    /// Device id (the topic's last level).
    pub device: String,
    /// The cloud's id.
    pub id: String,
    /// Command name.
    pub name: String,
    /// JSON text of the payload (`null` when none).
    pub payload: String,
    /// Unix ms after which it is no longer delivered.
    pub deadline_ms: i64,
}

/// What [`CommandStore::accept`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Queued (status `accepted`; a deadline already past expires it at the next
    /// [`CommandStore::heads`]).
    Queued,
    /// Already known: nothing changed.
    Duplicate,
    /// Refused (status `failed` with this reason): a queue bound.
    Refused(String),
}

/// The oldest open command of a device: the one to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// `commands.seq`.
    pub seq: i64,
    /// The command.
    pub command: NewCommand,
}

/// A status waiting for the cloud's PUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRow {
    /// Outbox row id (publish order).
    pub row: i64,
    /// Device.
    pub device: String,
    /// Command id (None for a command that had none).
    pub command: Option<String>,
    /// `accepted`, `delivered`, `done`, `failed` or `expired`.
    pub status: String,
    /// Optional text.
    pub message: Option<String>,
    /// When it happened, Unix ms.
    pub ts: i64,
}

impl StatusRow {
    /// The JSON the cloud gets: `{"id","status","message"?,"ts"}`.
    pub fn to_json(&self) -> Vec<u8> {
        let mut object = serde_json::Map::new();
        object.insert("id".into(), self.command.clone().map_or(serde_json::Value::Null, serde_json::Value::String));
        object.insert("status".into(), self.status.clone().into());
        if let Some(message) = &self.message {
            object.insert("message".into(), message.clone().into());
        }
        object.insert("ts".into(), self.ts.into());
        serde_json::to_vec(&serde_json::Value::Object(object)).unwrap_or_default()
    }
}

/// Open states.
const OPEN: &str = "('accepted', 'delivered')";

/// The command tables; cheap to clone.
#[derive(Clone)]
pub struct CommandStore {
    conn: Arc<Mutex<Connection>>,
    max_per_device: u64,
    max_total: u64,
    keep_finished_ms: i64,
}

impl CommandStore {
    /// The command tables of `journal` (whose writer this process runs), committed with
    /// `synchronous` like the rest of the journal.
    pub fn open(
        journal: &Journal,
        synchronous: Synchronous,
        config: &CommandsConfig,
    ) -> Result<CommandStore, StoreError> {
        let conn = journal.commands_connection(synchronous)?;
        Ok(CommandStore {
            conn: Arc::new(Mutex::new(conn)),
            max_per_device: config.max_per_device,
            max_total: config.max_total,
            keep_finished_ms: config.keep_finished.as_millis() as i64,
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut conn)
    }

    /// Runs `f` on a blocking thread (SQLite may wait for the journal writer's lock).
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&CommandStore) -> rusqlite::Result<T> + Send + 'static,
    ) -> rusqlite::Result<T> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(std::io::Error::other(e.to_string()))))?
    }

    /// Queues a command and writes its `accepted` status (or refuses it), in one
    /// transaction.
    pub fn accept(&self, command: &NewCommand, now_ms: i64) -> rusqlite::Result<Accepted> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let known: Option<i64> = tx
                .query_row(
                    "SELECT seq FROM commands WHERE device = ?1 AND id = ?2",
                    params![command.device, command.id],
                    |r| r.get(0),
                )
                .optional()?;
            if known.is_some() {
                return Ok(Accepted::Duplicate);
            }
            let per_device: i64 = tx.query_row(
                &format!("SELECT count(*) FROM commands WHERE device = ?1 AND state IN {OPEN}"),
                [&command.device],
                |r| r.get(0),
            )?;
            let total: i64 =
                tx.query_row(&format!("SELECT count(*) FROM commands WHERE state IN {OPEN}"), [], |r| r.get(0))?;
            let refused = if per_device as u64 >= self.max_per_device {
                Some(format!(
                    "refused: {per_device} commands for this device are already waiting (commands.max_per_device)"
                ))
            } else if total as u64 >= self.max_total {
                Some(format!("refused: {total} commands are already waiting (commands.max_total)"))
            } else {
                None
            };
            let state = if refused.is_some() { "failed" } else { "accepted" };
            tx.execute(
                "INSERT INTO commands (device, id, name, payload, deadline_ms, state, received_ms, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
                params![command.device, command.id, command.name, command.payload, command.deadline_ms, state, now_ms],
            )?;
            let outcome = match refused {
                Some(reason) => {
                    status(&tx, &command.device, Some(&command.id), "failed", Some(&reason), now_ms)?;
                    Accepted::Refused(reason)
                }
                None => {
                    status(&tx, &command.device, Some(&command.id), "accepted", None, now_ms)?;
                    Accepted::Queued
                }
            };
            tx.commit()?;
            Ok(outcome)
        })
    }

    /// Reports a command that could not be read (bad JSON, bad device id...): a `failed`
    /// status only; nothing is queued.
    pub fn refuse(&self, device: &str, id: Option<&str>, reason: &str, now_ms: i64) -> rusqlite::Result<()> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            status(&tx, device, id, "failed", Some(reason), now_ms)?;
            tx.commit()
        })
    }

    /// Expires open commands past their deadline (`expired`), forgets old finished ones,
    /// and returns every device's oldest open command; and whether statuses were written.
    pub fn heads(&self, now_ms: i64) -> rusqlite::Result<(Vec<Head>, bool)> {
        self.with(|conn| {
            let overdue: i64 = conn.query_row(
                &format!("SELECT count(*) FROM commands WHERE state IN {OPEN} AND deadline_ms < ?1"),
                [now_ms],
                |r| r.get(0),
            )?;
            let forget: i64 = conn.query_row(
                &format!("SELECT count(*) FROM commands WHERE state NOT IN {OPEN} AND updated_ms < ?1"),
                [now_ms - self.keep_finished_ms],
                |r| r.get(0),
            )?;
            if overdue > 0 || forget > 0 {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let rows: Vec<(i64, String, String, String)> = tx
                    .prepare(&format!(
                        "SELECT seq, device, id, state FROM commands
                         WHERE state IN {OPEN} AND deadline_ms < ?1 ORDER BY seq"
                    ))?
                    .query_map([now_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                    .collect::<Result<_, _>>()?;
                for (seq, device, id, state) in &rows {
                    let message = (state == "delivered")
                        .then_some("delivered, but the device reported no result before the deadline");
                    status(&tx, device, Some(id), "expired", message, now_ms)?;
                    tx.execute(
                        "UPDATE commands SET state = 'expired', updated_ms = ?2 WHERE seq = ?1",
                        params![seq, now_ms],
                    )?;
                }
                tx.execute(
                    &format!("DELETE FROM commands WHERE state NOT IN {OPEN} AND updated_ms < ?1"),
                    [now_ms - self.keep_finished_ms],
                )?;
                tx.commit()?;
            }
            let heads = conn
                .prepare(&format!(
                    "SELECT seq, device, id, name, payload, deadline_ms FROM commands
                     WHERE seq IN (SELECT min(seq) FROM commands WHERE state IN {OPEN} GROUP BY device)
                     ORDER BY seq"
                ))?
                .query_map([], |r| {
                    Ok(Head {
                        seq: r.get(0)?,
                        command: NewCommand {
                            device: r.get(1)?,
                            id: r.get(2)?,
                            name: r.get(3)?,
                            payload: r.get(4)?,
                            deadline_ms: r.get(5)?,
                        },
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok((heads, overdue > 0))
        })
    }

    /// Applies a device's answer: `delivered`, `done` or `failed` (a final answer to a
    /// command not yet delivered reports `delivered` first). Returns whether anything
    /// changed (an answer to an unknown or finished command changes nothing).
    pub fn reply(
        &self,
        device: &str,
        id: &str,
        answer: &str,
        message: Option<&str>,
        now_ms: i64,
    ) -> rusqlite::Result<bool> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let state: Option<String> = tx
                .query_row(
                    &format!("SELECT state FROM commands WHERE device = ?1 AND id = ?2 AND state IN {OPEN}"),
                    params![device, id],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(state) = state else { return Ok(false) };
            let next = match (state.as_str(), answer) {
                ("accepted", "delivered") => "delivered",
                (_, "done") => "done",
                (_, "failed") => "failed",
                _ => return Ok(false),
            };
            if state == "accepted" {
                let message = if next == "delivered" { message } else { None };
                status(&tx, device, Some(id), "delivered", message, now_ms)?;
            }
            if next != "delivered" {
                status(&tx, device, Some(id), next, message, now_ms)?;
            }
            tx.execute(
                "UPDATE commands SET state = ?3, updated_ms = ?4 WHERE device = ?1 AND id = ?2",
                params![device, id, next, now_ms],
            )?;
            tx.commit()?;
            Ok(true)
        })
    }

    /// Up to `limit` statuses with row ids above `after`, oldest first.
    pub fn outbox(&self, after: i64, limit: usize) -> rusqlite::Result<Vec<StatusRow>> {
        self.with(|conn| {
            conn.prepare_cached(
                "SELECT id, device, command, status, message, ts FROM command_status WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?
            .query_map(params![after, limit as i64], |r| {
                Ok(StatusRow {
                    row: r.get(0)?,
                    device: r.get(1)?,
                    command: r.get(2)?,
                    status: r.get(3)?,
                    message: r.get(4)?,
                    ts: r.get(5)?,
                })
            })?
            .collect()
        })
    }

    /// The cloud PUBACKed status `row`: forget it.
    pub fn published(&self, row: i64) -> rusqlite::Result<()> {
        self.with(|conn| conn.execute("DELETE FROM command_status WHERE id = ?1", [row]).map(|_| ()))
    }

    /// Open commands and statuses waiting for the cloud, for logs and tests.
    pub fn counts(&self) -> rusqlite::Result<(u64, u64)> {
        self.with(|conn| {
            let open: i64 =
                conn.query_row(&format!("SELECT count(*) FROM commands WHERE state IN {OPEN}"), [], |r| r.get(0))?;
            let outbox: i64 = conn.query_row("SELECT count(*) FROM command_status", [], |r| r.get(0))?;
            Ok((open as u64, outbox as u64))
        })
    }
}

fn status(
    tx: &rusqlite::Transaction<'_>,
    device: &str,
    command: Option<&str>,
    status: &str,
    message: Option<&str>,
    now_ms: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT INTO command_status (device, command, status, message, ts) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![device, command, status, message, now_ms])
        .map(|_| ())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn store(max_per_device: u64) -> (CommandStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let (mut config, _) = crate::config::commands::validate(None, "gw", "gw");
        config.max_per_device = max_per_device;
        config.max_total = 3;
        let store = CommandStore::open(&Journal::new(dir.path()), Synchronous::Normal, &config).unwrap();
        (store, dir)
    }

    fn command(device: &str, id: &str, deadline_ms: i64) -> NewCommand {
        NewCommand { device: device.into(), id: id.into(), name: "ping".into(), payload: "null".into(), deadline_ms }
    }

    fn statuses(store: &CommandStore) -> Vec<(String, String)> {
        store.outbox(0, 100).unwrap().into_iter().map(|s| (s.command.unwrap_or_default(), s.status)).collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn a_command_goes_accepted_delivered_done_once_and_in_order() {
        let (store, _dir) = store(10);
        assert_eq!(store.accept(&command("d1", "a", 1000), 1).unwrap(), Accepted::Queued);
        assert_eq!(store.accept(&command("d1", "b", 1000), 2).unwrap(), Accepted::Queued);
        assert_eq!(store.accept(&command("d1", "a", 1000), 3).unwrap(), Accepted::Duplicate);
        let (heads, _) = store.heads(5).unwrap();
        assert_eq!(
            heads.iter().map(|h| h.command.id.as_str()).collect::<Vec<_>>(),
            ["a"],
            "one at a time, oldest first"
        );
        assert!(store.reply("d1", "a", "delivered", None, 6).unwrap());
        assert!(store.reply("d1", "a", "done", Some("pong"), 7).unwrap());
        assert!(!store.reply("d1", "a", "done", Some("pong"), 8).unwrap(), "a repeated answer changes nothing");
        // A final answer without a delivered one still reports delivered first.
        assert!(store.reply("d1", "b", "failed", Some("no"), 9).unwrap());
        assert_eq!(
            statuses(&store),
            pairs(&[
                ("a", "accepted"),
                ("b", "accepted"),
                ("a", "delivered"),
                ("a", "done"),
                ("b", "delivered"),
                ("b", "failed")
            ])
        );
        let rows = store.outbox(0, 100).unwrap();
        assert_eq!(
            String::from_utf8(rows[3].to_json()).unwrap(),
            r#"{"id":"a","message":"pong","status":"done","ts":7}"#
        );
        store.published(rows[0].row).unwrap();
        assert_eq!(store.outbox(0, 100).unwrap().len(), 5);
        assert_eq!(store.counts().unwrap(), (0, 5));
    }

    #[test]
    fn overdue_commands_expire_and_bounds_refuse() {
        let (store, _dir) = store(2);
        store.accept(&command("d1", "late", 10), 1).unwrap();
        store.accept(&command("d1", "ok", 1000), 1).unwrap();
        assert!(
            matches!(store.accept(&command("d1", "third", 1000), 1).unwrap(), Accepted::Refused(r) if r.contains("max_per_device"))
        );
        store.accept(&command("d2", "x", 1000), 1).unwrap();
        assert!(
            matches!(store.accept(&command("d3", "y", 1000), 1).unwrap(), Accepted::Refused(r) if r.contains("max_total"))
        );
        let (heads, expired) = store.heads(11).unwrap();
        assert!(expired);
        assert_eq!(heads.iter().map(|h| h.command.id.as_str()).collect::<Vec<_>>(), ["ok", "x"]);
        let got = statuses(&store);
        assert_eq!(got.last().unwrap(), &("late".to_string(), "expired".to_string()));
        assert_eq!(got.iter().filter(|(_, s)| s == "failed").count(), 2);
        assert!(!store.reply("d1", "late", "done", None, 12).unwrap(), "too late: it stays expired");
        // Finished commands are forgotten after keep_finished (a day by default).
        store.heads(11 + 86_400_001).unwrap();
        assert_eq!(store.accept(&command("d1", "late", 0), 86_400_100).unwrap(), Accepted::Queued);
    }
}
