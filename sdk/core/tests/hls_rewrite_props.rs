//! Property: for any media playlist (segments, durations, byte ranges, maps, keys, relative and
//! absolute URIs on allowed and other hosts, unknown tags, comments, CRLF), the rewrite changes
//! URIs only, its model has the same segments, and every URI reaches through the proxy the
//! origin URL the original meant.

mod hls_support;

use hls_support::{assert_only_uris_changed, mapper, reached, same_target, url};
use proptest::prelude::*;
use shoal_core::manifest::hls::{self, Media, Playlist};
use url::Url;

const ORIGIN: &str = "https://cdn.example.com/vod/title/720p/index.m3u8";

fn uri() -> impl Strategy<Value = String> {
    let name = "[a-z0-9_-]{1,10}\\.(ts|m4s|mp4)";
    let query = "(\\?[a-z]{1,5}=[A-Za-z0-9%._~-]{0,12}(&[a-z]{1,3}=[A-Za-z0-9]{0,6})?)?";
    (0..9usize, name, query, "[a-z0-9]{1,8}").prop_map(|(kind, name, q, dir)| match kind {
        0 | 1 => format!("{name}{q}"),
        2 => format!("{dir}/{name}{q}"),
        3 => format!("../{dir}/{name}{q}"),
        4 => format!("/{dir}/{name}{q}"),
        5 => format!("https://cdn.example.com/{dir}/{name}{q}"),
        6 => format!("//cdn.example.com/{dir}/{name}{q}"),
        7 => format!("http://127.0.0.1:8000/{dir}/{name}{q}"),
        _ => format!("https://ads.example.net/{dir}/{name}{q}"),
    })
}

/// Lines that carry no model meaning: unknown tags (some with URIs), comments, blanks.
/// Tags the reader models: a generated "unknown" tag must not be one of them (a bare
/// `#EXT-X-MAP` is a malformed modelled tag, which the reader rightly refuses).
const MODELLED: [&str; 8] = [
    "MAP",
    "KEY",
    "GAP",
    "SKIP",
    "MEDIA",
    "ENDLIST",
    "BYTERANGE",
    "DISCONTINUITY",
];

fn noise() -> impl Strategy<Value = String> {
    prop_oneof![
        "#EXT-X-[A-Z]{1,8}(:[A-Z]{1,5}=[0-9]{1,4})?".prop_filter("a modelled tag", |t| {
            let name = t["#EXT-X-".len()..].split(':').next().unwrap_or("");
            !MODELLED.contains(&name)
        }),
        uri().prop_map(|u| format!("#EXT-X-VENDOR:URI=\"{u}\",X=1")),
        "# [ -~]{0,30}",
        uri().prop_map(|u| format!("# see URI=\"{u}\"")),
        Just(String::new()),
        Just("   ".to_owned()),
    ]
}

#[derive(Debug, Clone)]
struct Seg {
    millis: u32,
    title: String,
    uri: String,
    range: Option<(u32, Option<u32>)>,
    key: Option<Option<String>>,
    map: Option<String>,
    discontinuity: bool,
    noise: Vec<String>,
    trailing: &'static str,
}

fn seg() -> impl Strategy<Value = Seg> {
    (
        (1u32..20_000, "[A-Za-z ]{0,8}", uri()),
        proptest::option::weighted(
            0.3,
            (1u32..1_000_000, proptest::option::of(0u32..10_000_000)),
        ),
        proptest::option::weighted(0.15, proptest::option::of(uri())),
        proptest::option::weighted(0.15, uri()),
        proptest::bool::weighted(0.1),
        proptest::collection::vec(noise(), 0..3),
        prop_oneof![Just(""), Just(" "), Just("\t")],
    )
        .prop_map(
            |((millis, title, uri), range, key, map, discontinuity, noise, trailing)| Seg {
                millis,
                title,
                uri,
                range,
                key,
                map,
                discontinuity,
                noise,
                trailing,
            },
        )
}

fn playlist() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec(seg(), 0..40),
        proptest::option::of(0u64..1_000_000),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(segs, seq, crlf, bom, ended)| {
            let eol = if crlf { "\r\n" } else { "\n" };
            let mut lines = vec![format!("{}#EXTM3U", if bom { "\u{feff}" } else { "" })];
            lines.push("#EXT-X-TARGETDURATION:20".into());
            if let Some(s) = seq {
                lines.push(format!("#EXT-X-MEDIA-SEQUENCE:{s}"));
            }
            for s in segs {
                lines.extend(s.noise);
                if s.discontinuity {
                    lines.push("#EXT-X-DISCONTINUITY".into());
                }
                match s.key {
                    Some(Some(k)) => lines.push(format!(
                        "#EXT-X-KEY:METHOD=AES-128,URI=\"{k}\",IV=0x{:032X}",
                        s.millis
                    )),
                    Some(None) => lines.push("#EXT-X-KEY:METHOD=NONE".into()),
                    None => {}
                }
                if let Some(m) = s.map {
                    lines.push(format!("#EXT-X-MAP:URI=\"{m}\""));
                }
                lines.push(format!(
                    "#EXTINF:{}.{:03},{}",
                    s.millis / 1000,
                    s.millis % 1000,
                    s.title
                ));
                match s.range {
                    Some((len, Some(off))) => lines.push(format!("#EXT-X-BYTERANGE:{len}@{off}")),
                    Some((len, None)) => lines.push(format!("#EXT-X-BYTERANGE:{len}")),
                    None => {}
                }
                lines.push(format!("{}{}", s.uri, s.trailing));
            }
            if ended {
                lines.push("#EXT-X-ENDLIST".into());
            }
            lines.into_iter().map(|l| l + eol).collect()
        })
}

fn media(bytes: &[u8], base: &Url) -> Media {
    match hls::parse(bytes, base) {
        Ok(Playlist::Media(m)) => m,
        other => panic!("not a media playlist: {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn rewrite_keeps_every_segment_and_only_changes_uris(text in playlist()) {
        let m = mapper();
        let origin = url(ORIGIN);
        let rewritten = hls::rewrite(&text, &origin, &m);
        assert_only_uris_changed(&text, &rewritten);

        let before = media(text.as_bytes(), &origin);
        // What the player sees: the rewrite, resolved against the proxy URL it came from.
        let after = media(rewritten.as_bytes(), &url(&m.to_proxy(&origin).unwrap()));
        prop_assert_eq!(before.segments.len(), after.segments.len());
        prop_assert_eq!(before.media_sequence, after.media_sequence);
        prop_assert_eq!(before.ended, after.ended);
        for (b, a) in before.segments.iter().zip(&after.segments) {
            prop_assert_eq!(b.sequence, a.sequence);
            prop_assert_eq!(b.duration, a.duration);
            prop_assert_eq!(b.range, a.range);
            prop_assert_eq!(b.discontinuity, a.discontinuity);
            same_target(&reached(&a.url), &b.url);
            prop_assert_eq!(b.init.is_some(), a.init.is_some());
            if let (Some(bi), Some(ai)) = (&b.init, &a.init) {
                same_target(&reached(&ai.url), &bi.url);
            }
            let key_uri = |s: &hls::Segment| s.encryption.as_ref().and_then(|e| e.uri.clone());
            prop_assert_eq!(key_uri(b).is_some(), key_uri(a).is_some());
            if let (Some(bk), Some(ak)) = (key_uri(b), key_uri(a)) {
                same_target(&reached(&ak), &bk);
            }
        }
    }

    /// Rewriting twice changes nothing more: proxy URLs are never proxied again.
    #[test]
    fn rewrite_is_idempotent_through_the_proxy(text in playlist()) {
        let m = mapper();
        let origin = url(ORIGIN);
        let once = hls::rewrite(&text, &origin, &m);
        let twice = hls::rewrite(&once, &origin, &m);
        prop_assert_eq!(once, twice);
    }
}
