//! Inputs the fuzzers found (`fuzz/`, `fuzz_manifests.rs`), kept as tests once fixed: each goes
//! through the same checks as the fuzzers (`fuzz_support`), plus what the fix promises.

mod fuzz_support;

use fuzz_support::hls_support::{mapper, url};
use fuzz_support::{check_dash, check_hls, dash_now, DASH_ORIGIN, HLS_ORIGIN};
use shoal::manifest::{dash, hls};

const MEDIA_HEAD: &str = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n";

fn template_mpd(template_attrs: &str, rep_id: &str) -> String {
    format!(
        r#"<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT10S">
  <Period>
    <AdaptationSet>
      <SegmentTemplate {template_attrs} media="$RepresentationID$/seg-$Number$.m4s" initialization="$RepresentationID$/init.mp4"/>
      <Representation id="{rep_id}" bandwidth="1"/>
    </AdaptationSet>
  </Period>
</MPD>
"#
    )
}

/// `startNumber` near `u64::MAX` overflowed segment numbers (a panic in debug builds, wrapped
/// numbers in release); now the MPD is refused and passed through.
#[test]
fn segment_numbers_past_u64_are_refused_not_wrapped() {
    let body = template_mpd(
        r#"timescale="1" duration="2" startNumber="18446744073709551615""#,
        "v",
    );
    check_dash(body.as_bytes());
    let p = dash::process(body.as_bytes(), &url(DASH_ORIGIN), &mapper(), dash_now());
    assert_eq!(p.mpd.unwrap_err().label(), "bad_attribute");
}

/// `timescale="0"` made a segment duration infinite, and `Duration::from_secs_f64` panicked.
#[test]
fn a_zero_timescale_does_not_panic() {
    check_dash(template_mpd(r#"timescale="0" duration="2""#, "v").as_bytes());
    let timeline = r#"<?xml version="1.0"?>
<MPD type="static" mediaPresentationDuration="PT10S"><Period><AdaptationSet>
<SegmentTemplate timescale="0" media="$Time$.m4s"><SegmentTimeline><S t="0" d="2" r="2"/></SegmentTimeline></SegmentTemplate>
<Representation id="v"/></AdaptationSet></Period></MPD>"#;
    check_dash(timeline.as_bytes());
}

/// An empty Representation id turned `$RepresentationID$/init.mp4` into the root-relative
/// `/init.mp4`, which through the proxy names no origin.
#[test]
fn representation_ids_that_would_move_template_urls_are_refused() {
    for id in ["", ".", "..", "a/b", "a b", "x?y"] {
        let body = template_mpd(r#"timescale="1" duration="2""#, id);
        check_dash(body.as_bytes());
        let p = dash::process(body.as_bytes(), &url(DASH_ORIGIN), &mapper(), dash_now());
        assert_eq!(p.mpd.unwrap_err().label(), "bad_attribute", "{id:?}");
    }
}

/// `https:seg.ts` (scheme, no `//`) is relative to an https playlist but absolute (and
/// broken) against the http proxy URL; it was kept as written.
#[test]
fn scheme_only_references_are_written_out_in_full() {
    for uri in ["https:seg.ts", "https:", "https:/other/seg.ts"] {
        let body = format!("{MEDIA_HEAD}#EXTINF:4,\n{uri}\n#EXT-X-ENDLIST\n");
        check_hls(body.as_bytes());
        let out = hls::rewrite(&body, &url(HLS_ORIGIN), &mapper());
        assert!(
            out.contains("http://127.0.0.1:8080/cdn.example.com/"),
            "{uri}: {out}"
        );
    }
    let mpd = r#"<?xml version="1.0"?>
<MPD type="static" mediaPresentationDuration="PT4S">
  <BaseURL>https:/v/</BaseURL>
  <Period><AdaptationSet><SegmentTemplate timescale="1" duration="2" media="$Number$.m4s"/>
  <Representation id="r"/></AdaptationSet></Period>
</MPD>"#;
    check_dash(mpd.as_bytes());
}

/// A root-relative URI the proxy cannot carry (a control character in the path) was kept
/// root-relative, so the player asked the proxy for `/hls/...` with no origin host.
#[test]
fn root_relative_uris_the_proxy_cannot_carry_become_absolute() {
    let body = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n/hls/\u{b}34p/index.m3u8\n";
    check_hls(body.as_bytes());
    let out = hls::rewrite(body, &url(HLS_ORIGIN), &mapper());
    assert!(
        out.contains("https://cdn.example.com/hls/%0B34p/index.m3u8"),
        "{out}"
    );
}
