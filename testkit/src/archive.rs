//! Keeps every finished segment a live encoder writes, by hard link, after ffmpeg deletes the
//! original (as a live origin does), so a test can hash what a player fetched long after.

use crate::{io_err, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A watcher thread that hard-links new files of `src` into `dir` every 200 ms (segments stay
/// listed for several seconds, far longer than one tick); stopped on drop.
#[derive(Debug)]
pub(crate) struct Archiver {
    /// Where the links are.
    pub(crate) dir: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Archiver {
    /// Starts archiving the files of `src` whose name `keep` accepts into `dir`.
    pub(crate) fn start(
        src: &Path,
        dir: PathBuf,
        thread_name: &str,
        keep: fn(&str) -> bool,
    ) -> Result<Self> {
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (src, dst, stop) = (src.to_path_buf(), dir.clone(), stop.clone());
            std::thread::Builder::new()
                .name(thread_name.into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        link_new(&src, &dst, keep);
                        std::thread::sleep(Duration::from_millis(200));
                    }
                })
                .map_err(io_err("starting the segment archiver"))?
        };
        Ok(Self {
            dir,
            stop,
            thread: Some(thread),
        })
    }

    /// The archived copy of the file a request path names (its last path segment, query
    /// dropped).
    pub(crate) fn path_for(&self, uri: &str) -> PathBuf {
        let path = uri.split(['?', '#']).next().unwrap_or_default();
        self.dir.join(path.rsplit('/').next().unwrap_or_default())
    }
}

fn link_new(src: &Path, dst: &Path, keep: fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(src) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let target = dst.join(&name);
        if name.to_str().is_some_and(keep) && !target.exists() {
            let _ = std::fs::hard_link(e.path(), target);
        }
    }
}

impl Drop for Archiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
