//! `input = "json-fields"`: events from off-the-shelf sensors that publish plain JSON
//! (zigbee2mqtt, Tasmota, Shelly, ESPHome...) instead of `edge-event`s.
//!
//! The payload is a JSON object (`{"temperature":21.5,"humidity":40,"battery":97}`) or a
//! bare number / boolean (`21.5`, named `value`). Without a `fields` list, every top-level
//! number and boolean becomes a reading, in name order; strings, nulls and nested
//! objects are skipped. With `fields`, exactly the listed fields are taken (strings too),
//! renamed when the list says so, and a listed field that is absent is simply not there.
//! The device comes from the topic; the gateway assigns boot and seq.
//!
//! Invariant: nothing is silently cut. A payload that does not fit an event (more than
//! [`edge_event::MAX_READINGS`] readings, a name longer than [`edge_event::MAX_NAME_LEN`],
//! a string too long) is refused with a reason that says which field and what to do
//! (list the fields to keep), and becomes a dead letter with its raw bytes.

use edge_event::{Event, Reading, Timestamp, Value};
use serde_json::Value as Json;

/// Which JSON fields become readings, and under what names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldMap {
    /// `(json field, reading name)`; empty = every number and boolean.
    pub fields: Vec<(String, String)>,
}

fn scalar(name: &str, value: &Json, listed: bool) -> Result<Option<Value>, String> {
    Ok(match value {
        Json::Bool(b) => Some(Value::Bool(*b)),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Some(Value::I64(i)),
            None => n.as_f64().map(Value::F64),
        },
        Json::String(s) if listed => Some(Value::text(s).map_err(|_| {
            format!(
                "field {name:?} is a string of {} bytes; at most {} fit a reading",
                s.len(),
                edge_event::MAX_TEXT_LEN
            )
        })?),
        _ => None,
    })
}

/// Builds the event of `device` from a plain-JSON payload.
pub fn decode(
    payload: &[u8],
    map: &FieldMap,
    device: &str,
    kind: &str,
    boot: u32,
    seq: u32,
    now_ms: i64,
) -> Result<Event, String> {
    let json: Json = serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}"))?;
    let ts = Timestamp::Millis(now_ms.max(0) as u64);
    let mut event = Event::new(device, boot, seq, ts, kind).map_err(|e| format!("device id or type too long: {e}"))?;
    let mut readings: Vec<(String, Value)> = Vec::new();
    match &json {
        Json::Object(object) if map.fields.is_empty() => {
            for (name, value) in object {
                if let Some(value) = scalar(name, value, false)? {
                    readings.push((name.clone(), value));
                }
            }
        }
        Json::Object(object) => {
            for (field, name) in &map.fields {
                if let Some(value) = object.get(field) {
                    if let Some(value) = scalar(field, value, true)? {
                        readings.push((name.clone(), value));
                    }
                }
            }
        }
        Json::Number(_) | Json::Bool(_) => {
            if let Some(value) = scalar("value", &json, false)? {
                readings.push(("value".into(), value));
            }
        }
        _ => return Err("expected a JSON object of fields or a bare number".into()),
    }
    if readings.is_empty() {
        return Err("no number or boolean field to take as a reading".into());
    }
    if readings.len() > edge_event::MAX_READINGS {
        let names: Vec<&str> = readings.iter().map(|(n, _)| n.as_str()).collect();
        return Err(format!(
            "{} fields ({}) are more than the {} readings an event holds; list the ones to keep in the route's `fields`",
            readings.len(),
            names.join(", "),
            edge_event::MAX_READINGS
        ));
    }
    for (name, value) in readings {
        let reading = Reading::new(&name, value).map_err(|_| {
            format!(
                "field name {name:?} is longer than {} bytes; rename it in the route's `fields` (e.g. {{ {name} = \"short\" }})",
                edge_event::MAX_NAME_LEN
            )
        })?;
        event.push_reading(reading).map_err(|e| e.to_string())?;
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Payloads as real devices publish them (zigbee2mqtt, Tasmota, Shelly).
    const AQARA_WEATHER: &str = r#"{"battery":100,"humidity":58.63,"linkquality":78,"power_outage_count":6,"pressure":1005.6,"temperature":22.46,"voltage":3025}"#;
    const AQARA_DOOR: &str =
        r#"{"battery":91,"contact":false,"device_temperature":27,"linkquality":120,"voltage":3005}"#;
    const IKEA_REMOTE: &str =
        r#"{"action":"brightness_up_click","battery":74,"linkquality":47,"update":{"state":"idle"}}"#;
    const TASMOTA_SENSOR: &str =
        r#"{"Time":"2026-11-27T10:00:00","AM2301":{"Temperature":21.3,"Humidity":45.1},"TempUnit":"C"}"#;

    fn reading<'e>(event: &'e Event, name: &str) -> Option<&'e Value> {
        event.readings.iter().find(|r| r.name.as_str() == name).map(|r| &r.value)
    }

    #[test]
    fn a_door_sensor_becomes_an_event_once_its_long_field_is_renamed() {
        let err = decode(AQARA_DOOR.as_bytes(), &FieldMap::default(), "door-1", "zigbee", 7, 3, 1000).unwrap_err();
        assert!(err.contains("\"device_temperature\" is longer than 16 bytes"), "{err}");
        let names = ["battery", "contact", "linkquality", "voltage"];
        let mut fields: Vec<(String, String)> = names.iter().map(|n| (n.to_string(), n.to_string())).collect();
        fields.push(("device_temperature".into(), "device_celsius".into()));
        let event = decode(AQARA_DOOR.as_bytes(), &FieldMap { fields }, "door-1", "zigbee", 7, 3, 1000).unwrap();
        assert_eq!((event.device.as_str(), event.boot, event.seq, event.kind.as_str()), ("door-1", 7, 3, "zigbee"));
        assert_eq!(reading(&event, "contact"), Some(&Value::Bool(false)));
        assert_eq!(reading(&event, "battery"), Some(&Value::I64(91)));
        assert_eq!(reading(&event, "device_celsius"), Some(&Value::I64(27)));
        assert_eq!(event.readings.len(), 5);
        assert_eq!(event.ts, Timestamp::Millis(1000));
        event.validate(Some(1000)).unwrap();
    }

    #[test]
    fn strings_and_nested_objects_are_skipped_unless_listed() {
        let event = decode(IKEA_REMOTE.as_bytes(), &FieldMap::default(), "remote", "zigbee", 1, 1, 0).unwrap();
        let names: Vec<&str> = event.readings.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, vec!["battery", "linkquality"]);
        let map = FieldMap { fields: vec![("action".into(), "action".into())] };
        let event = decode(IKEA_REMOTE.as_bytes(), &map, "remote", "zigbee", 1, 1, 0).unwrap();
        assert_eq!(reading(&event, "action"), Some(&Value::text("brightness_up_click").unwrap()));
    }

    #[test]
    fn a_long_field_name_is_refused_with_the_fix() {
        let err = decode(AQARA_WEATHER.as_bytes(), &FieldMap::default(), "w", "zigbee", 1, 1, 0).unwrap_err();
        assert!(err.contains("\"power_outage_count\" is longer than 16 bytes") && err.contains("fields"), "{err}");
    }

    #[test]
    fn a_fields_list_picks_and_renames() {
        let map = FieldMap {
            fields: vec![
                ("temperature".into(), "celsius".into()),
                ("humidity".into(), "rh".into()),
                ("absent".into(), "x".into()),
            ],
        };
        let event = decode(AQARA_WEATHER.as_bytes(), &map, "w", "zigbee", 1, 1, 0).unwrap();
        assert_eq!(reading(&event, "celsius"), Some(&Value::F64(22.46)));
        assert_eq!(reading(&event, "rh"), Some(&Value::F64(58.63)));
        assert_eq!(event.readings.len(), 2);
    }

    #[test]
    fn a_bare_number_is_the_reading_value() {
        let event = decode(b"21.5", &FieldMap::default(), "shellyht-1", "temperature", 1, 1, 0).unwrap();
        assert_eq!(reading(&event, "value"), Some(&Value::F64(21.5)));
        let event = decode(b"true", &FieldMap::default(), "relay", "state", 1, 1, 0).unwrap();
        assert_eq!(reading(&event, "value"), Some(&Value::Bool(true)));
    }

    #[test]
    fn payloads_without_readings_are_refused() {
        assert!(decode(TASMOTA_SENSOR.as_bytes(), &FieldMap::default(), "t", "s", 1, 1, 0)
            .unwrap_err()
            .contains("no number"));
        assert!(decode(b"\"text\"", &FieldMap::default(), "t", "s", 1, 1, 0)
            .unwrap_err()
            .contains("expected a JSON object"));
        assert!(decode(b"{oops", &FieldMap::default(), "t", "s", 1, 1, 0).unwrap_err().starts_with("not JSON"));
    }

    #[test]
    fn too_many_fields_are_refused_not_cut() {
        let payload = r#"{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9}"#;
        let err = decode(payload.as_bytes(), &FieldMap::default(), "t", "s", 1, 1, 0).unwrap_err();
        assert!(err.starts_with("9 fields (a, b, c, d, e, f, g, h, i) are more than the 8"), "{err}");
    }
}
