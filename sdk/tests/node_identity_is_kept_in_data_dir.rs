//! A node's peer key is made once and kept in its data directory: the same directory gives the
//! same fingerprint after a restart, and a damaged key stops the node instead of being
//! silently replaced. Both peer protocols: v2's endpoint key (`peer-endpoint.key`, the
//! default) and v1's key and certificate (`peer-identity.pem`).

use shoal::config::PeerTransport;
use shoal::peer::identity::IDENTITY_FILE;
use shoal::peer::{IdentityError, NodeIdentity};
use shoal::{Node, NodeConfig};
use std::path::Path;

fn config(data_dir: &Path) -> NodeConfig {
    NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        peer_listen: "127.0.0.1:0".parse().unwrap(),
        origins: vec!["origin.invalid".into()],
        data_dir: Some(data_dir.to_path_buf()),
        ..NodeConfig::default()
    }
}

async fn fingerprint_of_node(data_dir: &Path) -> String {
    let node = Node::start(config(data_dir)).await.unwrap();
    let fp = node.fingerprint().to_string();
    node.shutdown().await;
    fp
}

#[tokio::test]
async fn same_data_dir_keeps_the_fingerprint_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("state");
    let first = fingerprint_of_node(&data).await;
    assert_eq!(first.len(), 64);
    assert!(first
        .chars()
        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
    assert_eq!(fingerprint_of_node(&data).await, first);

    let other = tempfile::tempdir().unwrap();
    assert_ne!(fingerprint_of_node(other.path()).await, first);
}

#[cfg(unix)]
#[test]
fn key_file_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    NodeIdentity::load_or_create(dir.path()).unwrap();
    let mode = std::fs::metadata(dir.path().join(IDENTITY_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
}

#[test]
fn fingerprint_is_the_sha256_of_the_certificate() {
    use sha2::{Digest, Sha256};
    let id = NodeIdentity::generate().unwrap();
    assert_eq!(
        id.fingerprint(),
        hex::encode(Sha256::digest(id.certificate()))
    );
}

#[tokio::test]
async fn corrupt_key_file_stops_the_node_and_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(IDENTITY_FILE);
    std::fs::write(&path, b"-----BEGIN PRIVATE KEY-----\nnot base64 at all\n").unwrap();
    let v1 = NodeConfig {
        peer_transport: PeerTransport::Tcp,
        ..config(dir.path())
    };
    let err = Node::start(v1).await.unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("corrupt") && message.contains(IDENTITY_FILE),
        "{message}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"-----BEGIN PRIVATE KEY-----\nnot base64 at all\n",
        "the damaged file must not be replaced"
    );
}

#[test]
fn key_and_certificate_that_do_not_belong_together_are_refused() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    NodeIdentity::load_or_create(a.path()).unwrap();
    NodeIdentity::load_or_create(b.path()).unwrap();
    let pem_a = std::fs::read_to_string(a.path().join(IDENTITY_FILE)).unwrap();
    let pem_b = std::fs::read_to_string(b.path().join(IDENTITY_FILE)).unwrap();
    let key_a = &pem_a[..pem_a.find("-----BEGIN CERTIFICATE").unwrap()];
    let cert_b = &pem_b[pem_b.find("-----BEGIN CERTIFICATE").unwrap()..];
    std::fs::write(a.path().join(IDENTITY_FILE), format!("{key_a}{cert_b}")).unwrap();
    let err = NodeIdentity::load_or_create(a.path()).unwrap_err();
    assert!(matches!(err, IdentityError::Corrupt { .. }), "{err:?}");
}

#[test]
fn unreadable_key_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the file should be: exists, but cannot be read as a file.
    std::fs::create_dir(dir.path().join(IDENTITY_FILE)).unwrap();
    let err = NodeIdentity::load_or_create(dir.path()).unwrap_err();
    assert!(matches!(err, IdentityError::Read { .. }), "{err:?}");
}

#[tokio::test]
async fn corrupt_endpoint_key_stops_the_node_and_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("peer-endpoint.key");
    std::fs::write(&path, b"short").unwrap();
    let err = Node::start(config(dir.path())).await.unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("peer-endpoint.key") && message.contains("expected 32"),
        "{message}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"short");
}

#[cfg(unix)]
#[tokio::test]
async fn endpoint_key_is_readable_by_its_owner_only_and_is_the_announced_key() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let fp = fingerprint_of_node(dir.path()).await;
    let path = dir.path().join("peer-endpoint.key");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let secret: [u8; 32] = std::fs::read(&path).unwrap().try_into().unwrap();
    let public = ed25519_dalek::SigningKey::from_bytes(&secret).verifying_key();
    assert_eq!(fp, hex::encode(public.as_bytes()));
}
