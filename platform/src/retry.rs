//! Retrying a call that fails for a while (a broker, Redis or a registry
//! restarting) until it succeeds, fails for good, or the service stops: the
//! one retry loop the consumer loop and ingest's state sync share, on
//! `backon`'s exponential backoff.
//!
//! The waits double from a minimum up to a cap and then stay there, without
//! jitter: these are one process' own loops, not a crowd of clients to spread
//! out. A stop cuts the wait short and no further call is made, so a stopping
//! service never starts work it would then have to abandon.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio_util::sync::CancellationToken;

/// Waits of `min`, `2·min`, `4·min`, … capped at `max`, for as long as it takes.
pub fn doubling(min: Duration, max: Duration) -> ExponentialBuilder {
    ExponentialBuilder::new().with_min_delay(min).with_max_delay(max).with_factor(2.0).without_max_times()
}

/// Why the retried call ended without an answer.
enum Attempt<E> {
    Failed(E),
    Stopped,
}

/// Calls `call` until it succeeds (`Some(Ok)`), fails with an error
/// `retryable` refuses (`Some(Err)`), or `shutdown` is cancelled during a
/// wait (`None`). Before each wait, `notify` is told the error and the wait.
/// The first call is always made; a call under way is never cut short.
pub async fn until_stopped<T, E, F, Fut>(
    backoff: ExponentialBuilder,
    shutdown: &CancellationToken,
    mut call: F,
    retryable: impl Fn(&E) -> bool,
    mut notify: impl FnMut(&E, Duration),
) -> Option<Result<T, E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut first = true;
    let attempt = || {
        // The wait ended by a stop: no further call.
        let stopped = !std::mem::take(&mut first) && shutdown.is_cancelled();
        let pending = (!stopped).then(&mut call);
        async move {
            match pending {
                Some(pending) => pending.await.map_err(Attempt::Failed),
                None => Err(Attempt::Stopped),
            }
        }
    };
    let token = shutdown.clone();
    let sleep = move |wait: Duration| {
        let token = token.clone();
        async move {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    };
    let result = attempt
        .retry(backoff)
        .sleep(sleep)
        .when(|attempt| matches!(attempt, Attempt::Failed(error) if retryable(error)))
        .notify(|attempt, wait| {
            if let Attempt::Failed(error) = attempt {
                notify(error, wait)
            }
        })
        .await;
    match result {
        Ok(value) => Some(Ok(value)),
        Err(Attempt::Failed(error)) => Some(Err(error)),
        Err(Attempt::Stopped) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_millis(1_000);

    /// Fails `failures` times with a transient error, then answers 7.
    async fn run(
        failures: u32,
        shutdown: &CancellationToken,
    ) -> (Option<Result<u32, &'static str>>, u32, Vec<Duration>) {
        let calls = AtomicU32::new(0);
        let waits = Mutex::new(Vec::new());
        let result = until_stopped(
            doubling(MIN, MAX),
            shutdown,
            || async {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n < failures {
                    Err("transient")
                } else {
                    Ok(7)
                }
            },
            |error| *error == "transient",
            |_, wait| waits.lock().unwrap().push(wait),
        )
        .await;
        let waits = waits.into_inner().unwrap();
        (result, calls.into_inner(), waits)
    }

    fn millis(waits: &[Duration]) -> Vec<u128> {
        waits.iter().map(|w| w.as_micros().div_ceil(1_000)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn waits_double_from_the_minimum_and_stay_at_the_cap() {
        let started = tokio::time::Instant::now();
        let (result, calls, waits) = run(7, &CancellationToken::new()).await;
        assert_eq!(result, Some(Ok(7)));
        assert_eq!(calls, 8);
        assert_eq!(millis(&waits), [100, 200, 400, 800, 1_000, 1_000, 1_000]);
        let slept = started.elapsed().as_millis();
        assert!((4_500..4_510).contains(&slept), "slept {slept} ms");
    }

    #[tokio::test(start_paused = true)]
    async fn it_never_gives_up_on_a_transient_error() {
        let (result, calls, waits) = run(200, &CancellationToken::new()).await;
        assert_eq!(result, Some(Ok(7)));
        assert_eq!(calls, 201);
        assert_eq!(waits.len(), 200);
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_for_good_is_returned_at_once() {
        let calls = AtomicU32::new(0);
        let result: Option<Result<(), &str>> = until_stopped(
            doubling(MIN, MAX),
            &CancellationToken::new(),
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err("poison")
            },
            |error| *error == "transient",
            |_, _| panic!("no wait before an error for good"),
        )
        .await;
        assert_eq!(result, Some(Err("poison")));
        assert_eq!(calls.into_inner(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_wait_without_another_call() {
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(250)).await;
            stop.cancel();
        });
        let started = tokio::time::Instant::now();
        let (result, calls, _) = run(u32::MAX, &shutdown).await;
        assert_eq!(result, None);
        // Calls at 0 and 100 ms; the 200 ms wait is cut short at 250 ms.
        assert_eq!(calls, 2);
        assert_eq!(started.elapsed(), Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_call_is_made_even_when_already_stopping() {
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let (result, calls, _) = run(0, &shutdown).await;
        assert_eq!(result, Some(Ok(7)));
        assert_eq!(calls, 1);
    }
}
