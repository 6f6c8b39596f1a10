//! HTTP client of the origin CDN.

use bytes::Bytes;
use std::time::Duration;

/// Why an origin fetch failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OriginError {
    /// The origin could not be reached or the transfer broke off; retryable.
    #[error("origin unreachable: {0}")]
    Unreachable(String),
    /// The origin answered with an error status; the player gets the same status.
    #[error("origin answered {0}")]
    Status(u16),
    /// The body exceeded the size limit for its kind.
    #[error("origin body larger than {0} bytes")]
    TooLarge(u64),
}

/// A fully read origin response.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// HTTP status (200 or 206).
    pub status: u16,
    /// `Content-Type`, if the origin sent one.
    pub content_type: Option<String>,
    /// `Cache-Control`, if the origin sent one.
    pub cache_control: Option<String>,
    /// The body.
    pub body: Bytes,
}

/// Origin client: one connection pool for every origin.
#[derive(Debug, Clone)]
pub struct OriginClient {
    http: reqwest::Client,
}

impl OriginClient {
    /// A client with sane timeouts for segment delivery.
    pub fn new() -> Result<Self, OriginError> {
        let http = reqwest::Client::builder()
            // Origin logs tell the proxy's fetches from the players' own.
            .user_agent(concat!("shoal/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(15))
            .pool_idle_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| OriginError::Unreachable(e.to_string()))?;
        Ok(Self { http })
    }

    /// The underlying client, for streaming pass-through.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// GETs `url` (optionally a byte range) and reads the whole body, at most `max` bytes.
    pub async fn fetch(
        &self,
        url: &url::Url,
        range: Option<(u64, u64)>,
        max: u64,
    ) -> Result<Fetched, OriginError> {
        let request = || {
            let req = self.http.get(url.clone());
            match range {
                Some((offset, length)) => {
                    let last = offset + length.saturating_sub(1);
                    req.header(http::header::RANGE, format!("bytes={offset}-{last}"))
                }
                None => req,
            }
        };
        // A GET that failed before any answer is sent once more: a kept-alive connection the
        // origin closed just as the request went out fails this way, and a fresh one works.
        let mut resp = match request().send().await {
            Ok(r) => r,
            Err(first) => {
                tracing::debug!(%url, error = %first, "origin request failed before an answer; retrying once");
                request()
                    .send()
                    .await
                    .map_err(|e| OriginError::Unreachable(e.to_string()))?
            }
        };
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(OriginError::Status(status));
        }
        if resp.content_length().is_some_and(|l| l > max) {
            return Err(OriginError::TooLarge(max));
        }
        let header = |name: http::header::HeaderName| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header(http::header::CONTENT_TYPE);
        let cache_control = header(http::header::CACHE_CONTROL);
        let mut body = Vec::with_capacity(resp.content_length().unwrap_or(0) as usize);
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| OriginError::Unreachable(e.to_string()))?
        {
            if (body.len() + chunk.len()) as u64 > max {
                return Err(OriginError::TooLarge(max));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched {
            status,
            content_type,
            cache_control,
            body: body.into(),
        })
    }
}
