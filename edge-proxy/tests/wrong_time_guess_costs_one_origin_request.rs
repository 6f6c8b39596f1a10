//! A `$Time$` timeline that repeats one duration makes the nodes guess the next segments'
//! names before any MPD lists them. When the guess is wrong (the packager changed its cadence,
//! or stopped), the origin answers 404, and that must cost the origin one request per guessed
//! name for the whole swarm, not one per viewer: only the node that seeds the segment asks the
//! origin, the others wait for a peer that never announces it.
//!
//! The origin is a small HTTP server of the test's own (it has to stop publishing on cue,
//! which nginx serving ffmpeg's files cannot be told to do); the tracker and the two nodes are
//! the real ones, over loopback sockets.

mod support;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use support::{node_config, tracker_for, wait_until_met};
use tokio::net::TcpListener;

/// Segment duration, milliseconds (timescale 1000).
const SEG_MS: u64 = 1000;

/// A live origin whose 1 s segments `seg<t>.m4s` start at `ast`: its MPD lists every segment
/// complete by now in one repeating `S`. Segments starting at `cut` or later are never
/// published (404). Counts the requests per path.
struct Origin {
    addr: std::net::SocketAddr,
    ast: SystemTime,
    cut: Arc<AtomicU64>,
    asked: Arc<Mutex<HashMap<String, usize>>>,
}

impl Origin {
    async fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ast = SystemTime::now() - Duration::from_secs(6);
        let cut = Arc::new(AtomicU64::new(u64::MAX));
        let asked: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let (c, a) = (cut.clone(), asked.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (cut, asked) = (c.clone(), a.clone());
                let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let path = req.uri().path().to_owned();
                    *asked.lock().unwrap().entry(path.clone()).or_default() += 1;
                    let complete = complete_ms(ast);
                    let reply = if path.ends_with(".mpd") {
                        (200, mpd(ast, complete))
                    } else {
                        let t = path
                            .strip_prefix("/live/seg")
                            .and_then(|p| p.strip_suffix(".m4s"))
                            .and_then(|t| t.parse::<u64>().ok());
                        match t {
                            Some(t)
                                if t % SEG_MS == 0
                                    && t + SEG_MS <= complete
                                    && t < cut.load(Ordering::SeqCst) =>
                            {
                                (200, format!("media at {t}"))
                            }
                            _ => (404, "not published".into()),
                        }
                    };
                    async move {
                        let mut r = hyper::Response::new(Full::new(Bytes::from(reply.1)));
                        *r.status_mut() = hyper::StatusCode::from_u16(reply.0).unwrap();
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc),
                );
            }
        });
        Origin {
            addr,
            ast,
            cut,
            asked,
        }
    }

    fn asked(&self, path: &str) -> usize {
        self.asked.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

/// Media milliseconds complete at the origin now, on the segment grid.
fn complete_ms(ast: SystemTime) -> u64 {
    let ms = SystemTime::now().duration_since(ast).unwrap().as_millis() as u64;
    ms / SEG_MS * SEG_MS
}

fn mpd(ast: SystemTime, complete: u64) -> String {
    let n = complete / SEG_MS;
    format!(
        r#"<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic" availabilityStartTime="{}" minimumUpdatePeriod="PT1S" timeShiftBufferDepth="PT30S">
  <Period id="p0" start="PT0S"><AdaptationSet mimeType="video/mp4">
    <SegmentTemplate timescale="1000" media="seg$Time$.m4s" initialization="init.mp4">
      <SegmentTimeline><S t="0" d="{SEG_MS}" r="{}"/></SegmentTimeline>
    </SegmentTemplate>
    <Representation id="v" bandwidth="100000"/>
  </AdaptationSet></Period>
</MPD>"#,
        humantime::format_rfc3339_millis(ast),
        n - 1
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_guess_is_asked_of_the_origin_once_per_swarm() {
    let origin = Origin::start().await;
    let host = origin.addr.to_string();
    let tracker = tracker_for(&host, Duration::from_secs(1)).await;
    let mpd_url = url::Url::parse(&format!("http://{host}/live/m.mpd")).unwrap();
    let mut nodes = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..2 {
        let node = shoal::Node::start(node_config(&host, &tracker.url()))
            .await
            .unwrap();
        let url = node.player_url(&mpd_url).unwrap();
        reqwest::get(&url)
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
        nodes.push(node);
        urls.push(url);
    }
    // Once each knows the other, one of them seeds each segment.
    wait_until_met(&nodes, 1.0).await;

    // Just after a segment is complete, both nodes load the MPD, and the packager stops:
    // nothing past what it lists will ever be published.
    while SystemTime::now()
        .duration_since(origin.ast)
        .unwrap()
        .as_millis() as u64
        % SEG_MS
        > 200
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listed_end = complete_ms(origin.ast);
    origin.cut.store(listed_end, Ordering::SeqCst);
    for url in &urls {
        reqwest::get(url).await.unwrap().error_for_status().unwrap();
    }
    assert_eq!(
        complete_ms(origin.ast),
        listed_end,
        "too slow: the MPDs differ"
    );

    // The two guesses come due 1 s apart (plus the nodes' margin); a node that does not seed
    // a segment gives up on peers after its turn (1.5 s for the second rank at 1 s segments).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let path = |t: u64| format!("/live/seg{t}.m4s");
    for t in [listed_end, listed_end + SEG_MS] {
        assert_eq!(
            origin.asked(&path(t)),
            1,
            "{}: a wrong guess asked of the origin by more than its seeder (or by none)",
            path(t)
        );
    }
    assert_eq!(
        origin.asked(&path(listed_end + 2 * SEG_MS)),
        0,
        "guessed past the bound"
    );
    for node in nodes {
        node.shutdown().await;
    }
}
