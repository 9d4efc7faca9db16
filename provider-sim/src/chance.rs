//! The simulator's dice: one seeded generator, so a test that fixes the seed
//! sees the same sequence of rolls (in the order the requests take them).

use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub struct Dice {
    rng: Mutex<StdRng>,
}

impl Dice {
    pub fn seeded(seed: u64) -> Self {
        Self { rng: Mutex::new(StdRng::seed_from_u64(seed)) }
    }

    /// True with probability `rate`. A zero rate takes no roll, so enabling
    /// one fault does not shift the sequence of another.
    pub fn roll(&self, rate: f64) -> bool {
        if rate <= 0.0 {
            return false;
        }
        self.with(|rng| rng.random::<f64>() < rate)
    }

    /// `base + uniform(0..=jitter)`.
    pub fn latency(&self, base_ms: u64, jitter_ms: u64) -> Duration {
        let extra = if jitter_ms == 0 { 0 } else { self.with(|rng| rng.random_range(0..=jitter_ms)) };
        Duration::from_millis(base_ms + extra)
    }

    fn with<T>(&self, roll: impl FnOnce(&mut StdRng) -> T) -> T {
        // A poisoned lock only means another request panicked mid-roll; the
        // generator's state is still usable.
        let mut rng = self.rng.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        roll(&mut rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_rolls_the_same_sequence() {
        let a = Dice::seeded(7);
        let b = Dice::seeded(7);
        let rolls_a: Vec<bool> = (0..64).map(|_| a.roll(0.5)).collect();
        let rolls_b: Vec<bool> = (0..64).map(|_| b.roll(0.5)).collect();
        assert_eq!(rolls_a, rolls_b);
        assert!(rolls_a.iter().any(|r| *r) && rolls_a.iter().any(|r| !*r));
    }

    #[test]
    fn certain_and_impossible_rates_hold() {
        let dice = Dice::seeded(1);
        assert!((0..100).all(|_| dice.roll(1.0)));
        assert!((0..100).all(|_| !dice.roll(0.0)));
    }

    #[test]
    fn latency_stays_within_base_and_jitter() {
        let dice = Dice::seeded(3);
        for _ in 0..100 {
            let latency = dice.latency(10, 5);
            assert!(latency >= Duration::from_millis(10) && latency <= Duration::from_millis(15));
        }
    }
}
