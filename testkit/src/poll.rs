//! Waiting, with a deadline, for a condition no event signals: a swarm forming, a counter
//! moving, an entry expiring. Every wait is bounded; the check runs at least once.

use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// Runs `check` every `every` until it gives `Some`, or gives `None` once `timeout` has passed.
pub async fn poll_until<T, F, Fut>(timeout: Duration, every: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(every.min(deadline - Instant::now())).await;
    }
}

/// Runs `check` every 100 ms until it holds; panics with `what` after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let held = poll_until(timeout, Duration::from_millis(100), || {
        let fut = check();
        async move { fut.await.then_some(()) }
    })
    .await;
    assert!(
        held.is_some(),
        "timed out after {timeout:?} waiting for {what}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_condition_that_never_holds_gives_up_at_the_deadline_and_one_that_does_returns() {
        let mut calls = 0;
        let none: Option<()> =
            poll_until(Duration::from_secs(1), Duration::from_millis(100), || {
                calls += 1;
                async { None }
            })
            .await;
        assert_eq!(none, None);
        assert!((10..=12).contains(&calls), "{calls} checks in a second");
        let mut n = 0;
        let got = poll_until(Duration::from_secs(1), Duration::from_millis(100), || {
            n += 1;
            let v = n;
            async move { (v == 3).then_some(v) }
        })
        .await;
        assert_eq!(got, Some(3));
    }
}
