//! The provider-signed digest list as the trust anchor: a VOD ladder encoded by ffmpeg is
//! signed with `shoal-tracker digests sign` and served by nginx; two `shoal-edge` proxies hold
//! the provider's public key. The tracker's digest service may fetch no origin at all, so any
//! peer byte a player gets was verified against the signed list. The second viewer of each
//! rendition gets peer bytes, identical to the origin's; with a tampered list, or a list
//! signed by another key, it gets the origin's bytes only, and the peer's are dropped.

mod support;

use clap::Parser;
use shoal_testkit::{encode_vod_ladder, Nginx, RecordingRelay, VodLadder};
use shoal_tracker::config::{Cli, Command};
use shoal_tracker::token::Key;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use support::{assert_identical_media, play_vod, printed_config, sum, Edge};

/// Runs `shoal-tracker <args>` as its `main` does: parsed by its own command line, run by the
/// function `main` calls.
fn shoal_tracker(args: &[&str]) -> String {
    let cli =
        Cli::try_parse_from(std::iter::once("shoal-tracker").chain(args.iter().copied())).unwrap();
    let Some(Command::Digests(cmd)) = cli.command else {
        panic!("not a digests command: {args:?}")
    };
    shoal_tracker::signed_digests::run(&cmd).unwrap()
}

/// An Ed25519 key pair as `token keygen --alg ed25519` writes it: (private file, public line).
fn keygen(dir: &Path, name: &str) -> (String, String) {
    let (private, public) = Key::generate_ed25519_lines(name);
    let path = dir.join(name);
    std::fs::write(&path, format!("{private}\n")).unwrap();
    (path.to_str().unwrap().to_owned(), public)
}

fn sign(key: &str, root: &Path, playlist: &str) {
    let p = root.join(playlist.trim_start_matches('/'));
    let said = shoal_tracker(&[
        "digests",
        "sign",
        "--key",
        key,
        "--playlist",
        p.to_str().unwrap(),
    ]);
    assert!(said.contains("entries"), "{said}");
}

const P2P: &str = "shoal_edge_bytes_total{source=\"p2p\"}";
const UNVERIFIABLE: &str = "shoal_edge_fallbacks_total{reason=\"unverifiable\"}";
const LIST_OK: &str = "shoal_edge_digest_lists_total{result=\"ok\"}";
const LIST_BAD_SIGNATURE: &str = "shoal_edge_digest_lists_total{result=\"bad_signature\"}";

/// What changed in `series` between two scrapes.
fn delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>, series: &str) -> f64 {
    sum(after, series) - sum(before, series)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peer_bytes_are_served_only_against_a_list_the_provider_signed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Three copies of the ladder: signed, signed then tampered with, signed by another key.
    let ladders = [
        encode_vod_ladder(root).unwrap(),
        encode_vod_ladder(&root.join("tampered")).unwrap(),
        encode_vod_ladder(&root.join("foreign")).unwrap(),
    ];
    let (provider, provider_pub) = keygen(root, "provider.key");
    let (other, _) = keygen(root, "other.key");
    for path in [VodLadder::FMP4, VodLadder::TS, VodLadder::SINGLE_FILE] {
        sign(&provider, root, path);
    }
    let tampered = format!("/tampered{}", VodLadder::TS);
    sign(&provider, root, &tampered);
    let list = root.join(format!("{}.sha256", tampered.trim_start_matches('/')));
    let text = std::fs::read_to_string(&list).unwrap();
    // One digest changed: what an attacker who cannot sign would do to pass its own bytes.
    let flipped = if text.starts_with('0') { "1" } else { "0" };
    std::fs::write(&list, format!("{flipped}{}", &text[1..])).unwrap();
    let foreign = format!("/foreign{}", VodLadder::FMP4);
    sign(&other, root, &foreign);

    let nginx = Nginx::start(root).unwrap();
    let origin = nginx.host_port();
    // The digest service may fetch no origin: it cannot vouch for any segment.
    let tracker = shoal_tracker::spawn(shoal_tracker::config::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        announce_interval: Duration::from_secs(2),
        ..Default::default()
    })
    .await
    .unwrap();
    let key_flag = ["--digest-list-key", provider_pub.as_str()];
    let first = Edge::start(&origin, Some(&tracker.url()), &key_flag);
    let second = Edge::start(&origin, Some(&tracker.url()), &key_flag);
    let relay_first = RecordingRelay::start(first.addr).unwrap();
    let relay_second = RecordingRelay::start(second.addr).unwrap();

    for path in [VodLadder::FMP4, VodLadder::TS, VodLadder::SINGLE_FILE] {
        play_vod(&relay_first, &origin, path).await;
        let before = second.metrics().await;
        play_vod(&relay_second, &origin, path).await;
        let after = second.metrics().await;
        assert!(
            delta(&before, &after, P2P) > 0.0,
            "{path}: the second viewer got nothing from peers"
        );
    }
    let m = second.metrics().await;
    assert!(sum(&m, LIST_OK) > 0.0, "no list verified");
    assert_eq!(sum(&m, LIST_BAD_SIGNATURE), 0.0);

    for path in [tampered.as_str(), foreign.as_str()] {
        play_vod(&relay_first, &origin, path).await;
        let before = second.metrics().await;
        play_vod(&relay_second, &origin, path).await;
        let after = second.metrics().await;
        assert_eq!(
            delta(&before, &after, P2P),
            0.0,
            "{path}: peer bytes served without a valid signature"
        );
        assert!(
            delta(&before, &after, UNVERIFIABLE) > 0.0,
            "{path}: the peer's bytes were never offered, so nothing was tested"
        );
        assert!(
            delta(&before, &after, LIST_BAD_SIGNATURE) > 0.0,
            "{path}: the bad signature was not counted"
        );
    }

    // Everything both players received equals the origin's files (ranges included).
    for relay in [&relay_first, &relay_second] {
        assert_identical_media(relay, &nginx, 40);
    }
    drop(ladders);
}

#[test]
fn the_key_and_suffix_are_configurable_and_printed() {
    let (_, public) = Key::generate_ed25519_lines("k1");
    let bare = public.rsplit(' ').next().unwrap().to_owned();
    let printed = printed_config(
        std::process::Command::new(env!("CARGO_BIN_EXE_shoal-edge"))
            .args(["--origin", "cdn.example.com", "--print-config"])
            .args(["--digest-list-suffix", ".digests"])
            .env("SHOAL_EDGE_DIGEST_LIST_KEY", &public),
    );
    assert_eq!(printed["digest_list_key"].as_str(), Some(bare.as_str()));
    assert_eq!(printed["digest_list_suffix"].as_str(), Some(".digests"));

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shoal-edge"))
        .args(["--origin", "cdn.example.com", "--print-config"])
        .args(["--digest-list-key", "k1 ed25519 not-a-key"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--digest-list-key"), "{err}");
}
