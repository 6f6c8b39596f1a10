//! A store wrapper that counts and logs the store's own failures.

use super::{BanRule, Counts, Joined, Reported, Store, StoreError, StoreFuture};
use crate::metrics::Metrics;
use shoal_proto::{AnnounceRequest, LeaveRequest, PeerId, SwarmId};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::time::Instant;

/// Counts every failure of the inner store in `shoal_tracker_store_errors_total{kind}` and
/// logs it: at most one line per second, with how many failures that line stands for, so that
/// an outage under load does not flood the log.
pub struct Observed {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    last_log_ms: AtomicU64,
    unlogged: AtomicU64,
    start: Instant,
}

impl Observed {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        Self {
            inner,
            metrics,
            last_log_ms: AtomicU64::new(0),
            unlogged: AtomicU64::new(0),
            start: Instant::now(),
        }
    }

    fn observe<T>(&self, op: &'static str, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &r {
            if let Some(kind) = e.failure_kind() {
                self.metrics.store_error(kind);
                let now =
                    u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX) + 1000;
                let last = self.last_log_ms.load(Ordering::Relaxed);
                if now.saturating_sub(last) >= 1000
                    && self
                        .last_log_ms
                        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    let also = self.unlogged.swap(0, Ordering::Relaxed);
                    tracing::warn!(op, kind, error = %e, failures_since_last_line = also,
                        "store failed; answering 503 with Retry-After until it is back");
                } else {
                    self.unlogged.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        r
    }
}

impl Store for Observed {
    fn announce<'a>(&'a self, req: &'a AnnounceRequest) -> StoreFuture<'a, Joined> {
        Box::pin(async move { self.observe("announce", self.inner.announce(req).await) })
    }

    fn leave<'a>(&'a self, req: &'a LeaveRequest) -> StoreFuture<'a, ()> {
        Box::pin(async move { self.observe("leave", self.inner.leave(req).await) })
    }

    fn sweep(&self) -> StoreFuture<'_, u64> {
        Box::pin(async move { self.observe("sweep", self.inner.sweep().await) })
    }

    fn counts(&self) -> StoreFuture<'_, Counts> {
        Box::pin(async move { self.observe("counts", self.inner.counts().await) })
    }

    fn ready(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move { self.observe("ready", self.inner.ready().await) })
    }

    fn check_member<'a>(
        &'a self,
        swarm: &'a SwarmId,
        peer: &'a PeerId,
        key: &'a str,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.observe(
                "check_member",
                self.inner.check_member(swarm, peer, key).await,
            )
        })
    }

    fn report<'a>(
        &'a self,
        swarm: &'a SwarmId,
        reporter: &'a PeerId,
        offender: &'a PeerId,
        rule: BanRule,
    ) -> StoreFuture<'a, Reported> {
        Box::pin(async move {
            self.observe(
                "report",
                self.inner.report(swarm, reporter, offender, rule).await,
            )
        })
    }
}
