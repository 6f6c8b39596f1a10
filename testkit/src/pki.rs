//! A small certificate authority for tests and labs: a CA and leaf certificates for IP
//! addresses, as PEM files, so a TLS server in a NAT lab (the provider's relay, say) can be
//! trusted through a CA file the way a private deployment would be.

use crate::{io_err, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// A CA whose certificate is written to `ca.pem` in a directory, and which signs leaves there.
pub struct LabCa {
    dir: PathBuf,
    ca: rcgen::Certificate,
    key: KeyPair,
}

/// A leaf certificate and its key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    /// The certificate (the leaf alone; clients hold the CA).
    pub cert: PathBuf,
    /// Its private key (PKCS#8).
    pub key: PathBuf,
}

impl LabCa {
    /// Makes a CA named `name` and writes its certificate to `dir/ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Result<LabCa> {
        let bad = |e: rcgen::Error| io_err("making the lab CA")(std::io::Error::other(e));
        let key = KeyPair::generate().map_err(bad)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(bad)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = params.self_signed(&key).map_err(bad)?;
        let out = LabCa {
            dir: dir.to_path_buf(),
            ca,
            key,
        };
        std::fs::write(out.ca_path(), out.ca.pem()).map_err(io_err("writing ca.pem"))?;
        Ok(out)
    }

    /// Where the CA's certificate is (what clients are told to trust).
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Signs a server certificate for `ip` (its subjectAltName, not a CA) and writes it to
    /// `dir/<ip>.crt` with its key in `dir/<ip>.key`.
    pub fn leaf_for(&self, ip: IpAddr) -> Result<Leaf> {
        let bad = |e: rcgen::Error| io_err("signing a lab certificate")(std::io::Error::other(e));
        let key = KeyPair::generate().map_err(bad)?;
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(bad)?;
        p.is_ca = IsCa::ExplicitNoCa;
        p.subject_alt_names = vec![SanType::IpAddress(ip)];
        p.distinguished_name
            .push(DnType::CommonName, ip.to_string());
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf = p.signed_by(&key, &self.ca, &self.key).map_err(bad)?;
        let out = Leaf {
            cert: self.dir.join(format!("{ip}.crt")),
            key: self.dir.join(format!("{ip}.key")),
        };
        std::fs::write(&out.cert, leaf.pem()).map_err(io_err("writing a lab certificate"))?;
        std::fs::write(&out.key, key.serialize_pem()).map_err(io_err("writing a lab key"))?;
        Ok(out)
    }
}
