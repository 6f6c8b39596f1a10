//! A live MPEG-DASH encoder: ffmpeg's `dash` muxer turning a test pattern into a dynamic MPD
//! and fMP4 segments in real time.

use crate::archive::Archiver;
use crate::ffmpeg::{poll_async, test_source_args, FfmpegProcess, Rendition};
use crate::{io_err, Error, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How [`LiveDash`] encodes. The defaults keep CPU low: many processes share two cores.
#[derive(Debug, Clone, Copy)]
pub struct LiveDashOpts {
    /// `SegmentTimeline` (`-use_timeline 1`) or a plain `$Number$` template with `duration`.
    pub timeline: bool,
    /// Segment duration in seconds (`-seg_duration`).
    pub segment_secs: u32,
    /// Segments in the MPD's window (`-window_size`).
    pub window_size: u32,
    /// Picture width.
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Video bitrate in kbit/s (audio adds 48).
    pub video_kbps: u32,
    /// Name media segments by their start time (`seg-<id>-$Time$.m4s`, which needs a
    /// `timeline`) instead of their number (`seg-<id>-$Number%05d$.m4s`).
    pub by_time: bool,
}

impl Default for LiveDashOpts {
    fn default() -> Self {
        Self {
            timeline: false,
            segment_secs: 2,
            window_size: 6,
            width: 320,
            height: 180,
            fps: 25,
            video_kbps: 250,
            by_time: false,
        }
    }
}

/// A running ffmpeg that encodes a live DASH stream into `<out_dir>/live-dash/`, stopped on
/// drop: `manifest.mpd` (`type="dynamic"`, one video and one audio Representation with ids
/// `0` and `1`), `init-<id>.m4s` and `seg-<id>-<number>.m4s` (`$Number%05d$`), or
/// `seg-<id>-<time>.m4s` with [`LiveDashOpts::by_time`].
///
/// ffmpeg deletes segments that leave the window, so a watcher thread hard-links each finished
/// one into `live-dash-archive/` (outside what nginx serves); see [`LiveDash::archived`].
#[derive(Debug)]
pub struct LiveDash {
    /// `<out_dir>/live-dash`, where the MPD and segments are.
    pub dir: PathBuf,
    opts: LiveDashOpts,
    ffmpeg: FfmpegProcess,
    archive: Archiver,
}

impl LiveDash {
    /// URL path of the MPD when nginx serves `out_dir`.
    pub const MPD: &'static str = "/live-dash/manifest.mpd";

    /// Starts encoding now. Segments appear every `segment_secs`; see [`LiveDash::wait_ready`].
    pub fn start(out_dir: &Path, opts: LiveDashOpts) -> Result<Self> {
        if opts.segment_secs == 0 || opts.fps == 0 || opts.window_size == 0 {
            return Err(Error::Invalid {
                what: format!("{opts:?}"),
                detail: "segment_secs, fps and window_size must be positive".into(),
            });
        }
        let dir = out_dir.join("live-dash");
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let rendition = Rendition {
            width: opts.width,
            height: opts.height,
            fps: opts.fps,
            video_kbps: opts.video_kbps,
            gop: opts.fps * opts.segment_secs,
        };
        let mut args = test_source_args(&rendition, true, None);
        args.extend(rendition.encoder_args());
        args.extend(
            [
                "-f",
                "dash",
                "-seg_duration",
                &opts.segment_secs.to_string(),
                "-window_size",
                &opts.window_size.to_string(),
                // Keep deleted-from-the-MPD segments a while: players a little behind.
                "-extra_window_size",
                "10",
                "-use_template",
                "1",
                "-use_timeline",
                if opts.timeline { "1" } else { "0" },
                "-streaming",
                "0",
                "-init_seg_name",
                "init-$RepresentationID$.m4s",
                "-media_seg_name",
                if opts.by_time {
                    "seg-$RepresentationID$-$Time$.m4s"
                } else {
                    "seg-$RepresentationID$-$Number%05d$.m4s"
                },
                "-adaptation_sets",
                "id=0,streams=v id=1,streams=a",
                "manifest.mpd",
            ]
            .map(String::from),
        );
        let ffmpeg = FfmpegProcess::spawn("live DASH encoder", &dir, &args)?;
        // Finished files only (ffmpeg writes `*.tmp` and renames).
        let archive = Archiver::start(
            &dir,
            out_dir.join("live-dash-archive"),
            "live-dash-archiver",
            |n| (n.starts_with("seg-") || n.starts_with("init-")) && n.ends_with(".m4s"),
        )?;
        Ok(Self {
            dir,
            opts,
            ffmpeg,
            archive,
        })
    }

    /// The archived copy of the file a request path names (its last path segment, query
    /// dropped), which outlives ffmpeg's deletion of the original.
    pub fn archived(&self, uri: &str) -> PathBuf {
        self.archive.path_for(uri)
    }

    /// The encoder's process id.
    pub fn pid(&self) -> u32 {
        self.ffmpeg.pid()
    }

    /// The options it was started with.
    pub fn opts(&self) -> LiveDashOpts {
        self.opts
    }

    /// Finished media segments of the first (video) Representation written so far.
    pub fn video_segments(&self) -> Result<usize> {
        let entries = std::fs::read_dir(&self.archive.dir)
            .map_err(io_err(format!("reading {}", self.archive.dir.display())))?;
        Ok(entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("seg-0-"))
            .count())
    }

    /// Waits until the MPD exists and `n` video segments are finished.
    pub async fn wait_ready(&mut self, n: usize, timeout: Duration) -> Result<()> {
        let mpd = self.dir.join("manifest.mpd");
        let ready = poll_async(timeout, || {
            self.ffmpeg.ensure_running()?;
            Ok((mpd.is_file() && self.video_segments()? >= n).then_some(()))
        })
        .await?;
        ready.ok_or_else(|| Error::Timeout {
            what: format!("{} to write {n} segments", self.ffmpeg.what()),
            timeout,
            log: self.ffmpeg.log(),
        })
    }
}
