//! Proof by attack: three hostile nodes join a live swarm of three honest `shoal-edge`
//! proxies. One serves corrupted bytes for every segment, one announces `have` for segments it
//! does not hold, one stalls every transfer mid-body; the liar also floods the honest nodes'
//! peer servers with requests. Players must keep playing with zero corrupted bytes, and the
//! hostile nodes must be banned by the honest ones and, once reported, by the tracker.
//!
//! The hostile nodes are real peers: they announce to the real tracker with their own keys,
//! speak the real peer protocol over TLS, and fetch real segments from the real origin.

mod support;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use shoal::manifest::{hls, segment_key, swarm_id_for};
use shoal::peer::identity::NodeIdentity;
use shoal::peer::{PeerAddr, PeerClient, PeerClientConfig, Route};
use shoal::tracker_client::TrackerClient;
use shoal_proto::{AnnounceRequest, ByteCounters, HaveMsg, PeerId, SegmentKey, SwarmId};
use shoal_testkit::{FfmpegPlayer, LiveHls, LiveHlsOpts, Nginx, PlayerOpts, RecordingRelay};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{scrape, sum, Edge};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Evil {
    /// Serves every segment with every byte flipped (same length).
    Corrupt,
    /// Announces every segment, serves none (404).
    FalseHave,
    /// Sends headers and half the body, then goes silent.
    Stall,
}

type Body = BoxBody<Bytes, Infallible>;

struct Hostile {
    peer_id: PeerId,
    identity: NodeIdentity,
    /// Neighbours the tracker handed out (for the flood).
    neighbours: Arc<Mutex<Vec<PeerAddr>>>,
    /// Last announce status: `None` ok, `Some(code)` refused.
    refused: Arc<Mutex<Option<String>>>,
}

/// Segment keys the media playlist lists now.
async fn current_keys(http: &reqwest::Client, playlist: &url::Url) -> Vec<SegmentKey> {
    let Ok(r) = http.get(playlist.clone()).send().await else {
        return Vec::new();
    };
    let Ok(body) = r.bytes().await else {
        return Vec::new();
    };
    match hls::parse(&body, playlist) {
        Ok(hls::Playlist::Media(m)) => m.segments.into_iter().map(|s| s.key).collect(),
        _ => Vec::new(),
    }
}

async fn handle(
    mode: Evil,
    req: hyper::Request<hyper::body::Incoming>,
    playlist: url::Url,
    origin: String,
) -> hyper::Response<Body> {
    let http = reqwest::Client::new();
    let full = |status: u16, b: Bytes| {
        let mut r = hyper::Response::new(Full::new(b).boxed());
        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
        r
    };
    match Route::parse(req.uri().path()) {
        Ok(Route::Haves(_)) => {
            // A snapshot of everything listed, then every new segment as it appears.
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
            tokio::spawn(async move {
                let mut sent = std::collections::HashSet::new();
                let mut first = true;
                loop {
                    let keys = current_keys(&http, &playlist).await;
                    let lines: Vec<HaveMsg> = if first {
                        first = false;
                        vec![HaveMsg::Snapshot {
                            segments: keys.clone(),
                        }]
                    } else {
                        keys.iter()
                            .filter(|k| !sent.contains(*k))
                            .map(|k| HaveMsg::Have { segment: k.clone() })
                            .collect()
                    };
                    sent.extend(keys);
                    for l in lines {
                        let mut line = serde_json::to_vec(&l).unwrap();
                        line.push(b'\n');
                        if tx.send(Bytes::from(line)).await.is_err() {
                            return;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            });
            let stream = tokio_stream_from(rx).map(|b| Ok::<_, Infallible>(Frame::data(b)));
            hyper::Response::new(BodyExt::boxed(StreamBody::new(stream)))
        }
        Ok(Route::Segment(_, key)) => match mode {
            Evil::FalseHave => full(404, Bytes::new()),
            Evil::Corrupt | Evil::Stall => {
                let url = format!("http://{}", key.as_str());
                assert!(url.starts_with(&format!("http://{origin}/")));
                let Ok(r) = http.get(&url).send().await else {
                    return full(502, Bytes::new());
                };
                let real = r.bytes().await.unwrap_or_default();
                if mode == Evil::Corrupt {
                    let bad: Vec<u8> = real.iter().map(|b| !b).collect();
                    return full(200, Bytes::from(bad));
                }
                let len = real.len();
                let half = real.slice(..len / 2);
                let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
                tokio::spawn(async move {
                    let _ = tx.send(half).await;
                    tokio::time::sleep(Duration::from_secs(600)).await;
                    drop(tx);
                });
                let stream = tokio_stream_from(rx).map(|b| Ok::<_, Infallible>(Frame::data(b)));
                let mut r = hyper::Response::new(BodyExt::boxed(StreamBody::new(stream)));
                r.headers_mut()
                    .insert(hyper::header::CONTENT_LENGTH, len.into());
                r
            }
        },
        Err(_) => full(404, Bytes::new()),
    }
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> impl futures::Stream<Item = Bytes> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Starts a hostile node: its TLS peer server and its announce loop.
async fn hostile(
    mode: Evil,
    name: &str,
    tracker: &str,
    swarm: SwarmId,
    playlist: url::Url,
    origin: String,
) -> Hostile {
    let identity = NodeIdentity::generate().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor =
        tokio_rustls::TlsAcceptor::from(shoal::peer::tls::server_config(&identity).unwrap());
    {
        let (playlist, origin) = (playlist.clone(), origin.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, playlist, origin) =
                    (acceptor.clone(), playlist.clone(), origin.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req| {
                        let (playlist, origin) = (playlist.clone(), origin.clone());
                        async move { Ok::<_, Infallible>(handle(mode, req, playlist, origin).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
                });
            }
        });
    }
    let peer_id = PeerId::new(name).unwrap();
    let neighbours = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(Mutex::new(None));
    {
        let client = TrackerClient::new(tracker).unwrap();
        let (peer_id, fp, neighbours, refused) = (
            peer_id.clone(),
            identity.fingerprint().to_string(),
            neighbours.clone(),
            refused.clone(),
        );
        tokio::spawn(async move {
            let mut key = None;
            loop {
                let req = AnnounceRequest {
                    proto: 1,
                    peer_id: peer_id.clone(),
                    swarm_id: swarm.clone(),
                    addrs: vec![addr.to_string()],
                    fingerprint: fp.clone(),
                    counters: ByteCounters::default(),
                    connections: Default::default(),
                    numwant: 20,
                    client_version: "hostile/1".into(),
                    peer_key: key.clone(),
                    token: None,
                };
                match client.announce(&req).await {
                    Ok(resp) => {
                        key = Some(resp.peer_key);
                        *refused.lock().unwrap() = None;
                        let list = resp
                            .neighbours
                            .iter()
                            .filter_map(|n| {
                                Some(PeerAddr::tcp(
                                    n.addrs.first()?.parse().ok()?,
                                    n.fingerprint.clone(),
                                ))
                            })
                            .collect();
                        *neighbours.lock().unwrap() = list;
                    }
                    Err(shoal::tracker_client::TrackerError::Refused { code, .. }) => {
                        *refused.lock().unwrap() = Some(code);
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    Hostile {
        peer_id,
        identity,
        neighbours,
        refused,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_peers_are_banned_and_players_never_see_a_bad_byte() {
    let dir = tempfile::tempdir().unwrap();
    let mut live = LiveHls::start(dir.path(), LiveHlsOpts::default()).unwrap();
    let nginx = Nginx::start(dir.path()).unwrap();
    live.wait_ready(3, Duration::from_secs(60)).await.unwrap();
    let origin = nginx.host_port();
    let tracker = shoal_tracker::spawn(shoal_tracker::config::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        announce_interval: Duration::from_secs(1),
        origins: vec![origin.clone()],
        origin_schemes: vec![format!("{origin}=http")],
        ban_threshold: 2,
        ..Default::default()
    })
    .await
    .unwrap();
    let playlist: url::Url = format!("http://{origin}{}", LiveHls::MEDIA)
        .parse()
        .unwrap();
    let swarm = swarm_id_for(&playlist);

    // The hostile nodes join first, so every honest node meets them.
    let mut hostiles = Vec::new();
    for (mode, name) in [
        (Evil::Corrupt, "hostile-corrupt"),
        (Evil::FalseHave, "hostile-liar"),
        (Evil::Stall, "hostile-staller"),
    ] {
        let h = hostile(
            mode,
            name,
            &tracker.url(),
            swarm.clone(),
            playlist.clone(),
            origin.clone(),
        )
        .await;
        hostiles.push((mode, h));
    }

    let edges: Vec<Edge> = (0..3)
        // The hostile nodes speak peer protocol v1 (TLS over TCP), so the edges do too.
        .map(|_| Edge::start(&origin, Some(&tracker.url()), &["--peer-transport", "tcp"]))
        .collect();
    let relays: Vec<RecordingRelay> = edges
        .iter()
        .map(|e| RecordingRelay::start(e.addr).unwrap())
        .collect();
    let mut players: Vec<FfmpegPlayer> = relays
        .iter()
        .map(|r| {
            let url = r.url(&format!("/{origin}{}", LiveHls::MASTER));
            FfmpegPlayer::start_with(&url, PlayerOpts::new(Duration::from_secs(50))).unwrap()
        })
        .collect();

    // The liar also floods every honest peer server it is handed, bounded in time and count.
    let flood = {
        let liar = &hostiles[1].1;
        let client = PeerClient::new(PeerClientConfig::default(), liar.identity.clone());
        let neighbours = liar.neighbours.clone();
        let swarm = swarm.clone();
        let http = reqwest::Client::new();
        let playlist = playlist.clone();
        tokio::spawn(async move {
            let until = tokio::time::Instant::now() + Duration::from_secs(30);
            let mut sent = 0u64;
            while tokio::time::Instant::now() < until && sent < 200_000 {
                let targets = neighbours.lock().unwrap().clone();
                let keys = current_keys(&http, &playlist).await;
                let mut batch = futures::stream::FuturesUnordered::new();
                for t in targets.iter().filter(|t| !t.fingerprint.is_empty()) {
                    for k in keys.iter().chain(std::iter::once(&segment_key(
                        &"http://nowhere.invalid/x.ts".parse().unwrap(),
                        None,
                    ))) {
                        for _ in 0..8 {
                            let (c, t, s, k) =
                                (client.clone(), t.clone(), swarm.clone(), k.clone());
                            batch.push(async move {
                                let _ = c.fetch(&t, &s, &k, Duration::from_secs(1)).await;
                            });
                            sent += 1;
                        }
                    }
                }
                while batch.next().await.is_some() {}
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sent
        })
    };

    for (i, p) in players.iter_mut().enumerate() {
        let o = p.wait(Duration::from_secs(120)).await.unwrap();
        assert!(o.success(), "player {i} failed:\n{}", o.stderr);
        assert!(
            o.error_lines().is_empty(),
            "player {i}: {:?}",
            o.error_lines()
        );
    }
    let flooded = flood.await.unwrap();
    eprintln!("flood: {flooded} requests sent to honest peer servers");
    assert!(flooded > 0, "the flood reached nobody");

    // Zero corrupted bytes: every segment every player got equals the origin's.
    for (i, relay) in relays.iter().enumerate() {
        let segs: Vec<_> = relay
            .records()
            .into_iter()
            .filter(|r| r.uri.contains(".ts") && (r.status == 200 || r.status == 206))
            .collect();
        assert!(
            segs.len() >= 15,
            "player {i} got only {} segments",
            segs.len()
        );
        for r in segs {
            assert!(
                r.matches_file(&live.archived(&r.uri)).unwrap(),
                "player {i} got corrupted bytes for {}",
                r.uri
            );
        }
    }

    // Every honest node caught the corrupter and banned what misbehaved.
    for (i, e) in edges.iter().enumerate() {
        let m = e.metrics().await;
        let integrity = sum(&m, "shoal_edge_integrity_failures_total");
        let banned = sum(&m, "shoal_edge_peers_banned_total");
        eprintln!(
            "edge {i}: integrity failures {integrity}, peers banned {banned}, p2p {} B, cdn {} B",
            sum(&m, "shoal_edge_bytes_total{source=\"p2p\"}"),
            sum(&m, "shoal_edge_bytes_total{source=\"cdn\"}")
        );
        assert!(integrity >= 1.0, "edge {i} never met the corrupter");
        assert!(banned >= 1.0, "edge {i} banned nobody");
    }
    // Reported by several honest nodes, the corrupter is banned at the tracker too.
    let t = scrape(&format!("{}/metrics", tracker.url())).await;
    assert!(
        sum(&t, "shoal_tracker_banned_peers") >= 1.0,
        "tracker banned nobody"
    );
    let corrupt = &hostiles[0].1;
    let banned =
        shoal_testkit::poll_until(Duration::from_secs(10), Duration::from_millis(200), || {
            let refused = corrupt.refused.lock().unwrap().as_deref() == Some("banned");
            async move { refused.then_some(()) }
        })
        .await;
    assert!(
        banned.is_some(),
        "the tracker still accepts {}: {:?}",
        corrupt.peer_id,
        corrupt.refused.lock().unwrap()
    );
    drop(live);
}
