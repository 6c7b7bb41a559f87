//! `[[routes]]`: topics, batching, encoding, input and filter keys of each route.

use std::time::Duration;

use super::*;

pub(super) fn validate_routes(
    errors: &mut Errors,
    raw: Vec<Option<raw::Route>>,
    cloud: &CloudConfig,
) -> Vec<RouteConfig> {
    if raw.is_empty() {
        errors.push("routes", "at least one [[routes]] entry is needed, or nothing is forwarded");
    }
    let mut names: Vec<String> = Vec::new();
    let mut routes = Vec::new();
    for (i, route) in raw.into_iter().enumerate() {
        let Some(route) = route else { continue };
        let at = |key: &str| format!("routes[{i}].{key}");
        let filter = validate_filter(errors, i, &route);
        let input = validate_input(errors, i, &route);
        let encoding = Encoding {
            format: choice(
                errors,
                &format!("routes[{i}].format"),
                route.format.as_deref(),
                &BatchFormat::ALL.iter().map(|&format| (format.name(), format)).collect::<Vec<_>>(),
            ),
            compress: choice(
                errors,
                &format!("routes[{i}].compress"),
                route.compress.as_deref(),
                &[("none", Compression::None), ("zstd", Compression::Zstd), ("lz4", Compression::Lz4)],
            ),
        };
        let priority = count(errors, &format!("routes[{i}].priority"), route.priority, 1, 1, 100) as u32;
        let max_age =
            route.max_age.as_ref().and_then(|raw| errors.take(&format!("routes[{i}].max_age"), raw.duration()));
        if max_age.is_some_and(|d| d < Duration::from_secs(1)) {
            errors.push(format!("routes[{i}].max_age"), "expected at least 1s");
        }
        let name = route.name.unwrap_or_default();
        check_id(errors, &at("name"), &name);
        if names.contains(&name) {
            errors.push(at("name"), format!("route name {name:?} is used twice"));
        }
        names.push(name.clone());
        let from = match route.from.as_deref() {
            Some(text) => errors.take(&at("from"), TopicFilter::parse(text)),
            None => {
                errors.push(at("from"), "required (e.g. \"devices/+/events\")");
                None
            }
        };
        if let Some(filter) = &from {
            if !filter.has_device_level() {
                errors.push(at("from"), format!("{filter} has no level naming the device; use {{device}} or +"));
            }
        }
        let to = match route.to.as_deref() {
            Some(text) => errors.take(&at("to"), TopicTemplate::parse(text)),
            None => {
                errors.push(at("to"), "required (e.g. \"gateways/{gateway}/telemetry\")");
                None
            }
        };
        let batch = route.batch.unwrap_or_default();
        let max_bytes = size(errors, &at("batch.max_bytes"), batch.max_bytes.as_ref(), 64 * 1024);
        let packet_room = cloud.max_packet_size.bytes().saturating_sub(1024);
        if max_bytes.bytes() < MIN_BATCH_BYTES || max_bytes.bytes() > packet_room {
            errors.push(
                at("batch.max_bytes"),
                format!("expected from 4KiB to cloud.max_packet_size - 1KiB ({}B), found {max_bytes}", packet_room),
            );
        }
        let batch = BatchConfig {
            max_events: count(errors, &at("batch.max_events"), batch.max_events, 500, 1, 100_000) as usize,
            max_bytes,
            max_delay: duration(errors, &at("batch.max_delay"), batch.max_delay.as_ref(), Duration::from_millis(200)),
        };
        if let (Some(from), Some(to)) = (from, to) {
            routes.push(RouteConfig { filter, input, priority, max_age, encoding, name, from, to, batch });
        }
    }
    routes
}

/// `input`, `event_type`, `fields`.
fn validate_input(errors: &mut Errors, i: usize, route: &raw::Route) -> Input {
    let at = |key: &str| format!("routes[{i}].{key}");
    match route.input.as_deref().unwrap_or("edge-event") {
        "edge-event" => {
            for (key, set) in [("event_type", route.event_type.is_some()), ("fields", route.fields.is_some())] {
                if set {
                    errors.push(at(key), "only used with input = \"json-fields\"");
                }
            }
            Input::EdgeEvent
        }
        "json-fields" => {
            let event_type = route.event_type.clone().or_else(|| route.name.clone()).unwrap_or_default();
            if let Err(err) = edge_event::validate_event_type(&event_type) {
                errors.push(at("event_type"), err.to_string());
            }
            let fields: Vec<(String, String)> = match &route.fields {
                None => Vec::new(),
                Some(raw::Fields::List(names)) => names.iter().map(|n| (n.clone(), n.clone())).collect(),
                Some(raw::Fields::Rename(map)) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            };
            if fields.len() > edge_event::MAX_READINGS {
                errors.push(
                    at("fields"),
                    format!("{} fields; an event holds at most {}", fields.len(), edge_event::MAX_READINGS),
                );
            }
            for (field, name) in &fields {
                if name.is_empty() || name.len() > edge_event::MAX_NAME_LEN {
                    errors.push(
                        at(&format!("fields.{field}")),
                        format!("reading name {name:?} must be 1-{} bytes", edge_event::MAX_NAME_LEN),
                    );
                }
            }
            Input::JsonFields { event_type, map: FieldMap { fields } }
        }
        other => {
            errors.push(at("input"), format!("expected \"edge-event\" or \"json-fields\", found {other:?}"));
            Input::EdgeEvent
        }
    }
}

/// A route's filter keys: globs, per-reading bounds and thresholds, the interval.
fn validate_filter(errors: &mut Errors, i: usize, route: &raw::Route) -> FilterRules {
    let at = |key: &str| format!("routes[{i}].{key}");
    let globs = |errors: &mut Errors, key: &str, list: &Option<Vec<String>>| -> Vec<Glob> {
        let list = list.as_deref().unwrap_or_default();
        for (n, pattern) in list.iter().enumerate() {
            if pattern.is_empty() {
                errors.push(format!("routes[{i}].{key}[{n}]"), "an empty pattern matches nothing");
            }
        }
        list.iter().map(|p| Glob::new(p)).collect()
    };
    let readings = |map: &Option<std::collections::BTreeMap<String, f64>>| -> Vec<(String, f64)> {
        map.iter().flatten().map(|(k, v)| (k.clone(), *v)).collect()
    };
    let rules = FilterRules {
        devices: globs(errors, "devices", &route.devices),
        types: globs(errors, "types", &route.types),
        min: readings(&route.min),
        max: readings(&route.max),
        deadband: readings(&route.deadband),
        min_interval: route.min_interval.as_ref().and_then(|raw| errors.take(&at("min_interval"), raw.duration())),
        keep_last: route.keep_last.unwrap_or(false),
    };
    for (name, min) in &rules.min {
        if let Some((_, max)) = rules.max.iter().find(|(n, _)| n == name) {
            if min > max {
                errors
                    .push(at(&format!("min.{name}")), format!("{min} is above max.{name} ({max}): nothing would pass"));
            }
        }
    }
    for (name, delta) in &rules.deadband {
        if !(delta.is_finite() && *delta > 0.0) {
            errors.push(at(&format!("deadband.{name}")), format!("expected a threshold above 0, found {delta}"));
        }
    }
    if rules.min_interval.is_some_and(|d| d.is_zero()) {
        errors.push(at("min_interval"), "must be more than 0");
    }
    if rules.keep_last && rules.min_interval.is_none() {
        errors.push(at("keep_last"), "needs min_interval: the held event is sent when the interval ends");
    }
    rules
}
