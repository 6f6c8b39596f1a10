//! ffmpeg plays through nginx, and the relay records hashes equal to the origin's files.

use shoal_testkit::{encode_vod_ladder, FfmpegPlayer, Nginx, Record, RecordingRelay, VodLadder};
use std::time::Duration;

const PLAY_TIMEOUT: Duration = Duration::from_secs(60);

/// Every complete 2xx response equals the bytes of the file (or range) nginx serves.
fn assert_identical_to_origin(nginx: &Nginx, records: &[Record]) {
    for r in records.iter().filter(|r| r.complete && r.status / 100 == 2) {
        assert!(r.matches_file(&nginx.file_for(&r.uri)).unwrap(), "{r:?}");
    }
}

#[tokio::test]
async fn player_plays_vod_master_through_nginx_without_errors() -> anyhow::Result<()> {
    let out = tempfile::tempdir()?;
    let ladder = encode_vod_ladder(out.path())?;
    let nginx = Nginx::start(out.path())?;
    let mut player = FfmpegPlayer::start(&nginx.url(VodLadder::MASTER), ladder.duration)?;
    let outcome = player.wait(PLAY_TIMEOUT).await?;
    assert!(outcome.success(), "{}", outcome.stderr);
    assert!(outcome.error_lines().is_empty(), "{}", outcome.stderr);
    assert!(outcome.output_bytes > 100_000, "{outcome:?}");
    let log = nginx.requests()?;
    // ffmpeg asks for `Range: bytes=0-` every time, so nginx answers 206.
    assert!(
        log.iter().all(|e| [200, 206].contains(&e.status)),
        "{log:?}"
    );
    assert!(log.iter().any(|e| e.uri.ends_with(".m4s")), "{log:?}");
    Ok(())
}

#[tokio::test]
async fn relay_records_what_the_player_received() -> anyhow::Result<()> {
    let out = tempfile::tempdir()?;
    encode_vod_ladder(out.path())?;
    let nginx = Nginx::start(out.path())?;
    let relay = RecordingRelay::start(nginx.addr)?;
    for playlist in [VodLadder::FMP4, VodLadder::SINGLE_FILE] {
        let mut player = FfmpegPlayer::start(&relay.url(playlist), Duration::from_secs(6))?;
        let outcome = player.wait(PLAY_TIMEOUT).await?;
        assert!(outcome.success(), "{}", outcome.stderr);
        assert!(outcome.error_lines().is_empty(), "{}", outcome.stderr);
    }
    let records = relay.records();
    let complete = |suffix: &str| {
        records
            .iter()
            .filter(|r| r.complete && r.uri.ends_with(suffix))
            .count()
    };
    assert!(complete("init.mp4") >= 1, "{records:#?}");
    assert!(complete(".m4s") >= 3, "{records:#?}");
    let byte_ranges = records
        .iter()
        .filter(|r| r.complete && r.uri.ends_with("single/stream.ts"))
        .filter(|r| {
            r.content_range
                .as_deref()
                .is_some_and(|c| !c.starts_with("bytes 0-"))
        })
        .count();
    assert!(byte_ranges >= 2, "{records:#?}");
    assert_identical_to_origin(&nginx, &records);
    // ... and the comparison does notice a difference.
    let seg = records.iter().find(|r| r.uri.ends_with(".m4s")).unwrap();
    std::fs::write(nginx.file_for(&seg.uri), b"other bytes")?;
    assert!(!seg.matches_file(&nginx.file_for(&seg.uri))?);

    // The relay is a relay: each whole response it forwarded is one nginx sent.
    let log = nginx
        .wait_for_requests(records.len(), Duration::from_secs(10))
        .await?;
    for r in records.iter().filter(|r| r.complete) {
        assert!(
            log.iter().any(|e| e.uri == r.uri
                && e.status == r.status
                && e.range == r.range
                && e.body_bytes == r.body_len),
            "{r:?} not in {log:#?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn relay_answers_502_and_records_it_when_upstream_is_down() -> anyhow::Result<()> {
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], shoal_testkit::free_port()));
    let relay = RecordingRelay::start(dead)?;
    let resp = reqwest::get(relay.url("/live/x.ts?a=1")).await?;
    assert_eq!(resp.status(), 502);
    let records = relay.records();
    assert_eq!(records.len(), 1);
    assert_eq!(
        (
            records[0].uri.as_str(),
            records[0].status,
            records[0].body_len
        ),
        ("/live/x.ts?a=1", 502, 0)
    );
    Ok(())
}
