//! The config as a flat list of settings, `key path = value`, so that two configs can be
//! compared key by key: what a reload changes, and what `check-config --diff` shows.
//!
//! Invariants:
//! - A key path is the one errors use (`cloud.keep_alive`, `devices.auth.users_file`), except
//!   that a route is named by its `name`, not its position (`routes["telemetry"].to`), so
//!   that reordering routes is no change and a renamed route is one removed and one added.
//! - A secret (`*password*`, `token*`, a private key file, a user's password hash) never
//!   appears in a value: it is shown as `(secret)`. Every fingerprint is keyed with a
//!   per-process random key, so a change is seen but nothing can be learnt or guessed from
//!   a fingerprint, even one shown.
//! - A key that names a file (`*_file`) carries a fingerprint of the file's content too:
//!   a renewed certificate or an edited users file under the same name is a change. Only a
//!   regular file of at most 16 MiB is read.
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
        let secret = leaf.contains("password")
            || leaf.starts_with("token")
            || leaf == "key_file"
            || leaf == "tls_key_file"
            || path.starts_with("devices.auth.users.");
        let setting = if let (true, Some(file)) = (leaf.ends_with("_file"), value.as_str()) {
            let content = read_regular(file).map_or_else(|| "unreadable".to_owned(), |c| fingerprint(&c));
            Setting { value: format!("{value} (content {content})"), secret }
        } else if secret {
            Setting { value: fingerprint(value.to_string().as_bytes()), secret }
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

/// A short fingerprint of `bytes`, keyed with this process's random key: it tells two
/// values apart within this process and nothing about the value to anyone else.
fn fingerprint(bytes: &[u8]) -> String {
    static KEYED: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    let mut hasher = KEYED.get_or_init(std::collections::hash_map::RandomState::new).build_hasher();
    hasher.write(bytes);
    format!("#{:016x}", hasher.finish())
}

/// The content of `path` if it is a regular file of at most 16 MiB (a config names
/// certificates, keys, password and users files; never a device or a pipe to read from).
fn read_regular(path: &str) -> Option<Vec<u8>> {
    let meta = std::fs::metadata(path).ok()?;
    (meta.is_file() && meta.len() <= 16 << 20).then(|| std::fs::read(path).ok()).flatten()
}

/// The keys of `table` that name something other than a regular file (`check-config
/// --diff` sends a file the gateway validates, which reads what it names: never a device
/// or a pipe).
pub fn irregular_files(table: &toml::Table) -> Vec<String> {
    let mut found = Vec::new();
    walk(table, "", &mut |path, value| {
        if let (true, Some(file)) = (path.ends_with("_file"), value.as_str()) {
            if std::fs::metadata(file).is_ok_and(|m| !m.is_file()) {
                found.push(format!("{path}: {file} is not a regular file"));
            }
        }
    });
    found
}

fn walk(table: &toml::Table, prefix: &str, visit: &mut impl FnMut(&str, &toml::Value)) {
    for (key, value) in table {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match value {
            toml::Value::Table(inner) => walk(inner, &path, visit),
            toml::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    match item {
                        toml::Value::Table(inner) => walk(inner, &format!("{path}[{i}]"), visit),
                        other => visit(&format!("{path}[{i}]"), other),
                    }
                }
            }
            other => visit(&path, other),
        }
    }
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
    fn files_that_hold_secrets_are_shown_as_secret_however_their_content_changes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "hunter2").unwrap();
        let text = format!("[cloud]\npassword_file = {:?}\n", file.display().to_string());
        let before = settings(&text);
        std::fs::write(&file, "hunter3").unwrap();
        let changes = before.diff(&settings(&text));
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].to_string(), "cloud.password_file: changed");
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
