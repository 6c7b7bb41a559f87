//! Rate-limited logging: a stage that may hit the same problem thousands of times a second
//! (a device flooding bad payloads, a link down) logs one line per period and says how many
//! it held back.

use std::time::{Duration, Instant};

/// Lets one log line through per period and counts the rest.
#[derive(Debug)]
pub struct RateLimited {
    period: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimited {
    /// One line per `period`.
    pub fn new(period: Duration) -> Self {
        RateLimited { period, last: None, suppressed: 0 }
    }

    /// `Some(lines suppressed since the last one)` when a line may be logged now.
    pub fn allow(&mut self) -> Option<u64> {
        if self.last.is_some_and(|t| t.elapsed() < self.period) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_and_the_rest_counted() {
        let mut limit = RateLimited::new(Duration::from_secs(3600));
        assert_eq!(limit.allow(), Some(0));
        assert_eq!(limit.allow(), None);
        assert_eq!(limit.allow(), None);
        let mut open = RateLimited::new(Duration::ZERO);
        assert_eq!(open.allow(), Some(0));
        assert_eq!(open.allow(), Some(0));
        limit.last = limit.last.and_then(|t| t.checked_sub(Duration::from_secs(3601)));
        assert_eq!(limit.allow(), Some(2), "the two held back are reported with the next line");
    }
}
