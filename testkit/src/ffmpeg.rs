//! What the ffmpeg-based helpers share: running ffmpeg with its log captured, encoder
//! arguments, master playlists, and bounded polling.

use crate::{io_err, which, ChildGuard, Error, Result};
use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::time::Instant;

/// The log is for humans and error assertions; a runaway one must not eat the memory.
const LOG_CAP: usize = 1 << 20;

/// Poll interval for external processes and the files they write (nothing signals us).
pub(crate) const POLL: Duration = Duration::from_millis(50);

/// A running ffmpeg whose stderr is collected by a thread (so the pipe never fills up).
#[derive(Debug)]
pub(crate) struct FfmpegProcess {
    what: String,
    child: ChildGuard,
    log: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
}

impl FfmpegProcess {
    /// Runs `ffmpeg -nostdin -hide_banner -loglevel warning ARGS` in `cwd`, so that any
    /// relative path ffmpeg derives lands in `cwd`.
    pub(crate) fn spawn(what: &str, cwd: &Path, args: &[String]) -> Result<Self> {
        let bin = which("ffmpeg", "ffmpeg")?;
        let mut child = Command::new(bin)
            .args(["-nostdin", "-hide_banner", "-loglevel", "warning"])
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io_err(format!("starting ffmpeg ({what})")))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let reader = child.stderr.take().map(|mut stderr| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = stderr.read(&mut buf) {
                    let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
                    let room = LOG_CAP.saturating_sub(log.len());
                    log.extend_from_slice(&buf[..n.min(room)]);
                }
            })
        });
        Ok(Self {
            what: what.into(),
            child: ChildGuard(child),
            log,
            reader,
        })
    }

    /// The exit status if ffmpeg has exited. Once it has, the log is complete.
    pub(crate) fn try_exit(&mut self) -> Result<Option<ExitStatus>> {
        let status = self
            .child
            .0
            .try_wait()
            .map_err(io_err(format!("waiting for ffmpeg ({})", self.what)))?;
        if status.is_some() {
            if let Some(reader) = self.reader.take() {
                // The pipe is closed once ffmpeg is gone, so the reader ends promptly.
                let _ = reader.join();
            }
        }
        Ok(status)
    }

    /// Fails if ffmpeg has exited: for encoders that should run until dropped.
    pub(crate) fn ensure_running(&mut self) -> Result<()> {
        match self.try_exit()? {
            None => Ok(()),
            Some(status) => Err(Error::Exited {
                what: format!("ffmpeg ({})", self.what),
                status,
                log: self.log(),
            }),
        }
    }

    /// Kills ffmpeg and reaps it.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
        let _ = self.try_exit();
    }
}

impl Drop for FfmpegProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

impl FfmpegProcess {
    /// What ffmpeg wrote to stderr so far.
    pub(crate) fn log(&self) -> String {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&log).into_owned()
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.0.id()
    }

    pub(crate) fn what(&self) -> &str {
        &self.what
    }
}

/// Runs ffmpeg to completion (for finite inputs) and fails unless it succeeded.
pub(crate) fn run_to_end(what: &str, cwd: &Path, args: &[String]) -> Result<()> {
    let mut p = FfmpegProcess::spawn(what, cwd, args)?;
    let status = p
        .child
        .0
        .wait()
        .map_err(io_err(format!("waiting for ffmpeg ({what})")))?;
    p.try_exit()?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Exited {
            what: format!("ffmpeg ({what})"),
            status,
            log: p.log(),
        })
    }
}

/// One H.264 + AAC rendition's encoding parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rendition {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub video_kbps: u32,
    /// Keyframe interval in frames: fps * segment duration, so every segment starts with one.
    pub gop: u32,
}

/// Audio bitrate of every rendition, kept small: the tests care about bytes, not sound.
const AUDIO_KBPS: u32 = 48;

/// RFC 6381 codecs of what [`Rendition::encoder_args`] produces (constrained baseline,
/// level 3.0, AAC-LC), as ffmpeg's own master playlist states them.
pub(crate) const CODECS: &str = "avc1.42c01e,mp4a.40.2";

impl Rendition {
    /// `-map ... -c:v ... -c:a ...` for one output of the test source, cheap on CPU, with segment-exact keyframes.
    pub(crate) fn encoder_args(&self) -> Vec<String> {
        let Self {
            width,
            height,
            video_kbps: kbps,
            gop,
            ..
        } = *self;
        [
            "-map",
            "0:v",
            "-map",
            "1:a",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-profile:v",
            "baseline",
            "-level:v",
            "3.0",
            "-pix_fmt",
            "yuv420p",
            "-s",
            &format!("{width}x{height}"),
            "-b:v",
            &format!("{kbps}k"),
            "-maxrate",
            &format!("{kbps}k"),
            "-bufsize",
            &format!("{}k", 2 * kbps),
            "-g",
            &gop.to_string(),
            "-keyint_min",
            &gop.to_string(),
            "-sc_threshold",
            "0",
            "-c:a",
            "aac",
            "-b:a",
            &format!("{AUDIO_KBPS}k"),
            "-ac",
            "1",
        ]
        .map(String::from)
        .to_vec()
    }

    /// Peak bandwidth for `EXT-X-STREAM-INF`, with headroom for container overhead.
    pub(crate) fn bandwidth(&self) -> u32 {
        (self.video_kbps + AUDIO_KBPS) * 1100
    }
}

/// `-f lavfi` test pattern and tone inputs; `realtime` paces them like a live camera.
pub(crate) fn test_source_args(r: &Rendition, realtime: bool, seconds: Option<u32>) -> Vec<String> {
    let mut args = Vec::new();
    let duration = seconds
        .map(|s| format!(":duration={s}"))
        .unwrap_or_default();
    for input in [
        format!(
            "testsrc2=size={}x{}:rate={}{duration}",
            r.width, r.height, r.fps
        ),
        format!("sine=frequency=440:sample_rate=48000{duration}"),
    ] {
        if realtime {
            args.push("-re".into());
        }
        args.extend(["-f".into(), "lavfi".into(), "-i".into(), input]);
    }
    args
}

/// Writes a master playlist listing `(uri, rendition)` variants.
pub(crate) fn write_master(path: &Path, variants: &[(&str, Rendition)]) -> Result<()> {
    let mut m = String::from("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for (uri, r) in variants {
        m.push_str(&format!(
            "#EXT-X-STREAM-INF:BANDWIDTH={},RESOLUTION={}x{},FRAME-RATE={},CODECS=\"{CODECS}\"\n{uri}\n",
            r.bandwidth(),
            r.width,
            r.height,
            r.fps,
        ));
    }
    std::fs::write(path, m).map_err(io_err(format!("writing {}", path.display())))
}

/// Media segment URIs of an HLS playlist (every non-empty line that is not a tag).
pub(crate) fn playlist_uris(playlist: &str) -> Vec<String> {
    playlist
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// Calls `check` until it yields a value, for at most `timeout` (blocking the thread);
/// `None` when time ran out.
pub(crate) fn poll_blocking<T>(
    timeout: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<Option<T>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check()? {
            return Ok(Some(v));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(POLL);
    }
}

/// [`poll_blocking`] that yields to the runtime in between, so that servers running on the
/// same runtime (a proxy under test) keep serving.
pub(crate) async fn poll_async<T>(
    timeout: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<Option<T>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check()? {
            return Ok(Some(v));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(POLL).await;
    }
}
