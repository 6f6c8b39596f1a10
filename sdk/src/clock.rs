//! The node's clock: the one place the SDK reads the time.
//!
//! Instants come from tokio's clock, so a test that pauses and advances tokio's time drives
//! every deadline, and are handed out as `std::time::Instant`, the type `shoal-core` takes.
//! The wall clock (for DASH availability times) is read here too, and nowhere else.

use std::time::{Instant, SystemTime};

/// Now, on tokio's clock.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The wall clock (DASH `availabilityStartTime` arithmetic).
#[allow(clippy::disallowed_methods)] // the one reading of the wall clock
pub fn wall() -> SystemTime {
    SystemTime::now()
}

/// Sleeps until `deadline` on tokio's clock.
pub async fn sleep_until(deadline: Instant) {
    tokio::time::sleep_until(deadline.into()).await
}
