//! The device-side MQTT topics, without a heap:
//! `devices/{device}/events` (device -> gateway), `devices/{device}/ack` and
//! `devices/{device}/commands` (gateway -> device), `devices/{device}/commands/status`
//! (device -> gateway: its [`Reply`](crate::command::Reply)s to commands).
//!
//! Writers check the device id with [`validate_device_id`], so a topic they build never
//! contains `/`, `+` or `#` inside the device level.

use core::fmt::Write as _;

use crate::validate::{validate_device_id, ValidationError};

/// Longest topic the writers produce, in bytes (`devices/` + 32-byte id + `/commands` is 49).
pub const MAX_TOPIC_LEN: usize = 64;

/// A topic built by the writers below.
pub type Topic = heapless::String<MAX_TOPIC_LEN>;

const PREFIX: &str = "devices/";

/// The device level of `devices/{device}/events`, or `None` for any other topic (including
/// an empty device level). The id itself is not validated: call [`validate_device_id`].
///
/// ```
/// assert_eq!(edge_event::topic::events_device("devices/env-7/events"), Some("env-7"));
/// assert_eq!(edge_event::topic::events_device("devices/env-7/ack"), None);
/// ```
pub fn events_device(topic: &str) -> Option<&str> {
    device_of(topic, "/events")
}

/// The device level of `devices/{device}/ack`, or `None`.
pub fn ack_device(topic: &str) -> Option<&str> {
    device_of(topic, "/ack")
}

/// The device level of `devices/{device}/commands`, or `None`.
pub fn commands_device(topic: &str) -> Option<&str> {
    device_of(topic, "/commands")
}

/// The device level of `devices/{device}/commands/status`, or `None`.
pub fn command_status_device(topic: &str) -> Option<&str> {
    device_of(topic, "/commands/status")
}

/// Replaces `out` with `devices/{device}/commands/status`, where a device answers commands.
pub fn write_command_status_topic(device: &str, out: &mut Topic) -> Result<(), ValidationError> {
    write_topic(device, "/commands/status", out)
}

/// Replaces `out` with `devices/{device}/events`.
pub fn write_events_topic(device: &str, out: &mut Topic) -> Result<(), ValidationError> {
    write_topic(device, "/events", out)
}

/// Replaces `out` with `devices/{device}/ack`, where the gateway publishes [`Ack`](crate::Ack)s.
///
/// ```
/// let mut topic = edge_event::topic::Topic::new();
/// edge_event::topic::write_ack_topic("env-7", &mut topic)?;
/// assert_eq!(topic, "devices/env-7/ack");
/// # Ok::<(), edge_event::ValidationError>(())
/// ```
pub fn write_ack_topic(device: &str, out: &mut Topic) -> Result<(), ValidationError> {
    write_topic(device, "/ack", out)
}

/// Replaces `out` with `devices/{device}/commands`, where the gateway sends downlink.
pub fn write_commands_topic(device: &str, out: &mut Topic) -> Result<(), ValidationError> {
    write_topic(device, "/commands", out)
}

fn device_of<'a>(topic: &'a str, suffix: &str) -> Option<&'a str> {
    let device = topic.strip_prefix(PREFIX)?.strip_suffix(suffix)?;
    (!device.is_empty() && !device.contains('/')).then_some(device)
}

fn write_topic(device: &str, suffix: &str, out: &mut Topic) -> Result<(), ValidationError> {
    validate_device_id(device)?;
    out.clear();
    // A valid id is at most 32 bytes, so the topic is at most 49 of the 64 bytes.
    let written = write!(out, "{PREFIX}{device}{suffix}");
    debug_assert!(written.is_ok(), "topic capacity is sized for the longest id");
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_a_single_nonempty_device_level() {
        assert_eq!(events_device("devices/d1/events"), Some("d1"));
        assert_eq!(events_device("devices//events"), None);
        assert_eq!(events_device("devices/a/b/events"), None);
        assert_eq!(events_device("devices/d1/events/x"), None);
        assert_eq!(events_device("other/d1/events"), None);
        assert_eq!(ack_device("devices/d1/ack"), Some("d1"));
        assert_eq!(commands_device("devices/d1/commands"), Some("d1"));
        assert_eq!(commands_device("devices/d1/commands/status"), None);
        assert_eq!(command_status_device("devices/d1/commands/status"), Some("d1"));
    }

    #[test]
    fn writes_every_topic_for_the_longest_device_id() {
        let id = "a".repeat(32);
        let mut topic = Topic::new();
        write_commands_topic(&id, &mut topic).unwrap();
        assert_eq!(commands_device(&topic), Some(id.as_str()));
        write_command_status_topic(&id, &mut topic).unwrap();
        assert_eq!(command_status_device(&topic), Some(id.as_str()));
        write_events_topic(&id, &mut topic).unwrap();
        assert_eq!(events_device(&topic), Some(id.as_str()));
        write_ack_topic("d1", &mut topic).unwrap();
        assert_eq!(topic, "devices/d1/ack");
    }

    #[test]
    fn refuses_to_write_a_topic_for_an_invalid_device_id() {
        let mut topic = Topic::new();
        assert!(matches!(write_ack_topic("a/b", &mut topic), Err(ValidationError::InvalidDeviceId { found: '/', .. })));
        assert_eq!(write_ack_topic("", &mut topic), Err(ValidationError::EmptyDeviceId));
        assert_eq!(write_ack_topic(&"a".repeat(33), &mut topic), Err(ValidationError::DeviceIdTooLong { len: 33 }));
    }
}
