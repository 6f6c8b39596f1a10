//! Inputs the fuzzers found (`fuzz/`, `fuzz_manifests.rs`), kept as tests once fixed: each goes
//! through the same checks as the fuzzers (`fuzz_support`), plus what the fix promises.

mod fuzz_support;

use fuzz_support::hls_support::{mapper, url};
use fuzz_support::{check_dash, check_hls, dash_now, DASH_ORIGIN, HLS_ORIGIN};
use shoal_core::manifest::{dash, hls};

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

/// Rewrites `body` as the proxy would, after the fuzzers' checks; `Err` with the label of a
/// refusal.
fn dash_rewritten(body: &str) -> Result<String, &'static str> {
    check_dash(body.as_bytes());
    let p = dash::process(body.as_bytes(), &url(DASH_ORIGIN), &mapper(), dash_now());
    p.mpd.map_err(|e| e.label())?;
    Ok(String::from_utf8(p.body.into_owned()).expect("UTF-8"))
}

/// A `BaseURL` after its siblings (here an AdaptationSet's, on a port not allow-listed,
/// after its Representations) was applied only to what followed it, so `/rooted/s2.m4s` was
/// rewritten against the MPD's host while the model resolves it against the BaseURL's.
#[test]
fn a_base_url_after_its_siblings_is_the_base_of_all_of_them() {
    let body = include_str!("fixtures/dash/segment_list.mpd").replace(
        "    </AdaptationSet>",
        "<BaseURL>https://cdn.example.com:8443/a/seg.ts</BaseURL>\n    </AdaptationSet>",
    );
    let out = dash_rewritten(&body).unwrap();
    // Not on the allow-list: kept, and the root-relative URL under it too.
    assert!(out.contains("<BaseURL>https://cdn.example.com:8443/a/seg.ts</BaseURL>"));
    assert!(
        out.contains(r#"<SegmentURL media="/rooted/s2.m4s"/>"#),
        "{out}"
    );
}

/// A Period's template is resolved by each Representation with its own BaseURL: it was
/// rewritten against the Period's base, sending a Representation on another host to the
/// MPD's host through the proxy.
#[test]
fn inherited_templates_are_rewritten_for_the_representations_that_use_them() {
    let body = r#"<MPD type="static" mediaPresentationDuration="PT4S"><Period>
<SegmentTemplate timescale="1" duration="2" media="/x/$Number$.m4s"/>
<AdaptationSet><Representation id="r"><BaseURL>https://ads.example.net/f/</BaseURL></Representation></AdaptationSet>
</Period></MPD>"#;
    let out = dash_rewritten(body).unwrap();
    assert!(out.contains(r#"media="/x/$Number$.m4s""#), "{out}");
    // The same template under an allow-listed host goes through the proxy.
    let allowed = body.replace("https://ads.example.net/f/", "https://cdn.example.com/f/");
    let out = dash_rewritten(&allowed).unwrap();
    assert!(
        out.contains(r#"media="http://127.0.0.1:8080/cdn.example.com/x/$Number$.m4s""#),
        "{out}"
    );
}

/// When the Representations inheriting a root-relative template are on different hosts, no
/// one value reaches both: the MPD is refused (passed through) rather than rewritten for one.
#[test]
fn a_root_relative_url_shared_across_hosts_refuses_the_mpd() {
    let body = r#"<MPD type="static" mediaPresentationDuration="PT4S"><Period>
<SegmentTemplate timescale="1" duration="2" media="/x/$Number$.m4s"/>
<AdaptationSet><Representation id="r"><BaseURL>https://ads.example.net/f/</BaseURL></Representation>
<Representation id="s"/></AdaptationSet>
</Period></MPD>"#;
    assert_eq!(dash_rewritten(body), Err("ambiguous_url"));
    // Relative, it means the same path under each: rewritten for both.
    dash_rewritten(&body.replace("/x/", "x/")).unwrap();
}

/// The model takes a level's first `BaseURL`, even an empty `<BaseURL/>`; the rewrite took
/// the first with text.
#[test]
fn an_empty_first_base_url_is_the_first() {
    let body = r#"<MPD type="static" mediaPresentationDuration="PT4S"><BaseURL/><BaseURL>https://ads.example.net/f/</BaseURL>
<Period><AdaptationSet><SegmentTemplate timescale="1" duration="2" media="/x/$Number$.m4s"/>
<Representation id="r"/></AdaptationSet></Period></MPD>"#;
    let out = dash_rewritten(body).unwrap();
    assert!(
        out.contains(r#"media="http://127.0.0.1:8080/cdn.example.com/x/$Number$.m4s""#),
        "{out}"
    );
}

/// Found once the fuzzer no longer skipped MPDs with several BaseURLs: a timeline numbered
/// from `u64::MAX` and a `SegmentList` with a `u64::MAX` duration overflowed (panics in debug
/// builds); now refused.
#[test]
fn segment_numbers_and_list_times_past_u64_are_refused() {
    let timeline = r#"<MPD type="static" mediaPresentationDuration="PT10S"><Period><AdaptationSet>
<SegmentTemplate startNumber="18446744073709551615" media="$Number$.m4s"><SegmentTimeline><S d="2" r="1"/></SegmentTimeline></SegmentTemplate>
<Representation id="v"/></AdaptationSet></Period></MPD>"#;
    assert_eq!(dash_rewritten(timeline), Err("bad_attribute"));
    let list = include_str!("fixtures/dash/segment_list.mpd")
        .replace(r#"duration="20""#, r#"duration="18446744073709551615""#);
    assert_eq!(dash_rewritten(&list), Err("bad_attribute"));
}

/// A second XML declaration with a lenient `version="""` threw the fuzz check's quote
/// scanner off (a false "markup changed"): declarations are now compared whole.
#[test]
fn a_second_xml_declaration_is_markup() {
    let body = include_str!("fixtures/dash/segment_list.mpd").replacen(
        "<?xml version=\"1.0\"?>\n",
        "<?xml version=\"1.0\"?>\n<?xml version=\"\"\"?>\n",
        1,
    );
    dash_rewritten(&body).unwrap();
}
