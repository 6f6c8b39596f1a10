//! A dash.js-like player asks for a live `$Number$` segment the moment the template says it is
//! available, before the node's ticker has registered it. The node registers it on the request
//! and serves it through the scheduler; segments not yet available, or with absurd numbers,
//! pass through to the origin untouched.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use shoal::{Node, NodeConfig};
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;

/// Segment duration, seconds.
const SEG: f64 = 2.0;

fn datetime(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An origin whose MPD puts segment 9 at `ast + 20 s`, and which answers 200 for every
/// segment path (the node, not the origin, decides what is available). With `ahead`, the
/// origin's clock runs that far ahead of the machine's, and its MPD says so in a `direct`
/// `UTCTiming` (the time at which it is served).
async fn origin(ast: SystemTime, ahead: Option<Duration>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mpd = move || {
        let timing = ahead.map_or(String::new(), |a| {
            format!(
                r#"<UTCTiming schemeIdUri="urn:mpeg:dash:utc:direct:2014" value="{}"/>"#,
                datetime(shoal::clock::wall() + a)
            )
        });
        format!(
            r#"<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic" availabilityStartTime="{}" minimumUpdatePeriod="PT500S" timeShiftBufferDepth="PT10S">
  <Period id="p0" start="PT0S"><AdaptationSet mimeType="video/mp4">
    <SegmentTemplate timescale="1000" duration="{}" startNumber="0" media="seg$Number$.m4s" initialization="init.mp4"/>
    <Representation id="v" bandwidth="100000"/>
  </AdaptationSet></Period>
  {timing}
</MPD>"#,
            datetime(ast),
            (SEG * 1000.0) as u64
        )
    };
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                let body = if req.uri().path().ends_with(".mpd") {
                    Bytes::from(mpd())
                } else {
                    Bytes::from(format!("media of {}", req.uri().path()))
                };
                async move { Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(body))) }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc),
            );
        }
    });
    addr
}

/// A node for the origin at `host` (no tracker: the scheduler's origin path is what is seen).
async fn node_for(host: &str) -> Node {
    Node::start(NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        peer_listen: "127.0.0.1:0".parse().unwrap(),
        origins: vec![host.to_string()],
        origin_schemes: vec![format!("{host}=http")],
        ..NodeConfig::default()
    })
    .await
    .unwrap()
}

/// The `x-shoal-source` of the proxy's answer for `url` (`None`: passed through).
async fn source_of(url: String) -> Option<String> {
    let r = reqwest::get(url).await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    r.headers()
        .get("x-shoal-source")
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_segment_asked_for_at_availability_goes_through_the_scheduler() {
    // Segment 9 is complete 0.9 s from now, so the ticker registers it 0.9 s from now; the
    // player asks before that, within the node's clock-skew allowance (1 s).
    let available = shoal::clock::wall() + Duration::from_millis(900);
    let ast = available - Duration::from_secs_f64(10.0 * SEG);
    let host = origin(ast, None).await.to_string();
    let node = node_for(&host).await;
    let proxied = |path: &str| {
        let u = url::Url::parse(&format!("http://{host}/live/{path}")).unwrap();
        node.player_url(&u).unwrap()
    };
    assert_eq!(source_of(proxied("m.mpd")).await, None);
    let asked = shoal::clock::wall();
    assert_eq!(source_of(proxied("seg9.m4s")).await.as_deref(), Some("cdn"));
    assert!(
        asked < available,
        "too slow to ask before the ticker: the test proves nothing"
    );
    // Listed by the MPD: known already.
    assert_eq!(source_of(proxied("seg8.m4s")).await.as_deref(), Some("cdn"));
    // Two segments ahead, out of the time-shift buffer, or absurd: passed through.
    for path in [
        "seg11.m4s",
        "seg1.m4s",
        "seg18446744073709551615.m4s",
        "seg99999999999999999999999999.m4s",
        "seg009.m4s",
    ] {
        assert_eq!(source_of(proxied(path)).await, None, "{path}");
    }
    node.shutdown().await;
}

#[tokio::test]
async fn a_node_whose_clock_lags_reads_live_templates_by_the_origins_utc_timing() {
    // The origin's clock is 30 s ahead of this machine's. By the origin's clock segment 9 is
    // complete 0.9 s from now: a player that set its clock by the MPD's `UTCTiming` asks for
    // it now, which by the node's own clock is 30.9 s early.
    let ahead = Duration::from_secs(30);
    let available = shoal::clock::wall() + ahead + Duration::from_millis(900);
    let ast = available - Duration::from_secs_f64(10.0 * SEG);
    let host = origin(ast, Some(ahead)).await.to_string();
    let node = node_for(&host).await;
    let proxied = |path: &str| {
        let u = url::Url::parse(&format!("http://{host}/live/{path}")).unwrap();
        node.player_url(&u).unwrap()
    };
    assert_eq!(source_of(proxied("m.mpd")).await, None);
    // Registered and scheduled, as by a node whose clock is right.
    assert_eq!(source_of(proxied("seg9.m4s")).await.as_deref(), Some("cdn"));
    assert_eq!(source_of(proxied("seg8.m4s")).await.as_deref(), Some("cdn"));
    // Still two segments ahead of the origin's clock: passed through.
    assert_eq!(source_of(proxied("seg11.m4s")).await, None);
    node.shutdown().await;
}
