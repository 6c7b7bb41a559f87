//! `[devices.auth]` as values: who may connect to the embedded broker. Names are checked
//! as device ids and hashes as argon2 PHC strings here, at load; the device stage builds
//! its lookup table and cache from them at start (`devices/auth.rs`).
//!
//! Invariant: a password hash never reaches a message or `Debug` output, only user names.

use std::collections::BTreeMap;
use std::fmt;

use argon2::password_hash::PasswordHash;

/// Device users and their password hashes. `Debug` shows the names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Users(BTreeMap<String, String>);

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Users {
    /// No users.
    pub fn new() -> Users {
        Users::default()
    }

    /// Adds a user; `Err` says what is wrong with the name or the hash.
    pub fn add(&mut self, name: &str, hash: &str) -> Result<(), String> {
        edge_event::validate_device_id(name).map_err(|e| format!("user {name:?}: {e} (a user name is a device id)"))?;
        check_hash(hash).map_err(|e| format!("user {name:?}: {e}"))?;
        if self.0.insert(name.to_owned(), hash.to_owned()).is_some() {
            return Err(format!("user {name:?} is listed twice"));
        }
        Ok(())
    }

    /// Reads `name:hash` lines (blank lines and `#` comments skipped) into `self`.
    pub fn add_file(&mut self, path: &str) -> Result<(), Vec<String>> {
        let text = std::fs::read_to_string(path).map_err(|e| vec![format!("cannot read {path}: {e}")])?;
        let mut errors = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let result = match line.split_once(':') {
                Some((name, hash)) => self.add(name.trim(), hash.trim()),
                None => Err("expected name:hash".into()),
            };
            if let Err(e) = result {
                errors.push(format!("{path} line {}: {e}", n + 1));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// How many users.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each user's name and PHC password hash, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(name, hash)| (name.as_str(), hash.as_str()))
    }
}

/// An argon2 PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`)?
fn check_hash(hash: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(hash)
        .map_err(|e| format!("not a PHC password hash ({e}); make one with `edge-gateway hash-password`"))?;
    match parsed.algorithm.as_str() {
        "argon2id" | "argon2i" | "argon2d" => {}
        other => return Err(format!("hash algorithm {other:?} is not argon2; use `edge-gateway hash-password`")),
    }
    if parsed.hash.is_none() {
        return Err("the PHC string has no hash part".into());
    }
    Ok(())
}

/// Who the broker lets in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Anyone (`allow_anonymous = true`): identities are not known, topic rights not checked.
    Anonymous,
    /// Only these users, each with client id = user name.
    Users(Users),
}
