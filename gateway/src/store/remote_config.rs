//! The last config document from the cloud that was applied (`[remote_config]`; the
//! `remote` stage), kept in the journal so that a restart with the cloud down runs it
//! again. Written by the writer ([`StoreHandle::remember_remote_config`]), read once at
//! start before the writer opens ([`last_applied`]).

use rusqlite::{params, Connection, OptionalExtension};

use super::{Journal, StoreError, StoreHandle};
use crate::config::RemoteDocument;

/// Stores `document` as the last applied one (the writer's connection, autocommit: one
/// fsynced transaction).
pub(super) fn save(conn: &Connection, document: &RemoteDocument, at_ms: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO remote_config (id, version, document, applied_ms) VALUES (1, ?1, ?2, ?3)
         ON CONFLICT(id) DO UPDATE SET version = ?1, document = ?2, applied_ms = ?3",
        params![document.version, document.text, at_ms],
    )
    .map(|_| ())
}

/// Forgets the last applied document (the cloud cleared its retained message).
pub(super) fn clear(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM remote_config", []).map(|_| ())
}

/// The last applied document, if any: None for a journal that does not exist yet or was
/// written by a gateway without remote config.
pub fn last_applied(journal: &Journal) -> Result<Option<RemoteDocument>, StoreError> {
    if !journal.path().exists() {
        return Ok(None);
    }
    let conn = journal.read_only()?;
    let found = conn
        .query_row("SELECT version, document FROM remote_config WHERE id = 1", [], |r| {
            Ok(RemoteDocument { version: r.get(0)?, text: r.get(1)? })
        })
        .optional();
    match found {
        Ok(found) => Ok(found),
        Err(rusqlite::Error::SqliteFailure(_, Some(message))) if message.contains("no such table") => Ok(None),
        Err(err) => Err(StoreError::Failed(format!("cannot read the last remote config: {err}"))),
    }
}

impl StoreHandle {
    /// Keeps `document` (None: forget it) as the last applied remote config; answers once
    /// it is durable.
    pub async fn remember_remote_config(&self, document: Option<RemoteDocument>) -> Result<(), StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.send(super::handle::Command::RemoteConfig { document, reply })?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}
