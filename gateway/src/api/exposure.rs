//! Who can reach the API: the warning for a network address without a token
//! ([`exposure_warning`], at start and in `check-config`), and the `Host` check that keeps
//! web pages away from a loopback listener ([`HostCheck`]).
//!
//! Invariants:
//! - With `[http].listen` on a loopback address (the default), a request is served only
//!   when its `Host` (and the authority of an absolute request target, if any) names a
//!   loopback address or `localhost`, any port; a request without `Host` (HTTP/1.0) is
//!   served. This is the guard against DNS rebinding: a page in a local browser that makes
//!   its own name resolve to 127.0.0.1 still sends its own name as `Host`, and is refused
//!   with 403 before any handler (or the token check) runs.
//! - On any other address the `Host` is not checked (the names the gateway is reached by
//!   are not known); the token is the guard, and its absence is warned about.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::HttpConfig;
use crate::util::RateLimited;

/// The warning for `[http].listen` on a non-loopback address without `[http].token`: then
/// anyone who reaches the port reads dead letters (raw device payloads) and device data,
/// and replays or purges dead letters. None when the API is off, on loopback, or has a token.
pub fn exposure_warning(http: &HttpConfig) -> Option<String> {
    let listen = http.listen?;
    if is_loopback(listen.ip()) || http.token.is_some() {
        return None;
    }
    Some(format!(
        "http.listen = \"{listen}\" is reachable from the network without a token: anyone who can reach it can read \
         dead letters (raw device payloads) and device data, and replay or purge dead letters; set [http].token_file, \
         or listen on 127.0.0.1"
    ))
}

/// Loopback, IPv4-mapped IPv6 loopback (`::ffff:127.0.0.1`) included.
fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// The `Host` check of a listener (see the module invariants).
pub(super) struct HostCheck {
    /// Only loopback names are served (the listener is on a loopback address).
    loopback_only: bool,
    /// Refusals are logged at most once per minute.
    log: Mutex<RateLimited>,
}

impl HostCheck {
    /// The check for a listener on `listen`.
    pub(super) fn new(listen: SocketAddr) -> HostCheck {
        HostCheck {
            loopback_only: is_loopback(listen.ip()),
            log: Mutex::new(RateLimited::new(Duration::from_secs(60))),
        }
    }

    /// The first `Host` or request-target authority that does not name this machine.
    fn foreign_host<'r>(&self, request: &'r Request) -> Option<&'r str> {
        if !self.loopback_only {
            return None;
        }
        let hosts = request.headers().get_all(header::HOST).iter().map(|v| v.to_str().unwrap_or("\u{fffd}"));
        request.uri().authority().map(|a| a.as_str()).into_iter().chain(hosts).find(|host| !names_loopback(host))
    }
}

/// Middleware: refuses (403) a request whose `Host` does not name the loopback listener.
pub(super) async fn check_host(
    State(check): State<std::sync::Arc<HostCheck>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(host) = check.foreign_host(&request) else {
        return next.run(request).await;
    };
    if let Some(suppressed) = check.log.lock().ok().and_then(|mut log| log.allow()) {
        tracing::warn!(
            host,
            path = request.uri().path(),
            suppressed,
            "HTTP request refused: its Host does not name this machine (DNS-rebinding guard of a loopback [http].listen)"
        );
    }
    let body = format!(
        "refused: Host {host:?} does not name this machine. The API listens on a loopback address and serves only \
         Host: localhost, 127.0.0.1 or [::1] (any port), so that a web page cannot reach it through DNS rebinding. \
         To serve it under another name, listen on another address and set [http].token_file.\n"
    );
    (StatusCode::FORBIDDEN, body).into_response()
}

/// Whether a `Host` value (`name[:port]`, `[v6][:port]`) names a loopback address or
/// `localhost` (case-insensitive, a trailing dot allowed). Subdomains of `localhost` are not
/// accepted: whether they resolve to loopback depends on the resolver.
fn names_loopback(host: &str) -> bool {
    let (name, port) = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, port)) => (v6, port),
            None => return false,
        },
        None => host.split_at(host.find(':').unwrap_or(host.len())),
    };
    let port_ok = match port.strip_prefix(':') {
        Some(digits) => digits.bytes().all(|b| b.is_ascii_digit()),
        None => port.is_empty(),
    };
    if !port_ok {
        return false;
    }
    if host.starts_with('[') {
        return name.parse::<Ipv6Addr>().is_ok_and(|ip| is_loopback(IpAddr::V6(ip)));
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    name.eq_ignore_ascii_case("localhost") || name.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn loopback_names_with_any_port_are_accepted() {
        for host in [
            "localhost",
            "LocalHost:9464",
            "localhost.:80",
            "localhost:",
            "127.0.0.1",
            "127.0.0.1:9464",
            "127.1.2.3:1",
            "[::1]",
            "[::1]:9464",
            "[::ffff:127.0.0.1]:9464",
        ] {
            assert!(names_loopback(host), "{host}");
        }
    }

    #[test]
    fn other_names_and_malformed_hosts_are_refused() {
        for host in [
            "evil.example",
            "evil.example:9464",
            "localhost.evil.example",
            "app.localhost",
            "127.0.0.1.nip.io",
            "192.168.1.10:9464",
            "0.0.0.0:9464",
            "2130706433",
            "0x7f.1",
            "[::2]:9464",
            "[::1",
            "[::1]x",
            "localhost:94a",
            "::1",
            "",
            "\u{fffd}",
        ] {
            assert!(!names_loopback(host), "{host}");
        }
    }

    fn http(listen: &str, token: bool) -> HttpConfig {
        let token = token.then(|| Secret::new("0123456789abcdef".into()));
        HttpConfig { listen: Some(listen.parse().unwrap()), token }
    }

    #[test]
    fn only_a_network_address_without_a_token_is_warned_about() {
        let warning = exposure_warning(&http("0.0.0.0:9464", false)).unwrap();
        assert!(warning.contains("http.listen = \"0.0.0.0:9464\" is reachable from the network without a token"));
        assert!(warning.contains("set [http].token_file"), "{warning}");
        assert!(exposure_warning(&http("192.168.1.10:9464", false)).is_some());
        assert!(exposure_warning(&http("[::]:9464", false)).is_some());
        assert!(exposure_warning(&http("0.0.0.0:9464", true)).is_none());
        assert!(exposure_warning(&http("127.0.0.1:9464", false)).is_none());
        assert!(exposure_warning(&http("[::1]:9464", false)).is_none());
        assert!(exposure_warning(&HttpConfig { listen: None, token: None }).is_none());
    }

    #[test]
    fn the_host_is_checked_only_on_a_loopback_listener() {
        let request = |host: &str| {
            Request::builder().uri("/api/dlq").header(header::HOST, host).body(axum::body::Body::empty()).unwrap()
        };
        let loopback = HostCheck::new("127.0.0.1:9464".parse().unwrap());
        assert_eq!(loopback.foreign_host(&request("evil.example:9464")), Some("evil.example:9464"));
        assert_eq!(loopback.foreign_host(&request("127.0.0.1:9464")), None);
        let absolute = Request::builder().uri("http://evil.example/api/dlq").body(axum::body::Body::empty()).unwrap();
        assert_eq!(loopback.foreign_host(&absolute), Some("evil.example"));
        let no_host = Request::builder().uri("/api/dlq").body(axum::body::Body::empty()).unwrap();
        assert_eq!(loopback.foreign_host(&no_host), None);
        let network = HostCheck::new("0.0.0.0:9464".parse().unwrap());
        assert_eq!(network.foreign_host(&request("evil.example:9464")), None);
    }
}
