//! A VOD ladder, encoded once and shared by every test.

use crate::ffmpeg::{run_to_end, test_source_args, write_master, Rendition};
use crate::{io_err, sha256_hex, Error, Result};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

const SECONDS: u32 = 20;
const SEGMENT_SECS: u32 = 2;
const FPS: u32 = 25;

/// Rendition A: fMP4 segments with an `EXT-X-MAP` init segment.
const FMP4: Rendition = Rendition {
    width: 426,
    height: 240,
    fps: FPS,
    video_kbps: 400,
    gop: FPS * SEGMENT_SECS,
};
/// Rendition B (and the single-file one): MPEG-TS segments.
const TS: Rendition = Rendition {
    width: 320,
    height: 180,
    fps: FPS,
    video_kbps: 250,
    gop: FPS * SEGMENT_SECS,
};

/// A VOD ladder copied into `<out_dir>/vod/`:
///
/// - `vod/master.m3u8` lists both renditions with `BANDWIDTH`, `RESOLUTION`, `CODECS`;
/// - `vod/fmp4/stream.m3u8`: 426x240, fMP4 `.m4s` segments and `EXT-X-MAP:URI="init.mp4"`;
/// - `vod/ts/stream.m3u8`: 320x180, MPEG-TS `.ts` segments;
/// - `vod/single/stream.m3u8`: 320x180 in one `stream.ts`, segments as `EXT-X-BYTERANGE`s
///   (not in the master playlist);
/// - `vod/dash/manifest.mpd`: the 320x180 content as static DASH, video and audio adaptation
///   sets, `SegmentTemplate` with `$Number$` (`init-<id>.m4s`, `chunk-<id>-<number>.m4s`).
///
/// HLS playlists are `-hls_playlist_type vod`; all is 20 s long in 2 s segments.
#[derive(Debug, Clone)]
pub struct VodLadder {
    /// `<out_dir>/vod`.
    pub dir: PathBuf,
    /// Length of the content.
    pub duration: Duration,
    /// Duration of every segment but possibly the last.
    pub segment_duration: Duration,
}

impl VodLadder {
    /// URL path of the master playlist when nginx serves `out_dir`.
    pub const MASTER: &'static str = "/vod/master.m3u8";
    /// URL path of the fMP4 rendition's playlist.
    pub const FMP4: &'static str = "/vod/fmp4/stream.m3u8";
    /// URL path of the TS rendition's playlist.
    pub const TS: &'static str = "/vod/ts/stream.m3u8";
    /// URL path of the single-file, byte-range rendition's playlist.
    pub const SINGLE_FILE: &'static str = "/vod/single/stream.m3u8";
    /// URL path of the DASH manifest.
    pub const DASH: &'static str = "/vod/dash/manifest.mpd";
}

/// Puts the VOD ladder into `<out_dir>/vod/` (a copy, so a test may alter its files).
///
/// The encode runs once per machine and set of encoding parameters: the result is cached in
/// the system temp dir (moved into place atomically), so parallel test processes share it.
pub fn encode_vod_ladder(out_dir: &Path) -> Result<VodLadder> {
    static CACHE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let cached = CACHE
        .get_or_init(|| cached_encode().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| Error::Invalid {
            what: "encoding the VOD ladder".into(),
            detail: e.clone(),
        })?;
    let dir = out_dir.join("vod");
    copy_dir(cached, &dir)?;
    Ok(VodLadder {
        dir,
        duration: Duration::from_secs(SECONDS.into()),
        segment_duration: Duration::from_secs(SEGMENT_SECS.into()),
    })
}

fn ffmpeg_args() -> Vec<String> {
    let mut args = test_source_args(&FMP4, false, Some(SECONDS));
    let hls = |extra: &[&str], playlist: &str| {
        let mut a: Vec<String> = [
            "-f",
            "hls",
            "-hls_time",
            &SEGMENT_SECS.to_string(),
            "-hls_playlist_type",
            "vod",
            "-hls_flags",
            "independent_segments",
        ]
        .map(String::from)
        .to_vec();
        a.extend(extra.iter().map(|s| s.to_string()));
        a.push(playlist.into());
        a
    };
    args.extend(FMP4.encoder_args());
    args.extend(hls(
        &[
            "-hls_segment_type",
            "fmp4",
            "-hls_fmp4_init_filename",
            "init.mp4",
            "-hls_segment_filename",
            "fmp4/seg_%05d.m4s",
        ],
        "fmp4/stream.m3u8",
    ));
    args.extend(TS.encoder_args());
    args.extend(hls(
        &["-hls_segment_filename", "ts/seg_%05d.ts"],
        "ts/stream.m3u8",
    ));
    args.extend(TS.encoder_args());
    args.extend(hls(
        &["-hls_flags", "independent_segments+single_file"],
        "single/stream.m3u8",
    ));
    args.extend(TS.encoder_args());
    args.extend(
        [
            "-f",
            "dash",
            "-seg_duration",
            &SEGMENT_SECS.to_string(),
            "-use_template",
            "1",
            "-use_timeline",
            "0",
            "-init_seg_name",
            "init-$RepresentationID$.m4s",
            "-media_seg_name",
            "chunk-$RepresentationID$-$Number%05d$.m4s",
            "-adaptation_sets",
            "id=0,streams=v id=1,streams=a",
            "dash/manifest.mpd",
        ]
        .map(String::from),
    );
    args
}

/// Encodes into a fresh temp dir and renames it to a name derived from the arguments.
fn cached_encode() -> Result<PathBuf> {
    let args = ffmpeg_args();
    let key = sha256_hex(args.join(" ").as_bytes());
    let target = std::env::temp_dir().join(format!("shoal-testkit-vod-{}", &key[..16]));
    if target.join("master.m3u8").is_file() {
        return Ok(target);
    }
    let tmp = tempfile::Builder::new()
        .prefix("shoal-testkit-vod-encoding-")
        .tempdir()
        .map_err(io_err("creating a temp dir"))?;
    for sub in ["fmp4", "ts", "single", "dash"] {
        std::fs::create_dir(tmp.path().join(sub)).map_err(io_err("creating a temp dir"))?;
    }
    run_to_end("VOD ladder encoder", tmp.path(), &args)?;
    // Written last: its presence marks a complete ladder.
    write_master(
        &tmp.path().join("master.m3u8"),
        &[("fmp4/stream.m3u8", FMP4), ("ts/stream.m3u8", TS)],
    )?;
    let tmp = tmp.keep();
    if let Err(e) = std::fs::rename(&tmp, &target) {
        // Another process got there first; its ladder is as good as ours.
        let _ = std::fs::remove_dir_all(&tmp);
        if !target.join("master.m3u8").is_file() {
            return Err(io_err(format!("moving the ladder to {}", target.display()))(e));
        }
    }
    Ok(target)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(io_err(format!("creating {}", to.display())))?;
    let entries = std::fs::read_dir(from).map_err(io_err(format!("listing {}", from.display())))?;
    for entry in entries {
        let entry = entry.map_err(io_err(format!("listing {}", from.display())))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            copy_dir(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(io_err(format!("copying {}", src.display())))?;
        }
    }
    Ok(())
}
