//! A test CA and certificates it signs (rcgen), written as PEM files, and a TLS client that
//! reports which certificate a server presented.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A CA that signs server certificates for `localhost` and `127.0.0.1`.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// The CA certificate as PEM (what clients trust).
    pub pem: String,
}

/// A server certificate and key written to files.
pub struct ServerCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The leaf's DER bytes, to recognise it in a handshake.
    pub der: Vec<u8>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let pem = cert.pem();
        Self { cert, key, pem }
    }

    /// Writes the CA certificate to `dir/<file>` and returns the path.
    pub fn write(&self, dir: &Path, file: &str) -> PathBuf {
        let path = dir.join(file);
        std::fs::write(&path, &self.pem).unwrap();
        path
    }

    /// Signs a server certificate for `localhost` and `127.0.0.1` named `cn`, written to
    /// `dir/<cn>.crt` (leaf, then this CA) and `dir/<cn>.key`.
    pub fn issue(&self, dir: &Path, cn: &str) -> ServerCert {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let leaf = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let cert = dir.join(format!("{cn}.crt"));
        let key_path = dir.join(format!("{cn}.key"));
        std::fs::write(&cert, format!("{}{}", leaf.pem(), self.pem)).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        ServerCert {
            cert,
            key: key_path,
            der: leaf.der().to_vec(),
        }
    }

    /// A reqwest client that trusts only this CA.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.pem.as_bytes()).unwrap())
            .build()
            .unwrap()
    }

    /// A rustls client configuration that trusts only this CA.
    pub fn rustls_client(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    /// Connects to `addr` over TLS (server name `localhost`) and returns the stream and the
    /// DER of the leaf certificate the server presented.
    pub async fn handshake(
        &self,
        addr: std::net::SocketAddr,
    ) -> std::io::Result<(
        tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
        Vec<u8>,
    )> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tokio_rustls::TlsConnector::from(self.rustls_client())
            .connect(name, tcp)
            .await?;
        let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        Ok((tls, leaf))
    }
}
