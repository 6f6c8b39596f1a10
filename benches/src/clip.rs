//! The committed test clips: five 2-second MPEG-TS segments (320×180 test pattern with a tone)
//! for HLS, and the same picture and tone as fragmented MP4 (an initialization segment and
//! five 2-second media segments, video and audio muxed) for DASH; embedded in the binary so
//! the benchmark and the demo need no files at run time.
//!
//! `docs/benchmarks.md` has the ffmpeg commands that made them. To emulate a higher bitrate
//! with a small clip, [`padded`] appends MPEG-TS null packets (PID 0x1FFF), which every demuxer
//! discards: the stream stays playable and each segment weighs what the bitrate says.

/// The clip's segments, in playback order.
pub const SEGMENTS: [&[u8]; 5] = [
    include_bytes!("../assets/clip0.ts"),
    include_bytes!("../assets/clip1.ts"),
    include_bytes!("../assets/clip2.ts"),
    include_bytes!("../assets/clip3.ts"),
    include_bytes!("../assets/clip4.ts"),
];

/// The DASH clip's initialization segment (`moov` of a video and an audio track).
pub const DASH_INIT: &[u8] = include_bytes!("../assets/dash-init.mp4");

/// The DASH clip's media segments (`moof` + `mdat`), in playback order.
pub const DASH_SEGMENTS: [&[u8]; 5] = [
    include_bytes!("../assets/dash0.m4s"),
    include_bytes!("../assets/dash1.m4s"),
    include_bytes!("../assets/dash2.m4s"),
    include_bytes!("../assets/dash3.m4s"),
    include_bytes!("../assets/dash4.m4s"),
];

/// Duration of each clip segment, in seconds (as encoded).
pub const SEGMENT_SECONDS: f64 = 2.0;

/// Size of an MPEG-TS packet.
pub const TS_PACKET: usize = 188;

/// One null packet: sync byte, PID 0x1FFF, payload only, continuity counter 0, stuffing.
fn null_packet() -> [u8; TS_PACKET] {
    let mut p = [0xFFu8; TS_PACKET];
    p[0] = 0x47;
    p[1] = 0x1F;
    p[2] = 0xFF;
    p[3] = 0x10;
    p
}

/// `segment` followed by as many null packets as it takes to weigh at least `target` bytes
/// (never less than the segment itself). The result is a whole number of TS packets.
pub fn padded(segment: &[u8], target: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(target.max(segment.len()) + TS_PACKET);
    out.extend_from_slice(segment);
    let null = null_packet();
    while out.len() < target {
        out.extend_from_slice(&null);
    }
    out
}

/// Bytes of one segment of `seconds` at `bits_per_sec`.
pub fn segment_target_bytes(bits_per_sec: u64, seconds: f64) -> usize {
    (bits_per_sec as f64 * seconds / 8.0).round() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_segments_are_whole_ts_packets() {
        for s in SEGMENTS {
            assert_eq!(s.len() % TS_PACKET, 0);
            assert!(s.chunks(TS_PACKET).all(|p| p[0] == 0x47));
        }
    }

    #[test]
    fn padding_reaches_the_target_with_null_packets_only() {
        let seg = SEGMENTS[0];
        let target = segment_target_bytes(3_000_000, 2.0);
        let out = padded(seg, target);
        assert!(out.len() >= target && out.len() < target + TS_PACKET);
        assert_eq!(&out[..seg.len()], seg);
        for p in out[seg.len()..].chunks(TS_PACKET) {
            assert_eq!(p.len(), TS_PACKET);
            assert_eq!(p[0], 0x47);
            assert_eq!(((p[1] as u16 & 0x1F) << 8) | p[2] as u16, 0x1FFF);
        }
    }

    #[test]
    fn a_target_below_the_segment_keeps_it_whole() {
        let seg = SEGMENTS[1];
        assert_eq!(padded(seg, 10), seg);
    }
}
