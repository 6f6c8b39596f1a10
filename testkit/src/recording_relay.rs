//! A forwarding HTTP relay that records what the client really received.

use crate::{io_err, sha256_hex, Error, Result};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, CONTENT_RANGE, RANGE};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::thread::JoinHandle;
use tokio::sync::oneshot;

/// One response the relay forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Request method.
    pub method: String,
    /// Request path and query, as the client sent them.
    pub uri: String,
    /// The request's `Range` header, if any.
    pub range: Option<String>,
    /// Response status (502 when the upstream could not be reached).
    pub status: u16,
    /// The response's `Content-Range` header, if any (`bytes START-END/TOTAL`, TOTAL may be `*`).
    pub content_range: Option<String>,
    /// Body bytes forwarded to the client.
    pub body_len: u64,
    /// Lower-case hex SHA-256 of those bytes.
    pub sha256: String,
    /// Whether the whole body went through (false when either side broke off).
    pub complete: bool,
}

impl Record {
    /// Whether the body is byte-identical to `file`, or, for a 206, to the part of it that
    /// the `Content-Range` names (and the file has the length it states). Fails if the file
    /// cannot be read or a 206 lacks a readable `Content-Range`.
    pub fn matches_file(&self, file: &Path) -> Result<bool> {
        let bytes = std::fs::read(file).map_err(io_err(format!("reading {}", file.display())))?;
        if self.status != 206 {
            return Ok(sha256_hex(&bytes) == self.sha256);
        }
        let cr = self.content_range.as_deref().unwrap_or_default();
        let (start, end, total) = parse_content_range(cr).ok_or_else(|| Error::Invalid {
            what: format!("Content-Range {cr:?} of {}", self.uri),
            detail: "expected `bytes START-END/TOTAL`".into(),
        })?;
        let part = usize::try_from(start)
            .ok()
            .zip(usize::try_from(end).ok())
            .and_then(|(s, e)| bytes.get(s..=e));
        let total_ok = total.is_none_or(|t| bytes.len() as u64 == t);
        Ok(total_ok && part.is_some_and(|p| sha256_hex(p) == self.sha256))
    }
}

/// `bytes START-END/TOTAL` -> (START, END, Some(TOTAL)); a TOTAL of `*` (unknown, RFC 9110
/// §14.4) gives `None`.
fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let (range, total) = v.strip_prefix("bytes ")?.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let total = match total {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start.parse().ok()?, end.parse().ok()?, total))
}

/// An HTTP/1.1 relay on an ephemeral loopback port that forwards every request unchanged to
/// `upstream`, streams the response back, and records a [`Record`] per response.
///
/// Put it between a player and the server under test to check that the bytes the player got
/// on the wire equal the origin's files. It runs on its own thread and runtime, so it keeps
/// relaying whether or not the test blocks; it stops on drop.
#[derive(Debug)]
pub struct RecordingRelay {
    /// Where players connect.
    pub addr: SocketAddr,
    /// Where requests go.
    pub upstream: SocketAddr,
    records: Arc<Mutex<Vec<Record>>>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RecordingRelay {
    /// Starts relaying to `upstream`.
    pub fn start(upstream: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(io_err("binding the relay"))?;
        let addr = listener.local_addr().map_err(io_err("binding the relay"))?;
        listener
            .set_nonblocking(true)
            .map_err(io_err("binding the relay"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io_err("building the relay's runtime"))?;
        let records = Arc::new(Mutex::new(Vec::new()));
        let (shutdown, stop) = oneshot::channel();
        let shared = Arc::clone(&records);
        let thread = std::thread::Builder::new()
            .name("recording-relay".into())
            .spawn(move || runtime.block_on(serve(listener, upstream, shared, stop)))
            .map_err(io_err("starting the relay thread"))?;
        Ok(Self {
            addr,
            upstream,
            records,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// Every response recorded so far, in the order their bodies ended.
    pub fn records(&self) -> Vec<Record> {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for RecordingRelay {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type Records = Arc<Mutex<Vec<Record>>>;

/// Accepts until told to stop; connections still open then are dropped with the runtime.
async fn serve(
    listener: TcpListener,
    upstream: SocketAddr,
    records: Records,
    mut stop: oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build_http();
    loop {
        let stream = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let (client, records) = (client.clone(), Arc::clone(&records));
        tokio::spawn(async move {
            let service =
                service_fn(move |req| forward(req, client.clone(), upstream, Arc::clone(&records)));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(
    mut req: Request<Incoming>,
    client: Client<HttpConnector, Incoming>,
    upstream: SocketAddr,
    records: Records,
) -> Result<Response<RecordingBody>, Infallible> {
    let uri = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.to_string());
    let pending = Record {
        method: req.method().to_string(),
        range: header(req.headers(), RANGE),
        status: StatusCode::BAD_GATEWAY.as_u16(),
        content_range: None,
        uri,
        body_len: 0,
        sha256: String::new(),
        complete: false,
    };
    let upstream_uri = format!("http://{upstream}{}", pending.uri).parse();
    let response = match upstream_uri {
        Ok(u) => {
            *req.uri_mut() = u;
            client.request(req).await.ok()
        }
        Err(_) => None,
    };
    Ok(match response {
        Some(resp) => {
            let (parts, body) = resp.into_parts();
            let pending = Record {
                status: parts.status.as_u16(),
                content_range: header(&parts.headers, CONTENT_RANGE),
                ..pending
            };
            Response::from_parts(parts, RecordingBody::new(Some(body), pending, records))
        }
        None => {
            let mut resp = Response::new(RecordingBody::new(None, pending, records));
            *resp.status_mut() = StatusCode::BAD_GATEWAY;
            resp
        }
    })
}

fn header(headers: &HeaderMap, name: hyper::header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

/// The upstream body, hashed as it streams through; records itself when it ends or drops.
struct RecordingBody {
    inner: Option<Incoming>,
    hasher: Sha256,
    /// Taken when the record is written, so it is written once.
    pending: Option<Record>,
    records: Records,
}

impl RecordingBody {
    fn new(inner: Option<Incoming>, pending: Record, records: Records) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            pending: Some(pending),
            records,
        }
    }

    fn finish(&mut self, complete: bool) {
        if let Some(mut record) = self.pending.take() {
            record.sha256 = hex::encode(self.hasher.clone().finalize());
            record.complete = complete;
            self.records
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(record);
        }
    }
}

impl Body for RecordingBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            this.finish(true);
            return Poll::Ready(None);
        };
        let frame = ready!(Pin::new(&mut *inner).poll_frame(cx));
        let ended = inner.is_end_stream();
        match &frame {
            Some(Ok(f)) => {
                if let Some(data) = f.data_ref() {
                    this.hasher.update(data);
                    if let Some(p) = this.pending.as_mut() {
                        p.body_len += data.len() as u64;
                    }
                }
                // hyper stops polling once the body says it ended: record now.
                if ended {
                    this.finish(true);
                }
            }
            Some(Err(_)) => this.finish(false),
            None => this.finish(true),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for RecordingBody {
    fn drop(&mut self) {
        let complete = self.is_end_stream();
        self.finish(complete);
    }
}
