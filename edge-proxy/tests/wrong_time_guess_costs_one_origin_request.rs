//! A `$Time$` timeline that repeats one duration makes the nodes guess the next segments'
//! names before any MPD lists them. When the guess is wrong (the packager changed its cadence,
//! or stopped), the origin answers 404, and that must cost the origin one request per guessed
//! name for the whole swarm, not one per viewer: only the node that seeds the segment asks the
//! origin, the others wait for a peer that never announces it.
//!
//! Real nginx serves files this test publishes as a packager would (segments, then the MPD
//! that lists them), so it can stop publishing on cue; the tracker and the two nodes are the
//! real ones, over loopback sockets. nginx's access log says who asked for what.

mod support;

use shoal_testkit::{AccessLogEntry, Nginx};
use std::path::Path;
use std::time::{Duration, SystemTime};
use support::{is_tracker, node_config, tracker_for, wait_until_met};

/// Segment duration, milliseconds (timescale 1000).
const SEG_MS: u64 = 1000;

/// Media milliseconds complete at `now` for a stream that started at `ast`, on the grid.
fn complete_ms(ast: SystemTime) -> u64 {
    let ms = shoal::clock::wall()
        .duration_since(ast)
        .unwrap()
        .as_millis() as u64;
    ms / SEG_MS * SEG_MS
}

/// Publishes into `root/live/` what a packager has made by media time `complete`: every 1 s
/// segment `seg<t>.m4s` before it, then the MPD listing them in one repeating `S`.
fn publish(root: &Path, ast: SystemTime, complete: u64) {
    let dir = root.join("live");
    std::fs::create_dir_all(&dir).unwrap();
    for t in (0..complete).step_by(SEG_MS as usize) {
        let file = dir.join(format!("seg{t}.m4s"));
        if !file.exists() {
            std::fs::write(file, format!("media at {t}")).unwrap();
        }
    }
    let mpd = format!(
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
        complete / SEG_MS - 1
    );
    // Written aside and renamed, as packagers do: nginx never serves half an MPD.
    std::fs::write(dir.join("m.mpd.tmp"), mpd).unwrap();
    std::fs::rename(dir.join("m.mpd.tmp"), dir.join("m.mpd")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_guess_is_asked_of_the_origin_once_per_swarm() {
    let dir = tempfile::tempdir().unwrap();
    let ast = shoal::clock::wall() - Duration::from_secs(6);
    publish(dir.path(), ast, complete_ms(ast));
    let nginx = Nginx::start(dir.path()).unwrap();
    let host = nginx.host_port();
    let tracker = tracker_for(&host, Duration::from_secs(1)).await;
    let mpd_url = url::Url::parse(&nginx.url("/live/m.mpd")).unwrap();
    let load = |url: String| async move {
        reqwest::get(url).await.unwrap().error_for_status().unwrap();
    };
    let mut nodes = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..2 {
        let node = shoal::Node::start(node_config(&host, &tracker.url()))
            .await
            .unwrap();
        let url = node.player_url(&mpd_url).unwrap();
        load(url.clone()).await;
        nodes.push(node);
        urls.push(url);
    }
    // Once each knows the other, one of them seeds each segment.
    wait_until_met(&nodes, 1).await;

    // Just after a segment is complete, the packager publishes it and its MPD, both nodes
    // load that MPD, and the packager stops: nothing past what it lists will ever exist.
    while shoal::clock::wall()
        .duration_since(ast)
        .unwrap()
        .as_millis() as u64
        % SEG_MS
        > 200
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listed_end = complete_ms(ast);
    publish(dir.path(), ast, listed_end);
    let before = nginx.requests().unwrap().len();
    for url in &urls {
        load(url.clone()).await;
    }
    assert_eq!(complete_ms(ast), listed_end, "too slow: the MPDs differ");

    // The two guesses come due 1 s apart (plus the nodes' margin); a node that does not seed
    // a segment gives up on peers after its turn (1.5 s for the second rank at 1 s segments).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let requests: Vec<AccessLogEntry> = nginx
        .requests()
        .unwrap()
        .into_iter()
        .skip(before)
        .filter(|r| !is_tracker(r))
        .collect();
    let asked = |t: u64| {
        let path = format!("/live/seg{t}.m4s");
        let r: Vec<_> = requests.iter().filter(|r| r.uri == path).collect();
        assert!(r.iter().all(|r| r.status == 404), "{path} exists: {r:?}");
        r.len()
    };
    for t in [listed_end, listed_end + SEG_MS] {
        assert_eq!(
            asked(t),
            1,
            "seg{t}: a wrong guess asked of the origin by more than its seeder (or by none)"
        );
    }
    assert_eq!(asked(listed_end + 2 * SEG_MS), 0, "guessed past the bound");
    for node in nodes {
        node.shutdown().await;
    }
}
