//! A live DASH stream whose segments are named by their start time (`$Time$` with a
//! `SegmentTimeline`, as ffmpeg writes it): the MPD lists only the segments made so far, and a
//! player learns the next one from its next MPD load. The node does not wait for that: once
//! the timeline repeats one duration, it assumes the cadence holds and fetches the next
//! segments as they become available, a bounded guess whose wrong answer costs a 404.
//!
//! Real ffmpeg encoder, real nginx origin, real tracker, two in-process nodes in one swarm:
//! each loads the MPD once, and nginx's access log shows what they fetched afterwards. Only
//! the node that seeds a guessed segment asks the origin for it; the other waits for peers, so
//! a wrong guess (audio timelines alternate durations) costs one 404, not one per viewer.

mod support;

use shoal_testkit::{LiveDash, LiveDashOpts, Nginx};
use std::time::Duration;
use support::{is_tracker, node_config, tracker_for, wait_until_met};

/// `(start, duration)` of each segment of the `n`th `SegmentTimeline` in `mpd`.
fn timeline(mpd: &str, n: usize) -> Vec<(u64, u64)> {
    let start = mpd
        .match_indices("<SegmentTimeline>")
        .nth(n)
        .expect("a SegmentTimeline")
        .0
        + "<SegmentTimeline>".len();
    let end = start + mpd[start..].find("</SegmentTimeline>").unwrap();
    let attr = |tag: &str, name: &str| {
        let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
        tag[at..].split('"').next()?.parse::<i64>().ok()
    };
    let mut out = Vec::new();
    let mut time = 0u64;
    for tag in mpd[start..end].split("<S").skip(1) {
        if let Some(t) = attr(tag, "t") {
            time = t as u64;
        }
        let d = attr(tag, "d").expect("S@d") as u64;
        let r = attr(tag, "r").unwrap_or(0);
        assert!(r >= 0, "this test reads closed timelines only");
        for _ in 0..=r {
            out.push((time, d));
            time += d;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_time_named_segments_are_fetched_without_an_mpd_reload() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LiveDashOpts {
        timeline: true,
        by_time: true,
        ..LiveDashOpts::default()
    };
    let mut live = LiveDash::start(dir.path(), opts).unwrap();
    let nginx = Nginx::start(dir.path()).unwrap();
    // Three segments: the video timeline then repeats its duration (`r` ≥ 1).
    live.wait_ready(3, Duration::from_secs(60)).await.unwrap();
    let origin = nginx.host_port();
    let tracker = tracker_for(&origin, Duration::from_secs(2)).await;
    let mpd_url = url::Url::parse(&nginx.url(LiveDash::MPD)).unwrap();
    let load =
        |url: url::Url| async move { reqwest::get(url).await.unwrap().text().await.unwrap() };
    let mut nodes = Vec::new();
    let mut proxied = Vec::new();
    for _ in 0..2 {
        let node = shoal::Node::start(node_config(&origin, &tracker.url()))
            .await
            .unwrap();
        let url = url::Url::parse(&node.player_url(&mpd_url).unwrap()).unwrap();
        load(url.clone()).await;
        nodes.push(node);
        proxied.push(url);
    }
    // Once each knows the other in both swarms (video, audio), one seeds each segment.
    wait_until_met(&nodes, 2).await;
    let before = nginx.requests().unwrap().len();
    let mut mpd = String::new();
    for url in &proxied {
        mpd = load(url.clone()).await;
    }
    let listed = timeline(&mpd, 0);
    let &(last, d) = listed.last().unwrap();
    let path = |t: u64| format!("/live-dash/seg-0-{t}.m4s");
    let guessed = [path(last + d), path(last + 2 * d)];
    let beyond = path(last + 3 * d);

    // Both guesses are fetched as they appear (2 s apart), with no MPD load in between.
    let seen = |uri: &str| {
        nginx
            .requests()
            .unwrap()
            .into_iter()
            .skip(before)
            // The tracker's digest service fetches on its own account.
            .filter(|r| r.uri == uri && !is_tracker(r))
            .collect::<Vec<_>>()
    };
    let fetched =
        shoal_testkit::poll_until(Duration::from_secs(20), Duration::from_millis(100), || {
            let all = guessed.iter().all(|g| !seen(g).is_empty());
            async move { all.then_some(()) }
        })
        .await;
    assert!(
        fetched.is_some(),
        "the node did not fetch {guessed:?} after the MPD listed up to {}; nginx saw {:?}",
        path(last),
        nginx.requests().unwrap()
    );
    for g in &guessed {
        let r = seen(g);
        assert_eq!(r.len(), 1, "{g}: {r:?}");
        assert_eq!(
            r[0].status, 200,
            "{g}: the cadence guess named a real segment"
        );
    }
    let mpd_loads = || {
        nginx
            .requests()
            .unwrap()
            .iter()
            .skip(before)
            .filter(|r| r.uri.ends_with(".mpd"))
            .count()
    };
    assert_eq!(
        mpd_loads(),
        2,
        "each node learned the segments from one MPD"
    );

    // The guess goes no further than two segments until a newer MPD confirms the timeline.
    let timescale: f64 = mpd
        .split("timescale=\"")
        .nth(1)
        .and_then(|v| v.split('"').next()?.parse().ok())
        .expect("the video SegmentTemplate's timescale");
    tokio::time::sleep(Duration::from_secs_f64(2.0 * d as f64 / timescale)).await;
    assert!(
        seen(&beyond).is_empty(),
        "{beyond} fetched on a guess past its bound"
    );

    // Audio guesses may miss (its durations alternate); whether right or wrong, the swarm
    // asks the origin once for each.
    let requests: Vec<_> = nginx.requests().unwrap().into_iter().skip(before).collect();
    for r in requests
        .iter()
        .filter(|r| r.uri.starts_with("/live-dash/seg-1-") && !is_tracker(r))
    {
        let asked = requests
            .iter()
            .filter(|o| o.uri == r.uri && !is_tracker(o))
            .count();
        assert_eq!(asked, 1, "{} asked of the origin {asked} times", r.uri);
    }

    // Each player's request for the first guess is served by its node, byte for byte, and
    // the origin sent it once for both.
    let want = std::fs::read(live.archived(&guessed[0])).unwrap();
    for url in &proxied {
        let next = url.join(&format!("seg-0-{}.m4s", last + d)).unwrap();
        let body = reqwest::get(next).await.unwrap().bytes().await.unwrap();
        assert!(
            body[..] == want[..],
            "{} differs from the origin",
            guessed[0]
        );
    }
    assert_eq!(seen(&guessed[0]).len(), 1, "fetched from the origin again");
    for node in nodes {
        node.shutdown().await;
    }
    drop(live);
}
