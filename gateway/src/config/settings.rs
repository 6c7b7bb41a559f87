//! The config as a flat list of settings, `key path = value`, so that two configs can be
//! compared key by key: what a reload changes, and what `check-config --diff` shows.
//!
//! Invariants:
//! - A key path is the one errors use (`cloud.keep_alive`, `devices.auth.users_file`), except
//!   that a route is named by its `name`, not its position (`routes["telemetry"].to`), so
//!   that reordering routes is no change and a renamed route is one removed and one added.
//! - A secret (`*password`, `*token`, a user's password hash) never appears in a value: it
//!   is kept as a fingerprint keyed with a per-process random key, so a change is seen but
//!   the value cannot be recovered or guessed from it, and it is shown as `(secret)`.
//! - A key that names a file (`*_file`) carries a fingerprint of the file's content too:
//!   a renewed certificate or an edited users file under the same name is a change.
//! - The values are what the file says; a key left out is absent (not its default).

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

/// One setting's value as the diff sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The value in TOML syntax, or a fingerprint for a secret.
    value: String,
    /// A secret: shown as `(secret)`.
    secret: bool,
}

impl Setting {
    /// The value as it may be shown: a secret is `(secret)`.
    pub fn shown(&self) -> &str {
        if self.secret {
            "(secret)"
        } else {
            &self.value
        }
    }
}

/// Every setting of a config file, by key path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings(BTreeMap<String, Setting>);

/// One key whose value differs between two configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The key path.
    pub key: String,
    /// The value before, as shown (None: absent).
    pub before: Option<String>,
    /// The value after, as shown (None: absent).
    pub after: Option<String>,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.before, &self.after) {
            (None, Some(after)) => write!(f, "{} = {after} (added)", self.key),
            (Some(_), None) => write!(f, "{} (removed)", self.key),
            (Some(before), Some(after)) if before == after => write!(f, "{}: changed", self.key),
            (Some(before), Some(after)) => write!(f, "{}: {before} -> {after}", self.key),
            (None, None) => write!(f, "{}", self.key),
        }
    }
}

impl Settings {
    /// The settings of a parsed TOML table (the whole file).
    pub fn of(table: &toml::Table) -> Settings {
        let mut settings = Settings::default();
        for (key, value) in table {
            match (key.as_str(), value) {
                ("routes", toml::Value::Array(routes)) => {
                    for (i, route) in routes.iter().enumerate() {
                        let name = route.get("name").and_then(toml::Value::as_str).map(str::to_owned);
                        let prefix = match name {
                            Some(name) => format!("routes[{name:?}]"),
                            None => format!("routes[{i}]"),
                        };
                        settings.add(&prefix, route);
                    }
                }
                _ => settings.add(key, value),
            }
        }
        settings
    }

    fn add(&mut self, path: &str, value: &toml::Value) {
        if let toml::Value::Table(table) = value {
            for (key, value) in table {
                self.add(&format!("{path}.{key}"), value);
            }
            return;
        }
        let leaf = path.rsplit('.').next().unwrap_or(path);
        let secret = leaf.ends_with("password") || leaf == "token" || path.starts_with("devices.auth.users.");
        let setting = if secret {
            Setting { value: fingerprint(value.to_string().as_bytes(), true), secret }
        } else if let (true, Some(file)) = (leaf.ends_with("_file"), value.as_str()) {
            let content = std::fs::read(file).map_or_else(|_| "unreadable".to_owned(), |c| fingerprint(&c, false));
            Setting { value: format!("{value} (content {content})"), secret }
        } else {
            Setting { value: value.to_string(), secret }
        };
        self.0.insert(path.to_owned(), setting);
    }

    /// Every key whose value differs from `self` in `after`, in key order.
    pub fn diff(&self, after: &Settings) -> Vec<Change> {
        let mut keys: Vec<&String> = self.0.keys().chain(after.0.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter(|key| self.0.get(*key) != after.0.get(*key))
            .map(|key| Change {
                key: key.clone(),
                before: self.0.get(key).map(|s| s.shown().to_owned()),
                after: after.0.get(key).map(|s| s.shown().to_owned()),
            })
            .collect()
    }

    /// Takes the value of `key` from `other` (or removes it when `other` has none): what a
    /// reload does for each key it applied, so that what it could not apply stays a
    /// difference from the file.
    pub fn take(&mut self, key: &str, other: &Settings) {
        match other.0.get(key) {
            Some(setting) => self.0.insert(key.to_owned(), setting.clone()),
            None => self.0.remove(key),
        };
    }
}

/// A short fingerprint of `bytes`; for a secret, keyed with this process's random key.
fn fingerprint(bytes: &[u8], secret: bool) -> String {
    static KEYED: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    let mut hasher = if secret {
        KEYED.get_or_init(std::collections::hash_map::RandomState::new).build_hasher()
    } else {
        std::collections::hash_map::DefaultHasher::new()
    };
    hasher.write(bytes);
    format!("#{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> Settings {
        Settings::of(&text.parse().unwrap())
    }

    #[test]
    fn routes_are_keyed_by_name_so_reordering_is_no_change() {
        let a = settings("[[routes]]\nname = \"a\"\nto = \"x\"\n[[routes]]\nname = \"b\"\nto = \"y\"\n");
        let b = settings("[[routes]]\nname = \"b\"\nto = \"y\"\n[[routes]]\nname = \"a\"\nto = \"x\"\n");
        assert_eq!(a.diff(&b), vec![]);
        let c = settings("[[routes]]\nname = \"a\"\nto = \"z\"\n");
        let changes: Vec<String> = a.diff(&c).iter().map(ToString::to_string).collect();
        assert_eq!(
            changes,
            vec![
                "routes[\"a\"].to: \"x\" -> \"z\"".to_owned(),
                "routes[\"b\"].name (removed)".to_owned(),
                "routes[\"b\"].to (removed)".to_owned()
            ]
        );
    }

    #[test]
    fn a_secret_change_is_seen_but_never_shown() {
        let a = settings("[cloud]\npassword = \"hunter2-hunter2\"\n[http]\ntoken = \"0123456789abcdef\"\n");
        let b = settings("[cloud]\npassword = \"other-password\"\n[http]\ntoken = \"0123456789abcdef\"\n");
        let changes = a.diff(&b);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].to_string(), "cloud.password: changed");
        assert!(!format!("{a:?}{b:?}").contains("hunter2"), "a secret leaked into Debug");
    }

    #[test]
    fn a_file_named_by_the_config_is_compared_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("users");
        std::fs::write(&file, "a:x\n").unwrap();
        let text = format!("[devices.auth]\nusers_file = {:?}\n", file.display().to_string());
        let before = settings(&text);
        assert_eq!(before.diff(&settings(&text)), vec![]);
        std::fs::write(&file, "a:x\nb:y\n").unwrap();
        let changes = before.diff(&settings(&text));
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].key, "devices.auth.users_file");
    }

    #[test]
    fn take_makes_one_key_equal_and_leaves_the_others_different() {
        let a = settings("[log]\nfilter = \"info\"\n[http]\nlisten = \"127.0.0.1:1\"\n");
        let b = settings("[log]\nfilter = \"debug\"\n[http]\nlisten = \"127.0.0.1:2\"\n");
        let mut running = a.clone();
        running.take("log.filter", &b);
        let left: Vec<String> = running.diff(&b).into_iter().map(|c| c.key).collect();
        assert_eq!(left, vec!["http.listen".to_owned()]);
    }
}
