//! HTTP client of the tracker API v1 (`docs/protocol.md`).

use shoal_proto::{
    AnnounceRequest, AnnounceResponse, DigestResponse, ErrorBody, LeaveRequest, PeerId,
    ReportRequest, SegmentKey, SwarmId,
};
use std::time::Duration;

/// Longest tracker answer read; a bigger one is refused (a tracker cannot make us buffer
/// without bound).
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Why a tracker call failed.
#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    /// The tracker could not be reached or did not answer in time; retry later. The message
    /// carries the causes (refused, timed out, which TLS check failed).
    #[error("tracker unreachable: {}", shoal_core::error_text::chain(.0))]
    Unreachable(#[source] reqwest::Error),
    /// The tracker's TLS certificate did not verify against the roots in use.
    #[error("the tracker's TLS certificate is not trusted ({0}): if it comes from a private CA, set tracker_ca (shoal-edge --tracker-ca FILE) to that CA's PEM certificate")]
    Untrusted(String),
    /// The configured tracker CA file is unreadable or holds no certificate.
    #[error("tracker CA {path}: {why}")]
    Ca {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The tracker refused the request; its message says why. Retrying unchanged will not help,
    /// except for 5xx.
    #[error("tracker answered {status}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Machine code from the error body (`invalid_field`, `peer_key_mismatch`, ...).
        code: String,
        /// The tracker's explanation.
        message: String,
    },
    /// The answer was not the JSON the protocol defines, or too big.
    #[error("malformed tracker answer: {0}")]
    Malformed(String),
}

/// Client of one tracker.
#[derive(Debug, Clone)]
pub struct TrackerClient {
    http: reqwest::Client,
    base: String,
}

/// The rustls error under a failed request, when a certificate check failed. (An I/O error
/// hides the error it wraps from `source()`: it is reached with `get_ref()`.)
fn certificate_error(e: &reqwest::Error) -> Option<String> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return matches!(
                tls,
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::UnsupportedNameType
            )
            .then(|| tls.to_string());
        }
        next = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

impl TrackerClient {
    /// A client for the tracker at `base` (e.g. `http://127.0.0.1:7070`). An `https://`
    /// tracker is verified against the system's roots and the Mozilla root set.
    pub fn new(base: &str) -> Result<Self, TrackerError> {
        Self::with_ca(base, None)
    }

    /// A client for the tracker at `base` that verifies an `https://` tracker against the
    /// CA certificates in the PEM file `ca` only, when given (a private CA), else as
    /// [`TrackerClient::new`].
    pub fn with_ca(base: &str, ca: Option<&std::path::Path>) -> Result<Self, TrackerError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90));
        if let Some(path) = ca {
            let bad = |why: String| TrackerError::Ca {
                path: path.to_owned(),
                why,
            };
            let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
            let roots = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| bad(format!("not PEM certificates: {e}")))?;
            if roots.is_empty() {
                return Err(bad("holds no PEM CERTIFICATE block".into()));
            }
            builder = builder.tls_built_in_root_certs(false);
            for root in roots {
                builder = builder.add_root_certificate(root);
            }
        }
        let http = builder.build().map_err(TrackerError::Unreachable)?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    /// `POST /v1/announce`.
    pub async fn announce(&self, req: &AnnounceRequest) -> Result<AnnounceResponse, TrackerError> {
        let body = self.post("/v1/announce", req).await?;
        serde_json::from_slice(&body).map_err(|e| TrackerError::Malformed(e.to_string()))
    }

    /// `POST /v1/leave`.
    pub async fn leave(&self, req: &LeaveRequest) -> Result<(), TrackerError> {
        self.post("/v1/leave", req).await.map(|_| ())
    }

    /// `POST /v1/report`: tells the tracker a neighbour misbehaved.
    pub async fn report(&self, req: &ReportRequest) -> Result<(), TrackerError> {
        self.post("/v1/report", req).await.map(|_| ())
    }

    /// `GET /v1/digest`: the trusted digest of a segment, computed by the tracker from the
    /// origin's bytes. Only members ask: `peer` and its `peer_key` from the announce.
    pub async fn digest(
        &self,
        swarm: &SwarmId,
        segment: &SegmentKey,
        peer: &PeerId,
        peer_key: &str,
    ) -> Result<DigestResponse, TrackerError> {
        let query = [
            ("swarm", swarm.as_str()),
            ("segment", segment.as_str()),
            ("peer_id", peer.as_str()),
            ("peer_key", peer_key),
        ];
        let req = self
            .http
            .get(format!("{}/v1/digest", self.base))
            .query(&query);
        let body = self.read(req).await?;
        let d: DigestResponse =
            serde_json::from_slice(&body).map_err(|e| TrackerError::Malformed(e.to_string()))?;
        if d.segment != *segment || d.sha256.len() != 64 {
            return Err(TrackerError::Malformed(
                "digest answer for another segment, or not a SHA-256".into(),
            ));
        }
        Ok(d)
    }

    async fn post<T: serde::Serialize>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<bytes::Bytes, TrackerError> {
        self.read(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// Sends `req` and reads a bounded answer; non-2xx statuses become [`TrackerError::Refused`].
    async fn read(&self, req: reqwest::RequestBuilder) -> Result<bytes::Bytes, TrackerError> {
        let mut resp = req.send().await.map_err(|e| match certificate_error(&e) {
            Some(why) => TrackerError::Untrusted(why),
            None => TrackerError::Unreachable(e),
        })?;
        let status = resp.status();
        let mut buf = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(TrackerError::Unreachable)? {
            if buf.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(TrackerError::Malformed("answer too large".into()));
            }
            buf.extend_from_slice(&chunk);
        }
        if status.is_success() {
            return Ok(buf.into());
        }
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&buf) {
            Ok(e) => (e.error, e.message),
            Err(_) => (
                "unknown".into(),
                String::from_utf8_lossy(&buf[..buf.len().min(256)]).into_owned(),
            ),
        };
        Err(TrackerError::Refused {
            status: status.as_u16(),
            code,
            message,
        })
    }
}
