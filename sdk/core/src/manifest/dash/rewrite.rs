//! The MPD rewrite: a streaming pass with quick-xml that splices new values into the original
//! text at the byte spans of the few URL-bearing values, so everything else (namespaces, DRM
//! `ContentProtection`/`cenc:pssh`, `EventStream`, comments, whitespace, attribute quoting)
//! comes out byte-identical.

use super::xml::{read_tree, El};
use super::DashError;
use crate::manifest::{mapper, UrlMapper};
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use std::collections::{HashMap, HashSet};
use url::{Position, Url};

/// Attributes holding URLs, per element.
fn url_attrs(element: &str) -> &'static [&'static str] {
    match element {
        "SegmentTemplate" => &["media", "initialization", "index", "bitstreamSwitching"],
        "SegmentURL" => &["media", "index"],
        "Initialization" | "RepresentationIndex" | "BitstreamSwitching" => &["sourceURL"],
        _ => &[],
    }
}

/// `UTCTiming` schemes whose `value` is a URL (the others carry a date or an NTP server).
fn utc_scheme_is_http(scheme: &str) -> bool {
    scheme.trim().starts_with("urn:mpeg:dash:utc:http-")
}

/// Where references resolve: for the origin, and for the player reading the rewritten MPD.
#[derive(Clone, PartialEq)]
struct Base {
    origin: Url,
    proxy: Option<Url>,
}

/// What the rewrite decides before its streaming pass, from the model's element tree: which
/// bases the URLs inside each MPD, Period, AdaptationSet and Representation are resolved
/// against, and the new text of their `BaseURL`s. Decided on the tree, not in document order,
/// because the model resolves with each level's first `BaseURL` wherever it stands among its
/// siblings, and a Period's or AdaptationSet's segment information with the base of every
/// Representation that inherits it.
struct Plan {
    /// By start offset of a level element: the first base of every Representation inheriting
    /// its segment information (the one the model resolves with), or its own first base.
    contexts: HashMap<usize, Vec<Base>>,
    /// By start offset: the `BaseURL`s of level elements, already edited here.
    base_urls: HashSet<usize>,
}

impl Plan {
    fn new(text: &str, top: &Base, mapper: &UrlMapper, edits: &mut Vec<Edit>) -> Self {
        let mut plan = Plan {
            contexts: HashMap::new(),
            base_urls: HashSet::new(),
        };
        // Text that is not XML has no tree: the streaming pass reports the error.
        let Ok(root) = read_tree(text) else {
            return plan;
        };
        let mpd = plan.level(text, &root, top, mapper, edits);
        plan.contexts.insert(root.start, vec![mpd.clone()]);
        for p in root.all("Period") {
            let pb = plan.level(text, p, &mpd, mapper, edits);
            let mut p_ctx = Vec::new();
            for a in p.all("AdaptationSet") {
                let ab = plan.level(text, a, &pb, mapper, edits);
                let mut a_ctx = Vec::new();
                for r in a.all("Representation") {
                    let rb = plan.level(text, r, &ab, mapper, edits);
                    plan.contexts.insert(r.start, vec![rb.clone()]);
                    push_new(&mut a_ctx, rb);
                }
                for b in &a_ctx {
                    push_new(&mut p_ctx, b.clone());
                }
                plan.contexts
                    .insert(a.start, if a_ctx.is_empty() { vec![ab] } else { a_ctx });
            }
            plan.contexts
                .insert(p.start, if p_ctx.is_empty() { vec![pb] } else { p_ctx });
        }
        plan
    }

    /// Edits the `BaseURL`s of `el` (each resolved against `parent`, the first base of the
    /// level above) and returns the first base inside `el`, as the model computes it.
    fn level(
        &mut self,
        text: &str,
        el: &El,
        parent: &Base,
        mapper: &UrlMapper,
        edits: &mut Vec<Edit>,
    ) -> Base {
        let mut first = None;
        for b in el.all("BaseURL") {
            let value = b.text.trim();
            let raw = b
                .inner
                .and_then(|(from, to)| Some((from, text.get(from..to)?)));
            // CDATA, comments or child elements inside: left alone.
            let span = raw
                .filter(|(_, raw)| !raw.contains('<'))
                .map(|(from, raw)| {
                    let core_start = from + (raw.len() - raw.trim_start().len());
                    (core_start, core_start + raw.trim().len())
                });
            let written = span.and_then(|(start, end)| {
                let new = rewrite_ref(value, parent, mapper)?;
                edits.push((start, end, escape(&new)));
                Some(new)
            });
            self.base_urls.insert(b.start);
            first.get_or_insert_with(|| Base {
                origin: parent.origin.join(value).unwrap_or(parent.origin.clone()),
                proxy: parent
                    .proxy
                    .as_ref()
                    .and_then(|p| p.join(written.as_deref().unwrap_or(value)).ok()),
            });
        }
        first.unwrap_or_else(|| parent.clone())
    }
}

fn push_new(v: &mut Vec<Base>, b: Base) {
    if !v.contains(&b) {
        v.push(b);
    }
}

/// A splice: replace `text[start..end]` with the string.
type Edit = (usize, usize, String);

struct Frame {
    /// Start offset of the innermost level element around (a key of `Plan::contexts`).
    level: usize,
    /// `Some(start)` while inside an element whose text is a URL.
    text_start: Option<usize>,
    name: String,
}

pub(super) fn rewrite(text: &str, mpd_url: &Url, mapper: &UrlMapper) -> Result<String, DashError> {
    let top = Base {
        origin: mpd_url.clone(),
        proxy: mapper.to_proxy(mpd_url).and_then(|p| Url::parse(&p).ok()),
    };
    let mut edits: Vec<Edit> = Vec::new();
    let mut plan = Plan::new(text, &top, mapper, &mut edits);
    plan.contexts.insert(usize::MAX, vec![top.clone()]);
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let xml = |e: quick_xml::Error| DashError::Xml(e.to_string());
    loop {
        let before = reader.buffer_position() as usize;
        let event = reader.read_event().map_err(xml)?;
        let after = reader.buffer_position() as usize;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let outer = stack.last().map_or(usize::MAX, |f| f.level);
                let level = if plan.contexts.contains_key(&before) {
                    before
                } else {
                    outer
                };
                let name = e.local_name().as_ref().to_owned();
                let utc = name == "UTCTiming";
                let bases = &plan.contexts[if utc { &usize::MAX } else { &level }];
                attr_edits(text, e, &name, bases, mapper, &mut edits)?;
                if matches!(event, Event::Start(_)) {
                    let text_el = matches!(name.as_str(), "BaseURL" | "Location" | "PatchLocation")
                        && !plan.base_urls.contains(&before);
                    stack.push(Frame {
                        level,
                        text_start: text_el.then_some(after),
                        name,
                    });
                }
            }
            Event::End(_) => {
                let Some(frame) = stack.pop() else {
                    return Err(DashError::Xml("unmatched end tag".into()));
                };
                let Some(start) = frame.text_start else {
                    continue;
                };
                let Some(raw) = text.get(start..before) else {
                    continue;
                };
                // CDATA, comments or child elements inside: leave it alone.
                if raw.contains('<') {
                    continue;
                }
                let core = raw.trim();
                let core_start = start + (raw.len() - raw.trim_start().len());
                let Ok(value) = quick_xml::escape::unescape(core) else {
                    continue;
                };
                // A `BaseURL` the model does not read (not on a level element) changes no
                // base; it is mapped like the URLs beside it.
                let base = if frame.name == "BaseURL" {
                    &plan.contexts[&frame.level][0]
                } else {
                    &top
                };
                if let Some(n) = rewrite_ref(&value, base, mapper) {
                    edits.push((core_start, core_start + core.len(), escape(&n)));
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let mut out = String::with_capacity(text.len() + edits.len() * 32);
    let mut done = 0;
    edits.sort_by_key(|e| e.0);
    for (start, end, new) in edits {
        if start < done {
            continue;
        }
        out.push_str(&text[done..start]);
        out.push_str(&new);
        done = end;
    }
    out.push_str(&text[done..]);
    Ok(out)
}

fn escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

/// Edits for the URL attributes of one start tag, each resolved against every base in `bases`.
fn attr_edits(
    text: &str,
    e: &BytesStart<'_>,
    name: &str,
    bases: &[Base],
    mapper: &UrlMapper,
    edits: &mut Vec<Edit>,
) -> Result<(), DashError> {
    let utc = name == "UTCTiming";
    let wanted = url_attrs(name);
    if wanted.is_empty() && !utc {
        return Ok(());
    }
    let mut scheme_http = false;
    let mut candidates = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|e| DashError::Xml(e.to_string()))?;
        let key = a.key.local_name();
        let key = key.as_ref();
        if utc && key == "schemeIdUri" {
            scheme_http = a
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .is_ok_and(|v| utc_scheme_is_http(&v));
        }
        let is_url = if utc {
            key == "value"
        } else {
            wanted.contains(&key)
        };
        if !is_url {
            continue;
        }
        // Offsets in the input: the reader borrows the values from it.
        let raw: &str = &a.value;
        let off = (raw.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
        if text.get(off..off + raw.len()) != Some(raw) {
            continue;
        }
        let Ok(value) = a.normalized_value(quick_xml::XmlVersion::Implicit1_0) else {
            continue;
        };
        candidates.push((off, raw.len(), value.into_owned()));
    }
    if utc && !scheme_http {
        return Ok(());
    }
    for (off, len, value) in candidates {
        let new = if name == "SegmentTemplate" {
            rewrite_template(&value, bases, mapper)?
        } else {
            rewrite_shared(&value, bases, mapper)?
        };
        if let Some(n) = new {
            edits.push((off, off + len, escape(&n)));
        }
    }
    Ok(())
}

/// A template reference: its `$...$` identifiers (whose `%0Nd` would read as
/// percent-escapes) are swapped for plain placeholders while the URL is mapped.
fn rewrite_template(
    raw: &str,
    bases: &[Base],
    mapper: &UrlMapper,
) -> Result<Option<String>, DashError> {
    if !raw.contains('$') {
        return rewrite_shared(raw, bases, mapper);
    }
    let mut idents = Vec::new();
    let mut masked = String::with_capacity(raw.len());
    let mut parts = raw.split('$');
    masked.push_str(parts.next().unwrap_or_default());
    let mut inside = true;
    for p in parts {
        if inside {
            masked.push_str(&format!("shoaltpl{}x", idents.len()));
            idents.push(p);
        } else {
            masked.push_str(p);
        }
        inside = !inside;
    }
    if !inside {
        // Odd number of `$`: not a valid template; leave it.
        return Ok(None);
    }
    let Some(mut out) = rewrite_shared(&masked, bases, mapper)? else {
        return Ok(None);
    };
    for (i, ident) in idents.iter().enumerate().rev() {
        out = out.replacen(&format!("shoaltpl{i}x"), &format!("${ident}$"), 1);
    }
    Ok(Some(out))
}

/// The reference to write instead of `raw` (`None` keeps it) when every base in `bases`
/// resolves it: one that reaches, under each, what `raw` means there. A Period's or
/// AdaptationSet's segment information is resolved by each Representation below with its own
/// BaseURL; when those are on different hosts a root-relative reference means a different
/// origin URL under each, and no single value may serve them all: the MPD is then refused.
fn rewrite_shared(
    raw: &str,
    bases: &[Base],
    mapper: &UrlMapper,
) -> Result<Option<String>, DashError> {
    let own: Vec<Option<String>> = bases.iter().map(|b| rewrite_ref(raw, b, mapper)).collect();
    let fits = |c: &Option<String>| {
        bases
            .iter()
            .zip(&own)
            .all(|(b, o)| o == c || reaches(raw, c.as_deref(), b, mapper))
    };
    own.iter()
        .find(|c| fits(c))
        .cloned()
        .ok_or_else(|| DashError::AmbiguousUrl(raw.chars().take(64).collect()))
}

/// Whether a player reading `written` (`None`: `raw` kept) under `base` reaches, directly or
/// through the proxy, the origin URL the model resolves `raw` to.
fn reaches(raw: &str, written: Option<&str>, base: &Base, mapper: &UrlMapper) -> bool {
    let raw = raw.trim();
    let Ok(meant) = base.origin.join(raw) else {
        // The model refuses the MPD.
        return true;
    };
    let player = base.proxy.as_ref().unwrap_or(&base.origin);
    let Ok(got) = player.join(written.unwrap_or(raw).trim()) else {
        return false;
    };
    if &got[..Position::BeforePath] == mapper.proxy_base() {
        mapper
            .to_origin(&got[Position::BeforePath..Position::AfterQuery])
            .is_ok_and(|o| mapper::same_resource(&o, &meant))
    } else {
        got.scheme() == meant.scheme() && mapper::same_resource(&got, &meant)
    }
}

/// The reference to write instead of `raw`, or `None` to keep it: absolute URLs on
/// allow-listed origins become proxy URLs; relative ones stay unless they would resolve
/// elsewhere through the proxy (root-relative, dot segments), and then become absolute.
fn rewrite_ref(raw: &str, base: &Base, mapper: &UrlMapper) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    if let Some(scheme_len) = scheme_len(raw) {
        if !matches!(
            raw[..scheme_len].to_ascii_lowercase().as_str(),
            "http" | "https"
        ) {
            return None;
        }
        let Some(after) = raw[scheme_len + 1..].strip_prefix("//") else {
            // `https:seg.ts` is relative only to a base of the same scheme: against the
            // proxy URL it would mean something else, so it is written out in full.
            let resolved = base.origin.join(raw).ok()?;
            return mapper
                .proxy_form(&resolved, None)
                .or_else(|| Some(resolved.to_string()));
        };
        let resolved = Url::parse(raw).ok()?;
        return mapper.proxy_form(&resolved, Some(tail(after)));
    }
    if let Some(after) = raw.strip_prefix("//") {
        let resolved = base.origin.join(raw).ok()?;
        return mapper.proxy_form(&resolved, Some(tail(after))).or_else(|| {
            matches!(base.origin.scheme(), "http" | "https")
                .then(|| format!("{}:{raw}", base.origin.scheme()))
        });
    }
    let resolved = base.origin.join(raw).ok()?;
    if let Some(via_proxy) = base.proxy.as_ref().and_then(|p| p.join(raw).ok()) {
        let target = &via_proxy[Position::BeforePath..Position::AfterQuery];
        let same_host = via_proxy.host_str() == base.proxy.as_ref().and_then(|p| p.host_str())
            && via_proxy.port() == base.proxy.as_ref().and_then(|p| p.port());
        if same_host
            && mapper
                .to_origin(target)
                .is_ok_and(|o| mapper::same_resource(&o, &resolved))
        {
            return None;
        }
        // The player resolves against a base that is not a proxy URL (a BaseURL on another
        // host): it reaches the same resource directly.
        if base
            .proxy
            .as_ref()
            .is_some_and(|p| !p.as_str().starts_with(mapper.proxy_base()))
            && mapper::same_resource(&via_proxy, &resolved)
        {
            return None;
        }
    }
    mapper.proxy_form(&resolved, None).or_else(|| {
        // Not proxied and would not resolve to the origin's resource: make it absolute.
        Some(resolved.to_string())
    })
}

/// Length of the URI's scheme if it has one (`scheme ":"`, RFC 3986 §3.1).
fn scheme_len(s: &str) -> Option<usize> {
    let colon = s.find(':')?;
    let scheme = &s[..colon];
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(colon)
}

/// Path, query and fragment of what follows `//`.
fn tail(after: &str) -> &str {
    let end = after.find(['/', '?', '#', '\\']).unwrap_or(after.len());
    &after[end..]
}
