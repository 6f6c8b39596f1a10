//! A simulated player that behaves like hls.js on a live stream: it starts 3 segments behind
//! the live edge, refreshes the playlist every target duration, fetches segments one after
//! another through its node, and keeps a playback clock and buffer.
//!
//! [`Playback`] is the buffer model, pure and driven with `now`; [`play`] is the HTTP loop.

use crate::origin::{segment_seq, Origin};
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How far behind the live edge a player starts, in segments (hls.js `liveSyncDurationCount`).
pub const LIVE_SYNC_SEGMENTS: u64 = 3;
/// How much media a player buffers ahead at most (hls.js `maxBufferLength`).
pub const MAX_BUFFER: Duration = Duration::from_secs(30);

/// Where playback stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlayState {
    /// Waiting for the first segment.
    Starting,
    /// The playhead moves.
    Playing,
    /// The buffer ran dry at `since`.
    Stalled {
        /// When the buffer ran dry.
        since: Instant,
    },
}

/// The playback clock and buffer of one player. Playback starts as soon as one segment is
/// buffered and resumes after a stall as soon as one more arrives (segments arrive whole).
#[derive(Debug, Clone)]
pub struct Playback {
    joined: Instant,
    last: Instant,
    state: PlayState,
    buffered: Duration,
    /// Time from joining to the start of playback.
    pub startup: Option<Duration>,
    /// Every stall, with its length.
    pub stalls: Vec<Duration>,
    /// Media played.
    pub played: Duration,
}

impl Playback {
    /// A player that joined at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            joined: now,
            last: now,
            state: PlayState::Starting,
            buffered: Duration::ZERO,
            startup: None,
            stalls: Vec::new(),
            played: Duration::ZERO,
        }
    }

    /// Where playback stands.
    pub fn state(&self) -> PlayState {
        self.state
    }

    /// Media buffered ahead of the playhead.
    pub fn buffered(&self) -> Duration {
        self.buffered
    }

    /// Moves the playhead to `now`; an empty buffer while playing starts a stall at the
    /// instant it ran dry. Call before every other change and whenever the time is read.
    pub fn advance(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = self.last.max(now);
        if self.state != PlayState::Playing {
            return;
        }
        if elapsed <= self.buffered {
            self.buffered -= elapsed;
            self.played += elapsed;
        } else {
            let dry_at = now - (elapsed - self.buffered);
            self.played += self.buffered;
            self.buffered = Duration::ZERO;
            self.state = PlayState::Stalled { since: dry_at };
        }
    }

    /// A segment of `duration` arrived at `now`.
    pub fn segment_arrived(&mut self, now: Instant, duration: Duration) {
        self.advance(now);
        self.buffered += duration;
        match self.state {
            PlayState::Starting => {
                self.startup = Some(now.saturating_duration_since(self.joined));
                self.state = PlayState::Playing;
            }
            PlayState::Stalled { since } => {
                self.stalls.push(now.saturating_duration_since(since));
                self.state = PlayState::Playing;
            }
            PlayState::Playing => {}
        }
    }

    /// The viewer leaves at `now`: a stall in progress counts up to now.
    pub fn finish(&mut self, now: Instant) {
        self.advance(now);
        if let PlayState::Stalled { since } = self.state {
            self.stalls.push(now.saturating_duration_since(since));
            self.state = PlayState::Starting;
        }
    }

    /// Time since joining.
    pub fn watched(&self) -> Duration {
        self.last.saturating_duration_since(self.joined)
    }
}

/// What one player experienced.
#[derive(Debug, Clone, Default)]
pub struct PlayerReport {
    /// Time from joining to the start of playback; `None` if it never started.
    pub startup: Option<Duration>,
    /// Every stall's length.
    pub stalls: Vec<Duration>,
    /// Time from joining to leaving.
    pub watched: Duration,
    /// Segment bytes that came from peers (`x-shoal-source: p2p`).
    pub p2p_bytes: u64,
    /// Segment bytes that came from the origin through the node.
    pub cdn_bytes: u64,
    /// Playlist bytes.
    pub manifest_bytes: u64,
    /// Segments received.
    pub segments: u64,
    /// Segments whose bytes differed from the origin's.
    pub corrupt: u64,
    /// Failed requests (status or transport).
    pub errors: u64,
    /// Sequence numbers received (for the swarm's minimum origin bytes).
    pub received: Vec<u64>,
}

/// Live counters a progress line can read while players run.
#[derive(Debug, Default)]
pub struct LiveCounters {
    /// Segment bytes from peers.
    pub p2p_bytes: std::sync::atomic::AtomicU64,
    /// All bytes players received.
    pub all_bytes: std::sync::atomic::AtomicU64,
    /// Stalls begun.
    pub stalls: std::sync::atomic::AtomicU64,
}

/// Plays the live stream at `playlist_url` (a node's player-front URL) until `stop`.
pub async fn play(
    http: reqwest::Client,
    playlist_url: String,
    origin: Origin,
    segment_duration: Duration,
    live: std::sync::Arc<LiveCounters>,
    stop: CancellationToken,
) -> PlayerReport {
    use std::sync::atomic::Ordering::Relaxed;
    let mut pb = Playback::new(Instant::now());
    let mut report = PlayerReport::default();
    let base = match url::Url::parse(&playlist_url) {
        Ok(u) => u,
        Err(_) => {
            report.errors += 1;
            return report;
        }
    };
    let mut next: Option<u64> = None;
    let mut newest: Option<u64> = None;
    let mut ended = false;
    let mut next_refresh = Instant::now();
    loop {
        let now = Instant::now();
        if now >= next_refresh && !ended {
            next_refresh = now + segment_duration;
            match fetch_playlist(&http, &playlist_url).await {
                Ok((text_len, window)) => {
                    report.manifest_bytes += text_len;
                    live.all_bytes.fetch_add(text_len, Relaxed);
                    if let Some((first, last, is_vod)) = window {
                        ended = is_vod;
                        newest = Some(last);
                        let start = if is_vod {
                            first
                        } else {
                            (last + 1).saturating_sub(LIVE_SYNC_SEGMENTS).max(first)
                        };
                        // A player that fell out of the window jumps forward, as hls.js does.
                        next = Some(next.map_or(start, |n| n.max(first)));
                    }
                }
                Err(()) => report.errors += 1,
            }
        }
        let due = match (next, newest) {
            (Some(n), Some(last)) if n <= last => Some(n),
            _ => None,
        };
        pb.advance(Instant::now());
        let room = pb.buffered() + segment_duration <= MAX_BUFFER;
        let was_stalled = matches!(pb.state(), PlayState::Stalled { .. });
        match due {
            Some(seq) if room => {
                let url = match base.join(&crate::origin::segment_uri(seq)) {
                    Ok(u) => u,
                    Err(_) => break,
                };
                let got = tokio::select! {
                    r = fetch_segment(&http, url.as_str()) => r,
                    _ = stop.cancelled() => break,
                };
                let now = Instant::now();
                match got {
                    Ok((bytes, p2p)) => {
                        let n = bytes.len() as u64;
                        if <[u8; 32]>::from(Sha256::digest(&bytes)) != origin.digest(seq) {
                            report.corrupt += 1;
                        }
                        if p2p {
                            report.p2p_bytes += n;
                            live.p2p_bytes.fetch_add(n, Relaxed);
                        } else {
                            report.cdn_bytes += n;
                        }
                        live.all_bytes.fetch_add(n, Relaxed);
                        report.segments += 1;
                        report.received.push(seq);
                        pb.segment_arrived(now, segment_duration);
                        next = Some(seq + 1);
                    }
                    Err(()) => {
                        report.errors += 1;
                        // Do not hammer a failing node: retry at the next refresh.
                        tokio::select! {
                            _ = tokio::time::sleep_until(next_refresh) => {}
                            _ = stop.cancelled() => break,
                        }
                    }
                }
            }
            _ => {
                // Nothing to fetch: wait for the next refresh, or for room in the buffer.
                let wake = if due.is_some() {
                    Instant::now() + segment_duration.min(Duration::from_millis(500))
                } else {
                    next_refresh
                };
                tokio::select! {
                    _ = tokio::time::sleep_until(wake) => {}
                    _ = stop.cancelled() => break,
                }
            }
        }
        pb.advance(Instant::now());
        if !was_stalled && matches!(pb.state(), PlayState::Stalled { .. }) {
            live.stalls.fetch_add(1, Relaxed);
        }
    }
    let now = Instant::now();
    let before = pb.stalls.len();
    let was_stalled = matches!(pb.state(), PlayState::Stalled { .. });
    pb.finish(now);
    if !was_stalled && pb.stalls.len() > before {
        live.stalls.fetch_add(1, Relaxed);
    }
    report.startup = pb.startup;
    report.stalls = pb.stalls.clone();
    report.watched = pb.watched();
    report
}

/// Playlist length and its window `(first, last, ended)` (`None` when it lists nothing).
async fn fetch_playlist(
    http: &reqwest::Client,
    url: &str,
) -> Result<(u64, Option<(u64, u64, bool)>), ()> {
    let resp = http.get(url).send().await.map_err(|_| ())?;
    if !resp.status().is_success() {
        return Err(());
    }
    let body = resp.bytes().await.map_err(|_| ())?;
    let playlist = m3u8_rs::parse_media_playlist_res(&body).map_err(|_| ())?;
    let seqs: Vec<u64> = playlist
        .segments
        .iter()
        .filter_map(|s| segment_seq(&format!("/live/{}", s.uri)))
        .collect();
    let window = match (seqs.first(), seqs.last()) {
        (Some(f), Some(l)) => Some((*f, *l, playlist.end_list)),
        _ => None,
    };
    Ok((body.len() as u64, window))
}

/// A segment's bytes and whether they came from peers.
async fn fetch_segment(http: &reqwest::Client, url: &str) -> Result<(bytes::Bytes, bool), ()> {
    let resp = http.get(url).send().await.map_err(|_| ())?;
    if !resp.status().is_success() {
        return Err(());
    }
    let p2p = resp
        .headers()
        .get("x-shoal-source")
        .is_some_and(|v| v.as_bytes() == b"p2p");
    let body = resp.bytes().await.map_err(|_| ())?;
    Ok((body, p2p))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn playback_starts_with_the_first_segment() {
        let t0 = Instant::now();
        let mut pb = Playback::new(t0);
        pb.advance(t0 + S);
        assert_eq!(pb.state(), PlayState::Starting);
        pb.segment_arrived(t0 + 2 * S, 2 * S);
        assert_eq!(pb.startup, Some(2 * S));
        assert_eq!(pb.state(), PlayState::Playing);
        assert_eq!(pb.buffered(), 2 * S);
    }

    #[test]
    fn an_empty_buffer_stalls_from_the_instant_it_ran_dry() {
        let t0 = Instant::now();
        let mut pb = Playback::new(t0);
        pb.segment_arrived(t0, 2 * S);
        pb.advance(t0 + 5 * S);
        assert_eq!(pb.state(), PlayState::Stalled { since: t0 + 2 * S });
        pb.segment_arrived(t0 + 6 * S, 2 * S);
        assert_eq!(pb.stalls, vec![4 * S]);
        assert_eq!(pb.played, 2 * S);
        assert_eq!(pb.state(), PlayState::Playing);
    }

    #[test]
    fn segments_in_time_never_stall() {
        let t0 = Instant::now();
        let mut pb = Playback::new(t0);
        for i in 0..100u32 {
            pb.segment_arrived(t0 + 2 * S * i, 2 * S);
        }
        pb.finish(t0 + 200 * S);
        assert!(pb.stalls.is_empty());
        assert_eq!(pb.played, 200 * S);
    }

    #[test]
    fn a_stall_in_progress_at_the_end_counts() {
        let t0 = Instant::now();
        let mut pb = Playback::new(t0);
        pb.segment_arrived(t0, S);
        pb.finish(t0 + 3 * S);
        assert_eq!(pb.stalls, vec![2 * S]);
        assert_eq!(pb.watched(), 3 * S);
    }

    #[test]
    fn a_player_that_never_started_has_no_startup_and_no_stall() {
        let t0 = Instant::now();
        let mut pb = Playback::new(t0);
        pb.finish(t0 + 10 * S);
        assert_eq!(pb.startup, None);
        assert!(pb.stalls.is_empty());
    }
}
