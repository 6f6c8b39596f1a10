//! Ed25519 access tokens end to end: `token keygen --alg ed25519` writes a key pair, the
//! tracker is given only the public key, `token mint --alg ed25519 --key <private>` makes
//! tokens it accepts; expired, other-swarm, tampered and HMAC tokens get 401 with their reason.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use common::{announce_body, Harness, StoreKind};
use reqwest::StatusCode;
use serde_json::json;
use shoal_tracker::config::Config;
use shoal_tracker::token::{unix_now, Claims, Key, Keys};
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_shoal-tracker");

fn run(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn mint(private: &Path, swarm: &str) -> String {
    run(&[
        "token",
        "mint",
        "--alg",
        "ed25519",
        "--key",
        private.to_str().unwrap(),
        "--swarm",
        swarm,
        "--ttl",
        "1h",
    ])
}

async fn announce(h: &Harness, peer: &str, swarm: &str, token: &str) -> (StatusCode, String) {
    let mut body = announce_body(peer, swarm, None);
    body["token"] = json!(token);
    let (status, v) = h.post("/v1/announce", &body).await;
    (status, v["error"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn a_tracker_with_the_public_key_accepts_only_tokens_the_private_key_signed() {
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("provider.key");
    let out = run(&[
        "token",
        "keygen",
        "--alg",
        "ed25519",
        "--kid",
        "e1",
        "--out",
        private.to_str().unwrap(),
    ]);
    let public = PathBuf::from(format!("{}.pub", private.display()));
    assert!(out.contains("provider.key.pub"), "{out}");
    // Never overwrites a key.
    let again = Command::new(BIN)
        .args(["token", "keygen", "--alg", "ed25519", "--out"])
        .arg(&private)
        .output()
        .unwrap();
    assert!(!again.status.success());

    // A tracker refuses to start with the signing key.
    let with_private = Config {
        auth_keys_file: Some(private.clone()),
        auth_required: true,
        ..Config::default()
    };
    let err = shoal_tracker::spawn(with_private).await.unwrap_err();
    assert!(err.to_string().contains("public key"), "{err}");

    let pub_path = public.clone();
    let h = Harness::start_with(StoreKind::Memory, |c| {
        c.auth_keys_file = Some(pub_path);
        c.auth_required = true;
    })
    .await;
    let live = "cdn.example.com/live/720p.m3u8";
    let token = mint(&private, "cdn.example.com/live/*");
    assert_eq!(announce(&h, "p1", live, &token).await.0, StatusCode::OK);

    // Replayed into another swarm.
    assert_eq!(
        announce(&h, "p2", "cdn.example.com/vod/a.m3u8", &token).await,
        (StatusCode::UNAUTHORIZED, "token_wrong_swarm".into())
    );
    // Expired: signed with the same private key, an hour ago.
    let signer = Keys::load_signing(&private).unwrap();
    let expired = signer
        .get(None)
        .unwrap()
        .mint(&Claims {
            swarm: live.into(),
            exp: unix_now() - 3600,
            nbf: None,
            kid: None,
        })
        .unwrap();
    assert_eq!(
        announce(&h, "p3", live, &expired).await,
        (StatusCode::UNAUTHORIZED, "token_expired".into())
    );
    // Claims widened under the original signature.
    let (_, sig) = token.rsplit_once('.').unwrap();
    let widened = B64.encode(format!(
        r#"{{"swarm":"*","exp":{},"kid":"e1"}}"#,
        unix_now() + 60
    ));
    assert_eq!(
        announce(&h, "p4", live, &format!("v1.{widened}.{sig}")).await,
        (StatusCode::UNAUTHORIZED, "token_bad_signature".into())
    );
    // An HMAC token naming the same key id.
    let hmac = Keys::parse(&Key::generate_line("e1")).unwrap();
    let h_token = hmac
        .get(None)
        .unwrap()
        .mint(&Claims {
            swarm: live.into(),
            exp: unix_now() + 60,
            nbf: None,
            kid: None,
        })
        .unwrap();
    assert_eq!(
        announce(&h, "p5", live, &h_token).await,
        (StatusCode::UNAUTHORIZED, "token_bad_signature".into())
    );

    // Minting with the public key, or naming the wrong algorithm, fails with a reason.
    let out = Command::new(BIN)
        .args(["token", "mint", "--key"])
        .arg(&public)
        .args(["--swarm", "s", "--ttl", "1h"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot sign"));
    let out = Command::new(BIN)
        .args(["token", "mint", "--alg", "hmac", "--key"])
        .arg(&private)
        .args(["--swarm", "s", "--ttl", "1h"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
