//! Exponential backoff with full jitter (AWS architecture blog, "Exponential
//! Backoff And Jitter"): retry n waits uniform(0, min(max, base·2ⁿ)). Full
//! jitter spreads a burst of failed calls instead of retrying them in lockstep
//! against a provider that is already struggling.
//!
//! Not `backon` (platform::retry): its jitter adds up to one more wait on
//! top (d..2d), not full jitter, and its waits come from a stateful iterator,
//! while a parked gift's wait is computed afresh from the tries stored with
//! it, and dispatch stretches a wait to the provider's `Retry-After`.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self { base, max: max.max(base) }
    }

    /// The upper bound of the wait before retry `retry` (0-based).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// A wait drawn uniformly from `0..=ceiling(retry)`.
    pub fn delay(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(retry).as_millis() as u64;
        Duration::from_millis(rng.random_range(0..=ceiling))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn backoff() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_millis(2_000))
    }

    #[test]
    fn the_ceiling_doubles_until_the_maximum() {
        let b = backoff();
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(1), Duration::from_millis(200));
        assert_eq!(b.ceiling(4), Duration::from_millis(1_600));
        assert_eq!(b.ceiling(5), Duration::from_millis(2_000));
        assert_eq!(b.ceiling(1_000), Duration::from_millis(2_000));
    }

    #[test]
    fn delays_are_spread_between_zero_and_the_ceiling() {
        let b = backoff();
        let mut rng = StdRng::seed_from_u64(11);
        let delays: Vec<Duration> = (0..200).map(|_| b.delay(3, &mut rng)).collect();
        assert!(delays.iter().all(|d| *d <= b.ceiling(3)));
        assert!(delays.iter().any(|d| *d < Duration::from_millis(200)));
        assert!(delays.iter().any(|d| *d > Duration::from_millis(600)));
    }
}
