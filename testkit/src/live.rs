//! A live HLS encoder: ffmpeg turning a test pattern into segments in real time.

use crate::archive::Archiver;
use crate::ffmpeg::{
    playlist_uris, poll_async, poll_blocking, test_source_args, write_master, FfmpegProcess,
    Rendition,
};
use crate::{io_err, Error, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The container of media segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SegmentFormat {
    /// MPEG-TS segments (`.ts`).
    #[default]
    Ts,
    /// Fragmented MP4 segments (`.m4s`) with an `EXT-X-MAP` init segment (`init.mp4`).
    Fmp4,
}

/// How [`LiveHls`] encodes. The defaults keep CPU low: many processes share two cores.
#[derive(Debug, Clone, Copy)]
pub struct LiveHlsOpts {
    /// Segment container.
    pub format: SegmentFormat,
    /// Target (and, with keyframes every segment, exact) segment duration in seconds.
    pub segment_secs: u32,
    /// Segments listed in the media playlist (`-hls_list_size`).
    pub list_size: u32,
    /// Picture width.
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Video bitrate in kbit/s (audio adds 48).
    pub video_kbps: u32,
}

impl Default for LiveHlsOpts {
    fn default() -> Self {
        Self {
            format: SegmentFormat::Ts,
            segment_secs: 2,
            list_size: 6,
            width: 320,
            height: 180,
            fps: 25,
            video_kbps: 250,
        }
    }
}

/// A running ffmpeg that encodes a live HLS stream into `<out_dir>/live/`, stopped on drop.
///
/// Writes `live/master.m3u8` (one variant) and `live/stream.m3u8`. ffmpeg deletes segments
/// soon after they leave the playlist (as a live origin does), so a watcher thread hard-links
/// every finished segment into `live-archive/` (outside what nginx serves): a test can hash
/// what a player fetched long after, with [`LiveHls::archived`].
#[derive(Debug)]
pub struct LiveHls {
    /// `<out_dir>/live`, where the playlists and segments are.
    pub dir: PathBuf,
    opts: LiveHlsOpts,
    ffmpeg: FfmpegProcess,
    archive: Archiver,
}

impl LiveHls {
    /// URL path of the master playlist when nginx serves `out_dir`.
    pub const MASTER: &'static str = "/live/master.m3u8";
    /// URL path of the media playlist when nginx serves `out_dir`.
    pub const MEDIA: &'static str = "/live/stream.m3u8";

    /// Starts encoding now. Segments appear every `segment_secs`; see [`LiveHls::wait_ready`].
    pub fn start(out_dir: &Path, opts: LiveHlsOpts) -> Result<Self> {
        if opts.segment_secs == 0 || opts.fps == 0 || opts.list_size == 0 {
            return Err(Error::Invalid {
                what: format!("{opts:?}"),
                detail: "segment_secs, fps and list_size must be positive".into(),
            });
        }
        let dir = out_dir.join("live");
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let rendition = Rendition {
            width: opts.width,
            height: opts.height,
            fps: opts.fps,
            video_kbps: opts.video_kbps,
            gop: opts.fps * opts.segment_secs,
        };
        write_master(&dir.join("master.m3u8"), &[("stream.m3u8", rendition)])?;

        let mut args = test_source_args(&rendition, true, None);
        args.extend(rendition.encoder_args());
        let ext = match opts.format {
            SegmentFormat::Ts => "ts",
            SegmentFormat::Fmp4 => "m4s",
        };
        args.extend(
            [
                "-f",
                "hls",
                "-hls_time",
                &opts.segment_secs.to_string(),
                "-hls_list_size",
                &opts.list_size.to_string(),
                // temp_file: a segment appears under its name only when complete.
                "-hls_flags",
                "delete_segments+independent_segments+temp_file",
                "-hls_delete_threshold",
                "200",
                "-hls_segment_filename",
                &format!("seg_%05d.{ext}"),
            ]
            .map(String::from),
        );
        if opts.format == SegmentFormat::Fmp4 {
            args.extend(
                [
                    "-hls_segment_type",
                    "fmp4",
                    "-hls_fmp4_init_filename",
                    "init.mp4",
                ]
                .map(String::from),
            );
        }
        args.push("stream.m3u8".into());
        let ffmpeg = FfmpegProcess::spawn("live HLS encoder", &dir, &args)?;
        // Finished segments only: ffmpeg writes `*.tmp` and renames (temp_file).
        let archive = Archiver::start(&dir, out_dir.join("live-archive"), "live-archiver", |n| {
            (n.starts_with("seg_") || n.starts_with("init")) && !n.ends_with(".tmp")
        })?;
        Ok(Self {
            dir,
            opts,
            ffmpeg,
            archive,
        })
    }

    /// The archived copy of the segment a request path names (its last path segment, query
    /// dropped), which outlives ffmpeg's deletion of the original.
    pub fn archived(&self, uri: &str) -> PathBuf {
        self.archive.path_for(uri)
    }

    /// The encoder's process id (to pause it with SIGSTOP, say).
    pub fn pid(&self) -> u32 {
        self.ffmpeg.pid()
    }

    /// The options it was started with.
    pub fn opts(&self) -> LiveHlsOpts {
        self.opts
    }

    /// Segment URIs the media playlist lists now (empty before the first is written).
    pub fn segments(&self) -> Result<Vec<String>> {
        let path = self.dir.join("stream.m3u8");
        match std::fs::read_to_string(&path) {
            Ok(p) => Ok(playlist_uris(&p)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_err(format!("reading {}", path.display()))(e)),
        }
    }

    /// Waits until the media playlist lists at least `n` segments (at most `list_size`),
    /// yielding to the async runtime in between.
    pub async fn wait_ready(&mut self, n: usize, timeout: Duration) -> Result<()> {
        self.check_n(n)?;
        poll_async(timeout, || self.ready(n))
            .await?
            .ok_or_else(|| self.timeout(n, timeout))
    }

    /// [`LiveHls::wait_ready`] for tests without an async runtime.
    pub fn wait_ready_blocking(&mut self, n: usize, timeout: Duration) -> Result<()> {
        self.check_n(n)?;
        poll_blocking(timeout, || self.ready(n))?.ok_or_else(|| self.timeout(n, timeout))
    }

    fn check_n(&self, n: usize) -> Result<()> {
        if n > self.opts.list_size as usize {
            return Err(Error::Invalid {
                what: format!("waiting for {n} segments"),
                detail: format!("the playlist never lists more than {}", self.opts.list_size),
            });
        }
        Ok(())
    }

    fn ready(&mut self, n: usize) -> Result<Option<()>> {
        self.ffmpeg.ensure_running()?;
        Ok((self.segments()?.len() >= n).then_some(()))
    }

    fn timeout(&self, n: usize, timeout: Duration) -> Error {
        Error::Timeout {
            what: format!("{} to list {n} segments", self.ffmpeg.what()),
            timeout,
            log: self.ffmpeg.log(),
        }
    }
}
