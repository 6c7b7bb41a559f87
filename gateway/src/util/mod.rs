//! Small leaf helpers with no place in a stage: they import nothing of the crate.
//!
//! - [`ct`]: comparing secrets in constant time.

pub mod ct;
