use proptest::prelude::*;

use super::*;

fn event(device: &str, kind: &str, readings: &[(&str, f64)]) -> Event {
    let mut json = format!(r#"{{"device":"{device}","boot":1,"seq":1,"type":"{kind}","readings":{{"#);
    let fields: Vec<String> = readings.iter().map(|(n, v)| format!("\"{n}\":{v:?}")).collect();
    json.push_str(&fields.join(","));
    json.push_str("}}");
    edge_event::json::from_slice(json.as_bytes()).unwrap()
}

fn rules() -> FilterRules {
    FilterRules::default()
}

#[test]
fn globs_match_runs_and_single_characters() {
    assert!(Glob::new("sensor-*").matches("sensor-12"));
    assert!(Glob::new("sensor-*").matches("sensor-"));
    assert!(!Glob::new("sensor-*").matches("sense-1"));
    assert!(Glob::new("d?").matches("d1"));
    assert!(!Glob::new("d?").matches("d12"));
    assert!(Glob::new("*door*").matches("front-door-2"));
    assert!(Glob::new("exact").matches("exact") && !Glob::new("exact").matches("exactly"));
}

#[test]
fn devices_and_types_narrow_a_route() {
    let mut filter = RouteFilter::new(FilterRules {
        devices: vec![Glob::new("kitchen-*"), Glob::new("hall")],
        types: vec![Glob::new("temp*")],
        ..rules()
    });
    assert!(filter.check(&event("kitchen-1", "temperature", &[]), 0).is_ok());
    assert!(filter.check(&event("hall", "temperature", &[]), 0).is_ok());
    assert_eq!(filter.check(&event("garage", "temperature", &[]), 0), Err(Refusal::Device));
    assert_eq!(filter.check(&event("hall", "door", &[]), 0), Err(Refusal::Type));
}

#[test]
fn a_range_applies_to_events_that_carry_the_reading() {
    let mut filter = RouteFilter::new(FilterRules {
        min: vec![("celsius".into(), -40.0)],
        max: vec![("celsius".into(), 85.0)],
        ..rules()
    });
    assert!(filter.check(&event("d", "t", &[("celsius", 21.5)]), 0).is_ok());
    assert_eq!(filter.check(&event("d", "t", &[("celsius", 120.0)]), 0), Err(Refusal::Range));
    assert_eq!(filter.check(&event("d", "t", &[("celsius", -41.0)]), 0), Err(Refusal::Range));
    assert!(filter.check(&event("d", "t", &[("humidity", 500.0)]), 0).is_ok());
}

#[test]
fn min_interval_downsamples_per_device() {
    let mut filter = RouteFilter::new(FilterRules { min_interval: Some(Duration::from_secs(10)), ..rules() });
    assert!(filter.check(&event("a", "t", &[]), 0).is_ok());
    assert_eq!(filter.check(&event("a", "t", &[]), 9_999), Err(Refusal::Interval));
    assert!(filter.check(&event("b", "t", &[]), 9_999).is_ok(), "per device");
    assert!(filter.check(&event("a", "t", &[]), 10_000).is_ok());
}

#[test]
fn deadband_forwards_only_moves_of_at_least_the_threshold() {
    let mut filter = RouteFilter::new(FilterRules { deadband: vec![("celsius".into(), 0.5)], ..rules() });
    assert!(filter.check(&event("a", "t", &[("celsius", 20.0)]), 0).is_ok(), "first value passes");
    assert_eq!(filter.check(&event("a", "t", &[("celsius", 20.4)]), 1), Err(Refusal::Deadband));
    assert_eq!(filter.check(&event("a", "t", &[("celsius", 19.6)]), 2), Err(Refusal::Deadband));
    assert!(filter.check(&event("a", "t", &[("celsius", 20.5)]), 3).is_ok());
    // Measured against the last *forwarded* value (20.5), not the last seen.
    assert_eq!(filter.check(&event("a", "t", &[("celsius", 20.9)]), 4), Err(Refusal::Deadband));
    assert!(filter.check(&event("a", "t", &[("humidity", 40.0)]), 5).is_ok(), "no deadband reading: passes");
}

#[test]
fn keep_last_forwards_the_newest_dropped_event_when_the_interval_ends() {
    let mut filter =
        RouteFilter::new(FilterRules { min_interval: Some(Duration::from_secs(10)), keep_last: true, ..rules() });
    assert!(filter.check(&event("a", "t", &[("v", 1.0)]), 0).is_ok());
    assert!(filter.check(&event("a", "t", &[("v", 2.0)]), 1_000).is_err());
    assert!(filter.check(&event("a", "t", &[("v", 3.0)]), 2_000).is_err());
    assert!(filter.flush_due(9_999).is_empty());
    let flushed = filter.flush_due(10_000);
    assert_eq!(flushed.len(), 1);
    assert_eq!(number(&flushed[0].0, "v"), Some(3.0), "the newest dropped one");
    assert_eq!(flushed[0].1.state.last_ms, 10_000);
    assert!(filter.flush_due(30_000).is_empty(), "held once");
}

#[test]
fn a_passing_event_discards_the_held_one() {
    let mut filter =
        RouteFilter::new(FilterRules { min_interval: Some(Duration::from_secs(10)), keep_last: true, ..rules() });
    assert!(filter.check(&event("a", "t", &[]), 0).is_ok());
    assert!(filter.check(&event("a", "t", &[]), 5_000).is_err());
    assert!(filter.check(&event("a", "t", &[]), 10_000).is_ok());
    assert!(filter.flush_due(20_000).is_empty());
}

#[test]
fn restored_state_continues_where_it_stopped() {
    let mut filter = RouteFilter::new(FilterRules { deadband: vec![("celsius".into(), 1.0)], ..rules() });
    filter.restore("a".into(), DeviceState { last_ms: 0, values: vec![("celsius".into(), 20.0)] });
    assert_eq!(filter.check(&event("a", "t", &[("celsius", 20.5)]), 1), Err(Refusal::Deadband));
}

proptest! {
    #[test]
    fn a_range_filter_passes_exactly_the_events_within_bounds(
        value in -1000.0f64..1000.0, min in -500.0f64..0.0, max in 0.0f64..500.0
    ) {
        let mut filter = RouteFilter::new(FilterRules { min: vec![("x".into(), min)], max: vec![("x".into(), max)], ..rules() });
        let passed = filter.check(&event("d", "t", &[("x", value)]), 0).is_ok();
        prop_assert_eq!(passed, value >= min && value <= max);
    }

    #[test]
    fn min_interval_never_forwards_two_events_closer_than_the_interval(
        gaps in proptest::collection::vec(0i64..5_000, 1..60), interval in 1u64..10_000
    ) {
        let mut filter = RouteFilter::new(FilterRules { min_interval: Some(Duration::from_millis(interval)), ..rules() });
        let mut now = 0;
        let mut forwarded: Vec<i64> = Vec::new();
        for gap in gaps {
            now += gap;
            if filter.check(&event("d", "t", &[]), now).is_ok() {
                forwarded.push(now);
            }
        }
        prop_assert!(!forwarded.is_empty());
        prop_assert!(forwarded.windows(2).all(|w| w[1] - w[0] >= interval as i64));
    }

    #[test]
    fn deadband_never_forwards_a_move_below_the_threshold(
        values in proptest::collection::vec(-50.0f64..50.0, 1..60), delta in 0.1f64..10.0
    ) {
        let mut filter = RouteFilter::new(FilterRules { deadband: vec![("x".into(), delta)], ..rules() });
        let mut last: Option<f64> = None;
        for (i, v) in values.into_iter().enumerate() {
            let passed = filter.check(&event("d", "t", &[("x", v)]), i as i64).is_ok();
            let expected = last.is_none_or(|l| (v - l).abs() >= delta);
            prop_assert_eq!(passed, expected);
            if passed {
                last = Some(v);
            }
        }
    }
}
