//! Waiting on a condition, never on a fixed sleep: one polling loop for the
//! CLI's waits (the demo waits for the pipeline to drain) and for the tests
//! (re-exported by the `testkit` crate).

use std::future::Future;
use std::time::Duration;

/// How often [`wait_until`] checks.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Checks `check` every [`POLL_INTERVAL`] until it holds (`true`) or
/// `timeout` passes (`false`). See [`poll_until`].
pub async fn wait_until<F, Fut>(timeout: Duration, check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    poll_until(timeout, POLL_INTERVAL, check).await
}

/// Checks `check` at once, then every `every`, until it holds (`true`) or
/// `timeout` passes (`false`). The last check is made at the deadline, so a
/// condition that becomes true just before it is seen; a check that is slow
/// is never cut short.
pub async fn poll_until<F, Fut>(timeout: Duration, every: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(every.min(deadline - now)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_condition_that_becomes_true_is_seen() {
        let calls = AtomicU32::new(0);
        let every = Duration::from_millis(5);
        let held =
            poll_until(Duration::from_secs(5), every, || async { calls.fetch_add(1, Ordering::SeqCst) == 3 }).await;
        assert!(held);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_condition_that_never_holds_gives_up_at_the_deadline() {
        let calls = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let every = Duration::from_millis(100);
        let held = poll_until(Duration::from_millis(250), every, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            false
        })
        .await;
        assert!(!held);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(250) && waited < Duration::from_millis(340), "{waited:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 4, "at 0, 100, 200 and the deadline (250) ms");
    }
}
