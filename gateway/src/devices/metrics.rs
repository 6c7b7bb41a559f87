//! The device side's metrics: connections (open, refused by reason, refused logins by
//! reason), connections the gateway closed (by reason), denied publishes and subscriptions,
//! oversized packets (from devices, and publishes too large for a device), and
//! back-pressure. The device gate is their only writer; they only report.
//!
//! Adding a metric: a field here, and a line in [`DeviceMetrics::render`].

use super::auth::AuthFailure;
use crate::meter::{Counter, Exposition, Gauge, Render};

/// Why the device listener closed a connection before or instead of serving it. The label
/// values are part of the metrics contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionRefusal {
    /// Credentials refused (see `edge_gateway_device_auth_failures_total` for why).
    Auth,
    /// `devices.max_connections` reached, or every pre-login place taken by a connection
    /// whose CONNECT is being checked.
    Limit,
    /// The TLS handshake failed (e.g. no valid client certificate).
    Tls,
    /// No valid MQTT CONNECT in time.
    Protocol,
    /// A will on a topic the device may not publish on.
    Acl,
    /// Closed while waiting for its CONNECT to make room for newer connections (the
    /// pre-login limits: SECURITY.md).
    Evicted,
}

impl ConnectionRefusal {
    /// Every reason, in label order (index = `reason as usize`).
    pub const ALL: [ConnectionRefusal; 6] =
        [Self::Auth, Self::Limit, Self::Tls, Self::Protocol, Self::Acl, Self::Evicted];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Limit => "limit",
            Self::Tls => "tls",
            Self::Protocol => "protocol",
            Self::Acl => "acl",
            Self::Evicted => "evicted",
        }
    }
}

/// What a device was denied (the `action` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// A publish outside `devices/{its id}/...`, or on its own ack or commands topic.
    Publish,
    /// A subscription other than its own ack and commands topics.
    Subscribe,
}

impl Denial {
    /// Every action, in label order.
    pub const ALL: [Denial; 2] = [Denial::Publish, Denial::Subscribe];

    /// The `action` label value.
    pub fn label(self) -> &'static str {
        match self {
            Denial::Publish => "publish",
            Denial::Subscribe => "subscribe",
        }
    }
}

/// Why the gateway closed a device connection it had accepted (the `reason` label of
/// `edge_gateway_device_disconnects_total`). The label values are part of the metrics
/// contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceDisconnect {
    /// A publish or subscription outside the device's own topics.
    Denied,
    /// A packet over `devices.max_payload`.
    TooLarge,
    /// A packet that breaks the MQTT protocol.
    Protocol,
    /// A newer connection with the same client id (MQTT-3.1.4-2).
    Takeover,
    /// The embedded broker closed it (keep-alive expired, or a protocol error it found).
    Broker,
    /// A reload no longer admits its login: its user was removed, its password hash
    /// changed, or anonymous access was turned off.
    Revoked,
}

impl DeviceDisconnect {
    /// Every reason, in label order (index = `reason as usize`).
    pub const ALL: [DeviceDisconnect; 6] =
        [Self::Denied, Self::TooLarge, Self::Protocol, Self::Takeover, Self::Broker, Self::Revoked];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Denied => "denied",
            Self::TooLarge => "too_large",
            Self::Protocol => "protocol",
            Self::Takeover => "takeover",
            Self::Broker => "broker",
            Self::Revoked => "revoked",
        }
    }
}

/// Device-side connection figures (the device listener in front of the embedded broker).
#[derive(Debug, Default)]
pub struct DeviceMetrics {
    /// Device clients connected now (CONNACK accepted, socket still open).
    pub connected: Gauge,
    /// Refused credentials, by [`AuthFailure`] (index = `failure as usize`).
    pub auth_failures: [Counter; 4],
    /// Connections closed before being served, by [`ConnectionRefusal`].
    pub refused: [Counter; 6],
    /// Publishes / subscriptions denied, by [`Denial`].
    pub denied: [Counter; 2],
    /// Packets larger than `devices.max_payload` (the device is disconnected).
    pub too_large: Counter,
    /// Publishes not delivered to an MQTT 5 device because they were larger than the
    /// Maximum Packet Size it set.
    pub not_delivered: Counter,
    /// Times the gate held a device back because the journal was behind (back-pressure).
    pub backpressure: Counter,
    /// Accepted connections the gateway closed, by [`DeviceDisconnect`].
    pub disconnects: [Counter; 6],
}

impl DeviceMetrics {
    /// Counts a refused login (and the refused connection).
    pub fn count_auth_failure(&self, failure: AuthFailure) {
        self.auth_failures[failure as usize].add(1);
        self.refused[ConnectionRefusal::Auth as usize].add(1);
    }

    /// Counts a connection refused for `reason`.
    pub fn count_refused(&self, reason: ConnectionRefusal) {
        self.refused[reason as usize].add(1);
    }

    /// Refused connections so far for `reason`.
    pub fn refused(&self, reason: ConnectionRefusal) -> u64 {
        self.refused[reason as usize].get()
    }
}

impl Render for DeviceMetrics {
    fn render(&self, out: &mut Exposition) {
        let help = "Device logins refused, by reason.";
        let mut family = out.family("edge_gateway_device_auth_failures_total", "counter", help);
        for failure in AuthFailure::ALL {
            family.sample(&format!("reason=\"{}\"", failure.label()), self.auth_failures[failure as usize].get());
        }
        let help = "Device connections refused or closed before being served, by reason.";
        let mut family = out.family("edge_gateway_device_connections_refused_total", "counter", help);
        for reason in ConnectionRefusal::ALL {
            family.sample(&format!("reason=\"{}\"", reason.label()), self.refused(reason));
        }
        let help = "Accepted device connections the gateway closed, by reason.";
        let mut family = out.family("edge_gateway_device_disconnects_total", "counter", help);
        for reason in DeviceDisconnect::ALL {
            family.sample(&format!("reason=\"{}\"", reason.label()), self.disconnects[reason as usize].get());
        }
        let help = "Device publishes and subscriptions outside the device's own topics (device disconnected).";
        let mut family = out.family("edge_gateway_device_denied_total", "counter", help);
        for denial in Denial::ALL {
            family.sample(&format!("action=\"{}\"", denial.label()), self.denied[denial as usize].get());
        }
        out.single("edge_gateway_devices_connected", "gauge", "Device clients connected now.", self.connected.get());
        let help = "Device packets over devices.max_payload (device disconnected).";
        out.single("edge_gateway_device_packets_too_large_total", "counter", help, self.too_large.get());
        let help = "Publishes not delivered to a device because they exceed the Maximum Packet Size it set (MQTT 5).";
        out.single(
            "edge_gateway_device_publishes_too_large_for_device_total",
            "counter",
            help,
            self.not_delivered.get(),
        );
        let help = "Times the device gate held devices back because the journal was behind.";
        out.single("edge_gateway_device_backpressure_total", "counter", help, self.backpressure.get());
    }
}

/// What the device side reports to (cheap to clone).
#[derive(Debug, Clone)]
pub struct DeviceMeters {
    /// The device side's metrics.
    pub devices: std::sync::Arc<DeviceMetrics>,
}
