//! A TCP relay that counts the bytes it forwards, in front of a node's peer server or the
//! tracker. Nodes advertise the relay's address, so every byte between peers (segments,
//! `haves` streams, HTTP/2 framing) and every announce passes through a counter without any
//! change to the node.
//!
//! In the shaped mode a relay also delays every chunk by a fixed time in each direction (half
//! the round trip): chunks wait in a timestamped queue, so the delay adds latency without
//! lowering throughput.

use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Chunks a delayed direction holds at most; a full queue stops reading, so TCP's own flow
/// control pushes back on the sender.
const DELAY_QUEUE_CHUNKS: usize = 1024;

/// A running relay; stops accepting when dropped.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    target: Arc<OnceLock<SocketAddr>>,
    bytes: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl Relay {
    /// Binds a loopback port. Connections arriving before [`Relay::set_target`] are dropped,
    /// so set the target before advertising the address.
    pub async fn bind(bytes: Arc<AtomicU64>) -> std::io::Result<Relay> {
        Self::bind_delayed(([127, 0, 0, 1], 0).into(), bytes, Duration::ZERO).await
    }

    /// Binds `at` (port 0: any) and holds every chunk `one_way` before passing it on, in each
    /// direction (so a connection through it gains twice `one_way` of round trip).
    pub async fn bind_delayed(
        at: SocketAddr,
        bytes: Arc<AtomicU64>,
        one_way: Duration,
    ) -> std::io::Result<Relay> {
        let listener = TcpListener::bind(at).await?;
        let addr = listener.local_addr()?;
        let target = Arc::new(OnceLock::new());
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(
            listener,
            target.clone(),
            bytes.clone(),
            one_way,
            stop.clone(),
        ));
        Ok(Relay {
            addr,
            target,
            bytes,
            stop,
        })
    }

    /// Where the relay listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where connections go (set once).
    pub fn set_target(&self, target: SocketAddr) {
        let _ = self.target.set(target);
    }

    /// Bytes forwarded both ways so far (shared with whoever passed the counter in).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: Arc<OnceLock<SocketAddr>>,
    bytes: Arc<AtomicU64>,
    one_way: Duration,
    stop: CancellationToken,
) {
    loop {
        let inbound = tokio::select! {
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
            _ = stop.cancelled() => return,
        };
        let Some(to) = target.get().copied() else {
            continue;
        };
        let (bytes, stop) = (bytes.clone(), stop.clone());
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(to).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            tokio::select! {
                _ = async {
                    if one_way.is_zero() {
                        tokio::join!(pump(ri, wo, &bytes), pump(ro, wi, &bytes));
                    } else {
                        tokio::join!(
                            pump_delayed(ri, wo, &bytes, one_way),
                            pump_delayed(ro, wi, &bytes, one_way)
                        );
                    }
                } => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

/// Copies one direction, counting as it goes (so a progress line sees bytes as they flow).
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, bytes: &AtomicU64) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
    let _ = to.shutdown().await;
}

/// Copies one direction, each chunk `delay` after it was read: the reader keeps reading while
/// earlier chunks wait, so the delay costs no throughput.
async fn pump_delayed(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    bytes: &AtomicU64,
    delay: Duration,
) {
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<(tokio::time::Instant, Bytes)>(DELAY_QUEUE_CHUNKS);
    let read = async move {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        loop {
            buf.reserve(64 * 1024);
            match from.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let due = tokio::time::Instant::now() + delay;
            if tx.send((due, buf.split().freeze())).await.is_err() {
                break;
            }
        }
    };
    let write = async {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
            bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        // Unblocks the reader if it waits on a full queue after a write error.
        drop(rx);
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn forwards_both_ways_and_counts_every_byte() {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server_addr = server.local_addr().unwrap();
        let echo = tokio::spawn(async move {
            let (mut s, _) = server.accept().await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(b"world!").await.unwrap();
        });
        let counter = Arc::new(AtomicU64::new(0));
        let relay = Relay::bind(counter.clone()).await.unwrap();
        relay.set_target(server_addr);
        let mut c = TcpStream::connect(relay.addr()).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        echo.await.unwrap();
        assert_eq!(got, b"world!");
        assert_eq!(relay.bytes(), 11);
    }

    /// An echo server behind a relay that delays each direction by `one_way`.
    async fn delayed_echo(one_way: Duration) -> (Relay, tokio::task::JoinHandle<()>) {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server_addr = server.local_addr().unwrap();
        let echo = tokio::spawn(async move {
            let (s, _) = server.accept().await.unwrap();
            let (mut r, mut w) = s.into_split();
            tokio::io::copy(&mut r, &mut w).await.unwrap();
        });
        let relay = Relay::bind_delayed(
            ([127, 0, 0, 1], 0).into(),
            Arc::new(AtomicU64::new(0)),
            one_way,
        )
        .await
        .unwrap();
        relay.set_target(server_addr);
        (relay, echo)
    }

    #[tokio::test]
    async fn a_delayed_relay_adds_its_round_trip_without_lowering_throughput() {
        let one_way = Duration::from_millis(50);
        let (relay, echo) = delayed_echo(one_way).await;
        let c = TcpStream::connect(relay.addr()).await.unwrap();
        let (mut r, mut w) = c.into_split();

        // One byte there and back: at least the round trip.
        let t0 = tokio::time::Instant::now();
        w.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        r.read_exact(&mut one).await.unwrap();
        assert!(t0.elapsed() >= 2 * one_way, "{:?}", t0.elapsed());

        // 16 MiB there and back, read as it comes: a delay per chunk read (hundreds of
        // chunks) would take tens of seconds; a queue costs the round trip once.
        let size = 16 << 20;
        let t0 = tokio::time::Instant::now();
        let send = async {
            w.write_all(&vec![7u8; size]).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let recv = async {
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.unwrap();
            got
        };
        let ((), got) = tokio::join!(send, recv);
        assert_eq!(got.len(), size);
        assert!(got.iter().all(|b| *b == 7));
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        assert_eq!(relay.bytes(), 2 * (size as u64 + 1));
        echo.await.unwrap();
    }
}
