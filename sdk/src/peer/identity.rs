//! A node's peer identity: an ECDSA P-256 key pair and a self-signed certificate, made with
//! `rcgen` at first start and kept in the node's data directory. Neighbours know a node by the
//! SHA-256 of its certificate (the fingerprint the tracker hands out), so no CA is involved.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// File in the data directory that holds the private key and the certificate (PEM).
pub const IDENTITY_FILE: &str = "peer-identity.pem";

/// Why the node's identity could not be made or loaded. Each is a startup error: a node never
/// replaces a key it cannot read, since its neighbours know it by that key.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Making the key pair or certificate failed (a bug or a broken crypto backend).
    #[error("cannot generate the peer key: {0}")]
    Generate(#[source] rcgen::Error),
    /// The key and certificate do not form a usable TLS identity.
    #[error("peer key is not usable for TLS: {0}")]
    Unusable(#[source] rustls::Error),
    /// The identity file exists but could not be read.
    #[error("cannot read the peer identity {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The identity file exists but does not hold a key and certificate that belong together.
    /// Restore it from a backup, or delete it to start with a new key (neighbours then learn
    /// the new fingerprint from the tracker).
    #[error("peer identity {} is corrupt ({reason}); restore it, or delete it to make a new key", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The data directory or the identity file could not be written.
    #[error("cannot write the peer identity to {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Lower-case hex SHA-256 of a certificate's DER bytes: how the tracker names a node's key.
pub fn fingerprint_of(cert_der: &[u8]) -> String {
    hex::encode(Sha256::digest(cert_der))
}

/// The node's key and certificate, ready for TLS. Cheap to clone; `Debug` shows only the
/// fingerprint.
#[derive(Clone)]
pub struct NodeIdentity {
    key: Arc<CertifiedKey>,
    fingerprint: String,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl NodeIdentity {
    /// A fresh identity that lives in memory only (a new fingerprint every run).
    pub fn generate() -> Result<Self, IdentityError> {
        let (identity, _pem) = Self::generate_with_pem()?;
        Ok(identity)
    }

    /// The identity kept in `dir`: loaded from [`IDENTITY_FILE`] if it exists, otherwise made
    /// and written there (the directory is created, the file readable by its owner only).
    /// An unreadable or corrupt file is an error, never silently replaced.
    pub fn load_or_create(dir: &Path) -> Result<Self, IdentityError> {
        let path = dir.join(IDENTITY_FILE);
        match fs::read(&path) {
            Ok(pem) => Self::from_pem(&pem).map_err(|reason| IdentityError::Corrupt {
                path: path.clone(),
                reason,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (identity, pem) = Self::generate_with_pem()?;
                create_private_dir(dir).map_err(|source| IdentityError::Write {
                    path: dir.to_path_buf(),
                    source,
                })?;
                write_private(&path, pem.as_bytes())
                    .map_err(|source| IdentityError::Write { path, source })?;
                Ok(identity)
            }
            Err(source) => Err(IdentityError::Read { path, source }),
        }
    }

    /// Lower-case hex SHA-256 of the certificate: what the node announces to the tracker.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The certificate (DER).
    pub fn certificate(&self) -> &CertificateDer<'static> {
        // `new` never builds a CertifiedKey without a certificate.
        &self.key.cert[0]
    }

    /// The key and certificate as rustls presents them.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.key)
    }

    fn new(
        cert: CertificateDer<'static>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, rustls::Error> {
        let fingerprint = fingerprint_of(&cert);
        let key = CertifiedKey::from_der(vec![cert], key, &super::tls::provider())?;
        key.keys_match()?;
        Ok(Self {
            key: Arc::new(key),
            fingerprint,
        })
    }

    fn generate_with_pem() -> Result<(Self, String), IdentityError> {
        let key_pair = rcgen::KeyPair::generate().map_err(IdentityError::Generate)?;
        let mut params = rcgen::CertificateParams::new(vec!["shoal-peer".to_string()])
            .map_err(IdentityError::Generate)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "shoal peer");
        let cert = params
            .self_signed(&key_pair)
            .map_err(IdentityError::Generate)?;
        let pem = format!("{}{}", key_pair.serialize_pem(), cert.pem());
        let key = PrivateKeyDer::Pkcs8(key_pair.serialize_der().into());
        let identity = Self::new(cert.der().clone(), key).map_err(IdentityError::Unusable)?;
        Ok((identity, pem))
    }

    fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let key = PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("private key: {e}"))?;
        let cert = CertificateDer::from_pem_slice(pem).map_err(|e| format!("certificate: {e}"))?;
        Self::new(cert, key).map_err(|e| e.to_string())
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

/// Writes `contents` to `path` with owner-only permissions, through a temporary file and a
/// rename so a crash never leaves a half-written key behind.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("pem.tmp");
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)
}
