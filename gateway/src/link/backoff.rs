//! Reconnect delays: exponential from `min` to `max`, with full jitter so that a fleet of
//! gateways does not reconnect in step after a cloud outage.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff with full jitter.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Delays from `min` up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff { min, max, attempt: 0 }
    }

    /// After a successful connection.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The delay before the next attempt: uniform in [min, min(max, min * 2^attempt)].
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.min.saturating_mul(1u32 << self.attempt.min(20)).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        if ceiling <= self.min {
            return self.min;
        }
        let span = (ceiling - self.min).as_millis() as u64;
        self.min + Duration::from_millis(rand::rng().random_range(0..=span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_within_the_cap() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut ceilings = Vec::new();
        for attempt in 0..12u32 {
            let delay = backoff.next_delay();
            let ceiling = Duration::from_millis(100).saturating_mul(1 << attempt).min(Duration::from_secs(2));
            assert!(delay >= Duration::from_millis(100) && delay <= ceiling, "{delay:?} > {ceiling:?}");
            ceilings.push(ceiling);
        }
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }
}
