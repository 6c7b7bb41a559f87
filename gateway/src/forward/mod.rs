//! The forwarder: reads each route's queue oldest-first, publishes batches to the cloud
//! (QoS 1) and deletes rows only when the cloud's PUBACK for the publish that carried them
//! has arrived.
//!
//! # Why a fresh client per connection
//!
//! rumqttc's `publish()` returns when the request is queued, not delivered, and after a
//! reconnect without a session it silently drops what it had queued. So each connection
//! gets a new `AsyncClient`/`EventLoop` pair, and nothing of the old one survives: batches
//! that were in flight are simply still in the journal (not acknowledged => not deleted),
//! and the new session re-reads every route from its oldest row. Within one connection,
//! each publish request produces exactly one `Outgoing::Publish(pkid)` event, in request
//! order, which is how a packet id is tied to its batch; `Incoming::PubAck(pkid)` then
//! acknowledges that batch.
//!
//! # Order and duplicates
//!
//! Per route, batches are published in queue order and a broker acknowledges in order,
//! so the cloud sees each device's events in commit order. A lost connection re-sends
//! what was in flight: duplicates are limited to those batches (README, "What it guarantees" 2).
//!
//! # Batching
//!
//! A route sends when `max_events` rows are waiting, or when the first waiting row has
//! waited `max_delay`; after an outage the backlog goes out in full batches, up to
//! `cloud.max_inflight` unacknowledged at a time, while new rows keep being committed.
//! Routes share the in-flight window by weighted round robin: on its turn a route sends
//! up to `priority` batches, so under a backlog higher priorities drain faster and none
//! starves.

pub mod batch;
mod live;
pub mod metrics;

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use rumqttc::{AsyncClient, ConnectionError, Event, Outgoing, Packet, QoS};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{CloudConfig, LinkSecurity, RouteConfig};
use crate::link::{self, Backoff, OnError};
use crate::meter::DropReason;
use crate::store::{now_ms, StoreError, StoreHandle};
use crate::util::RateLimited;
pub use live::RouteSlot;
pub use metrics::{ForwardMeters, ForwardMetrics};

/// How often an idle route looks at the journal even without a commit notification.
const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// A route's forwarding state within one connection.
struct RouteState {
    config: RouteConfig,
    /// False once a reload removed the route: nothing more is sent (its rows stay).
    active: bool,
    /// Highest row id already published in this connection.
    cursor: i64,
    /// Rows believed to wait beyond the cursor (a hint: a short read resets it).
    ahead: u64,
    /// Commit counter value already accounted in `ahead`.
    seen: u64,
    /// When the oldest unsent row started waiting.
    waiting_since: Option<Instant>,
    /// Number of the next batch.
    next_batch: u64,
    /// Batches it may still send in its current turn (weighted round robin).
    credit: u32,
}

/// A published batch waiting for its PUBACK.
struct InFlight {
    route: usize,
    first: i64,
    last: i64,
    batch: u64,
    received_ms: Vec<i64>,
    rows: usize,
}

/// How a connection ended.
enum End {
    Shutdown,
    Lost(String),
}

/// What the forwarder is started with.
pub struct Setup {
    /// The gateway's id (`{gateway}` in cloud topics, the client id).
    pub gateway_id: String,
    /// The cloud link.
    pub cloud: CloudConfig,
    /// The routes, in config order (index = route index in the journal).
    pub routes: Vec<RouteConfig>,
    /// Per route, the last batch number used (batch numbers go on from there).
    pub last_batch: Vec<u64>,
    /// The journal (rows to send, queue depth, deletes on PUBACK).
    pub store: StoreHandle,
    /// What it reports to.
    pub metrics: ForwardMeters,
    /// Route slots added, changed or removed by reloads ([`RouteSlot`]).
    pub changes: mpsc::UnboundedReceiver<RouteSlot>,
    /// The cloud link's credentials and certificates, read at each connect (a reload sends
    /// new ones; the connection up keeps its own).
    pub security: watch::Receiver<LinkSecurity>,
}

/// Forwards every route to the cloud until `shutdown`; then waits up to
/// `cloud.shutdown_timeout` for the acks of batches in flight.
pub async fn run(setup: Setup, shutdown: CancellationToken) {
    let Setup { gateway_id, cloud, routes, last_batch, store, metrics, mut changes, security } = setup;
    let mut states: Vec<RouteState> = routes
        .into_iter()
        .zip(last_batch)
        .map(|(config, last)| RouteState {
            config,
            active: true,
            cursor: 0,
            ahead: 0,
            seen: 0,
            waiting_since: None,
            next_batch: last + 1,
            credit: 0,
        })
        .collect();
    let mut backoff = Backoff::new(cloud.backoff_min, cloud.backoff_max);
    let mut failures = RateLimited::new(Duration::from_secs(30));
    let mut connected_before = false;
    loop {
        let mut session = Session {
            gateway_id: &gateway_id,
            cloud: &cloud,
            security: security.borrow().clone(),
            store: &store,
            metrics: &metrics,
            routes: &mut states,
            changes: &mut changes,
            turn: 0,
        };
        let end = session.run(&shutdown, &mut backoff, &mut connected_before).await;
        metrics.forward.set_link(false, now_ms());
        match end {
            End::Shutdown => return,
            End::Lost(reason) => {
                metrics.last_error.note(now_ms(), format!("cloud link down: {reason}"));
                if let Some(suppressed) = failures.allow() {
                    warn!(cloud = %cloud.url, %reason, suppressed, "cloud link down; events are kept in the journal and sent when it is back");
                }
            }
        }
        let retry = tokio::time::sleep(backoff.next_delay());
        tokio::pin!(retry);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = &mut retry => break,
                Some(change) = changes.recv() => live::apply(&mut states, change, None, &metrics),
            }
        }
    }
}

struct Session<'a> {
    gateway_id: &'a str,
    cloud: &'a CloudConfig,
    /// The credentials of this connection (a reload's apply to the next one).
    security: LinkSecurity,
    store: &'a StoreHandle,
    metrics: &'a ForwardMeters,
    routes: &'a mut Vec<RouteState>,
    changes: &'a mut mpsc::UnboundedReceiver<RouteSlot>,
    /// Whose turn it is (index modulo the number of routes).
    turn: usize,
}

impl Session<'_> {
    async fn run(&mut self, shutdown: &CancellationToken, backoff: &mut Backoff, connected_before: &mut bool) -> End {
        // Built per connection: certificate files are read again, so renewed ones are used.
        let mut options = match crate::tls::mqtt_options(&self.cloud.client_id, &self.cloud.url, &self.security) {
            Ok(options) => options,
            Err(err) => return End::Lost(format!("cannot set up TLS: {err}")),
        };
        let inflight = self.cloud.max_inflight;
        options
            .set_clean_session(true)
            .set_keep_alive(self.cloud.keep_alive)
            .set_max_packet_size(64 * 1024, self.cloud.max_packet_size.bytes() as usize)
            .set_inflight(inflight.min(u16::MAX as usize - 1) as u16)
            .set_request_channel_capacity(inflight + 8);
        let (client, mut eventloop) = AsyncClient::new(options, inflight + 8);
        eventloop.network_options.set_connection_timeout(self.cloud.connect_timeout.as_secs().max(1));

        // Connect: the first poll dials; wait for the CONNACK.
        let connect = async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(err) => return Err(err),
                }
            }
        };
        let connected = tokio::select! {
            _ = shutdown.cancelled() => return End::Shutdown,
            result = tokio::time::timeout(self.cloud.connect_timeout, connect) => result,
        };
        match connected {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return End::Lost(self.describe(&err)),
            Err(_) => return End::Lost(format!("no CONNACK within {:?}", self.cloud.connect_timeout)),
        }
        backoff.reset();
        self.metrics.forward.set_link(true, now_ms());
        if *connected_before {
            self.metrics.forward.reconnects.add(1);
        }
        *connected_before = true;
        info!(cloud = %self.cloud.url, "cloud link up");
        if self.security.tls.as_ref().is_some_and(|t| t.insecure_skip_verify) {
            warn!(cloud = %self.cloud.url, "cloud.insecure_skip_verify: connected WITHOUT verifying the cloud's certificate (lab use only)");
        }

        let mut poller = link::spawn_poller(eventloop, 256, OnError::Stop);
        let end = self.exchange(&client, &mut poller.events, shutdown).await;
        let _ = client.try_disconnect();
        drop(poller);
        end
    }

    /// A link error as a sentence naming the setting or file involved (never a secret).
    fn describe(&self, err: &ConnectionError) -> String {
        crate::tls::describe(err, "the cloud broker", &self.security)
    }

    /// Publishes and acknowledges until the link is lost or shutdown completes.
    async fn exchange(
        &mut self,
        client: &AsyncClient,
        events: &mut mpsc::Receiver<Result<Event, ConnectionError>>,
        shutdown: &CancellationToken,
    ) -> End {
        let committed = self.store.committed().clone();
        let now = Instant::now();
        for (index, route) in self.routes.iter_mut().enumerate() {
            // Counter first, then depth: a commit in between is counted twice (harmless,
            // a short read corrects it), never missed.
            route.seen = committed.count(index);
            route.ahead = committed.depth(index);
            route.cursor = 0;
            route.waiting_since = (route.ahead > 0).then_some(now - route.config.batch.max_delay);
        }
        let mut awaiting_pkid: VecDeque<InFlight> = VecDeque::new();
        let mut inflight: HashMap<u16, InFlight> = HashMap::new();
        let mut draining: Option<Instant> = None;
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        loop {
            if draining.is_none() {
                if let Err(end) = self.send_ready(client, &mut awaiting_pkid, inflight.len()).await {
                    return end;
                }
            }
            if let Some(deadline) = draining {
                if awaiting_pkid.is_empty() && inflight.is_empty() {
                    return End::Shutdown;
                }
                if Instant::now() >= deadline {
                    warn!(
                        batches = awaiting_pkid.len() + inflight.len(),
                        "shutdown: batches still unacknowledged stay in the journal and are sent after restart"
                    );
                    return End::Shutdown;
                }
            }
            let wake = self.next_deadline(awaiting_pkid.len() + inflight.len()).or(draining);
            tokio::select! {
                _ = shutdown.cancelled(), if draining.is_none() => {
                    draining = Some(Instant::now() + self.cloud.shutdown_timeout);
                }
                event = events.recv() => match event {
                    Some(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                        if let Some(batch) = awaiting_pkid.pop_front() {
                            inflight.insert(pkid, batch);
                        }
                    }
                    Some(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                        if let Some(batch) = inflight.remove(&ack.pkid) {
                            if let Err(end) = self.acknowledged(batch) {
                                return end;
                            }
                        }
                    }
                    Some(Ok(Event::Incoming(Packet::Disconnect))) => return End::Lost("the cloud broker disconnected us".into()),
                    Some(Ok(_)) => {}
                    Some(Err(err)) => return End::Lost(self.describe(&err)),
                    None => return End::Lost("event loop ended".into()),
                },
                _ = committed.changed() => {
                    let now = Instant::now();
                    for (index, route) in self.routes.iter_mut().enumerate() {
                        let count = committed.count(index);
                        let delta = count.saturating_sub(route.seen);
                        route.seen = count;
                        if delta > 0 {
                            if route.ahead == 0 {
                                route.waiting_since = Some(now);
                            }
                            route.ahead += delta;
                        }
                    }
                }
                Some(change) = self.changes.recv() => {
                    live::apply(self.routes, change, Some(&committed), self.metrics);
                }
                _ = sweep.tick() => {
                    for (index, route) in self.routes.iter_mut().enumerate() {
                        if route.ahead == 0 && committed.depth(index) > 0 {
                            route.ahead = 1;
                            route.waiting_since = Some(Instant::now());
                        }
                    }
                }
                _ = sleep_until(wake) => {}
            }
        }
    }

    /// The earliest moment a route becomes ready by `max_delay`, if sending is possible.
    fn next_deadline(&self, in_flight: usize) -> Option<Instant> {
        if in_flight >= self.cloud.max_inflight {
            return None;
        }
        self.routes
            .iter()
            .filter(|r| r.active && r.ahead > 0)
            .filter_map(|r| r.waiting_since.map(|t| t + r.config.batch.max_delay))
            .min()
    }

    /// Publishes every batch that is due, up to the in-flight bound.
    async fn send_ready(
        &mut self,
        client: &AsyncClient,
        awaiting: &mut VecDeque<InFlight>,
        acked_pending: usize,
    ) -> Result<(), End> {
        // Weighted round robin: on its turn a route may send up to `priority` batches, then
        // the next route's turn comes. A route with nothing due passes its turn. So under a
        // backlog higher priorities drain faster, and no route starves.
        let n = self.routes.len();
        let mut idle = 0;
        while idle < n {
            if awaiting.len() + acked_pending >= self.cloud.max_inflight {
                return Ok(());
            }
            let index = self.turn % n;
            if self.routes[index].credit == 0 {
                self.routes[index].credit = self.routes[index].config.priority;
            }
            if self.send_one(index, client, awaiting).await? {
                idle = 0;
                let route = &mut self.routes[index];
                route.credit -= 1;
                if route.credit == 0 {
                    self.turn = index + 1;
                }
            } else {
                self.routes[index].credit = 0;
                self.turn = index + 1;
                idle += 1;
            }
        }
        Ok(())
    }

    /// Publishes one batch of route `index` if one is due; false when none is.
    async fn send_one(
        &mut self,
        index: usize,
        client: &AsyncClient,
        awaiting: &mut VecDeque<InFlight>,
    ) -> Result<bool, End> {
        let now = Instant::now();
        let route = &self.routes[index];
        let batch_cfg = route.config.batch;
        let due = route.active
            && (route.ahead >= batch_cfg.max_events as u64
                || (route.ahead > 0 && route.waiting_since.is_some_and(|t| now >= t + batch_cfg.max_delay)));
        if !due {
            return Ok(false);
        }
        let rows = self.store.read(index, route.cursor, batch_cfg.max_events).await.map_err(store_end)?;
        let route = &mut self.routes[index];
        // A short read means nothing more is waiting; a full one means there may be more,
        // whatever the estimate says, so it never drops to 0 then.
        route.ahead =
            if rows.len() < batch_cfg.max_events { 0 } else { route.ahead.saturating_sub(rows.len() as u64).max(1) };
        let header = batch::Header {
            gateway: self.gateway_id,
            route: &route.config.name,
            batch: route.next_batch,
            topic: &route.config.to,
            max_bytes: batch_cfg.max_bytes.bytes() as usize,
            format: route.config.encoding.format,
        };
        let Some(built) = batch::build(&header, &rows) else {
            route.waiting_since = None;
            return Ok(false);
        };
        route.ahead += (rows.len() - built.rows) as u64;
        route.cursor = built.last;
        if route.ahead == 0 {
            route.waiting_since = None;
        }
        if built.undecodable > 0 {
            self.metrics.count_drop(DropReason::Invalid, built.undecodable);
        }
        let batch_no = route.next_batch;
        route.next_batch += 1;
        let encoding = route.config.encoding;
        let topic = encoding.topic(built.topic, built.replay);
        let payload =
            encoding.compress(built.payload).map_err(|e| End::Lost(format!("cannot compress a batch: {e}")))?;
        client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .map_err(|e| End::Lost(format!("publish refused by the client: {e}")))?;
        awaiting.push_back(InFlight {
            route: index,
            first: built.first,
            last: built.last,
            batch: batch_no,
            received_ms: built.received_ms,
            rows: built.rows,
        });
        Ok(true)
    }

    /// The cloud has the batch: delete its rows, count it.
    fn acknowledged(&mut self, batch: InFlight) -> Result<(), End> {
        self.store.ack(batch.route, batch.first, batch.last, batch.batch).map_err(store_end)?;
        let now = now_ms();
        let metrics = &self.metrics.forward;
        if let Some(route) = metrics.routes.get(batch.route) {
            route.forwarded.add(batch.received_ms.len() as u64);
            route.batches.add(1);
            route.batch_size.observe_n(batch.rows as f64, 1);
        }
        for received in &batch.received_ms {
            metrics.latency.observe_n((now - received).max(0) as f64 / 1000.0, 1);
        }
        Ok(())
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn store_end(err: StoreError) -> End {
    End::Lost(format!("journal unavailable: {err}"))
}
