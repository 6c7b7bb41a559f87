//! Who can reach the HTTP API and how much one client can take of it (issue 15, items 8
//! and 9): the warning for a network address without a token, the `Host` check of the
//! loopback default (DNS rebinding), bounded dead-letter selections and bodies, and
//! connections that never finish their request head.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edge_tests::clients::publish_all;
use edge_tests::gateway::{binary, Gateway, Setup};
use edge_tests::mosquitto::Mosquitto;
use edge_tests::{free_port, http, wait_until};

const WAIT: Duration = Duration::from_secs(60);
/// `MAX_CONNECTIONS` and `HEADER_READ_TIMEOUT` of gateway/src/api/server.rs.
const MAX_CONNECTIONS: usize = 64;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
const EXPOSED: &str = "is reachable from the network without a token";

/// One raw request (`head` without the final blank line) on `127.0.0.1:port`: status and body.
fn request(port: u16, head: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let length = if body.is_empty() {
        String::new()
    } else {
        format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len())
    };
    write!(stream, "{head}\r\nConnection: close\r\n{length}\r\n{body}").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// `setup`'s config with `[http].listen` on `listen`, plus `http_extra` lines in `[http]`.
fn config_listening_on(setup: &Setup, listen: &str, http_extra: &str) -> String {
    let loopback = format!("listen = \"127.0.0.1:{}\"\n", setup.http_port);
    let toml = setup.toml();
    assert!(toml.contains(&loopback), "the harness's [http] line moved: {toml}");
    toml.replace(&loopback, &format!("listen = \"{listen}\"\n{http_extra}"))
}

fn check_config(dir: &std::path::Path, toml: &str) -> String {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(binary()).args(["check-config", "--config"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn check_config_warns_about_an_api_on_the_network_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(free_port(), dir.path());
    let port = setup.http_port;

    let warnings = check_config(dir.path(), &config_listening_on(&setup, &format!("0.0.0.0:{port}"), ""));
    let line = warnings.lines().find(|l| l.contains(EXPOSED)).unwrap_or_else(|| panic!("no warning in: {warnings}"));
    assert!(line.starts_with(&format!("warning: http.listen = \"0.0.0.0:{port}\"")), "{line}");
    for says in ["read dead letters", "replay or purge", "set [http].token_file"] {
        assert!(line.contains(says), "{says:?} missing in: {line}");
    }

    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "0123456789abcdef0123").unwrap();
    let with_token = format!("token_file = \"{}\"\n", token_file.display());
    let warnings = check_config(dir.path(), &config_listening_on(&setup, &format!("0.0.0.0:{port}"), &with_token));
    assert!(!warnings.contains(EXPOSED), "a token is the fix: {warnings}");
    let warnings = check_config(dir.path(), &setup.toml());
    assert!(!warnings.contains(EXPOSED), "loopback is not exposed: {warnings}");
}

/// A gateway started from a config text of the test's own; SIGKILLed on drop.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_gateway_warns_at_start_about_an_api_on_the_network_without_a_token() {
    let cloud = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(cloud.port, &dir.path().join("data"));
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, config_listening_on(&setup, &format!("0.0.0.0:{}", setup.http_port), "")).unwrap();
    let log = dir.path().join("gateway.log");
    let child = Command::new(binary())
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info,rumqttd=off")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _gateway = Started(child);
    wait_until(WAIT, "the HTTP API", || matches!(http::get(setup.http_port, "/healthz"), Some((200, _))).then_some(()));
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text.lines().find(|l| l.contains(EXPOSED)).unwrap_or_else(|| panic!("no warning in: {text}"));
    assert!(line.contains("WARN") && line.contains("set [http].token_file"), "{line}");
}

#[test]
fn a_loopback_api_serves_only_requests_that_name_this_machine() {
    let cloud = Mosquitto::start();
    let data = tempfile::tempdir().unwrap();
    let setup = Setup::new(cloud.port, data.path());
    let gateway = Gateway::start(&setup);
    let port = setup.http_port;

    // A DNS-rebinding page: the browser connects to 127.0.0.1 but names its own host.
    for path in ["/api/dlq", "/api/status", "/healthz", "/"] {
        let (status, body) = request(port, &format!("GET {path} HTTP/1.1\r\nHost: rebind.evil.example:{port}"), "");
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains("Host \"rebind.evil.example:"), "{body}");
        assert!(body.contains("does not name this machine") && body.contains("DNS rebinding"), "{body}");
    }
    let (status, body) =
        request(port, &format!("POST /api/dlq/purge HTTP/1.1\r\nHost: rebind.evil.example:{port}"), "{\"all\":true}");
    assert_eq!(status, 403, "{body}");

    // This machine, by any loopback name and any port (an SSH tunnel, a proxy): served.
    for host in [format!("127.0.0.1:{port}"), "localhost".into(), "LOCALHOST:8080".into(), "[::1]:9999".into()] {
        let (status, body) = request(port, &format!("GET /api/status HTTP/1.1\r\nHost: {host}"), "");
        assert_eq!(status, 200, "Host: {host}: {body}");
    }
    let (status, body) = request(port, "GET /api/status HTTP/1.0", "");
    assert_eq!(status, 200, "an HTTP/1.0 request without Host: {body}");
    assert!(gateway.log_text().contains("HTTP request refused"), "{}", gateway.log_text());

    // The terminal client names 127.0.0.1:port and goes on working.
    let config = data.path().join("cli.toml");
    std::fs::write(&config, setup.toml()).unwrap();
    let out = Command::new(binary()).args(["dlq", "list", "--config"]).arg(&config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_naming_one_dead_letter_many_times_queues_it_once_and_oversized_requests_are_refused() {
    let cloud = Mosquitto::start();
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(cloud.port, data.path());
    // Every publish on this route is a dead letter: no reading fits `fields`.
    setup.routes = "[[routes]]\nname = \"z\"\nfrom = \"zigbee2mqtt/{device}\"\nto = \"gateways/zigbee\"\n\
                    input = \"json-fields\"\nfields = { celsius = \"celsius\" }\n"
        .into();
    let gateway = Gateway::start(&setup);
    let port = setup.http_port;
    publish_all(setup.devices_port, "z2m", vec![("zigbee2mqtt/x".into(), b"\"on\"".to_vec())]).await.unwrap();
    wait_until(WAIT, "the dead letter", || (gateway.status()["dead_letters"] == 1).then_some(()));
    let (_, list) = request(port, "GET /api/dlq HTTP/1.1\r\nHost: 127.0.0.1", "");
    let rows: serde_json::Value = serde_json::from_str(&list).unwrap();
    let id = rows[0]["id"].as_i64().unwrap();

    let ids = vec![id.to_string(); 1000].join(",");
    let (status, body) =
        request(port, "POST /api/dlq/replay HTTP/1.1\r\nHost: 127.0.0.1", &format!("{{\"ids\":[{ids}]}}"));
    assert_eq!((status, body.as_str()), (200, "{\"queued\":1,\"refused\":[]}"));
    // Still a dead letter after its replay: one new row replaces it, not a thousand.
    wait_until(WAIT, "the replay processed", || (gateway.status()["dead_letters"] == 2).then_some(()));
    let (_, list) = request(port, "GET /api/dlq HTTP/1.1\r\nHost: 127.0.0.1", "");
    let rows: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{list}");

    let ids = vec!["1"; 10_001].join(",");
    let (status, body) =
        request(port, "POST /api/dlq/replay HTTP/1.1\r\nHost: 127.0.0.1", &format!("{{\"ids\":[{ids}]}}"));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("10001 ids in one request; at most 10000") && body.contains("\"all\""), "{body}");
    let ids = vec!["1234567890"; 30_000].join(",");
    let (status, body) =
        request(port, "POST /api/dlq/purge HTTP/1.1\r\nHost: 127.0.0.1", &format!("{{\"ids\":[{ids}]}}"));
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("request body over 262144 bytes"), "{body}");
    let (status, body) = request(port, "POST /api/dlq/replay HTTP/1.1\r\nHost: 127.0.0.1", "{\"all\":true}");
    assert_eq!(
        (status, body.as_str()),
        (200, "{\"queued\":1,\"refused\":[]}"),
        "\"all\" is not bounded by the id limit"
    );
}

/// A connection that sends part of a request head and then nothing.
fn idle_connection(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n").unwrap();
    stream
}

#[test]
fn a_connection_that_never_finishes_its_request_head_is_closed() {
    let cloud = Mosquitto::start();
    let data = tempfile::tempdir().unwrap();
    let setup = Setup::new(cloud.port, data.path());
    let _gateway = Gateway::start(&setup);
    let mut stream = idle_connection(setup.http_port);
    stream.set_read_timeout(Some(HEADER_READ_TIMEOUT * 4)).unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let read = stream.read_to_end(&mut rest);
    assert!(read.is_ok(), "the gateway kept the connection open for {:?}: {read:?}", started.elapsed());
    assert!(started.elapsed() < HEADER_READ_TIMEOUT * 2, "closed only after {:?}", started.elapsed());
}

#[test]
fn a_client_beyond_the_connection_cap_is_served_once_idle_connections_time_out() {
    let cloud = Mosquitto::start();
    let data = tempfile::tempdir().unwrap();
    let setup = Setup::new(cloud.port, data.path());
    let _gateway = Gateway::start(&setup);
    let port = setup.http_port;
    let mut idle: Vec<TcpStream> = (0..MAX_CONNECTIONS).map(|_| idle_connection(port)).collect();
    let started = Instant::now();
    let (status, body) = request(port, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1", "");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert!(started.elapsed() < HEADER_READ_TIMEOUT * 3, "served only after {:?}", started.elapsed());
    // The cap: the request was answered only after the server had closed an idle
    // connection to make room (without a cap it is answered at once, all of them open).
    let closed = idle.iter_mut().map(closed_by_server).filter(|closed| *closed).count();
    assert!(
        closed > 0,
        "answered after {:?} with all {MAX_CONNECTIONS} idle connections still open",
        started.elapsed()
    );
}

/// Whether the server has closed `stream` (end of stream or reset), without waiting.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            // An answer (a 408, say) before the close: read on.
            Ok(_) => continue,
            Err(err) => return err.kind() != std::io::ErrorKind::WouldBlock,
        }
    }
}
