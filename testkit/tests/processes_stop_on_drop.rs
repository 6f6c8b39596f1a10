//! Dropping a helper leaves no process behind: not running, not a zombie.

use shoal_testkit::{FfmpegPlayer, LiveHls, LiveHlsOpts, Nginx};
use std::path::Path;
use std::time::Duration;

fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn dropped_encoder_player_and_nginx_are_gone() -> anyhow::Result<()> {
    let out = tempfile::tempdir()?;
    let mut live = LiveHls::start(out.path(), LiveHlsOpts::default())?;
    let nginx = Nginx::start(out.path())?;
    live.wait_ready(1, Duration::from_secs(30)).await?;
    // A live stream never ends by itself: the player is still running when dropped.
    let player = FfmpegPlayer::start(&nginx.url(LiveHls::MASTER), Duration::from_secs(600))?;
    let pids = [live.pid(), nginx.pid(), player.pid()];
    assert!(pids.iter().all(|&p| exists(p)));
    drop(player);
    drop(nginx);
    drop(live);
    for pid in pids {
        assert!(!exists(pid), "process {pid} is still there");
    }
    Ok(())
}
