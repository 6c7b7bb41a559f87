//! Ingest: one device publish in, one [`Incoming`] out — a decoded, validated event with
//! the routes that take it, or a dead letter with its reason.
//!
//! Pure CPU, no I/O: it runs on the thread that drains the device broker, so that thread
//! keeps up with the broker (rumqttd drops what a slow reader has not taken). Invariant:
//! every publish ends as exactly one of committed, dead letter, or a counted drop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::RouteConfig;
use crate::filters::{RouteFilter, StateUpdate};
use crate::metrics::{DropReason, Metrics};
use crate::store::{now_ms, DeadLetter, Done, Incoming, NewEvent};

/// Decodes, validates, routes and filters device publishes.
pub struct Ingest {
    routes: Vec<RouteConfig>,
    filters: Vec<RouteFilter>,
    metrics: Arc<Metrics>,
    bad_log: RateLimited,
}

impl Ingest {
    /// An ingest stage for these routes, with the filter state the journal kept.
    pub fn new(
        routes: Vec<RouteConfig>,
        metrics: Arc<Metrics>,
        restored: Vec<StateUpdate>,
    ) -> Ingest {
        let mut filters: Vec<RouteFilter> = routes
            .iter()
            .map(|r| RouteFilter::new(r.filter.clone()))
            .collect();
        for update in restored {
            if let Some(index) = routes.iter().position(|r| r.name == update.route) {
                filters[index].restore(update.device, update.state);
            }
        }
        Ingest {
            routes,
            filters,
            metrics,
            bad_log: RateLimited::new(Duration::from_secs(10)),
        }
    }

    /// The MQTT filters to subscribe to on the device side, one per route, deduplicated.
    pub fn filters(&self) -> Vec<String> {
        let mut filters: Vec<String> = self.routes.iter().map(|r| r.from.mqtt_filter()).collect();
        filters.sort();
        filters.dedup();
        filters
    }

    /// Turns one publish into what the store should do with it; `None` when no route's
    /// topic filter takes it (counted as `no_route`; `done` runs at once). An event that
    /// every route's rules refuse still goes to the store with no routes, so that its
    /// device mark (the ack) moves past it.
    pub fn process(&mut self, topic: &str, payload: &[u8], done: Option<Done>) -> Option<Incoming> {
        self.metrics.received.add(1);
        let received_ms = now_ms();
        let mut device_level = None;
        let mut matched = Vec::with_capacity(1);
        for (index, route) in self.routes.iter().enumerate() {
            if let Some(level) = route.from.matches(topic) {
                matched.push(index);
                device_level = device_level.or(level);
            }
        }
        if matched.is_empty() {
            self.metrics.count_drop(DropReason::NoRoute, 1);
            if let Some(done) = done {
                done();
            }
            return None;
        }
        let event = match edge_event::decode_any(payload) {
            Ok((event, _format)) => event,
            Err(err) => {
                return Some(self.dead_letter(
                    topic,
                    payload,
                    format!("undecodable payload: {err}"),
                    received_ms,
                    done,
                ))
            }
        };
        if let Err(err) = event.validate(Some(received_ms.max(0) as u64)) {
            return Some(self.dead_letter(
                topic,
                payload,
                format!("invalid event: {err}"),
                received_ms,
                done,
            ));
        }
        if let Some(level) = device_level {
            if level != event.device.as_str() {
                let reason = format!(
                    "the topic names device {level:?} but the event says {:?}",
                    event.device.as_str()
                );
                return Some(self.dead_letter(topic, payload, reason, received_ms, done));
            }
        }
        let mut routes = Vec::with_capacity(matched.len());
        let mut filter_state = Vec::new();
        for index in matched {
            match self.filters[index].check(&event, received_ms) {
                Ok(update) => {
                    routes.push(index);
                    filter_state.extend(update.map(|u| StateUpdate {
                        route: self.routes[index].name.clone(),
                        ..u
                    }));
                }
                Err(refusal) => self.metrics.routes[index].count_filtered(refusal),
            }
        }
        if routes.is_empty() {
            self.metrics.count_drop(DropReason::Filter, 1);
        }
        match self.new_event(&event, routes, received_ms, done, filter_state, false) {
            Ok(event) => Some(event),
            Err(reason) => Some(self.dead_letter(topic, payload, reason, received_ms, None)),
        }
    }

    /// Events held by `keep_last` filters whose interval has ended: forwarded now.
    pub fn flush_held(&mut self) -> Vec<Incoming> {
        let now = now_ms();
        let mut out = Vec::new();
        for index in 0..self.filters.len() {
            for (event, update) in self.filters[index].flush_due(now) {
                let update = StateUpdate {
                    route: self.routes[index].name.clone(),
                    ..update
                };
                if let Ok(item) = self.new_event(&event, vec![index], now, None, vec![update], true)
                {
                    out.push(item);
                }
            }
        }
        out
    }

    fn new_event(
        &self,
        event: &edge_event::Event,
        routes: Vec<usize>,
        received_ms: i64,
        done: Option<Done>,
        filter_state: Vec<StateUpdate>,
        held: bool,
    ) -> Result<Incoming, String> {
        let mut buf = [0u8; edge_event::MAX_ENCODED_LEN];
        let len = edge_event::encode(event, &mut buf)
            .map_err(|err| format!("cannot re-encode event: {err}"))?;
        Ok(Incoming::Event(NewEvent {
            device: event.device.as_str().to_owned(),
            boot: event.boot,
            seq: event.seq,
            routes,
            payload: buf[..len].to_vec(),
            received_ms,
            done,
            filter_state,
            held,
        }))
    }

    fn dead_letter(
        &mut self,
        topic: &str,
        payload: &[u8],
        reason: String,
        received_ms: i64,
        done: Option<Done>,
    ) -> Incoming {
        self.metrics.count_drop(DropReason::Invalid, 1);
        if let Some(suppressed) = self.bad_log.allow() {
            tracing::warn!(topic, %reason, suppressed, "bad device payload kept as a dead letter");
        }
        Incoming::DeadLetter(DeadLetter {
            topic: topic.to_owned(),
            payload: payload.to_vec(),
            reason,
            received_ms,
            done,
        })
    }
}

/// Lets one log line through per period and counts the rest.
#[derive(Debug)]
pub struct RateLimited {
    period: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimited {
    /// One line per `period`.
    pub fn new(period: Duration) -> Self {
        RateLimited {
            period,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(lines suppressed since the last one)` when a line may be logged now.
    pub fn allow(&mut self) -> Option<u64> {
        if self.last.is_some_and(|t| t.elapsed() < self.period) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn ingest() -> (Ingest, Arc<Metrics>) {
        let config = Config::parse(
            "[[routes]]\nname = \"t\"\nfrom = \"devices/+/events\"\nto = \"c/{gateway}\"\n",
        )
        .unwrap();
        let metrics = Arc::new(Metrics::new(&["t".into()]));
        (
            Ingest::new(config.routes, metrics.clone(), Vec::new()),
            metrics,
        )
    }

    #[test]
    fn a_json_event_becomes_a_routed_postcard_row() {
        let (mut ingest, _) = ingest();
        let json = br#"{"device":"d1","boot":1,"seq":42,"ts":1764000000123,"type":"temperature","readings":{"celsius":21.5}}"#;
        let Some(Incoming::Event(event)) = ingest.process("devices/d1/events", json, None) else {
            panic!("not an event")
        };
        assert_eq!(
            (
                event.device.as_str(),
                event.boot,
                event.seq,
                event.routes.as_slice()
            ),
            ("d1", 1, 42, &[0][..])
        );
        let decoded = edge_event::decode(&event.payload).unwrap();
        assert_eq!(decoded.seq, 42);
    }

    #[test]
    fn garbage_and_mismatched_devices_become_dead_letters_with_reasons() {
        let (mut ingest, metrics) = ingest();
        let Some(Incoming::DeadLetter(letter)) =
            ingest.process("devices/d1/events", b"\xff\xfe garbage", None)
        else {
            panic!()
        };
        assert!(
            letter.reason.starts_with("undecodable payload"),
            "{}",
            letter.reason
        );
        let json = br#"{"device":"d2","boot":1,"seq":1,"type":"t","readings":{}}"#;
        let Some(Incoming::DeadLetter(letter)) = ingest.process("devices/d1/events", json, None)
        else {
            panic!()
        };
        assert!(
            letter
                .reason
                .contains("names device \"d1\" but the event says \"d2\""),
            "{}",
            letter.reason
        );
        assert_eq!(metrics.dropped(DropReason::Invalid), 2);
    }

    #[test]
    fn unrouted_topics_are_counted_and_released() {
        let (mut ingest, metrics) = ingest();
        let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = released.clone();
        let done: Done = Box::new(move || flag.store(true, std::sync::atomic::Ordering::SeqCst));
        assert!(ingest.process("other/topic", b"{}", Some(done)).is_none());
        assert!(released.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(metrics.dropped(DropReason::NoRoute), 1);
    }
}
