//! Every playlist in `tests/fixtures/hls/`: its rewrite and its model are snapshotted, only
//! URIs change, every URI the player will ask for maps back to the URL the origin meant, and
//! m3u8-rs agrees with our reader on the segment list.

mod hls_support;

use hls_support::{assert_only_uris_changed, mapper, reached, same_target, summary, uris, url};
use shoal_core::manifest::hls::{self, Playlist};
use std::path::{Path, PathBuf};
use url::Url;

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hls");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "m3u8"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 10, "fixtures missing in {}", dir.display());
    paths
        .into_iter()
        .map(|p| {
            let name = p.file_stem().unwrap().to_str().unwrap().to_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// Where each fixture pretends to live on the origin.
fn origin_url(name: &str) -> Url {
    url(&format!("https://cdn.example.com/hls/{name}/playlist.m3u8"))
}

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path("snapshots/hls");
    s.set_prepend_module_to_snapshot(false);
    s
}

#[test]
fn rewrites_and_models_match_snapshots() {
    let m = mapper();
    for (name, bytes) in fixtures() {
        let origin = origin_url(&name);
        let processed = hls::process(&bytes, &origin, &m);
        let playlist = processed
            .playlist
            .unwrap_or_else(|e| panic!("{name} does not parse: {e}"));
        let rewritten = String::from_utf8(processed.body.into_owned()).unwrap();
        assert_only_uris_changed(std::str::from_utf8(&bytes).unwrap(), &rewritten);
        settings().bind(|| {
            insta::assert_snapshot!(format!("{name}.rewrite"), rewritten);
            insta::assert_snapshot!(format!("{name}.model"), summary(&playlist));
        });
    }
}

fn all_urls(p: &Playlist) -> Vec<Url> {
    match p {
        Playlist::Master(m) => m
            .variants
            .iter()
            .chain(&m.iframe_playlists)
            .map(|v| v.url.clone())
            .chain(m.renditions.iter().filter_map(|r| r.url.clone()))
            .collect(),
        Playlist::Media(m) => m
            .segments
            .iter()
            .flat_map(|s| {
                let init = s.init.as_ref().map(|i| i.url.clone());
                let key = s.encryption.as_ref().and_then(|e| e.uri.clone());
                std::iter::once(s.url.clone()).chain(init).chain(key)
            })
            .collect(),
    }
}

#[test]
fn every_uri_resolves_through_the_proxy_to_what_the_origin_meant() {
    let m = mapper();
    for (name, bytes) in fixtures() {
        let origin = origin_url(&name);
        let before = hls::parse(&bytes, &origin).unwrap();
        let rewritten = hls::rewrite(std::str::from_utf8(&bytes).unwrap(), &origin, &m);
        // The player resolves the rewritten playlist against the URL it fetched it from.
        let as_player = url(&m.to_proxy(&origin).unwrap());
        let after = hls::parse(rewritten.as_bytes(), &as_player).unwrap();
        let (b, a) = (all_urls(&before), all_urls(&after));
        assert_eq!(b.len(), a.len(), "{name}");
        for (meant, seen) in b.iter().zip(&a) {
            if matches!(meant.scheme(), "http" | "https") {
                same_target(&reached(seen), meant);
            } else {
                assert_eq!(seen, meant, "{name}: non-http URIs are left alone");
            }
        }
    }
}

/// Covers what the model ignores too: LL-HLS parts, preload hints, rendition reports,
/// session data.
#[test]
fn every_uri_of_the_text_resolves_through_the_proxy() {
    let m = mapper();
    for (name, bytes) in fixtures() {
        let origin = origin_url(&name);
        let text = std::str::from_utf8(&bytes).unwrap();
        let rewritten = hls::rewrite(text, &origin, &m);
        let as_player = url(&m.to_proxy(&origin).unwrap());
        let (before, after) = (uris(text), uris(&rewritten));
        assert_eq!(before.len(), after.len(), "{name}");
        for (b, a) in before.iter().zip(&after) {
            let meant = origin.join(b).unwrap();
            let seen = as_player.join(a).unwrap();
            if matches!(meant.scheme(), "http" | "https") {
                same_target(&reached(&seen), &meant);
            } else {
                assert_eq!(a, b, "{name}: non-http URIs are left alone");
            }
        }
    }
}

#[test]
fn hosts_off_the_allow_list_are_fetched_directly() {
    let m = mapper();
    let (_, bytes) = fixtures()
        .into_iter()
        .find(|(n, _)| n == "live_window")
        .unwrap();
    let origin = origin_url("live_window");
    let out = hls::rewrite(std::str::from_utf8(&bytes).unwrap(), &origin, &m);
    assert!(out.contains("\nhttps://ads.example.net/creative/77/seg0.ts\n"));
    assert!(!out.contains("127.0.0.1:8080/ads.example.net"));
}

/// m3u8-rs as an oracle where it is right: same URIs and durations for complete segments.
#[test]
fn m3u8_rs_sees_the_same_segments() {
    for (name, bytes) in fixtures() {
        let origin = origin_url(&name);
        let Playlist::Media(ours) = hls::parse(&bytes, &origin).unwrap() else {
            continue;
        };
        let body = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&bytes);
        let theirs = m3u8_rs::parse_media_playlist_res(body).unwrap();
        assert_eq!(ours.segments.len(), theirs.segments.len(), "{name}");
        assert_eq!(ours.media_sequence, theirs.media_sequence, "{name}");
        assert_eq!(ours.ended, theirs.end_list, "{name}");
        for (o, t) in ours.segments.iter().zip(&theirs.segments) {
            assert_eq!(o.url, origin.join(t.uri.trim()).unwrap(), "{name}");
            assert_eq!(o.duration as f32, t.duration, "{name} {}", o.url);
            assert_eq!(o.discontinuity, t.discontinuity, "{name} {}", o.url);
        }
    }
}
