//! The player front: a local HTTP/1.1 server the player talks to.
//!
//! `GET /<origin-host>/<path>?<query>` maps to the allow-listed origin. Manifests are fetched,
//! learned and rewritten; segments of a known swarm go through the scheduler (cache, peers,
//! origin); everything else streams through from the origin unchanged.

mod dash;
mod dash_clock;
mod live_edge;

pub(crate) use dash::DashState;

use crate::fetch::{self, FetchError, Mode};
use crate::manifest::{self, hls, ByteRange, MapError};
use crate::metrics::Source;
use crate::node::Shared;
use crate::origin_client::OriginError;
use crate::swarm::{NewSegment, Swarm};
use bytes::Bytes;
use futures::TryStreamExt;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use shoal_proto::SegmentKey;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

/// Serves players until the node shuts down, then lets in-flight responses finish (bounded).
pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shared.shutdown.cancelled() => break,
        };
        let stream = match accepted {
            Ok((s, _)) => {
                // Without it the tail of each response waits for the player's delayed ACK
                // (40 ms on Linux) whenever the previous write is still unacknowledged.
                if let Err(e) = s.set_nodelay(true) {
                    tracing::debug!(error = %e, "TCP_NODELAY on a player connection");
                }
                s
            }
            Err(e) => {
                // Out of file descriptors and the like: pause instead of spinning.
                tracing::warn!(error = %e, "player front accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let svc_shared = shared.clone();
        let svc = hyper::service::service_fn(move |req| {
            let shared = svc_shared.clone();
            async move { Ok::<_, std::convert::Infallible>(with_cors(handle(shared, req).await)) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .max_buf_size(64 * 1024)
            .serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "player connection ended with an error");
            }
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(3), graceful.shutdown()).await;
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut m = msg.into();
    m.push('\n');
    let mut r = full(status, m);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Lets players in web pages of any origin read responses: the proxy is a local front that
/// serves only allow-listed origins, and it takes no cookies or credentials.
fn with_cors(mut r: Response<Body>) -> Response<Body> {
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Content-Length, Content-Range, Content-Type"),
    );
    r
}

/// Answers a CORS preflight (players send one for `Range` requests).
fn preflight() -> Response<Body> {
    let mut r = full(StatusCode::NO_CONTENT, Bytes::new());
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Range"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    r
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    if req.method() == Method::OPTIONS {
        return preflight();
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are served",
        );
        r.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, OPTIONS"),
        );
        return r;
    }
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    match req.uri().path() {
        "/healthz" => return text(StatusCode::OK, "ok"),
        "/metrics" => {
            let mut r = full(StatusCode::OK, crate::metrics::render(&shared.registry));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            return r;
        }
        _ => {}
    }
    if req.uri().scheme().is_some() || req.uri().authority().is_some() {
        return text(
            StatusCode::BAD_REQUEST,
            "absolute-form request targets are not accepted: this is not a forward proxy",
        );
    }
    let origin_url = match shared.mapper.to_origin(&path_and_query) {
        Ok(u) => u,
        Err(e @ MapError::NotAllowed { .. }) => {
            return text(
                StatusCode::FORBIDDEN,
                format!("{e}; allow it with --origin on the proxy"),
            )
        }
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if req.method() == Method::GET {
        if let Some(r) = serve_segment(&shared, &origin_url, range.as_deref()).await {
            return r;
        }
        if is_manifest_path(&origin_url) {
            return serve_manifest(&shared, &origin_url).await;
        }
    }
    pass_through(&shared, req.method().clone(), &origin_url, req.headers()).await
}

fn is_manifest_path(url: &url::Url) -> bool {
    let p = url.path().to_ascii_lowercase();
    p.ends_with(".m3u8") || p.ends_with(".m3u") || p.ends_with(".mpd")
}

/// A single byte range as players send it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    /// `bytes=a-b`.
    Closed(ByteRange),
    /// `bytes=a-` (ffmpeg sends `bytes=0-` on every request).
    From(u64),
}

/// Parses one `bytes=` range; `None` for suffix or multiple ranges (passed to the origin).
fn parse_range(v: &str) -> Option<Asked> {
    let spec = v.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let a: u64 = a.trim().parse().ok()?;
    if b.trim().is_empty() {
        return Some(Asked::From(a));
    }
    let b: u64 = b.trim().parse().ok()?;
    (b >= a).then_some(Asked::Closed(ByteRange {
        offset: a,
        length: b - a + 1,
    }))
}

/// The swarm that lists `key`, if any.
fn find_swarm(shared: &Shared, key: &SegmentKey) -> Option<Arc<Swarm>> {
    let swarms: Vec<Arc<Swarm>> = shared.swarms.iter().map(|e| e.value().clone()).collect();
    swarms
        .into_iter()
        .find(|s| s.lock().segments.contains_key(key))
}

/// Serves a segment of a known swarm through the scheduler; `None` if the URL is not one.
async fn serve_segment(
    shared: &Arc<Shared>,
    url: &url::Url,
    range_header: Option<&str>,
) -> Option<Response<Body>> {
    let asked = match range_header {
        Some(h) => Some(parse_range(h)?),
        None => None,
    };
    let closed = match asked {
        Some(Asked::Closed(r)) => Some(r),
        _ => None,
    };
    // DASH URLs keyed under another URL (CDN alternatives, SegmentBase byte ranges).
    let routed = dash::route(shared, url, closed);
    let url = routed.as_ref().unwrap_or(url);
    // An EXT-X-BYTERANGE segment is keyed with its range; a whole segment without, and a
    // range of it is cut from the whole.
    let (key, slice) = match asked {
        Some(Asked::Closed(r)) => {
            let ranged = manifest::segment_key(url, Some(r));
            if find_swarm(shared, &ranged).is_some() {
                (ranged, None)
            } else {
                (
                    manifest::segment_key(url, None),
                    Some((r.offset, Some(r.length))),
                )
            }
        }
        Some(Asked::From(0)) | None => (manifest::segment_key(url, None), None),
        Some(Asked::From(n)) => (manifest::segment_key(url, None), Some((n, None))),
    };
    let (swarm, key) = match find_swarm(shared, &key) {
        Some(s) => (s, key),
        // A live DASH segment asked for before the node's ticker registered it.
        None => dash::register_requested(shared, url)?,
    };
    swarm.last_used_ms.store(shared.now_ms(), Ordering::Relaxed);
    let cfg = &shared.config;
    let deadline =
        swarm
            .lock()
            .player_deadline(crate::clock::now(), cfg.playback_margin, cfg.p2p_budget);
    tracing::debug!(
        me = %swarm.peer_id,
        %key,
        budget = ?deadline.saturating_duration_since(crate::clock::now()),
        "player request"
    );
    let outcome = fetch::obtain(shared, &swarm, &key, deadline, Mode::PeersThenOrigin).await;
    if outcome.is_ok() {
        swarm.lock().delivered_to_player(crate::clock::now(), &key);
    }
    read_ahead(shared, &swarm, &key);
    let (bytes, source) = match outcome {
        Ok(v) => v,
        Err(FetchError::Origin(OriginError::Status(s))) => {
            let status = StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_GATEWAY);
            return Some(text(status, format!("origin answered {s}")));
        }
        Err(e) => return Some(text(StatusCode::BAD_GATEWAY, e.to_string())),
    };
    let ctype = content_type_for(url);
    let from = slice.map_or(0, |(offset, _)| offset);
    let (status, body, content_range) = match slice {
        None => (StatusCode::OK, bytes, None),
        Some((offset, length)) => {
            let total = bytes.len() as u64;
            if offset >= total {
                let mut resp = text(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{total}")) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return Some(resp);
            }
            let end = length.map_or(total, |l| (offset + l).min(total));
            let cr = format!("bytes {offset}-{}/{total}", end - 1);
            (
                StatusCode::PARTIAL_CONTENT,
                bytes.slice(offset as usize..end as usize),
                Some(cr),
            )
        }
    };
    // A closed range that is exactly a keyed (EXT-X-BYTERANGE) segment.
    let exact = match asked {
        Some(Asked::Closed(r)) if slice.is_none() => Some(r),
        _ => None,
    };
    let status = if exact.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        status
    };
    let len = body.len() as u64;
    shared.metrics.delivered_from(source, from, len);
    let mut resp = full(status, body);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert("x-shoal-source", HeaderValue::from_static(source.as_str()));
    h.insert(
        "x-shoal-p2p-bytes",
        HeaderValue::from(source.p2p_bytes_in(from, len)),
    );
    let content_range = content_range
        .or_else(|| exact.map(|r| format!("bytes {}-{}/*", r.offset, r.offset + r.length - 1)));
    if let Some(cr) = content_range.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(header::CONTENT_RANGE, cr);
    }
    Some(resp)
}

/// VOD: fetch the next segments from peers while the player plays this one.
fn read_ahead(shared: &Arc<Shared>, swarm: &Arc<Swarm>, key: &SegmentKey) {
    let n = shared.config.vod_readahead;
    if n == 0 || !swarm.lock().ended {
        return;
    }
    for next in swarm.lock().following(key, n) {
        if shared.cache.contains(&swarm.id, &next) || swarm.in_flight().contains_key(&next) {
            continue;
        }
        let (shared, swarm) = (shared.clone(), swarm.clone());
        let deadline = crate::clock::now() + shared.config.p2p_budget * 2;
        tokio::spawn(async move {
            let _ = fetch::obtain(&shared, &swarm, &next, deadline, Mode::PeersOnly).await;
        });
    }
}

fn content_type_for(url: &url::Url) -> &'static str {
    let p = url.path().to_ascii_lowercase();
    match p.rsplit('.').next().unwrap_or("") {
        "ts" => "video/mp2t",
        "m4s" | "mp4" | "m4v" | "cmfv" => "video/mp4",
        "m4a" | "cmfa" => "audio/mp4",
        "aac" => "audio/aac",
        "vtt" | "webvtt" => "text/vtt",
        _ => "application/octet-stream",
    }
}

async fn serve_manifest(shared: &Arc<Shared>, url: &url::Url) -> Response<Body> {
    let max = shared.config.max_manifest_size.as_u64();
    let fetched = match shared.origin.fetch(url, None, max).await {
        Ok(f) => f,
        Err(OriginError::Status(s)) => {
            let status = StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_GATEWAY);
            return text(status, format!("origin answered {s} for the manifest"));
        }
        Err(e) => return text(StatusCode::BAD_GATEWAY, e.to_string()),
    };
    let n = fetched.body.len() as u64;
    shared.metrics.origin_bytes.inc_by(n);
    if url.path().to_ascii_lowercase().ends_with(".mpd") {
        return serve_mpd(shared, url, fetched);
    }
    let processed = hls::process(&fetched.body, url, &shared.mapper);
    let swarm = match &processed.playlist {
        Ok(hls::Playlist::Media(media)) => Some(learn(shared, url, media)),
        Ok(hls::Playlist::Master(_)) => None,
        Err(_) => {
            shared.metrics.manifest_parse_failures.inc();
            None
        }
    };
    match &swarm {
        Some(s) => s.unreported_cdn.fetch_add(n, Ordering::Relaxed),
        None => shared.unreported_cdn.fetch_add(n, Ordering::Relaxed),
    };
    let body = Bytes::from(processed.body.into_owned());
    shared.metrics.delivered(Source::Cdn, body.len() as u64);
    let mut resp = full(StatusCode::OK, body);
    let h = resp.headers_mut();
    let ctype = fetched
        .content_type
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
        .unwrap_or(HeaderValue::from_static("application/vnd.apple.mpegurl"));
    h.insert(header::CONTENT_TYPE, ctype);
    if let Some(cc) = fetched
        .cache_control
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
    {
        h.insert(header::CACHE_CONTROL, cc);
    }
    resp
}

/// Joins the media playlist's swarm, learns its segments and prefetches fresh ones.
fn learn(shared: &Arc<Shared>, url: &url::Url, media: &hls::Media) -> Arc<Swarm> {
    let id = manifest::swarm_id_for(url);
    let swarm = shared.join(id);
    swarm.last_used_ms.store(shared.now_ms(), Ordering::Relaxed);
    swarm.lock().manifest_url = Some(url.clone());
    learn_media(shared, &swarm, media);
    live_edge::ensure(shared, &swarm, url);
    swarm
}

/// Learns a media playlist's segments into `swarm` and prefetches the fresh ones.
fn learn_media(shared: &Arc<Shared>, swarm: &Arc<Swarm>, media: &hls::Media) {
    let target = Duration::from_secs_f64(media.target_duration.clamp(0.1, 3600.0));
    let fresh = swarm.lock().learn_segments(
        crate::clock::now(),
        media.segments.iter().map(|s| NewSegment {
            key: s.key.clone(),
            url: s.url.clone(),
            range: s.range,
            sequence: s.sequence,
            duration: (s.duration.is_finite() && s.duration > 0.0)
                .then(|| Duration::from_secs_f64(s.duration.min(3600.0))),
        }),
        media.ended,
        target,
    );
    prefetch(shared, swarm, fresh, Mode::Prefetch);
}

/// An MPD: rewritten, and every Representation's segments learned (see [`dash::learn`]).
fn serve_mpd(
    shared: &Arc<Shared>,
    url: &url::Url,
    fetched: crate::origin_client::Fetched,
) -> Response<Body> {
    let n = fetched.body.len() as u64;
    // Live segments are listed by the origin's clock, as far as `UTCTiming` told it.
    let now = shared.dash.clocks.origin_now(url);
    let processed = manifest::dash::process(&fetched.body, url, &shared.mapper, now);
    match &processed.mpd {
        Ok(mpd) => dash::learn(shared, url, mpd),
        Err(_) => {
            shared.metrics.manifest_parse_failures.inc();
        }
    }
    shared.unreported_cdn.fetch_add(n, Ordering::Relaxed);
    let body = Bytes::from(processed.body.into_owned());
    shared.metrics.delivered(Source::Cdn, body.len() as u64);
    let mut resp = full(StatusCode::OK, body);
    let h = resp.headers_mut();
    let ctype = fetched
        .content_type
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
        .unwrap_or(HeaderValue::from_static("application/dash+xml"));
    h.insert(header::CONTENT_TYPE, ctype);
    if let Some(cc) = fetched
        .cache_control
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
    {
        h.insert(header::CACHE_CONTROL, cc);
    }
    resp
}

/// Prefetches fresh live segments (rendezvous seeders from the origin at once, the others
/// from peers, then, unless `mode` is a [`Mode::Probe`], the origin past their turn).
fn prefetch(shared: &Arc<Shared>, swarm: &Arc<Swarm>, fresh: Vec<SegmentKey>, mode: Mode) {
    if swarm.lock().p2p_allowed {
        for key in fresh {
            let Some(deadline) = swarm.lock().prefetch_deadline(&key) else {
                continue;
            };
            let (shared, swarm) = (shared.clone(), swarm.clone());
            tokio::spawn(async move {
                let _ = fetch::obtain(&shared, &swarm, &key, deadline, mode).await;
            });
        }
    }
}

/// Headers forwarded from the player to the origin.
const FORWARD_REQUEST: [header::HeaderName; 5] = [
    header::RANGE,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_RANGE,
    header::ACCEPT,
];

/// Headers forwarded from the origin to the player.
const FORWARD_RESPONSE: [header::HeaderName; 8] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_RANGE,
    header::ACCEPT_RANGES,
    header::CACHE_CONTROL,
    header::ETAG,
    header::LAST_MODIFIED,
    header::EXPIRES,
];

/// Streams an origin response to the player unchanged (status, body, the headers above).
async fn pass_through(
    shared: &Arc<Shared>,
    method: Method,
    url: &url::Url,
    headers: &HeaderMap,
) -> Response<Body> {
    let mut req = shared.origin.http().request(method, url.clone());
    for name in FORWARD_REQUEST {
        if let Some(v) = headers.get(&name) {
            req = req.header(name, v);
        }
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return text(StatusCode::BAD_GATEWAY, format!("origin unreachable: {e}")),
    };
    let status = resp.status();
    let mut out_headers = HeaderMap::new();
    for name in FORWARD_RESPONSE {
        if let Some(v) = resp.headers().get(&name) {
            out_headers.insert(name, v.clone());
        }
    }
    let metrics = shared.metrics.clone();
    let shared2 = shared.clone();
    let stream = resp.bytes_stream().map_ok(move |chunk| {
        let n = chunk.len() as u64;
        metrics.origin_bytes.inc_by(n);
        metrics.delivered(Source::Cdn, n);
        shared2.unreported_cdn.fetch_add(n, Ordering::Relaxed);
        Frame::data(chunk)
    });
    let body = StreamBody::new(stream.map_err(|e| Box::new(e) as BoxError));
    let mut r = Response::new(BodyExt::boxed(body));
    *r.status_mut() = status;
    *r.headers_mut() = out_headers;
    r
}
