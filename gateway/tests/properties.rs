//! Property tests of everything that parses bytes from the network or the operator: the
//! ingest stage (edge-event postcard/JSON and json-fields payloads on any topic) and the
//! config parser. No input makes them panic, nothing is silently lost (every publish a
//! route takes becomes events or a dead letter carrying the raw bytes), and what comes
//! out is bounded by the event format's limits.

use std::sync::Arc;

use edge_gateway::config::Config;
use edge_gateway::fields::{self, FieldMap};
use edge_gateway::ingest::Ingest;
use edge_gateway::metrics::Metrics;
use edge_gateway::store::Incoming;
use proptest::prelude::*;
use serde_json::{Map, Value as Json};

const ROUTES: &str = r#"
[[routes]]
name = "events"
from = "devices/+/events"
to = "cloud/{device}"

[[routes]]
name = "zigbee"
from = "zigbee2mqtt/+"
to = "cloud/zigbee"
input = "json-fields"
event_type = "climate"
"#;

fn ingest() -> Ingest {
    let config = Config::parse(ROUTES).expect("the test routes are valid");
    let names: Vec<String> = config.routes.iter().map(|r| r.name.clone()).collect();
    Ingest::new(config.routes, Arc::new(Metrics::new(&names)), Vec::new(), 1).keep_unrouted(true)
}

/// Topics devices really use, and some they should not.
fn topic() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9-]{1,12}".prop_map(|d| format!("devices/{d}/events")),
        "[a-z0-9-]{1,12}".prop_map(|d| format!("zigbee2mqtt/{d}")),
        "[ -~]{0,40}",
        Just("devices//events".to_owned()),
    ]
}

/// Arbitrary JSON up to a few levels deep, with keys that collide with reading limits.
fn json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number)),
        "\\PC{0,80}".prop_map(Json::String),
    ];
    leaf.prop_recursive(3, 64, 12, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
            prop::collection::btree_map("[a-zA-Z_]{1,40}", inner, 0..24)
                .prop_map(|m| Json::Object(m.into_iter().collect::<Map<String, Json>>())),
        ]
    })
}

/// An edge-event JSON object with some fields perturbed.
fn event_like() -> impl Strategy<Value = Json> {
    (
        "[a-z0-9-]{0,70}",
        any::<u32>(),
        any::<u32>(),
        prop_oneof![any::<i64>().prop_map(Json::from), Just(Json::Null), "[0-9]{1,20}".prop_map(Json::String)],
        "[a-z]{0,40}",
        prop::collection::btree_map("[a-z]{1,20}", json(), 0..20),
    )
        .prop_map(|(device, boot, seq, ts, kind, readings)| {
            serde_json::json!({"device": device, "boot": boot, "seq": seq, "ts": ts, "type": kind,
                               "readings": readings.into_iter().collect::<Map<String, Json>>()})
        })
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..1200),
        json().prop_map(|j| j.to_string().into_bytes()),
        event_like().prop_map(|j| j.to_string().into_bytes()),
        // A valid postcard event with bytes flipped.
        (any::<u32>(), prop::collection::vec((any::<usize>(), any::<u8>()), 0..4)).prop_map(|(seq, flips)| {
            let event = edge_event::Event::new("d1", 1, seq, edge_event::Timestamp::Millis(1), "t").expect("valid");
            let mut bytes = edge_event::encode_to_vec(&event).expect("fits");
            for (at, byte) in flips {
                if !bytes.is_empty() {
                    let len = bytes.len();
                    bytes[at % len] ^= byte;
                }
            }
            bytes
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Any publish on any topic: no panic; a publish some route takes becomes events or
    /// exactly one dead letter with the raw bytes and a reason; events fit the format.
    #[test]
    fn ingest_never_panics_and_never_loses_a_publish(topic in topic(), payload in payload()) {
        let mut ingest = ingest();
        let mut out = Vec::new();
        ingest.process(&topic, &payload, None, &mut out);
        let dead: Vec<_> = out.iter().filter_map(|i| match i { Incoming::DeadLetter(d) => Some(d), _ => None }).collect();
        let events: Vec<_> = out.iter().filter_map(|i| match i { Incoming::Event(e) => Some(e), _ => None }).collect();
        prop_assert!(dead.len() <= 1, "one publish, at most one dead letter: {}", dead.len());
        if let Some(d) = dead.first() {
            prop_assert!(events.is_empty());
            prop_assert_eq!(&d.payload, &payload);
            prop_assert_eq!(&d.topic, &topic);
            prop_assert!(!d.reason.is_empty());
        }
        for event in &events {
            prop_assert!(event.payload.len() <= edge_event::MAX_ENCODED_LEN);
            let decoded = edge_event::decode(&event.payload);
            prop_assert!(decoded.is_ok(), "a stored event must decode: {:?}", decoded.err());
            prop_assert!(topic.contains(&event.device), "device {} from topic {}", event.device, topic);
        }
    }

    /// json-fields: arbitrary JSON never panics; an accepted payload keeps every number and
    /// boolean it had (nothing silently cut), within the reading limits.
    #[test]
    fn json_fields_keep_every_scalar_or_refuse(value in json()) {
        let bytes = value.to_string().into_bytes();
        match fields::decode(&bytes, &FieldMap::default(), "dev", "climate", 1, 1, 1_700_000_000_000) {
            Ok(event) => {
                let expected = match &value {
                    Json::Object(m) => m.values().filter(|v| v.is_number() || v.is_boolean()).count(),
                    _ => 1,
                };
                prop_assert_eq!(event.readings.len(), expected);
                prop_assert!(event.readings.len() <= edge_event::MAX_READINGS);
            }
            Err(reason) => prop_assert!(!reason.is_empty()),
        }
    }

    /// Arbitrary text as a config file: no panic, and a refusal always says something.
    #[test]
    fn config_parser_never_panics_on_text(text in "\\PC{0,400}") {
        if let Err(errors) = Config::parse(&text) {
            prop_assert!(!errors.is_empty());
            prop_assert!(errors.iter().all(|e| !e.message.is_empty()));
        }
    }

    /// A valid config with one value replaced by an arbitrary TOML value: no panic, and
    /// every error names the key path it is about.
    #[test]
    fn config_parser_names_the_key_of_every_bad_value(
        line in 0usize..32,
        replacement in prop_oneof![
            "-?[0-9]{1,20}", "\"[ -~]{0,30}\"", Just("true".to_owned()), Just("[]".to_owned()),
            Just("{}".to_owned()), "[0-9.]{1,10}", "\"[0-9]{1,6}(ms|s|KiB|MiB|GiB|d|x)\"",
        ],
    ) {
        let base = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/gateway.toml"))
            .expect("the shipped config");
        let valued: Vec<usize> = base.lines().enumerate()
            .filter(|(_, l)| !l.trim_start().starts_with('#') && l.contains(" = "))
            .map(|(i, _)| i).collect();
        prop_assume!(!valued.is_empty());
        let target = valued[line % valued.len()];
        let text: String = base.lines().enumerate().map(|(i, l)| {
            if i == target {
                let (key, _) = l.split_once(" = ").expect("a key line");
                format!("{key} = {replacement}\n")
            } else {
                format!("{l}\n")
            }
        }).collect();
        if let Err(errors) = Config::parse(&text) {
            prop_assert!(!errors.is_empty());
            for error in &errors {
                prop_assert!(!error.message.is_empty());
                prop_assert!(!error.path.is_empty(), "an error without a key path: {error}");
            }
        }
    }
}
