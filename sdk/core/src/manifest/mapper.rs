//! The proxy's path-preserving URL form (contract):
//! `<proxy-base>/<origin-host[:port]>/<path>?<query>` stands for
//! `<scheme>://<origin-host[:port]>/<path>?<query>`, the scheme coming from config.

use super::ManifestError;
use percent_encoding::percent_decode_str;
use std::collections::HashMap;
use url::Url;

/// How the proxy reaches an origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain HTTP (local test origins).
    Http,
    /// HTTPS (the default for real CDNs).
    Https,
}

impl Scheme {
    /// The URL scheme, `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Why a request path does not map to an origin URL. Every variant is the player's (or an
/// attacker's) fault: answer 4xx, never retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The first path segment names a host that is not on the allow-list.
    #[error("origin `{0}` is not on the allow-list")]
    NotAllowed(String),
    /// The path has no host segment (`/`, `//x`).
    #[error("request path names no origin host")]
    EmptyHost,
    /// The request target is not in origin form (`/host/path`), e.g. `http://evil/x`.
    #[error("request target must start with `/`")]
    NotOriginForm,
    /// The host segment carries userinfo, percent-escapes or other characters a host may not.
    #[error("malformed origin host `{0}`")]
    BadHost(String),
    /// A `.` or `..` path segment, raw or percent-encoded: could climb out of the origin path.
    #[error("dot segment in request path")]
    DotSegment,
    /// A character no request target may hold (control, space, backslash, quote, non-ASCII...).
    #[error("character {0:?} is not allowed in a request path")]
    BadChar(char),
    /// The origin URL would not be byte-identical to what the player sent.
    #[error("request path does not form a valid origin URL")]
    Malformed,
}

/// Maps origin URLs to the proxy's URL form and back. Built once from config; cheap to share.
#[derive(Debug, Clone)]
pub struct UrlMapper {
    /// `scheme://host[:port]` without trailing slash.
    base: String,
    /// Normalized `host[:port]` (lowercase, default port dropped) to scheme.
    origins: HashMap<String, Scheme>,
}

impl UrlMapper {
    /// `proxy_base` is the URL players reach the proxy at (`http://127.0.0.1:8080`, no path);
    /// `origins` the allow-list of `host[:port]` with the scheme to fetch each with.
    pub fn new(
        proxy_base: &str,
        origins: impl IntoIterator<Item = (String, Scheme)>,
    ) -> Result<Self, ManifestError> {
        let bad_base = |reason: &'static str| ManifestError::BadProxyBase {
            base: proxy_base.to_owned(),
            reason,
        };
        let url = Url::parse(proxy_base).map_err(|_| bad_base("not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad_base("scheme must be http or https"));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(bad_base("must not have a path, query or fragment"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad_base("must not carry userinfo"));
        }
        let base = url.as_str().trim_end_matches('/').to_owned();

        let mut map = HashMap::new();
        for (entry, scheme) in origins {
            let bad = |reason: &'static str| ManifestError::BadOrigin {
                origin: entry.clone(),
                reason,
            };
            if entry.is_empty() || entry.contains(['/', '@', '?', '#', '\\']) {
                return Err(bad("must be host or host:port"));
            }
            let parsed = Url::parse(&format!("{}://{entry}/", scheme.as_str()))
                .map_err(|_| bad("not a valid host[:port]"))?;
            let authority = authority(&parsed).ok_or_else(|| bad("no host"))?;
            map.insert(authority, scheme);
        }
        Ok(Self { base, origins: map })
    }

    /// The proxy base, e.g. `http://127.0.0.1:8080` (no trailing slash).
    pub fn proxy_base(&self) -> &str {
        &self.base
    }

    /// The scheme configured for an allowed origin `host[:port]`, if any.
    pub fn scheme_of(&self, authority: &str) -> Option<Scheme> {
        self.origins.get(authority).copied()
    }

    /// `Some(proxy URL)` if `url` is http(s) and its host is allowed, else `None`.
    /// The fragment is kept; the query is kept as the URL holds it.
    pub fn to_proxy(&self, url: &Url) -> Option<String> {
        self.proxy_form(url, None)
    }

    /// The proxy form of `resolved`. `raw_tail` is the path, query and fragment exactly as a
    /// manifest wrote them; they are kept byte-identical when they map back to the same origin
    /// URL (signed tokens are byte-sensitive), else the URL's normalized form is used.
    pub(crate) fn proxy_form(&self, resolved: &Url, raw_tail: Option<&str>) -> Option<String> {
        if !matches!(resolved.scheme(), "http" | "https") {
            return None;
        }
        if !resolved.username().is_empty() || resolved.password().is_some() {
            return None;
        }
        let authority = authority(resolved)?;
        if !self.origins.contains_key(&authority) {
            return None;
        }
        let normalized_tail = match resolved.query() {
            Some(q) => format!("{}?{q}", resolved.path()),
            None => resolved.path().to_owned(),
        };
        let fragment = resolved.fragment();
        let candidates = raw_tail
            .map(|t| {
                let t = t.split_once('#').map_or(t, |(before, _)| before);
                if t.starts_with('/') {
                    t.to_owned()
                } else {
                    format!("/{t}")
                }
            })
            .into_iter()
            .chain(std::iter::once(normalized_tail));
        for tail in candidates {
            let path_and_query = format!("/{authority}{tail}");
            let Ok(origin) = self.to_origin(&path_and_query) else {
                continue;
            };
            if same_resource(&origin, resolved) {
                let mut out = format!("{}{path_and_query}", self.base);
                if let Some(f) = fragment {
                    out.push('#');
                    out.push_str(f);
                }
                return Some(out);
            }
        }
        None
    }

    /// From a request target as the player sent it (`/host[:port]/path?query`) to the origin
    /// URL. Refuses anything that could reach another host or climb out of the path; the path
    /// is kept byte-identical (never re-encoded). The host of the result is always the
    /// allow-listed host the first path segment names.
    pub fn to_origin(&self, path_and_query: &str) -> Result<Url, MapError> {
        if let Some(c) = path_and_query.chars().find(|&c| bad_target_char(c)) {
            return Err(MapError::BadChar(c));
        }
        let Some(rest) = path_and_query.strip_prefix('/') else {
            return Err(MapError::NotOriginForm);
        };
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let (host, path) = match path.find('/') {
            Some(i) => (&path[..i], &path[i..]),
            None => (path, ""),
        };
        if host.is_empty() {
            return Err(MapError::EmptyHost);
        }
        if host.contains(['@', '%']) || host.ends_with(':') {
            return Err(MapError::BadHost(host.to_owned()));
        }
        let host = host.to_ascii_lowercase();
        let Some((authority, scheme)) = self.origins.get_key_value(&host) else {
            return Err(MapError::NotAllowed(host));
        };
        for seg in path.split('/') {
            let decoded = percent_decode_str(seg).decode_utf8_lossy();
            if decoded.chars().any(char::is_control) {
                return Err(MapError::BadChar('%'));
            }
            // `%2f..` decodes to a dot segment an origin that decodes slashes would honour.
            if decoded.split(['/', '\\']).any(|s| s == "." || s == "..") {
                return Err(MapError::DotSegment);
            }
        }
        let path = if path.is_empty() { "/" } else { path };
        let mut s = format!("{}://{authority}{path}", scheme.as_str());
        if let Some(q) = query {
            s.push('?');
            s.push_str(q);
        }
        let url = Url::parse(&s).map_err(|_| MapError::Malformed)?;
        if url.path() != path || self::authority(&url).as_deref() != Some(authority.as_str()) {
            return Err(MapError::Malformed);
        }
        Ok(url)
    }
}

/// `host[:port]` as the allow-list keys it: lowercase host, port only when not the scheme's
/// default.
pub(crate) fn authority(url: &Url) -> Option<String> {
    let host = url.host_str().filter(|h| !h.is_empty())?;
    Some(match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    })
}

/// Same origin resource, ignoring the scheme (the proxy form does not carry it) and fragment.
pub(crate) fn same_resource(a: &Url, b: &Url) -> bool {
    authority(a) == authority(b) && a.path() == b.path() && a.query() == b.query()
}

/// Characters no request target we accept may hold. Covers everything `url` would
/// percent-encode in a path, so an accepted path is never re-encoded.
fn bad_target_char(c: char) -> bool {
    !c.is_ascii_graphic() || matches!(c, '"' | '<' | '>' | '\\' | '`' | '{' | '}' | '#')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapper() -> UrlMapper {
        UrlMapper::new(
            "http://127.0.0.1:8080",
            [
                ("cdn.example.com".to_owned(), Scheme::Https),
                ("127.0.0.1:8000".to_owned(), Scheme::Http),
            ],
        )
        .unwrap()
    }

    #[test]
    fn maps_allowed_hosts_both_ways() {
        let m = mapper();
        let u = Url::parse("https://CDN.example.com/a/b.ts?tok=1").unwrap();
        let p = m.to_proxy(&u).unwrap();
        assert_eq!(p, "http://127.0.0.1:8080/cdn.example.com/a/b.ts?tok=1");
        let back = m.to_origin("/cdn.example.com/a/b.ts?tok=1").unwrap();
        assert_eq!(back.as_str(), "https://cdn.example.com/a/b.ts?tok=1");
        let local = m.to_origin("/127.0.0.1:8000/live/x.m3u8").unwrap();
        assert_eq!(local.as_str(), "http://127.0.0.1:8000/live/x.m3u8");
        assert_eq!(
            m.to_origin("/cdn.example.com").unwrap().as_str(),
            "https://cdn.example.com/"
        );
    }

    #[test]
    fn unknown_hosts_are_not_proxied() {
        let m = mapper();
        assert_eq!(
            m.to_proxy(&Url::parse("https://ads.example.net/x.ts").unwrap()),
            None
        );
        assert_eq!(
            m.to_proxy(&Url::parse("skd://cdn.example.com/key").unwrap()),
            None
        );
    }

    #[test]
    fn path_and_query_are_not_reencoded() {
        let m = mapper();
        let raw = "/cdn.example.com/a%20b/%7Euser/c.ts?sig=a%2Fb+c==&x=%zz";
        let u = m.to_origin(raw).unwrap();
        assert_eq!(u.path(), "/a%20b/%7Euser/c.ts");
        assert_eq!(u.query(), Some("sig=a%2Fb+c==&x=%zz"));
    }

    #[test]
    fn refuses_every_trick() {
        let m = mapper();
        let cases: &[(&str, MapError)] = &[
            ("/evil.com/x", MapError::NotAllowed("evil.com".into())),
            (
                "/cdn.example.com:443/x",
                MapError::NotAllowed("cdn.example.com:443".into()),
            ),
            (
                "/cdn.example.com.evil.com/x",
                MapError::NotAllowed("cdn.example.com.evil.com".into()),
            ),
            ("http://evil.com/x", MapError::NotOriginForm),
            ("cdn.example.com/x", MapError::NotOriginForm),
            ("/", MapError::EmptyHost),
            ("//evil.com/x", MapError::EmptyHost),
            ("/?q", MapError::EmptyHost),
            (
                "/cdn.example.com@evil.com/x",
                MapError::BadHost("cdn.example.com@evil.com".into()),
            ),
            (
                "/user@cdn.example.com/x",
                MapError::BadHost("user@cdn.example.com".into()),
            ),
            (
                "/cdn%2eexample.com/x",
                MapError::BadHost("cdn%2eexample.com".into()),
            ),
            (
                "/cdn.example.com:/x",
                MapError::BadHost("cdn.example.com:".into()),
            ),
            ("/cdn.example.com/../evil.com/x", MapError::DotSegment),
            ("/cdn.example.com/a/./b", MapError::DotSegment),
            ("/cdn.example.com/a/..", MapError::DotSegment),
            ("/cdn.example.com/%2e%2e/x", MapError::DotSegment),
            ("/cdn.example.com/%2E%2E/x", MapError::DotSegment),
            ("/cdn.example.com/.%2e/x", MapError::DotSegment),
            ("/cdn.example.com/%2e/x", MapError::DotSegment),
            ("/cdn.example.com/a%2f..%2fb", MapError::DotSegment),
            ("/cdn.example.com/a%5c..%5cb", MapError::DotSegment),
            ("/cdn.example.com/a\\..\\b", MapError::BadChar('\\')),
            ("/cdn.example.com\\evil.com/x", MapError::BadChar('\\')),
            ("/cdn.example.com/a\r\nHost: evil", MapError::BadChar('\r')),
            ("/cdn.example.com/a b", MapError::BadChar(' ')),
            ("/cdn.example.com/a%00b", MapError::BadChar('%')),
            ("/cdn.example.com/é", MapError::BadChar('é')),
            ("/cdn.example.com/x#frag", MapError::BadChar('#')),
        ];
        for (input, want) in cases {
            assert_eq!(m.to_origin(input).as_ref(), Err(want), "{input}");
        }
    }

    #[test]
    fn query_may_hold_dots() {
        let u = mapper().to_origin("/cdn.example.com/x.ts?p=../..").unwrap();
        assert_eq!(u.query(), Some("p=../.."));
    }

    proptest::proptest! {
        /// Whatever the player sends, an accepted target reaches exactly the allow-listed host
        /// its first segment names, with the rest of the path unchanged.
        #[test]
        fn to_origin_never_reaches_another_host(
            host in "(cdn\\.example\\.com|CDN\\.EXAMPLE\\.COM|127\\.0\\.0\\.1:8000|evil\\.com|[a-z.:@%]{0,12})",
            rest in "([/?#\\\\][/a-z.%2eE5cCfF\\\\?#@:]{0,30})?",
        ) {
            let target = format!("/{host}{rest}");
            if let Ok(u) = mapper().to_origin(&target) {
                let want = host.to_ascii_lowercase();
                proptest::prop_assert_eq!(authority(&u), Some(want.clone()));
                proptest::prop_assert!(["cdn.example.com", "127.0.0.1:8000"].contains(&want.as_str()));
                let path = rest.split('?').next().unwrap_or("");
                proptest::prop_assert_eq!(u.path(), if path.is_empty() { "/" } else { path });
            }
        }
    }

    #[test]
    fn bad_config_is_refused() {
        let ok = |b: &str| UrlMapper::new(b, []).is_ok();
        assert!(ok("http://127.0.0.1:8080"));
        assert!(ok("http://127.0.0.1:8080/"));
        assert!(!ok("http://127.0.0.1:8080/prefix"));
        assert!(!ok("ftp://127.0.0.1"));
        assert!(!ok("not a url"));
        for origin in ["", "a/b", "user@host", "http://x", "bad host"] {
            let r = UrlMapper::new("http://p", [(origin.to_owned(), Scheme::Https)]);
            assert!(r.is_err(), "{origin:?}");
        }
    }
}
