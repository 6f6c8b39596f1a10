//! Segments on their way in from a peer, served onward while they arrive (cut-through).
//!
//! Without this, a segment travels the swarm one whole hop at a time: under an upload cap of
//! twice the bitrate, each hop of a 2 s segment takes a second, so a swarm of 32 needs five
//! hops (five seconds) to cover, longer than a live player's buffer. Relaying bytes as they
//! arrive makes a hop cost one chunk instead of one segment.
//!
//! Integrity holds because the **last chunk is withheld** until the relaying node has
//! verified the whole segment against its trusted digest: a downloader never receives a
//! complete body that its sender has not verified. If verification fails (or the upstream
//! transfer fails), every onward stream is reset, which the downloader sees as an aborted
//! transfer, not as bad bytes from an honest relay; it verifies the whole segment itself too.

use bytes::Bytes;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Where a partial segment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Bytes are still arriving.
    Receiving,
    /// Every byte arrived and matched the trusted digest.
    Verified,
    /// The upstream transfer failed or the bytes were wrong: readers must abort.
    Failed,
}

/// Progress of a partial segment, as watched by its readers.
#[derive(Debug, Clone, Copy)]
struct Progress {
    chunks: usize,
    outcome: Outcome,
}

/// A segment being received. Shared by its one writer and any number of readers.
#[derive(Debug)]
pub struct Partial {
    len: u64,
    chunks: Mutex<Vec<Bytes>>,
    progress: watch::Sender<Progress>,
}

impl Partial {
    /// A partial segment of `len` bytes (the upstream's `content-length`), with no bytes yet.
    pub fn new(len: u64) -> Arc<Self> {
        let (progress, _) = watch::channel(Progress {
            chunks: 0,
            outcome: Outcome::Receiving,
        });
        Arc::new(Self {
            len,
            chunks: Mutex::new(Vec::new()),
            progress,
        })
    }

    /// The segment's full length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the segment is empty (zero-length).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn chunks(&self) -> std::sync::MutexGuard<'_, Vec<Bytes>> {
        self.chunks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Neighbours reading it now.
    pub fn readers(&self) -> usize {
        self.progress.receiver_count()
    }

    /// Appends received bytes.
    pub fn push(&self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        let n = {
            let mut c = self.chunks();
            c.push(chunk);
            c.len()
        };
        self.progress.send_modify(|p| p.chunks = n);
    }

    /// Every byte arrived and was verified: readers may send the last chunk.
    pub fn verified(&self) {
        self.progress.send_modify(|p| p.outcome = Outcome::Verified);
    }

    /// The transfer failed or the bytes were wrong: readers abort.
    pub fn failed(&self) {
        self.progress.send_modify(|p| {
            if p.outcome == Outcome::Receiving {
                p.outcome = Outcome::Failed;
            }
        });
    }

    /// A reader from the first byte.
    pub fn reader(self: &Arc<Self>) -> PartialReader {
        PartialReader {
            rx: self.progress.subscribe(),
            partial: Arc::clone(self),
            next: 0,
            held: None,
        }
    }
}

/// The relayed segment could not be completed (upstream failure or failed verification).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the relayed segment failed upstream")]
pub struct RelayAborted;

/// Reads a [`Partial`] in order, withholding the last chunk until the segment is verified.
#[derive(Debug)]
pub struct PartialReader {
    partial: Arc<Partial>,
    rx: watch::Receiver<Progress>,
    next: usize,
    /// The newest chunk read, sent only once a later one exists or the whole is verified.
    held: Option<Bytes>,
}

impl PartialReader {
    /// The next bytes to send; `Ok(None)` when all were sent after verification.
    pub async fn next(&mut self) -> Result<Option<Bytes>, RelayAborted> {
        loop {
            let progress = *self.rx.borrow_and_update();
            if progress.outcome == Outcome::Failed {
                return Err(RelayAborted);
            }
            if self.next < progress.chunks {
                let chunk = self.partial.chunks().get(self.next).cloned();
                self.next += 1;
                if let Some(chunk) = chunk {
                    if let Some(earlier) = self.held.replace(chunk) {
                        return Ok(Some(earlier));
                    }
                }
                continue;
            }
            if progress.outcome == Outcome::Verified {
                return Ok(self.held.take());
            }
            if self.rx.changed().await.is_err() {
                // The writer is gone without a verdict.
                return Err(RelayAborted);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_last_chunk_waits_for_verification() {
        let p = Partial::new(6);
        let mut r = p.reader();
        p.push(Bytes::from_static(b"ab"));
        p.push(Bytes::from_static(b"cd"));
        assert_eq!(r.next().await, Ok(Some(Bytes::from_static(b"ab"))));
        p.push(Bytes::from_static(b"ef"));
        assert_eq!(r.next().await, Ok(Some(Bytes::from_static(b"cd"))));
        // "ef" completes the body: held until the writer says the digest matched.
        let pending = tokio::time::timeout(std::time::Duration::from_millis(50), r.next()).await;
        assert!(pending.is_err(), "last chunk released before verification");
        p.verified();
        assert_eq!(r.next().await, Ok(Some(Bytes::from_static(b"ef"))));
        assert_eq!(r.next().await, Ok(None));
    }

    #[test]
    fn readers_are_counted() {
        let p = Partial::new(4);
        assert_eq!(p.readers(), 0);
        let r = p.reader();
        assert_eq!(p.readers(), 1);
        drop(r);
        assert_eq!(p.readers(), 0);
    }

    #[tokio::test]
    async fn a_failed_upstream_aborts_readers_before_the_last_chunk() {
        let p = Partial::new(4);
        let mut r = p.reader();
        p.push(Bytes::from_static(b"ab"));
        p.push(Bytes::from_static(b"cd"));
        assert_eq!(r.next().await, Ok(Some(Bytes::from_static(b"ab"))));
        p.failed();
        assert_eq!(r.next().await, Err(RelayAborted));
        // A late reader is refused too.
        assert_eq!(p.reader().next().await, Err(RelayAborted));
    }
}
