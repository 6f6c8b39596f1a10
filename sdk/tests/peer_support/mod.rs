//! Shared by the `peer_*` tests: real peer servers and hostile HTTP/2 servers on ephemeral
//! loopback ports, all over TLS with keys made for the test.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use bytes::Bytes;
use dashmap::DashSet;
use futures::future::BoxFuture;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use shoal::cache::SegmentCache;
use shoal::peer::{
    tls, NodeIdentity, PeerAddr, PeerClient, PeerClientConfig, PeerServer, PeerServerConfig,
};
use shoal_proto::{SegmentKey, SwarmId};
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::{client::TlsStream, TlsAcceptor, TlsConnector};

/// Upper bound so a broken test fails instead of hanging; never a speed assertion.
pub const HANG_GUARD: Duration = Duration::from_secs(30);

pub fn swarm(s: &str) -> SwarmId {
    SwarmId::new(s).unwrap()
}

pub fn key(s: &str) -> SegmentKey {
    SegmentKey::new(s).unwrap()
}

/// Deterministic, non-repeating-looking bytes.
pub fn payload(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 7)) as u8)
        .collect()
}

/// The key every test client presents (making one per client would only cost time).
pub fn client_identity() -> NodeIdentity {
    static ID: OnceLock<NodeIdentity> = OnceLock::new();
    ID.get_or_init(|| NodeIdentity::generate().unwrap()).clone()
}

/// A node's serving half: its cache, its swarm set and its running peer server, reachable at
/// `addr` (its address and its key's fingerprint).
pub struct Node {
    pub cache: SegmentCache,
    pub swarms: Arc<DashSet<SwarmId>>,
    pub server: PeerServer,
    pub addr: PeerAddr,
}

pub async fn start_node(budget: u64, in_swarms: &[&str], config: PeerServerConfig) -> Node {
    let cache = SegmentCache::new(budget);
    let swarms: Arc<DashSet<SwarmId>> = Arc::new(in_swarms.iter().map(|s| swarm(s)).collect());
    let identity = NodeIdentity::generate().unwrap();
    let server = PeerServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        cache.clone(),
        Arc::clone(&swarms),
        &identity,
        config,
    )
    .await
    .unwrap();
    let addr = PeerAddr {
        addr: server.local_addr(),
        fingerprint: identity.fingerprint().to_string(),
        quic: None,
    };
    Node {
        cache,
        swarms,
        server,
        addr,
    }
}

pub fn client() -> PeerClient {
    client_with(PeerClientConfig::default())
}

pub fn client_with(config: PeerClientConfig) -> PeerClient {
    PeerClient::new(config, client_identity())
}

pub type TestBody = BoxBody<Bytes, Infallible>;

/// An HTTP/2-over-TLS server with a key of its own that answers every request with
/// `respond`: the stand-in for a hostile or broken peer (that holds the key it announced).
pub async fn h2_server<F>(respond: F) -> PeerAddr
where
    F: Fn(Request<Incoming>) -> BoxFuture<'static, Response<TestBody>> + Send + Sync + 'static,
{
    let identity = NodeIdentity::generate().unwrap();
    let acceptor = TlsAcceptor::from(tls::server_config(&identity).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = PeerAddr {
        addr: listener.local_addr().unwrap(),
        fingerprint: identity.fingerprint().to_string(),
        quic: None,
    };
    let respond = Arc::new(respond);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let respond = Arc::clone(&respond);
            let service = hyper::service::service_fn(move |req| {
                let fut = respond(req);
                async move { Ok::<_, Infallible>(fut.await) }
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service),
            );
        }
    });
    addr
}

/// Boxes a response future for [`h2_server`].
pub fn boxed<Fut>(f: Fut) -> BoxFuture<'static, Response<TestBody>>
where
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    Box::pin(f)
}

/// A TLS connection to `peer` presenting the test client key and pinned to `peer`'s key,
/// for bytes `PeerClient` would never send.
pub async fn tls_connect(peer: &PeerAddr) -> TlsStream<TcpStream> {
    let config = tls::client_config(&client_identity(), &peer.fingerprint).unwrap();
    let tcp = TcpStream::connect(peer.addr).await.unwrap();
    TlsConnector::from(config)
        .connect(ServerName::IpAddress(peer.addr.ip().into()), tcp)
        .await
        .unwrap()
}

/// A bare HTTP/2 client over TLS, for requests `PeerClient` would never send.
pub struct RawH2<B> {
    sender: http2::SendRequest<B>,
}

impl<B> RawH2<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub async fn request(&self, req: Request<B>) -> hyper::Result<Response<Incoming>> {
        let mut sender = self.sender.clone();
        sender.ready().await?;
        sender.send_request(req).await
    }
}

pub async fn raw_h2_client<B>(peer: &PeerAddr) -> RawH2<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    raw_h2_client_with(peer, |_| {}).await
}

/// Like [`raw_h2_client`], with HTTP/2 settings of the test's choosing.
pub async fn raw_h2_client_with<B>(
    peer: &PeerAddr,
    configure: impl FnOnce(&mut http2::Builder<TokioExecutor>),
) -> RawH2<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tls = tls_connect(peer).await;
    let mut builder = http2::Builder::new(TokioExecutor::new());
    configure(&mut builder);
    let (sender, conn) = builder.handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    RawH2 { sender }
}

pub fn get(peer: &PeerAddr, path: &str) -> Request<Empty<Bytes>> {
    Request::get(format!("https://{}{path}", peer.addr))
        .body(Empty::new())
        .unwrap()
}
