//! `shoal-tracker digests sign`, the real binary: a media playlist with an `EXT-X-MAP` init
//! section (byte range), `EXT-X-BYTERANGE` segments (with and without offset) and a gap
//! becomes a list whose every line is the file's digest, signed so that the SDK's check
//! passes with the `.pub` key; keys that cannot sign and playlists it cannot list are refused
//! with a message.

use sha2::{Digest, Sha256};
use shoal_core::manifest::digests;
use shoal_core::manifest::{dash, hls};
use shoal_proto::signed_list::{self, ListError, ProviderKey};
use std::ffi::OsStr;
use std::fmt::Debug;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_shoal-tracker");

fn run<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn ok<S: AsRef<OsStr> + Debug>(args: &[S]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn refused<S: AsRef<OsStr> + Debug>(args: &[S], why: &str) {
    let out = run(args);
    assert!(!out.status.success(), "{args:?} succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(why), "{args:?}: {err}");
}

fn keygen(dir: &Path, name: &str) -> (String, String) {
    let private = dir.join(name);
    let p = private.to_str().unwrap().to_owned();
    ok(&["token", "keygen", "--alg", "ed25519", "--out", &p]);
    (p.clone(), format!("{p}.pub"))
}

fn hex_sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[test]
fn a_signed_list_names_every_segment_and_init_section_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("v");
    std::fs::create_dir(&media).unwrap();
    let init: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
    let main: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
    let tail = b"a whole segment file".to_vec();
    // The init section is the first 300 bytes of init.mp4; segments are ranges of main.mp4.
    let mut init_file = init.clone();
    init_file.extend_from_slice(b"trailing bytes not in the init section");
    std::fs::write(media.join("init.mp4"), &init_file).unwrap();
    std::fs::write(media.join("main.mp4"), &main).unwrap();
    std::fs::write(dir.path().join("tail.ts"), &tail).unwrap();
    let playlist = media.join("stream.m3u8");
    std::fs::write(
        &playlist,
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n\
         #EXT-X-MAP:URI=\"init.mp4\",BYTERANGE=\"300@0\"\n\
         #EXTINF:2,\n#EXT-X-BYTERANGE:2000@1000\nmain.mp4\n\
         #EXTINF:2,\n#EXT-X-BYTERANGE:1500\nmain.mp4\n\
         #EXTINF:2,\n#EXT-X-GAP\nmissing.mp4\n\
         #EXTINF:2,\n../tail.ts\n#EXT-X-ENDLIST\n",
    )
    .unwrap();
    let (private, public) = keygen(dir.path(), "provider.key");
    let p = playlist.to_str().unwrap();
    let said = ok(&["digests", "sign", "--key", &private, "--playlist", p]);
    assert!(said.contains("4 entries"), "{said}");

    let list = std::fs::read(media.join("stream.m3u8.sha256")).unwrap();
    let sig = std::fs::read(media.join("stream.m3u8.sha256.sig")).unwrap();
    assert_eq!(
        String::from_utf8(list.clone()).unwrap(),
        format!(
            "{} 300 init.mp4 300@0\n{} 2000 main.mp4 2000@1000\n{} 1500 main.mp4 1500@3000\n{} {} ../tail.ts\n",
            hex_sha(&init),
            hex_sha(&main[1000..3000]),
            hex_sha(&main[3000..4500]),
            hex_sha(&tail),
            tail.len()
        )
    );
    // The SDK's check, with the key as the .pub file has it, keys entries as the playlist.
    let key: ProviderKey = std::fs::read_to_string(&public)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let origin = url::Url::parse("https://cdn.example.com/show/v/stream.m3u8").unwrap();
    let list_url = digests::list_url(&origin, signed_list::DEFAULT_SUFFIX);
    let digests = digests::verified_digests(&key, &list_url, &list, &sig).unwrap();
    let hls::Playlist::Media(m) = hls::parse(&std::fs::read(&playlist).unwrap(), &origin).unwrap()
    else {
        panic!("media playlist")
    };
    let mut want = vec![m.segments[0].init.clone().unwrap().key];
    want.extend(m.segments.iter().filter(|s| !s.gap).map(|s| s.key.clone()));
    let got: Vec<_> = digests.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(got, want);

    // Another suffix, another key of another provider: that key does not verify this list.
    ok(&[
        "digests",
        "sign",
        "--key",
        &private,
        "--playlist",
        p,
        "--suffix",
        ".digests",
    ]);
    assert_eq!(
        std::fs::read(media.join("stream.m3u8.digests")).unwrap(),
        list
    );
    let (_, other_public) = keygen(dir.path(), "other.key");
    let other: ProviderKey = std::fs::read_to_string(&other_public)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        digests::verified_digests(&other, &list_url, &list, &sig),
        Err(ListError::BadSignature)
    );
}

#[test]
fn a_signed_mpd_list_names_every_representations_segments_as_its_swarm_keys_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, len: u32, seed: u32| {
        let bytes: Vec<u8> = (0..len).map(|i| (i * seed + seed) as u8).collect();
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, &bytes).unwrap();
        bytes
    };
    // Video: `$Number$` template, 3 segments of 2 s in 6 s. Audio: a SegmentList whose
    // initialization and segments are byte ranges of one file.
    let init_v = file("v/init.mp4", 200, 3);
    let segs: Vec<Vec<u8>> = (1..=3)
        .map(|n| file(&format!("v/seg-{n}.m4s"), 1000 + n, 5 + n))
        .collect();
    let audio = file("a/audio.mp4", 4000, 11);
    let mpd = dir.path().join("stream.mpd");
    std::fs::write(
        &mpd,
        r#"<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT6S">
  <Period id="p0">
    <AdaptationSet mimeType="video/mp4">
      <SegmentTemplate timescale="1000" duration="2000" startNumber="1" media="v/seg-$Number$.m4s" initialization="v/init.mp4"/>
      <Representation id="v1" bandwidth="1000000"/>
    </AdaptationSet>
    <AdaptationSet mimeType="audio/mp4">
      <Representation id="a1" bandwidth="64000">
        <SegmentList timescale="1000" duration="3000">
          <Initialization sourceURL="a/audio.mp4" range="0-99"/>
          <SegmentURL media="a/audio.mp4" mediaRange="100-1999"/>
          <SegmentURL media="a/audio.mp4" mediaRange="2000-3999"/>
        </SegmentList>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>"#,
    )
    .unwrap();
    let (private, public) = keygen(dir.path(), "provider.key");
    let said = ok(&[
        "digests",
        "sign",
        "--key",
        &private,
        "--mpd",
        mpd.to_str().unwrap(),
    ]);
    assert!(said.contains("7 entries"), "{said}");
    let list = std::fs::read(dir.path().join("stream.mpd.sha256")).unwrap();
    let sig = std::fs::read(dir.path().join("stream.mpd.sha256.sig")).unwrap();
    let line = |bytes: &[u8], uri: &str, range: &str| {
        format!("{} {} {uri}{range}\n", hex_sha(bytes), bytes.len())
    };
    let mut want_text = line(&init_v, "v/init.mp4", "");
    for (n, s) in segs.iter().enumerate() {
        want_text += &line(s, &format!("v/seg-{}.m4s", n + 1), "");
    }
    want_text += &line(&audio[..100], "a/audio.mp4", " 100@0");
    want_text += &line(&audio[100..2000], "a/audio.mp4", " 1900@100");
    want_text += &line(&audio[2000..], "a/audio.mp4", " 2000@2000");
    assert_eq!(String::from_utf8(list.clone()).unwrap(), want_text);

    // Served from a CDN, the list verifies and keys its entries as the nodes' DASH swarms do.
    let key: ProviderKey = std::fs::read_to_string(&public)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let origin = url::Url::parse("https://cdn.example.com/show/stream.mpd").unwrap();
    let list_url = digests::list_url(&origin, signed_list::DEFAULT_SUFFIX);
    let digests = digests::verified_digests(&key, &list_url, &list, &sig).unwrap();
    let model = dash::parse(
        &std::fs::read(&mpd).unwrap(),
        &origin,
        shoal_tracker::clock::wall(),
    )
    .unwrap();
    let want: Vec<_> = model.periods[0]
        .representations
        .iter()
        .flat_map(|r| {
            r.init
                .iter()
                .map(|i| i.key.clone())
                .chain(r.segments.iter().map(|s| s.resource.key.clone()))
        })
        .collect();
    let got: Vec<_> = digests.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(got, want);
}

#[test]
fn what_cannot_be_signed_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = keygen(dir.path(), "provider.key");
    let hmac = dir.path().join("hmac.keys");
    std::fs::write(&hmac, ok(&["token", "keygen", "--kid", "h"])).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    };
    std::fs::write(dir.path().join("short.ts"), b"12345").unwrap();
    let good = write(
        "good.m3u8",
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nshort.ts\n",
    );
    let sign = |key: &str, playlist: &str| {
        vec![
            "digests".to_owned(),
            "sign".into(),
            "--key".into(),
            key.into(),
            "--playlist".into(),
            playlist.into(),
        ]
    };
    refused(&sign(&public, &good), "private key");
    refused(
        &sign(hmac.to_str().unwrap(), &good),
        "not an Ed25519 private key",
    );
    let master = write(
        "master.m3u8",
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000\ngood.m3u8\n",
    );
    refused(&sign(&private, &master), "master playlist");
    let missing = write(
        "missing.m3u8",
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nnope.ts\n",
    );
    refused(&sign(&private, &missing), "nope.ts");
    let beyond = write(
        "beyond.m3u8",
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n#EXT-X-BYTERANGE:10@0\nshort.ts\n",
    );
    refused(&sign(&private, &beyond), "ends inside the byte range");
    let remote = write(
        "remote.m3u8",
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nhttps://cdn.example.com/a.ts\n",
    );
    refused(&sign(&private, &remote), "not a file");
    let on_demand = write(
        "on-demand.mpd",
        r#"<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT4S"><Period><AdaptationSet mimeType="video/mp4"><Representation id="v" bandwidth="1"><BaseURL>short.ts</BaseURL><SegmentBase indexRange="0-3"/></Representation></AdaptationSet></Period></MPD>"#,
    );
    refused(&sign(&private, &on_demand), "SegmentBase");
    let mut bad_suffix = sign(&private, &good);
    bad_suffix.extend(["--suffix".into(), "/x".into()]);
    refused(&bad_suffix, "suffix");
    assert!(!dir.path().join("missing.m3u8.sha256").exists());
    ok(&sign(&private, &good));
}
