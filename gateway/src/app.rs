//! Wiring: starts every stage for a [`Config`] and stops them in order.
//!
//! Start: journal (so nothing is accepted before it can be kept), forwarder, HTTP, then
//! the device side. Stop (on `shutdown`): the forwarder gets `cloud.shutdown_timeout` to
//! collect the acks of batches in flight, then the journal commits what it has been handed
//! and closes. rumqttd cannot be stopped; its thread ends with the process.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::api::{self, Status};
use crate::config::{Config, DevicesMode, Unrouted};
use crate::devices::{self, embedded};
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::{forward, store};

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
    let metrics = Arc::new(Metrics::of(&config));
    let (acks_tx, acks_rx) = mpsc::channel();
    let (replay_tx, replay_rx) = mpsc::channel();
    let store::Store { handle: store, opened, writer } = store::start(&config, metrics.clone(), Some(acks_tx))?;
    let backlog: u64 = opened.depth.iter().sum();
    info!(backlog, took_ms = started.elapsed().as_millis() as u64, "journal open");

    let stop = CancellationToken::new();
    let status = Arc::new(Status {
        gateway_id: config.gateway.id.clone(),
        metrics: metrics.clone(),
        ready: false.into(),
        healthy: true.into(),
        started,
        store: store.clone(),
        replay: replay_tx,
        token: config.http.token.clone(),
    });
    let http = match config.http.listen {
        Some(listen) => {
            // Bind now so that a taken port is a start-up error, not a log line.
            let task_status = status.clone();
            let task_stop = stop.clone();
            let listener = std::net::TcpListener::bind(listen).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen for HTTP on {listen}: {e} (change [http].listen)"))
            })?;
            drop(listener);
            Some(tokio::spawn(async move {
                if let Err(err) = api::serve(listen, task_status, task_stop).await {
                    error!(error = %err, "HTTP endpoints stopped");
                }
            }))
        }
        None => None,
    };

    let forwarder = tokio::spawn(forward::run(
        config.gateway.id.clone(),
        config.cloud.clone(),
        config.routes.clone(),
        opened.last_batch.clone(),
        store.clone(),
        metrics.clone(),
        stop.clone(),
    ));

    let ingest = Ingest::new(config.routes.clone(), metrics.clone(), opened.filter_state.clone(), opened.gateway_boot)
        .keep_unrouted(config.devices.unrouted == Unrouted::DeadLetter);
    let mut embedded_ingest = None;
    let mut embedded_broker = None;
    let device_task = match &config.devices.mode {
        DevicesMode::Embedded { listen, listen_v5, max_connections, broker_memory, access, tls } => {
            let settings = embedded::BrokerSettings {
                listen: *listen,
                listen_v5: *listen_v5,
                max_connections: *max_connections,
                max_payload: config.devices.max_payload,
                memory: *broker_memory,
                access: access.clone(),
                tls: tls.clone(),
            };
            let runtime = tokio::runtime::Handle::current();
            let for_ingest = store.clone();
            let for_gate = metrics.clone();
            let started = tokio::task::spawn_blocking(move || {
                embedded::start(settings, ingest, for_ingest, acks_rx, replay_rx, for_gate, runtime)
            })
            .await
            .map_err(|e| devices::DevicesError::Broker(e.to_string()))?;
            match started {
                Ok(embedded) => {
                    embedded_broker = Some(embedded.inner);
                    embedded_ingest = Some(embedded.ingest_thread);
                }
                Err(err) => {
                    stop.cancel();
                    writer.close().await;
                    return Err(err.into());
                }
            }
            None
        }
        DevicesMode::External { url, client_id, security } => Some(tokio::spawn(devices::external::run(
            devices::external::Broker {
                url: url.clone(),
                client_id: client_id.clone(),
                security: security.clone(),
                max_payload: config.devices.max_payload,
            },
            ingest,
            store.clone(),
            acks_rx,
            replay_rx,
            stop.clone(),
        ))),
    };
    let downlink = crate::downlink::spawn(&config, embedded_broker, metrics.clone(), stop.clone())?;
    status.ready.store(true, Ordering::Relaxed);
    info!("{}", config.summary());
    info!("gateway ready");

    watch_stages(shutdown, &status, &writer, embedded_ingest.as_ref(), &forwarder, device_task.as_ref()).await;
    info!("shutting down: stop taking events, wait for in-flight acks, close the journal");
    stop.cancel();
    if let Some(task) = device_task {
        let _ = task.await;
    }
    if let Some(task) = downlink {
        let _ = task.await;
    }
    let _ = forwarder.await;
    writer.close().await;
    if let Some(task) = http {
        let _ = task.await;
    }
    info!("stopped");
    Ok(())
}

/// Waits for `shutdown`; meanwhile, once a second, updates the rates and checks that every
/// stage still runs.
/// A stage that stopped on its own makes `/healthz` fail (and is logged once): the process
/// is then alive but no longer doing its job, and a supervisor should restart it.
async fn watch_stages(
    shutdown: impl Future<Output = ()>,
    status: &Status,
    writer: &store::WriterGuard,
    ingest: Option<&JoinHandle<()>>,
    forwarder: &tokio::task::JoinHandle<()>,
    device_task: Option<&tokio::task::JoinHandle<()>>,
) {
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
        let stopped = [
            ("journal writer", writer.is_finished()),
            (
                "device ingest",
                ingest.is_some_and(JoinHandle::is_finished) || device_task.is_some_and(|t| t.is_finished()),
            ),
            ("forwarder", forwarder.is_finished()),
        ];
        for (stage, _) in stopped.iter().filter(|(_, done)| *done) {
            if status.healthy.swap(false, Ordering::Relaxed) {
                error!(stage, "a pipeline stage stopped; /healthz now fails; restart the gateway");
            }
        }
    }
}
