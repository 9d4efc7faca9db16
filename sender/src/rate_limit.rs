//! The rate of the calls toward the provider: real providers rate-limit
//! (hundreds of calls per second), and a burst of retries must not turn into
//! a wall of 429s.
//!
//! governor's GCRA (a token bucket kept as one timestamp), on tokio's clock
//! rather than governor's own: its waits are tokio timers, so they stop with
//! the runtime and follow a paused clock in tests. A caller refused sleeps
//! until the next call is due and asks again; no lock is held while sleeping.
//! Waiting callers are not served strictly in the order they asked (governor
//! keeps no queue): the provider's rate is what matters, and every caller is
//! one of the dispatch's bounded workers, which share the rate evenly.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// Time since the limiter was made, on tokio's clock (governor's `Clock`).
#[derive(Debug, Clone)]
struct TokioClock {
    origin: tokio::time::Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

/// `rate_per_sec` provider calls per second, with up to `burst` at once.
pub struct TokenBucket {
    limiter: Limiter,
    clock: TokioClock,
}

impl TokenBucket {
    /// `rate_per_sec` calls per second, at most `burst` saved up (both at
    /// least 1: settings refuse a zero rate, and no rate means no calls).
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        let quota = Quota::per_second(NonZeroU32::new(rate_per_sec).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        let clock = TokioClock { origin: tokio::time::Instant::now() };
        Self { limiter: RateLimiter::direct_with_clock(quota, clock.clone()), clock }
    }

    /// Waits until the caller may make one call.
    pub async fn acquire(&self) {
        let mut counted = false;
        while let Err(refused) = self.limiter.check() {
            let wait = refused.wait_time_from(self.clock.now());
            if !counted {
                // Once per call that had to wait, not per wake-up.
                crate::events::RateLimited { wait }.emit();
                counted = true;
            }
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn a_burst_passes_at_once_then_calls_follow_the_rate() {
        let bucket = TokenBucket::new(10, 2);
        let start = Instant::now();
        bucket.acquire().await;
        bucket.acquire().await;
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst is free");
        for _ in 0..10 {
            bucket.acquire().await;
        }
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(990), "10 more calls at 10/s take a second: {elapsed:?}");
        assert!(elapsed <= Duration::from_millis(1_010), "and not much more: {elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_are_spread_over_time() {
        let bucket = std::sync::Arc::new(TokenBucket::new(100, 1));
        let start = Instant::now();
        let calls = (0..50).map(|_| {
            let bucket = bucket.clone();
            async move {
                bucket.acquire().await;
                Instant::now()
            }
        });
        let mut times = futures::future::join_all(calls).await;
        times.sort();
        // 1 free + 49 at 100/s, and never two in the same 10 ms.
        let last = times.last().copied().unwrap_or(start);
        assert!(last.duration_since(start) >= Duration::from_millis(480), "{:?}", last.duration_since(start));
        assert!(last.duration_since(start) <= Duration::from_millis(500), "{:?}", last.duration_since(start));
        assert!(times.windows(2).all(|w| w[1].duration_since(w[0]) >= Duration::from_millis(10)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_bucket_left_idle_saves_up_only_its_burst() {
        let bucket = TokenBucket::new(10, 3);
        tokio::time::sleep(Duration::from_secs(60)).await;
        let start = Instant::now();
        for _ in 0..4 {
            bucket.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::from_millis(100), "three saved up, the fourth after 1/10 s");
    }
}
