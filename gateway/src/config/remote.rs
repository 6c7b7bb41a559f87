//! `[remote_config]`: configuration from the cloud (off by default; the `remote` stage uses
//! it). The section says whether the gateway takes a config document from a retained
//! message on its cloud topic, and which sections of the file that document may replace.
//! Validated with the other sections (`validate/remote.rs`); errors carry their key path
//! (`remote_config.sections[1]: ...`).
//!
//! Invariant: only [`MANAGEABLE`] sections can ever be managed remotely; credentials,
//! listen addresses, the journal and this section itself never are, whatever the file says.

/// Sections a remote document may replace, if the local file allows them.
pub const MANAGEABLE: [&str; 2] = ["routes", "log"];
/// The default topic of the document (retained).
pub const DEFAULT_TOPIC: &str = "gateways/{gateway}/config";

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
