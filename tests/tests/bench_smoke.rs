//! The bench's core at smoke size (`Options::smoke`): every scenario against Mosquitto
//! alone, the Mosquitto bridge and the gateway (of the steady scenario, its cost
//! figures), and nothing lost anywhere. Timing is not judged here; `cargo run --release -p edge-tests --bin bench` does that.

use edge_tests::bench::systems::System;
use edge_tests::bench::{self, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_measures_every_scenario_and_no_system_loses_an_event() {
    let result = bench::run(&Options::smoke()).await;
    assert!(result.errors.is_empty(), "{:#?}", result.errors);

    let rows = result.results.rows();
    // The steady scenario's cost figures exist for both systems (a figure may be 0: the
    // bridge writes nothing to disk while it runs, and idle CPU can round to 0 ticks).
    for key in ["steady.disk_bytes_per_event", "steady.idle_cpu_ms", "steady.rss_mib", "steady.lost"] {
        let row = result.results.row(key).unwrap_or_else(|| panic!("{key} not measured"));
        for system in [System::Bridge, System::Gateway] {
            assert!(row.median(system).is_some_and(f64::is_finite), "{key} for {}", system.title());
        }
    }
    // fsync-type calls are counted by perf; where perf runs, the gateway (synchronous = full)
    // must show some.
    if std::process::Command::new("perf").arg("--version").output().is_ok_and(|o| o.status.success()) {
        let fsync = result.results.median("steady.fsync_per_s", System::Gateway);
        assert!(fsync.is_some_and(|f| f > 0.0), "steady.fsync_per_s for the gateway: {fsync:?}");
    }
    for row in rows.iter().filter(|r| r.key.ends_with(".lost")) {
        for (system, samples) in &row.samples {
            assert!(samples.iter().all(|lost| *lost == 0.0), "{}: {} = {samples:?}", system.title(), row.label);
        }
    }
    for (key, systems) in [
        ("throughput.events_per_s", &[System::Mosquitto, System::Bridge, System::Gateway][..]),
        ("latency_10ms.p99_ms", &[System::Mosquitto, System::Bridge, System::Gateway]),
        ("outage.drain_events_per_s", &[System::Bridge, System::Gateway]),
        ("backlog.startup_clean_ms", &[System::Bridge, System::Gateway]),
        ("backlog.startup_kill_ms", &[System::Gateway]),
        ("steady.cpu_ms_per_1k", &[System::Bridge, System::Gateway]),
        ("steady.ack_p99_ms", &[System::Gateway]),
    ] {
        let row = result.results.row(key).unwrap_or_else(|| panic!("{key} not measured"));
        for system in systems {
            let value = row.median(*system);
            assert!(value.is_some_and(|v| v.is_finite() && v > 0.0), "{key} for {}: {value:?}", system.title());
        }
    }
}
