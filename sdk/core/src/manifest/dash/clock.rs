//! The origin's clock, as a live MPD's `UTCTiming` gives it: the offset rules, pure.
//!
//! A live template names segments by wall-clock time (`availabilityStartTime` plus durations),
//! and the packager's clock is the one that counts: a device whose clock is 20 s behind would
//! otherwise register every segment 20 s late (the player, which sets its clock by the same
//! `UTCTiming`, asks for them long before), and pass them all through to the origin. The node
//! keeps, per MPD, the difference between the origin's clock and its own, and reads live
//! templates with it (the SDK's `front::dash_clock` keeps the offsets and fetches time URLs).
//!
//! Schemes read: `urn:mpeg:dash:utc:direct:2014` (the date in the MPD itself, taken at the
//! moment the MPD arrived), and `http-iso`/`http-xsdate` (a URL whose body is the date).
//! Other schemes (`http-head`, NTP, ...) leave the node's own clock, as before.

use super::template::parse_datetime;
use std::time::{Duration, SystemTime};
use url::Url;

/// Schemes whose `value` is the date itself.
const DIRECT: [&str; 2] = [
    "urn:mpeg:dash:utc:direct:2014",
    "urn:mpeg:dash:utc:direct:2012",
];
/// Schemes whose `value` is a URL answering with the date in its body.
const HTTP_BODY: [&str; 4] = [
    "urn:mpeg:dash:utc:http-iso:2014",
    "urn:mpeg:dash:utc:http-xsdate:2014",
    "urn:mpeg:dash:utc:http-iso:2012",
    "urn:mpeg:dash:utc:http-xsdate:2012",
];
/// Offsets beyond this are taken for a broken time source, not a clock, and ignored.
const MAX_OFFSET: Duration = Duration::from_secs(24 * 3600);

/// The origin's clock minus the node's, in milliseconds (positive: the origin is ahead).
pub type OffsetMs = i64;

/// `t` on a clock `offset` ahead of the one `t` was read from.
pub fn shift(t: SystemTime, offset: OffsetMs) -> SystemTime {
    let d = Duration::from_millis(offset.unsigned_abs());
    if offset >= 0 {
        t + d
    } else {
        t.checked_sub(d).unwrap_or(t)
    }
}

/// The offset of `origin_time` (read from the origin) against `local` (the node's clock at
/// that moment), or `None` when it is absurd.
pub fn offset_between(origin_time: SystemTime, local: SystemTime) -> Option<OffsetMs> {
    let ms = match origin_time.duration_since(local) {
        Ok(ahead) => i64::try_from(ahead.as_millis()).ok()?,
        Err(e) => -i64::try_from(e.duration().as_millis()).ok()?,
    };
    (ms.unsigned_abs() <= MAX_OFFSET.as_millis() as u64).then_some(ms)
}

/// The offset a `direct` `UTCTiming` of an MPD that arrived at `received` gives, if any.
pub fn direct(timing: &[(String, String)], received: SystemTime) -> Option<OffsetMs> {
    timing
        .iter()
        .filter(|(scheme, _)| DIRECT.contains(&scheme.trim()))
        .find_map(|(_, value)| offset_between(parse_datetime(value)?, received))
}

/// The first time URL of an `http-iso`/`http-xsdate` `UTCTiming`, resolved against the MPD's.
pub fn time_url(timing: &[(String, String)], mpd_url: &Url) -> Option<Url> {
    timing
        .iter()
        .filter(|(scheme, _)| HTTP_BODY.contains(&scheme.trim()))
        .find_map(|(_, value)| {
            let u = mpd_url.join(value.split_whitespace().next()?).ok()?;
            matches!(u.scheme(), "http" | "https").then_some(u)
        })
}

/// The offset of an origin clock read over a round trip: the answer `origin_time` was written
/// about half way between `sent` and `received` (the node's clock), or `None` when absurd.
pub fn offset_over_round_trip(
    origin_time: SystemTime,
    sent: SystemTime,
    received: SystemTime,
) -> Option<OffsetMs> {
    let local = sent + received.duration_since(sent).unwrap_or_default() / 2;
    offset_between(origin_time, local)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(scheme: &str, value: &str) -> Vec<(String, String)> {
        vec![(scheme.to_string(), value.to_string())]
    }

    #[test]
    fn a_direct_date_gives_the_offset_at_the_moment_the_mpd_arrived() {
        let received = parse_datetime("2026-11-27T12:00:00Z").unwrap();
        let ahead = timing("urn:mpeg:dash:utc:direct:2014", "2026-11-27T12:00:20.500Z");
        assert_eq!(direct(&ahead, received), Some(20_500));
        let behind = timing("urn:mpeg:dash:utc:direct:2014", "2026-11-27T11:59:55Z");
        assert_eq!(direct(&behind, received), Some(-5_000));
        // Not a date, another scheme, or absurdly far: no offset.
        assert_eq!(
            direct(&timing("urn:mpeg:dash:utc:direct:2014", "soon"), received),
            None
        );
        assert_eq!(
            direct(
                &timing("urn:mpeg:dash:utc:ntp:2014", "pool.ntp.org"),
                received
            ),
            None
        );
        assert_eq!(
            direct(
                &timing("urn:mpeg:dash:utc:direct:2014", "2027-11-27T12:00:00Z"),
                received
            ),
            None
        );
    }

    #[test]
    fn time_urls_resolve_against_the_mpd_and_only_for_body_schemes() {
        let mpd = Url::parse("https://cdn.example.com/live/stream.mpd").unwrap();
        let t = timing("urn:mpeg:dash:utc:http-iso:2014", "/time?iso");
        assert_eq!(
            time_url(&t, &mpd).unwrap().as_str(),
            "https://cdn.example.com/time?iso"
        );
        let t = timing(
            "urn:mpeg:dash:utc:http-xsdate:2014",
            "https://time.example.net/xs https://backup.example.net/xs",
        );
        assert_eq!(
            time_url(&t, &mpd).unwrap().as_str(),
            "https://time.example.net/xs"
        );
        assert_eq!(
            time_url(
                &timing("urn:mpeg:dash:utc:http-head:2014", "https://t.example/"),
                &mpd
            ),
            None
        );
        assert_eq!(
            time_url(
                &timing("urn:mpeg:dash:utc:http-iso:2014", "file:///etc/passwd"),
                &mpd
            ),
            None
        );
    }

    #[test]
    fn shifting_moves_either_way() {
        let t = parse_datetime("2026-11-27T12:00:00Z").unwrap();
        assert_eq!(
            shift(t, 1_500),
            parse_datetime("2026-11-27T12:00:01.5Z").unwrap()
        );
        assert_eq!(
            shift(t, -2_000),
            parse_datetime("2026-11-27T11:59:58Z").unwrap()
        );
    }
}
