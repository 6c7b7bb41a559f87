//! The local read model end to end: devices publish with `mosquitto_pub` while the cloud is
//! down; `GET /api/devices`, `GET /api/devices/{id}` and `edge-gateway devices` show each
//! device's latest readings, from the running gateway and from the journal of a stopped one.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edge_tests::gateway::{binary, Gateway, Setup};
use edge_tests::mosquitto::Mosquitto;
use edge_tests::{http, wait_until};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Publishes each line as one QoS 1 message with one `mosquitto_pub -l`.
fn mosquitto_pub(port: u16, topic: &str, lines: &[String]) {
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-t", topic, "-l"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub (apt-get install mosquitto-clients)");
    let mut stdin = child.stdin.take().unwrap();
    for line in lines {
        writeln!(stdin, "{line}").unwrap();
    }
    drop(stdin);
    assert!(child.wait().unwrap().success(), "mosquitto_pub failed");
}

fn get_json(port: u16, path: &str) -> (u16, Value) {
    let (code, body) = http::get(port, path).expect("gateway HTTP not answering");
    (code, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

fn cli(config: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(binary()).arg("devices").args(args).arg("--config").arg(config).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn event(device: &str, seq: u32, ts: u64, readings: &str) -> String {
    format!(r#"{{"device":"{device}","boot":4,"seq":{seq},"ts":{ts},"type":"environment","readings":{readings}}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_devices_api_and_cli_show_the_latest_readings_with_the_cloud_down() {
    let cloud = Mosquitto::down();
    let data = tempfile::tempdir().unwrap();
    let setup = Setup::new(cloud.port, data.path());
    let config = data.path().join("cli.toml");
    std::fs::write(&config, setup.toml()).unwrap();
    let mut gateway = Gateway::start(&setup);
    let port = setup.http_port;
    let (code, empty) = get_json(port, "/api/devices");
    assert_eq!((code, empty), (200, Value::Array(Vec::new())), "no device yet");

    let before = now_ms();
    mosquitto_pub(
        setup.devices_port,
        "devices/thermo-1/events",
        &[
            event("thermo-1", 1, 1_764_000_001_000, r#"{"celsius":20.5,"humidity":{"value":40,"unit":"%"}}"#),
            event("thermo-1", 2, 1_764_000_002_000, r#"{"celsius":23.75}"#),
            // A retransmit of seq 2 with another value: a duplicate, not the latest.
            event("thermo-1", 2, 1_764_000_002_000, r#"{"celsius":99.0}"#),
            event("thermo-1", 3, 1_764_000_003_000, r#"{"humidity":{"value":41.5,"unit":"%"}}"#),
        ],
    );
    mosquitto_pub(
        setup.devices_port,
        "devices/door-7/events",
        &[event("door-7", 9, 1_764_000_004_000, r#"{"open":true}"#)],
    );
    let list = wait_until(WAIT, "both devices in /api/devices", || {
        let (_, list) = get_json(port, "/api/devices");
        let events = |i: usize| list[i]["events"].as_u64();
        (list.as_array().map(Vec::len) == Some(2) && events(0) == Some(1) && events(1) == Some(3)).then_some(list)
    });
    let after = now_ms();

    // Sorted by id: door-7, thermo-1. The cloud never was up.
    let status = http::status(port);
    assert_eq!(status["cloud_link_up"], false);
    assert_eq!(status["routes"][0]["queue_depth"], 4, "{status}");
    let thermo = &list[1];
    assert_eq!(thermo["device"], "thermo-1");
    assert_eq!((thermo["boot"].as_u64(), thermo["seq"].as_u64()), (Some(4), Some(3)), "{thermo}");
    assert_eq!(thermo["reading_count"], 2, "{thermo}");
    assert_eq!(thermo["connected"], Value::Null, "connection state is not known yet: {thermo}");
    let seen = thermo["last_seen_ms"].as_i64().unwrap();
    assert!(before <= seen && seen <= after, "last seen {seen} is the gateway's receive time in [{before}, {after}]");
    assert!(thermo.get("readings").is_none(), "the list carries counts, not readings: {thermo}");
    assert_eq!((list[0]["device"].as_str(), list[0]["seq"].as_u64()), (Some("door-7"), Some(9)));

    let (code, detail) = get_json(port, "/api/devices/thermo-1");
    assert_eq!(code, 200, "{detail}");
    let reading = |name: &str| {
        detail["readings"].as_array().unwrap().iter().find(|r| r["name"] == name).cloned().unwrap_or(Value::Null)
    };
    assert_eq!(reading("celsius")["value"], 23.75, "the newest celsius, not the duplicate's: {detail}");
    assert_eq!(reading("celsius")["ts_ms"], 1_764_000_002_000u64);
    assert_eq!(reading("humidity")["value"], 41.5, "{detail}");
    assert_eq!(reading("humidity")["unit"], "%");
    assert_eq!(reading("humidity")["type"], "environment");
    assert_eq!(detail["events"], 3);
    let (code, with) = get_json(port, "/api/devices?readings=true");
    assert_eq!(code, 200);
    assert_eq!(with[0]["readings"][0]["value"], true, "{with}");
    assert_eq!(get_json(port, "/api/devices/nobody").0, 404);

    // The terminal table, through the running gateway's API.
    let (ok, table) = cli(&config, &[]);
    assert!(ok, "{table}");
    let header = table.lines().next().unwrap();
    assert!(header.starts_with("DEVICE") && header.contains("LAST SEEN") && header.contains("BOOT/SEQ"), "{table}");
    let row = table.lines().find(|l| l.starts_with("thermo-1")).unwrap_or_else(|| panic!("{table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert!(cells.contains(&"4/3") && cells.contains(&"3") && cells.contains(&"?"), "{row}");
    assert!(table.contains("celsius") && table.contains("23.75") && table.contains("41.5 %"), "{table}");
    assert!(!table.contains("99.0"), "the duplicate's value is nowhere: {table}");
    let (ok, one) = cli(&config, &["thermo-1"]);
    assert!(ok && one.contains("23.75") && !one.contains("door-7"), "{one}");
    let (ok, json) = cli(&config, &["door-7", "--json"]);
    assert!(ok, "{json}");
    let door: Value = serde_json::from_str(&json).unwrap();
    assert_eq!((door["device"].as_str(), door["readings"][0]["name"].as_str()), (Some("door-7"), Some("open")));
    let (ok, missing) = cli(&config, &["nobody"]);
    assert!(!ok && missing.contains("no device \"nobody\""), "{missing}");

    // Stopped: the same, straight from the journal.
    assert!(gateway.terminate().unwrap().success());
    let (ok, offline) = cli(&config, &[]);
    assert!(ok, "{offline}");
    assert_eq!(offline.lines().filter(|l| !l.starts_with(' ')).count(), 3, "header and two devices: {offline}");
    let offline_row = offline.lines().find(|l| l.starts_with("thermo-1")).unwrap();
    // Same cells, except "AGO", which moves with the clock.
    let offline_cells: Vec<&str> = offline_row.split_whitespace().collect();
    assert_eq!((offline_cells[..3].to_vec(), &offline_cells[5..]), (cells[..3].to_vec(), &cells[5..]), "{offline}");
    assert!(offline.contains("23.75") && offline.contains("41.5 %"), "{offline}");
}
