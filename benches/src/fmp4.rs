//! Just enough ISO BMFF for the DASH clip: find the decode-time fields of a media segment
//! (`tfdt` of each track fragment, `sidx` earliest presentation time) so a looped clip's
//! segments can be moved forward in time, and pad a segment with a `free` box, which players
//! skip like any top-level box they do not use.

/// One box: its type, where its payload starts and where it ends.
struct BoxAt {
    kind: [u8; 4],
    payload: usize,
    end: usize,
}

/// The boxes directly inside `data[from..to]`; stops at the first malformed header.
fn boxes(data: &[u8], from: usize, to: usize) -> Vec<BoxAt> {
    let mut out = Vec::new();
    let mut at = from;
    while at + 8 <= to {
        let size = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
        let kind = [data[at + 4], data[at + 5], data[at + 6], data[at + 7]];
        let (len, header) = match size {
            1 if at + 16 <= to => (u64_at(data, at + 8) as usize, 16),
            0 => (to - at, 8),
            n => (n as usize, 8),
        };
        if len < header || at + len > to {
            break;
        }
        out.push(BoxAt {
            kind,
            payload: at + header,
            end: at + len,
        });
        at += len;
    }
    out
}

fn u32_at(data: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

fn u64_at(data: &[u8], at: usize) -> u64 {
    (u32_at(data, at) as u64) << 32 | u32_at(data, at + 4) as u64
}

fn child<'a>(list: &'a [BoxAt], kind: &[u8; 4]) -> impl Iterator<Item = &'a BoxAt> + 'a {
    let kind = *kind;
    list.iter().filter(move |b| b.kind == kind)
}

/// `(track_ID, timescale)` of every track of an initialization segment.
pub fn track_timescales(init: &[u8]) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for moov in child(&boxes(init, 0, init.len()), b"moov") {
        for trak in child(&boxes(init, moov.payload, moov.end), b"trak") {
            let inner = boxes(init, trak.payload, trak.end);
            let id = child(&inner, b"tkhd").next().and_then(|t| {
                // version 1 has 64-bit times before the id
                let off = if init[t.payload] == 1 { 20 } else { 12 };
                (t.payload + off + 4 <= t.end).then(|| u32_at(init, t.payload + off))
            });
            let scale = child(&inner, b"mdia").next().and_then(|m| {
                let mdhd = boxes(init, m.payload, m.end)
                    .into_iter()
                    .find(|b| &b.kind == b"mdhd")?;
                let off = if init[mdhd.payload] == 1 { 20 } else { 12 };
                (mdhd.payload + off + 4 <= mdhd.end).then(|| u32_at(init, mdhd.payload + off))
            });
            if let (Some(id), Some(scale)) = (id, scale) {
                out.push((id, scale));
            }
        }
    }
    out
}

/// A decode or presentation time in a media segment: where it is, its width, its timescale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeField {
    /// Byte offset of the value.
    pub offset: usize,
    /// 64-bit (version 1) or 32-bit.
    pub wide: bool,
    /// Ticks per second.
    pub timescale: u32,
}

/// The `sidx` earliest presentation times and `tfdt` base media decode times of a media
/// segment, each with its track's timescale (`tracks` from [`track_timescales`]).
pub fn time_fields(segment: &[u8], tracks: &[(u32, u32)]) -> Vec<TimeField> {
    let scale_of = |id: u32| tracks.iter().find(|t| t.0 == id).map(|t| t.1);
    let mut out = Vec::new();
    let top = boxes(segment, 0, segment.len());
    for sidx in child(&top, b"sidx") {
        // version/flags, reference_ID, timescale, then the earliest presentation time
        let p = sidx.payload;
        if p + 20 <= sidx.end {
            out.push(TimeField {
                offset: p + 12,
                wide: segment[p] == 1,
                timescale: u32_at(segment, p + 8),
            });
        }
    }
    for moof in child(&top, b"moof") {
        for traf in child(&boxes(segment, moof.payload, moof.end), b"traf") {
            let inner = boxes(segment, traf.payload, traf.end);
            let id = child(&inner, b"tfhd")
                .next()
                .filter(|t| t.payload + 8 <= t.end)
                .map(|t| u32_at(segment, t.payload + 4));
            let (Some(tfdt), Some(scale)) = (child(&inner, b"tfdt").next(), id.and_then(scale_of))
            else {
                continue;
            };
            let wide = segment[tfdt.payload] == 1;
            if tfdt.payload + if wide { 12 } else { 8 } <= tfdt.end {
                out.push(TimeField {
                    offset: tfdt.payload + 4,
                    wide,
                    timescale: scale,
                });
            }
        }
    }
    out
}

/// Adds `seconds` (whole ticks of each field's timescale) to every field of `segment`.
pub fn shift(segment: &mut [u8], fields: &[TimeField], seconds: u64) {
    for f in fields {
        let add = seconds * f.timescale as u64;
        if f.wide {
            let v = u64_at(segment, f.offset).wrapping_add(add);
            segment[f.offset..f.offset + 8].copy_from_slice(&v.to_be_bytes());
        } else {
            let v = (u32_at(segment, f.offset) as u64).wrapping_add(add) as u32;
            segment[f.offset..f.offset + 4].copy_from_slice(&v.to_be_bytes());
        }
    }
}

/// `segment` followed by one `free` box that brings it to `target` bytes (at least the
/// segment, plus the 8-byte box header when any padding is due).
pub fn padded(segment: &[u8], target: usize) -> Vec<u8> {
    let mut out = segment.to_vec();
    if target > segment.len() {
        let len = (target - segment.len()).max(8);
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.extend_from_slice(b"free");
        out.resize(segment.len() + len, 0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clip::{DASH_INIT, DASH_SEGMENTS};

    #[test]
    fn the_clip_has_a_video_and_an_audio_track() {
        let t = track_timescales(DASH_INIT);
        assert_eq!(t.len(), 2);
        assert!(t.iter().all(|(_, s)| *s > 0));
    }

    #[test]
    fn every_clip_segment_has_its_tracks_decode_times() {
        let tracks = track_timescales(DASH_INIT);
        for s in DASH_SEGMENTS {
            let f = time_fields(s, &tracks);
            assert!(f.len() >= tracks.len(), "{f:?}");
        }
    }

    #[test]
    fn shifting_moves_each_time_by_whole_seconds_in_its_timescale() {
        let tracks = track_timescales(DASH_INIT);
        let mut seg = DASH_SEGMENTS[1].to_vec();
        let fields = time_fields(&seg, &tracks);
        let before: Vec<u64> = fields.iter().map(|f| u64_at(&seg, f.offset)).collect();
        shift(&mut seg, &fields, 10);
        for (f, b) in fields.iter().zip(before) {
            assert!(f.wide);
            assert_eq!(u64_at(&seg, f.offset), b + 10 * f.timescale as u64);
        }
        assert_eq!(seg.len(), DASH_SEGMENTS[1].len());
    }

    #[test]
    fn padding_is_one_free_box_to_the_target() {
        let seg = DASH_SEGMENTS[0];
        let out = padded(seg, 750_000);
        assert_eq!(out.len(), 750_000);
        let top = boxes(&out, 0, out.len());
        let last = top.last().expect("boxes");
        assert_eq!(&last.kind, b"free");
        assert_eq!(last.end, out.len());
        assert_eq!(&out[..seg.len()], seg);
        assert_eq!(padded(seg, 10), seg);
        assert_eq!(padded(seg, seg.len() + 3).len(), seg.len() + 8);
    }
}
