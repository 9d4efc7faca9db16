//! Exponential backoff with full jitter (AWS architecture blog, "Exponential
//! Backoff And Jitter"): retry n waits uniform(0, min(max, base·2ⁿ)). Full
//! jitter spreads a burst of failed calls instead of retrying them in lockstep
//! against a provider that is already struggling.
//!
//! The doubling schedule is `backon`'s, the same as every retry loop's
//! (`platform::retry::doubling`); the jitter is drawn here because backon's
//! own adds a second wait on top (d..2d) where full jitter draws below the
//! ceiling (0..d). A wait is computed afresh from a try's number, not taken
//! from a running iterator: a parked gift's tries are stored with it, and
//! dispatch stretches a wait to the provider's `Retry-After`.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use rand::Rng;

/// Past this many doublings every ceiling is the maximum: 2⁶⁴ times a
/// millisecond is longer than any setting allows.
const MAX_DOUBLINGS: u32 = 64;

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    schedule: ExponentialBuilder,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self { schedule: platform::retry::doubling(base, max.max(base)) }
    }

    /// The upper bound of the wait before retry `retry` (0-based).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let retry = retry.min(MAX_DOUBLINGS) as usize;
        // `doubling` never runs out (no maximum number of retries).
        self.schedule.build().nth(retry).unwrap_or_default()
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

    fn millis(d: Duration) -> u128 {
        d.as_millis()
    }

    #[test]
    fn the_ceiling_doubles_until_the_maximum() {
        let b = backoff();
        assert_eq!(millis(b.ceiling(0)), 100);
        assert_eq!(millis(b.ceiling(1)), 200);
        assert_eq!(millis(b.ceiling(4)), 1_600);
        assert_eq!(millis(b.ceiling(5)), 2_000);
        assert_eq!(millis(b.ceiling(1_000)), 2_000);
        assert_eq!(millis(b.ceiling(u32::MAX)), 2_000, "the longest wait, as dispatch caps a Retry-After");
    }

    #[test]
    fn a_maximum_below_the_base_is_the_base() {
        let b = Backoff::new(Duration::from_millis(500), Duration::from_millis(100));
        assert_eq!(millis(b.ceiling(0)), 500);
        assert_eq!(millis(b.ceiling(3)), 500);
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
