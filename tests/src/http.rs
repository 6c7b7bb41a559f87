//! A minimal HTTP/1.1 GET over loopback, enough for `/api/status`, `/readyz`, `/metrics`
//! (with a bearer token when the gateway wants one).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// `GET path` on `127.0.0.1:port`: `(status code, body)`, or None when nothing answers.
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    get_with_token(port, path, None)
}

/// `GET path` with `Authorization: Bearer <token>` when given.
pub fn get_with_token(port: u16, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}\r\n").ok()?;
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

/// Checks Prometheus text exposition format (0.0.4) line by line and returns the samples:
/// `# HELP`/`# TYPE` comments, then `name{label="value",...} number`, every sample's metric
/// declared by a `# TYPE` before it (histograms through `_bucket`/`_sum`/`_count`).
pub fn parse_prometheus(text: &str) -> Result<Vec<(String, f64)>, String> {
    fn valid_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    let mut typed: Vec<(String, String)> = Vec::new();
    let mut samples = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = |msg: &str| format!("line {}: {msg}: {line}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("HELP"), Some(name), _) if valid_name(name) => {}
                (Some("TYPE"), Some(name), Some(kind)) if valid_name(name) => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at("unknown type"));
                    }
                    typed.push((name.to_owned(), kind.to_owned()));
                }
                _ => return Err(at("malformed comment")),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or_else(|| at("no value"))?;
        let value: f64 = value.parse().map_err(|_| at("value is not a number"))?;
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').ok_or_else(|| at("unclosed labels"))?;
                for pair in labels.split(',') {
                    let (key, quoted) = pair.split_once('=').ok_or_else(|| at("label without ="))?;
                    let ok = valid_name(key) && quoted.len() >= 2 && quoted.starts_with('"') && quoted.ends_with('"');
                    if !ok {
                        return Err(at("malformed label"));
                    }
                }
                name
            }
            None => series,
        };
        if !valid_name(name) {
            return Err(at("invalid metric name"));
        }
        let declared = typed.iter().any(|(t, kind)| {
            t == name
                || (kind == "histogram"
                    && [format!("{t}_bucket"), format!("{t}_sum"), format!("{t}_count")].contains(&name.to_owned()))
        });
        if !declared {
            return Err(at("sample before its # TYPE"));
        }
        samples.push((series.to_owned(), value));
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::parse_prometheus;

    #[test]
    fn the_prometheus_checker_accepts_good_text_and_names_the_bad_line() {
        let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{route=\"r\"} 3\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 0.5\nh_count 1\n";
        assert_eq!(parse_prometheus(good).unwrap().len(), 4);
        assert!(parse_prometheus("a_total 1\n").unwrap_err().contains("before its # TYPE"));
        assert!(parse_prometheus("# TYPE a counter\na{x=1} 2\n").unwrap_err().contains("malformed label"));
        assert!(parse_prometheus("# TYPE a counter\na one\n").unwrap_err().contains("not a number"));
        assert!(parse_prometheus("# TYPE a countr\n").unwrap_err().contains("unknown type"));
    }
}
