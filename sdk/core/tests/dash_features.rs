//! A table of MPD features as small fixtures: each is rewritten, and the rewritten MPD parsed
//! again as a player would read it through the proxy; every segment, init and index URL must
//! lead through the proxy to the URL the origin's MPD names, and untouched bytes stay as
//! they were.

use shoal_core::manifest::dash::{self, Addressing, Mpd};
use shoal_core::manifest::{Scheme, UrlMapper};
use std::time::{Duration, SystemTime};
use url::Url;

fn mapper() -> UrlMapper {
    UrlMapper::new(
        "http://127.0.0.1:8080",
        [
            ("cdn.example.com".to_owned(), Scheme::Https),
            ("backup.example.com".to_owned(), Scheme::Https),
        ],
    )
    .unwrap()
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(60)
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/dash/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// Every URL the model names, in order: init, index, file, then segments, per Representation.
fn urls(mpd: &Mpd) -> Vec<Url> {
    let mut out = Vec::new();
    for rep in mpd.periods.iter().flat_map(|p| &p.representations) {
        for r in [&rep.init, &rep.index, &rep.file].into_iter().flatten() {
            out.push(r.url.clone());
        }
        out.extend(rep.segments.iter().map(|s| s.resource.url.clone()));
    }
    out
}

/// Rewrites `name`, re-parses the result from the proxy URL, and checks every URL maps back.
fn check(name: &str) -> (Mpd, String) {
    let m = mapper();
    let origin_url = Url::parse("https://cdn.example.com/path/manifest.mpd?tok=1").unwrap();
    let body = fixture(name);
    let p = dash::process(&body, &origin_url, &m, now());
    let mpd = p.mpd.unwrap_or_else(|e| panic!("{name}: {e}"));
    let rewritten = String::from_utf8(p.body.into_owned()).unwrap();
    let proxy_url = Url::parse(&m.to_proxy(&origin_url).unwrap()).unwrap();
    let seen = dash::parse(rewritten.as_bytes(), &proxy_url, now()).unwrap();
    let (want, got) = (urls(&mpd), urls(&seen));
    assert_eq!(want.len(), got.len(), "{name}");
    assert!(!want.is_empty(), "{name}");
    for (w, g) in want.iter().zip(&got) {
        let origin = if g.as_str().starts_with(m.proxy_base()) {
            m.to_origin(&g[url::Position::BeforePath..url::Position::AfterQuery])
                .unwrap_or_else(|e| panic!("{name}: {g}: {e}"))
        } else {
            g.clone()
        };
        // The proxy form carries no scheme: the mapper's config supplies it.
        assert_eq!(
            &origin[url::Position::BeforeHost..],
            &w[url::Position::BeforeHost..],
            "{name}: {g}"
        );
    }
    (mpd, rewritten)
}

#[test]
fn number_template_with_width_keeps_relative_urls_and_every_other_byte() {
    let (mpd, out) = check("template_number.mpd");
    assert_eq!(out.as_bytes(), fixture("template_number.mpd"));
    let reps = &mpd.periods[0].representations;
    assert_eq!(reps.len(), 2);
    assert_eq!(reps[0].addressing, Addressing::Template);
    assert_eq!(reps[0].segments.len(), 5);
    assert_eq!(
        reps[1].segments[4].resource.url.as_str(),
        "https://cdn.example.com/path/v2/seg-00005.m4s"
    );
    assert_eq!(
        reps[0].init.as_ref().unwrap().url.as_str(),
        "https://cdn.example.com/path/v1/init.mp4"
    );
}

#[test]
fn timeline_with_time_and_bandwidth_and_open_repeat() {
    let (mpd, out) = check("timeline_time.mpd");
    assert!(out.contains("<BaseURL>http://127.0.0.1:8080/cdn.example.com/vod/</BaseURL>"));
    let rep = &mpd.periods[0].representations[0];
    assert_eq!(rep.addressing, Addressing::Timeline);
    // 3 × 2 s, 1 s, then 2 s repeats to the 12 s period end: 6 + 1 + 3 (last one cut short).
    let times: Vec<&str> = rep
        .segments
        .iter()
        .map(|s| s.resource.url.path().rsplit('/').next().unwrap())
        .collect();
    assert_eq!(
        times,
        [
            "t0.m4s",
            "t96000.m4s",
            "t192000.m4s",
            "t288000.m4s",
            "t336000.m4s",
            "t432000.m4s",
            "t528000.m4s"
        ]
    );
    assert!(rep.segments[0]
        .resource
        .url
        .as_str()
        .starts_with("https://cdn.example.com/vod/audio/64000/"));
}

#[test]
fn segment_list_absolute_rooted_relative_and_media_ranges() {
    let (mpd, out) = check("segment_list.mpd");
    assert!(
        out.contains(r#"media="http://127.0.0.1:8080/cdn.example.com/abs/s1.m4s?tok=a&amp;b=c""#)
    );
    // A root-relative reference would leave the origin host through the proxy: made absolute.
    assert!(out.contains(r#"media="http://127.0.0.1:8080/cdn.example.com/rooted/s2.m4s""#));
    assert!(out.contains(r#"media="s3.m4s""#));
    let ranges = &mpd.periods[0].representations[1];
    assert_eq!(ranges.addressing, Addressing::List);
    let r: Vec<_> = ranges
        .segments
        .iter()
        .map(|s| s.resource.range.unwrap())
        .collect();
    assert_eq!((r[0].offset, r[0].length), (800, 1200));
    assert_eq!((r[1].offset, r[1].length), (2000, 1000));
    assert_ne!(
        ranges.segments[0].resource.key,
        ranges.segments[1].resource.key
    );
}

#[test]
fn segment_base_names_the_file_init_and_index_ranges() {
    let (mpd, out) = check("segment_base.mpd");
    assert!(
        out.contains("<BaseURL>http://127.0.0.1:8080/cdn.example.com/od/video_300k.mp4</BaseURL>")
    );
    let rep = &mpd.periods[0].representations[0];
    assert_eq!(rep.addressing, Addressing::Base);
    assert!(rep.segments.is_empty());
    let init = rep.init.as_ref().unwrap().range.unwrap();
    let index = rep.index.as_ref().unwrap().range.unwrap();
    assert_eq!((init.offset, init.length), (0, 862));
    assert_eq!((index.offset, index.length), (862, 188));
}

#[test]
fn several_base_urls_are_alternatives_with_one_key() {
    let (mpd, out) = check("multi_base.mpd");
    assert!(out.contains(r#"serviceLocation="b">http://127.0.0.1:8080/backup.example.com/v/<"#));
    let seg = &mpd.periods[0].representations[0].segments[0];
    assert_eq!(
        seg.resource.url.as_str(),
        "https://cdn.example.com/v/r-1.m4s"
    );
    assert_eq!(
        seg.resource.alternatives[0].as_str(),
        "https://backup.example.com/v/r-1.m4s"
    );
    // Whichever CDN a viewer's MPD lists first, the key is the same.
    let swapped = String::from_utf8(fixture("multi_base.mpd"))
        .unwrap()
        .replace("https://cdn.example.com/v/", "TMP")
        .replace(
            "https://backup.example.com/v/",
            "https://cdn.example.com/v/",
        )
        .replace("TMP", "https://backup.example.com/v/");
    let base = Url::parse("https://cdn.example.com/m.mpd").unwrap();
    let other = dash::parse(swapped.as_bytes(), &base, now()).unwrap();
    let seg2 = &other.periods[0].representations[0].segments[0];
    assert_eq!(seg2.resource.url.host_str(), Some("backup.example.com"));
    assert_eq!(seg2.resource.key, seg.resource.key);
}

#[test]
fn live_multi_period_window_location_and_utc_timing() {
    let (mpd, out) = check("multi_period_live.mpd");
    assert!(mpd.dynamic);
    assert!(out.contains(
        "<Location>http://127.0.0.1:8080/cdn.example.com/live/manifest.mpd?session=1</Location>"
    ));
    assert!(out.contains(r#"value="http://127.0.0.1:8080/cdn.example.com/time""#));
    assert!(out.contains(r#"value="1970-01-01T00:01:00Z""#));
    assert!(out.contains(r#"<Event presentationTime="0" duration="30"/>"#));
    let main = &mpd.periods[1].representations[0];
    let numbers: Vec<u64> = main.segments.iter().map(|s| s.number).collect();
    // 30 s into the main period: segments 100..=114 are complete; 10 s of time shift keep 6.
    assert_eq!(numbers, (109..=114).collect::<Vec<_>>());
    let live = main.live.as_ref().unwrap();
    assert_eq!(live.first_number(), 115);
    assert_eq!(
        live.available_at(115),
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(30 + 32))
    );
    assert_eq!(
        live.segment(115).unwrap().resource.url.as_str(),
        "https://cdn.example.com/path/main/v/115.m4s"
    );
    // Sequences keep increasing across periods.
    let ad = &mpd.periods[0].representations[0];
    assert!(ad.segments.last().unwrap().sequence < main.segments[0].sequence);
    // Both periods' `v` share one swarm: a continuing stream.
    let u = Url::parse("https://cdn.example.com/path/manifest.mpd").unwrap();
    assert_eq!(
        dash::swarm_id(&u, "v").as_str(),
        "cdn.example.com/path/manifest.mpd#v"
    );
}

#[test]
fn bad_mpds_pass_through_unchanged() {
    let m = mapper();
    let url = Url::parse("https://cdn.example.com/x.mpd").unwrap();
    let cases: &[(&[u8], &str)] = &[
        (b"not xml at all <", "not_xml"),
        (b"<MPD><Period>", "not_xml"),
        (b"<?xml version=\"1.0\"?><html><body/></html>", "not_mpd"),
        (b"<MPD type=\"static\"/>", "no_period"),
        (
            b"<MPD mediaPresentationDuration=\"PT4S\"><Period><AdaptationSet><Representation id=\"a\"><SegmentTemplate duration=\"2\" media=\"$Foo$.m4s\"/></Representation></AdaptationSet></Period></MPD>",
            "template",
        ),
        (
            b"<MPD type=\"dynamic\"><Period><AdaptationSet><Representation id=\"a\"/></AdaptationSet></Period></MPD>",
            "missing_attribute",
        ),
        (b"\xff\xfe<MPD/>", "not_utf8"),
    ];
    for (body, label) in cases {
        let p = dash::process(body, &url, &m, now());
        assert_eq!(&p.body[..], *body);
        assert_eq!(p.mpd.unwrap_err().label(), *label);
    }
}
