//! The provider's relay, in-process: iroh-relay's server (HTTPS relay over TCP + websocket,
//! and QUIC address discovery over UDP), so it can run inside the tracker binary or beside it.
//!
//! Its roles: every endpoint keeps one connection to its home relay; a dialler reaches a
//! neighbour through it at once (the relay forwards encrypted QUIC packets it cannot read);
//! it carries the hole-punching signalling (each side's candidates) until a direct path
//! works; it tells each endpoint its reflexive address (QAD); and it carries the traffic of
//! pairs that cannot go direct (symmetric NATs, UDP blocked). Those bytes are the provider's
//! egress: counted as `source="relay"`, never as P2P.

use crate::{chain, Result, TransportError};
use iroh_relay::server::{self as relay, CertConfig, QuicConfig, RelayConfig, Server, TlsConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::sync::Arc;

/// How to run the relay.
#[derive(Debug)]
pub struct RelayServerConfig {
    /// Plain HTTP (captive-portal probe `/generate_204`, and the relay protocol too, should a
    /// client be configured with an http URL). Port 80 in production.
    pub http_addr: SocketAddr,
    /// HTTPS: the relay protocol (websocket) and the latency probe. Port 443 in production.
    pub https_addr: SocketAddr,
    /// QUIC address discovery (UDP). Port 7842 by iroh's convention. `None`: no QAD, and then
    /// endpoints learn no reflexive address and cannot hole-punch (see docs/transport.md).
    pub quic_addr: Option<SocketAddr>,
    /// The certificate chain (leaf first) for the relay's name or IP address.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

/// A running relay; stopped by [`RelayServer::shutdown`] or when dropped.
#[derive(Debug)]
pub struct RelayServer {
    server: Server,
}

impl RelayServer {
    /// Starts the relay on the configured sockets.
    pub async fn start(config: RelayServerConfig) -> Result<RelayServer> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TransportError::Relay(format!("TLS versions: {e}")))?
            .with_no_client_auth()
            .with_single_cert(config.cert_chain, config.key)
            .map_err(|e| TransportError::Relay(format!("certificate or key: {e}")))?;
        let mut relay_config = RelayConfig::new(config.http_addr);
        relay_config.tls = Some(TlsConfig::new(
            config.https_addr,
            CertConfig::Manual { server_config: tls },
        ));
        let mut server_config = relay::ServerConfig::default();
        server_config.relay = Some(relay_config);
        // The QUIC server inherits the HTTPS server's TLS configuration.
        server_config.quic = config.quic_addr.map(QuicConfig::new);
        let server = Server::spawn(server_config)
            .await
            .map_err(|e| TransportError::Relay(chain(&e)))?;
        Ok(RelayServer { server })
    }

    /// The bound HTTPS address.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.server.https_addr()
    }

    /// The bound plain HTTP address.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.server.http_addr()
    }

    /// The bound QUIC address discovery address.
    pub fn quic_addr(&self) -> Option<SocketAddr> {
        self.server.quic_addr()
    }

    /// iroh-relay's own metrics (bytes relayed, clients, …) to export beside the tracker's.
    pub fn metrics(&self) -> &iroh_relay::server::RelayMetrics {
        self.server.metrics()
    }

    /// Stops the relay and waits for its tasks.
    pub async fn shutdown(self) -> Result<()> {
        self.server
            .shutdown()
            .await
            .map_err(|e| TransportError::Relay(chain(&e)))
    }
}
