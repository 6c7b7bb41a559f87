//! `[remote_config]`: configuration from the cloud (config/remote.rs has the values).

use super::*;
use crate::config::remote::{DEFAULT_TOPIC, MANAGEABLE};

pub(super) fn validate_remote(
    errors: &mut Errors,
    value: Option<toml::Value>,
    gateway_id: &str,
    cloud_client_id: &str,
) -> RemoteConfig {
    let raw: raw::RemoteConfig = section(errors, "remote_config", value).unwrap_or_default();
    let topic = raw.topic.unwrap_or_else(|| DEFAULT_TOPIC.into()).replace("{gateway}", gateway_id);
    if topic.is_empty() || topic.contains(['+', '#', '{', '}']) || topic.split('/').any(str::is_empty) {
        errors.push(
            "remote_config.topic",
            format!("expected a topic without wildcards, like \"{DEFAULT_TOPIC}\", found {topic:?}"),
        );
    }
    let sections = raw.sections.unwrap_or_else(|| vec!["routes".into()]);
    for (i, section) in sections.iter().enumerate() {
        if !MANAGEABLE.contains(&section.as_str()) {
            errors.push(
                format!("remote_config.sections[{i}]"),
                format!(
                    "{section:?} cannot be managed remotely; expected one of {} (credentials, listen addresses, the \
                     journal and remote_config itself never are)",
                    MANAGEABLE.join(", ")
                ),
            );
        }
    }
    // A derived id is as valid as cloud.client_id, whose own check reports it otherwise.
    let client_id = match raw.client_id {
        Some(id) => {
            check_id(errors, "remote_config.client_id", &id);
            if id == cloud_client_id {
                errors.push(
                    "remote_config.client_id",
                    "must differ from cloud.client_id (the broker would drop one session for the other)",
                );
            }
            id
        }
        None => format!("{cloud_client_id}-config"),
    };
    let status_topic = format!("{topic}/status");
    RemoteConfig { enabled: raw.enabled.unwrap_or(false), topic, status_topic, sections, client_id }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_manageable_sections_may_be_allowed_and_the_session_needs_its_own_client_id() {
        let value: toml::Value =
            toml::from_str("enabled = true\nsections = [\"routes\", \"cloud\"]\nclient_id = \"gw-01\"").unwrap();
        let mut errors = Errors(Vec::new());
        let config = validate_remote(&mut errors, Some(value), "gw-01", "gw-01");
        assert_eq!(config.topic, "gateways/gw-01/config");
        assert_eq!(config.status_topic, "gateways/gw-01/config/status");
        let paths: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, vec!["remote_config.sections[1]", "remote_config.client_id"], "{:?}", errors.0);
    }
}
