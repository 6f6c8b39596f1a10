//! HLS playlists: a byte-preserving rewrite into the proxy's URL form and a read-only model.
//!
//! The rewrite works line by line and touches only URI lines and `URI="..."` attributes, so
//! tags no library models (LL-HLS `EXT-X-PART`, `EXT-X-PRELOAD-HINT`, vendor tags) come through
//! in place. The model comes from our own reader rather than m3u8-rs: m3u8-rs 6 stops silently
//! at the first line it cannot parse (a truncated segment list looks complete), attaches
//! `EXT-X-KEY`/`EXT-X-MAP` to the next segment only, keeps durations as `f32` and does not know
//! `EXT-X-SKIP`, and the scheduler must not act on a wrong segment list.

use super::{mapper, segment_key, ByteRange, ManifestError, UrlMapper};
use shoal_proto::SegmentKey;
use std::borrow::Cow;
use url::{Position, Url};

/// Longest line [`parse`] accepts. Far above any real tag (long `data:` key URIs fit), far below
/// what a junk body could make a reader buffer.
pub const MAX_LINE_LEN: usize = 64 * 1024;

const BOM: &str = "\u{feff}";

/// A parsed playlist.
#[derive(Debug, Clone, PartialEq)]
pub enum Playlist {
    /// A master (multivariant) playlist.
    Master(Master),
    /// A media playlist: one rendition's segments.
    Media(Media),
}

/// A master playlist: where the renditions are.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Master {
    /// `EXT-X-STREAM-INF` variants, in playlist order.
    pub variants: Vec<Variant>,
    /// `EXT-X-MEDIA` alternate renditions (audio, subtitles, closed captions).
    pub renditions: Vec<Rendition>,
    /// `EXT-X-I-FRAME-STREAM-INF` I-frame playlists.
    pub iframe_playlists: Vec<Variant>,
}

/// A variant stream (`EXT-X-STREAM-INF` or `EXT-X-I-FRAME-STREAM-INF`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// Absolute URL of its media playlist (origin form, query kept).
    pub url: Url,
    /// `BANDWIDTH`, bits per second.
    pub bandwidth: u64,
    /// `RESOLUTION` as (width, height).
    pub resolution: Option<(u32, u32)>,
    /// `CODECS`.
    pub codecs: Option<String>,
    /// `AUDIO` group id.
    pub audio: Option<String>,
    /// `SUBTITLES` group id.
    pub subtitles: Option<String>,
}

/// An alternate rendition (`EXT-X-MEDIA`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendition {
    /// `TYPE`: `AUDIO`, `VIDEO`, `SUBTITLES` or `CLOSED-CAPTIONS`.
    pub media_type: String,
    /// `GROUP-ID`.
    pub group_id: String,
    /// `NAME`.
    pub name: String,
    /// `LANGUAGE`.
    pub language: Option<String>,
    /// Absolute URL of its media playlist; `None` for renditions carried in the variant
    /// (closed captions, muxed audio).
    pub url: Option<Url>,
}

/// `EXT-X-PLAYLIST-TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaylistType {
    /// The playlist never changes.
    Vod,
    /// Segments are only appended.
    Event,
}

/// A media playlist: what the scheduler needs to know about one rendition.
#[derive(Debug, Clone, PartialEq)]
pub struct Media {
    /// `EXT-X-TARGETDURATION`, seconds.
    pub target_duration: f64,
    /// `EXT-X-MEDIA-SEQUENCE`: sequence number of the first segment of the playlist.
    pub media_sequence: u64,
    /// `EXT-X-DISCONTINUITY-SEQUENCE`.
    pub discontinuity_sequence: u64,
    /// `EXT-X-ENDLIST` seen: no segment will be added (VOD, or a live stream that ended).
    pub ended: bool,
    /// `EXT-X-PLAYLIST-TYPE`.
    pub playlist_type: Option<PlaylistType>,
    /// `EXT-X-I-FRAMES-ONLY`.
    pub i_frames_only: bool,
    /// Complete segments in order. LL-HLS partial segments are not listed.
    pub segments: Vec<Segment>,
}

/// One media segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Absolute origin URL, query kept.
    pub url: Url,
    /// Identity shared by every viewer (see [`segment_key`]).
    pub key: SegmentKey,
    /// Media sequence number.
    pub sequence: u64,
    /// `EXTINF` duration, seconds.
    pub duration: f64,
    /// Resolved `EXT-X-BYTERANGE` (an omitted offset continues the previous segment's range).
    pub range: Option<ByteRange>,
    /// Preceded by `EXT-X-DISCONTINUITY`.
    pub discontinuity: bool,
    /// Marked `EXT-X-GAP`: the segment does not exist; never fetch it.
    pub gap: bool,
    /// The `EXT-X-MAP` in effect.
    pub init: Option<InitSection>,
    /// The `EXT-X-KEY` in effect (`None` for clear segments and `METHOD=NONE`).
    pub encryption: Option<Encryption>,
}

impl Segment {
    /// Whether the segment is encrypted.
    pub fn encrypted(&self) -> bool {
        self.encryption.is_some()
    }
}

/// An `EXT-X-MAP` media initialization section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitSection {
    /// Absolute origin URL.
    pub url: Url,
    /// `BYTERANGE`, if any.
    pub range: Option<ByteRange>,
    /// Its identity, as for segments.
    pub key: SegmentKey,
}

/// An `EXT-X-KEY` in effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encryption {
    /// `METHOD`: `AES-128`, `SAMPLE-AES`, ...
    pub method: String,
    /// Absolute key URL (`skd://` and other schemes kept as they are).
    pub uri: Option<Url>,
    /// `IV`, as written.
    pub iv: Option<String>,
}

/// The result of [`process`]: the body to send to the player and what it describes.
#[derive(Debug)]
pub struct Processed<'a> {
    /// The rewritten playlist, or the original bytes when it did not parse.
    pub body: Cow<'a, [u8]>,
    /// The model, or why the body was passed through unchanged.
    pub playlist: Result<Playlist, ManifestError>,
}

/// What the proxy does with a playlist body: parse it and, if it parses, rewrite it; if not,
/// pass it through unchanged with a warning (the caller counts `playlist`'s error by
/// [`ManifestError::label`]). Never fails: a bad manifest is the origin's business, not a 500.
pub fn process<'a>(bytes: &'a [u8], playlist_url: &Url, mapper: &UrlMapper) -> Processed<'a> {
    match parse_text(bytes, playlist_url) {
        Ok((text, playlist)) => Processed {
            body: Cow::Owned(rewrite(text, playlist_url, mapper).into_bytes()),
            playlist: Ok(playlist),
        },
        Err(e) => {
            tracing::warn!(url = %playlist_url, error = %e, "playlist passed through unchanged");
            Processed {
                body: Cow::Borrowed(bytes),
                playlist: Err(e),
            }
        }
    }
}

/// Rewrites absolute URIs on allow-listed origins into the proxy's URL form. Only URI lines
/// and quoted `URI="..."` attributes change; every other byte (line endings, BOM, comments,
/// unknown tags, whitespace) is kept. Relative URIs are kept byte-identical when they resolve
/// through the proxy to the same origin URL; those that would not (root-relative `/x`, `..`
/// climbing above the origin host) are made absolute. Protocol-relative URIs to hosts not on
/// the allow-list get the playlist's scheme, since the player now resolves them against the
/// proxy. `playlist_url` is the playlist's origin URL. Total: never panics, whatever the text.
pub fn rewrite(text: &str, playlist_url: &Url, mapper: &UrlMapper) -> String {
    let ctx = Rewriter {
        playlist_url,
        mapper,
        proxy_playlist: mapper
            .to_proxy(playlist_url)
            .and_then(|s| Url::parse(&s).ok()),
    };
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    let (bom, text) = match text.strip_prefix(BOM) {
        Some(rest) => (BOM, rest),
        None => ("", text),
    };
    out.push_str(bom);
    for piece in text.split_inclusive('\n') {
        let (line, eol) = split_eol(piece);
        ctx.line(line, &mut out);
        out.push_str(eol);
    }
    out
}

/// Parses a playlist into the model. `Err` for anything that is not a well-formed HLS
/// playlist (no `#EXTM3U`, not UTF-8, over-long lines, malformed modelled tags, truncated).
/// Unknown tags (LL-HLS parts, vendor tags) are ignored.
pub fn parse(bytes: &[u8], playlist_url: &Url) -> Result<Playlist, ManifestError> {
    parse_text(bytes, playlist_url).map(|(_, p)| p)
}

/// Whether a body looks like HLS: optional BOM, then `#EXTM3U` ending its line.
pub fn is_hls(bytes: &[u8]) -> bool {
    let body = bytes.strip_prefix(BOM.as_bytes()).unwrap_or(bytes);
    body.strip_prefix(b"#EXTM3U")
        .is_some_and(|rest| rest.first().is_none_or(|b| b.is_ascii_whitespace()))
}

fn split_eol(piece: &str) -> (&str, &str) {
    let line = piece.strip_suffix('\n').unwrap_or(piece);
    let line = line.strip_suffix('\r').unwrap_or(line);
    (line, &piece[line.len()..])
}

struct Rewriter<'a> {
    playlist_url: &'a Url,
    mapper: &'a UrlMapper,
    /// The playlist's URL as the player sees it, to check what relative URIs resolve to.
    proxy_playlist: Option<Url>,
}

impl Rewriter<'_> {
    fn line(&self, line: &str, out: &mut String) {
        if line.starts_with("#EXT") {
            self.tag(line, out);
        } else if line.starts_with('#') {
            out.push_str(line);
        } else {
            let uri = line.trim();
            match (!uri.is_empty()).then(|| self.uri(uri)).flatten() {
                Some(new) => {
                    let start = line.len() - line.trim_start().len();
                    out.push_str(&line[..start]);
                    out.push_str(&new);
                    out.push_str(&line[start + uri.len()..]);
                }
                None => out.push_str(line),
            }
        }
    }

    fn tag(&self, line: &str, out: &mut String) {
        let Some(colon) = line.find(':') else {
            out.push_str(line);
            return;
        };
        // EXTINF's title is free text, not an attribute list.
        let name = &line[..colon];
        let attrs = (name != "#EXTINF").then(|| Attrs::parse(&line[colon + 1..]));
        let Some(Ok(attrs)) = attrs else {
            out.push_str(line);
            return;
        };
        let mut done = 0;
        for a in attrs.0.iter().filter(|a| a.name == "URI" && a.quoted) {
            if let Some(new) = self.uri(a.value) {
                let start = colon + 1 + a.start;
                out.push_str(&line[done..start]);
                out.push_str(&new);
                done = start + a.value.len();
            }
        }
        out.push_str(&line[done..]);
    }

    /// The URI to write instead of `raw`, or `None` to keep it.
    fn uri(&self, raw: &str) -> Option<String> {
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
                let resolved = self.playlist_url.join(raw).ok()?;
                return self
                    .mapper
                    .proxy_form(&resolved, None)
                    .or_else(|| Some(resolved.to_string()));
            };
            let resolved = Url::parse(raw).ok()?;
            self.mapper.proxy_form(&resolved, Some(tail(after)))
        } else if let Some(after) = raw.strip_prefix("//") {
            let resolved = self.playlist_url.join(raw).ok()?;
            self.mapper
                .proxy_form(&resolved, Some(tail(after)))
                .or_else(|| {
                    matches!(self.playlist_url.scheme(), "http" | "https")
                        .then(|| format!("{}:{raw}", self.playlist_url.scheme()))
                })
        } else {
            if !may_escape(raw) {
                return None;
            }
            let resolved = self.playlist_url.join(raw).ok()?;
            if let Some(via_proxy) = self.proxy_playlist.as_ref().and_then(|p| p.join(raw).ok()) {
                let target = &via_proxy[Position::BeforePath..Position::AfterQuery];
                let same = self
                    .mapper
                    .to_origin(target)
                    .is_ok_and(|o| mapper::same_resource(&o, &resolved));
                if same {
                    return None;
                }
            }
            // Not proxied and would not resolve to the origin's resource: make it absolute.
            self.mapper
                .proxy_form(&resolved, None)
                .or_else(|| Some(resolved.to_string()))
        }
    }
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

/// Path, query and fragment of `after` (what follows `//`): everything from the end of the
/// authority on.
fn tail(after: &str) -> &str {
    let end = after.find(['/', '?', '#', '\\']).unwrap_or(after.len());
    &after[end..]
}

/// Relative references that might resolve differently against the proxy URL than against the
/// origin URL: root-relative ones and those with dot segments or backslashes.
fn may_escape(raw: &str) -> bool {
    raw.starts_with('/')
        || raw.contains("..")
        || raw.contains('\\')
        || raw.to_ascii_lowercase().contains("%2e")
}

/// One `NAME=value` of an attribute list.
struct Attr<'a> {
    name: &'a str,
    /// The value without quotes.
    value: &'a str,
    quoted: bool,
    /// Byte offset of `value` in the attribute list.
    start: usize,
}

/// An attribute list (RFC 8216 §4.2), parsed strictly except for blanks between attributes.
struct Attrs<'a>(Vec<Attr<'a>>);

impl<'a> Attrs<'a> {
    fn parse(s: &'a str) -> Result<Self, &'static str> {
        let b = s.as_bytes();
        let mut attrs = Vec::new();
        let mut i = 0;
        while i < b.len() {
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
            let name_start = i;
            while i < b.len() && b[i] != b'=' && b[i] != b',' {
                i += 1;
            }
            if i >= b.len() || b[i] != b'=' || i == name_start {
                return Err("attribute without `=`");
            }
            let name = s[name_start..i].trim_end();
            i += 1;
            let (value, quoted, start) = if b.get(i) == Some(&b'"') {
                let start = i + 1;
                let len = s[start..].find('"').ok_or("unterminated quoted string")?;
                i = start + len + 1;
                (&s[start..start + len], true, start)
            } else {
                let start = i;
                while i < b.len() && b[i] != b',' {
                    i += 1;
                }
                (s[start..i].trim_end(), false, start)
            };
            attrs.push(Attr {
                name,
                value,
                quoted,
                start,
            });
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
            match b.get(i) {
                None => {}
                Some(b',') => i += 1,
                Some(_) => return Err("junk after attribute value"),
            }
        }
        Ok(Attrs(attrs))
    }

    fn get(&self, name: &str) -> Option<&Attr<'a>> {
        self.0.iter().find(|a| a.name == name)
    }

    fn string(&self, name: &str) -> Option<String> {
        self.get(name).map(|a| a.value.to_owned())
    }
}

/// What the reader has seen of the segment whose URI line comes next.
#[derive(Default)]
struct NextSegment {
    duration: Option<f64>,
    range: Option<(u64, Option<u64>)>,
    discontinuity: bool,
    gap: bool,
}

#[derive(Default)]
struct Reader<'a> {
    master: Master,
    /// Line number and attribute list of an `EXT-X-STREAM-INF` waiting for its URI line.
    pending_variant: Option<(usize, &'a str)>,
    target_duration: Option<f64>,
    media_sequence: u64,
    discontinuity_sequence: u64,
    skipped: u64,
    ended: bool,
    playlist_type: Option<PlaylistType>,
    i_frames_only: bool,
    segments: Vec<Segment>,
    next: NextSegment,
    init: Option<InitSection>,
    encryption: Option<Encryption>,
}

fn parse_text<'a>(bytes: &'a [u8], url: &Url) -> Result<(&'a str, Playlist), ManifestError> {
    if !is_hls(bytes) {
        return Err(ManifestError::NotHls);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| ManifestError::NotUtf8)?;
    let body = text.strip_prefix(BOM).unwrap_or(text);
    let mut r = Reader::default();
    for (i, piece) in body.split_inclusive('\n').enumerate() {
        let (line, _) = split_eol(piece);
        let n = i + 1;
        if line.len() > MAX_LINE_LEN {
            return Err(ManifestError::LineTooLong {
                line: n,
                len: line.len(),
            });
        }
        if line.starts_with("#EXT") {
            r.tag(n, line, url)?;
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            r.uri(n, line.trim(), url)?;
        }
    }
    r.finish().map(|p| (text, p))
}

fn bad(line: usize, tag: &'static str, reason: &'static str) -> ManifestError {
    ManifestError::BadTag { line, tag, reason }
}

fn number<T: std::str::FromStr>(s: &str, n: usize, tag: &'static str) -> Result<T, ManifestError> {
    s.trim().parse().map_err(|_| bad(n, tag, "not a number"))
}

fn resolve(base: &Url, uri: &str, line: usize) -> Result<Url, ManifestError> {
    base.join(uri).map_err(|_| ManifestError::BadUri { line })
}

/// `<length>[@<offset>]`.
fn byte_range(s: &str, n: usize, tag: &'static str) -> Result<(u64, Option<u64>), ManifestError> {
    match s.trim().split_once('@') {
        Some((len, off)) => Ok((number(len, n, tag)?, Some(number(off, n, tag)?))),
        None => Ok((number(s, n, tag)?, None)),
    }
}

impl<'a> Reader<'a> {
    fn tag(&mut self, n: usize, line: &'a str, url: &Url) -> Result<(), ManifestError> {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        macro_rules! attrs {
            ($tag:literal) => {
                Attrs::parse(value).map_err(|reason| bad(n, $tag, reason))?
            };
        }
        match name {
            "#EXTINF" => {
                let d: f64 = number(value.split(',').next().unwrap_or(""), n, "#EXTINF")?;
                if !d.is_finite() || d < 0.0 {
                    return Err(bad(n, "#EXTINF", "duration out of range"));
                }
                if self.next.duration.replace(d).is_some() {
                    return Err(bad(n, "#EXTINF", "two durations for one segment"));
                }
            }
            "#EXT-X-BYTERANGE" => {
                self.next.range = Some(byte_range(value, n, "#EXT-X-BYTERANGE")?);
            }
            "#EXT-X-DISCONTINUITY" => self.next.discontinuity = true,
            "#EXT-X-GAP" => self.next.gap = true,
            "#EXT-X-TARGETDURATION" => {
                self.target_duration = Some(number(value, n, "#EXT-X-TARGETDURATION")?);
            }
            "#EXT-X-MEDIA-SEQUENCE" => {
                self.media_sequence = number(value, n, "#EXT-X-MEDIA-SEQUENCE")?;
            }
            "#EXT-X-DISCONTINUITY-SEQUENCE" => {
                self.discontinuity_sequence = number(value, n, "#EXT-X-DISCONTINUITY-SEQUENCE")?;
            }
            "#EXT-X-ENDLIST" => self.ended = true,
            "#EXT-X-I-FRAMES-ONLY" => self.i_frames_only = true,
            "#EXT-X-PLAYLIST-TYPE" => {
                self.playlist_type = Some(match value.trim() {
                    "VOD" => PlaylistType::Vod,
                    "EVENT" => PlaylistType::Event,
                    _ => return Err(bad(n, "#EXT-X-PLAYLIST-TYPE", "neither VOD nor EVENT")),
                });
            }
            "#EXT-X-SKIP" => {
                let a = attrs!("#EXT-X-SKIP");
                let skipped = a
                    .get("SKIPPED-SEGMENTS")
                    .ok_or_else(|| bad(n, "#EXT-X-SKIP", "no SKIPPED-SEGMENTS"))?;
                self.skipped = number(skipped.value, n, "#EXT-X-SKIP")?;
            }
            "#EXT-X-KEY" => {
                let a = attrs!("#EXT-X-KEY");
                let method = a
                    .string("METHOD")
                    .ok_or_else(|| bad(n, "#EXT-X-KEY", "no METHOD"))?;
                self.encryption = if method == "NONE" {
                    None
                } else {
                    let uri = match a.get("URI") {
                        Some(u) => Some(resolve(url, u.value, n)?),
                        None => None,
                    };
                    Some(Encryption {
                        method,
                        uri,
                        iv: a.string("IV"),
                    })
                };
            }
            "#EXT-X-MAP" => {
                let a = attrs!("#EXT-X-MAP");
                let uri = a
                    .get("URI")
                    .filter(|u| u.quoted)
                    .ok_or_else(|| bad(n, "#EXT-X-MAP", "no quoted URI"))?;
                let map_url = resolve(url, uri.value, n)?;
                let range = match a.get("BYTERANGE") {
                    Some(r) => {
                        let (length, offset) = byte_range(r.value, n, "#EXT-X-MAP")?;
                        Some(ByteRange {
                            offset: offset.unwrap_or(0),
                            length,
                        })
                    }
                    None => None,
                };
                self.init = Some(InitSection {
                    key: segment_key(&map_url, range),
                    url: map_url,
                    range,
                });
            }
            "#EXT-X-STREAM-INF" => {
                if self.pending_variant.is_some() {
                    return Err(bad(
                        n,
                        "#EXT-X-STREAM-INF",
                        "no URI line after the previous one",
                    ));
                }
                attrs!("#EXT-X-STREAM-INF");
                self.pending_variant = Some((n, value));
            }
            "#EXT-X-I-FRAME-STREAM-INF" => {
                let a = attrs!("#EXT-X-I-FRAME-STREAM-INF");
                let uri = a
                    .get("URI")
                    .ok_or_else(|| bad(n, "#EXT-X-I-FRAME-STREAM-INF", "no URI"))?;
                let v = variant(
                    &a,
                    resolve(url, uri.value, n)?,
                    n,
                    "#EXT-X-I-FRAME-STREAM-INF",
                )?;
                self.master.iframe_playlists.push(v);
            }
            "#EXT-X-MEDIA" => {
                let a = attrs!("#EXT-X-MEDIA");
                let required = |k: &str| {
                    a.string(k)
                        .ok_or_else(|| bad(n, "#EXT-X-MEDIA", "TYPE, GROUP-ID or NAME missing"))
                };
                let rendition_url = match a.get("URI") {
                    Some(u) => Some(resolve(url, u.value, n)?),
                    None => None,
                };
                self.master.renditions.push(Rendition {
                    media_type: required("TYPE")?,
                    group_id: required("GROUP-ID")?,
                    name: required("NAME")?,
                    language: a.string("LANGUAGE"),
                    url: rendition_url,
                });
            }
            _ => {}
        }
        Ok(())
    }

    fn uri(&mut self, n: usize, uri: &str, url: &Url) -> Result<(), ManifestError> {
        let resolved = resolve(url, uri, n)?;
        if let Some((tag_line, value)) = self.pending_variant.take() {
            let attrs = Attrs::parse(value).map_err(|r| bad(tag_line, "#EXT-X-STREAM-INF", r))?;
            let v = variant(&attrs, resolved, tag_line, "#EXT-X-STREAM-INF")?;
            self.master.variants.push(v);
            return Ok(());
        }
        let next = std::mem::take(&mut self.next);
        let duration = next.duration.ok_or(ManifestError::OrphanUri { line: n })?;
        let range = next.range.map(|(length, offset)| {
            // RFC 8216 §4.3.2.2: no offset continues the previous segment's sub-range.
            let offset = offset.unwrap_or_else(|| {
                self.segments
                    .last()
                    .and_then(|s| s.range)
                    .map_or(0, |r| r.end())
            });
            ByteRange { offset, length }
        });
        self.segments.push(Segment {
            key: segment_key(&resolved, range),
            url: resolved,
            sequence: 0, // numbered in `finish`, once EXT-X-MEDIA-SEQUENCE is surely known
            duration,
            range,
            discontinuity: next.discontinuity,
            gap: next.gap,
            init: self.init.clone(),
            encryption: self.encryption.clone(),
        });
        Ok(())
    }

    fn finish(mut self) -> Result<Playlist, ManifestError> {
        if self.pending_variant.is_some()
            || self.next.duration.is_some()
            || self.next.range.is_some()
        {
            return Err(ManifestError::Truncated);
        }
        let is_master = !self.master.variants.is_empty()
            || !self.master.renditions.is_empty()
            || !self.master.iframe_playlists.is_empty();
        let is_media = !self.segments.is_empty() || self.target_duration.is_some();
        match (is_master, is_media) {
            (true, true) => Err(ManifestError::Mixed),
            (true, false) => Ok(Playlist::Master(self.master)),
            (false, false) => Err(ManifestError::Empty),
            (false, true) => {
                let target_duration = self
                    .target_duration
                    .ok_or(ManifestError::NoTargetDuration)?;
                let first = self.media_sequence.saturating_add(self.skipped);
                for (i, s) in self.segments.iter_mut().enumerate() {
                    s.sequence = first.saturating_add(i as u64);
                }
                Ok(Playlist::Media(Media {
                    target_duration,
                    media_sequence: self.media_sequence,
                    discontinuity_sequence: self.discontinuity_sequence,
                    ended: self.ended,
                    playlist_type: self.playlist_type,
                    i_frames_only: self.i_frames_only,
                    segments: self.segments,
                }))
            }
        }
    }
}

fn variant(a: &Attrs<'_>, url: Url, n: usize, tag: &'static str) -> Result<Variant, ManifestError> {
    let bandwidth = a
        .get("BANDWIDTH")
        .ok_or_else(|| bad(n, tag, "no BANDWIDTH"))?;
    let resolution = match a.get("RESOLUTION") {
        Some(r) => {
            let (w, h) = r
                .value
                .split_once('x')
                .ok_or_else(|| bad(n, tag, "RESOLUTION is not WxH"))?;
            Some((number(w, n, tag)?, number(h, n, tag)?))
        }
        None => None,
    };
    Ok(Variant {
        url,
        bandwidth: number(bandwidth.value, n, tag)?,
        resolution,
        codecs: a.string("CODECS"),
        audio: a.string("AUDIO"),
        subtitles: a.string("SUBTITLES"),
    })
}
