//! The origin's clock, as a live MPD's `UTCTiming` gives it.
//!
//! A live template names segments by wall-clock time (`availabilityStartTime` plus durations),
//! and the packager's clock is the one that counts: a device whose clock is 20 s behind would
//! otherwise register every segment 20 s late (the player, which sets its clock by the same
//! `UTCTiming`, asks for them long before), and pass them all through to the origin. The node
//! keeps, per MPD, the difference between the origin's clock and its own, and reads live
//! templates with it.
//!
//! The rules (schemes, offsets) are `shoal_core::manifest::dash::clock`; this keeps the
//! offsets per MPD and fetches time URLs, at most once per [`REFRESH`].

use crate::manifest::dash::clock::{direct, offset_over_round_trip, shift, time_url, OffsetMs};
use crate::manifest::dash::template::parse_datetime;
use crate::node::Shared;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use url::Url;

/// How long a clock read from a time URL is trusted before it is read again.
const REFRESH: Duration = Duration::from_secs(300);
/// Largest time-URL body read.
const MAX_BODY: u64 = 1024;

/// The node's record of origin clocks, by MPD URL.
#[derive(Debug)]
pub struct Clocks {
    /// MPD URL → (offset, when it was read). Bounded.
    offsets: moka::sync::Cache<Url, (OffsetMs, Instant)>,
}

impl Default for Clocks {
    fn default() -> Self {
        Self {
            offsets: moka::sync::Cache::new(1_000),
        }
    }
}

impl Clocks {
    /// Now on the clock of the origin of the MPD at `mpd_url` (the node's own until an offset
    /// is known).
    pub fn origin_now(&self, mpd_url: &Url) -> SystemTime {
        shift(crate::clock::wall(), self.offset(mpd_url))
    }

    /// The offset known for the MPD at `mpd_url` (0 until one is known).
    pub fn offset(&self, mpd_url: &Url) -> OffsetMs {
        self.offsets.get(mpd_url).map_or(0, |(o, _)| o)
    }

    /// Learns the origin clock from an MPD that arrived at `received`: at once from a
    /// `direct` value, or in the background from a time URL (unless read recently).
    pub fn learn(
        &self,
        shared: &Arc<Shared>,
        mpd_url: &Url,
        timing: &[(String, String)],
        received: SystemTime,
    ) {
        if let Some(o) = direct(timing, received) {
            self.offsets
                .insert(mpd_url.clone(), (o, crate::clock::now()));
            return;
        }
        let Some(url) = time_url(timing, mpd_url) else {
            return;
        };
        if self
            .offsets
            .get(mpd_url)
            .is_some_and(|(_, at)| crate::clock::now().saturating_duration_since(at) < REFRESH)
        {
            return;
        }
        // Marked as read now, so that MPD loads meanwhile do not ask again.
        let known = self.offset(mpd_url);
        self.offsets
            .insert(mpd_url.clone(), (known, crate::clock::now()));
        let (shared, mpd_url) = (shared.clone(), mpd_url.clone());
        tokio::spawn(async move {
            let sent = crate::clock::wall();
            let fetched = shared.origin.fetch(&url, None, MAX_BODY).await;
            let received = crate::clock::wall();
            let origin_time = fetched
                .ok()
                .and_then(|f| parse_datetime(std::str::from_utf8(&f.body).ok()?));
            match origin_time.and_then(|t| offset_over_round_trip(t, sent, received)) {
                Some(o) => {
                    tracing::debug!(%url, offset_ms = o, "origin clock read");
                    shared
                        .dash
                        .clocks
                        .offsets
                        .insert(mpd_url, (o, crate::clock::now()));
                }
                None => {
                    tracing::warn!(%url, "UTCTiming time source gave no usable date; the node's own clock is used")
                }
            }
        });
    }
}
