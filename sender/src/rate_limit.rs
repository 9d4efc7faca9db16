//! A token bucket for the calls toward the provider: real providers
//! rate-limit (hundreds of calls per second), and a burst of retries must
//! not turn into a wall of 429s.
//!
//! `acquire` reserves a token and sleeps until it is due, so waiting callers
//! are served in the order they asked, and no lock is held while sleeping.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<State>,
}

struct State {
    /// May go negative: tokens reserved by callers still sleeping.
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// `rate_per_sec` tokens per second, at most `burst` saved up (min 1).
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: f64::from(rate_per_sec.max(1)),
            burst,
            state: Mutex::new(State { tokens: burst, updated: Instant::now() }),
        }
    }

    /// Waits until the caller may make one call.
    pub async fn acquire(&self) {
        let wait = self.reserve();
        if !wait.is_zero() {
            crate::events::RateLimited { wait }.emit();
            tokio::time::sleep(wait).await;
        }
    }

    fn reserve(&self) -> Duration {
        let now = Instant::now();
        // Only arithmetic happens under the lock; a poisoned one is still consistent.
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let refill = now.duration_since(state.updated).as_secs_f64() * self.rate;
        state.tokens = (state.tokens + refill).min(self.burst);
        state.updated = now;
        state.tokens -= 1.0;
        if state.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-state.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let times = futures::future::join_all(calls).await;
        let last = times.iter().max().copied().unwrap_or(start);
        // 1 free + 49 at 100/s.
        assert!(last.duration_since(start) >= Duration::from_millis(480));
    }
}
