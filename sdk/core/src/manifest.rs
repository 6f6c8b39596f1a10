//! Manifests: the proxy's URL form ([`UrlMapper`]), segment and swarm identity
//! ([`segment_key`], [`swarm_id_for`]) shared by every format, and per-format rewriting and
//! read-only models ([`hls`], [`dash`]).
//!
//! Everything here is pure: bytes and URLs in, bytes and models out.

pub mod dash;
pub mod digests;
pub mod hls;
mod mapper;

pub use mapper::{MapError, Scheme, UrlMapper};
pub use shoal_proto::ByteRange;

use sha2::{Digest, Sha256};
use shoal_proto::{SegmentKey, SwarmId, MAX_SEGMENT_KEY_LEN, MAX_SWARM_ID_LEN};
use url::Url;

/// Why a manifest or the mapper's config was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The body does not start with `#EXTM3U` (after an optional BOM).
    #[error("not an HLS playlist: no #EXTM3U header")]
    NotHls,
    /// The body is not valid UTF-8.
    #[error("playlist is not valid UTF-8")]
    NotUtf8,
    /// A line is longer than [`hls::MAX_LINE_LEN`].
    #[error("line {line} is {len} bytes long")]
    LineTooLong {
        /// 1-based line number.
        line: usize,
        /// Its length in bytes.
        len: usize,
    },
    /// A tag the model needs is malformed.
    #[error("line {line}: malformed {tag}: {reason}")]
    BadTag {
        /// 1-based line number.
        line: usize,
        /// The tag name, e.g. `#EXTINF`.
        tag: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A URI that does not resolve against the playlist URL.
    #[error("line {line}: unresolvable URI")]
    BadUri {
        /// 1-based line number.
        line: usize,
    },
    /// A URI line without the `#EXTINF` (media) or `#EXT-X-STREAM-INF` (master) it needs.
    #[error("line {line}: URI without a preceding #EXTINF or #EXT-X-STREAM-INF")]
    OrphanUri {
        /// 1-based line number.
        line: usize,
    },
    /// The body ends inside a segment or variant (a tag waits for its URI line): truncated.
    #[error("playlist ends before the URI of its last segment or variant")]
    Truncated,
    /// Holds both master tags and media segments.
    #[error("playlist mixes master and media tags")]
    Mixed,
    /// A media playlist without `#EXT-X-TARGETDURATION`.
    #[error("media playlist without #EXT-X-TARGETDURATION")]
    NoTargetDuration,
    /// Neither variants nor a target duration: nothing a player could play.
    #[error("playlist has neither variants nor segments")]
    Empty,
    /// The proxy base URL in config is unusable.
    #[error("proxy base `{base}`: {reason}")]
    BadProxyBase {
        /// The configured value.
        base: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An allow-listed origin in config is unusable.
    #[error("origin `{origin}`: {reason}")]
    BadOrigin {
        /// The configured value.
        origin: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl ManifestError {
    /// A low-cardinality label for metrics (`shoal_edge_manifest_passthrough_total{reason}`).
    pub fn label(&self) -> &'static str {
        match self {
            ManifestError::NotHls => "not_hls",
            ManifestError::NotUtf8 => "not_utf8",
            ManifestError::LineTooLong { .. } => "line_too_long",
            ManifestError::BadTag { .. } => "bad_tag",
            ManifestError::BadUri { .. } => "bad_uri",
            ManifestError::OrphanUri { .. } => "orphan_uri",
            ManifestError::Truncated => "truncated",
            ManifestError::Mixed => "mixed",
            ManifestError::NoTargetDuration => "no_target_duration",
            ManifestError::Empty => "empty",
            ManifestError::BadProxyBase { .. } | ManifestError::BadOrigin { .. } => "config",
        }
    }
}

/// Stable identity of the swarm that plays a media playlist: its canonical URL without query
/// (scheme and fragment dropped, host lowercased, default port dropped), so viewers with
/// different tokens or reaching the origin over http and https meet. Hashed when longer than
/// [`MAX_SWARM_ID_LEN`]. An app that sets its own id skips this.
pub fn swarm_id_for(media_playlist_url: &Url) -> SwarmId {
    let mut canonical = canonical(media_playlist_url);
    if canonical.len() > MAX_SWARM_ID_LEN {
        canonical = hashed(&canonical);
    }
    SwarmId::new(canonical.as_str())
        .unwrap_or_else(|_| SwarmId::new(hashed(&canonical)).expect("hex digest is a valid id"))
}

/// Stable key of a segment: canonical URL without query (as [`swarm_id_for`]) plus the byte
/// range if any (`#br=<length>@<offset>`); the same for every viewer whatever query token their
/// URL carries. Hashed when longer than [`MAX_SEGMENT_KEY_LEN`].
pub fn segment_key(url: &Url, range: Option<ByteRange>) -> SegmentKey {
    let mut canonical = canonical(url);
    if let Some(r) = range {
        canonical.push_str(&format!("#br={}@{}", r.length, r.offset));
    }
    if canonical.len() > MAX_SEGMENT_KEY_LEN {
        canonical = hashed(&canonical);
    }
    SegmentKey::new(canonical.as_str())
        .unwrap_or_else(|_| SegmentKey::new(hashed(&canonical)).expect("hex digest is a valid key"))
}

/// `host[:port]/path`, or the whole URL minus query and fragment for host-less URLs.
fn canonical(url: &Url) -> String {
    match mapper::authority(url) {
        Some(a) => format!("{a}{}", url.path()),
        None => {
            let mut u = url.clone();
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
    }
}

fn hashed(s: &str) -> String {
    format!("sha256-{}", hex::encode(Sha256::digest(s.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn swarm_id_ignores_query_scheme_case_and_default_port() {
        let a = swarm_id_for(&u("https://CDN.example.com:443/live/720p.m3u8?token=a"));
        let b = swarm_id_for(&u("http://cdn.example.com/live/720p.m3u8?token=b#x"));
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "cdn.example.com/live/720p.m3u8");
        let other = swarm_id_for(&u("https://cdn.example.com/live/1080p.m3u8"));
        assert_ne!(a, other);
        let port = swarm_id_for(&u("http://127.0.0.1:8000/live/720p.m3u8"));
        assert_eq!(port.as_str(), "127.0.0.1:8000/live/720p.m3u8");
    }

    #[test]
    fn long_ids_are_hashed_and_stay_distinct() {
        let long = format!("https://cdn.example.com/{}", "a".repeat(600));
        let id = swarm_id_for(&u(&format!("{long}/1.m3u8")));
        assert!(id.as_str().starts_with("sha256-"));
        assert!(id.as_str().len() <= MAX_SWARM_ID_LEN);
        assert_ne!(id, swarm_id_for(&u(&format!("{long}/2.m3u8"))));
        let k = segment_key(&u(&format!("{long}/1.ts?t=1")), None);
        assert_eq!(k, segment_key(&u(&format!("{long}/1.ts?t=2")), None));
        assert!(k.as_str().len() <= MAX_SEGMENT_KEY_LEN);
    }

    #[test]
    fn segment_key_ignores_tokens_but_not_ranges() {
        let a = segment_key(&u("https://cdn.example.com/v/main.mp4?tok=1"), None);
        let b = segment_key(&u("https://cdn.example.com/v/main.mp4?tok=2"), None);
        assert_eq!(a, b);
        let r1 = ByteRange {
            offset: 0,
            length: 1000,
        };
        let r2 = ByteRange {
            offset: 1000,
            length: 1000,
        };
        let k1 = segment_key(&u("https://cdn.example.com/v/main.mp4"), Some(r1));
        let k2 = segment_key(&u("https://cdn.example.com/v/main.mp4"), Some(r2));
        assert_eq!(k1.as_str(), "cdn.example.com/v/main.mp4#br=1000@0");
        assert_ne!(k1, k2);
        assert_ne!(k1, a);
    }

    #[test]
    fn keys_of_odd_urls_are_printable() {
        for s in [
            "https://cdn.example.com/a b/ü.ts",
            "data:text/plain,hello world",
        ] {
            let k = segment_key(&u(s), None);
            assert!(k.validate().is_ok(), "{k}");
        }
    }

    #[test]
    fn http_range_is_inclusive() {
        let r = ByteRange {
            offset: 10,
            length: 5,
        };
        assert_eq!(r.http_range().as_deref(), Some("bytes=10-14"));
        assert_eq!(
            ByteRange {
                offset: 3,
                length: 0
            }
            .http_range(),
            None
        );
    }
}
