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
