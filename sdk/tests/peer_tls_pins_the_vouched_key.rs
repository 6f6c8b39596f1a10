//! Peer links run over TLS: a client talks only to the server whose certificate the tracker
//! vouched for, and a server talks only to clients that present a certificate.

mod peer_support;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::Empty;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use peer_support::*;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};
use shoal::peer::{tls, NodeIdentity, PeerAddr, PeerError, PeerServerConfig};
use shoal_proto::HaveMsg;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

const STALL: Duration = Duration::from_secs(5);

async fn node_holding_one_segment() -> Node {
    let node = start_node(1 << 20, &["live"], PeerServerConfig::default()).await;
    node.cache.insert(&swarm("live"), &key("1"), payload(5000));
    node
}

#[tokio::test]
async fn fetch_and_haves_work_when_the_key_matches() {
    let node = node_holding_one_segment().await;
    let client = client();
    let t = client
        .fetch(&node.addr, &swarm("live"), &key("1"), STALL)
        .await
        .unwrap();
    assert_eq!(t.bytes, payload(5000));
    let mut haves = Box::pin(client.haves(&node.addr, &swarm("live")).await.unwrap());
    let first = timeout(HANG_GUARD, haves.next()).await.unwrap();
    assert!(
        matches!(&first, Some(Ok(HaveMsg::Snapshot { segments })) if segments == &[key("1")]),
        "{first:?}"
    );
}

#[tokio::test]
async fn server_with_another_key_than_vouched_for_is_refused() {
    let node = node_holding_one_segment().await;
    let vouched = NodeIdentity::generate().unwrap();
    let wrong = PeerAddr {
        addr: node.addr.addr,
        fingerprint: vouched.fingerprint().to_string(),
        quic: None,
    };
    let client = client();
    let err = client
        .fetch(&wrong, &swarm("live"), &key("1"), STALL)
        .await
        .unwrap_err();
    assert!(matches!(err, PeerError::WrongKey(_)), "{err:?}");
    assert!(!err.is_retryable());
    let err = client.haves(&wrong, &swarm("live")).await.err().unwrap();
    assert!(matches!(err, PeerError::WrongKey(_)), "{err:?}");

    // The same client still reaches the node under its real key: pins are per (addr, key).
    let t = client
        .fetch(&node.addr, &swarm("live"), &key("1"), STALL)
        .await
        .unwrap();
    assert_eq!(t.bytes, payload(5000));
}

#[tokio::test]
async fn server_showing_the_vouched_certificate_without_its_key_is_refused() {
    let victim = NodeIdentity::generate().unwrap();
    let impostor = NodeIdentity::generate().unwrap();
    // The impostor presents the victim's certificate but can only sign with its own key.
    let stolen = CertifiedKey::new(
        vec![victim.certificate().clone()],
        impostor.certified_key().key.clone(),
    );
    let mut config = ServerConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(stolen)));
    config.alpn_protocols = vec![tls::ALPN_H2.to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = acceptor.accept(tcp).await;
        }
    });

    let err = client()
        .fetch(
            &PeerAddr {
                addr,
                fingerprint: victim.fingerprint().to_string(),
                quic: None,
            },
            &swarm("live"),
            &key("1"),
            STALL,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, PeerError::WrongKey(_)), "{err:?}");
}

#[tokio::test]
async fn peer_without_a_vouched_key_is_not_contacted() {
    let node = node_holding_one_segment().await;
    let unvouched = PeerAddr {
        addr: node.addr.addr,
        fingerprint: String::new(),
        quic: None,
    };
    let err = client()
        .fetch(&unvouched, &swarm("live"), &key("1"), STALL)
        .await
        .unwrap_err();
    assert!(matches!(err, PeerError::NoFingerprint), "{err:?}");
    assert!(!err.is_retryable());
}

/// Trusts any server: stands for a client that does TLS but has no certificate of its own.
#[derive(Debug)]
struct TrustAnything(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for TrustAnything {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[tokio::test]
async fn client_without_a_certificate_gets_nothing() {
    let node = node_holding_one_segment().await;
    let provider = tls::provider();
    let mut config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(TrustAnything(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![tls::ALPN_H2.to_vec()];
    let tcp = tokio::net::TcpStream::connect(node.addr.addr)
        .await
        .unwrap();
    // In TLS 1.3 the server judges the client's (missing) certificate after the client has
    // finished, so the refusal may surface at the handshake or at the first request.
    let outcome = async {
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::IpAddress(node.addr.addr.ip().into()), tcp)
            .await?;
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        sender
            .send_request(get(&node.addr, "/p2p/v1/live/segments/1"))
            .await
            .map_err(std::io::Error::other)
    };
    let res = timeout(HANG_GUARD, outcome).await.unwrap();
    assert!(
        res.is_err(),
        "a client without a certificate was served: {res:?}"
    );
}

#[tokio::test]
async fn plain_tcp_clients_get_no_data() {
    let node = node_holding_one_segment().await;
    let h2c: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new());
    let req = http::Request::get(format!("http://{}/p2p/v1/live/segments/1", node.addr.addr))
        .body(Empty::new())
        .unwrap();
    let res = timeout(HANG_GUARD, h2c.request(req)).await.unwrap();
    assert!(res.is_err(), "an h2c client was answered: {res:?}");

    let mut tcp = tokio::net::TcpStream::connect(node.addr.addr)
        .await
        .unwrap();
    let _ = tcp
        .write_all(b"GET /p2p/v1/live/segments/1 HTTP/1.1\r\nhost: peer\r\n\r\n")
        .await;
    let mut got = Vec::new();
    let _ = timeout(HANG_GUARD, tcp.read_to_end(&mut got))
        .await
        .expect("the server must close a connection that does not speak TLS");
    assert!(
        !got.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(got.len() < 100, "{} bytes came back", got.len());
}
