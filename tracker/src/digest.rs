//! The digest service: the trusted SHA-256 of a segment, computed from the origin's own bytes.
//!
//! A segment key (`host[:port]/path`, plus `#br=<len>@<off>` for byte ranges) names the origin
//! resource. The tracker fetches it only when the host is on its own allow-list, hashes it, and
//! caches the answer; concurrent requests for one key share one origin fetch.

use crate::metrics::{DigestResult, Metrics};
use base64::Engine;
use moka::future::Cache;
use reqwest::header::{HeaderMap, CONTENT_LENGTH, RANGE};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use shoal_proto::{DigestResponse, SegmentKey};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Why no digest could be given.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DigestError {
    /// The key is a hash of a long URL (`sha256-...`): the URL cannot be recovered from it.
    #[error("segment key {0} is a hash of a URL too long to carry; the tracker cannot tell which origin resource it names")]
    Unresolvable(String),
    /// The key is not `host[:port]/path[#br=<len>@<off>]`.
    #[error("segment key {key} cannot be mapped to an origin URL: {why}")]
    BadKey {
        /// The key.
        key: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The key names a host that is not on the tracker's origin allow-list.
    #[error("origin {0} is not on this tracker's origin allow-list")]
    NotAllowed(String),
    /// The origin answered 404 or 410.
    #[error("the origin has no such segment ({0})")]
    NotFound(StatusCode),
    /// The origin answered with another unexpected status (retry later).
    #[error("the origin answered {0}")]
    OriginStatus(StatusCode),
    /// The origin could not be reached or the transfer failed (retry later).
    #[error("the origin could not be fetched: {0}")]
    OriginUnreachable(String),
    /// The segment is larger than the configured maximum.
    #[error("the segment is larger than {0} bytes")]
    TooLarge(u64),
}

/// How to reach one allow-listed origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP (local test origins).
    Http,
    /// HTTPS (the default).
    Https,
}

/// Settings of the digest service.
#[derive(Debug, Clone)]
pub struct DigestConfig {
    /// Allow-listed origins (`host` or `host:port`, lowercase) and their scheme.
    pub origins: Vec<(String, Scheme)>,
    /// How long a digest is kept.
    pub ttl: Duration,
    /// Most digests kept.
    pub capacity: u64,
    /// Largest segment fetched, in bytes.
    pub max_segment_bytes: u64,
    /// Ask with HEAD first and take the digest from the origin's `Repr-Digest` header.
    pub repr_digest: bool,
    /// Timeout of one origin request, body included.
    pub fetch_timeout: Duration,
}

/// The digest service. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct DigestService {
    origins: HashMap<String, Scheme>,
    client: reqwest::Client,
    cache: Cache<SegmentKey, Arc<DigestResponse>>,
    max_bytes: u64,
    repr_digest: bool,
    metrics: Arc<Metrics>,
}

/// Where a key points: the URL to fetch and the byte range, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginTarget {
    /// Absolute URL of the resource.
    pub url: url::Url,
    /// `(offset, length)` of the byte range.
    pub range: Option<(u64, u64)>,
}

impl DigestService {
    /// A service fetching from `config.origins` only, counting into `metrics`.
    pub fn new(config: &DigestConfig, metrics: Arc<Metrics>) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            // A redirect could lead anywhere: only the allow-listed URL itself is fetched.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(config.fetch_timeout)
            .user_agent(concat!("shoal-tracker/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            origins: config.origins.iter().cloned().collect(),
            client,
            cache: Cache::builder()
                .max_capacity(config.capacity)
                .time_to_live(config.ttl)
                .build(),
            max_bytes: config.max_segment_bytes,
            repr_digest: config.repr_digest,
            metrics,
        })
    }

    /// Maps a key to the origin URL it names, refusing hosts off the allow-list.
    pub fn resolve(&self, key: &SegmentKey) -> Result<OriginTarget, DigestError> {
        resolve(&self.origins, key)
    }

    /// The digest of `key`: from the cache, or from one origin fetch shared by every
    /// concurrent caller asking for the same key. Errors are not cached.
    pub async fn digest(&self, key: &SegmentKey) -> Result<DigestResponse, DigestError> {
        let result = self.digest_inner(key).await;
        self.metrics.digest(match &result {
            Ok((_, true)) => DigestResult::Miss,
            Ok((_, false)) => DigestResult::Hit,
            Err(DigestError::NotFound(_)) => DigestResult::NotFound,
            Err(
                DigestError::OriginStatus(_)
                | DigestError::OriginUnreachable(_)
                | DigestError::TooLarge(_),
            ) => DigestResult::OriginError,
            Err(_) => DigestResult::Refused,
        });
        result.map(|(d, _)| d)
    }

    async fn digest_inner(&self, key: &SegmentKey) -> Result<(DigestResponse, bool), DigestError> {
        let target = self.resolve(key)?;
        let entry = self
            .cache
            .entry_by_ref(key)
            .or_try_insert_with(self.fetch(key, target))
            .await
            .map_err(|e| (*e).clone())?;
        let fresh = entry.is_fresh();
        Ok(((*entry.into_value()).clone(), fresh))
    }

    async fn fetch(
        &self,
        key: &SegmentKey,
        target: OriginTarget,
    ) -> Result<Arc<DigestResponse>, DigestError> {
        let unreachable = |e: reqwest::Error| DigestError::OriginUnreachable(e.to_string());
        if self.repr_digest && target.range.is_none() {
            let head = self
                .client
                .head(target.url.clone())
                .send()
                .await
                .map_err(unreachable)?;
            self.metrics.digest_origin_fetch();
            check_status(head.status(), false)?;
            if let Some(d) = from_repr_digest(key, head.headers()) {
                return Ok(Arc::new(d));
            }
        }
        let mut req = self.client.get(target.url);
        if let Some((off, len)) = target.range {
            req = req.header(RANGE, format!("bytes={off}-{}", off + len - 1));
        }
        let mut resp = req.send().await.map_err(unreachable)?;
        self.metrics.digest_origin_fetch();
        let status = resp.status();
        check_status(status, target.range.is_some())?;
        // An origin that ignores Range sends the whole file: hash the slice the key names.
        let (skip, want) = match target.range {
            Some((off, len)) if status == StatusCode::OK => (off, Some(len)),
            Some((_, len)) => (0, Some(len)),
            None => (0, None),
        };
        if want.is_some_and(|w| w > self.max_bytes)
            || (want.is_none() && resp.content_length().is_some_and(|l| l > self.max_bytes))
        {
            return Err(DigestError::TooLarge(self.max_bytes));
        }
        // One byte past the cap tells "too large" apart from "exactly the cap".
        let limit = want.unwrap_or(self.max_bytes + 1);
        let mut hasher = Sha256::new();
        let (mut seen, mut size, mut received) = (0u64, 0u64, 0u64);
        while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
            received += chunk.len() as u64;
            let start = skip.saturating_sub(seen).min(chunk.len() as u64) as usize;
            seen += chunk.len() as u64;
            let take = ((chunk.len() - start) as u64).min(limit - size) as usize;
            hasher.update(&chunk[start..start + take]);
            size += take as u64;
            if size == limit {
                break; // Past the range, or past the cap: nothing more to hash.
            }
        }
        if want.is_none() && size > self.max_bytes {
            self.metrics.digest_origin_bytes(received);
            return Err(DigestError::TooLarge(self.max_bytes));
        }
        self.metrics.digest_origin_bytes(received);
        if want.is_some_and(|w| size != w) {
            return Err(DigestError::OriginUnreachable(format!(
                "the origin sent {size} bytes of a {}-byte range",
                want.unwrap_or(0)
            )));
        }
        Ok(Arc::new(DigestResponse {
            segment: key.clone(),
            sha256: hex::encode(hasher.finalize()),
            size,
        }))
    }
}

/// How long the start-up check waits for an origin's answer over one scheme.
pub const ORIGIN_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

impl Scheme {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }

    fn other(self) -> Self {
        match self {
            Self::Http => Self::Https,
            Self::Https => Self::Http,
        }
    }
}

/// What the start-up check found for one allow-listed origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginCheck {
    /// It answered (any HTTP status) over the scheme the digest service uses for it.
    Answers {
        /// That scheme.
        scheme: Scheme,
        /// The status of `HEAD /`.
        status: u16,
    },
    /// It did not answer over the configured scheme, but did over the other one.
    OtherScheme {
        /// The scheme the digest service uses for it.
        configured: Scheme,
        /// Why that failed.
        error: String,
        /// The status of `HEAD /` over the other scheme.
        status: u16,
    },
    /// It answered over neither scheme.
    Silent {
        /// The scheme the digest service uses for it.
        configured: Scheme,
        /// Why that failed.
        error: String,
    },
}

/// `HEAD {scheme}://{origin}/` within [`ORIGIN_CHECK_TIMEOUT`]: the status, or why none came.
async fn probe(client: &reqwest::Client, origin: &str, scheme: Scheme) -> Result<u16, String> {
    let url = format!("{}://{origin}/", scheme.as_str());
    match client.head(&url).send().await {
        Ok(r) => Ok(r.status().as_u16()),
        Err(e) => Err(shoal_core::error_text::chain(&e)),
    }
}

/// Checks one origin: over its configured scheme, and over the other one if that fails.
pub async fn check_origin(client: &reqwest::Client, origin: &str, scheme: Scheme) -> OriginCheck {
    match probe(client, origin, scheme).await {
        Ok(status) => OriginCheck::Answers { scheme, status },
        Err(error) => match probe(client, origin, scheme.other()).await {
            Ok(status) => OriginCheck::OtherScheme {
                configured: scheme,
                error,
                status,
            },
            Err(_) => OriginCheck::Silent {
                configured: scheme,
                error,
            },
        },
    }
}

/// Checks every allow-listed origin at once (`HEAD /`, a few seconds at most each) and logs
/// one line per origin: whether it answers, and over which scheme. Meant to run in the
/// background at start: a digest service pointed at an origin over the wrong scheme, or at
/// one it cannot reach, gets no digest, and nothing else would say so before peers do.
pub async fn check_origins(origins: Vec<(String, Scheme)>) {
    if origins.is_empty() {
        return;
    }
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(ORIGIN_CHECK_TIMEOUT)
        .timeout(ORIGIN_CHECK_TIMEOUT)
        .user_agent(concat!(
            "shoal-tracker/",
            env!("CARGO_PKG_VERSION"),
            " (origin check)"
        ))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::warn!(error = %e, "cannot check the digest origins: no HTTP client");
            return;
        }
    };
    let mut checks = tokio::task::JoinSet::new();
    for (origin, scheme) in origins {
        let client = client.clone();
        checks.spawn(async move {
            let found = check_origin(&client, &origin, scheme).await;
            (origin, found)
        });
    }
    while let Some(done) = checks.join_next().await {
        let Ok((origin, found)) = done else { continue };
        log_check(&origin, &found);
    }
}

fn log_check(origin: &str, found: &OriginCheck) {
    match found {
        OriginCheck::Answers { scheme, status } => tracing::info!(
            origin,
            scheme = scheme.as_str(),
            answers = true,
            answers_over = scheme.as_str(),
            status,
            "digest origin {origin} answers over {}",
            scheme.as_str()
        ),
        OriginCheck::OtherScheme {
            configured,
            error,
            status,
        } => {
            let other = configured.other().as_str();
            tracing::warn!(
                origin,
                scheme = configured.as_str(),
                answers = false,
                answers_over = other,
                status,
                error = %error,
                "digest origin {origin} does not answer over {}, the scheme the digest service \
                 uses for it, but answers over {other}: no digest comes from it until the \
                 scheme is right ({})",
                configured.as_str(),
                match configured {
                    Scheme::Https => format!("add --origin-scheme {origin}=http"),
                    Scheme::Http => format!("drop {origin}=http from --origin-scheme"),
                }
            );
        }
        OriginCheck::Silent { configured, error } => tracing::warn!(
            origin,
            scheme = configured.as_str(),
            answers = false,
            answers_over = "none",
            error = %error,
            "digest origin {origin} does not answer, neither over {} nor over {}: no digest comes \
             from it until it does",
            configured.as_str(),
            configured.other().as_str()
        ),
    }
}

fn check_status(status: StatusCode, ranged: bool) -> Result<(), DigestError> {
    match status {
        StatusCode::OK => Ok(()),
        StatusCode::PARTIAL_CONTENT if ranged => Ok(()),
        StatusCode::NOT_FOUND | StatusCode::GONE => Err(DigestError::NotFound(status)),
        other => Err(DigestError::OriginStatus(other)),
    }
}

/// Maps `host[:port]/path[#br=<len>@<off>]` to a URL on an allow-listed origin.
fn resolve(
    origins: &HashMap<String, Scheme>,
    key: &SegmentKey,
) -> Result<OriginTarget, DigestError> {
    let k = key.as_str();
    let bad = |why| DigestError::BadKey {
        key: k.to_owned(),
        why,
    };
    if k.starts_with("sha256-") {
        return Err(DigestError::Unresolvable(k.to_owned()));
    }
    // `url` percent-encodes '#' in paths, so a literal one can only start the range suffix.
    let (resource, range) = match k.split_once('#') {
        None => (k, None),
        Some((resource, suffix)) => {
            let (len, off) = suffix
                .strip_prefix("br=")
                .and_then(|r| r.split_once('@'))
                .ok_or_else(|| bad("the only suffix allowed is #br=<length>@<offset>"))?;
            let len: u64 = len
                .parse()
                .map_err(|_| bad("range length is not a number"))?;
            let off: u64 = off
                .parse()
                .map_err(|_| bad("range offset is not a number"))?;
            if len == 0 || off.checked_add(len).is_none() {
                return Err(bad("empty or overflowing byte range"));
            }
            (resource, Some((off, len)))
        }
    };
    let slash = resource
        .find('/')
        .ok_or_else(|| bad("expected host[:port]/path"))?;
    let (authority, path) = resource.split_at(slash);
    if path.contains('?') {
        return Err(bad("keys carry no query"));
    }
    let authority = authority.to_ascii_lowercase();
    let scheme = *origins
        .get(&authority)
        .ok_or_else(|| DigestError::NotAllowed(authority.clone()))?;
    let scheme = match scheme {
        Scheme::Http => "http",
        Scheme::Https => "https",
    };
    let url = url::Url::parse(&format!("{scheme}://{authority}{path}"))
        .map_err(|_| bad("not a valid URL"))?;
    // Belt and braces: whatever the parser made of it must still be the allow-listed origin.
    let parsed = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        (None, _) => String::new(),
    };
    if parsed != authority {
        return Err(DigestError::NotAllowed(parsed));
    }
    Ok(OriginTarget { url, range })
}

/// The digest from an RFC 9530 `Repr-Digest: sha-256=:<base64>:` header, with the size from
/// `Content-Length`; `None` when either is missing or malformed.
fn from_repr_digest(key: &SegmentKey, headers: &HeaderMap) -> Option<DigestResponse> {
    let size = headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse::<u64>()
        .ok()?;
    let sha = headers
        .get_all("repr-digest")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(parse_sha256_member)?;
    Some(DigestResponse {
        segment: key.clone(),
        sha256: hex::encode(sha),
        size,
    })
}

/// One dictionary member `sha-256=:<base64>:` (parameters after `;` ignored).
fn parse_sha256_member(member: &str) -> Option<[u8; 32]> {
    let (name, value) = member.trim().split_once('=')?;
    if name != "sha-256" {
        return None;
    }
    let value = value.split(';').next()?.trim();
    let b64 = value.strip_prefix(':')?.strip_suffix(':')?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origins() -> HashMap<String, Scheme> {
        [
            ("cdn.example.com".to_owned(), Scheme::Https),
            ("127.0.0.1:8000".to_owned(), Scheme::Http),
        ]
        .into_iter()
        .collect()
    }

    fn key(s: &str) -> SegmentKey {
        SegmentKey::new(s).unwrap()
    }

    #[test]
    fn keys_map_to_allow_listed_urls_with_their_scheme_and_range() {
        let t = resolve(&origins(), &key("cdn.example.com/live/a%20b/1.ts")).unwrap();
        assert_eq!(t.url.as_str(), "https://cdn.example.com/live/a%20b/1.ts");
        assert_eq!(t.range, None);
        let t = resolve(&origins(), &key("127.0.0.1:8000/v/main.mp4#br=1000@24")).unwrap();
        assert_eq!(t.url.as_str(), "http://127.0.0.1:8000/v/main.mp4");
        assert_eq!(t.range, Some((24, 1000)));
    }

    #[test]
    fn keys_off_the_allow_list_or_malformed_are_refused() {
        for (k, want) in [
            ("evil.example/x.ts", "not on this tracker"),
            ("cdn.example.com@evil.example/x.ts", "not on this tracker"),
            ("cdn.example.com:444/x.ts", "not on this tracker"),
            ("127.0.0.1:8000.evil/x", "not on this tracker"),
            ("sha256-abcdef", "too long"),
            ("cdn.example.com", "host[:port]/path"),
            ("cdn.example.com/x.ts#br=0@0", "empty"),
            ("cdn.example.com/x.ts#frag", "suffix"),
            ("cdn.example.com/x.ts?a=1", "query"),
        ] {
            let e = resolve(&origins(), &key(k)).unwrap_err().to_string();
            assert!(e.contains(want), "{k}: {e}");
        }
    }

    #[test]
    fn repr_digest_header_is_parsed() {
        let digest = Sha256::digest(b"hello");
        let b64 = base64::engine::general_purpose::STANDARD.encode(digest);
        let mut h = HeaderMap::new();
        h.insert(CONTENT_LENGTH, "5".parse().unwrap());
        h.insert(
            "repr-digest",
            format!("sha-512=:AAAA:, sha-256=:{b64}:").parse().unwrap(),
        );
        let d = from_repr_digest(&key("a/b"), &h).unwrap();
        assert_eq!(d.sha256, hex::encode(digest));
        assert_eq!(d.size, 5);
        assert_eq!(parse_sha256_member("sha-256=:AAAA:"), None, "wrong length");
        assert_eq!(
            parse_sha256_member("sha-256=AAAA"),
            None,
            "not a byte sequence"
        );
    }
}
