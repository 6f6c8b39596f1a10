//! The small grammars of an MPD: `SegmentTemplate` identifiers (ISO/IEC 23009-1 §5.3.9.4.4),
//! `xs:duration` and `xs:dateTime`.

use std::time::{Duration, SystemTime};

/// Values a template may name.
#[derive(Debug, Clone, Copy, Default)]
pub struct Vars<'a> {
    /// `$RepresentationID$`.
    pub representation_id: &'a str,
    /// `$Bandwidth$`.
    pub bandwidth: Option<u64>,
    /// `$Number$`.
    pub number: Option<u64>,
    /// `$Time$`.
    pub time: Option<u64>,
}

/// Why a template cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A `$` without its closing `$`.
    #[error("unterminated `$` in template")]
    Unterminated,
    /// An identifier the standard does not define (or one we do not support, `$SubNumber$`).
    #[error("unknown template identifier `{0}`")]
    Unknown(String),
    /// A known identifier whose value this context does not have (`$Time$` without a timeline).
    #[error("template identifier `{0}` has no value here")]
    NoValue(&'static str),
    /// A format tag other than `%0<width>d`, or one on `$RepresentationID$`.
    #[error("bad format tag `{0}`")]
    BadFormat(String),
}

/// Widths beyond this are junk (and would make a huge string).
const MAX_WIDTH: usize = 32;

/// Expands `$...$` identifiers of a `media`/`initialization`/`index` template.
pub fn expand(template: &str, vars: &Vars<'_>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('$') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('$').ok_or(TemplateError::Unterminated)?;
        let ident = &after[..close];
        rest = &after[close + 1..];
        if ident.is_empty() {
            out.push('$');
            continue;
        }
        let (name, format) = match ident.find('%') {
            Some(i) => (&ident[..i], Some(&ident[i..])),
            None => (ident, None),
        };
        let value = match name {
            "RepresentationID" => {
                if let Some(f) = format {
                    return Err(TemplateError::BadFormat(f.to_owned()));
                }
                out.push_str(vars.representation_id);
                continue;
            }
            "Number" => vars.number.ok_or(TemplateError::NoValue("Number"))?,
            "Time" => vars.time.ok_or(TemplateError::NoValue("Time"))?,
            "Bandwidth" => vars.bandwidth.ok_or(TemplateError::NoValue("Bandwidth"))?,
            other => return Err(TemplateError::Unknown(other.to_owned())),
        };
        let width = match format {
            None => 1,
            Some(f) => width(f).ok_or_else(|| TemplateError::BadFormat(f.to_owned()))?,
        };
        out.push_str(&format!("{value:0width$}"));
    }
    out.push_str(rest);
    Ok(out)
}

/// Which identifiers a template uses (to know whether names of future segments are
/// predictable without a timeline).
pub fn uses(template: &str, ident: &str) -> bool {
    template.split('$').skip(1).step_by(2).any(|i| {
        let name = i.split('%').next().unwrap_or(i);
        name == ident
    })
}

/// `%0<width>d` (and the `%d`, `%<width>d` that packagers write): the width.
fn width(format: &str) -> Option<usize> {
    let digits = format.strip_prefix('%')?.strip_suffix('d')?;
    if digits.is_empty() {
        return Some(1);
    }
    let w: usize = digits.parse().ok()?;
    (w <= MAX_WIDTH).then_some(w.max(1))
}

/// Parses an `xs:duration` as MPDs write it (`PT2S`, `PT1M30.5S`, `P1DT2H`). Years count 365
/// days and months 30: MPDs do not use them for anything precise. Negative durations are
/// refused.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let body = s.strip_prefix('P')?;
    let (date, time) = match body.split_once('T') {
        Some((d, t)) => {
            if t.is_empty() {
                return None;
            }
            (d, Some(t))
        }
        None => (body, None),
    };
    if date.is_empty() && time.is_none() {
        return None;
    }
    let mut secs = 0f64;
    secs += fields(
        date,
        &[
            ('Y', 365.0 * 86400.0),
            ('M', 30.0 * 86400.0),
            ('D', 86400.0),
        ],
    )?;
    if let Some(t) = time {
        secs += fields(t, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)])?;
    }
    Duration::try_from_secs_f64(secs).ok()
}

/// Sums `<number><unit>` fields, units in the given order, each at most once.
fn fields(mut s: &str, units: &[(char, f64)]) -> Option<f64> {
    let mut total = 0f64;
    let mut next_unit = 0;
    while !s.is_empty() {
        let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (num, rest) = s.split_at(end);
        let unit = rest.chars().next()?;
        let idx = units[next_unit..].iter().position(|(u, _)| *u == unit)? + next_unit;
        // Only seconds may be fractional.
        if num.is_empty() || (num.contains('.') && unit != 'S') {
            return None;
        }
        let v: f64 = num.parse().ok()?;
        total += v * units[idx].1;
        next_unit = idx + 1;
        s = &rest[unit.len_utf8()..];
    }
    total.is_finite().then_some(total)
}

/// Parses an `xs:dateTime`; one without a zone is taken as UTC (as DASH-IF guidelines say).
pub fn parse_datetime(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let parsed = chrono::DateTime::parse_from_rfc3339(s)
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(&format!("{s}Z")))
        .ok()?;
    let utc = parsed.with_timezone(&chrono::Utc);
    let secs = utc.timestamp();
    let nanos = utc.timestamp_subsec_nanos();
    let since = Duration::new(u64::try_from(secs).ok()?, nanos);
    SystemTime::UNIX_EPOCH.checked_add(since)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars<'static> {
        Vars {
            representation_id: "v1",
            bandwidth: Some(250_000),
            number: Some(42),
            time: Some(900_000),
        }
    }

    #[test]
    fn expands_every_identifier_and_width() {
        let cases = [
            ("seg-$Number$.m4s", "seg-42.m4s"),
            ("seg-$Number%05d$.m4s", "seg-00042.m4s"),
            ("$RepresentationID$/$Time$.m4s", "v1/900000.m4s"),
            ("$Bandwidth%08d$/$Number%1d$", "00250000/42"),
            ("a$$b$Number$", "a$b42"),
            ("plain.mp4", "plain.mp4"),
            ("$Number%d$", "42"),
        ];
        for (t, want) in cases {
            assert_eq!(expand(t, &vars()).as_deref(), Ok(want), "{t}");
        }
    }

    #[test]
    fn refuses_what_cannot_be_resolved() {
        let v = vars();
        assert_eq!(expand("x$Number", &v), Err(TemplateError::Unterminated));
        assert!(matches!(
            expand("$SubNumber$", &v),
            Err(TemplateError::Unknown(_))
        ));
        assert!(matches!(
            expand("$Foo$", &v),
            Err(TemplateError::Unknown(_))
        ));
        assert!(matches!(
            expand("$RepresentationID%05d$", &v),
            Err(TemplateError::BadFormat(_))
        ));
        assert!(matches!(
            expand("$Number%05x$", &v),
            Err(TemplateError::BadFormat(_))
        ));
        let no_time = Vars { time: None, ..v };
        assert_eq!(
            expand("$Time$", &no_time),
            Err(TemplateError::NoValue("Time"))
        );
        assert!(uses("a$Time%05d$b", "Time"));
        assert!(!uses("a$$Time$$b", "Time"));
    }

    #[test]
    fn parses_durations() {
        let d = |s| parse_duration(s).map(|d| d.as_secs_f64());
        assert_eq!(d("PT2S"), Some(2.0));
        assert_eq!(d("PT2.5S"), Some(2.5));
        assert_eq!(d("PT1M30S"), Some(90.0));
        assert_eq!(d("PT1H"), Some(3600.0));
        assert_eq!(d("P1DT1S"), Some(86401.0));
        assert_eq!(d("PT0S"), Some(0.0));
        for bad in [
            "", "P", "PT", "2S", "-PT2S", "PT2", "PTS", "PT1.5M", "PT2S3M", "PTxS",
        ] {
            assert_eq!(d(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn parses_datetimes_with_and_without_zone() {
        let t = parse_datetime("1970-01-01T00:00:10.5Z").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap(),
            Duration::from_millis(10_500)
        );
        assert_eq!(parse_datetime("1970-01-01T00:00:10.5"), Some(t));
        let off = parse_datetime("1970-01-01T01:00:10.5+01:00").unwrap();
        assert_eq!(off, t);
        assert_eq!(parse_datetime("yesterday"), None);
    }

    proptest::proptest! {
        /// Any number at any width comes out as its decimal digits, zero-padded to the width,
        /// with the text around it untouched.
        #[test]
        fn number_expansion_round_trips(
            n in 0u64..u64::MAX,
            width in 1usize..20,
            prefix in "[a-z/_.-]{0,12}",
            suffix in "[a-z/_.-]{0,12}",
        ) {
            let t = format!("{prefix}$Number%0{width}d${suffix}");
            let v = Vars { number: Some(n), ..Vars::default() };
            let out = expand(&t, &v).unwrap();
            let digits = &out[prefix.len()..out.len() - suffix.len()];
            proptest::prop_assert!(digits.len() >= width);
            proptest::prop_assert_eq!(digits.parse::<u64>().unwrap(), n);
            proptest::prop_assert!(out.starts_with(&prefix) && out.ends_with(&suffix));
        }

        /// Expansion never panics, and text without `$` is returned as is.
        #[test]
        fn expansion_is_total(t in "[a-zA-Z0-9$%._/-]{0,40}") {
            let r = expand(&t, &Vars { representation_id: "r", ..Vars::default() });
            if !t.contains('$') {
                proptest::prop_assert_eq!(r.unwrap(), t);
            }
        }
    }
}
