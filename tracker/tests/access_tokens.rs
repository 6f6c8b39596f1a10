//! With access-token keys configured, announces need a token the content provider signed for
//! the swarm: each way a token can be wrong is refused with 401 and its own reason.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use common::{announce_body, Harness, StoreKind};
use reqwest::StatusCode;
use serde_json::json;
use shoal_tracker::token::{unix_now, Claims, Key, Keys};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_shoal-tracker");

struct Setup {
    h: Harness,
    keys: Keys,
    _dir: tempfile::TempDir,
    key_file: std::path::PathBuf,
}

async fn setup(required: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("keys");
    std::fs::write(&key_file, format!("{}\n", Key::generate_line("k1"))).unwrap();
    let keys = Keys::load(&key_file).unwrap();
    let path = key_file.clone();
    let h = Harness::start_with(StoreKind::Memory, |c| {
        c.auth_keys_file = Some(path);
        c.auth_required = required;
    })
    .await;
    Setup {
        h,
        keys,
        _dir: dir,
        key_file,
    }
}

impl Setup {
    fn token(&self, swarm: &str, exp: u64) -> String {
        self.keys
            .get(None)
            .unwrap()
            .mint(&Claims {
                swarm: swarm.into(),
                exp,
                nbf: None,
                kid: None,
            })
            .unwrap()
    }

    async fn announce_with(
        &self,
        peer: &str,
        swarm: &str,
        token: Option<&str>,
    ) -> (StatusCode, serde_json::Value) {
        let mut body = announce_body(peer, swarm, None);
        if let Some(t) = token {
            body["token"] = json!(t);
        }
        self.h.post("/v1/announce", &body).await
    }
}

#[tokio::test]
async fn a_valid_token_for_the_swarm_or_its_prefix_is_accepted() {
    let s = setup(true).await;
    let later = unix_now() + 3600;
    let (status, v) = s
        .announce_with(
            "p1",
            "cdn.example.com/live/720p.m3u8",
            Some(&s.token("cdn.example.com/live/720p.m3u8", later)),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = s
        .announce_with(
            "p2",
            "cdn.example.com/live/1080p.m3u8",
            Some(&s.token("cdn.example.com/live/*", later)),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn expired_wrong_swarm_forged_missing_and_malformed_tokens_are_refused_with_a_reason() {
    let s = setup(true).await;
    let later = unix_now() + 3600;
    let good_for_a = s.token("swarm-a", later);
    // Same claims, signed with a key this tracker does not hold.
    let stranger = Keys::parse(&Key::generate_line("k1")).unwrap();
    let forged = stranger
        .get(None)
        .unwrap()
        .mint(&Claims {
            swarm: "swarm-a".into(),
            exp: later,
            nbf: None,
            kid: None,
        })
        .unwrap();
    // A genuine token whose scope was widened after signing.
    let (_, mac) = good_for_a.rsplit_once('.').unwrap();
    let widened = format!(
        "v1.{}.{mac}",
        B64.encode(format!(r#"{{"swarm":"*","exp":{later},"kid":"k1"}}"#))
    );
    for (what, swarm, token, error, mentions) in [
        (
            "expired",
            "swarm-a",
            Some(s.token("swarm-a", unix_now() - 1)),
            "token_expired",
            "expired",
        ),
        (
            "replayed into another swarm",
            "swarm-b",
            Some(good_for_a.clone()),
            "token_wrong_swarm",
            "swarm-b",
        ),
        (
            "signed by another key",
            "swarm-a",
            Some(forged),
            "token_bad_signature",
            "signature",
        ),
        (
            "scope widened",
            "swarm-b",
            Some(widened),
            "token_bad_signature",
            "signature",
        ),
        ("missing", "swarm-a", None, "token_missing", "token"),
        (
            "malformed",
            "swarm-a",
            Some("hello".to_owned()),
            "token_malformed",
            "v1.",
        ),
    ] {
        let (status, v) = s.announce_with("p", swarm, token.as_deref()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {v}");
        assert_eq!(v["error"], error, "{what}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains(mentions),
            "{what}: {v}"
        );
    }
    assert_eq!(
        s.h.metric("shoal_tracker_announces_total{result=\"unauthorized\"}")
            .await,
        6.0
    );
    // Nothing refused joined anything.
    assert_eq!(s.h.metric("shoal_tracker_peers").await, 0.0);
}

#[tokio::test]
async fn without_auth_required_a_present_token_must_still_be_valid() {
    let s = setup(false).await;
    let (status, v) = s.announce_with("p1", "s", None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = s.announce_with("p2", "s", Some("v1.bad.token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
}

#[tokio::test]
async fn the_mint_command_makes_a_token_the_tracker_accepts() {
    let s = setup(true).await;
    let out = Command::new(BIN)
        .args(["token", "mint", "--key-file"])
        .arg(&s.key_file)
        .args(["--swarm", "cdn.example.com/*", "--ttl", "1h"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let (status, v) = s
        .announce_with("p", "cdn.example.com/a.m3u8", Some(token.trim()))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = s
        .announce_with("q", "other.example/a.m3u8", Some(token.trim()))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");

    let out = Command::new(BIN)
        .args(["token", "keygen", "--kid", "2026"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    let keys = Keys::parse(&line).unwrap();
    assert!(keys.get(Some("2026")).is_some(), "{line}");

    let out = Command::new(BIN)
        .args(["token", "mint", "--key-file"])
        .arg(&s.key_file)
        .args(["--kid", "nope", "--swarm", "s", "--ttl", "1h"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}
