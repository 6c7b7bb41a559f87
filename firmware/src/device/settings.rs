//! What a device is told ([`Settings`], with its [`Password`]) and what it reports
//! ([`Stats`], [`Activity`]).

use crate::mqtt::QoS;
use crate::ring::WhenFull;

/// How a device talks to its gateway; [`Settings::default`] suits most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// What the ring does when it is full.
    pub when_full: WhenFull,
    /// QoS of event publishes (the ack topic confirms either way).
    pub qos: QoS,
    /// MQTT keep-alive, in seconds (0 disables pings).
    pub keep_alive_secs: u16,
    /// Most QoS 1 publishes awaiting their PUBACK.
    pub max_inflight: usize,
    /// How long to wait for a CONNACK or SUBACK, in ms.
    pub response_timeout_ms: u32,
    /// First reconnect delay, in ms.
    pub retry_min_ms: u32,
    /// Longest reconnect delay, in ms.
    pub retry_max_ms: u32,
    /// How long a session must stay up before the reconnect delay goes back to
    /// `retry_min_ms`, in ms.
    pub stable_after_ms: u32,
    /// MQTT user name. `None`: the device id, sent only together with a password (the
    /// gateway's `[devices.auth]` users are device ids).
    pub username: Option<&'static str>,
    /// MQTT password (`None`: log in anonymously). Kept in flash or a `static` the
    /// application fills at start-up; `Debug` never prints it.
    pub password: Option<Password>,
}

/// A password for the MQTT CONNECT; its `Debug` is redacted.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Password(&'static [u8]);

impl Password {
    /// A password of these bytes (MQTT 3.1.1 passwords are binary, at most 65,535 bytes).
    pub const fn new(bytes: &'static [u8]) -> Password {
        Password(bytes)
    }

    /// The bytes, for the CONNECT.
    pub const fn as_bytes(&self) -> &'static [u8] {
        self.0
    }
}

impl core::fmt::Debug for Password {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            when_full: WhenFull::DropOldest,
            qos: QoS::AtLeastOnce,
            keep_alive_secs: 30,
            max_inflight: 32,
            response_timeout_ms: 10_000,
            retry_min_ms: 100,
            retry_max_ms: 10_000,
            stable_after_ms: 30_000,
            username: None,
            password: None,
        }
    }
}

/// Counters since the device was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Events taken into the ring.
    pub recorded: u64,
    /// Events released by an ack.
    pub confirmed: u64,
    /// Events the ring dropped to make room.
    pub dropped: u64,
    /// Event publishes, re-sends included.
    pub published: u64,
    /// Event publishes of an event already sent before.
    pub resent: u64,
    /// Sessions the broker accepted (the first one included).
    pub connects: u64,
    /// Sessions lost to an error or a timeout.
    pub link_errors: u64,
    /// Messages on the ack topic that were not an ack.
    pub bad_acks: u64,
    /// Messages received on the commands topic.
    pub commands: u64,
    /// Commands run by the handler of [`Device::poll_commands`].
    pub commands_run: u64,
    /// Commands received again and answered from memory.
    pub commands_repeated: u64,
    /// Messages on the commands topic that were not a command.
    pub bad_commands: u64,
    /// Incoming packets larger than the receive buffer, skipped unread.
    pub oversized: u64,
}

/// What one [`Device::poll`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Activity {
    /// Event publishes sent.
    pub published: usize,
    /// Packets received.
    pub received: usize,
}

impl Activity {
    /// True when the poll neither sent nor received anything.
    pub fn is_idle(&self) -> bool {
        self.published == 0 && self.received == 0
    }
}
