//! Polls a live HLS playlist near the moments new segments appear.
//!
//! A node learns of a new live segment when its player reloads the playlist, which a player
//! does once per target duration at a phase of its own: on average half a target duration
//! after the segment appeared. The segment's origin seeder learning late delays every
//! neighbour waiting for it, and a live player's buffer is only a few segments. So each
//! node also reloads the playlist itself just before the next segment is due, then in short
//! steps until it appears; the moment it last appeared converges on when the origin
//! publishes, and the seeder starts its fetch a fraction of a second after publication. It
//! costs about two small playlist requests per segment.

use super::{learn_media, Shared};
use crate::manifest::hls;
use crate::swarm::Swarm;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How long before the expected next segment the first reload goes out.
const LEAD: Duration = Duration::from_millis(300);
/// Reloads after that, until the segment appears, as a share of the target duration.
const STEP_SHARE: f64 = 0.1;
/// Never reload more often than this.
const MIN_STEP: Duration = Duration::from_millis(100);

/// Starts the poller of `swarm`'s live playlist at `url`, unless one runs.
pub(super) fn ensure(shared: &Arc<Shared>, swarm: &Arc<Swarm>, url: &url::Url) {
    {
        let st = swarm.lock();
        if st.ended || !st.p2p_allowed || swarm.edge_poller.swap(true, Ordering::AcqRel) {
            return;
        }
    }
    let (shared, swarm, url) = (shared.clone(), swarm.clone(), url.clone());
    tokio::spawn(async move {
        poll(&shared, &swarm, &url).await;
        swarm.edge_poller.store(false, Ordering::Release);
    });
}

async fn poll(shared: &Arc<Shared>, swarm: &Arc<Swarm>, url: &url::Url) {
    let max = shared.config.max_manifest_size.as_u64();
    let mut retries = 0u32;
    loop {
        let (ended, target, last_fresh) = {
            let st = swarm.lock();
            (st.ended, st.target_duration, st.last_fresh_at)
        };
        // Stop with the player: a swarm nobody plays is left soon anyway.
        let idle_ms = shared
            .now_ms()
            .saturating_sub(swarm.last_used_ms.load(Ordering::Relaxed));
        if ended
            || !shared.swarms.contains_key(&swarm.id)
            || Duration::from_millis(idle_ms) > target * 3
        {
            return;
        }
        let step = target.mul_f64(STEP_SHARE).max(MIN_STEP);
        let now = crate::clock::now();
        let due = match last_fresh {
            Some(at) => (at + target).checked_sub(LEAD).unwrap_or(at) + step * retries,
            None => now + target,
        };
        // Never more than a target duration of retries: the stream may have stalled.
        if retries as f64 * STEP_SHARE > 1.0 {
            retries = 0;
            tokio::select! {
                _ = tokio::time::sleep(target) => {}
                _ = shared.shutdown.cancelled() => return,
            }
            continue;
        }
        tokio::select! {
            _ = crate::clock::sleep_until(due.max(now + MIN_STEP)) => {}
            _ = shared.shutdown.cancelled() => return,
        }
        let fetched = match shared.origin.fetch(url, None, max).await {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(%url, error = %e, "live playlist reload failed");
                retries += 1;
                continue;
            }
        };
        shared
            .metrics
            .origin_bytes
            .inc_by(fetched.body.len() as u64);
        let processed = hls::process(&fetched.body, url, &shared.mapper);
        let Ok(hls::Playlist::Media(media)) = &processed.playlist else {
            return;
        };
        let before = swarm.lock().last_fresh_at;
        learn_media(shared, swarm, media);
        if swarm.lock().last_fresh_at != before {
            retries = 0;
        } else {
            retries += 1;
        }
    }
}
