//! The MPD rewrite: a streaming pass with quick-xml that splices new values into the original
//! text at the byte spans of the few URL-bearing values, so everything else (namespaces, DRM
//! `ContentProtection`/`cenc:pssh`, `EventStream`, comments, whitespace, attribute quoting)
//! comes out byte-identical.

use super::DashError;
use crate::manifest::{mapper, UrlMapper};
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
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
#[derive(Clone)]
struct Base {
    origin: Url,
    proxy: Option<Url>,
}

struct Frame {
    /// The base the element's parent gives it.
    inherited: Base,
    /// The base inside it (changed by its first `BaseURL`).
    effective: Base,
    base_set: bool,
    /// `Some(start)` while inside an element whose text is a URL.
    text_start: Option<usize>,
    name: String,
}

pub(super) fn rewrite(text: &str, mpd_url: &Url, mapper: &UrlMapper) -> Result<String, DashError> {
    let top = Base {
        origin: mpd_url.clone(),
        proxy: mapper.to_proxy(mpd_url).and_then(|p| Url::parse(&p).ok()),
    };
    let mut reader = Reader::from_str(text);
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let xml = |e: quick_xml::Error| DashError::Xml(e.to_string());
    loop {
        let before = reader.buffer_position() as usize;
        let event = reader.read_event().map_err(xml)?;
        let after = reader.buffer_position() as usize;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let parent = stack.last().map_or(&top, |f| &f.effective);
                let name = e.local_name().as_ref().to_owned();
                attr_edits(text, e, &name, parent, &top, mapper, &mut edits)?;
                if matches!(event, Event::Start(_)) {
                    let inherited = parent.clone();
                    let text_el = matches!(name.as_str(), "BaseURL" | "Location" | "PatchLocation");
                    stack.push(Frame {
                        effective: inherited.clone(),
                        inherited,
                        base_set: false,
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
                let base = if frame.name == "BaseURL" {
                    stack.last().map_or(&top, |f| &f.inherited).clone()
                } else {
                    top.clone()
                };
                let new = rewrite_ref(&value, &base, mapper);
                if let Some(n) = &new {
                    edits.push((core_start, core_start + core.len(), escape(n)));
                }
                if frame.name == "BaseURL" {
                    if let Some(parent) = stack.last_mut().filter(|p| !p.base_set) {
                        parent.base_set = true;
                        parent.effective = Base {
                            origin: base.origin.join(&value).unwrap_or(base.origin.clone()),
                            proxy: base
                                .proxy
                                .as_ref()
                                .and_then(|p| p.join(new.as_deref().unwrap_or(&value)).ok()),
                        };
                    }
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

/// Edits for the URL attributes of one start tag.
fn attr_edits(
    text: &str,
    e: &BytesStart<'_>,
    name: &str,
    base: &Base,
    top: &Base,
    mapper: &UrlMapper,
    edits: &mut Vec<(usize, usize, String)>,
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
        let base = if utc { top } else { base };
        let new = if name == "SegmentTemplate" {
            rewrite_template(&value, base, mapper)
        } else {
            rewrite_ref(&value, base, mapper)
        };
        if let Some(n) = new {
            edits.push((off, off + len, escape(&n)));
        }
    }
    Ok(())
}

/// A template reference: its `$...$` identifiers (whose `%0Nd` would read as
/// percent-escapes) are swapped for plain placeholders while the URL is mapped.
fn rewrite_template(raw: &str, base: &Base, mapper: &UrlMapper) -> Option<String> {
    if !raw.contains('$') {
        return rewrite_ref(raw, base, mapper);
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
        return None;
    }
    let mut out = rewrite_ref(&masked, base, mapper)?;
    for (i, ident) in idents.iter().enumerate().rev() {
        out = out.replacen(&format!("shoaltpl{i}x"), &format!("${ident}$"), 1);
    }
    Some(out)
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
