//! The live encoder produces a growing playlist whose segments nginx serves, and a player
//! can follow it from the master playlist.

use shoal_testkit::{FfmpegPlayer, LiveHls, LiveHlsOpts, Nginx, RecordingRelay, SegmentFormat};
use std::time::Duration;

const READY: Duration = Duration::from_secs(30);

#[tokio::test]
async fn live_ts_playlist_grows_and_nginx_serves_its_segments() -> anyhow::Result<()> {
    let out = tempfile::tempdir()?;
    let mut live = LiveHls::start(out.path(), LiveHlsOpts::default())?;
    let nginx = Nginx::start(out.path())?;
    live.wait_ready(2, READY).await?;
    let first = live.segments()?;
    live.wait_ready(4, READY).await?;
    let later = live.segments()?;
    assert!(
        later.len() > first.len() && later.starts_with(&first),
        "{first:?} -> {later:?}"
    );

    let http = reqwest::Client::new();
    let master = http
        .get(nginx.url(LiveHls::MASTER))
        .send()
        .await?
        .text()
        .await?;
    assert!(master.contains("#EXT-X-STREAM-INF:") && master.contains("\nstream.m3u8\n"));
    let media = http.get(nginx.url(LiveHls::MEDIA)).send().await?;
    assert_eq!(media.headers()["cache-control"], "no-cache");
    let media = media.text().await?;
    assert!(!media.contains("#EXT-X-ENDLIST"), "{media}");
    assert!(!media.contains("#EXT-X-MAP"), "{media}");
    for uri in later {
        assert!(uri.ends_with(".ts"), "{uri}");
        let resp = http.get(nginx.url(&format!("/live/{uri}"))).send().await?;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "video/mp2t");
        let body = resp.bytes().await?;
        assert_eq!(body, std::fs::read(live.dir.join(&uri))?);
    }
    Ok(())
}

#[tokio::test]
async fn player_follows_live_fmp4_from_the_master_playlist() -> anyhow::Result<()> {
    let out = tempfile::tempdir()?;
    let opts = LiveHlsOpts {
        format: SegmentFormat::Fmp4,
        ..LiveHlsOpts::default()
    };
    let mut live = LiveHls::start(out.path(), opts)?;
    let nginx = Nginx::start(out.path())?;
    let relay = RecordingRelay::start(nginx.addr)?;
    live.wait_ready(3, READY).await?;
    let media = std::fs::read_to_string(live.dir.join("stream.m3u8"))?;
    assert!(media.contains("#EXT-X-MAP:URI=\"init.mp4\""), "{media}");

    // Longer than the 3 segments the player starts behind the live edge: it must wait for
    // new ones to appear.
    let mut player = FfmpegPlayer::start(&relay.url(LiveHls::MASTER), Duration::from_secs(8))?;
    let outcome = player.wait(Duration::from_secs(60)).await?;
    assert!(outcome.success(), "{}", outcome.stderr);
    assert!(outcome.error_lines().is_empty(), "{}", outcome.stderr);
    assert!(outcome.output_bytes > 0);

    let records = relay.records();
    let segments: Vec<_> = records
        .iter()
        .filter(|r| r.complete && r.uri.ends_with(".m4s"))
        .collect();
    assert!(segments.len() >= 4, "{records:#?}");
    // Segments stay on disk after leaving the playlist, so all can be compared.
    for r in records
        .iter()
        .filter(|r| r.complete && !r.uri.ends_with(".m3u8"))
    {
        assert!(r.matches_file(&nginx.file_for(&r.uri))?, "{r:?}");
    }
    let playlist_polls = records.iter().filter(|r| r.uri == LiveHls::MEDIA).count();
    assert!(
        playlist_polls >= 2,
        "a live player reloads the playlist: {records:#?}"
    );
    Ok(())
}

#[test]
fn waiting_for_more_segments_than_the_playlist_holds_is_an_error() -> anyhow::Result<()> {
    let out = tempfile::tempdir()?;
    let mut live = LiveHls::start(out.path(), LiveHlsOpts::default())?;
    let err = live.wait_ready_blocking(7, READY).unwrap_err();
    assert!(err.to_string().contains("never lists more than 6"), "{err}");
    Ok(())
}
