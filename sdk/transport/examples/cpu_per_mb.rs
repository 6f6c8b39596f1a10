//! CPU per MB of a peer transfer on loopback: peer protocol v2 (QUIC via iroh) against the
//! stack of peer protocol v1 (HTTP/2 over TLS 1.3 over TCP: hyper + tokio-rustls with ring,
//! default HTTP/2 settings, as the SDK's peer client and server use).
//!
//! Both ends run in this process on one tokio runtime; the figure is the process's user +
//! system CPU time (getrusage) for the whole transfer, both ends together, divided by the
//! megabytes moved. One download of `SHOAL_CPU_MB` MB (default 200) in 64 KiB writes, after a
//! warm-up of 8 MB, three rounds each, alternating.
//!
//! `cargo run --release -p shoal-transport --example cpu_per_mb`

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use nix::sys::resource::{getrusage, UsageWho};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use shoal_transport::{PeerConfig, PeerEndpoint, SecretKey};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

const CHUNK: usize = 64 << 10;

fn cpu() -> Duration {
    let u = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    tv(u.user_time()) + tv(u.system_time())
}

fn chunks(bytes: usize) -> impl Iterator<Item = Bytes> {
    let chunk = Bytes::from(vec![0x5a; CHUNK]);
    let n = bytes.div_ceil(CHUNK);
    (0..n).map(move |_| chunk.clone())
}

/// A QUIC endpoint pair on loopback; returns the dialler's connection and the server task.
async fn quic_pair() -> anyhow::Result<(shoal_transport::PeerConnection, PeerEndpoint)> {
    let make = || async {
        let mut c = PeerConfig::new(SecretKey::generate());
        c.bind = "127.0.0.1:0".parse().unwrap();
        c.port_mapping = false;
        PeerEndpoint::bind(c).await
    };
    let (a, b) = (make().await?, make().await?);
    let server = b.clone();
    tokio::spawn(async move {
        while let Some(inc) = server.accept().await {
            let Ok(conn) = inc.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                while let Ok((mut send, mut recv)) = conn.inner().accept_bi().await {
                    let Ok(req) = recv.read_to_end(64).await else {
                        break;
                    };
                    let n: usize = String::from_utf8_lossy(&req).parse().unwrap_or(0);
                    for c in chunks(n) {
                        if send.write_chunk(c).await.is_err() {
                            break;
                        }
                    }
                    let _ = send.finish();
                }
            });
        }
    });
    let conn = a.connect(&b.endpoint_addr()).await?;
    Ok((conn, b))
}

async fn quic_download(
    conn: &shoal_transport::PeerConnection,
    bytes: usize,
) -> anyhow::Result<usize> {
    let (mut send, mut recv) = conn.inner().open_bi().await?;
    send.write_all(bytes.to_string().as_bytes()).await?;
    send.finish()?;
    let mut got = 0;
    while let Some(chunk) = recv.read_chunk(usize::MAX).await? {
        got += chunk.len();
    }
    Ok(got)
}

struct H2 {
    sender: hyper::client::conn::http2::SendRequest<http_body_util::Empty<Bytes>>,
}

/// An HTTP/2 over TLS 1.3 server and one client connection on loopback.
async fn h2_pair() -> anyhow::Result<H2> {
    let ca_key = KeyPair::generate()?;
    let mut ca_p = CertificateParams::new(Vec::<String>::new())?;
    ca_p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_p.self_signed(&ca_key)?;
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse()?)];
    let leaf = p.signed_by(&key, &ca, &ca_key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server_cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )?;
    server_cfg.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let n: usize = req
                            .uri()
                            .path()
                            .trim_start_matches('/')
                            .parse()
                            .unwrap_or(0);
                        let body = StreamBody::new(futures::stream::iter(
                            chunks(n).map(|c| Ok::<_, Infallible>(Frame::data(c))),
                        ));
                        Ok::<_, Infallible>(http::Response::new(body))
                    },
                );
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
            });
        }
    });
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.der().to_vec()))?;
    let mut client_cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    client_cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client_cfg))
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await?;
    let (sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(hyper_util::rt::TokioIo::new(tls))
            .await?;
    tokio::spawn(conn);
    Ok(H2 { sender })
}

async fn h2_download(h2: &mut H2, bytes: usize) -> anyhow::Result<usize> {
    let req = http::Request::get(format!("https://127.0.0.1/{bytes}"))
        .body(http_body_util::Empty::<Bytes>::new())?;
    let resp = h2.sender.send_request(req).await?;
    let mut body = resp.into_body();
    let mut got = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            got += data.len();
        }
    }
    Ok(got)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mb: usize = std::env::var("SHOAL_CPU_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let bytes = mb * 1_000_000;
    let (quic, _server) = quic_pair().await?;
    let mut h2 = h2_pair().await?;
    quic_download(&quic, 8_000_000).await?;
    h2_download(&mut h2, 8_000_000).await?;
    println!("transport            MB   wall s   CPU s   CPU ms/MB   MB/s");
    for round in 0..3 {
        for which in ["quic (iroh, v2)", "h2+tls (v1)"] {
            let (c0, t0) = (cpu(), Instant::now());
            let got = if which.starts_with("quic") {
                quic_download(&quic, bytes).await?
            } else {
                h2_download(&mut h2, bytes).await?
            };
            let (cpu_s, wall) = ((cpu() - c0).as_secs_f64(), t0.elapsed().as_secs_f64());
            anyhow::ensure!(
                got == bytes.div_ceil(CHUNK) * CHUNK,
                "{which}: got {got} bytes"
            );
            println!(
                "{which:<17} {mb:>5} {wall:>8.2} {cpu_s:>7.2} {:>11.2} {:>6.0}  (round {round})",
                cpu_s * 1e3 / mb as f64,
                mb as f64 / wall
            );
        }
    }
    Ok(())
}
