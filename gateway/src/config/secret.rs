//! Secrets from the config (the HTTP token, MQTT passwords): never printed by `Debug` or
//! `Display`, and readable from a file or an environment variable so that they need not sit
//! in the TOML. [`readable_by_others`] is the one check of who else may read a file that
//! holds a secret (the config itself, password and token files, private keys).

use std::fmt;
use std::path::Path;

/// A secret string. `Debug` shows `Secret(***)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads a secret from a file (one line; surrounding whitespace is trimmed).
    pub fn from_file(path: &str) -> Result<Secret, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        let value = text.trim();
        if value.is_empty() {
            return Err(format!("{path} is empty"));
        }
        Ok(Secret(value.to_owned()))
    }

    /// Reads a secret from an environment variable (surrounding whitespace is trimmed).
    pub fn from_env(name: &str) -> Result<Secret, String> {
        match std::env::var(name) {
            Ok(value) if !value.trim().is_empty() => Ok(Secret(value.trim().to_owned())),
            Ok(_) => Err(format!("environment variable {name} is empty")),
            Err(std::env::VarError::NotPresent) => Err(format!("environment variable {name} is not set")),
            Err(std::env::VarError::NotUnicode(_)) => Err(format!("environment variable {name} is not UTF-8")),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // serde's own message would quote a mistyped value ("invalid type: integer `1234`").
        String::deserialize(deserializer)
            .map(Secret)
            .map_err(|_| serde::de::Error::custom("expected a string (the value is a secret and not shown)"))
    }
}

/// The permission bits of `path` when users other than its owner may read it: "other"
/// (mode & 0o004) for any secret file, the group as well (0o044) for a private key.
/// None when only the owner (and, but for keys, the group) can, or when it cannot be read.
pub fn readable_by_others(path: &Path, private_key: bool) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        let mask = if private_key { 0o044 } else { 0o004 };
        (mode & mask != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = (path, private_key);
        None
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let secret = Secret::new("hunter2".into());
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[cfg(unix)]
    #[test]
    fn files_readable_by_others_are_found_keys_by_group_too() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "x").unwrap();
        let set = |mode| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        set(0o600);
        assert_eq!(readable_by_others(&path, false), None);
        assert_eq!(readable_by_others(&path, true), None);
        set(0o640);
        assert_eq!(readable_by_others(&path, false), None);
        assert_eq!(readable_by_others(&path, true), Some(0o640));
        set(0o644);
        assert_eq!(readable_by_others(&path, false), Some(0o644));
        assert_eq!(readable_by_others(&dir.path().join("missing"), false), None);
    }
}
