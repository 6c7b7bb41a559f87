//! `[remote_config]`: configuration from the cloud (off by default; the `remote` stage uses
//! it). The section says whether the gateway takes a config document from a retained
//! message on its cloud topic, and which sections of the file that document may replace.
//! Parsed on its own from the raw TOML section; errors carry their key path
//! (`remote_config.sections[1]: ...`).
//!
//! Invariant: only [`MANAGEABLE`] sections can ever be managed remotely; credentials,
//! listen addresses, the journal and this section itself never are, whatever the file says.

use serde::Deserialize;

/// Sections a remote document may replace, if the local file allows them.
pub const MANAGEABLE: [&str; 2] = ["routes", "log"];
/// The default topic of the document (retained).
pub const DEFAULT_TOPIC: &str = "gateways/{gateway}/config";

/// `[remote_config]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    enabled: Option<bool>,
    topic: Option<String>,
    sections: Option<Vec<String>>,
    client_id: Option<String>,
}

/// The validated `[remote_config]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteConfig {
    /// Off by default: it lets whoever may publish on the topic change the gateway's routes.
    pub enabled: bool,
    /// Where the document is taken from (retained), `{gateway}` filled in.
    pub topic: String,
    /// Where the outcome is reported (retained): `{topic}/status`.
    pub status_topic: String,
    /// The sections the document may replace (a subset of [`MANAGEABLE`]).
    pub sections: Vec<String>,
    /// Client id of the config session on the cloud broker.
    pub client_id: String,
}

/// Validates `[remote_config]`; returns the section and every error as `(key path, message)`.
pub fn validate(
    value: Option<toml::Value>,
    gateway_id: &str,
    cloud_client_id: &str,
) -> (RemoteConfig, Vec<(String, String)>) {
    let mut errors = Vec::new();
    let raw: Raw = match value.map(serde_path_to_error::deserialize::<_, Raw>) {
        None => Raw::default(),
        Some(Ok(raw)) => raw,
        Some(Err(err)) => {
            let inner = err.path().to_string();
            let path = if inner == "." || inner.is_empty() {
                "remote_config".into()
            } else {
                format!("remote_config.{inner}")
            };
            errors.push((path, err.into_inner().message().to_owned()));
            Raw::default()
        }
    };
    let topic = raw.topic.unwrap_or_else(|| DEFAULT_TOPIC.into()).replace("{gateway}", gateway_id);
    if topic.is_empty() || topic.contains(['+', '#', '{', '}']) || topic.split('/').any(str::is_empty) {
        errors.push((
            "remote_config.topic".into(),
            format!("expected a topic without wildcards, like \"{DEFAULT_TOPIC}\", found {topic:?}"),
        ));
    }
    let sections = raw.sections.unwrap_or_else(|| vec!["routes".into()]);
    for (i, section) in sections.iter().enumerate() {
        if !MANAGEABLE.contains(&section.as_str()) {
            errors.push((
                format!("remote_config.sections[{i}]"),
                format!(
                    "{section:?} cannot be managed remotely; expected one of {} (credentials, listen addresses, the \
                     journal and remote_config itself never are)",
                    MANAGEABLE.join(", ")
                ),
            ));
        }
    }
    // A derived id is as valid as cloud.client_id, whose own check reports it otherwise.
    let explicit = raw.client_id.is_some();
    let client_id = raw.client_id.unwrap_or_else(|| format!("{cloud_client_id}-config"));
    if explicit
        && (client_id.is_empty()
            || client_id.len() > 64
            || !client_id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)))
    {
        errors.push((
            "remote_config.client_id".into(),
            format!("expected 1-64 characters of A-Z a-z 0-9 - _ . :, found {client_id:?}"),
        ));
    }
    let status_topic = format!("{topic}/status");
    (RemoteConfig { enabled: raw.enabled.unwrap_or(false), topic, status_topic, sections, client_id }, errors)
}

/// A config document from the cloud: TOML with an optional top-level `version` and the
/// sections it replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteDocument {
    /// The document's `version` (empty when it has none).
    pub version: String,
    /// The document as received.
    pub text: String,
}

impl RemoteDocument {
    /// Reads a document; `Err` says why it is not one.
    pub fn parse(payload: &[u8]) -> Result<RemoteDocument, String> {
        let text = std::str::from_utf8(payload).map_err(|_| "the document is not UTF-8 text".to_owned())?;
        let table: toml::Table =
            text.parse().map_err(|e: toml::de::Error| format!("not valid TOML: {}", e.message()))?;
        let version = match table.get("version") {
            None => String::new(),
            Some(toml::Value::String(v)) => v.clone(),
            Some(other) => other.to_string(),
        };
        Ok(RemoteDocument { version, text: text.to_owned() })
    }

    /// The local file's text with the document's sections in place of its own; `Err` names
    /// every section the document may not replace (then nothing of it is used).
    pub fn merge(&self, local: &str, allowed: &[String]) -> Result<String, Vec<String>> {
        let document: toml::Table = self.text.parse().map_err(|e: toml::de::Error| vec![e.message().to_owned()])?;
        let mut merged: toml::Table = local.parse().map_err(|e: toml::de::Error| vec![e.message().to_owned()])?;
        let refused: Vec<String> = document
            .keys()
            .filter(|k| k.as_str() != "version" && !allowed.contains(k))
            .map(|k| {
                format!(
                    "{k}: this section cannot be managed remotely here (remote_config.sections allows: {})",
                    allowed.join(", ")
                )
            })
            .collect();
        if !refused.is_empty() {
            return Err(refused);
        }
        for (key, value) in document {
            if key != "version" {
                merged.insert(key, value);
            }
        }
        toml::to_string(&merged).map_err(|e| vec![format!("cannot merge the document: {e}")])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_manageable_sections_may_be_allowed() {
        let value: toml::Value = toml::from_str("enabled = true\nsections = [\"routes\", \"cloud\"]").unwrap();
        let (config, errors) = validate(Some(value), "gw-01", "gw-01");
        assert_eq!(config.topic, "gateways/gw-01/config");
        assert_eq!(config.status_topic, "gateways/gw-01/config/status");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, "remote_config.sections[1]");
    }

    #[test]
    fn a_document_replaces_allowed_sections_only_and_is_refused_whole_otherwise() {
        let local = "[gateway]\nid = \"a\"\n[[routes]]\nname = \"x\"\nto = \"t\"\n";
        let doc = RemoteDocument::parse(b"version = \"7\"\n[[routes]]\nname = \"y\"\nto = \"u\"\n").unwrap();
        assert_eq!(doc.version, "7");
        let merged: toml::Table = doc.merge(local, &["routes".into()]).unwrap().parse().unwrap();
        assert_eq!(merged["routes"][0]["name"].as_str(), Some("y"));
        assert_eq!(merged["routes"].as_array().unwrap().len(), 1);
        assert_eq!(merged["gateway"]["id"].as_str(), Some("a"));
        assert!(merged.get("version").is_none());
        let bad = RemoteDocument::parse(b"[cloud]\npassword = \"x\"\n[[routes]]\nname = \"y\"\n").unwrap();
        let errors = bad.merge(local, &["routes".into()]).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("cloud: this section cannot be managed remotely"), "{errors:?}");
        assert!(RemoteDocument::parse(b"[[routes]\n").is_err());
    }
}
