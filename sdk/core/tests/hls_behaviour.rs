//! What the proxy and scheduler rely on, one behaviour per test.

mod hls_support;

use hls_support::{mapper, url};
use shoal_core::manifest::hls::{self, Media, Playlist, PlaylistType};
use shoal_core::manifest::{segment_key, swarm_id_for, ByteRange};

fn media(text: &str, base: &str) -> Media {
    match hls::parse(text.as_bytes(), &url(base)).unwrap() {
        Playlist::Media(m) => m,
        Playlist::Master(_) => panic!("master"),
    }
}

#[test]
fn crlf_bom_and_blanks_survive_byte_for_byte() {
    let text = "\u{feff}#EXTM3U\r\n#EXT-X-TARGETDURATION:4\r\n\r\n#EXTINF:4,\r\n  https://cdn.example.com/a/1.ts?t=1\t\r\n#EXTINF:4,\r\n2.ts\r\n";
    let out = hls::rewrite(text, &url("https://cdn.example.com/a/p.m3u8"), &mapper());
    assert_eq!(
        out,
        "\u{feff}#EXTM3U\r\n#EXT-X-TARGETDURATION:4\r\n\r\n#EXTINF:4,\r\n  http://127.0.0.1:8080/cdn.example.com/a/1.ts?t=1\t\r\n#EXTINF:4,\r\n2.ts\r\n"
    );
}

#[test]
fn relative_uris_that_resolve_through_the_proxy_are_untouched() {
    let text = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:4,\nseg%201.m4s?x=1\n#EXTINF:4,\n../480p/seg2.m4s\n#EXTINF:4,\n./seg3.m4s\n";
    let out = hls::rewrite(
        text,
        &url("https://cdn.example.com/v/720p/p.m3u8"),
        &mapper(),
    );
    assert_eq!(out, text);
}

#[test]
fn uris_that_would_escape_the_origin_path_are_made_absolute() {
    let base = url("https://cdn.example.com/v/720p/p.m3u8");
    let text =
        "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\n/root/seg.ts\n#EXTINF:4,\n../../../up.ts\n";
    let out = hls::rewrite(text, &base, &mapper());
    assert!(
        out.contains("\nhttp://127.0.0.1:8080/cdn.example.com/root/seg.ts\n"),
        "{out}"
    );
    assert!(
        out.contains("\nhttp://127.0.0.1:8080/cdn.example.com/up.ts\n"),
        "{out}"
    );
}

#[test]
fn signed_tokens_are_kept_byte_for_byte() {
    // `url` would turn `'` into `%27` in a query: the raw form must win.
    let text = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\nhttps://cdn.example.com/a/1.ts?sig=a'b%2Fc~d&e=\n";
    let out = hls::rewrite(text, &url("https://cdn.example.com/a/p.m3u8"), &mapper());
    assert!(
        out.contains("\nhttp://127.0.0.1:8080/cdn.example.com/a/1.ts?sig=a'b%2Fc~d&e=\n"),
        "{out}"
    );
}

#[test]
fn tags_that_only_look_like_uris_are_untouched() {
    let text = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,URI=\"https://cdn.example.com/x\"\ns.ts\n# URI=\"https://cdn.example.com/y\"\n#EXT-X-DATERANGE:ID=\"a\",X-URI=\"https://cdn.example.com/z\",START-DATE=\"2026-01-01T00:00:00Z\"\n";
    let out = hls::rewrite(text, &url("https://cdn.example.com/a/p.m3u8"), &mapper());
    assert_eq!(out, text);
}

#[test]
fn byte_ranges_without_offset_continue_the_previous_one() {
    let m = media(
        "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\n#EXT-X-BYTERANGE:100@50\nf.ts\n#EXTINF:4,\n#EXT-X-BYTERANGE:30\nf.ts\n#EXTINF:4,\n#EXT-X-BYTERANGE:7\nf.ts\n",
        "https://cdn.example.com/a/p.m3u8",
    );
    let ranges: Vec<_> = m.segments.iter().map(|s| s.range.unwrap()).collect();
    assert_eq!(
        ranges,
        [
            ByteRange {
                offset: 50,
                length: 100
            },
            ByteRange {
                offset: 150,
                length: 30
            },
            ByteRange {
                offset: 180,
                length: 7
            }
        ]
    );
    assert_eq!(ranges[1].http_range().as_deref(), Some("bytes=150-179"));
    let keys: std::collections::HashSet<_> = m.segments.iter().map(|s| &s.key).collect();
    assert_eq!(keys.len(), 3, "one file, three segments, three keys");
}

#[test]
fn map_and_key_stay_in_effect_until_replaced() {
    let m = media(
        "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-MAP:URI=\"init.mp4\",BYTERANGE=\"720@0\"\n#EXT-X-KEY:METHOD=AES-128,URI=\"k1\"\n#EXTINF:4,\n1.m4s\n#EXTINF:4,\n2.m4s\n#EXT-X-KEY:METHOD=NONE\n#EXTINF:4,\n3.m4s\n",
        "https://cdn.example.com/a/p.m3u8",
    );
    let init = m.segments[0].init.as_ref().unwrap();
    assert_eq!(init.url.as_str(), "https://cdn.example.com/a/init.mp4");
    assert_eq!(
        init.range,
        Some(ByteRange {
            offset: 0,
            length: 720
        })
    );
    assert!(m.segments.iter().all(|s| s.init.as_ref() == Some(init)));
    assert!(m.segments[0].encrypted() && m.segments[1].encrypted());
    assert!(!m.segments[2].encrypted());
}

#[test]
fn live_window_slides_and_endlist_arrives_later() {
    let base = "https://cdn.example.com/live/p.m3u8";
    let v1 = media("#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXT-X-MEDIA-SEQUENCE:100\n#EXTINF:6,\n100.ts?tok=a\n#EXTINF:6,\n101.ts?tok=a\n", base);
    let v2 = media("#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXT-X-MEDIA-SEQUENCE:101\n#EXTINF:6,\n101.ts?tok=b\n#EXT-X-DISCONTINUITY\n#EXTINF:6,\n102.ts?tok=b\n#EXT-X-ENDLIST\n", base);
    assert!(!v1.ended && v2.ended);
    assert_eq!(v1.segments[1].sequence, 101);
    assert_eq!(v2.segments[0].sequence, 101);
    // The same segment seen in two versions with different tokens is the same segment.
    assert_eq!(v1.segments[1].key, v2.segments[0].key);
    assert!(v2.segments[1].discontinuity);
    assert_eq!(v2.playlist_type, None);
}

#[test]
fn skipped_segments_of_a_delta_update_count_in_the_sequence() {
    let m = media(
        "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:10\n#EXT-X-SKIP:SKIPPED-SEGMENTS=5\n#EXTINF:4,\n15.mp4\n#EXT-X-PART:DURATION=1,URI=\"16.0.mp4\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"16.1.mp4\"\n",
        "https://cdn.example.com/a/p.m3u8",
    );
    assert_eq!(m.segments.len(), 1, "parts are not segments");
    assert_eq!(m.segments[0].sequence, 15);
}

#[test]
fn vod_playlist_type_is_read() {
    let m = media("#EXTM3U\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\na.ts\n#EXT-X-ENDLIST\n", "https://cdn.example.com/a/p.m3u8");
    assert_eq!(m.playlist_type, Some(PlaylistType::Vod));
}

#[test]
fn viewers_with_different_tokens_share_swarms_and_keys() {
    let master = |tok: &str| {
        format!("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\n720p.m3u8?tok={tok}\n#EXT-X-STREAM-INF:BANDWIDTH=400000\n360p.m3u8?tok={tok}\n")
    };
    let swarms = |tok: &str| match hls::parse(
        master(tok).as_bytes(),
        &url("https://cdn.example.com/v/master.m3u8"),
    )
    .unwrap()
    {
        Playlist::Master(m) => m
            .variants
            .iter()
            .map(|v| swarm_id_for(&v.url))
            .collect::<Vec<_>>(),
        Playlist::Media(_) => panic!("media"),
    };
    let (a, b) = (swarms("alice"), swarms("bob"));
    assert_eq!(a, b);
    assert_ne!(a[0], a[1], "one swarm per rendition");
    assert_eq!(
        segment_key(&url("https://cdn.example.com/v/720p/1.ts?tok=alice"), None),
        segment_key(&url("https://cdn.example.com/v/720p/1.ts?tok=bob"), None)
    );
}
