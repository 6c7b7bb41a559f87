//! The journal settings tests start from: 1 GiB, an hour of retention, drop-oldest,
//! `synchronous = "normal"` (tests do not need the power-cut guarantee), 10 dead letters.

use std::time::Duration;

use crate::config::{ByteSize, StoreConfig, Synchronous, WhenFull};

/// Settings for a test journal; tests change the fields they are about.
pub(crate) fn store_config() -> StoreConfig {
    StoreConfig {
        max_bytes: ByteSize(1 << 30),
        max_age: Duration::from_secs(3600),
        when_full: WhenFull::DropOldest,
        synchronous: Synchronous::Normal,
        commit_max_events: 1000,
        dead_letters_max: 10,
        dead_letters_max_age: Duration::from_secs(3600),
        keep_forwarded: None,
    }
}
