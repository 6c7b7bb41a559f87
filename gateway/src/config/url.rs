//! Broker URLs (`mqtt://host:port`, `mqtts://host:port`) as the config writes them.

use std::fmt;

/// An MQTT broker address from a URL such as `mqtt://127.0.0.1:1884` or
/// `mqtts://cloud.example:8883`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or address.
    pub host: String,
    /// TCP port (1883 for `mqtt://`, 8883 for `mqtts://` when the URL has none).
    pub port: u16,
    /// `mqtts://`: TLS on the connection.
    pub tls: bool,
}

impl BrokerUrl {
    /// A plain `mqtt://` address.
    pub fn plain(host: &str, port: u16) -> Self {
        BrokerUrl { host: host.to_owned(), port, tls: false }
    }

    /// Parses `mqtt://host[:port]` or `mqtts://host[:port]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (rest, tls, default_port) = if let Some(rest) = text.strip_prefix("mqtt://") {
            (rest, false, 1883)
        } else if let Some(rest) = text.strip_prefix("mqtts://") {
            (rest, true, 8883)
        } else {
            return Err(format!("expected a URL like \"mqtt://host:1883\" or \"mqtts://host:8883\", found {text:?}"));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
                let port = port.parse::<u16>().map_err(|_| format!("bad port {port:?} in {text:?}"))?;
                (host, port)
            }
            _ => (rest, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('/') {
            return Err(format!("no host in {text:?}"));
        }
        Ok(BrokerUrl { host: host.to_owned(), port, tls })
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}
