//! How fast and how many at once a node downloads from its neighbours ([`DownloadLimits`]):
//! a small async gate every peer fetch passes through.

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use prometheus_client::metrics::counter::Counter;
use std::num::NonZeroU32;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Smallest token-bucket burst: one full HTTP/2 DATA frame (the default, and what the peer
/// client advertises), so a frame never waits for more than the bucket can hold.
const MIN_DOWNLOAD_BURST: u32 = 16 * 1024;

/// The download side of a node's caps: a token bucket over segment bytes received from all
/// peers together, a bound on transfers in flight, and the count of bytes let through.
/// Clones share the same bucket, slots and counter.
#[derive(Clone, Default)]
pub struct DownloadLimits {
    bucket: Option<Arc<DefaultDirectRateLimiter>>,
    burst: u32,
    slots: Option<Arc<Semaphore>>,
    received: Counter,
}

impl std::fmt::Debug for DownloadLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DownloadLimits")
            .field("burst", &self.bucket.as_ref().map(|_| self.burst))
            .field("slots", &self.slots.as_ref().map(|s| s.available_permits()))
            .field("received", &self.received.get())
            .finish()
    }
}

impl DownloadLimits {
    /// At most `rate` bytes per second (`None`: no cap) over a burst of an eighth of a
    /// second at that rate (at least [`MIN_DOWNLOAD_BURST`] bytes), at most `max_transfers`
    /// fetches at once (`None`: no bound), counting the bytes let through in `received`.
    pub fn new(rate: Option<u64>, max_transfers: Option<usize>, received: Counter) -> Self {
        let (bucket, burst) = match rate {
            Some(rate) => {
                let rate = NonZeroU32::new(u32::try_from(rate).unwrap_or(u32::MAX))
                    .unwrap_or(NonZeroU32::MIN);
                let burst = (rate.get() / 8).max(MIN_DOWNLOAD_BURST);
                let quota = Quota::per_second(rate)
                    .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
                (Some(Arc::new(RateLimiter::direct(quota))), burst)
            }
            None => (None, 0),
        };
        Self {
            bucket,
            burst,
            slots: max_transfers.map(|n| Arc::new(Semaphore::new(n.max(1)))),
            received,
        }
    }

    /// The bucket's burst in bytes, when there is a cap: bytes received since start never
    /// exceed `rate × elapsed + burst`.
    pub fn burst_bytes(&self) -> Option<u64> {
        self.bucket.as_ref().map(|_| u64::from(self.burst))
    }

    /// Waits for a transfer slot; hold the permit while the transfer runs. `None` when
    /// transfers are not bounded.
    pub async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        // The semaphore is never closed, so acquiring fails never.
        self.slots.clone()?.acquire_owned().await.ok()
    }

    /// Waits until `n` more received bytes fit under the cap, then counts them. Called after
    /// each piece of a body is read: a piece is not taken off the connection's flow-control
    /// window before the next one is admitted, so the sender is held back too.
    pub async fn admit(&self, n: usize) {
        if let Some(bucket) = &self.bucket {
            let mut left = n;
            while left > 0 {
                let take = left.min(self.burst as usize);
                // `take` never exceeds the burst, so the bucket can always serve it.
                let k = NonZeroU32::new(take as u32).unwrap_or(NonZeroU32::MIN);
                if let Err(e) = bucket.until_n_ready(k).await {
                    tracing::error!(error = %e, "download piece exceeds the rate limiter's burst");
                }
                left -= take;
            }
        }
        self.received.inc_by(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // governor keeps its own clock, so this runs in real time (about a second).
    #[tokio::test]
    async fn received_bytes_stay_under_rate_times_elapsed_plus_burst() {
        const RATE: u64 = 256 * 1024;
        let received = Counter::default();
        let limits = DownloadLimits::new(Some(RATE), None, received.clone());
        let burst = limits.burst_bytes().unwrap();
        assert_eq!(burst, RATE / 8);
        assert_eq!(
            DownloadLimits::new(Some(8000), None, Counter::default()).burst_bytes(),
            Some(16 * 1024)
        );
        let start = tokio::time::Instant::now();
        // Pieces larger than the burst are admitted in burst-sized parts.
        for _ in 0..8 {
            limits.admit(48 * 1024).await;
            let elapsed = start.elapsed().as_secs_f64();
            let bound = RATE as f64 * elapsed + burst as f64;
            assert!(
                received.get() as f64 <= bound + 1.0,
                "{} bytes after {elapsed} s",
                received.get()
            );
        }
        assert_eq!(received.get(), 8 * 48 * 1024);
    }

    #[tokio::test]
    async fn transfers_beyond_the_bound_wait_for_a_slot() {
        let limits = DownloadLimits::new(None, Some(1), Counter::default());
        let first = limits.slot().await;
        assert!(first.is_some());
        let second = limits.slot();
        tokio::pin!(second);
        assert!(futures::poll!(&mut second).is_pending());
        drop(first);
        assert!(second.await.is_some());
        assert!(DownloadLimits::default().slot().await.is_none());
    }
}
