//! The registry renders every stage's metrics as before the per-stage split, byte for byte.

use super::*;
use crate::devices::auth::AuthFailure;
use crate::filters::Refusal;

#[test]
fn every_drop_reason_is_listed_at_its_own_index() {
    for (i, reason) in DropReason::ALL.iter().enumerate() {
        assert_eq!(*reason as usize, i);
    }
    let metrics = Metrics::new(&[]);
    metrics.drops.count(DropReason::Overrun, 2);
    assert!(metrics.render(0).contains("edge_gateway_events_dropped_total{reason=\"overrun\"} 2"));
}

#[test]
fn rendered_metrics_carry_route_labels_and_drop_reasons() {
    let metrics = Metrics::new(&["telemetry".into()]);
    metrics.drops.count(DropReason::Duplicate, 3);
    metrics.store.routes[0].depth.set(7);
    metrics.forward.latency.observe_n(0.004, 2);
    let text = metrics.render(0);
    assert!(text.contains("edge_gateway_events_dropped_total{reason=\"duplicate\"} 3"));
    assert!(text.contains("edge_gateway_queue_depth{route=\"telemetry\"} 7"));
    assert!(text.contains("edge_gateway_latency_seconds_bucket{le=\"0.005\"} 2"));
    assert!(text.contains("edge_gateway_latency_seconds_count 2"));
    assert_eq!(metrics.dropped(DropReason::Duplicate), 3);
}

/// `golden.prom` was rendered by the single `Metrics` struct before the split, with these
/// values: the registry must publish the same text.
#[test]
fn the_exposition_is_the_same_text_as_before_the_per_stage_split_plus_device_disconnects() {
    let m = Metrics::new(&["telemetry".into(), "alerts".into()]);
    m.ingest.received.add(11);
    m.store.committed.add(10);
    m.store.dead_letters.add(2);
    m.store.replayed.add(3);
    m.store.dead_letters_dropped.add(4);
    m.forward.set_link(true, 5);
    m.forward.reconnects.add(6);
    m.store.bytes.set(4096);
    m.store.ok.set(0);
    m.store.disk_full.set(1);
    m.store.commit_failures.add(7);
    m.store.count_error(StoreErrorKind::Io);
    m.store.count_error(StoreErrorKind::DiskFull);
    for (i, r) in DropReason::ALL.iter().enumerate() {
        m.drops.count(*r, i as u64 + 1);
    }
    let (f, s, ing) = (&m.forward.routes, &m.store.routes, &m.ingest.routes);
    f[0].forwarded.add(8);
    f[1].forwarded.add(9);
    f[0].batches.add(2);
    f[1].batches.add(1);
    s[0].depth.set(12);
    s[1].depth.set(13);
    s[0].bytes.set(120);
    s[1].bytes.set(130);
    s[0].oldest_ms.set(1_000);
    s[1].oldest_ms.set(0);
    ing[0].count_filtered(Refusal::Range);
    ing[1].count_filtered(Refusal::Deadband);
    f[0].batch_size.observe_n(4.0, 2);
    f[1].batch_size.observe_n(700.0, 1);
    m.commands.count_status("done");
    m.commands.open.set(2);
    m.commands.pending.set(1);
    m.commands.link_up.set(1);
    m.forward.latency.observe_n(0.004, 2);
    m.forward.latency.observe_n(7.0, 1);
    m.devices.connected.inc();
    m.devices.connected.inc();
    m.devices.count_auth_failure(AuthFailure::BadPassword);
    m.devices.count_refused(ConnectionRefusal::Tls);
    m.devices.denied[Denial::Subscribe as usize].add(1);
    m.devices.too_large.add(1);
    m.devices.backpressure.add(5);
    m.reload.last_success_s.set(1_700_000_000);
    m.reload.count(crate::reload::ReloadResult::Refused, 1_700_000_100);
    assert_eq!(m.render(61_000), include_str!("golden.prom"));
}
