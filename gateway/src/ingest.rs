//! Ingest: one device publish in, one [`Incoming`] out — a decoded, validated event with
//! the routes that take it, or a dead letter with its reason.
//!
//! Pure CPU, no I/O: it runs on the thread that drains the device broker, so that thread
//! keeps up with the broker (rumqttd drops what a slow reader has not taken). Invariant:
//! every publish ends as exactly one of committed, dead letter, or a counted drop.

use std::time::Duration;

use std::collections::HashMap;

use crate::config::{Input, RouteConfig};
use crate::fields;
use crate::filters::{RouteFilter, StateUpdate};
use crate::meter::DropReason;
use crate::store::{now_ms, DeadLetter, Done, Incoming, NewEvent};
use crate::util::RateLimited;
pub use live::RouteUpdate;
pub use metrics::{IngestMeters, IngestMetrics};

mod live;
pub mod metrics;

/// Decodes, validates, routes and filters device publishes.
pub struct Ingest {
    /// By route slot (`store::RouteIndex`); None: removed by a reload (the slot stays).
    routes: Vec<Option<RouteConfig>>,
    /// New route sets from reloads ([`live`]), taken before the next publish.
    updates: Option<std::sync::mpsc::Receiver<RouteUpdate>>,
    /// Boot id of events the gateway numbers itself (json-fields).
    gateway_boot: u32,
    /// Last seq given per device (json-fields).
    seqs: HashMap<String, u32>,
    /// Keep publishes no route takes as dead letters (else only count them).
    keep_unrouted: bool,
    filters: Vec<RouteFilter>,
    metrics: IngestMeters,
    bad_log: RateLimited,
    /// Where events are re-encoded before the exact bytes are copied into their row: one
    /// buffer for the life of the stage, so that no event pays for zeroing (or moving) a
    /// `MAX_ENCODED_LEN` array.
    scratch: Box<[u8; edge_event::MAX_ENCODED_LEN]>,
}

impl Ingest {
    /// An ingest stage for these routes, with the filter state the journal kept.
    pub fn new(
        routes: Vec<RouteConfig>,
        metrics: impl Into<IngestMeters>,
        restored: Vec<StateUpdate>,
        gateway_boot: u32,
    ) -> Ingest {
        let mut filters: Vec<RouteFilter> = routes.iter().map(|r| RouteFilter::new(r.filter.clone())).collect();
        for update in restored {
            if let Some(index) = routes.iter().position(|r| r.name == update.route) {
                filters[index].restore(update.device, update.state);
            }
        }
        Ingest {
            routes: routes.into_iter().map(Some).collect(),
            updates: None,
            gateway_boot,
            seqs: HashMap::new(),
            keep_unrouted: false,
            filters,
            metrics: metrics.into(),
            bad_log: RateLimited::new(Duration::from_secs(10)),
            scratch: Box::new([0; edge_event::MAX_ENCODED_LEN]),
        }
    }

    /// Keeps publishes that no route takes as dead letters (`devices.unrouted`).
    pub fn keep_unrouted(mut self, keep: bool) -> Ingest {
        self.keep_unrouted = keep;
        self
    }

    /// Counts publishes the device broker overwrote before ingest could take them.
    pub fn count_overrun(&self, lost: u64) {
        self.metrics.count_drop(DropReason::Overrun, lost);
        self.metrics
            .last_error
            .note(now_ms(), format!("the device broker overwrote {lost} publishes before ingest took them"));
    }

    /// A publish the device gate refused (a device outside its own topics): a dead letter
    /// with `reason` and its `publisher` (the device the gate authenticated), counted as
    /// dropped, reason `denied` (the gate logged it).
    pub fn denied(&mut self, topic: String, payload: Vec<u8>, reason: String, publisher: String) -> Incoming {
        self.metrics.count_drop(DropReason::Denied, 1);
        Incoming::DeadLetter(DeadLetter {
            topic,
            payload,
            reason,
            received_ms: now_ms(),
            publisher: Some(publisher),
            done: None,
        })
    }

    /// The MQTT filters to subscribe to on the device side, one per route, deduplicated.
    pub fn filters(&self) -> Vec<String> {
        let mut filters: Vec<String> = self.routes.iter().flatten().map(|r| r.from.mqtt_filter()).collect();
        filters.sort();
        filters.dedup();
        filters
    }

    /// Turns one publish into what the store should do with it, appended to `out`: an
    /// event (one for the `edge-event` routes, one per `json-fields` route) or a dead
    /// letter. Nothing when no route's topic filter takes it (counted as `no_route`; `done`
    /// runs at once). An event that every route's rules refuse still goes to the store
    /// with no routes, so that its device mark (the ack) moves past it. `done` runs once,
    /// after the last item is committed.
    pub fn process(&mut self, topic: &str, payload: &[u8], done: Option<Done>, out: &mut Vec<Incoming>) {
        self.process_at(topic, payload, done, out, now_ms());
    }

    /// [`Ingest::process`] with the receive time given: a source that takes publishes in
    /// bursts reads the clock once per group, not once per publish.
    pub fn process_at(
        &mut self,
        topic: &str,
        payload: &[u8],
        done: Option<Done>,
        out: &mut Vec<Incoming>,
        received_ms: i64,
    ) {
        self.take_updates();
        self.metrics.ingest.received.add(1);
        let mut device_level = None;
        let mut edge_routes = Vec::with_capacity(1);
        let mut field_routes = Vec::new();
        for (index, route) in self.routes.iter().enumerate().filter_map(|(i, r)| Some((i, r.as_ref()?))) {
            if let Some(level) = route.from.matches(topic) {
                match route.input {
                    Input::EdgeEvent => {
                        edge_routes.push(index);
                        device_level = device_level.or(level);
                    }
                    Input::JsonFields { .. } => field_routes.push((index, level)),
                }
            }
        }
        if edge_routes.is_empty() && field_routes.is_empty() {
            self.metrics.count_drop(DropReason::NoRoute, 1);
            if self.keep_unrouted {
                let reason = format!("no route takes topic {topic:?}");
                let letter = DeadLetter {
                    topic: topic.to_owned(),
                    payload: payload.to_vec(),
                    reason,
                    received_ms,
                    publisher: None,
                    done,
                };
                out.push(Incoming::DeadLetter(letter));
            } else if let Some(done) = done {
                done();
            }
            return;
        }
        let first = out.len();
        if !edge_routes.is_empty() {
            out.push(self.edge_event(topic, payload, device_level, edge_routes, received_ms));
        }
        for (index, level) in field_routes {
            out.push(self.json_fields(topic, payload, index, level.unwrap_or_default(), received_ms));
        }
        if let Some(last) = out[first..].last_mut() {
            match last {
                Incoming::Event(event) => event.done = done,
                Incoming::DeadLetter(letter) => letter.done = done,
            }
        }
    }

    fn edge_event(
        &mut self,
        topic: &str,
        payload: &[u8],
        device_level: Option<&str>,
        matched: Vec<usize>,
        received_ms: i64,
    ) -> Incoming {
        // An event from a device without a wall clock carries its age: dated here, at receive,
        // and stored with that ts (edge-event's `dating` module).
        let event = match edge_event::decode_any_received(payload, received_ms.max(0) as u64) {
            Ok((event, _format)) => event,
            Err(err) => return self.dead_letter(topic, payload, format!("undecodable payload: {err}"), received_ms),
        };
        if let Err(err) = event.validate(Some(received_ms.max(0) as u64)) {
            return self.dead_letter(topic, payload, format!("invalid event: {err}"), received_ms);
        }
        if let Some(level) = device_level {
            if level != event.device.as_str() {
                let reason = format!("the topic names device {level:?} but the event says {:?}", event.device.as_str());
                return self.dead_letter(topic, payload, reason, received_ms);
            }
        }
        self.routed(topic, payload, &event, matched, received_ms)
    }

    fn json_fields(&mut self, topic: &str, payload: &[u8], index: usize, device: &str, received_ms: i64) -> Incoming {
        let Some(Input::JsonFields { event_type, map }) = self.routes[index].as_ref().map(|r| &r.input) else {
            return self.dead_letter(topic, payload, "internal: route is not json-fields".into(), received_ms);
        };
        let seq = self.seqs.get(device).copied().unwrap_or(0).wrapping_add(1);
        let event = match fields::decode(payload, map, device, event_type, self.gateway_boot, seq, received_ms) {
            Ok(event) => event,
            Err(reason) => {
                let reason = format!("route {:?} (json-fields): {reason}", self.route_name(index));
                return self.dead_letter(topic, payload, reason, received_ms);
            }
        };
        if let Err(err) = event.validate(Some(received_ms.max(0) as u64)) {
            return self.dead_letter(topic, payload, format!("invalid event: {err}"), received_ms);
        }
        self.seqs.insert(device.to_owned(), seq);
        self.routed(topic, payload, &event, vec![index], received_ms)
    }

    /// Applies the matched routes' filters and makes the store item.
    fn routed(
        &mut self,
        topic: &str,
        payload: &[u8],
        event: &edge_event::Event,
        matched: Vec<usize>,
        received_ms: i64,
    ) -> Incoming {
        let mut routes = Vec::with_capacity(matched.len());
        let mut filter_state = Vec::new();
        for index in matched {
            match self.filters[index].check(event, received_ms) {
                Ok(update) => {
                    routes.push(index);
                    filter_state.extend(update.map(|u| StateUpdate { route: self.route_name(index), ..u }));
                }
                Err(refusal) => {
                    if let Some(route) = self.metrics.ingest.routes.get(index) {
                        route.count_filtered(refusal);
                    }
                }
            }
        }
        if routes.is_empty() {
            self.metrics.count_drop(DropReason::Filter, 1);
        }
        match self.new_event(event, routes, received_ms, filter_state, false) {
            Ok(event) => event,
            Err(reason) => self.dead_letter(topic, payload, reason, received_ms),
        }
    }

    /// Events held by `keep_last` filters whose interval has ended: forwarded now.
    pub fn flush_held(&mut self) -> Vec<Incoming> {
        self.take_updates();
        let now = now_ms();
        let mut out = Vec::new();
        for index in 0..self.filters.len() {
            if self.routes.get(index).is_none_or(Option::is_none) {
                continue;
            }
            for (event, update) in self.filters[index].flush_due(now) {
                let update = StateUpdate { route: self.route_name(index), ..update };
                if let Ok(item) = self.new_event(&event, vec![index], now, vec![update], true) {
                    out.push(item);
                }
            }
        }
        out
    }

    fn new_event(
        &mut self,
        event: &edge_event::Event,
        routes: Vec<usize>,
        received_ms: i64,
        filter_state: Vec<StateUpdate>,
        held: bool,
    ) -> Result<Incoming, String> {
        let buf = &mut self.scratch[..];
        let len = edge_event::encode(event, buf).map_err(|err| format!("cannot re-encode event: {err}"))?;
        Ok(Incoming::Event(NewEvent {
            device: event.device.as_str().to_owned(),
            boot: event.boot,
            seq: event.seq,
            routes,
            payload: buf[..len].to_vec(),
            received_ms,
            done: None,
            filter_state,
            held,
        }))
    }

    fn dead_letter(&mut self, topic: &str, payload: &[u8], reason: String, received_ms: i64) -> Incoming {
        self.metrics.count_drop(DropReason::Invalid, 1);
        if let Some(suppressed) = self.bad_log.allow() {
            tracing::warn!(topic, %reason, suppressed, "bad device payload kept as a dead letter");
        }
        Incoming::DeadLetter(DeadLetter {
            topic: topic.to_owned(),
            payload: payload.to_vec(),
            reason,
            received_ms,
            publisher: None,
            done: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use std::sync::Arc;

    fn ingest(routes: &str) -> (Ingest, Arc<Metrics>) {
        let config = Config::parse(routes).unwrap();
        let names: Vec<String> = config.routes.iter().map(|r| r.name.clone()).collect();
        let metrics = Arc::new(Metrics::new(&names));
        (Ingest::new(config.routes, metrics.clone(), Vec::new(), 3), metrics)
    }

    const ONE_ROUTE: &str = "[[routes]]\nname = \"t\"\nfrom = \"devices/+/events\"\nto = \"c/{gateway}\"\n";

    fn process(ingest: &mut Ingest, topic: &str, payload: &[u8]) -> Vec<Incoming> {
        let mut out = Vec::new();
        ingest.process(topic, payload, None, &mut out);
        out
    }

    #[test]
    fn a_json_event_becomes_a_routed_postcard_row() {
        let (mut ingest, _) = ingest(ONE_ROUTE);
        let json =
            br#"{"device":"d1","boot":1,"seq":42,"ts":1764000000123,"type":"temperature","readings":{"celsius":21.5}}"#;
        let [Incoming::Event(event)] = &process(&mut ingest, "devices/d1/events", json)[..] else {
            panic!("not one event")
        };
        assert_eq!((event.device.as_str(), event.boot, event.seq, event.routes.as_slice()), ("d1", 1, 42, &[0][..]));
        assert_eq!(edge_event::decode(&event.payload).unwrap().seq, 42);
    }

    #[test]
    fn garbage_and_mismatched_devices_become_dead_letters_with_reasons() {
        let (mut ingest, metrics) = ingest(ONE_ROUTE);
        let [Incoming::DeadLetter(letter)] = &process(&mut ingest, "devices/d1/events", b"\xff\xfe garbage")[..] else {
            panic!()
        };
        assert!(letter.reason.starts_with("undecodable payload"), "{}", letter.reason);
        let json = br#"{"device":"d2","boot":1,"seq":1,"type":"t","readings":{}}"#;
        let [Incoming::DeadLetter(letter)] = &process(&mut ingest, "devices/d1/events", json)[..] else { panic!() };
        assert!(letter.reason.contains("names device \"d1\" but the event says \"d2\""), "{}", letter.reason);
        assert_eq!(metrics.dropped(DropReason::Invalid), 2);
    }

    #[test]
    fn unrouted_topics_are_counted_and_released() {
        let (mut ingest, metrics) = ingest(ONE_ROUTE);
        let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = released.clone();
        let done: Done = Box::new(move || flag.store(true, std::sync::atomic::Ordering::SeqCst));
        let mut out = Vec::new();
        ingest.process("other/topic", b"{}", Some(done), &mut out);
        assert!(out.is_empty());
        assert!(released.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(metrics.dropped(DropReason::NoRoute), 1);
    }

    #[test]
    fn json_fields_routes_number_their_events_per_device_with_the_gateway_boot() {
        let routes =
            "[[routes]]\nname = \"zigbee\"\nfrom = \"zigbee2mqtt/{device}\"\nto = \"c\"\ninput = \"json-fields\"\n";
        let (mut ingest, _) = ingest(routes);
        for expected in 1..=3 {
            let [Incoming::Event(event)] = &process(&mut ingest, "zigbee2mqtt/door", br#"{"contact":true}"#)[..] else {
                panic!()
            };
            assert_eq!((event.device.as_str(), event.boot, event.seq), ("door", 3, expected));
            let decoded = edge_event::decode(&event.payload).unwrap();
            assert_eq!(decoded.kind.as_str(), "zigbee", "the type defaults to the route name");
        }
        let [Incoming::Event(event)] = &process(&mut ingest, "zigbee2mqtt/other", b"1")[..] else { panic!() };
        assert_eq!(event.seq, 1, "per device");
        let [Incoming::DeadLetter(letter)] = &process(&mut ingest, "zigbee2mqtt/door", b"\"on\"")[..] else { panic!() };
        assert!(
            letter.reason.starts_with("route \"zigbee\" (json-fields): expected a JSON object"),
            "{}",
            letter.reason
        );
    }

    #[test]
    fn done_runs_once_after_the_last_item_of_a_publish() {
        let routes = format!(
            "{ONE_ROUTE}[[routes]]\nname = \"raw\"\nfrom = \"devices/{{device}}/events\"\nto = \"c\"\ninput = \"json-fields\"\n"
        );
        let (mut ingest, _) = ingest(&routes);
        let json = br#"{"device":"d1","boot":1,"seq":1,"type":"t","readings":{"v":1}}"#;
        let mut out = Vec::new();
        ingest.process("devices/d1/events", json, Some(Box::new(|| {})), &mut out);
        assert_eq!(out.len(), 2, "one edge-event item and one json-fields item");
        let dones: Vec<bool> = out
            .iter()
            .map(|item| match item {
                Incoming::Event(e) => e.done.is_some(),
                Incoming::DeadLetter(l) => l.done.is_some(),
            })
            .collect();
        assert_eq!(dones, vec![false, true]);
    }
}
