//! The gateway as a list of stages: [`run`] starts each from a small context, in the order
//! data needs them, and stops them in reverse ([`Stages`]), on shutdown and on a failed
//! start alike.
//!
//! 1. journal: opened first, so nothing is accepted before it can be kept;
//! 2. forwarder: sends what the journal holds (also the backlog of an earlier run);
//! 3. device side: the embedded broker and its gate, or a client of an existing broker;
//! 4. downlink: cloud-to-device commands (when enabled);
//! 5. HTTP API: status, metrics, dead letters (when `[http].listen` is set).
//!
//! Stop: the device side stops taking events, the forwarder gets `cloud.shutdown_timeout`
//! to collect the acks of batches in flight, then the journal commits what it has been
//! handed and closes. docs/architecture.md has the data flow and each stage's invariants.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use tracing::{error, info};

use crate::api::{self, Status};
use crate::config::{Config, Unrouted};
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::pipeline::{Running, Source, Stages};
use crate::{devices, downlink, forward, store};

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The journal could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The device side could not start.
    #[error(transparent)]
    Devices(#[from] devices::DevicesError),
    /// The HTTP endpoints could not start.
    #[error(transparent)]
    Http(#[from] std::io::Error),
}

/// Runs the gateway until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let started = Instant::now();
    // The HTTP port is bound first and held until the API serves on it: a taken port is a
    // start-up error before anything runs, and nothing can take it in between.
    let http = config.http.listen.map(|listen| std::net::TcpListener::bind(listen).map_err(|e| http_error(listen, e)));
    let http = http.transpose()?;
    let metrics = Arc::new(Metrics::of(&config));
    let mut stages = Stages::new();
    // The device side's reload handle (devices::Control), for the reload module.
    let (status, _devices) = match start(&config, &metrics, started, http, &mut stages).await {
        Ok(started) => started,
        Err(err) => {
            stages.stop().await;
            return Err(err);
        }
    };
    status.ready.store(true, Ordering::Relaxed);
    info!("{}", config.summary());
    info!("gateway ready");
    watch_stages(shutdown, &status, &stages).await;
    info!("shutting down: stop taking events, wait for in-flight acks, close the journal");
    stages.stop().await;
    info!("stopped");
    Ok(())
}

/// Starts every stage into `stages`, in order; returns the state the API serves and the
/// device side's reload handle.
async fn start(
    config: &Config,
    metrics: &Arc<Metrics>,
    started: Instant,
    http: Option<std::net::TcpListener>,
    stages: &mut Stages,
) -> Result<(Arc<Status>, devices::Control), RunError> {
    let (acks_tx, acks) = mpsc::channel();
    let (replay_tx, replays) = mpsc::channel();
    let store::Store { handle: store, opened, writer } = store::start(config, metrics.clone(), Some(acks_tx))?;
    let backlog: u64 = opened.depth.iter().sum();
    info!(backlog, took_ms = started.elapsed().as_millis() as u64, "journal open");
    stages.vital("journal writer", Running::Journal(writer));

    let forwarder = forward::Setup {
        gateway_id: config.gateway.id.clone(),
        cloud: config.cloud.clone(),
        routes: config.routes.clone(),
        last_batch: opened.last_batch.clone(),
        store: store.clone(),
        metrics: metrics.as_ref().into(),
    };
    stages.vital("forwarder", Running::Task(tokio::spawn(forward::run(forwarder, stages.token()))));

    let ingest = Ingest::new(config.routes.clone(), metrics.clone(), opened.filter_state.clone(), opened.gateway_boot)
        .keep_unrouted(config.devices.unrouted == Unrouted::DeadLetter);
    let source = Source { ingest, store: store.clone(), acks, replays };
    let device_side = devices::start(&config.devices, source, metrics.as_ref().into(), stages.token()).await?;
    stages.vital("device ingest", device_side.running);

    if let Some(task) = downlink::spawn(config, device_side.embedded, metrics.clone(), stages.token())? {
        stages.auxiliary("downlink", Running::Task(task));
    }

    let status = Arc::new(Status {
        gateway_id: config.gateway.id.clone(),
        metrics: metrics.clone(),
        ready: false.into(),
        healthy: true.into(),
        started,
        store,
        replay: replay_tx,
        token: config.http.token.clone(),
    });
    if let Some(listener) = http {
        let (serving, stop) = (status.clone(), stages.token());
        let task = tokio::spawn(async move {
            if let Err(err) = api::serve_on(listener, serving, stop).await {
                error!(error = %err, "HTTP endpoints stopped");
            }
        });
        stages.auxiliary("http", Running::Task(task));
    }
    Ok((status, device_side.control))
}

fn http_error(listen: std::net::SocketAddr, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("cannot listen for HTTP on {listen}: {e} (change [http].listen)"))
}

/// Waits for `shutdown`; meanwhile, once a second, updates the rates and checks that every
/// vital stage still runs. One that stopped on its own makes `/healthz` fail (and is
/// logged once): the process is then alive but no longer doing its job, and a supervisor
/// should restart it.
async fn watch_stages(shutdown: impl Future<Output = ()>, status: &Status, stages: &Stages) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let metrics = &status.metrics;
    let mut last = (Instant::now(), metrics.ingest.received.get(), metrics.forwarded());
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        // Rates for /api/status, from one-second deltas of the counters.
        let now = (Instant::now(), metrics.ingest.received.get(), metrics.forwarded());
        let secs = now.0.duration_since(last.0).as_secs_f64().max(0.001);
        metrics.rate_in.set(((now.1 - last.1) as f64 / secs).round() as u64);
        metrics.rate_out.set(((now.2.saturating_sub(last.2)) as f64 / secs).round() as u64);
        last = now;
        for stage in stages.stopped() {
            if status.healthy.swap(false, Ordering::Relaxed) {
                error!(stage, "a pipeline stage stopped; /healthz now fails; restart the gateway");
            }
        }
    }
}
