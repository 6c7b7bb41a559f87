//! Replay end to end: with `[store].keep_forwarded`, forwarded events stay in the journal;
//! `edge-gateway replay --route R --since T --until T` queues exactly those the gateway
//! received in `[since, until)` again, and the cloud (Mosquitto, read with `mosquitto_sub`)
//! gets them in batches marked `"replay": true` — through the running gateway, and on the
//! journal of a stopped one. Kept events expire after `keep_forwarded`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edge_tests::gateway::{binary, Gateway, Setup};
use edge_tests::mosquitto::Mosquitto;
use edge_tests::wait_until;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// `ms` as RFC 3339 UTC with whole seconds: the gateway's own formatter, `T` for the space.
fn rfc3339(ms: i64) -> String {
    edge_gateway::time::format_time(ms).replacen(' ', "T", 1)
}

/// Waits for the clock to pass the next whole second; returns that second (ms). Events
/// received before the call are before it, events published after it are at or after it.
fn next_second() -> i64 {
    let boundary = (now_ms() / 1000 + 1) * 1000;
    wait_until(Duration::from_secs(5), "the next second", || (now_ms() >= boundary).then_some(boundary))
}

/// Every cloud publish on `gateways/#`, read by a real `mosquitto_sub`.
struct Cloud {
    child: Child,
    /// (topic, batch JSON) in arrival order.
    batches: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Cloud {
    fn subscribe(port: u16) -> Cloud {
        let mut child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-t", "gateways/#", "-t", "probe", "-v"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub (apt-get install mosquitto-clients)");
        let out = BufReader::new(child.stdout.take().unwrap());
        let batches = Arc::new(Mutex::new(Vec::new()));
        let shared = batches.clone();
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { return };
                let Some((topic, body)) = line.split_once(' ') else { continue };
                let value = serde_json::from_str(body).unwrap_or(Value::String(body.to_owned()));
                shared.lock().unwrap().push((topic.to_owned(), value));
            }
        });
        let cloud = Cloud { child, batches };
        // Subscribed once a probe comes back.
        wait_until(Duration::from_secs(20), "mosquitto_sub to subscribe", || {
            let _ = Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "probe", "-m", "probe"])
                .status();
            let seen = cloud.batches.lock().unwrap().iter().any(|(topic, _)| topic == "probe");
            if !seen {
                std::thread::sleep(Duration::from_millis(100));
            }
            seen.then_some(())
        });
        cloud
    }

    /// (seq, replayed) of every event received, in arrival order.
    fn events(&self) -> Vec<(u64, bool)> {
        let batches = self.batches.lock().unwrap();
        let mut out = Vec::new();
        for (topic, batch) in batches.iter().filter(|(t, _)| t.starts_with("gateways/")) {
            assert_eq!(topic, "gateways/gw-test/telemetry");
            let replay = match batch.get("replay") {
                None => false,
                Some(Value::Bool(true)) => true,
                Some(other) => panic!("replay is true or absent, found {other}: {batch}"),
            };
            for event in batch["events"].as_array().expect("a JSON batch") {
                out.push((event["seq"].as_u64().unwrap(), replay));
            }
        }
        out
    }

    /// Waits until `n` events (first sends and replays) have arrived.
    fn wait_events(&self, n: usize, what: &str) -> Vec<(u64, bool)> {
        wait_until(WAIT, what, || {
            let events = self.events();
            assert!(events.len() <= n, "more than {n} events arrived: {events:?}");
            (events.len() == n).then_some(events)
        })
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publishes events `seqs` of device `d1` with one `mosquitto_pub -l`.
fn publish(port: u16, seqs: std::ops::RangeInclusive<u32>) {
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-t", "devices/d1/events", "-l"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for seq in seqs {
        writeln!(stdin, "{}", edge_tests::event_json("d1", 1, seq)).unwrap();
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

fn replay(setup: &Setup, dir: &std::path::Path, args: &[&str]) -> String {
    let config = dir.join("cli.toml");
    std::fs::write(&config, setup.toml()).unwrap();
    let out = Command::new(binary())
        .args(["replay", "--route", "telemetry"])
        .args(args)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    text
}

fn kept(dir: &std::path::Path) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(dir.join("journal.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row("SELECT count(*) FROM forwarded", [], |r| r.get(0)).unwrap()
}

/// Replayed seqs and first-send seqs among `events[from..]`.
fn split(events: &[(u64, bool)]) -> (Vec<u64>, Vec<u64>) {
    let replayed = events.iter().filter(|e| e.1).map(|e| e.0).collect();
    let first = events.iter().filter(|e| !e.1).map(|e| e.0).collect();
    (replayed, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_resends_exactly_the_window_marked_and_kept_events_expire() {
    let cloud_broker = Mosquitto::start();
    let cloud = Cloud::subscribe(cloud_broker.port);
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(cloud_broker.port, data.path());
    setup.store = "keep_forwarded = \"1h\"\n".into();
    let mut gateway = Gateway::start(&setup);
    let devices = setup.devices_port;

    // Three runs of events, a whole second apart: A = 1..=10, B = 11..=20, C = 21..=25.
    publish(devices, 1..=10);
    cloud.wait_events(10, "run A forwarded");
    let since = next_second();
    publish(devices, 11..=20);
    cloud.wait_events(20, "run B forwarded");
    let until = next_second();
    publish(devices, 21..=25);
    let first = cloud.wait_events(25, "run C forwarded");
    assert!(first.iter().all(|e| !e.1), "nothing is a replay yet: {first:?}");
    wait_until(WAIT, "every forwarded event kept", || (kept(data.path()) == 25).then_some(()));
    assert_eq!(gateway.queue_depth(), 0, "kept events are not queued");

    // Running: through POST /api/replay.
    let text = replay(&setup, data.path(), &["--since", &rfc3339(since), "--until", &rfc3339(until)]);
    assert!(text.contains("queued 10 forwarded event(s)"), "{text}");
    let events = cloud.wait_events(35, "the replay of run B");
    let (replayed, again) = split(&events[25..]);
    assert_eq!(replayed, (11..=20).collect::<Vec<_>>(), "exactly [since, until), in order, marked");
    assert!(again.is_empty(), "{again:?}");
    // The copies' rows are deleted by the commit after their PUBACK, which may wait up to
    // `store.commit_window` for company (docs/architecture.md, "The commit window").
    wait_until(WAIT, "the replayed copies deleted after their PUBACK", || {
        let status = edge_tests::http::status(setup.http_port);
        (status["routes"][0]["queue_depth"] == 0).then_some(())
    });
    let metric = edge_tests::http::metric(setup.http_port, "edge_gateway_events_replayed_total");
    assert_eq!(metric, Some(10.0));

    // Stopped: on the journal (an age this time); the copies go out at the next start, and
    // the replays of run B are never replayed again.
    assert!(gateway.terminate().unwrap().success());
    let text = replay(&setup, data.path(), &["--since", "1h", "--until", &rfc3339(since)]);
    assert!(text.contains("queued 10 forwarded event(s)") && text.contains("next start"), "{text}");
    let text = replay(&setup, data.path(), &["--since", &rfc3339(until)]);
    assert!(text.contains("queued 5 forwarded event(s)"), "{text}");

    // Restart with a short keep_forwarded: the 15 copies arrive marked, then everything kept
    // expires.
    setup.store = "keep_forwarded = \"3s\"\n".into();
    let gateway = Gateway::start(&setup);
    let events = cloud.wait_events(50, "the offline replays");
    let (replayed, again) = split(&events[35..]);
    assert_eq!(replayed, (1..=10).chain(21..=25).collect::<Vec<_>>(), "{events:?}");
    assert!(again.is_empty());
    let started = Instant::now();
    wait_until(WAIT, "kept events to expire", || (kept(data.path()) == 0).then_some(()));
    assert!(started.elapsed() >= Duration::from_secs(1), "not before their time");
    let text = replay(&setup, data.path(), &["--since", "1h"]);
    assert!(text.contains("queued 0 forwarded event(s)"), "{text}");
    // A new event after the empty replay arrives alone: nothing was queued before it.
    publish(devices, 26..=26);
    let events = cloud.wait_events(51, "the last event");
    assert_eq!(events[50], (26, false));
    let mut counts = BTreeMap::new();
    for (seq, replay) in &events {
        *counts.entry((*seq, *replay)).or_insert(0) += 1;
    }
    assert!(counts.iter().filter(|(k, _)| !k.1).all(|(_, n)| *n == 1), "each first send once: {counts:?}");
    drop(gateway);
}
