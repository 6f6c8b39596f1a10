//! What manifest rewriting promises for any input, as checks that panic on a violation. Shared
//! by the stable proptests (`fuzz_manifests.rs`) and the cargo-fuzz targets in `fuzz/`, so both
//! hold the code to the same invariants.
#![allow(dead_code)] // each test binary uses a different part

#[path = "../hls_support/mod.rs"]
pub mod hls_support;

use hls_support::{assert_only_uris_changed, mapper, same_target, url, PROXY};
use shoal_core::manifest::dash::{self, Mpd};
use shoal_core::manifest::hls::{self, Playlist};
use shoal_core::manifest::MapError;
use std::time::{Duration, SystemTime};
use url::Url;

/// Where the fuzzed playlists claim to come from (an allow-listed origin).
pub const HLS_ORIGIN: &str = "https://cdn.example.com/vod/title/720p/index.m3u8";
/// Where the fuzzed MPDs claim to come from.
pub const DASH_ORIGIN: &str = "https://cdn.example.com/path/manifest.mpd?tok=1";

/// A fixed clock for live MPDs, so a failure replays.
pub fn dash_now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// HLS: any bytes go through the proxy's `process` without a panic. A body that does not parse
/// passes through byte-identical. One that parses is rewritten in URIs only (every other line
/// byte-identical), parses again from the proxy URL with the same segments (or variants), each
/// reaching the origin URL the original meant, and rewriting it again changes nothing.
pub fn check_hls(bytes: &[u8]) {
    let m = mapper();
    let origin = url(HLS_ORIGIN);
    // Rewriting is total over text, parsed or not.
    let _ = hls::rewrite(&String::from_utf8_lossy(bytes), &origin, &m);
    let p = hls::process(bytes, &origin, &m);
    let before = match p.playlist {
        Ok(playlist) => playlist,
        Err(_) => {
            assert_eq!(
                &*p.body, bytes,
                "a refused playlist must pass through unchanged"
            );
            return;
        }
    };
    let text = std::str::from_utf8(bytes).expect("a parsed playlist is UTF-8");
    let rewritten = std::str::from_utf8(&p.body).expect("a rewrite of UTF-8 is UTF-8");
    assert_only_uris_changed(text, rewritten);
    let proxy = url(&m.to_proxy(&origin).expect("the origin is allow-listed"));
    let after = hls::parse(rewritten.as_bytes(), &proxy)
        .unwrap_or_else(|e| panic!("the rewritten playlist does not parse: {e}\n{rewritten}"));
    match (&before, &after) {
        (Playlist::Media(b), Playlist::Media(a)) => {
            assert_eq!(b.segments.len(), a.segments.len(), "segment count changed");
            assert_eq!(b.media_sequence, a.media_sequence);
            for (b, a) in b.segments.iter().zip(&a.segments) {
                assert_eq!((b.sequence, b.range), (a.sequence, a.range));
                assert_eq!(b.duration.to_bits(), a.duration.to_bits());
                reaches(&a.url, &b.url);
            }
        }
        (Playlist::Master(b), Playlist::Master(a)) => {
            assert_eq!(b.variants.len(), a.variants.len(), "variant count changed");
            assert_eq!(b.renditions.len(), a.renditions.len());
            for (b, a) in b.variants.iter().zip(&a.variants) {
                reaches(&a.url, &b.url);
            }
        }
        _ => panic!("the rewrite changed the playlist's kind"),
    }
    assert_eq!(
        hls::rewrite(rewritten, &origin, &m),
        rewritten,
        "rewriting a rewritten playlist changed it again"
    );
}

/// DASH: any bytes go through `process` without a panic. A body that does not parse passes
/// through byte-identical. One that parses changes only in attribute values and text (the
/// markup is byte-identical), parses again from the proxy URL with the same Periods,
/// Representations and segments, and every URL reaches the origin URL the original meant.
pub fn check_dash(bytes: &[u8]) {
    let m = mapper();
    let origin = url(DASH_ORIGIN);
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = dash::rewrite(text, &origin, &m);
    }
    let p = dash::process(bytes, &origin, &m, dash_now());
    let before = match p.mpd {
        Ok(mpd) => mpd,
        Err(_) => {
            assert_eq!(&*p.body, bytes, "a refused MPD must pass through unchanged");
            return;
        }
    };
    let text = std::str::from_utf8(bytes).expect("a parsed MPD is UTF-8");
    let rewritten = std::str::from_utf8(&p.body).expect("a rewrite of UTF-8 is UTF-8");
    assert_eq!(
        markup(text),
        markup(rewritten),
        "markup changed:\n{rewritten}"
    );
    let proxy = url(&m.to_proxy(&origin).expect("the origin is allow-listed"));
    let after = dash::parse(rewritten.as_bytes(), &proxy, dash_now())
        .unwrap_or_else(|e| panic!("the rewritten MPD does not parse: {e}\n{rewritten}"));
    assert_eq!(before.periods.len(), after.periods.len());
    for (b, a) in before.periods.iter().zip(&after.periods) {
        assert_eq!(b.representations.len(), a.representations.len());
        for (b, a) in b.representations.iter().zip(&a.representations) {
            assert_eq!(b.addressing, a.addressing, "{}", b.id);
            assert_eq!(b.segments.len(), a.segments.len(), "{}", b.id);
        }
    }
    let (meant, got) = (dash_urls(&before), dash_urls(&after));
    assert_eq!(meant.len(), got.len());
    for (meant, got) in meant.iter().zip(&got) {
        reaches(got, meant);
    }
}

/// A player asking for `got` (from the rewritten manifest) reaches the origin URL the original
/// manifest `meant` (itself through the proxy when it is a proxy URL). Or the proxy refuses
/// the request by its own rules (a path that decodes to control characters or dot segments),
/// and then it refuses `meant` written in the proxy form too: a refusal is the proxy's policy
/// for that URL, never an artefact of the rewrite.
pub fn reaches(got: &Url, meant: &Url) {
    let m = mapper();
    let via_proxy = |u: &Url| {
        if u.as_str().starts_with(PROXY) {
            m.to_origin(&u[url::Position::BeforePath..url::Position::AfterQuery])
        } else {
            Ok(u.clone())
        }
    };
    match via_proxy(got) {
        Ok(reached) => same_target(
            &reached,
            &via_proxy(meant).unwrap_or_else(|_| meant.clone()),
        ),
        // Exactly the URL the origin wrote: whatever happens to it is not the rewrite's doing.
        Err(_) if got == meant => {}
        Err(e) => {
            assert!(
                !matches!(e, MapError::NotAllowed(_)),
                "{got} leads through the proxy to a host not allow-listed ({meant})"
            );
            if let Some(proxied) = m.to_proxy(meant) {
                assert!(
                    via_proxy(&url(&proxied)).is_err(),
                    "the proxy refuses {got} ({e}) but not {proxied}, the same origin URL {meant}"
                );
            }
        }
    }
}

/// Every URL the model names: init, index, file, then segments, per Representation.
pub fn dash_urls(mpd: &Mpd) -> Vec<Url> {
    let mut out = Vec::new();
    for rep in mpd.periods.iter().flat_map(|p| &p.representations) {
        for r in [&rep.init, &rep.index, &rep.file].into_iter().flatten() {
            out.push(r.url.clone());
        }
        out.extend(rep.segments.iter().map(|s| s.resource.url.clone()));
    }
    out
}

/// `xml` with every quoted attribute value and every run of text between tags emptied: what
/// a rewrite that changes only values must leave byte-identical. A naive scanner on purpose,
/// independent of the rewriter's XML reader.
pub fn markup(xml: &str) -> String {
    let mut out = String::with_capacity(xml.len());
    let mut in_tag = false;
    let mut quote = None;
    let mut rest = xml;
    while let Some(c) = rest.chars().next() {
        // XML declarations and processing instructions are never rewritten, and quick-xml
        // reads them leniently (`version="""`): kept whole, not scanned for quotes.
        if !in_tag && rest.starts_with("<?") {
            let end = rest.find("?>").map_or(rest.len(), |e| e + 2);
            out.push_str(&rest[..end]);
            rest = &rest[end..];
            continue;
        }
        rest = &rest[c.len_utf8()..];
        match (in_tag, quote) {
            (true, Some(q)) => {
                if c == q {
                    quote = None;
                    out.push(c);
                }
            }
            (true, None) => {
                out.push(c);
                match c {
                    '"' | '\'' => quote = Some(c),
                    '>' => in_tag = false,
                    _ => {}
                }
            }
            (false, _) => {
                if c == '<' {
                    in_tag = true;
                    out.push(c);
                }
            }
        }
    }
    out
}
