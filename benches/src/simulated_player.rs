//! A simulated player that behaves like hls.js (or, on a DASH stream, dash.js) on a live
//! stream: it starts 3 segments behind the live edge, refreshes the playlist every target
//! duration (the MPD every `minimumUpdatePeriod`, computing new segments from
//! `availabilityStartTime` and the server's clock in between), fetches segments one after
//! another through its node (DASH: the initialization segment first), and keeps a playback
//! clock and buffer.
//!
//! [`Playback`] is the buffer model, pure and driven with `now`; [`play`] is the HTTP loop.

use crate::simulated_origin::{Format, Origin};
use sha2::{Digest, Sha256};
use shoal::manifest::dash::{self, LiveTemplate};
use std::time::{Duration, SystemTime};
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

/// One stall as it happened, to tell a machine that paused (every player, the baseline's too,
/// at once) from a segment that came late (which node, which segment, from where, how long its
/// request took).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StallEvent {
    /// The viewer's node (`p3`; the baseline's are `c3`).
    pub node: String,
    /// When the buffer ran dry, seconds since the process started ([`crate::secs`]).
    pub began_s: f64,
    /// How long playback stood still, seconds.
    pub seconds: f64,
    /// The segment whose arrival ended it (`None`: the viewer left while stalled).
    pub ended_by: Option<u64>,
    /// When that segment appeared at the live origin, seconds since the process started.
    pub published_s: Option<f64>,
    /// When the player asked its node for it.
    pub requested_s: Option<f64>,
    /// How long the request took, milliseconds.
    pub fetch_ms: Option<f64>,
    /// Where the node got it (`x-shoal-source`: `p2p`, `cdn`, `mixed`, `cache`).
    pub source: Option<String>,
}

impl StallEvent {
    /// A stall of `node` from `since` until `now`, with nothing yet said of what ended it.
    fn new(node: &str, since: Instant, now: Instant) -> Self {
        Self {
            node: node.to_owned(),
            began_s: crate::secs(since),
            seconds: now.saturating_duration_since(since).as_secs_f64(),
            ..Self::default()
        }
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
    /// Segment bytes that came from peers (`x-shoal-p2p-bytes`).
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
    /// What the first few failed requests were (URL and why), to say what went wrong.
    pub error_samples: Vec<String>,
    /// Sequence numbers received (for the swarm's minimum origin bytes).
    pub received: Vec<u64>,
    /// Every stall, with when, why and what ended it.
    pub stall_events: Vec<StallEvent>,
}

/// Failed requests whose description a report keeps.
const ERROR_SAMPLES: usize = 5;

impl PlayerReport {
    /// Counts a failed request, keeping the first few descriptions.
    fn failed(&mut self, why: String) {
        self.errors += 1;
        if self.error_samples.len() < ERROR_SAMPLES {
            self.error_samples.push(why);
        }
    }
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

/// Plays the live stream at `manifest_url` (a node's player-front URL) until `stop`.
pub async fn play(
    node: String,
    http: reqwest::Client,
    manifest_url: String,
    origin: Origin,
    segment_duration: Duration,
    live: std::sync::Arc<LiveCounters>,
    stop: CancellationToken,
) -> PlayerReport {
    use std::sync::atomic::Ordering::Relaxed;
    let mut pb = Playback::new(Instant::now());
    let mut report = PlayerReport::default();
    let base = match url::Url::parse(&manifest_url) {
        Ok(u) => u,
        Err(e) => {
            report.failed(format!("manifest URL {manifest_url}: {e}"));
            return report;
        }
    };
    let format = origin.format();
    let mut view: Option<View> = None;
    let mut next: Option<u64> = None;
    let mut ended = false;
    let mut init_done = false;
    let mut next_refresh = Instant::now();
    while !stop.is_cancelled() {
        let now = Instant::now();
        if now >= next_refresh && !ended {
            next_refresh = now + segment_duration;
            match View::load(format, &http, &base).await {
                Ok((text_len, v)) => {
                    report.manifest_bytes += text_len;
                    live.all_bytes.fetch_add(text_len, Relaxed);
                    next_refresh = now + v.refresh_period().unwrap_or(segment_duration);
                    view = Some(v);
                }
                Err(why) => report.failed(why),
            }
        }
        let window = view.as_ref().and_then(View::window);
        if let Some(w) = window {
            ended = w.ended;
            let start = if w.ended {
                w.first
            } else {
                (w.last + 1).saturating_sub(LIVE_SYNC_SEGMENTS).max(w.first)
            };
            // A player that fell out of the window jumps forward, as hls.js and dash.js do.
            next = Some(next.map_or(start, |n| n.max(w.first)));
        }
        let due = match (next, window) {
            (Some(n), Some(w)) if n <= w.last => Some(n),
            _ => None,
        };
        pb.advance(Instant::now());
        let room = pb.buffered() + segment_duration <= MAX_BUFFER;
        let was_stalled = matches!(pb.state(), PlayState::Stalled { .. });
        // DASH: the initialization segment first.
        let init = view
            .as_ref()
            .and_then(View::init_url)
            .filter(|_| !init_done);
        match (due, view.as_ref()) {
            (Some(seq), Some(v)) if room => {
                let Some(url) = init.clone().or_else(|| v.segment_url(&base, seq)) else {
                    break;
                };
                // Not cut when the viewer leaves: a request cut after the origin answered
                // would leave bytes the origin sent that no node counts.
                let requested = Instant::now();
                let got = fetch_segment(&http, url.as_str()).await;
                let now = Instant::now();
                match got {
                    Ok(Fetched { bytes, p2p, source }) => {
                        let n = bytes.len() as u64;
                        let p2p = p2p.min(n);
                        let expected = match init {
                            Some(_) => Sha256::digest(origin.init()).into(),
                            None => origin.digest(seq),
                        };
                        if <[u8; 32]>::from(Sha256::digest(&bytes)) != expected {
                            report.corrupt += 1;
                        }
                        report.p2p_bytes += p2p;
                        report.cdn_bytes += n - p2p;
                        live.p2p_bytes.fetch_add(p2p, Relaxed);
                        live.all_bytes.fetch_add(n, Relaxed);
                        if init.is_some() {
                            init_done = true;
                        } else {
                            report.segments += 1;
                            report.received.push(seq);
                            pb.advance(now);
                            if let PlayState::Stalled { since } = pb.state() {
                                let is_live =
                                    origin.mode() == crate::simulated_origin::StreamMode::Live;
                                report.stall_events.push(StallEvent {
                                    ended_by: Some(seq),
                                    published_s: is_live
                                        .then(|| crate::secs(origin.clock().published_at(seq))),
                                    requested_s: Some(crate::secs(requested)),
                                    fetch_ms: Some(
                                        now.saturating_duration_since(requested).as_secs_f64()
                                            * 1000.0,
                                    ),
                                    source,
                                    ..StallEvent::new(&node, since, now)
                                });
                            }
                            pb.segment_arrived(now, segment_duration);
                            next = Some(seq + 1);
                        }
                    }
                    Err(why) => {
                        report.failed(why);
                        // Do not hammer a failing node: retry at the next refresh.
                        tokio::select! {
                            _ = tokio::time::sleep_until(next_refresh) => {}
                            _ = stop.cancelled() => break,
                        }
                    }
                }
            }
            _ => {
                // Nothing to fetch: wait for the next refresh or segment, or for room in the
                // buffer.
                let wake = if due.is_some() {
                    Instant::now() + segment_duration.min(Duration::from_millis(500))
                } else {
                    view.as_ref()
                        .and_then(View::next_available)
                        .map_or(next_refresh, |t| t.min(next_refresh))
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
    pb.advance(now);
    if let PlayState::Stalled { since } = pb.state() {
        report.stall_events.push(StallEvent::new(&node, since, now));
    }
    pb.finish(now);
    if !was_stalled && pb.stalls.len() > before {
        live.stalls.fetch_add(1, Relaxed);
    }
    report.startup = pb.startup;
    report.stalls = pb.stalls.clone();
    report.watched = pb.watched();
    report
}

/// The segments a player may fetch now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    first: u64,
    last: u64,
    /// VOD: the list is complete.
    ended: bool,
}

/// What a player knows of the stream from its last manifest load.
enum View {
    /// A media playlist's window (`None` when it lists nothing).
    Hls(Option<Window>),
    /// A live MPD, as dash.js reads one.
    Dash(Box<DashView>),
}

/// A live MPD's single Representation, read with the SDK's model: the segments it lists, the
/// template that names the next ones and says when each is available (from
/// `availabilityStartTime`), on the server's clock as `UTCTiming` gives it.
struct DashView {
    listed: Vec<(u64, url::Url)>,
    template: Option<LiveTemplate>,
    init: Option<url::Url>,
    refresh: Option<Duration>,
    /// The server's clock minus ours, nanoseconds.
    skew_ns: i128,
}

impl DashView {
    fn parse(body: &[u8], url: &url::Url) -> Option<Self> {
        let received = shoal::clock::wall();
        let skew_ns = dash::parse(body, url, received)
            .ok()?
            .utc_timing
            .iter()
            .find(|(scheme, _)| scheme.starts_with("urn:mpeg:dash:utc:direct"))
            .and_then(|(_, v)| dash::template::parse_datetime(v))
            .map_or(0, |server| signed_ns(server, received));
        let mut v = DashView {
            listed: Vec::new(),
            template: None,
            init: None,
            refresh: None,
            skew_ns,
        };
        let mpd = dash::parse(body, url, v.server_now()).ok()?;
        let rep = mpd.periods.last()?.representations.first()?;
        v.listed = rep
            .segments
            .iter()
            .map(|s| (s.number, s.resource.url.clone()))
            .collect();
        v.template = rep.live.clone();
        v.init = rep.init.as_ref().map(|i| i.url.clone());
        v.refresh = mpd.minimum_update_period;
        Some(v)
    }

    fn server_now(&self) -> SystemTime {
        let now = shoal::clock::wall();
        let d = Duration::from_nanos(self.skew_ns.unsigned_abs().min(u64::MAX as u128) as u64);
        if self.skew_ns >= 0 {
            now + d
        } else {
            now - d
        }
    }

    /// The newest segment available now: the newest listed, or a later one the template says
    /// is complete.
    fn window(&self) -> Option<Window> {
        let now = self.server_now();
        let mut last = self.listed.last().map(|l| l.0);
        if let Some(t) = &self.template {
            let mut n = t.first_number();
            while t.available_at(n).is_some_and(|at| at <= now) {
                last = Some(n);
                n += 1;
            }
        }
        let first = self.listed.first().map(|l| l.0).or(last)?;
        Some(Window {
            first,
            last: last?,
            ended: false,
        })
    }

    /// When the segment after the newest becomes available, on our clock.
    fn next_available(&self) -> Option<Instant> {
        let t = self.template.as_ref()?;
        let next = self.window().map_or(t.first_number(), |w| w.last + 1);
        let wait = t.available_at(next)?.duration_since(self.server_now());
        Some(Instant::now() + wait.unwrap_or_default())
    }

    fn segment_url(&self, seq: u64) -> Option<url::Url> {
        match self.listed.iter().find(|l| l.0 == seq) {
            Some((_, u)) => Some(u.clone()),
            None => Some(self.template.as_ref()?.segment(seq)?.resource.url),
        }
    }
}

/// `a - b` in nanoseconds.
fn signed_ns(a: SystemTime, b: SystemTime) -> i128 {
    match a.duration_since(b) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

impl View {
    /// Loads the manifest at `url`: its length and what it says.
    async fn load(
        format: Format,
        http: &reqwest::Client,
        url: &url::Url,
    ) -> Result<(u64, View), String> {
        let resp = http
            .get(url.as_str())
            .send()
            .await
            .map_err(|e| format!("manifest {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("manifest {url}: {}", failure(resp).await));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("manifest {url}: body: {e}"))?;
        let unreadable = || format!("manifest {url}: does not parse");
        let view = match format {
            Format::Hls => {
                let playlist =
                    m3u8_rs::parse_media_playlist_res(&body).map_err(|_| unreadable())?;
                let seqs: Vec<u64> = playlist
                    .segments
                    .iter()
                    .filter_map(|s| Format::Hls.segment_seq(&format!("/live/{}", s.uri)))
                    .collect();
                View::Hls(match (seqs.first(), seqs.last()) {
                    (Some(f), Some(l)) => Some(Window {
                        first: *f,
                        last: *l,
                        ended: playlist.end_list,
                    }),
                    _ => None,
                })
            }
            Format::Dash => View::Dash(Box::new(
                DashView::parse(&body, url).ok_or_else(unreadable)?,
            )),
        };
        Ok((body.len() as u64, view))
    }

    fn window(&self) -> Option<Window> {
        match self {
            View::Hls(w) => *w,
            View::Dash(d) => d.window(),
        }
    }

    /// How long until the next reload: HLS players reload every target duration (the
    /// caller's default), DASH players at `minimumUpdatePeriod`.
    fn refresh_period(&self) -> Option<Duration> {
        match self {
            View::Hls(_) => None,
            View::Dash(d) => d.refresh,
        }
    }

    /// DASH: when the next segment appears (HLS players learn of it at the next reload).
    fn next_available(&self) -> Option<Instant> {
        match self {
            View::Hls(_) => None,
            View::Dash(d) => d.next_available(),
        }
    }

    fn init_url(&self) -> Option<url::Url> {
        match self {
            View::Hls(_) => None,
            View::Dash(d) => d.init.clone(),
        }
    }

    fn segment_url(&self, base: &url::Url, seq: u64) -> Option<url::Url> {
        match self {
            View::Hls(_) => base.join(&Format::Hls.segment_uri(seq)).ok(),
            View::Dash(d) => d.segment_url(seq),
        }
    }
}

/// A failed answer as a player's error says it: the status and the start of the body (the
/// node's error pages say what went wrong, e.g. which origin request failed and how).
async fn failure(resp: reqwest::Response) -> String {
    let status = resp.status();
    let body = resp.bytes().await.unwrap_or_default();
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    format!("status {status}: {}", text.trim())
}

/// A segment as the node answered it.
struct Fetched {
    bytes: bytes::Bytes,
    /// Bytes that came from peers (`x-shoal-p2p-bytes`).
    p2p: u64,
    /// `x-shoal-source`.
    source: Option<String>,
}

/// Fetches a segment: its bytes, how many of them came from peers (a transfer from a peer that
/// ran out of time is finished by the origin, so a segment can be part P2P) and the source.
async fn fetch_segment(http: &reqwest::Client, url: &str) -> Result<Fetched, String> {
    let resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{url}: {}", failure(resp).await));
    }
    let p2p = resp
        .headers()
        .get("x-shoal-p2p-bytes")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(0);
    let source = resp
        .headers()
        .get("x-shoal-source")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| format!("{url}: body: {e}"))?;
    Ok(Fetched { bytes, p2p, source })
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
