//! A TCP relay that counts the bytes it forwards, in front of a node's peer server or the
//! tracker. Nodes advertise the relay's address, so every byte between peers (segments,
//! `haves` streams, HTTP/2 framing) and every announce passes through a counter without any
//! change to the node.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A running relay; stops accepting when dropped.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    target: Arc<OnceLock<SocketAddr>>,
    bytes: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl Relay {
    /// Binds a loopback port. Connections wait for [`Relay::set_target`] only if they arrive
    /// before it (they are dropped then), so set the target before advertising the address.
    pub async fn bind(bytes: Arc<AtomicU64>) -> std::io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let target = Arc::new(OnceLock::new());
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(
            listener,
            target.clone(),
            bytes.clone(),
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
                _ = async { tokio::join!(pump(ri, wo, &bytes), pump(ro, wi, &bytes)) } => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

/// Copies one direction, counting as it goes (so a progress line sees bytes as they flow).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    bytes: &AtomicU64,
) {
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
}
