//! The API's listener: TCP, then (from trusted proxies, when enabled) a PROXY protocol header
//! naming the client, then (when configured) TLS with a certificate that can be re-read while
//! the tracker runs. axum gets ready connections with the client's address.
//!
//! Headers and handshakes run in a task per connection, off the accept loop, each bounded in
//! time, so a slow or silent client holds up nobody else.

use crate::client_addr::ClientAddrs;
use ppp::{v1, v2, HeaderResult, PartialResult};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::TlsAcceptor;

/// Time a connection has for its PROXY header and TLS handshake before it is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections at once still sending their PROXY header or TLS handshake; more are closed at
/// once (a flood of idle sockets cannot make the tracker hold unbounded state).
const MAX_PENDING_HANDSHAKES: usize = 4096;

/// Longest PROXY header read: a v1 header is at most 107 bytes, a v2 header 16 bytes plus its
/// addresses and TLVs (load balancers send well under 1 KiB).
const MAX_PROXY_HEADER: usize = 16 + 4096;

/// Why a certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is unreadable or not PEM.
    #[error("cannot read the TLS certificate file {path}: {source}")]
    Cert {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("the TLS certificate file {0} holds no PEM CERTIFICATE block")]
    NoCert(PathBuf),
    /// The key file is unreadable, not PEM, or holds no private key.
    #[error("cannot read the TLS private key file {path}: {source}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls::pki_types::pem::Error,
    },
    /// The key is of an unsupported kind, or is not the certificate's.
    #[error("the TLS certificate {cert} and key {key} cannot serve together: {source}")]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// rustls refused the protocol versions (cannot happen with its defaults).
    #[error("cannot build the TLS configuration: {0}")]
    Config(rustls::Error),
}

/// The certificate the listener serves, re-read from its files by [`TlsCerts::reload`].
#[derive(Debug)]
pub struct TlsCerts {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl TlsCerts {
    /// Reads the PEM certificate chain (leaf first) at `cert` and its private key at `key`.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let first = read_pair(cert, key, &provider)?;
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            current: RwLock::new(Arc::new(first)),
        })
    }

    /// Reads both files again; new handshakes get the new certificate, connections already
    /// open keep theirs. On an error the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let next = read_pair(&self.cert, &self.key, &self.provider)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
        Ok(())
    }

    /// The certificate file.
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }

    /// A rustls server configuration serving the current certificate, offering HTTP/2 and
    /// HTTP/1.1 by ALPN.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for TlsCerts {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

fn read_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Cert {
            path: cert.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCert(cert.to_owned()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
        path: key.to_owned(),
        source,
    })?;
    CertifiedKey::from_der(chain, private, provider).map_err(|source| TlsError::Pair {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    })
}

/// What the listener does with each connection before HTTP.
#[derive(Clone)]
pub struct Options {
    /// Serve TLS with this acceptor.
    pub tls: Option<TlsAcceptor>,
    /// Read a PROXY header from trusted proxies.
    pub proxy_protocol: bool,
    /// Which peers are trusted proxies.
    pub client_addrs: ClientAddrs,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("tls", &self.tls.is_some())
            .field("proxy_protocol", &self.proxy_protocol)
            .field("client_addrs", &self.client_addrs)
            .finish()
    }
}

/// A connection ready for HTTP: plain or TLS, over TCP (with any bytes read past a PROXY
/// header put back in front).
#[derive(Debug)]
pub enum Conn {
    /// Plain HTTP.
    Plain(Prefixed),
    /// HTTP over TLS.
    Tls(Box<tokio_rustls::server::TlsStream<Prefixed>>),
}

/// A TCP stream with bytes already read from it put back in front.
#[derive(Debug)]
pub struct Prefixed {
    prefix: Vec<u8>,
    pos: usize,
    inner: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.pos);
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The listener axum serves. Plain connections are handed over as accepted; the others once
/// their PROXY header and TLS handshake are done, in a task each. The TCP socket is this
/// value's own, so the port closes when axum drops it (at shutdown), not later.
#[derive(Debug)]
pub struct TrackerListener {
    tcp: TcpListener,
    local: SocketAddr,
    options: Arc<Options>,
    direct: bool,
    pending: Arc<Semaphore>,
    prepared: mpsc::Sender<(Conn, SocketAddr)>,
    ready: mpsc::Receiver<(Conn, SocketAddr)>,
}

impl TrackerListener {
    /// Accepts on `tcp` and prepares each connection as `options` say.
    pub fn new(tcp: TcpListener, options: Options) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let (prepared, ready) = mpsc::channel(64);
        Ok(Self {
            tcp,
            local,
            direct: options.tls.is_none() && !options.proxy_protocol,
            options: Arc::new(options),
            pending: Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES)),
            prepared,
            ready,
        })
    }
}

impl axum::serve::Listener for TrackerListener {
    type Io = Conn;
    type Addr = SocketAddr;

    // Cancel-safe: both branches are, and nothing is awaited between a TCP accept and handing
    // the connection over or to its task.
    async fn accept(&mut self) -> (Conn, SocketAddr) {
        loop {
            tokio::select! {
                // Never `None`: this value holds a sender.
                Some(conn) = self.ready.recv() => return conn,
                accepted = self.tcp.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(e) if is_connection_error(&e) => continue,
                        Err(e) => {
                            // Out of file descriptors, most likely: wait for some to be freed.
                            tracing::warn!(error = %e, "accepting a connection failed; retrying in 100 ms");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    // Small request/response pairs: send each at once rather than wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    if self.direct {
                        let conn = Conn::Plain(Prefixed {
                            prefix: Vec::new(),
                            pos: 0,
                            inner: stream,
                        });
                        return (conn, peer);
                    }
                    self.start_handshake(stream, peer);
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

impl TrackerListener {
    /// Reads the PROXY header and does the TLS handshake in a task of its own, bounded by
    /// [`HANDSHAKE_TIMEOUT`]; the ready connection comes back through `accept`.
    fn start_handshake(&self, stream: TcpStream, peer: SocketAddr) {
        let Ok(permit) = self.pending.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many connections in their handshake; closed");
            return;
        };
        let (options, prepared) = (self.options.clone(), self.prepared.clone());
        tokio::spawn(async move {
            let result =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, prepare(stream, peer, &options)).await;
            drop(permit);
            match result {
                Ok(Ok(conn)) => {
                    // Fails only once the server has stopped: the connection is closed.
                    let _ = prepared.send(conn).await;
                }
                Ok(Err(Refused::Proxy(why))) => {
                    tracing::warn!(%peer, %why, "closed a connection from a trusted proxy without a valid PROXY header (is the load balancer's PROXY protocol on?)");
                }
                Ok(Err(Refused::Io(e))) => {
                    tracing::debug!(%peer, error = %e, "connection closed before HTTP");
                }
                Err(_) => {
                    tracing::debug!(%peer, "no PROXY header or TLS handshake within {HANDSHAKE_TIMEOUT:?}; closed");
                }
            }
        });
    }
}

/// Errors of one connection that `accept` reports; the listener itself is fine.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Why a connection was closed before HTTP.
#[derive(Debug)]
enum Refused {
    /// A trusted proxy sent no valid PROXY header.
    Proxy(String),
    /// Reading, or the TLS handshake, failed.
    Io(io::Error),
}

impl From<io::Error> for Refused {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

async fn prepare(
    mut stream: TcpStream,
    peer: SocketAddr,
    options: &Options,
) -> Result<(Conn, SocketAddr), Refused> {
    let mut client = peer;
    let mut prefix = Vec::new();
    if options.proxy_protocol && options.client_addrs.is_trusted(peer.ip()) {
        let (source, rest) = read_proxy_header(&mut stream).await?;
        client = source.unwrap_or(peer);
        prefix = rest;
    }
    let io = Prefixed {
        prefix,
        pos: 0,
        inner: stream,
    };
    match &options.tls {
        None => Ok((Conn::Plain(io), client)),
        Some(acceptor) => {
            let tls = acceptor.accept(io).await?;
            Ok((Conn::Tls(Box::new(tls)), client))
        }
    }
}

/// Reads a PROXY protocol header (v1 text or v2 binary, parsed by `ppp`) from the start of
/// `stream`. Returns the client's address it names (none for v1 `UNKNOWN`, v2 `LOCAL` or a
/// non-IP family: then the connection's own peer counts) and the bytes read past the header.
async fn read_proxy_header(
    stream: &mut TcpStream,
) -> Result<(Option<SocketAddr>, Vec<u8>), Refused> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(Refused::Proxy(format!(
                "the connection closed after {} bytes, before a complete PROXY header",
                buf.len()
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
        let parsed = HeaderResult::parse(&buf);
        // ppp calls a v1 line with missing fields "incomplete" even once its CRLF is there;
        // more bytes cannot complete a line that has ended.
        if matches!(parsed, HeaderResult::V1(_))
            && parsed.is_incomplete()
            && buf.windows(2).any(|w| w == b"\r\n")
        {
            return Err(Refused::Proxy(
                "a PROXY v1 line with fields missing".to_owned(),
            ));
        }
        if parsed.is_incomplete() {
            if buf.len() >= MAX_PROXY_HEADER {
                return Err(Refused::Proxy(format!(
                    "no complete PROXY header within {MAX_PROXY_HEADER} bytes"
                )));
            }
            continue;
        }
        let (len, source) = match parsed {
            HeaderResult::V1(Ok(h)) => (
                h.header.len(),
                match h.addresses {
                    v1::Addresses::Tcp4(a) => {
                        Some(SocketAddr::from((a.source_address, a.source_port)))
                    }
                    v1::Addresses::Tcp6(a) => {
                        Some(SocketAddr::from((a.source_address, a.source_port)))
                    }
                    v1::Addresses::Unknown => None,
                },
            ),
            HeaderResult::V2(Ok(h)) => (
                h.len(),
                match (h.command, h.addresses) {
                    (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                        Some(SocketAddr::from((a.source_address, a.source_port)))
                    }
                    (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                        Some(SocketAddr::from((a.source_address, a.source_port)))
                    }
                    _ => None,
                },
            ),
            HeaderResult::V1(Err(e)) => {
                return Err(Refused::Proxy(format!("not a PROXY v1 or v2 header ({e})")))
            }
            HeaderResult::V2(Err(e)) => {
                return Err(Refused::Proxy(format!("invalid PROXY v2 header ({e})")))
            }
        };
        buf.drain(..len);
        return Ok((source, buf));
    }
}
