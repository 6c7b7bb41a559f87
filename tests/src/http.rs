//! A minimal HTTP/1.1 GET over loopback, enough for `/api/status`, `/readyz`, `/metrics`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// `GET path` on `127.0.0.1:port`: `(status code, body)`, or None when nothing answers.
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// `/api/status` as JSON.
pub fn status(port: u16) -> serde_json::Value {
    let (code, body) = get(port, "/api/status").expect("gateway HTTP not answering");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("/api/status is not JSON")
}

/// One sample of a Prometheus metric (exact name with labels), from `/metrics`.
pub fn metric(port: u16, series: &str) -> Option<f64> {
    let (_, body) = get(port, "/metrics")?;
    body.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}
