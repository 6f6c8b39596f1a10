//! Shared by the `peer_*` tests: real peer servers and hostile HTTP/2 servers on ephemeral
//! loopback ports.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use bytes::Bytes;
use dashmap::DashSet;
use futures::future::BoxFuture;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use shoal::cache::SegmentCache;
use shoal::peer::{PeerClient, PeerClientConfig, PeerServer, PeerServerConfig};
use shoal_proto::{SegmentKey, SwarmId};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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

/// A node's serving half: its cache, its swarm set and its running peer server.
pub struct Node {
    pub cache: SegmentCache,
    pub swarms: Arc<DashSet<SwarmId>>,
    pub server: PeerServer,
    pub addr: SocketAddr,
}

pub async fn start_node(budget: u64, in_swarms: &[&str], config: PeerServerConfig) -> Node {
    let cache = SegmentCache::new(budget);
    let swarms: Arc<DashSet<SwarmId>> = Arc::new(in_swarms.iter().map(|s| swarm(s)).collect());
    let server = PeerServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        cache.clone(),
        Arc::clone(&swarms),
        config,
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    Node {
        cache,
        swarms,
        server,
        addr,
    }
}

pub fn client() -> PeerClient {
    PeerClient::new(PeerClientConfig::default())
}

pub type TestBody = BoxBody<Bytes, Infallible>;

/// A plain HTTP/2 (prior knowledge) server that answers every request with `respond`: the
/// stand-in for a hostile or broken peer.
pub async fn h2_server<F>(respond: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> BoxFuture<'static, Response<TestBody>> + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let respond = Arc::new(respond);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let respond = Arc::clone(&respond);
            let service = hyper::service::service_fn(move |req| {
                let fut = respond(req);
                async move { Ok::<_, Infallible>(fut.await) }
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service),
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

/// A bare HTTP/2 client, for requests `PeerClient` would never send.
pub fn raw_h2_client<B>() -> Client<HttpConnector, B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new())
}

pub fn get(addr: SocketAddr, path: &str) -> Request<Empty<Bytes>> {
    Request::get(format!("http://{addr}{path}"))
        .body(Empty::new())
        .unwrap()
}
