//! Live reload: `SIGHUP`, `edge-gateway reload` (`POST /api/reload`) and the systemd
//! unit's `ExecReload=` re-read the config file the gateway was started with, and apply
//! what can change without a restart (docs/architecture.md, "Live reload").
//!
//! A reload is:
//! 1. **Load and validate the whole file** ([`Config::load`], exactly as at start, which
//!    also re-reads the files it names: users file, token and password files,
//!    certificates). If anything is wrong, *nothing* changes: the old config keeps running,
//!    and every error with its key path is logged, kept as the last outcome
//!    (`/api/status`) and counted (`edge_gateway_config_reloads_total{result="refused"}`).
//! 2. **Compare** the file's settings with the running ones, key by key
//!    ([`crate::config::Settings`]).
//! 3. **Apply each changed part** that has a [`Part`]: a stage's apply function, handed
//!    the new config. The parts are registered by `app` from the stages it started; a
//!    key no part covers needs a restart.
//! 4. **Report**: one line per change applied; every changed key that needs a restart,
//!    by name (never silently ignored: it stays a difference between the file and the
//!    running config, so the next reload and `check-config --diff` show it again); the
//!    errors of a part that failed.
//!
//! Invariants:
//! - One reload at a time (they queue on the reload task), so the running settings are
//!   only ever changed by the reload that compared against them.
//! - A part is called only when one of its keys changed, with a config that validated
//!   whole; what it does not apply, it reports as an error, and its keys then stay
//!   different from the file.
//! - Nothing here touches a device connection or an event: the stages' apply functions
//!   own that (each documents what it keeps).

pub mod metrics;
pub mod remote;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use crate::config::{Config, RemoteDocument, Settings};
pub use metrics::{ReloadMetrics, ReloadResult};

/// A stage's apply function: handed the new, valid config; answers one line per change
/// applied, or why it could not apply (then nothing of its part changed).
pub type ApplyFn = Box<dyn Fn(&Config) -> Result<Vec<String>, String> + Send + Sync>;

/// What one stage applies live.
pub struct Part {
    /// Its name in reports ("routes", "device users and limits", "log filter").
    pub name: &'static str,
    /// The key paths it applies: a changed key that starts with one of these is its.
    pub keys: &'static [&'static str],
    /// Applies the new config's part.
    pub apply: ApplyFn,
}

/// How the last reload ended: `/api/status`'s `last_reload`, and the answer to
/// `POST /api/reload`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// When it ended, ms since the epoch.
    pub at_ms: u64,
    /// What triggered it: `SIGHUP` or `api`.
    pub trigger: String,
    /// Applied, refused or failed.
    pub result: ReloadResult,
    /// One line per change applied (empty: the file had no live change).
    pub applied: Vec<String>,
    /// Changed keys that need a restart to take effect (they keep their old value until
    /// then).
    pub needs_restart: Vec<String>,
    /// Why the file was refused (every error, with its key path) or which part failed.
    pub errors: Vec<String>,
    /// The `version` of the cloud's config document in effect after this reload (None:
    /// none is; `[remote_config]`).
    #[serde(default)]
    pub remote_version: Option<String>,
}

/// One key of a [`Preview`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviewChange {
    /// The change (`key: before -> after`; secrets shown as `(secret)`).
    pub change: String,
    /// A reload applies it live (otherwise it needs a restart).
    pub live: bool,
}

/// What a reload of a given file would do: `check-config --diff`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preview {
    /// Why the file would be refused (empty: it is valid).
    pub errors: Vec<String>,
    /// Every key that differs from the running config.
    pub changes: Vec<PreviewChange>,
}

/// The reloader: the running settings, the parts, the cloud's document in effect, the last
/// outcome.
pub struct Reloader {
    path: PathBuf,
    running: Mutex<Settings>,
    parts: Vec<Part>,
    metrics: Arc<ReloadMetrics>,
    last: Mutex<Option<Outcome>>,
    /// The sections a cloud document may replace (`remote_config.sections` at start).
    remote_sections: Vec<String>,
    /// The cloud's document in effect: merged over the file by every reload.
    remote: Mutex<Option<RemoteDocument>>,
    /// The file's text as last loaded (at start, or by a reload that validated): what a
    /// cloud document is merged over.
    file_text: Mutex<String>,
}

/// What a reload loads: the file, and the cloud's document over it.
enum Source<'a> {
    /// The document in effect (a reload of the file).
    Current,
    /// A new document from the cloud (None: the cloud cleared it).
    Remote(&'a Option<RemoteDocument>),
}

impl Reloader {
    /// A reloader for the gateway started from `path` with `config` (which already has
    /// `remote`, the cloud's document kept from an earlier run, merged in).
    pub fn new(
        path: PathBuf,
        config: &Config,
        remote: Option<RemoteDocument>,
        parts: Vec<Part>,
        metrics: Arc<ReloadMetrics>,
    ) -> Reloader {
        Reloader {
            running: Mutex::new(config.settings.clone()),
            parts,
            metrics,
            last: Mutex::new(None),
            remote_sections: config.remote.sections.clone(),
            remote: Mutex::new(remote),
            // The file as the gateway read it moments ago; if it cannot be read now, a cloud
            // document is refused until a reload reads it.
            file_text: Mutex::new(std::fs::read_to_string(&path).unwrap_or_default()),
            path,
        }
    }

    fn remote(&self) -> std::sync::MutexGuard<'_, Option<RemoteDocument>> {
        self.remote.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The file's text with `document` merged over it, validated.
    /// `text` (a config file's) with `document` merged over it, validated.
    fn load(&self, text: &str, document: Option<&RemoteDocument>) -> Result<Config, Vec<String>> {
        let merged;
        let text = match document {
            Some(document) => {
                merged = document.merge(text, &self.remote_sections)?;
                &merged
            }
            None => text,
        };
        Config::parse(text).map_err(|errors| errors.iter().map(ToString::to_string).collect())
    }

    /// The last reload's outcome (None before the first).
    pub fn last(&self) -> Option<Outcome> {
        self.last.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Whether a reload applies `key` live.
    pub fn is_live(&self, key: &str) -> bool {
        self.part_of(key).is_some()
    }

    fn part_of(&self, key: &str) -> Option<usize> {
        self.parts.iter().position(|part| part.keys.iter().any(|prefix| key.starts_with(prefix)))
    }

    /// Re-reads the file and applies it (blocking: it may read files and wait for the
    /// stages; call it off the async runtime).
    pub fn reload(&self, trigger: &str) -> Outcome {
        self.run(trigger, Source::Current)
    }

    /// Applies a config document from the cloud over the file (None: the cloud cleared it,
    /// back to the file alone); `Err` is a document that could not be read. A document
    /// that is refused changes nothing; the one in effect stays.
    pub fn apply_remote(&self, document: Result<Option<RemoteDocument>, String>) -> Outcome {
        match document {
            Ok(document) => self.run("remote", Source::Remote(&document)),
            Err(err) => self.finish(self.refused("remote", vec![err])),
        }
    }

    fn run(&self, trigger: &str, source: Source<'_>) -> Outcome {
        let current = self.remote().clone();
        // A reload of the file reads it; a cloud document goes over the file as last
        // loaded, so that edits not reloaded yet are neither applied nor reported by it.
        let (text, candidate) = match source {
            Source::Current => match std::fs::read_to_string(&self.path) {
                Ok(text) => (text, &current),
                Err(e) => {
                    let error = format!("cannot read {}: {e}", self.path.display());
                    return self.finish(self.refused(trigger, vec![error]));
                }
            },
            Source::Remote(document) => (self.file_text().clone(), document),
        };
        let outcome = match self.load(&text, candidate.as_ref()) {
            Ok(config) => {
                let outcome = self.apply(&config, trigger, candidate);
                *self.remote() = candidate.clone();
                *self.file_text() = text;
                outcome
            }
            Err(errors) => self.refused(trigger, errors),
        };
        self.finish(outcome)
    }

    fn file_text(&self) -> std::sync::MutexGuard<'_, String> {
        self.file_text.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn refused(&self, trigger: &str, errors: Vec<String>) -> Outcome {
        error!(
            trigger,
            "config reload refused, nothing changed (the old config keeps running):\n  {}",
            errors.join("\n  ")
        );
        let remote = self.remote().as_ref().map(|d| d.version.clone());
        self.outcome(trigger, ReloadResult::Refused, Vec::new(), Vec::new(), errors, remote)
    }

    fn finish(&self, outcome: Outcome) -> Outcome {
        self.metrics.count(outcome.result, outcome.at_ms / 1000);
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(outcome.clone());
        outcome
    }

    fn apply(&self, config: &Config, trigger: &str, remote: &Option<RemoteDocument>) -> Outcome {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let changes = running.diff(&config.settings);
        let mut applied = Vec::new();
        let mut errors = Vec::new();
        let mut needs_restart = Vec::new();
        for change in changes.iter().filter(|c| self.part_of(&c.key).is_none()) {
            needs_restart.push(change.key.clone());
        }
        for (index, part) in self.parts.iter().enumerate() {
            let keys: Vec<&str> =
                changes.iter().filter(|c| self.part_of(&c.key) == Some(index)).map(|c| c.key.as_str()).collect();
            if keys.is_empty() {
                continue;
            }
            match (part.apply)(config) {
                Ok(lines) => {
                    for key in keys {
                        running.take(key, &config.settings);
                    }
                    applied.extend(lines);
                }
                Err(err) => errors.push(format!("{}: {err} ({} unchanged)", part.name, keys.join(", "))),
            }
        }
        drop(running);
        for line in &applied {
            info!(trigger, "config reload: {line}");
        }
        if !needs_restart.is_empty() {
            warn!(trigger, "config reload: these changes need a restart to take effect: {}", needs_restart.join(", "));
        }
        let result = if errors.is_empty() {
            if changes.is_empty() {
                info!(trigger, "config reload: no change");
            }
            ReloadResult::Applied
        } else {
            error!(trigger, "config reload: some changes could not be applied:\n  {}", errors.join("\n  "));
            ReloadResult::Failed
        };
        let version = remote.as_ref().map(|d| d.version.clone());
        self.outcome(trigger, result, applied, needs_restart, errors, version)
    }

    fn outcome(
        &self,
        trigger: &str,
        result: ReloadResult,
        applied: Vec<String>,
        needs_restart: Vec<String>,
        errors: Vec<String>,
        remote_version: Option<String>,
    ) -> Outcome {
        let at_ms = crate::store::now_ms().max(0) as u64;
        Outcome { at_ms, trigger: trigger.to_owned(), result, applied, needs_restart, errors, remote_version }
    }

    /// What reloading `text` would do, without doing it (`check-config --diff`): the
    /// cloud's document in effect is merged over it, as a reload would.
    pub fn preview(&self, text: &str) -> Preview {
        if let Ok(table) = text.parse::<toml::Table>() {
            let irregular = crate::config::settings::irregular_files(&table);
            if !irregular.is_empty() {
                return Preview { errors: irregular, changes: Vec::new() };
            }
        }
        let current = self.remote().clone();
        match self.load(text, current.as_ref()) {
            Err(errors) => Preview { errors, changes: Vec::new() },
            Ok(config) => {
                let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
                let changes = running
                    .diff(&config.settings)
                    .into_iter()
                    .map(|c| PreviewChange { live: self.is_live(&c.key), change: c.to_string() })
                    .collect();
                Preview { errors: Vec::new(), changes }
            }
        }
    }
}

/// A request to reload, and where its outcome goes.
struct Request {
    what: What,
    reply: Option<tokio::sync::oneshot::Sender<Outcome>>,
}

/// What a request reloads.
enum What {
    /// The file (with the cloud's document in effect); the trigger's name.
    File(&'static str),
    /// A new document from the cloud.
    Remote(Result<Option<RemoteDocument>, String>),
}

/// What the API and the remote session hold: asks the reload task for a reload, reads the
/// last outcome, previews a file.
#[derive(Clone)]
pub struct Handle {
    /// The reloader (last outcome, preview).
    pub reloader: Arc<Reloader>,
    requests: tokio::sync::mpsc::Sender<Request>,
}

impl Handle {
    /// Reloads (queued behind a reload in progress) and answers its outcome; None when
    /// the gateway is stopping.
    pub async fn reload(&self, trigger: &'static str) -> Option<Outcome> {
        self.ask(What::File(trigger)).await
    }

    /// Applies a document from the cloud ([`Reloader::apply_remote`]), queued like a reload.
    pub async fn apply_remote(&self, document: Result<Option<RemoteDocument>, String>) -> Option<Outcome> {
        self.ask(What::Remote(document)).await
    }

    async fn ask(&self, what: What) -> Option<Outcome> {
        let (reply, outcome) = tokio::sync::oneshot::channel();
        self.requests.send(Request { what, reply: Some(reply) }).await.ok()?;
        outcome.await.ok()
    }
}

/// Starts the reload task: reloads on `SIGHUP` (`hangup`, taken by the caller as early as
/// it can), [`Handle::reload`] and
/// [`Handle::apply_remote`], one at a time, until `stop`. Answers the handle.
pub fn spawn(
    reloader: Reloader,
    mut hangup: tokio::signal::unix::Signal,
    stop: tokio_util::sync::CancellationToken,
) -> (Handle, tokio::task::JoinHandle<()>) {
    let reloader = Arc::new(reloader);
    let (requests, mut queue) = tokio::sync::mpsc::channel::<Request>(8);
    let task_reloader = reloader.clone();
    let task = tokio::spawn(async move {
        loop {
            let request = tokio::select! {
                _ = stop.cancelled() => return,
                _ = hangup.recv() => Request { what: What::File("SIGHUP"), reply: None },
                request = queue.recv() => match request {
                    Some(request) => request,
                    None => return,
                },
            };
            let reloader = task_reloader.clone();
            let what = request.what;
            let done = tokio::task::spawn_blocking(move || match what {
                What::File(trigger) => reloader.reload(trigger),
                What::Remote(document) => reloader.apply_remote(document),
            });
            match done.await {
                Ok(outcome) => {
                    if let Some(reply) = request.reply {
                        let _ = reply.send(outcome);
                    }
                }
                Err(err) => error!(error = %err, "config reload stopped unexpectedly"),
            }
        }
    });
    (Handle { reloader, requests }, task)
}

#[cfg(test)]
mod tests;
