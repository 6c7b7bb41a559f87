//! `[commands]`: cloud-to-device commands (used by the downlink stage). Parsed and checked
//! on its own, from the raw TOML section; errors carry their key path
//! (`commands.max_per_device: ...`) like every other section's.

use std::time::Duration;

use serde::Deserialize;

use super::units::RawUnit;
use super::ByteSize;

/// The default cloud topic filter; its last level (`+`) is the device id.
pub const DEFAULT_TOPIC: &str = "gateways/{gateway}/commands/+";
/// The default status topic.
pub const DEFAULT_STATUS_TOPIC: &str = "gateways/{gateway}/commands/{device}/status";
/// Largest command the firmware's default 256-byte receive buffer takes with the longest
/// device id (a 3-byte fixed header, the topic, the packet id).
pub const DEFAULT_MAX_SIZE: u64 = 200;

/// `[commands]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    enabled: Option<bool>,
    topic: Option<String>,
    status_topic: Option<String>,
    client_id: Option<String>,
    max_per_device: Option<i64>,
    max_total: Option<i64>,
    default_deadline: Option<RawUnit>,
    resend: Option<RawUnit>,
    max_size: Option<RawUnit>,
    keep_finished: Option<RawUnit>,
}

/// The validated `[commands]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandsConfig {
    /// Off by default: it opens a write path from the cloud to the devices and a second
    /// session on the cloud broker, which its ACLs must allow.
    pub enabled: bool,
    /// Cloud topic filter with `{gateway}` filled in; ends in `/+` (the device id).
    pub topic: String,
    /// Status topic with `{gateway}` filled in; `{device}` is filled per status.
    pub status_topic: String,
    /// Client id of the command session on the cloud broker.
    pub client_id: String,
    /// Most open (accepted or delivered) commands per device.
    pub max_per_device: u64,
    /// Most open commands in all.
    pub max_total: u64,
    /// Deadline of a command that brings none.
    pub default_deadline: Duration,
    /// How long the gateway waits for a device's answer before sending the command again.
    pub resend: Duration,
    /// Largest command as the device receives it (its postcard encoding).
    pub max_size: ByteSize,
    /// How long finished commands are remembered (a repeat of their id is ignored).
    pub keep_finished: Duration,
}

impl CommandsConfig {
    /// The prefix of the command topic before the device level (`gateways/gw-01/commands/`).
    pub fn topic_prefix(&self) -> &str {
        self.topic.strip_suffix('+').unwrap_or(&self.topic)
    }

    /// The status topic of `device`.
    pub fn status_topic_of(&self, device: &str) -> String {
        self.status_topic.replace("{device}", device)
    }
}

/// Validates `[commands]`; returns the section (defaults where invalid) and every error as
/// `(key path, message)`.
pub fn validate(
    value: Option<toml::Value>,
    gateway_id: &str,
    cloud_client_id: &str,
) -> (CommandsConfig, Vec<(String, String)>) {
    let mut errors = Vec::new();
    let raw: Raw = match value.map(serde_path_to_error::deserialize::<_, Raw>) {
        None => Raw::default(),
        Some(Ok(raw)) => raw,
        Some(Err(err)) => {
            let inner = err.path().to_string();
            let path = if inner == "." || inner.is_empty() { "commands".into() } else { format!("commands.{inner}") };
            errors.push((path, err.into_inner().message().to_owned()));
            Raw::default()
        }
    };
    let mut push = |path: &str, message: String| errors.push((format!("commands.{path}"), message));

    let topic = raw.topic.unwrap_or_else(|| DEFAULT_TOPIC.into()).replace("{gateway}", gateway_id);
    let levels: Vec<&str> = topic.split('/').collect();
    if levels.len() < 2
        || levels.last() != Some(&"+")
        || levels[..levels.len() - 1].iter().any(|l| l.is_empty() || l.contains(['+', '#', '{', '}']))
    {
        push("topic", format!("expected a filter whose last level, and only wildcard, is + (the device id), like \"{DEFAULT_TOPIC}\", found {topic:?}"));
    }
    let status_topic = raw.status_topic.unwrap_or_else(|| DEFAULT_STATUS_TOPIC.into()).replace("{gateway}", gateway_id);
    if !status_topic.contains("{device}")
        || status_topic.contains(['+', '#'])
        || status_topic.split('/').any(str::is_empty)
    {
        push("status_topic", format!("expected a topic with {{device}} and no wildcards, like \"{DEFAULT_STATUS_TOPIC}\", found {status_topic:?}"));
    } else if matches_filter(&topic, &status_topic.replace("{device}", "d")) {
        push(
            "status_topic",
            format!("{status_topic:?} matches commands.topic {topic:?}: statuses would come back as commands"),
        );
    }
    // A derived id is as valid as cloud.client_id, whose own check reports it otherwise.
    let explicit = raw.client_id.is_some();
    let client_id = raw.client_id.unwrap_or_else(|| format!("{cloud_client_id}-cmd"));
    let valid = |id: &str| {
        !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
    };
    if explicit && !valid(&client_id) {
        push("client_id", format!("expected 1-64 characters of A-Z a-z 0-9 - _ . :, found {client_id:?}"));
    } else if explicit && client_id == cloud_client_id {
        push("client_id", "must differ from cloud.client_id (the broker would drop one session for the other)".into());
    }
    let mut count = |path: &str, raw: Option<i64>, default: u64, max: u64| match raw {
        None => default,
        Some(n) if (1..=max as i64).contains(&n) => n as u64,
        Some(n) => {
            push(path, format!("expected a whole number from 1 to {max}, found {n}"));
            default
        }
    };
    let max_per_device = count("max_per_device", raw.max_per_device, 100, 1_000_000);
    let max_total = count("max_total", raw.max_total, 10_000, 10_000_000);
    let mut errors_after = Vec::new();
    let mut duration = |path: &str, raw: Option<&RawUnit>, default: Duration, min: Duration| {
        let value = raw.map_or(Ok(default), RawUnit::duration);
        match value {
            Ok(d) if d >= min => d,
            Ok(d) => {
                errors_after.push((format!("commands.{path}"), format!("expected at least {min:?}, found {d:?}")));
                default
            }
            Err(message) => {
                errors_after.push((format!("commands.{path}"), message));
                default
            }
        }
    };
    let default_deadline = duration(
        "default_deadline",
        raw.default_deadline.as_ref(),
        Duration::from_secs(86_400),
        Duration::from_secs(1),
    );
    let resend = duration("resend", raw.resend.as_ref(), Duration::from_secs(5), Duration::from_millis(100));
    let keep_finished =
        duration("keep_finished", raw.keep_finished.as_ref(), Duration::from_secs(86_400), Duration::from_secs(1));
    let max_size = match raw.max_size.as_ref().map_or(Ok(ByteSize(DEFAULT_MAX_SIZE)), RawUnit::size) {
        Ok(size) if (64..=65_536).contains(&size.bytes()) => size,
        Ok(size) => {
            errors_after.push(("commands.max_size".into(), format!("expected from 64B to 64KiB, found {size}")));
            ByteSize(DEFAULT_MAX_SIZE)
        }
        Err(message) => {
            errors_after.push(("commands.max_size".into(), message));
            ByteSize(DEFAULT_MAX_SIZE)
        }
    };
    errors.extend(errors_after);
    let config = CommandsConfig {
        enabled: raw.enabled.unwrap_or(false),
        topic,
        status_topic,
        client_id,
        max_per_device,
        max_total,
        default_deadline,
        resend,
        max_size,
        keep_finished,
    };
    (config, errors)
}

/// True when MQTT topic `topic` matches `filter` (`+` one level, `#` the rest).
pub fn matches_filter(filter: &str, topic: &str) -> bool {
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match (level, topic_levels.next()) {
            ("#", _) => return true,
            (_, None) => return false,
            ("+", Some(_)) => {}
            (l, Some(t)) if l == t => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (CommandsConfig, Vec<String>) {
        let value: toml::Value = text.parse::<toml::Table>().unwrap().into();
        let (config, errors) = validate(Some(value), "gw-01", "gw-01");
        (config, errors.into_iter().map(|(p, m)| format!("{p}: {m}")).collect())
    }

    #[test]
    fn defaults_fill_in_the_gateway() {
        let (config, errors) = validate(None, "gw-01", "gw-01");
        assert!(errors.is_empty());
        assert!(!config.enabled);
        assert_eq!(config.topic, "gateways/gw-01/commands/+");
        assert_eq!(config.topic_prefix(), "gateways/gw-01/commands/");
        assert_eq!(config.status_topic_of("d1"), "gateways/gw-01/commands/d1/status");
        assert_eq!(config.client_id, "gw-01-cmd");
        assert_eq!((config.max_per_device, config.max_total), (100, 10_000));
        assert_eq!(config.default_deadline, Duration::from_secs(86_400));
    }

    #[test]
    fn every_error_names_its_key() {
        let (_, errors) = parse(
            r#"topic = "x/#"
status_topic = "gateways/{gateway}/commands/all"
client_id = "gw-01"
max_per_device = 0
resend = "10ms"
max_size = "1MiB"
default_deadline = "soon""#,
        );
        let keys: Vec<&str> = errors.iter().map(|e| e.split(':').next().unwrap()).collect();
        assert_eq!(
            keys,
            [
                "commands.topic",
                "commands.status_topic",
                "commands.client_id",
                "commands.max_per_device",
                "commands.default_deadline",
                "commands.resend",
                "commands.max_size"
            ],
            "{errors:#?}"
        );
        let (_, errors) = parse("enable = true");
        assert!(errors[0].starts_with("commands.enable: unknown field `enable`"), "{errors:?}");
    }

    #[test]
    fn a_status_topic_under_the_command_filter_is_refused() {
        let (_, errors) = parse(
            r#"topic = "cmd/+"
status_topic = "cmd/{device}""#,
        );
        assert!(errors.iter().any(|e| e.contains("would come back as commands")), "{errors:?}");
        assert!(matches_filter("a/+/c", "a/b/c") && matches_filter("a/#", "a/b/c") && !matches_filter("a/+", "a/b/c"));
    }
}
