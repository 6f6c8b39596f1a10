//! The VOD ladder: two renditions (fMP4 with EXT-X-MAP, TS) and a byte-range one.

use shoal_testkit::{encode_vod_ladder, VodLadder};

fn playlist(ladder: &VodLadder, url_path: &str) -> String {
    let rel = url_path.trim_start_matches("/vod/");
    std::fs::read_to_string(ladder.dir.join(rel)).unwrap()
}

#[test]
fn vod_ladder_has_both_renditions_and_a_master() -> anyhow::Result<()> {
    let out = tempfile::tempdir()?;
    let ladder = encode_vod_ladder(out.path())?;
    assert_eq!(ladder.dir, out.path().join("vod"));

    let master = playlist(&ladder, VodLadder::MASTER);
    let variants: Vec<&str> = master
        .lines()
        .filter(|l| l.starts_with("#EXT-X-STREAM-INF:"))
        .collect();
    assert_eq!(variants.len(), 2, "{master}");
    for v in &variants {
        for attr in ["BANDWIDTH=", "RESOLUTION=", "CODECS=\"avc1."] {
            assert!(v.contains(attr), "{v} lacks {attr}");
        }
    }
    assert!(master.contains("\nfmp4/stream.m3u8\n") && master.contains("\nts/stream.m3u8\n"));

    let fmp4 = playlist(&ladder, VodLadder::FMP4);
    assert!(fmp4.contains("#EXT-X-MAP:URI=\"init.mp4\""), "{fmp4}");
    let ts = playlist(&ladder, VodLadder::TS);
    assert!(!ts.contains("#EXT-X-MAP"), "{ts}");
    let single = playlist(&ladder, VodLadder::SINGLE_FILE);
    assert!(single.contains("#EXT-X-BYTERANGE:"), "{single}");

    let secs = ladder.duration.as_secs_f64();
    for (path, text, ext) in [
        (VodLadder::FMP4, &fmp4, ".m4s"),
        (VodLadder::TS, &ts, ".ts"),
        (VodLadder::SINGLE_FILE, &single, ".ts"),
    ] {
        assert!(text.contains("#EXT-X-PLAYLIST-TYPE:VOD") && text.contains("#EXT-X-ENDLIST"));
        let total: f64 = text
            .lines()
            .filter_map(|l| l.strip_prefix("#EXTINF:"))
            .map(|l| l.trim_end_matches(',').parse::<f64>().unwrap())
            .sum();
        assert!((total - secs).abs() < 0.5, "{path}: {total} s");
        let dir = ladder
            .dir
            .join(path.trim_start_matches("/vod/"))
            .with_file_name("");
        for uri in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            assert!(uri.ends_with(ext), "{path}: {uri}");
            let meta = std::fs::metadata(dir.join(uri))?;
            assert!(meta.len() > 0, "{path}: {uri} is empty");
        }
    }
    assert!(ladder.dir.join("fmp4/init.mp4").is_file());
    Ok(())
}

#[test]
fn vod_ladder_has_a_dash_manifest_with_its_segments() -> anyhow::Result<()> {
    let out = tempfile::tempdir()?;
    let ladder = encode_vod_ladder(out.path())?;
    let mpd = playlist(&ladder, VodLadder::DASH);
    assert!(mpd.contains("type=\"static\"") && mpd.contains("mediaPresentationDuration"));
    assert!(mpd.contains("contentType=\"video\"") && mpd.contains("contentType=\"audio\""));
    assert!(
        mpd.contains("media=\"chunk-$RepresentationID$-$Number%05d$.m4s\""),
        "{mpd}"
    );
    let dash = ladder.dir.join("dash");
    let segments = ladder.duration.as_secs() / ladder.segment_duration.as_secs();
    for id in 0..2 {
        assert!(dash.join(format!("init-{id}.m4s")).is_file());
        for n in 1..=segments {
            let seg = dash.join(format!("chunk-{id}-{n:05}.m4s"));
            assert!(seg.is_file(), "{}", seg.display());
        }
    }
    Ok(())
}

#[test]
fn each_copy_of_the_ladder_is_independent() -> anyhow::Result<()> {
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let la = encode_vod_ladder(a.path())?;
    std::fs::write(la.dir.join("ts/seg_00000.ts"), b"tampered")?;
    let lb = encode_vod_ladder(b.path())?;
    let original = std::fs::read(lb.dir.join("ts/seg_00000.ts"))?;
    assert_ne!(original, b"tampered");
    assert!(original.len() > 1000);
    Ok(())
}
