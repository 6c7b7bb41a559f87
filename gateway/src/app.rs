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
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use tracing::{error, info};

use crate::api::{self, Status};
use crate::config::{Config, RemoteDocument, Secret, Unrouted};
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::pipeline::{RouteControl, Running, Source, Stages};
use crate::reload::{self, Part, Reloader};
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
    /// SIGHUP (reload) could not be watched.
    #[error("cannot watch SIGHUP: {0}")]
    Signal(std::io::Error),
}

/// What `run` needs besides the config: where the config came from (a reload re-reads
/// it) and how to change the log filter live.
#[derive(Default)]
pub struct Options {
    /// The config file (None: no reload; `SIGHUP` is then taken and ignored).
    pub config_path: Option<PathBuf>,
    /// Sets the log filter (`[log].filter`) of the running process: one line saying what
    /// changed, or why it could not.
    pub log_filter: Option<LogFilter>,
}

/// Sets the log filter of the running process ([`Options::log_filter`]).
pub type LogFilter = Box<dyn Fn(&str) -> Result<String, String> + Send + Sync>;

/// Runs the gateway until `shutdown` resolves.
pub async fn run(config: Config, options: Options, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let started = Instant::now();
    // SIGHUP is taken from the first moment: its default action ends the process, and a
    // `systemctl reload` may come while the stages start. One that comes meanwhile is a
    // reload right after the start (the file may have changed since it was read). Once
    // taken, it stays taken for the life of the process (tokio never gives it back), so
    // without a config path a SIGHUP is ignored.
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(RunError::Signal)?;
    // The HTTP port is bound first and held until the API serves on it: a taken port is a
    // start-up error before anything runs, and nothing can take it in between.
    let http = config.http.listen.map(|listen| std::net::TcpListener::bind(listen).map_err(|e| http_error(listen, e)));
    let http = http.transpose()?;
    // The cloud's config document of an earlier run goes over the file before anything
    // starts ([remote_config]): a restart with the cloud down runs what it last applied.
    let (config, remote) = reload::remote::at_start(config, options.config_path.as_deref());
    let metrics = Arc::new(Metrics::of(&config));
    let mut stages = Stages::new();
    let reload = (options, remote, hangup);
    let status = match start(&config, reload, &metrics, started, http, &mut stages).await {
        Ok(status) => status,
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

/// Starts every stage into `stages`, in order; returns the state the API serves.
async fn start(
    config: &Config,
    (options, remote, hangup): (Options, Option<RemoteDocument>, tokio::signal::unix::Signal),
    metrics: &Arc<Metrics>,
    started: Instant,
    http: Option<std::net::TcpListener>,
    stages: &mut Stages,
) -> Result<Arc<Status>, RunError> {
    let (acks_tx, acks) = mpsc::channel();
    let (replay_tx, replays) = mpsc::channel();
    let store::Store { handle: store, opened, writer } = store::start(config, metrics.clone(), Some(acks_tx))?;
    let backlog: u64 = opened.depth.iter().sum();
    info!(backlog, took_ms = started.elapsed().as_millis() as u64, "journal open");
    stages.vital("journal writer", Running::Journal(writer));
    // What a reload calls to change the routes and the cloud credentials of the stages.
    let (routes, wiring) = RouteControl::new(store.clone(), &config.routes, &config.cloud, metrics.as_ref().into());

    let forwarder = forward::Setup {
        gateway_id: config.gateway.id.clone(),
        cloud: config.cloud.clone(),
        routes: config.routes.clone(),
        last_batch: opened.last_batch.clone(),
        store: store.clone(),
        metrics: metrics.as_ref().into(),
        changes: wiring.forwarder,
        security: wiring.security.clone(),
    };
    stages.vital("forwarder", Running::Task(tokio::spawn(forward::run(forwarder, stages.token()))));

    let ingest = Ingest::new(config.routes.clone(), metrics.clone(), opened.filter_state.clone(), opened.gateway_boot)
        .keep_unrouted(config.devices.unrouted == Unrouted::DeadLetter)
        .with_updates(wiring.ingest);
    let source = Source { ingest, store: store.clone(), acks, replays };
    let device_side = devices::start(&config.devices, source, metrics.as_ref().into(), stages.token()).await?;
    stages.vital("device ingest", device_side.running);

    if let Some(task) = downlink::spawn(config, wiring.security, device_side.embedded, metrics.clone(), stages.token())?
    {
        stages.auxiliary("downlink", Running::Task(task));
    }

    let token = Arc::new(RwLock::new(config.http.token.clone()));
    let reload = match options.config_path {
        Some(path) => {
            let external = matches!(config.devices.mode, crate::config::DevicesMode::External { .. })
                .then(|| config.routes.iter().map(|r| r.from.mqtt_filter()).collect());
            let control = device_side.control.clone();
            let parts = reload_parts(options.log_filter, token.clone(), control, Arc::new(routes), external);
            let reloader = Reloader::new(path, config, remote.clone(), parts, metrics.reload.clone());
            let (handle, task) = reload::spawn(reloader, hangup, stages.token());
            stages.auxiliary("reload", Running::Task(task));
            if config.remote.enabled {
                let session = reload::remote::Session {
                    remote: config.remote.clone(),
                    cloud: config.cloud.clone(),
                    gateway_id: config.gateway.id.clone(),
                    reload: handle.clone(),
                    store: store.clone(),
                    in_effect: remote,
                    last_payload: None,
                };
                let task = tokio::spawn(reload::remote::run(session, stages.token()));
                stages.auxiliary("remote config", Running::Task(task));
            }
            Some(handle)
        }
        None => None,
    };
    let status = Arc::new(Status {
        gateway_id: config.gateway.id.clone(),
        metrics: metrics.clone(),
        ready: false.into(),
        healthy: true.into(),
        started,
        store,
        replay: replay_tx,
        token,
        reload,
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
    Ok(status)
}

/// What a reload applies live, one part per stage that can change without a restart
/// (docs/architecture.md, "Live reload"); every other changed key needs a restart.
fn reload_parts(
    log_filter: Option<LogFilter>,
    token: Arc<RwLock<Option<Secret>>>,
    devices: devices::Control,
    routes: Arc<RouteControl>,
    external: Option<Vec<String>>,
) -> Vec<Part> {
    let mut parts = devices_parts(devices);
    // Reloads run off the runtime (reload::spawn); the route changes wait on the stages.
    let runtime = tokio::runtime::Handle::current();
    let control = routes.clone();
    parts.push(Part {
        name: "routes",
        keys: &["routes", "devices.unrouted"],
        apply: Box::new(move |config: &Config| {
            let mut lines = runtime.block_on(control.apply_routes(&config.routes, config.devices.unrouted))?;
            // A client of an existing broker subscribes at connect (devices/external.rs): a
            // topic filter no subscription covers gets nothing until the next start.
            if let Some(subscribed) = &external {
                let new: Vec<String> = config
                    .routes
                    .iter()
                    .map(|r| r.from.mqtt_filter())
                    .filter(|f| !subscribed.contains(f))
                    .collect();
                if !new.is_empty() {
                    lines.push(format!(
                        "routes: NOT subscribed before a restart (the device broker's subscriptions are made at start in \
                         mode = \"external\"): {}",
                        new.join(", ")
                    ));
                }
            }
            Ok(lines)
        }),
    });
    parts.push(Part {
        name: "cloud credentials",
        keys: &["cloud.username", "cloud.password", "cloud.ca_file", "cloud.cert_file", "cloud.key_file"],
        apply: Box::new(move |config: &Config| {
            let lines = routes.apply_cloud(&config.cloud);
            // Same paths, new content (a certificate renewed in place): the files are read
            // at each connection anyway.
            Ok(if lines.is_empty() {
                vec!["cloud credentials: the files are read again at the next connection".to_owned()]
            } else {
                lines
            })
        }),
    });
    if let Some(set_filter) = log_filter {
        parts.push(Part {
            name: "log filter",
            keys: &["log.filter"],
            apply: Box::new(move |config: &Config| set_filter(&config.log.filter).map(|line| vec![line])),
        });
    }
    parts.push(Part {
        name: "HTTP token",
        keys: &["http.token", "http.token_file"],
        apply: Box::new(move |config: &Config| {
            let new = config.http.token.clone();
            let line = match &new {
                Some(_) => "http.token: the API wants the new token from now on",
                None => "http.token: removed; the API no longer wants a token",
            };
            *token.write().unwrap_or_else(PoisonError::into_inner) = new;
            if let Some(warning) = api::exposure_warning(&config.http) {
                tracing::warn!("{warning}");
            }
            Ok(vec![line.to_owned()])
        }),
    });
    parts
}

/// The device side's parts (devices/control.rs): users, limits and TLS each apply or fail
/// on their own; the rest of `[devices]` needs a restart.
fn devices_parts(control: devices::Control) -> Vec<Part> {
    let (users, limits, tls) = (control.clone(), control.clone(), control);
    vec![
        Part {
            name: "device users",
            keys: &["devices.auth"],
            apply: Box::new(move |config: &Config| users.apply_users(&config.devices)),
        },
        Part {
            name: "device limits",
            keys: &["devices.max_connections", "devices.max_payload"],
            apply: Box::new(move |config: &Config| limits.apply_limits(&config.devices)),
        },
        Part {
            name: "device TLS",
            keys: &["devices.tls_cert_file", "devices.tls_key_file", "devices.tls_client_ca_file"],
            apply: Box::new(move |config: &Config| tls.apply_tls(&config.devices)),
        },
    ]
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
