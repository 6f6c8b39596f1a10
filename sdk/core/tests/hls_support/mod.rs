//! Shared by the `hls_*` tests: the mapper they run with, a compact model summary and the
//! "only URIs changed" check.
#![allow(dead_code)] // each test binary uses a different part

use shoal_core::manifest::hls::{Playlist, Segment};
use shoal_core::manifest::{Scheme, UrlMapper};
use url::Url;

pub const PROXY: &str = "http://127.0.0.1:8080";

/// Allows the CDN and key server (https) and a local origin (http); `ads.example.net`,
/// `partner-cdn.example.org` and `steering.example.org` are not allowed.
pub fn mapper() -> UrlMapper {
    UrlMapper::new(
        PROXY,
        [
            ("cdn.example.com".to_owned(), Scheme::Https),
            ("keys.example.com".to_owned(), Scheme::Https),
            ("127.0.0.1:8000".to_owned(), Scheme::Http),
        ],
    )
    .unwrap()
}

pub fn url(s: &str) -> Url {
    Url::parse(s).unwrap()
}

/// One line per variant, rendition and segment: what the scheduler would act on.
pub fn summary(p: &Playlist) -> String {
    let mut out = String::new();
    match p {
        Playlist::Master(m) => {
            out.push_str("master\n");
            for v in &m.variants {
                out.push_str(&format!(
                    "variant bw={} res={:?} codecs={:?} audio={:?} subs={:?} {}\n",
                    v.bandwidth, v.resolution, v.codecs, v.audio, v.subtitles, v.url
                ));
            }
            for r in &m.renditions {
                out.push_str(&format!(
                    "rendition {} group={} name={} lang={:?} {}\n",
                    r.media_type,
                    r.group_id,
                    r.name,
                    r.language,
                    r.url.as_ref().map_or("-", |u| u.as_str())
                ));
            }
            for v in &m.iframe_playlists {
                out.push_str(&format!("iframes bw={} {}\n", v.bandwidth, v.url));
            }
        }
        Playlist::Media(m) => {
            out.push_str(&format!(
                "media target={} seq={} dseq={} ended={} type={:?} iframes={}\n",
                m.target_duration,
                m.media_sequence,
                m.discontinuity_sequence,
                m.ended,
                m.playlist_type,
                m.i_frames_only
            ));
            for s in &m.segments {
                out.push_str(&segment_line(s));
                out.push('\n');
            }
        }
    }
    out
}

fn segment_line(s: &Segment) -> String {
    let mut l = format!("{} {} {}", s.sequence, s.duration, s.url);
    if let Some(r) = s.range {
        l.push_str(&format!(" range={}@{}", r.length, r.offset));
    }
    if s.discontinuity {
        l.push_str(" DISCONTINUITY");
    }
    if s.gap {
        l.push_str(" GAP");
    }
    if let Some(i) = &s.init {
        l.push_str(&format!(" init={}", i.url));
        if let Some(r) = i.range {
            l.push_str(&format!("@{}+{}", r.offset, r.length));
        }
    }
    if let Some(e) = &s.encryption {
        l.push_str(&format!(
            " enc={} key={} iv={:?}",
            e.method,
            e.uri.as_ref().map_or("-", |u| u.as_str()),
            e.iv
        ));
    }
    l.push_str(&format!("\n    key={}", s.key));
    l
}

/// `line` with the contents of every `URI="..."` emptied (an independent, naive scanner, so
/// the library's attribute parser is not checked against itself).
fn without_uri_values(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(i) = rest.find("URI=\"") {
        out.push_str(&rest[..i + 5]);
        rest = &rest[i + 5..];
        match rest.find('"') {
            Some(j) => rest = &rest[j..],
            None => break,
        }
    }
    out.push_str(rest);
    out
}

/// Every line of `rewritten` equals the line of `original` except in URIs: URI lines (their
/// surrounding blanks kept) and `URI="..."` values. Line endings are compared byte for byte.
pub fn assert_only_uris_changed(original: &str, rewritten: &str) {
    let o: Vec<&str> = original.split_inclusive('\n').collect();
    let r: Vec<&str> = rewritten.split_inclusive('\n').collect();
    assert_eq!(o.len(), r.len(), "line count changed");
    for (i, (a, b)) in o.iter().zip(&r).enumerate() {
        if a == b {
            continue;
        }
        let n = i + 1;
        let eol = |s: &str| s.len() - s.trim_end_matches(['\r', '\n']).len();
        assert_eq!(
            &a[a.len() - eol(a)..],
            &b[b.len() - eol(b)..],
            "line {n}: ending changed"
        );
        if a.starts_with("#EXT") {
            assert_eq!(
                without_uri_values(a),
                without_uri_values(b),
                "line {n}: more than URI values changed"
            );
        } else {
            assert!(
                !a.trim_start_matches('\u{feff}').starts_with('#'),
                "line {n}: comment changed"
            );
            let lead = |s: &str| s.len() - s.trim_start().len();
            let trail = |s: &str| s.len() - s.trim_end().len();
            assert_eq!(
                &a[..lead(a)],
                &b[..lead(b)],
                "line {n}: leading blanks changed"
            );
            assert_eq!(
                &a[a.len() - trail(a)..],
                &b[b.len() - trail(b)..],
                "line {n}: trailing blanks changed"
            );
        }
    }
}

/// Every URI a player would request from `text`: URI lines and `URI="..."` values of tags
/// (not `#EXTINF` titles). Naive on purpose, independent of the library's reader.
pub fn uris(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim_start_matches('\u{feff}');
        if line.starts_with("#EXTINF") {
            continue;
        } else if line.starts_with("#EXT") {
            let mut rest = line;
            while let Some(i) = rest.find("URI=\"") {
                rest = &rest[i + 5..];
                let Some(j) = rest.find('"') else { break };
                out.push(rest[..j].to_owned());
                rest = &rest[j + 1..];
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            out.push(line.trim().to_owned());
        }
    }
    out
}

/// The origin URL a player's request for `u` reaches: through the proxy when `u` is a proxy
/// URL, directly otherwise.
pub fn reached(u: &Url) -> Url {
    if u.as_str().starts_with(PROXY) {
        let target = &u[url::Position::BeforePath..url::Position::AfterQuery];
        mapper()
            .to_origin(target)
            .unwrap_or_else(|e| panic!("{u}: {e}"))
    } else {
        u.clone()
    }
}

/// Compares what the player reaches with what the origin playlist meant; the scheme is the
/// proxy's to choose per origin, so `http://127.0.0.1:8000` keeps http and the rest is https.
pub fn same_target(reached: &Url, meant: &Url) {
    let strip = |u: &Url| {
        let mut u = u.clone();
        u.set_fragment(None);
        u[url::Position::BeforeHost..].to_owned()
    };
    assert_eq!(
        strip(reached),
        strip(meant),
        "reached {reached}, meant {meant}"
    );
}
