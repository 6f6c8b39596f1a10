//! Fuzzing manifest handling on stable: real playlists and MPDs from `tests/fixtures`, mutated
//! line by line, value by value and byte by byte, go through the proxy's `process`; whatever
//! parses is rewritten in URLs only and reaches the same origin URLs (see `fuzz_support`).
//! `hls_malformed.rs` covers arbitrary bytes for the HLS reader; the `fuzz/` crate runs the
//! same checks under libFuzzer.

mod fuzz_support;

use fuzz_support::{check_dash, check_hls};
use proptest::prelude::*;
use std::path::PathBuf;

/// Names of the fixtures of `kind` (`hls`, `dash`); names, so a failure shows which.
fn fixtures(kind: &str) -> Vec<String> {
    let dir = fixture_dir(kind);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            e.expect("fixture directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no fixtures in {}", dir.display());
    names
}

fn fixture_dir(kind: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(kind)
}

fn fixture(kind: &str, name: &str) -> Vec<u8> {
    std::fs::read(fixture_dir(kind).join(name)).expect("fixture")
}

/// URI forms the rewriter must tell apart: relative, rooted, climbing, protocol-relative,
/// other hosts, odd ports and case, userinfo, IPv6, proxy URLs already, broken escapes, empty.
const URIS: &[&str] = &[
    "seg.ts",
    "a/b/../c.m4s?x=1&y=%20",
    "/rooted/seg.ts",
    "../../../../up.ts",
    "//cdn.example.com/p/seg.ts",
    "//evil.example.net/p/seg.ts",
    "https://cdn.example.com/a/seg.ts",
    "https://CDN.Example.COM:443/a/seg.ts",
    "https://cdn.example.com:8443/a/seg.ts",
    "http://127.0.0.1:8000/local.ts",
    "http://127.0.0.1:8080/cdn.example.com/already/proxied.ts",
    "https://user:pw@cdn.example.com/a.ts",
    "https://[::1]/v6.ts",
    "https://ads.example.net/ad.ts",
    "data:video/mp2t;base64,AAAA",
    "seg%zz.ts",
    "seg.ts#frag",
    "?only=query",
    "a b.ts",
    "",
    "$RepresentationID$/$Number%05d$.m4s",
    "$Time$.m4s",
    "$Bandwidth$$$$Number$.m4s",
];

/// Values for tags and attributes: numbers at the edges, durations, ranges, odd text.
const VALUES: &[&str] = &[
    "0",
    "-1",
    "1",
    "4.00008",
    "18446744073709551615",
    "18446744073709551616",
    "1e308",
    "NaN",
    "PT0S",
    "PT4.5S",
    "P1Y2M3DT4H5M6.7S",
    "1970-01-01T00:00:00Z",
    "100@0",
    "0-99",
    "99-0",
    "dynamic",
    "static",
    "",
    "\"",
    "&amp;&lt;&#0;",
    "\u{feff}",
];

/// HLS lines to splice in: every tag the model reads, with values from the tables above.
fn hls_line() -> impl Strategy<Value = String> {
    let uri = prop::sample::select(URIS);
    let value = prop::sample::select(VALUES);
    prop_oneof![
        uri.clone().prop_map(str::to_owned),
        value.clone().prop_map(|v| format!("#EXTINF:{v},title")),
        value.clone().prop_map(|v| format!("#EXT-X-BYTERANGE:{v}")),
        value
            .clone()
            .prop_map(|v| format!("#EXT-X-TARGETDURATION:{v}")),
        value
            .clone()
            .prop_map(|v| format!("#EXT-X-MEDIA-SEQUENCE:{v}")),
        (uri.clone(), value.clone())
            .prop_map(|(u, v)| format!("#EXT-X-MAP:URI=\"{u}\",BYTERANGE=\"{v}\"")),
        uri.clone()
            .prop_map(|u| format!("#EXT-X-KEY:METHOD=AES-128,URI=\"{u}\",IV=0x00")),
        value
            .clone()
            .prop_map(|v| format!("#EXT-X-STREAM-INF:BANDWIDTH={v}")),
        uri.clone()
            .prop_map(|u| format!("#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"n\",URI=\"{u}\"")),
        uri.clone()
            .prop_map(|u| format!("#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=1,URI=\"{u}\"")),
        uri.prop_map(|u| format!("#EXT-X-PART:DURATION=1,URI=\"{u}\"")),
        Just("#EXT-X-DISCONTINUITY".to_owned()),
        Just("#EXT-X-ENDLIST".to_owned()),
        Just("#EXT-X-GAP".to_owned()),
        Just("#EXTM3U".to_owned()),
        "[ -~]{0,30}",
    ]
}

/// One edit of a manifest, applied by [`mutate`]. Positions are taken modulo the length.
#[derive(Debug, Clone)]
enum Edit {
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    InsertLine(usize, String),
    /// Replaces the `n`th quoted value (attribute or tag) with this text.
    ReplaceQuoted(usize, String),
    /// Replaces the text of the `n`th element whose text is not blank.
    ReplaceText(usize, String),
    SetByte(usize, u8),
    InsertBytes(usize, Vec<u8>),
    Truncate(usize),
    Crlf,
}

fn edit(line: BoxedStrategy<String>) -> impl Strategy<Value = Edit> {
    let any_value = prop_oneof![
        prop::sample::select(URIS).prop_map(str::to_owned),
        prop::sample::select(VALUES).prop_map(str::to_owned),
    ];
    prop_oneof![
        1 => any::<usize>().prop_map(Edit::DeleteLine),
        1 => any::<usize>().prop_map(Edit::DuplicateLine),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        3 => (any::<usize>(), line).prop_map(|(i, l)| Edit::InsertLine(i, l)),
        3 => (any::<usize>(), any_value.clone()).prop_map(|(i, v)| Edit::ReplaceQuoted(i, v)),
        2 => (any::<usize>(), any_value).prop_map(|(i, v)| Edit::ReplaceText(i, v)),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::SetByte(i, b)),
        1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Edit::InsertBytes(i, b)),
        1 => any::<usize>().prop_map(Edit::Truncate),
        1 => Just(Edit::Crlf),
    ]
}

/// Byte offsets of the contents of every `"..."` in `body`.
fn quoted(body: &[u8]) -> Vec<(usize, usize)> {
    let quotes: Vec<usize> = (0..body.len()).filter(|&i| body[i] == b'"').collect();
    quotes.chunks_exact(2).map(|q| (q[0] + 1, q[1])).collect()
}

/// Byte offsets of every non-blank run of text between `>` and `<`.
fn texts(body: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (i, _) in body.iter().enumerate().filter(|(_, &b)| b == b'>') {
        if let Some(len) = body[i + 1..].iter().position(|&b| b == b'<') {
            if body[i + 1..i + 1 + len]
                .iter()
                .any(|b| !b.is_ascii_whitespace())
            {
                out.push((i + 1, i + 1 + len));
            }
        }
    }
    out
}

fn mutate(mut body: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let mut lines: Vec<Vec<u8>> = body
            .split_inclusive(|&b| b == b'\n')
            .map(<[u8]>::to_vec)
            .collect();
        let n = lines.len().max(1);
        let splice = |body: &mut Vec<u8>, spans: Vec<(usize, usize)>, i: usize, v: &str| {
            if !spans.is_empty() {
                let (a, b) = spans[i % spans.len()];
                body.splice(a..b, v.bytes());
            }
        };
        match e {
            Edit::DeleteLine(i) if !lines.is_empty() => {
                lines.remove(i % n);
            }
            Edit::DuplicateLine(i) if !lines.is_empty() => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            Edit::SwapLines(a, b) if !lines.is_empty() => lines.swap(a % n, b % n),
            Edit::InsertLine(i, l) => {
                lines.insert(i % (lines.len() + 1), format!("{l}\n").into_bytes())
            }
            Edit::ReplaceQuoted(i, v) => {
                let spans = quoted(&body);
                splice(&mut body, spans, *i, v)
            }
            Edit::ReplaceText(i, v) => {
                let spans = texts(&body);
                splice(&mut body, spans, *i, v)
            }
            Edit::SetByte(i, b) if !body.is_empty() => {
                let len = body.len();
                body[i % len] = *b;
            }
            Edit::InsertBytes(i, b) => {
                let at = i % (body.len() + 1);
                body.splice(at..at, b.iter().copied());
            }
            Edit::Truncate(i) => body.truncate(i % (body.len() + 1)),
            Edit::Crlf => {
                for l in &mut lines {
                    if l.ends_with(b"\n") && !l.ends_with(b"\r\n") {
                        l.insert(l.len() - 1, b'\r');
                    }
                }
            }
            _ => {}
        }
        if matches!(
            e,
            Edit::DeleteLine(_)
                | Edit::DuplicateLine(_)
                | Edit::SwapLines(..)
                | Edit::InsertLine(..)
                | Edit::Crlf
        ) {
            body = lines.concat();
        }
    }
    body
}

/// XML fragments to splice into MPDs: the elements the model reads, with odd values.
fn dash_line() -> impl Strategy<Value = String> {
    let uri = prop::sample::select(URIS);
    let value = prop::sample::select(VALUES);
    prop_oneof![
        uri.clone().prop_map(|u| format!("<BaseURL>{u}</BaseURL>")),
        uri.clone().prop_map(|u| format!("<Location>{u}</Location>")),
        (uri.clone(), value.clone()).prop_map(|(u, v)| format!(
            "<SegmentTemplate timescale=\"{v}\" duration=\"2\" startNumber=\"{v}\" media=\"{u}\" initialization=\"{u}\"/>"
        )),
        (value.clone(), value.clone()).prop_map(|(t, r)| format!("<S t=\"{t}\" d=\"2\" r=\"{r}\"/>")),
        (uri.clone(), value.clone()).prop_map(|(u, v)| format!("<SegmentURL media=\"{u}\" mediaRange=\"{v}\"/>")),
        value.clone().prop_map(|v| format!("<Representation id=\"x{v}\" bandwidth=\"{v}\">")),
        value.prop_map(|v| format!("<Period start=\"{v}\" duration=\"{v}\">")),
        uri.prop_map(|u| format!("<UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:http-iso:2014\" value=\"{u}\"/>")),
        Just("</Representation>".to_owned()),
        Just("</Period>".to_owned()),
        Just("<!-- \"quoted\" <BaseURL>x</BaseURL> -->".to_owned()),
        Just("<![CDATA[https://cdn.example.com/x]]>".to_owned()),
        "[ -~]{0,30}",
    ]
}

/// `BaseURL` lists to put at one level of [`based_mpd`]: none, allowed and other hosts,
/// absolute, scheme-relative, root-relative and relative, one or several.
const BASES: &[&str] = &[
    "",
    "<BaseURL>https://cdn.example.com/c/</BaseURL>",
    "<BaseURL>https://ads.example.net/f/</BaseURL>",
    "<BaseURL>//ads.example.net/s/</BaseURL>",
    "<BaseURL>//cdn.example.com/s/</BaseURL>",
    "<BaseURL>https://cdn.example.com:8443/p/</BaseURL>",
    "<BaseURL>/root/</BaseURL>",
    "<BaseURL>rel/</BaseURL>",
    "<BaseURL>../up/</BaseURL>",
    "<BaseURL>https://ads.example.net/f/</BaseURL><BaseURL>https://cdn.example.com/c/</BaseURL>",
    "<BaseURL>https://cdn.example.com/c/</BaseURL><BaseURL>/root/</BaseURL>",
    "<BaseURL/><BaseURL>https://ads.example.net/f/</BaseURL>",
];

/// Segment references for [`based_mpd`]'s template.
const REFS: &[&str] = &[
    "/x/$RepresentationID$-$Number$.m4s",
    "$RepresentationID$-$Number$.m4s",
    "../$Number$.m4s",
    "https://cdn.example.com/abs/$Number$.m4s",
    "//cdn.example.com/sr/$Number$.m4s",
    "//ads.example.net/sr/$Number$.m4s",
    "https://ads.example.net/abs/$Number$.m4s",
];

/// An MPD with `bases[i]` at the MPD, Period, AdaptationSet and two Representation levels
/// (before or after the level's other children), and a template with `media` at `tpl` (0:
/// Period, 1: AdaptationSet, 2: first Representation).
fn based_mpd(bases: [&str; 5], after: [bool; 5], media: &str, tpl: usize) -> String {
    let init = media.replace("$Number$", "init");
    let template = format!(
        r#"<SegmentTemplate timescale="1" duration="2" media="{media}" initialization="{init}"/>"#
    );
    let at = |level: usize, inner: &str| {
        let t = if tpl + 1 == level {
            template.as_str()
        } else {
            ""
        };
        if after[level] {
            format!("{t}{inner}{}", bases[level])
        } else {
            format!("{}{t}{inner}", bases[level])
        }
    };
    let reps = format!(
        r#"<Representation id="r" bandwidth="1">{}</Representation><Representation id="s" bandwidth="1">{}</Representation>"#,
        at(3, ""),
        at(4, "")
    );
    let adaptation = format!("<AdaptationSet>{}</AdaptationSet>", at(2, &reps));
    let period = format!("<Period>{}</Period>", at(1, &adaptation));
    format!(
        r#"<MPD type="static" mediaPresentationDuration="PT4S">{}</MPD>"#,
        at(0, &period)
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        max_global_rejects: 1_000_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_real_playlists_are_rewritten_in_uris_only(
        (name, edits) in (prop::sample::select(fixtures("hls")), prop::collection::vec(edit(hls_line().boxed()), 1..6))
    ) {
        let body = mutate(fixture("hls", &name), &edits);
        check_hls(&body);
    }

    #[test]
    fn mutated_real_mpds_are_rewritten_in_urls_only(
        (name, edits) in (prop::sample::select(fixtures("dash")), prop::collection::vec(edit(dash_line().boxed()), 1..6))
    ) {
        let body = mutate(fixture("dash", &name), &edits);
        check_dash(&body);
    }

    /// BaseURLs at every level, in any order among their siblings, over segment information
    /// inherited from any level: each URL reaches what the model means, and a URL that
    /// would mean different origin URLs under the Representations inheriting it refuses
    /// the MPD rather than mislead one of them.
    #[test]
    fn base_urls_at_every_level_reach_what_the_model_means(
        bases in prop::array::uniform5(prop::sample::select(BASES)),
        after in prop::array::uniform5(any::<bool>()),
        media in prop::sample::select(REFS),
        tpl in 0usize..3,
    ) {
        check_dash(based_mpd(bases, after, media, tpl).as_bytes());
    }

    #[test]
    fn arbitrary_bytes_after_an_mpd_head_never_panic(tail in prop::collection::vec(any::<u8>(), 0..1024)) {
        let mut body = b"<?xml version=\"1.0\"?><MPD type=\"static\"><Period>".to_vec();
        body.extend(tail);
        check_dash(&body);
    }
}

/// Every fixture holds as it is (the mutations start from bodies that pass).
#[test]
fn unmutated_fixtures_hold() {
    for name in fixtures("hls") {
        check_hls(&fixture("hls", &name));
    }
    for name in fixtures("dash") {
        check_dash(&fixture("dash", &name));
    }
}
