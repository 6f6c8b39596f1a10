//! A simulated origin CDN: a live HLS stream that publishes a new segment every target duration
//! into a sliding-window playlist (or a VOD playlist), made of the committed clip repeated with
//! rising media-sequence numbers and an `EXT-X-DISCONTINUITY` at each loop; or a live DASH
//! stream of the fMP4 clip, a dynamic MPD with a `$Number$` template, whose later loops have
//! their decode times moved forward so the timeline runs on. It counts every body byte it
//! sends, by kind.
//!
//! The manifest texts and the live clock are pure ([`live_playlist`], [`live_mpd`],
//! [`LiveClock`]); the HTTP server around them is thin.

use crate::{clip, fmp4};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Path of the DASH initialization segment.
pub const INIT_PATH: &str = "/live/init.mp4";

/// A DASH MPD's `minimumUpdatePeriod`, in segment durations. Players of a `$Number$` template
/// compute new segments from the clock, so they need the MPD only now and then.
pub const MPD_UPDATE_SEGMENTS: u32 = 5;

/// HLS (MPEG-TS segments, media playlist) or DASH (fMP4 segments, dynamic MPD).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A media playlist of MPEG-TS segments.
    Hls,
    /// A dynamic MPD with a `$Number$` `SegmentTemplate`, an init segment and fMP4 segments.
    Dash,
}

impl Format {
    /// Path of the manifest (media playlist or MPD).
    pub fn manifest_path(self) -> &'static str {
        match self {
            Format::Hls => "/live/stream.m3u8",
            Format::Dash => "/live/stream.mpd",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Format::Hls => ".ts",
            Format::Dash => ".m4s",
        }
    }

    /// The URI of segment `seq`, relative to the manifest.
    pub fn segment_uri(self, seq: u64) -> String {
        format!("seg{seq}{}", self.extension())
    }

    /// Parses a segment path (`/live/seg{n}.ts` or `.m4s`) back to its sequence number.
    pub fn segment_seq(self, path: &str) -> Option<u64> {
        path.strip_prefix("/live/seg")?
            .strip_suffix(self.extension())?
            .parse()
            .ok()
    }

    /// The name in tables.
    pub fn label(self) -> &'static str {
        match self {
            Format::Hls => "HLS",
            Format::Dash => "DASH",
        }
    }
}

/// Live (sliding window) or VOD (the whole list, `EXT-X-ENDLIST`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamMode {
    /// A new segment every segment duration; the playlist lists the newest `window`.
    Live,
    /// A fixed list of segments.
    Vod,
}

/// What the origin publishes.
#[derive(Debug, Clone)]
pub struct OriginConfig {
    /// HLS or DASH.
    pub format: Format,
    /// Live or VOD.
    pub mode: StreamMode,
    /// Duration of a segment (the `EXTINF` and the live publishing period).
    pub segment_duration: Duration,
    /// Bitrate the segments are padded to, in bits per second.
    pub bitrate_bps: u64,
    /// Live: segments in the playlist window. VOD: segments in the list.
    pub window: usize,
}

/// Which live segments exist at a given time. At start the window is already full, as if the
/// stream had been running; then one segment appears every `segment_duration`.
#[derive(Debug, Clone, Copy)]
pub struct LiveClock {
    /// When the origin started.
    pub start: Instant,
    /// The publishing period.
    pub segment_duration: Duration,
    /// Segments in the window.
    pub window: usize,
}

impl LiveClock {
    /// Sequence number of the newest published segment at `now`.
    pub fn newest(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.start);
        let periods = elapsed.as_nanos() / self.segment_duration.as_nanos().max(1);
        self.window.saturating_sub(1) as u64 + periods as u64
    }

    /// When segment `seq` is (or was) published.
    pub fn published_at(&self, seq: u64) -> Instant {
        let periods = seq.saturating_sub(self.window.saturating_sub(1) as u64);
        self.start + self.segment_duration * periods as u32
    }
}

/// The media playlist listing segments `first..=last`. The clip of `clip_len` segments repeats,
/// so every segment whose sequence is a multiple of `clip_len` (but the first of the window)
/// starts after an `EXT-X-DISCONTINUITY`; `ended` adds `EXT-X-ENDLIST`.
pub fn live_playlist(
    first: u64,
    last: u64,
    segment_duration: Duration,
    clip_len: usize,
    ended: bool,
) -> String {
    let k = clip_len.max(1) as u64;
    let target = segment_duration.as_secs_f64().ceil().max(1.0) as u64;
    let mut s = String::with_capacity(128 + 40 * (last.saturating_sub(first) as usize + 1));
    s.push_str("#EXTM3U\n#EXT-X-VERSION:3\n");
    let _ = writeln!(s, "#EXT-X-TARGETDURATION:{target}");
    let _ = writeln!(s, "#EXT-X-MEDIA-SEQUENCE:{first}");
    // Loop starts strictly before or at `first` (the tag of the first segment is dropped when
    // it leaves the window, and counted here instead).
    let _ = writeln!(s, "#EXT-X-DISCONTINUITY-SEQUENCE:{}", first / k);
    if ended {
        s.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n");
    }
    for seq in first..=last {
        if seq != first && seq % k == 0 {
            s.push_str("#EXT-X-DISCONTINUITY\n");
        }
        let _ = writeln!(s, "#EXTINF:{:.3},", segment_duration.as_secs_f64());
        s.push_str(&Format::Hls.segment_uri(seq));
        s.push('\n');
    }
    if ended {
        s.push_str("#EXT-X-ENDLIST\n");
    }
    s
}

/// A live DASH MPD: one muxed Representation of `bandwidth` bits per second whose segment
/// `n` (from 0) covers `[n, n + 1)` segment durations after `availability_start` and is
/// available from its end. `now` stamps `publishTime` and the `direct` `UTCTiming` that players
/// synchronise their clocks with; `window` segments stay in the time-shift buffer.
pub fn live_mpd(
    availability_start: SystemTime,
    now: SystemTime,
    segment_duration: Duration,
    window: usize,
    bandwidth: u64,
) -> String {
    let secs = |d: Duration| format!("PT{:.3}S", d.as_secs_f64());
    let time = |t: SystemTime| humantime::format_rfc3339_millis(t).to_string();
    let update = segment_duration * MPD_UPDATE_SEGMENTS;
    let depth = segment_duration * window.max(1) as u32;
    let ms = segment_duration.as_millis().max(1);
    let mut s = String::with_capacity(1200);
    s.push_str(r#"<?xml version="1.0" encoding="utf-8"?>"#);
    s.push('\n');
    let _ = writeln!(
        s,
        r#"<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:isoff-live:2011" type="dynamic" availabilityStartTime="{}" publishTime="{}" minimumUpdatePeriod="{}" timeShiftBufferDepth="{}" maxSegmentDuration="{}" minBufferTime="{}">"#,
        time(availability_start),
        time(now),
        secs(update),
        secs(depth),
        secs(segment_duration),
        secs(segment_duration),
    );
    let _ = writeln!(s, r#"  <Period id="0" start="PT0S">"#);
    let _ = writeln!(
        s,
        r#"    <AdaptationSet contentType="video" mimeType="video/mp4" segmentAlignment="true" startWithSAP="1">"#
    );
    let _ = writeln!(
        s,
        r#"      <Representation id="av" codecs="{CODECS}" bandwidth="{bandwidth}" width="320" height="180" frameRate="25" audioSamplingRate="48000">"#
    );
    let _ = writeln!(
        s,
        r#"        <SegmentTemplate timescale="1000" duration="{ms}" startNumber="0" initialization="{}" media="seg$Number${}"/>"#,
        INIT_PATH.trim_start_matches("/live/"),
        Format::Dash.extension(),
    );
    s.push_str("      </Representation>\n    </AdaptationSet>\n  </Period>\n");
    let _ = writeln!(
        s,
        r#"  <UTCTiming schemeIdUri="urn:mpeg:dash:utc:direct:2014" value="{}"/>"#,
        time(now)
    );
    s.push_str("</MPD>\n");
    s
}

/// The DASH clip's codecs: H.264 Constrained Baseline level 1.2, AAC-LC.
const CODECS: &str = "avc1.42C00C,mp4a.40.2";

/// Bytes the origin sent, by kind (response bodies of GET requests). Segments the tracker's
/// digest service fetches (user agent `shoal-tracker/...`) count apart from the nodes'.
#[derive(Debug, Default)]
pub struct OriginCounters {
    /// Segment bodies sent to the tracker's digest service.
    pub digest_bytes: AtomicU64,
    /// Segment responses to the tracker's digest service.
    pub digest_requests: AtomicU64,
    /// Segment bodies.
    pub segment_bytes: AtomicU64,
    /// Playlist bodies.
    pub manifest_bytes: AtomicU64,
    /// Segment responses.
    pub segment_requests: AtomicU64,
    /// Playlist responses.
    pub manifest_requests: AtomicU64,
}

/// A snapshot of [`OriginCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct OriginTotals {
    /// Segment bodies sent to the tracker's digest service.
    pub digest_bytes: u64,
    /// Segment responses to the tracker's digest service.
    pub digest_requests: u64,
    /// Segment bodies.
    pub segment_bytes: u64,
    /// Playlist bodies.
    pub manifest_bytes: u64,
    /// Segment responses.
    pub segment_requests: u64,
    /// Playlist responses.
    pub manifest_requests: u64,
}

impl OriginTotals {
    /// What the origin sent to the nodes (segments and playlists).
    pub fn to_nodes(&self) -> u64 {
        self.segment_bytes + self.manifest_bytes
    }

    /// Everything the origin sent, digest fetches included.
    pub fn bytes(&self) -> u64 {
        self.to_nodes() + self.digest_bytes
    }
}

struct State {
    config: OriginConfig,
    clock: LiveClock,
    /// Wall-clock time of `clock.start` (the MPD's clock).
    started_wall: SystemTime,
    /// The clip's segments, padded to the bitrate.
    segments: Vec<Bytes>,
    /// DASH: the decode times of each clip segment, moved forward at each loop.
    time_fields: Vec<Vec<fmp4::TimeField>>,
    /// DASH: the initialization segment (empty for HLS).
    init: Bytes,
    /// SHA-256 of each segment served or asked about, by sequence number.
    digests: Mutex<HashMap<u64, [u8; 32]>>,
    counters: OriginCounters,
}

impl State {
    fn clip_index(&self, seq: u64) -> usize {
        (seq % self.segments.len() as u64) as usize
    }

    /// Segment `seq`: the clip segment it repeats, its decode times moved on by the loops
    /// before it (DASH; HLS marks each loop as a discontinuity instead).
    fn segment(&self, seq: u64) -> Bytes {
        let i = self.clip_index(seq);
        let loops = seq / self.segments.len() as u64;
        let fields = &self.time_fields[i];
        if loops == 0 || fields.is_empty() {
            return self.segments[i].clone();
        }
        let clip_secs = (self.segments.len() as f64 * clip::SEGMENT_SECONDS) as u64;
        let mut b = self.segments[i].to_vec();
        fmp4::shift(&mut b, fields, loops * clip_secs);
        Bytes::from(b)
    }

    fn digest(&self, seq: u64) -> [u8; 32] {
        let known = self.digests.lock().ok().and_then(|d| d.get(&seq).copied());
        known.unwrap_or_else(|| {
            let d: [u8; 32] = Sha256::digest(self.segment(seq)).into();
            if let Ok(mut m) = self.digests.lock() {
                m.insert(seq, d);
            }
            d
        })
    }

    fn available(&self, seq: u64, now: Instant) -> bool {
        match self.config.mode {
            StreamMode::Live => seq <= self.clock.newest(now),
            StreamMode::Vod => seq < self.config.window as u64,
        }
    }

    fn manifest(&self, now: Instant) -> String {
        if self.config.format == Format::Dash {
            let window = self.config.segment_duration * self.config.window as u32;
            let wall = self.started_wall + now.saturating_duration_since(self.clock.start);
            return live_mpd(
                self.started_wall - window,
                wall,
                self.config.segment_duration,
                self.config.window,
                self.config.bitrate_bps,
            );
        }
        let (first, last, ended) = match self.config.mode {
            StreamMode::Live => {
                let last = self.clock.newest(now);
                let first = (last + 1).saturating_sub(self.config.window as u64);
                (first, last, false)
            }
            StreamMode::Vod => (0, self.config.window.saturating_sub(1) as u64, true),
        };
        live_playlist(
            first,
            last,
            self.config.segment_duration,
            self.segments.len(),
            ended,
        )
    }
}

/// A running origin; stops when dropped.
#[derive(Clone)]
pub struct Origin {
    addr: SocketAddr,
    state: Arc<State>,
    stop: CancellationToken,
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Origin {
    /// Binds a loopback port and starts publishing.
    pub async fn start(config: OriginConfig) -> std::io::Result<Origin> {
        Self::start_on(([127, 0, 0, 1], 0).into(), config).await
    }

    /// Binds `listen` and starts publishing (a lab server's address, say).
    pub async fn start_on(listen: SocketAddr, config: OriginConfig) -> std::io::Result<Origin> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let target =
            clip::segment_target_bytes(config.bitrate_bps, config.segment_duration.as_secs_f64());
        let (segments, time_fields, init) = match config.format {
            Format::Hls => (
                clip::SEGMENTS
                    .iter()
                    .map(|s| Bytes::from(clip::padded(s, target)))
                    .collect(),
                vec![Vec::new(); clip::SEGMENTS.len()],
                Bytes::new(),
            ),
            Format::Dash => {
                let tracks = fmp4::track_timescales(clip::DASH_INIT);
                (
                    clip::DASH_SEGMENTS
                        .iter()
                        .map(|s| Bytes::from(fmp4::padded(s, target)))
                        .collect(),
                    clip::DASH_SEGMENTS
                        .iter()
                        .map(|s| fmp4::time_fields(s, &tracks))
                        .collect(),
                    Bytes::from_static(clip::DASH_INIT),
                )
            }
        };
        let state = Arc::new(State {
            clock: LiveClock {
                start: Instant::now(),
                segment_duration: config.segment_duration,
                window: config.window,
            },
            started_wall: shoal::clock::wall(),
            config,
            segments,
            time_fields,
            init,
            digests: Mutex::new(HashMap::new()),
            counters: OriginCounters::default(),
        });
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, state.clone(), stop.clone()));
        Ok(Origin { addr, state, stop })
    }

    /// `host:port` of the origin (what nodes allow-list).
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// Where the origin listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// HLS or DASH.
    pub fn format(&self) -> Format {
        self.state.config.format
    }

    /// Live or VOD.
    pub fn mode(&self) -> StreamMode {
        self.state.config.mode
    }

    /// The live clock (when each segment appears).
    pub fn clock(&self) -> LiveClock {
        self.state.clock
    }

    /// SHA-256 of segment `seq` as the origin publishes it.
    pub fn digest(&self, seq: u64) -> [u8; 32] {
        self.state.digest(seq)
    }

    /// Size of segment `seq`.
    pub fn segment_len(&self, seq: u64) -> u64 {
        self.state.segments[self.state.clip_index(seq)].len() as u64
    }

    /// The DASH initialization segment (empty for HLS).
    pub fn init(&self) -> &Bytes {
        &self.state.init
    }

    /// What the origin sent so far.
    pub fn totals(&self) -> OriginTotals {
        let c = &self.state.counters;
        OriginTotals {
            digest_bytes: c.digest_bytes.load(Ordering::Relaxed),
            digest_requests: c.digest_requests.load(Ordering::Relaxed),
            segment_bytes: c.segment_bytes.load(Ordering::Relaxed),
            manifest_bytes: c.manifest_bytes.load(Ordering::Relaxed),
            segment_requests: c.segment_requests.load(Ordering::Relaxed),
            manifest_requests: c.manifest_requests.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting connections.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

async fn serve(listener: tokio::net::TcpListener, state: Arc<State>, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "origin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&state, req)) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(error = %e, "origin connection ended with an error");
                },
                _ = stop.cancelled() => {}
            }
        });
    }
}

fn handle(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let status = |s: StatusCode| {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = s;
        r
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return status(StatusCode::METHOD_NOT_ALLOWED);
    }
    let get = req.method() == Method::GET;
    let now = Instant::now();
    let path = req.uri().path();
    let c = &state.counters;
    let format = state.config.format;
    let from_tracker = req
        .headers()
        .get(hyper::header::USER_AGENT)
        .is_some_and(|ua| ua.as_bytes().starts_with(b"shoal-tracker"));
    // One `bytes=a-b` or `bytes=a-` range on a segment, as a CDN answers it (nodes finish
    // a peer transfer that ran out of time with one).
    let range = req
        .headers()
        .get(hyper::header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_range);
    let count_segment = |len: usize| {
        let (b, n) = if from_tracker {
            (&c.digest_bytes, &c.digest_requests)
        } else {
            (&c.segment_bytes, &c.segment_requests)
        };
        if get {
            b.fetch_add(len as u64, Ordering::Relaxed);
            n.fetch_add(1, Ordering::Relaxed);
        }
    };
    let (body, ctype) = if path == format.manifest_path() {
        let text = Bytes::from(state.manifest(now));
        if get {
            c.manifest_bytes
                .fetch_add(text.len() as u64, Ordering::Relaxed);
            c.manifest_requests.fetch_add(1, Ordering::Relaxed);
        }
        let ctype = match format {
            Format::Hls => "application/vnd.apple.mpegurl",
            Format::Dash => "application/dash+xml",
        };
        (text, ctype)
    } else {
        let (bytes, ctype) = if path == INIT_PATH && format == Format::Dash {
            (state.init.clone(), "video/mp4")
        } else if let Some(seq) = format
            .segment_seq(path)
            .filter(|s| state.available(*s, now))
        {
            let ctype = match format {
                Format::Hls => "video/mp2t",
                Format::Dash => "video/iso.segment",
            };
            (state.segment(seq), ctype)
        } else {
            return status(StatusCode::NOT_FOUND);
        };
        let total = bytes.len() as u64;
        if let Some((first, last)) = range {
            let last = last.unwrap_or(u64::MAX).min(total.saturating_sub(1));
            if first > last || first >= total {
                let mut r = status(StatusCode::RANGE_NOT_SATISFIABLE);
                r.headers_mut().insert(
                    hyper::header::CONTENT_RANGE,
                    hyper::header::HeaderValue::from_str(&format!("bytes */{total}"))
                        .expect("ascii"),
                );
                return r;
            }
            let part = bytes.slice(first as usize..=last as usize);
            count_segment(part.len());
            let mut r = Response::new(Full::new(if get { part.clone() } else { Bytes::new() }));
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            let h = r.headers_mut();
            h.insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(ctype),
            );
            h.insert(hyper::header::CONTENT_LENGTH, part.len().into());
            h.insert(
                hyper::header::CONTENT_RANGE,
                hyper::header::HeaderValue::from_str(&format!("bytes {first}-{last}/{total}"))
                    .expect("ascii"),
            );
            return r;
        }
        count_segment(bytes.len());
        (bytes, ctype)
    };
    let len = body.len();
    let mut r = Response::new(Full::new(if get { body } else { Bytes::new() }));
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(ctype),
    );
    h.insert(hyper::header::CONTENT_LENGTH, len.into());
    r
}

/// `bytes=a-b` or `bytes=a-` as (a, Some(b)) or (a, None); anything else (suffix or several
/// ranges) is ignored, as a server may, and the whole resource is sent.
fn parse_range(v: &str) -> Option<(u64, Option<u64>)> {
    let (a, b) = v.trim().strip_prefix("bytes=")?.split_once('-')?;
    let a = a.trim().parse().ok()?;
    let b = b.trim();
    if b.is_empty() {
        return Some((a, None));
    }
    Some((a, Some(b.parse().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_a_cdn_reads_them() {
        assert_eq!(parse_range("bytes=100-199"), Some((100, Some(199))));
        assert_eq!(parse_range("bytes=100-"), Some((100, None)));
        // Suffix and multiple ranges are ignored: the whole resource is sent.
        assert_eq!(parse_range("bytes=-100"), None);
        assert_eq!(parse_range("bytes=0-1,5-6"), None);
        assert_eq!(parse_range("items=0-1"), None);
    }

    #[test]
    fn window_slides_one_segment_per_period() {
        let start = Instant::now();
        let c = LiveClock {
            start,
            segment_duration: Duration::from_secs(2),
            window: 6,
        };
        assert_eq!(c.newest(start), 5);
        assert_eq!(c.newest(start + Duration::from_millis(1999)), 5);
        assert_eq!(c.newest(start + Duration::from_secs(2)), 6);
        assert_eq!(c.published_at(6), start + Duration::from_secs(2));
        assert_eq!(c.published_at(3), start);
    }

    #[test]
    fn loops_are_marked_as_discontinuities() {
        let p = live_playlist(3, 8, Duration::from_secs(2), 5, false);
        let parsed = m3u8_rs::parse_media_playlist_res(p.as_bytes()).expect("valid playlist");
        assert_eq!(parsed.media_sequence, 3);
        assert_eq!(parsed.discontinuity_sequence, 0);
        assert_eq!(parsed.segments.len(), 6);
        let disc: Vec<bool> = parsed.segments.iter().map(|s| s.discontinuity).collect();
        assert_eq!(disc, [false, false, true, false, false, false]);
        assert_eq!(parsed.segments[2].uri, "seg5.ts");
        assert!(!parsed.end_list);
    }

    #[test]
    fn a_loop_start_at_the_head_of_the_window_counts_in_the_discontinuity_sequence() {
        let p = live_playlist(10, 12, Duration::from_secs(2), 5, false);
        let parsed = m3u8_rs::parse_media_playlist_res(p.as_bytes()).expect("valid playlist");
        assert_eq!(parsed.discontinuity_sequence, 2);
        assert!(!parsed.segments[0].discontinuity);
    }

    #[test]
    fn vod_lists_everything_and_ends() {
        let p = live_playlist(0, 9, Duration::from_secs(2), 5, true);
        let parsed = m3u8_rs::parse_media_playlist_res(p.as_bytes()).expect("valid playlist");
        assert!(parsed.end_list);
        assert_eq!(parsed.segments.len(), 10);
    }

    #[test]
    fn the_mpd_is_live_and_its_clock_matches_the_origins() {
        let (d, window) = (Duration::from_secs(2), 6);
        let ast = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        // As the origin runs: the window is full at start, one more segment 2.5 s later.
        let now = ast + d * window as u32 + Duration::from_millis(2500);
        let text = live_mpd(ast, now, d, window, 3_000_000);
        let url = url::Url::parse("http://origin.test/live/stream.mpd").expect("url");
        let mpd = shoal::manifest::dash::parse(text.as_bytes(), &url, now).expect("valid MPD");
        assert!(mpd.dynamic);
        assert_eq!(mpd.availability_start_time, Some(ast));
        assert_eq!(mpd.minimum_update_period, Some(d * MPD_UPDATE_SEGMENTS));
        assert_eq!(mpd.utc_timing.len(), 1);
        let rep = &mpd.periods[0].representations[0];
        let numbers: Vec<u64> = rep.segments.iter().map(|s| s.number).collect();
        assert_eq!(numbers.last(), Some(&6), "{numbers:?}");
        assert_eq!(rep.segments[0].resource.url.path(), "/live/seg0.m4s");
        assert_eq!(rep.init.as_ref().map(|i| i.url.path()), Some(INIT_PATH));
        let live = rep.live.as_ref().expect("a live template");
        assert_eq!(live.first_number(), 7);
        assert_eq!(live.available_at(7), Some(ast + d * 8));
        let start = Instant::now();
        let clock = LiveClock {
            start,
            segment_duration: d,
            window,
        };
        assert_eq!(clock.newest(start + Duration::from_millis(2500)), 6);
    }

    #[test]
    fn segment_paths_round_trip() {
        for f in [Format::Hls, Format::Dash] {
            assert_eq!(
                f.segment_seq(&format!("/live/{}", f.segment_uri(42))),
                Some(42)
            );
            assert_eq!(f.segment_seq("/live/seg.ts"), None);
            assert_eq!(f.segment_seq("/other/seg1.ts"), None);
        }
        assert_eq!(Format::Dash.segment_seq("/live/seg1.ts"), None);
    }
}
