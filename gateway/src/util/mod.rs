//! Small leaf helpers with no place in a stage: they import nothing of the crate.
//!
//! - [`ct`]: comparing secrets in constant time.
//! - [`rate_limited`]: one log line per period, the rest counted.

pub mod ct;
pub mod rate_limited;

pub use rate_limited::RateLimited;
