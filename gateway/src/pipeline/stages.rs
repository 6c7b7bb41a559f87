//! Stage lifecycle. `app::run` starts each stage from a small context and adds it here, in
//! start order: the journal first (nothing is accepted before it can be kept), then the
//! forwarder, the device source, the downlink and the HTTP API. [`Stages::stop`] stops
//! them in reverse order, on shutdown and on a failed start alike, so the device side stops
//! taking events before the forwarder collects its last acks, and the journal closes last,
//! after it committed everything it was handed.
//!
//! Tasks stop when the shared token is cancelled and are awaited; the journal is closed
//! through its [`WriterGuard`] (which joins the writer thread). A device-ingest thread of
//! the embedded broker is only watched: rumqttd cannot be stopped, and the thread ends with
//! the process (its hand-overs after the journal closed are refused, never half-written).

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::store::WriterGuard;

/// A started stage.
pub enum Running {
    /// An async task that ends when the stages' token is cancelled.
    Task(JoinHandle<()>),
    /// A thread that is watched but not joined (see the module doc).
    Thread(std::thread::JoinHandle<()>),
    /// The journal's writer.
    Journal(WriterGuard),
}

impl Running {
    fn is_finished(&self) -> bool {
        match self {
            Running::Task(task) => task.is_finished(),
            Running::Thread(thread) => thread.is_finished(),
            Running::Journal(writer) => writer.is_finished(),
        }
    }

    async fn stop(self) {
        match self {
            Running::Task(task) => {
                let _ = task.await;
            }
            Running::Thread(_) => {}
            Running::Journal(writer) => writer.close().await,
        }
    }
}

/// One started stage: its name (for logs), whether `/healthz` depends on it, and its handle.
struct Stage {
    name: &'static str,
    vital: bool,
    running: Running,
}

/// The started stages, in start order, and the token that tells them to stop.
#[derive(Default)]
pub struct Stages {
    stop: CancellationToken,
    started: Vec<Stage>,
}

impl Stages {
    /// No stage yet.
    pub fn new() -> Stages {
        Stages::default()
    }

    /// The token a task stage stops on.
    pub fn token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Adds a started stage the pipeline cannot do without: if it ends on its own,
    /// [`Stages::stopped`] names it (and `/healthz` fails).
    pub fn vital(&mut self, name: &'static str, running: Running) {
        self.started.push(Stage { name, vital: true, running });
    }

    /// Adds a started stage whose end the pipeline survives (the downlink, the HTTP API).
    pub fn auxiliary(&mut self, name: &'static str, running: Running) {
        self.started.push(Stage { name, vital: false, running });
    }

    /// The vital stages that ended on their own.
    pub fn stopped(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.started.iter().filter(|s| s.vital && s.running.is_finished()).map(|s| s.name)
    }

    /// Cancels the token, then stops every stage, the last started first.
    pub async fn stop(mut self) {
        self.stop.cancel();
        while let Some(stage) = self.started.pop() {
            tracing::debug!(stage = stage.name, "stopping");
            stage.running.stop().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::metrics::Metrics;
    use crate::store::test_config::store_config;
    use crate::store::{now_ms, Incoming, Journal, NewEvent, RouteSpec, Store};

    fn open(dir: &std::path::Path) -> Store {
        let metrics = Arc::new(Metrics::new(&["r".into()]));
        let routes = [RouteSpec { name: "r".into(), max_age: None }];
        Journal::new(dir).open(&store_config(), &routes, metrics, None).unwrap()
    }

    /// The journal is started first, so it is closed last: a later stage that still hands
    /// an event over while it stops (slowly) gets it committed.
    #[tokio::test]
    async fn the_journal_closes_after_every_later_stage_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let Store { handle, writer, .. } = open(dir.path());
        let mut stages = Stages::new();
        stages.vital("journal writer", Running::Journal(writer));
        let token = stages.token();
        stages.vital(
            "device source",
            Running::Task(tokio::spawn(async move {
                token.cancelled().await;
                // A slow stop: the journal must wait for it.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let event = Incoming::Event(NewEvent {
                    device: "d".into(),
                    boot: 1,
                    seq: 1,
                    routes: vec![0],
                    payload: vec![1; 8],
                    received_ms: now_ms(),
                    done: None,
                    filter_state: Vec::new(),
                    held: false,
                });
                handle.ingest(vec![event]).expect("the journal still takes events");
            })),
        );
        stages.stop().await;
        let reopened = open(dir.path());
        assert_eq!(reopened.opened.depth, [1], "the last hand-over was committed before the journal closed");
        reopened.writer.close().await;
    }

    #[tokio::test]
    async fn a_vital_stage_that_ended_is_named() {
        let mut stages = Stages::new();
        let ended = tokio::spawn(async {});
        let aux = tokio::spawn(async {});
        while !ended.is_finished() || !aux.is_finished() {
            tokio::task::yield_now().await;
        }
        stages.vital("forwarder", Running::Task(ended));
        stages.auxiliary("http", Running::Task(aux));
        let token = stages.token();
        stages.vital("device source", Running::Task(tokio::spawn(async move { token.cancelled().await })));
        assert_eq!(stages.stopped().collect::<Vec<_>>(), ["forwarder"]);
        stages.stop().await;
    }
}
