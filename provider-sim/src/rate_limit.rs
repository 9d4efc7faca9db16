//! The provider's own rate limit: a fixed one-second window, as many real
//! providers count ("N calls per second"), answered with 429 + Retry-After.

use std::sync::Mutex;

use tokio::time::{Duration, Instant};

pub struct Window {
    state: Mutex<(Instant, u32)>,
}

/// Whether a call may go through now; if not, when to try again.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    Yes,
    RetryAfter(Duration),
}

const WINDOW: Duration = Duration::from_secs(1);

impl Window {
    pub fn new() -> Self {
        Self { state: Mutex::new((Instant::now(), 0)) }
    }

    pub fn admit(&self, limit: u32) -> Admit {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (start, count) = &mut *state;
        if now.duration_since(*start) >= WINDOW {
            *start = now;
            *count = 0;
        }
        if *count < limit {
            *count += 1;
            Admit::Yes
        } else {
            Admit::RetryAfter(WINDOW.saturating_sub(now.duration_since(*start)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn calls_beyond_the_limit_wait_for_the_next_second() {
        let window = Window::new();
        assert_eq!(window.admit(2), Admit::Yes);
        assert_eq!(window.admit(2), Admit::Yes);
        assert!(matches!(window.admit(2), Admit::RetryAfter(d) if d <= WINDOW));
        tokio::time::advance(WINDOW).await;
        assert_eq!(window.admit(2), Admit::Yes);
    }
}
