//! Bodies that are not well-formed HLS: `parse` refuses them without panicking, and `process`
//! passes them to the player byte for byte.

mod hls_support;

use hls_support::{mapper, url};
use shoal_core::manifest::hls::{self, MAX_LINE_LEN};
use shoal_core::manifest::ManifestError;

const GOOD: &str = "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXT-X-MEDIA-SEQUENCE:5\n\
#EXT-X-KEY:METHOD=AES-128,URI=\"https://keys.example.com/k\"\n\
#EXTINF:10,\nhttps://cdn.example.com/a/1.ts\n#EXTINF:10,\n2.ts\n";

fn table() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let mut huge = b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 1 << 20));
    huge.extend(b".ts\n");
    let mut junk = vec![0u8; 4096];
    for (i, b) in junk.iter_mut().enumerate() {
        *b = (i * 7919 % 251) as u8;
    }
    let mut junk_after_header = b"#EXTM3U\n".to_vec();
    junk_after_header.extend(&junk);
    let mut invalid_utf8 = GOOD.as_bytes().to_vec();
    invalid_utf8.extend(b"#EXTINF:10,\n3\xff\xfe.ts\n");
    vec![
        ("empty", vec![], "not_hls"),
        ("missing #EXTM3U", GOOD.as_bytes()[8..].to_vec(), "not_hls"),
        (
            "header glued to a word",
            b"#EXTM3UX\n#EXT-X-TARGETDURATION:1\n".to_vec(),
            "not_hls",
        ),
        (
            "html error page",
            b"<html><body>502 Bad Gateway</body></html>".to_vec(),
            "not_hls",
        ),
        ("json", br#"{"error":"forbidden"}"#.to_vec(), "not_hls"),
        ("binary junk", junk, "not_hls"),
        (
            "binary junk after the header",
            junk_after_header,
            "not_utf8",
        ),
        ("invalid UTF-8 in a URI", invalid_utf8, "not_utf8"),
        ("a 1 MiB line", huge, "line_too_long"),
        ("truncated inside the header", b"#EXTM".to_vec(), "not_hls"),
        (
            "truncated after EXTINF",
            GOOD.as_bytes()[..GOOD.len() - 5].to_vec(),
            "truncated",
        ),
        (
            "truncated inside a quoted URI",
            GOOD.as_bytes()[..GOOD.find("keys.example").unwrap()].to_vec(),
            "bad_tag",
        ),
        (
            "truncated after a variant tag",
            b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\na.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=2\n"
                .to_vec(),
            "truncated",
        ),
        ("only the header", b"#EXTM3U\n".to_vec(), "empty"),
        (
            "URI without EXTINF",
            b"#EXTM3U\n#EXT-X-TARGETDURATION:1\nseg.ts\n".to_vec(),
            "orphan_uri",
        ),
        (
            "no target duration",
            b"#EXTM3U\n#EXTINF:1,\nseg.ts\n".to_vec(),
            "no_target_duration",
        ),
        (
            "duration not a number",
            b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:abc,\ns.ts\n".to_vec(),
            "bad_tag",
        ),
        (
            "negative duration",
            b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:-1,\ns.ts\n".to_vec(),
            "bad_tag",
        ),
        (
            "NaN duration",
            b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:NaN,\ns.ts\n".to_vec(),
            "bad_tag",
        ),
        (
            "bad byte range",
            b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n#EXT-X-BYTERANGE:12@x\ns.ts\n".to_vec(),
            "bad_tag",
        ),
        (
            "map without URI",
            b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MAP:BYTERANGE=\"1@0\"\n".to_vec(),
            "bad_tag",
        ),
        (
            "key without METHOD",
            b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-KEY:URI=\"k\"\n".to_vec(),
            "bad_tag",
        ),
        (
            "variant without BANDWIDTH",
            b"#EXTM3U\n#EXT-X-STREAM-INF:RESOLUTION=1x1\na.m3u8\n".to_vec(),
            "bad_tag",
        ),
        (
            "master and media mixed",
            b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\na.m3u8\n#EXT-X-TARGETDURATION:1\n".to_vec(),
            "mixed",
        ),
    ]
}

#[test]
fn malformed_playlists_are_refused_and_passed_through_unchanged() {
    let m = mapper();
    let base = url("https://cdn.example.com/a/index.m3u8");
    for (what, bytes, label) in table() {
        let err = hls::parse(&bytes, &base).expect_err(what);
        assert_eq!(err.label(), label, "{what}: {err}");
        let processed = hls::process(&bytes, &base, &m);
        assert_eq!(processed.body.as_ref(), bytes.as_slice(), "{what}");
        assert_eq!(processed.playlist.unwrap_err(), err, "{what}");
    }
}

#[test]
fn the_good_playlist_of_the_table_parses() {
    // Guards the table: each row is broken in exactly the way it says.
    let base = url("https://cdn.example.com/a/index.m3u8");
    let hls::Playlist::Media(m) = hls::parse(GOOD.as_bytes(), &base).unwrap() else {
        panic!("not media");
    };
    assert_eq!(m.segments.len(), 2);
    assert_eq!(m.segments[1].sequence, 6);
    assert!(m.segments[1].encrypted());
}

#[test]
fn lines_up_to_the_limit_are_fine() {
    let base = url("https://cdn.example.com/a/index.m3u8");
    let name = "a".repeat(MAX_LINE_LEN - 3);
    let body = format!("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n{name}.ts\n");
    assert!(hls::parse(body.as_bytes(), &base).is_ok());
    let body = format!("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n{name}a.ts\n");
    assert!(matches!(
        hls::parse(body.as_bytes(), &base),
        Err(ManifestError::LineTooLong { line: 4, .. })
    ));
}

proptest::proptest! {
    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
        let _ = hls::parse(&bytes, &url("https://cdn.example.com/a/index.m3u8"));
    }

    /// Mostly HLS-looking noise, so the reader gets past the header and into the tags.
    #[test]
    fn parse_and_rewrite_never_panic_on_hls_like_text(
        body in "(#EXTM3U\n)?((#EXT(INF|-X-(BYTERANGE|KEY|MAP|STREAM-INF|MEDIA|SKIP|TARGETDURATION|PART))?[:=,@\"A-Z0-9./ -]{0,40}|[a-z/:.?=\\\\%]{0,30})\r?\n){0,30}"
    ) {
        let base = url("https://cdn.example.com/a/index.m3u8");
        let _ = hls::parse(body.as_bytes(), &base);
        let _ = hls::rewrite(&body, &base, &mapper());
    }

    #[test]
    fn rewrite_never_panics_on_any_str(text in "(?s).{0,400}") {
        let out = hls::rewrite(&text, &url("https://cdn.example.com/a/index.m3u8"), &mapper());
        proptest::prop_assert_eq!(out.matches('\n').count(), text.matches('\n').count());
    }
}
