//! ffmpeg as a player.

use crate::ffmpeg::{poll_async, poll_blocking, FfmpegProcess};
use crate::{io_err, Error, Result};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// How [`FfmpegPlayer`] plays.
#[derive(Debug, Clone, Copy)]
pub struct PlayerOpts {
    /// Media time to play (`-t`), after which the player stops.
    pub duration: Duration,
    /// Pace reading at the media's own rate (`-re`), like a watching viewer; otherwise read
    /// as fast as the server allows (a live stream still paces it at the live edge).
    pub realtime: bool,
    /// Give up on a connection silent for this long (`-rw_timeout`).
    pub io_timeout: Duration,
}

impl PlayerOpts {
    /// Plays `duration` of media as fast as the server allows.
    pub fn new(duration: Duration) -> Self {
        Self {
            duration,
            realtime: false,
            io_timeout: Duration::from_secs(15),
        }
    }
}

/// A real HLS client: `ffmpeg -i URL -c copy -t SECS -f mpegts out.ts`, killed on drop.
///
/// Works from a master or a media playlist, live or VOD. What it downloaded is remuxed (not
/// decoded, to spare CPU) into a temporary `out.ts`.
#[derive(Debug)]
pub struct FfmpegPlayer {
    /// The URL it plays.
    pub url: String,
    output: PathBuf,
    ffmpeg: FfmpegProcess,
    _dir: tempfile::TempDir,
}

/// How a player run ended.
#[derive(Debug, Clone)]
pub struct PlayerOutcome {
    /// ffmpeg's exit status.
    pub status: ExitStatus,
    /// Everything ffmpeg logged at level warning and above.
    pub stderr: String,
    /// Size of the remuxed output.
    pub output_bytes: u64,
    /// The remuxed output; it lives as long as the [`FfmpegPlayer`].
    pub output: PathBuf,
}

impl PlayerOutcome {
    /// Whether ffmpeg exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Log lines that report a failure to fetch or parse the stream (HTTP errors, invalid
    /// data, failed opens, corrupt packets), for assertions and messages.
    pub fn error_lines(&self) -> Vec<&str> {
        const MARKERS: [&str; 6] = [
            "error",
            "invalid",
            "failed",
            "corrupt",
            "timed out",
            "could not",
        ];
        self.stderr
            .lines()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                MARKERS.iter().any(|m| l.contains(m))
            })
            .collect()
    }
}

impl FfmpegPlayer {
    /// Starts playing `url` for `duration` of media, as fast as the server allows.
    pub fn start(url: &str, duration: Duration) -> Result<Self> {
        Self::start_with(url, PlayerOpts::new(duration))
    }

    /// Starts playing `url` as `opts` say.
    pub fn start_with(url: &str, opts: PlayerOpts) -> Result<Self> {
        let dir = tempfile::tempdir().map_err(io_err("creating a temp dir"))?;
        let output = dir.path().join("out.ts");
        let mut args: Vec<String> = Vec::new();
        if opts.realtime {
            args.push("-re".into());
        }
        args.extend([
            "-rw_timeout".into(),
            opts.io_timeout.as_micros().to_string(),
            "-i".into(),
            url.into(),
            "-c".into(),
            "copy".into(),
            "-t".into(),
            format!("{:.3}", opts.duration.as_secs_f64()),
            "-f".into(),
            "mpegts".into(),
            "-y".into(),
            "out.ts".into(),
        ]);
        let ffmpeg = FfmpegProcess::spawn("player", dir.path(), &args)?;
        Ok(Self {
            url: url.into(),
            output,
            ffmpeg,
            _dir: dir,
        })
    }

    /// The player's process id.
    pub fn pid(&self) -> u32 {
        self.ffmpeg.pid()
    }

    /// Waits until the player exits (yielding to the async runtime in between); kills it
    /// and fails after `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> Result<PlayerOutcome> {
        match poll_async(timeout, || self.outcome()).await? {
            Some(outcome) => Ok(outcome),
            None => Err(self.give_up(timeout)),
        }
    }

    /// [`FfmpegPlayer::wait`] for tests without an async runtime.
    pub fn wait_blocking(&mut self, timeout: Duration) -> Result<PlayerOutcome> {
        match poll_blocking(timeout, || self.outcome())? {
            Some(outcome) => Ok(outcome),
            None => Err(self.give_up(timeout)),
        }
    }

    fn outcome(&mut self) -> Result<Option<PlayerOutcome>> {
        let Some(status) = self.ffmpeg.try_exit()? else {
            return Ok(None);
        };
        let output_bytes = std::fs::metadata(&self.output).map_or(0, |m| m.len());
        Ok(Some(PlayerOutcome {
            status,
            stderr: self.ffmpeg.log(),
            output_bytes,
            output: self.output.clone(),
        }))
    }

    fn give_up(&mut self, timeout: Duration) -> Error {
        self.ffmpeg.kill();
        Error::Timeout {
            what: format!("the player of {} to finish", self.url),
            timeout,
            log: self.ffmpeg.log(),
        }
    }
}
