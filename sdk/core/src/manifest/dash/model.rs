//! The read-only MPD model: a small element tree read with quick-xml, then the segment lists
//! every Representation's addressing mode implies.

use super::live::{LiveTemplate, GUESSED_SEGMENTS, MAX_LIVE_WINDOW};
use super::template::{self, Vars};
use super::xml::El;
use super::DashError;
use crate::manifest::{segment_key, ByteRange};
use shoal_proto::SegmentKey;
use std::time::{Duration, SystemTime};
use url::Url;

/// Most segments listed per Representation (a 2 s segment VOD of 55 hours).
pub const MAX_SEGMENTS: usize = 100_000;
/// Most alternative BaseURLs kept per level (they multiply across levels).
const MAX_BASES: usize = 8;

/// A parsed MPD: what the scheduler needs to know about every Representation.
#[derive(Debug, Clone, PartialEq)]
pub struct Mpd {
    /// `type="dynamic"`: live; segments appear over time.
    pub dynamic: bool,
    /// `availabilityStartTime`.
    pub availability_start_time: Option<SystemTime>,
    /// `publishTime`.
    pub publish_time: Option<SystemTime>,
    /// `mediaPresentationDuration`.
    pub media_presentation_duration: Option<Duration>,
    /// `minimumUpdatePeriod`: how often a live MPD may change.
    pub minimum_update_period: Option<Duration>,
    /// `timeShiftBufferDepth`: how far behind the live edge segments stay available.
    pub time_shift_buffer_depth: Option<Duration>,
    /// `maxSegmentDuration`.
    pub max_segment_duration: Option<Duration>,
    /// `Location` elements, resolved.
    pub locations: Vec<Url>,
    /// `UTCTiming` (`schemeIdUri`, `value`), as written.
    pub utc_timing: Vec<(String, String)>,
    /// Periods in document order.
    pub periods: Vec<Period>,
}

/// A `Period`.
#[derive(Debug, Clone, PartialEq)]
pub struct Period {
    /// `id`.
    pub id: Option<String>,
    /// Start within the presentation (`start`, else the previous period's end, else 0).
    pub start: Duration,
    /// `duration`, or up to the next period's start, or to the presentation's end.
    pub duration: Option<Duration>,
    /// Every Representation of every AdaptationSet, in document order.
    pub representations: Vec<Representation>,
}

/// How a Representation addresses its media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    /// `SegmentTemplate` with `duration` (`$Number$`).
    Template,
    /// `SegmentTemplate` with a `SegmentTimeline`.
    Timeline,
    /// `SegmentList` of `SegmentURL`s.
    List,
    /// `SegmentBase`, or a bare `BaseURL`: one file the player reads by byte ranges.
    Base,
}

/// One `Representation` of one `Period`.
#[derive(Debug, Clone, PartialEq)]
pub struct Representation {
    /// `id` (unique within its Period).
    pub id: String,
    /// `bandwidth`, bits per second.
    pub bandwidth: Option<u64>,
    /// `contentType` of the AdaptationSet, or the first part of `mimeType`.
    pub content_type: Option<String>,
    /// Resolved BaseURLs, CDN alternatives in document order; the first is the one players
    /// use.
    pub base_urls: Vec<Url>,
    /// How segments are addressed.
    pub addressing: Addressing,
    /// The initialization segment, if any.
    pub init: Option<Resource>,
    /// `RepresentationIndex` or `SegmentBase@indexRange` (the `sidx`), if any.
    pub index: Option<Resource>,
    /// For [`Addressing::Base`]: the media file players ask byte ranges of.
    pub file: Option<Resource>,
    /// Media segments available now (live: within the time-shift window), in order.
    pub segments: Vec<Segment>,
    /// For a live Representation whose next segments' names are predictable: how to name
    /// them and when each becomes available.
    pub live: Option<LiveTemplate>,
}

/// A resource at one URL, possibly a byte range of it, with its CDN alternatives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// Absolute origin URL under the first BaseURL.
    pub url: Url,
    /// The same resource under the other BaseURLs.
    pub alternatives: Vec<Url>,
    /// The URL the key is derived from: the smallest of `url` and `alternatives`, so viewers
    /// whose MPDs order the CDNs differently still meet.
    pub key_url: Url,
    /// Byte range, if any.
    pub range: Option<ByteRange>,
    /// Identity shared by every viewer.
    pub key: SegmentKey,
}

/// A media segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Where it is.
    pub resource: Resource,
    /// Its number (`startNumber` + index).
    pub number: u64,
    /// Presentation start within the whole presentation, milliseconds: unique and increasing
    /// across periods, so it orders segments for the swarm.
    pub sequence: u64,
    /// Duration.
    pub duration: Duration,
}

pub(super) fn ticks(t: u64, timescale: u64) -> Duration {
    // Saturates: a zero or absurd timescale from the MPD must not panic.
    Duration::try_from_secs_f64(t as f64 / timescale as f64).unwrap_or(Duration::MAX)
}

pub(super) fn ticks_ms(t: u64, timescale: u64) -> u64 {
    ((t as u128 * 1000) / timescale as u128).min(u64::MAX as u128) as u64
}

fn bad(element: &'static str, attribute: &'static str, value: &str) -> DashError {
    DashError::BadAttribute {
        element,
        attribute,
        value: value.chars().take(64).collect(),
    }
}

fn num<T: std::str::FromStr>(
    el: Option<&str>,
    element: &'static str,
    attribute: &'static str,
) -> Result<Option<T>, DashError> {
    el.map(|v| v.trim().parse().map_err(|_| bad(element, attribute, v)))
        .transpose()
}

fn dur(
    v: Option<&str>,
    element: &'static str,
    attribute: &'static str,
) -> Result<Option<Duration>, DashError> {
    v.map(|s| template::parse_duration(s).ok_or_else(|| bad(element, attribute, s)))
        .transpose()
}

fn datetime(v: Option<&str>, attribute: &'static str) -> Result<Option<SystemTime>, DashError> {
    v.map(|s| template::parse_datetime(s).ok_or_else(|| bad("MPD", attribute, s)))
        .transpose()
}

/// `first-last` (inclusive) as MPDs write ranges.
fn range(
    v: Option<&str>,
    element: &'static str,
    attribute: &'static str,
) -> Result<Option<ByteRange>, DashError> {
    let Some(v) = v else { return Ok(None) };
    let (a, b) = v
        .trim()
        .split_once('-')
        .ok_or_else(|| bad(element, attribute, v))?;
    let (a, b): (u64, u64) = (
        a.parse().map_err(|_| bad(element, attribute, v))?,
        b.parse().map_err(|_| bad(element, attribute, v))?,
    );
    if b < a {
        return Err(bad(element, attribute, v));
    }
    Ok(Some(ByteRange {
        offset: a,
        length: b - a + 1,
    }))
}

/// The BaseURLs in effect inside `el`: each of its `BaseURL`s resolved against each of the
/// parent's, or the parent's when it has none.
fn bases(parent: &[Url], el: &El) -> Result<Vec<Url>, DashError> {
    let own: Vec<&str> = el.all("BaseURL").map(|b| b.text.trim()).collect();
    if own.is_empty() {
        return Ok(parent.to_vec());
    }
    let mut out: Vec<Url> = Vec::new();
    for p in parent {
        for b in &own {
            let u = p.join(b).map_err(|_| DashError::BadUrl(b.to_string()))?;
            if !out.contains(&u) && out.len() < MAX_BASES {
                out.push(u);
            }
        }
    }
    Ok(out)
}

/// A resource `rel` resolves to under each base.
pub(super) fn resource(
    bases: &[Url],
    rel: &str,
    range: Option<ByteRange>,
) -> Result<Resource, DashError> {
    let mut urls: Vec<Url> = Vec::with_capacity(bases.len());
    for b in bases {
        let u = b.join(rel).map_err(|_| DashError::BadUrl(rel.to_owned()))?;
        if !urls.contains(&u) {
            urls.push(u);
        }
    }
    if urls.is_empty() {
        return Err(DashError::BadUrl(rel.to_owned()));
    }
    let key_url = urls
        .iter()
        .min_by_key(|u| segment_key(u, None))
        .cloned()
        .unwrap_or_else(|| urls[0].clone());
    let url = urls.remove(0);
    Ok(Resource {
        key: segment_key(&key_url, range),
        url,
        alternatives: urls,
        key_url,
        range,
    })
}

/// Segment information inherited from Period, AdaptationSet and Representation: the
/// `SegmentBase`/`SegmentList`/`SegmentTemplate` of each level, outermost first.
#[derive(Clone, Default)]
struct Inherit<'a> {
    levels: Vec<&'a El>,
    mode: Option<&'static str>,
}

impl<'a> Inherit<'a> {
    fn enter(&self, el: &'a El) -> Self {
        let mut next = self.clone();
        for name in ["SegmentTemplate", "SegmentList", "SegmentBase"] {
            if let Some(s) = el.child(name) {
                next.levels.push(s);
                next.mode = Some(name);
                break;
            }
        }
        next
    }

    /// Innermost value of `attr` among elements of the current mode.
    fn attr(&self, attr: &str) -> Option<&'a str> {
        let mode = self.mode?;
        self.levels
            .iter()
            .rev()
            .filter(|e| e.name == mode)
            .find_map(|e| e.attr(attr))
    }

    /// Innermost child `name` among elements of the current mode.
    fn child(&self, name: &str) -> Option<&'a El> {
        let mode = self.mode?;
        self.levels
            .iter()
            .rev()
            .filter(|e| e.name == mode)
            .find_map(|e| e.child(name))
    }

    /// Innermost `SegmentURL`s of a list.
    fn segment_urls(&self) -> Vec<&'a El> {
        self.levels
            .iter()
            .rev()
            .filter(|e| e.name == "SegmentList")
            .map(|e| e.all("SegmentURL").collect::<Vec<_>>())
            .find(|v| !v.is_empty())
            .unwrap_or_default()
    }
}

struct Ctx {
    dynamic: bool,
    now: SystemTime,
    ast: Option<SystemTime>,
    tsbd: Option<Duration>,
}

/// Builds the model. `now` places a live window; it is ignored for static MPDs.
pub(super) fn build(root: &El, mpd_url: &Url, now: SystemTime) -> Result<Mpd, DashError> {
    if root.name != "MPD" {
        return Err(DashError::NotMpd(root.name.chars().take(64).collect()));
    }
    let dynamic = match root.attr("type").map(str::trim) {
        None | Some("static") => false,
        Some("dynamic") => true,
        Some(other) => return Err(bad("MPD", "type", other)),
    };
    let mpd = Mpd {
        dynamic,
        availability_start_time: datetime(
            root.attr("availabilityStartTime"),
            "availabilityStartTime",
        )?,
        publish_time: datetime(root.attr("publishTime"), "publishTime")?,
        media_presentation_duration: dur(
            root.attr("mediaPresentationDuration"),
            "MPD",
            "mediaPresentationDuration",
        )?,
        minimum_update_period: dur(
            root.attr("minimumUpdatePeriod"),
            "MPD",
            "minimumUpdatePeriod",
        )?,
        time_shift_buffer_depth: dur(
            root.attr("timeShiftBufferDepth"),
            "MPD",
            "timeShiftBufferDepth",
        )?,
        max_segment_duration: dur(root.attr("maxSegmentDuration"), "MPD", "maxSegmentDuration")?,
        locations: root
            .all("Location")
            .filter_map(|l| mpd_url.join(l.text.trim()).ok())
            .collect(),
        utc_timing: root
            .all("UTCTiming")
            .map(|u| {
                (
                    u.attr("schemeIdUri").unwrap_or_default().to_owned(),
                    u.attr("value").unwrap_or_default().to_owned(),
                )
            })
            .collect(),
        periods: Vec::new(),
    };
    if dynamic && mpd.availability_start_time.is_none() {
        return Err(DashError::MissingAttribute {
            element: "MPD",
            attribute: "availabilityStartTime",
        });
    }
    let ctx = Ctx {
        dynamic,
        now,
        ast: mpd.availability_start_time,
        tsbd: mpd.time_shift_buffer_depth,
    };
    let top_bases = bases(std::slice::from_ref(mpd_url), root)?;
    let period_els: Vec<&El> = root.all("Period").collect();
    if period_els.is_empty() {
        return Err(DashError::NoPeriod);
    }
    // Starts and durations first: a period's end is the next one's start.
    let mut starts = Vec::with_capacity(period_els.len());
    let mut prev_end = Some(Duration::ZERO);
    for p in &period_els {
        let start = dur(p.attr("start"), "Period", "start")?.or(prev_end);
        let start = start.ok_or(DashError::MissingAttribute {
            element: "Period",
            attribute: "start",
        })?;
        let own = dur(p.attr("duration"), "Period", "duration")?;
        prev_end = own.and_then(|d| start.checked_add(d));
        starts.push((start, own));
    }
    let mut mpd = mpd;
    for (i, p) in period_els.iter().enumerate() {
        let (start, own) = starts[i];
        let duration = own.or_else(|| match starts.get(i + 1) {
            Some((next, _)) => next.checked_sub(start),
            None => mpd
                .media_presentation_duration
                .and_then(|d| d.checked_sub(start)),
        });
        let p_bases = bases(&top_bases, p)?;
        let p_inh = Inherit::default().enter(p);
        let mut reps = Vec::new();
        for a in p.all("AdaptationSet") {
            let a_bases = bases(&p_bases, a)?;
            let a_inh = p_inh.enter(a);
            for r in a.all("Representation") {
                let r_bases = bases(&a_bases, r)?;
                let r_inh = a_inh.enter(r);
                let content_type = a
                    .attr("contentType")
                    .or_else(|| r.attr("mimeType").or(a.attr("mimeType")))
                    .map(|c| c.split('/').next().unwrap_or(c).to_owned());
                reps.push(representation(
                    &ctx,
                    start,
                    duration,
                    &r_inh,
                    r_bases,
                    r,
                    content_type,
                )?);
            }
        }
        mpd.periods.push(Period {
            id: p.attr("id").map(str::to_owned),
            start,
            duration,
            representations: reps,
        });
    }
    Ok(mpd)
}

fn representation(
    ctx: &Ctx,
    period_start: Duration,
    period_duration: Option<Duration>,
    inh: &Inherit<'_>,
    bases: Vec<Url>,
    r: &El,
    content_type: Option<String>,
) -> Result<Representation, DashError> {
    let id = r
        .attr("id")
        .ok_or(DashError::MissingAttribute {
            element: "Representation",
            attribute: "id",
        })?
        .to_owned();
    // Templates substitute it into URL paths: empty, a dot segment or a slash would move the
    // URL somewhere the rewrite (which checks templates unexpanded) never saw.
    if id.is_empty()
        || id == "."
        || id == ".."
        || id.contains(['/', '\\', '?', '#'])
        || id.contains(char::is_whitespace)
    {
        return Err(DashError::BadAttribute {
            element: "Representation",
            attribute: "id",
            value: id.chars().take(64).collect(),
        });
    }
    let bandwidth: Option<u64> = num(r.attr("bandwidth"), "Representation", "bandwidth")?;
    let rid = r.attr("id").unwrap_or_default();
    let mut rep = Representation {
        id,
        bandwidth,
        content_type,
        base_urls: bases.clone(),
        addressing: Addressing::Base,
        init: None,
        index: None,
        file: None,
        segments: Vec::new(),
        live: None,
    };
    let vars = |number: Option<u64>, time: Option<u64>| Vars {
        representation_id: rid,
        bandwidth,
        number,
        time,
    };
    let element = inh.mode.unwrap_or("SegmentBase");
    let timescale: u64 = num(inh.attr("timescale"), "SegmentTemplate", "timescale")?.unwrap_or(1);
    if timescale == 0 {
        return Err(bad("SegmentTemplate", "timescale", "0"));
    }
    let pto: u64 = num(
        inh.attr("presentationTimeOffset"),
        "SegmentTemplate",
        "presentationTimeOffset",
    )?
    .unwrap_or(0);
    let start_number: u64 =
        num(inh.attr("startNumber"), "SegmentTemplate", "startNumber")?.unwrap_or(1);
    let seg_duration: Option<u64> = num(inh.attr("duration"), "SegmentTemplate", "duration")?;
    let period_start_ms = period_start.as_millis().min(u64::MAX as u128) as u64;
    let base_res = |rel: &str, range| resource(&bases, rel, range);

    // Initialization: a template attribute, or an `Initialization` element.
    if let Some(t) = inh
        .attr("initialization")
        .filter(|_| inh.mode == Some("SegmentTemplate"))
    {
        let rel = template::expand(t, &vars(None, None))?;
        rep.init = Some(base_res(&rel, None)?);
    } else if let Some(i) = inh.child("Initialization") {
        let r = range(i.attr("range"), "Initialization", "range")?;
        rep.init = Some(base_res(i.attr("sourceURL").unwrap_or(""), r)?);
    }
    if let Some(i) = inh.child("RepresentationIndex") {
        let r = range(i.attr("range"), "RepresentationIndex", "range")?;
        rep.index = Some(base_res(i.attr("sourceURL").unwrap_or(""), r)?);
    }

    match inh.mode {
        Some("SegmentTemplate") => {
            let media = inh.attr("media").ok_or(DashError::MissingAttribute {
                element: "SegmentTemplate",
                attribute: "media",
            })?;
            let mut list: Vec<(u64, u64, u64)> = Vec::new(); // (number, time, duration)
            let by_time = template::uses(media, "Time");
            let mut predictable = !by_time;
            let mut guessed = false;
            if let Some(tl) = inh.child("SegmentTimeline") {
                rep.addressing = Addressing::Timeline;
                let last_r = timeline(
                    ctx,
                    tl,
                    timescale,
                    pto,
                    period_start,
                    period_duration,
                    start_number,
                    &mut list,
                )?;
                // `$Time$` names need each start time. An open last `S` (`r="-1"`) fixes
                // them; one that repeats a duration makes the same cadence a fair guess.
                if by_time {
                    predictable = matches!(last_r, Some(r) if r == -1 || r >= 1);
                    guessed = last_r.is_some_and(|r| r >= 1);
                }
            } else {
                rep.addressing = Addressing::Template;
                predictable = true;
                let d = seg_duration
                    .filter(|&d| d > 0)
                    .ok_or(DashError::MissingAttribute {
                        element: "SegmentTemplate",
                        attribute: "duration",
                    })?;
                let (first, count) = if ctx.dynamic {
                    live_window(ctx, period_start, period_duration, d, timescale)
                } else {
                    let total = period_duration.ok_or(DashError::MissingAttribute {
                        element: "MPD",
                        attribute: "mediaPresentationDuration",
                    })?;
                    let n = (total.as_secs_f64() * timescale as f64 / d as f64).ceil();
                    if n > MAX_SEGMENTS as f64 {
                        return Err(DashError::TooManySegments);
                    }
                    (0, n as u64)
                };
                for k in first..first.saturating_add(count) {
                    // Numbers and times come from the MPD: refuse what overflows 64 bits.
                    let number = start_number.checked_add(k).ok_or_else(overflow)?;
                    let time = k
                        .checked_mul(d)
                        .and_then(|t| t.checked_add(pto))
                        .ok_or_else(overflow)?;
                    list.push((number, time, d));
                }
            }
            for &(number, time, d) in &list {
                let rel = template::expand(media, &vars(Some(number), Some(time)))?;
                rep.segments.push(Segment {
                    resource: base_res(&rel, None)?,
                    number,
                    sequence: period_start_ms
                        .saturating_add(ticks_ms(time.saturating_sub(pto), timescale)),
                    duration: ticks(d, timescale),
                });
            }
            // Check the template resolves for any number before promising future segments.
            template::expand(media, &vars(Some(start_number), Some(pto)))?;
            if ctx.dynamic && predictable {
                let (first_number, first_time, d) = match list.last() {
                    Some(&(n, t, d)) => (
                        n.checked_add(1).ok_or_else(overflow)?,
                        t.checked_add(d).ok_or_else(overflow)?,
                        d,
                    ),
                    None => match seg_duration {
                        Some(d) if d > 0 => {
                            let (first, _) =
                                live_window(ctx, period_start, period_duration, d, timescale);
                            (
                                start_number.checked_add(first).ok_or_else(overflow)?,
                                first
                                    .checked_mul(d)
                                    .and_then(|t| t.checked_add(pto))
                                    .ok_or_else(overflow)?,
                                d,
                            )
                        }
                        _ => (0, 0, 0),
                    },
                };
                if d > 0 {
                    let last_number = period_duration.map(|pd| {
                        let n = (pd.as_secs_f64() * timescale as f64 / d as f64).ceil() as u64;
                        start_number.saturating_add(n.saturating_sub(1))
                    });
                    rep.live =
                        ctx.ast
                            .and_then(|ast| ast.checked_add(period_start))
                            .map(|anchor| LiveTemplate {
                                media: media.to_owned(),
                                representation_id: rep.id.clone(),
                                bandwidth,
                                timescale,
                                duration: d,
                                pto,
                                first_number,
                                first_time,
                                period_anchor: anchor,
                                period_start_ms,
                                last_number,
                                time_shift_buffer_depth: ctx.tsbd,
                                bases: bases.clone(),
                                guessed_after: guessed
                                    .then(|| first_number.saturating_add(GUESSED_SEGMENTS - 1)),
                            });
                }
            }
        }
        Some("SegmentList") => {
            rep.addressing = Addressing::List;
            let d = seg_duration.unwrap_or(0);
            for (k, s) in inh.segment_urls().into_iter().enumerate() {
                if k >= MAX_SEGMENTS {
                    return Err(DashError::TooManySegments);
                }
                let k = k as u64;
                let r = range(s.attr("mediaRange"), "SegmentURL", "mediaRange")?;
                rep.segments.push(Segment {
                    resource: base_res(s.attr("media").unwrap_or(""), r)?,
                    number: start_number.checked_add(k).ok_or_else(overflow)?,
                    sequence: period_start_ms.saturating_add(ticks_ms(
                        k.checked_mul(d).ok_or_else(overflow)?,
                        timescale,
                    )),
                    duration: ticks(d, timescale),
                });
            }
        }
        _ => {
            rep.addressing = Addressing::Base;
            let file = base_res("", None)?;
            if let Some(r) = range(inh.attr("indexRange"), element, "indexRange")? {
                if rep.index.is_none() {
                    rep.index = Some(base_res("", Some(r))?);
                }
            }
            rep.file = Some(file);
        }
    }
    Ok(rep)
}

/// First segment index and count of a `$Number$` live window at `now`.
fn live_window(
    ctx: &Ctx,
    period_start: Duration,
    period_duration: Option<Duration>,
    d: u64,
    timescale: u64,
) -> (u64, u64) {
    let Some(anchor) = ctx.ast.and_then(|a| a.checked_add(period_start)) else {
        return (0, 0);
    };
    let elapsed = ctx.now.duration_since(anchor).unwrap_or_default();
    let seg = d as f64 / timescale as f64;
    // Segment k is complete at anchor + (k + 1) * seg.
    let mut complete = (elapsed.as_secs_f64() / seg).floor() as u64;
    if let Some(pd) = period_duration {
        complete = complete.min((pd.as_secs_f64() / seg).ceil() as u64);
    }
    let window = ctx
        .tsbd
        .map_or(MAX_LIVE_WINDOW, |t| {
            // `as` saturates: a huge depth over a tiny duration must not overflow.
            ((t.as_secs_f64() / seg).ceil() as u64).saturating_add(1)
        })
        .min(MAX_LIVE_WINDOW);
    let first = complete.saturating_sub(window);
    (first, complete - first)
}

/// A segment number or time past `u64::MAX`: the MPD's `startNumber`,
/// `presentationTimeOffset` or `duration` is absurd.
pub(super) fn overflow() -> DashError {
    DashError::BadAttribute {
        element: "SegmentTemplate",
        attribute: "startNumber",
        value: "segment numbers or times overflow 64 bits".into(),
    }
}

/// Expands a `SegmentTimeline` into (number, time, duration), numbered from `start_number`
/// into `out`, which starts empty.
#[allow(clippy::too_many_arguments)]
fn timeline(
    ctx: &Ctx,
    tl: &El,
    timescale: u64,
    pto: u64,
    period_start: Duration,
    period_duration: Option<Duration>,
    start_number: u64,
    out: &mut Vec<(u64, u64, u64)>,
) -> Result<Option<i64>, DashError> {
    let entries: Vec<&El> = tl.all("S").collect();
    let mut last_r = None;
    // Where an open-ended `r="-1"` stops: the period's end, or (live) now.
    let horizon = |ctx: &Ctx| -> Option<u64> {
        let secs = match period_duration {
            Some(pd) => pd.as_secs_f64(),
            None if ctx.dynamic => {
                let anchor = ctx.ast?.checked_add(period_start)?;
                ctx.now.duration_since(anchor).ok()?.as_secs_f64()
            }
            None => return None,
        };
        Some(pto + (secs * timescale as f64) as u64)
    };
    let mut time = pto;
    for (i, s) in entries.iter().enumerate() {
        if let Some(t) = num::<u64>(s.attr("t"), "S", "t")? {
            time = t;
        }
        let d: u64 = num(s.attr("d"), "S", "d")?.ok_or(DashError::MissingAttribute {
            element: "S",
            attribute: "d",
        })?;
        if d == 0 {
            return Err(bad("S", "d", "0"));
        }
        let r: i64 = num(s.attr("r"), "S", "r")?.unwrap_or(0);
        last_r = Some(r);
        let count = if r >= 0 {
            r as u64 + 1
        } else {
            let until = entries
                .get(i + 1)
                .and_then(|n| n.attr("t"))
                .and_then(|t| t.trim().parse::<u64>().ok())
                .or_else(|| horizon(ctx))
                .ok_or(DashError::OpenTimeline)?;
            // Live: only segments complete by `until`.
            if ctx.dynamic && entries.get(i + 1).is_none() {
                until.saturating_sub(time) / d
            } else {
                until.saturating_sub(time).div_ceil(d)
            }
        };
        if count as usize > MAX_SEGMENTS || out.len() + count as usize > MAX_SEGMENTS {
            return Err(DashError::TooManySegments);
        }
        for _ in 0..count {
            let number = start_number
                .checked_add(out.len() as u64)
                .ok_or_else(overflow)?;
            out.push((number, time, d));
            time = time.checked_add(d).ok_or(DashError::TooManySegments)?;
        }
    }
    Ok(last_r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::dash::xml::read_tree;

    const SKEW: Duration = Duration::from_secs(1);

    fn at(secs: f64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs)
    }

    /// A live `$Number$`-style Representation: 2 s segments from number 0 at the epoch, 10 s
    /// of time shift, two CDNs; read at `now_s` seconds past the epoch.
    fn live(media: &str, base: &str, now_s: f64) -> LiveTemplate {
        let text = format!(
            r#"<MPD type="dynamic" availabilityStartTime="1970-01-01T00:00:00Z" timeShiftBufferDepth="PT10S">
  <BaseURL>https://cdn.example.com/{base}</BaseURL>
  <BaseURL>https://backup.example.com/{base}</BaseURL>
  <Period id="p0" start="PT0S"><AdaptationSet>
    <SegmentTemplate timescale="1000" duration="2000" startNumber="0" media="{media}" initialization="init.mp4"/>
    <Representation id="v1" bandwidth="3000000"/>
  </AdaptationSet></Period>
</MPD>"#
        );
        let url = Url::parse("https://cdn.example.com/live/m.mpd").unwrap();
        let mpd = build(&read_tree(&text).unwrap(), &url, at(now_s)).unwrap();
        mpd.periods[0].representations[0].live.clone().unwrap()
    }

    fn named(t: &LiveTemplate, url: &str, now_s: f64) -> Option<u64> {
        let url = Url::parse(url).unwrap();
        t.segment_named(&url, at(now_s), SKEW).map(|s| s.number)
    }

    #[test]
    fn a_requested_number_is_registered_only_inside_the_availability_window() {
        // At 100 s segments 0..=49 are complete (k ends at 2k + 2 s); the MPD lists 44..=49.
        let t = live("seg$Number$.m4s", "live/", 100.0);
        assert_eq!(t.first_number(), 50);
        let u = |n: u64| format!("https://cdn.example.com/live/seg{n}.m4s");
        assert_eq!(named(&t, &u(49), 100.0), Some(49));
        // Complete at 102 s: too early at 100 s, within the clock skew at 101.5 s.
        assert_eq!(named(&t, &u(50), 100.0), None);
        assert_eq!(named(&t, &u(50), 101.5), Some(50));
        assert_eq!(named(&t, &u(50), 102.0), Some(50));
        // Segment 43 ends at 88 s and stays for 10 s of time shift plus its own 2 s.
        assert_eq!(named(&t, &u(43), 100.0), Some(43));
        assert_eq!(named(&t, &u(42), 100.0), None);
        // A template read long ago still names segments by the clock.
        assert_eq!(named(&t, &u(500), 1002.0), Some(500));
    }

    #[test]
    fn only_the_templates_own_name_matches() {
        let t = live("seg$Number$.m4s", "live/", 100.0);
        let yes = [
            "https://cdn.example.com/live/seg49.m4s?token=abc",
            "https://backup.example.com/live/seg49.m4s",
        ];
        for u in yes {
            assert_eq!(named(&t, u, 100.0), Some(49), "{u}");
        }
        let s = t
            .segment_named(&Url::parse(yes[0]).unwrap(), at(100.0), SKEW)
            .unwrap();
        // Keyed under the smallest BaseURL, whichever CDN was asked.
        assert_eq!(s.resource.key.as_str(), "backup.example.com/live/seg49.m4s");
        let no = [
            "https://cdn.example.com/live/seg049.m4s",
            "https://cdn.example.com/live/seg49.mp4",
            "https://cdn.example.com/other/seg49.m4s",
            "https://elsewhere.example.com/live/seg49.m4s",
            "https://cdn.example.com/live/init.mp4",
            "https://cdn.example.com/live/m.mpd",
        ];
        for u in no {
            assert_eq!(named(&t, u, 100.0), None, "{u}");
        }
    }

    #[test]
    fn absurd_numbers_match_nothing() {
        let t = live("seg$Number$.m4s", "live/", 100.0);
        for n in [
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999999999999999999",
            "1000000000000",
            "4611686018427387904",
        ] {
            let u = format!("https://cdn.example.com/live/seg{n}.m4s");
            assert_eq!(named(&t, &u, 100.0), None, "{n}");
        }
        assert!(!t.is_available(u64::MAX, at(100.0), SKEW));
        assert!(!t.is_available(u64::MAX / 2000, at(1e15), SKEW));
    }

    #[test]
    fn widths_identifiers_times_and_digits_elsewhere_in_the_path() {
        let t = live("$RepresentationID$/$Number%05d$.m4s", "live/", 100.0);
        assert_eq!(
            named(&t, "https://cdn.example.com/live/v1/00049.m4s", 100.0),
            Some(49)
        );
        assert_eq!(
            named(&t, "https://cdn.example.com/live/v1/49.m4s", 100.0),
            None
        );
        let t = live("t$Time$.m4s", "live/", 100.0);
        assert_eq!(
            named(&t, "https://cdn.example.com/live/t98000.m4s", 100.0),
            Some(49)
        );
        assert_eq!(
            named(&t, "https://cdn.example.com/live/t98001.m4s", 100.0),
            None
        );
        let t = live("$Bandwidth$/seg$Number$.m4s", "live2024/", 100.0);
        assert_eq!(
            named(
                &t,
                "https://cdn.example.com/live2024/3000000/seg47.m4s",
                100.0
            ),
            Some(47)
        );
    }

    /// A live `$Time$` timeline at 2 s segments (timescale 1000) read at `now_s`, ending in `last`.
    fn timeline_live(last: &str, now_s: f64) -> Option<LiveTemplate> {
        let text = format!(
            r#"<MPD type="dynamic" availabilityStartTime="1970-01-01T00:00:00Z" timeShiftBufferDepth="PT30S">
  <BaseURL>https://cdn.example.com/live/</BaseURL>
  <Period id="p0" start="PT0S"><AdaptationSet>
    <SegmentTemplate timescale="1000" media="t$Time$.m4s" initialization="init.mp4">
      <SegmentTimeline><S t="80000" d="2000" r="3"/><S d="1900"/>{last}</SegmentTimeline>
    </SegmentTemplate>
    <Representation id="v1" bandwidth="3000000"/>
  </AdaptationSet></Period>
</MPD>"#
        );
        let url = Url::parse("https://cdn.example.com/live/m.mpd").unwrap();
        let mpd = build(&read_tree(&text).unwrap(), &url, at(now_s)).unwrap();
        mpd.periods[0].representations[0].live.clone()
    }

    #[test]
    fn time_timelines_name_their_next_segments_exactly_or_by_a_bounded_guess() {
        let name = |t: &LiveTemplate, n: u64| {
            let s = t.segment(n).unwrap();
            (s.resource.url.path().to_owned(), t.available_at(n).unwrap())
        };
        // 80000 + 4 × 2000 + 1900 = 89900: an open `S` from there repeats 2000 until now.
        let open = timeline_live(r#"<S d="2000" r="-1"/>"#, 100.0).unwrap();
        // Numbers start at 1; segments up to 97900..99900 are complete at 100 s: the next is
        // number 11.
        assert_eq!(open.first_number(), 11);
        assert_eq!(name(&open, 11), ("/live/t99900.m4s".into(), at(101.9)));
        assert_eq!(name(&open, 13), ("/live/t103900.m4s".into(), at(105.9)));
        assert_eq!(open.prefetch_limit(), None, "an open S names exactly");
        // A closed S that repeats: the cadence is assumed, for two segments only.
        let repeated = timeline_live(r#"<S d="2000" r="1"/>"#, 100.0).unwrap();
        assert_eq!(repeated.first_number(), 8);
        assert_eq!(name(&repeated, 8), ("/live/t93900.m4s".into(), at(95.9)));
        assert_eq!(repeated.prefetch_limit(), Some(9));
        // A last S of its own duration says nothing of the next: no template.
        assert!(timeline_live(r#"<S d="2100"/>"#, 100.0).is_none());
        assert!(timeline_live("", 100.0).is_none());
        // A requested name on the assumed grid still matches (it is checked against the URL).
        let url = Url::parse("https://cdn.example.com/live/t93900.m4s").unwrap();
        let s = repeated.segment_named(&url, at(96.0), SKEW).unwrap();
        assert_eq!(s.number, 8);
    }

    proptest::proptest! {
        /// Whatever number a player asks for, it is registered exactly when the template names
        /// it and it is in the window; and the window holds at most its depth in segments.
        #[test]
        fn registration_follows_the_availability_window(
            now_s in 20.0f64..10_000.0,
            n in 0u64..6_000,
            junk in "[0-9]{0,30}",
        ) {
            let t = live("seg$Number$.m4s", "live/", 20.0);
            let now = at(now_s);
            let url = Url::parse(&format!("https://cdn.example.com/live/seg{n}.m4s")).unwrap();
            let got = t.segment_named(&url, now, SKEW).map(|s| s.number);
            proptest::prop_assert_eq!(got, t.is_available(n, now, SKEW).then_some(n));
            let end = (n + 1) as f64 * 2.0;
            if t.is_available(n, now, SKEW) {
                proptest::prop_assert!(end <= now_s + 1.0 + 1e-6 && now_s <= end + 12.0 + 1e-6);
            }
            let hostile = Url::parse(&format!("https://cdn.example.com/live/seg{junk}.m4s")).unwrap();
            if let Some(s) = t.segment_named(&hostile, now, SKEW) {
                proptest::prop_assert!(t.is_available(s.number, now, SKEW));
                proptest::prop_assert_eq!(format!("seg{}.m4s", s.number), format!("seg{junk}.m4s"));
            }
        }
    }
}
