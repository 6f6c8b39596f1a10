//! A live Representation's segments to come: names and availability times computed from its
//! template ([`LiveTemplate`]).

use super::model::{resource, ticks, ticks_ms, Segment};
use super::template::{self, Vars};
use crate::manifest::segment_key;
use std::time::{Duration, SystemTime};
use url::Url;

/// Most segments of a live Representation's window learned from one MPD load.
pub(super) const MAX_LIVE_WINDOW: u64 = 256;

/// Names and availability times of a live Representation's segments to come, computed from
/// its template: the node registers each as soon as it becomes available rather than waiting
/// for an MPD refresh (players of `$Number$` templates hardly ever refresh).
#[derive(Debug, Clone, PartialEq)]
pub struct LiveTemplate {
    pub(super) media: String,
    pub(super) representation_id: String,
    pub(super) bandwidth: Option<u64>,
    pub(super) timescale: u64,
    /// Nominal segment duration in timescale units.
    pub(super) duration: u64,
    pub(super) pto: u64,
    /// First number not listed in the MPD, and its media time.
    pub(super) first_number: u64,
    pub(super) first_time: u64,
    /// `availabilityStartTime` + period start.
    pub(super) period_anchor: SystemTime,
    pub(super) period_start_ms: u64,
    /// Numbers beyond this are past the period's end.
    pub(super) last_number: Option<u64>,
    /// `timeShiftBufferDepth`: how long a segment stays available after it appears.
    pub(super) time_shift_buffer_depth: Option<Duration>,
    pub(super) bases: Vec<Url>,
    /// For a `$Time$` timeline whose last `S` repeats a fixed duration (`r` ≥ 1): the next
    /// names assume that cadence holds, a guess, so the ticker prefetches no number past this
    /// one until a newer MPD confirms the timeline. `None`: the names are exact.
    pub(super) guessed_after: Option<u64>,
}

impl LiveTemplate {
    /// The first segment number the MPD did not list (the next to appear).
    pub fn first_number(&self) -> u64 {
        self.first_number
    }

    /// The last number worth prefetching before the next MPD load: `None` when every name
    /// the template gives is exact (`$Number$`, or a timeline ending in `r="-1"`); for a
    /// `$Time$` timeline whose cadence is only assumed, a few segments past the MPD's last
    /// listed one ([`GUESSED_SEGMENTS`]), so a wrong guess costs the origin that many 404s.
    pub fn prefetch_limit(&self) -> Option<u64> {
        self.guessed_after
    }

    /// Segment `number`; `None` past the period's end, before its start, or for a number the
    /// template cannot name. Numbers below [`LiveTemplate::first_number`] are the ones the
    /// MPD listed (or, behind its window, listed no more).
    pub fn segment(&self, number: u64) -> Option<Segment> {
        if self.last_number.is_some_and(|l| number > l) {
            return None;
        }
        let time = self.time_of(number)?;
        let vars = Vars {
            representation_id: &self.representation_id,
            bandwidth: self.bandwidth,
            number: Some(number),
            time: Some(time),
        };
        let rel = template::expand(&self.media, &vars).ok()?;
        let resource = resource(&self.bases, &rel, None).ok()?;
        Some(Segment {
            resource,
            number,
            sequence: self
                .period_start_ms
                .saturating_add(ticks_ms(time.saturating_sub(self.pto), self.timescale)),
            duration: ticks(self.duration, self.timescale),
        })
    }

    /// When segment `number` is complete at the origin: the anchor plus its end time.
    pub fn available_at(&self, number: u64) -> Option<SystemTime> {
        let end = self.time_of(number)?.checked_add(self.duration)?;
        let offset = ticks(end.saturating_sub(self.pto), self.timescale);
        self.period_anchor.checked_add(offset)
    }

    /// Whether segment `number` may be asked of the origin at `now`: complete (give or take
    /// `skew`, for a player whose clock runs a little ahead of ours), not past the period's
    /// end, and not yet out of the time-shift buffer (without `timeShiftBufferDepth`, the
    /// [`MAX_LIVE_WINDOW`] segments the model lists at most). Arithmetic only: an absurd
    /// number costs nothing.
    pub fn is_available(&self, number: u64, now: SystemTime, skew: Duration) -> bool {
        if self.last_number.is_some_and(|l| number > l) {
            return false;
        }
        let Some(at) = self.available_at(number) else {
            return false;
        };
        let seg = ticks(self.duration, self.timescale);
        let depth = self
            .time_shift_buffer_depth
            .unwrap_or_else(|| seg.saturating_mul(MAX_LIVE_WINDOW as u32));
        let complete = now.checked_add(skew).is_some_and(|late| at <= late);
        // Available until its end plus the buffer depth (ISO/IEC 23009-1 §5.3.9.5.3).
        let kept = at
            .checked_add(depth.saturating_add(seg))
            .is_none_or(|gone| now <= gone);
        complete && kept
    }

    /// The available segment that `url` names, if this template names one: each run of
    /// digits in its path (the last [`MAX_DIGIT_RUNS`]) is read as a `$Number$`, or as a
    /// `$Time$` on the template's grid, checked with [`LiveTemplate::is_available`] before
    /// anything is built, and taken only if the template's name for that number is `url`
    /// under one of the BaseURLs (query ignored). For a player's request of a segment the
    /// node has not registered yet.
    pub fn segment_named(&self, url: &Url, now: SystemTime, skew: Duration) -> Option<Segment> {
        let by_number = template::uses(&self.media, "Number");
        let by_time = template::uses(&self.media, "Time");
        let mut key = None;
        digit_runs(url.path())
            .flat_map(|v| {
                [
                    by_number.then_some(v),
                    by_time.then(|| self.number_at_time(v)).flatten(),
                ]
            })
            .flatten()
            .filter(|&n| self.is_available(n, now, skew))
            .find_map(|n| {
                let s = self.segment(n)?;
                let key = key.get_or_insert_with(|| segment_key(url, None));
                let r = &s.resource;
                std::iter::once(&r.url)
                    .chain(&r.alternatives)
                    .any(|u| segment_key(u, None) == *key)
                    .then_some(s)
            })
    }

    /// The number of the segment starting at media time `time`, if one does.
    fn number_at_time(&self, time: u64) -> Option<u64> {
        // On the grid: a whole number of durations from the first (`k / d * d` cannot overflow).
        let on_grid = |k: u64| (k / self.duration * self.duration == k).then(|| k / self.duration);
        if time >= self.first_time {
            self.first_number
                .checked_add(on_grid(time - self.first_time)?)
        } else {
            self.first_number
                .checked_sub(on_grid(self.first_time - time)?)
        }
    }

    fn time_of(&self, number: u64) -> Option<u64> {
        let time = if number >= self.first_number {
            (number - self.first_number)
                .checked_mul(self.duration)?
                .checked_add(self.first_time)?
        } else {
            self.first_time
                .checked_sub((self.first_number - number).checked_mul(self.duration)?)?
        };
        // Before `presentationTimeOffset` is before the period.
        (time >= self.pto).then_some(time)
    }
}

/// Segments past an MPD's last listed one that a `$Time$` timeline's assumed cadence names
/// for prefetching (see [`LiveTemplate::prefetch_limit`]).
pub const GUESSED_SEGMENTS: u64 = 2;

/// Runs of digits looked at in a request path, from its end (the file name carries the
/// number; directories may carry others).
const MAX_DIGIT_RUNS: usize = 8;

/// The numbers written in `path` as runs of ASCII digits, last first, at most
/// [`MAX_DIGIT_RUNS`]; runs too long for a `u64` are skipped.
fn digit_runs(path: &str) -> impl Iterator<Item = u64> + '_ {
    path.rsplit(|c: char| !c.is_ascii_digit())
        .filter(|r| !r.is_empty())
        .take(MAX_DIGIT_RUNS)
        .filter_map(|r| r.parse().ok())
}
