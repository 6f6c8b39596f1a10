//! The HTTP API: routes, request parsing, and every error mapped to a JSON `ErrorBody`.

use crate::metrics::{AnnounceResult, Metrics};
use crate::store::{Store, StoreError};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use shoal_proto::{
    AnnounceRequest, AnnounceResponse, ErrorBody, InvalidField, LeaveRequest, SwarmPolicy,
};
use std::sync::Arc;
use tokio::time::Instant;

/// Largest request body accepted; a valid announce is well under 2 KiB.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// What every handler shares.
pub struct AppState {
    /// Swarm membership.
    pub store: Arc<dyn Store>,
    /// Where counts and sums go.
    pub metrics: Arc<Metrics>,
    /// Announce interval handed to peers, in seconds.
    pub interval_secs: u32,
    /// Policy handed to every swarm's peers.
    pub policy: SwarmPolicy,
}

/// The tracker's routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/announce", post(announce))
        .route("/v1/leave", post(leave))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Why a request was refused; becomes a status code and an [`ErrorBody`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON (syntax error or truncated).
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(String),
    /// The JSON does not have the request's shape (missing, unknown or mistyped field).
    #[error("request body does not match the schema: {0}")]
    Schema(String),
    /// A field is out of bounds.
    #[error("{0}")]
    Field(InvalidField),
    /// The client speaks another protocol version.
    #[error("{0}")]
    Version(InvalidField),
    /// The body is larger than [`MAX_BODY_BYTES`].
    #[error("request body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    /// The body could not be read.
    #[error("could not read the request body: {0}")]
    Body(String),
    /// The request is not labelled `application/json`.
    #[error("send the body as JSON with the header `Content-Type: application/json`")]
    ContentType,
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            Self::Schema(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            Self::Field(_) => (StatusCode::BAD_REQUEST, "invalid_field"),
            Self::Version(_) => (StatusCode::BAD_REQUEST, "unsupported_version"),
            Self::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Self::Body(_) => (StatusCode::BAD_REQUEST, "unreadable_body"),
            Self::ContentType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            Self::Store(StoreError::Conflict) => (StatusCode::CONFLICT, "peer_id_conflict"),
            Self::Store(StoreError::KeyMismatch) => (StatusCode::FORBIDDEN, "peer_key_mismatch"),
            Self::Store(StoreError::NotMember) => (StatusCode::NOT_FOUND, "not_a_member"),
            Self::Store(StoreError::Redis(_) | StoreError::Corrupt(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
            }
        }
    }

    fn result(&self) -> AnnounceResult {
        match self {
            Self::Store(StoreError::Conflict) => AnnounceResult::Conflict,
            Self::Store(StoreError::KeyMismatch) => AnnounceResult::Forbidden,
            Self::Store(StoreError::Redis(_) | StoreError::Corrupt(_)) => AnnounceResult::Error,
            _ => AnnounceResult::Invalid,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::error!(error = %self, "store failed");
        }
        let message = match &self {
            Self::Store(StoreError::Redis(_) | StoreError::Corrupt(_)) => {
                "the tracker's store is unavailable; retry after the announce interval".to_owned()
            }
            other => other.to_string(),
        };
        error_response(status, code, message)
    }
}

fn error_response(status: StatusCode, code: &str, message: String) -> Response {
    let body = ErrorBody {
        error: code.to_owned(),
        message,
    };
    (status, Json(body)).into_response()
}

/// Parses a JSON request body, turning every way it can be wrong into an [`ApiError`].
fn parse<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::ContentType);
    }
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge
        } else {
            ApiError::Body(e.body_text())
        }
    })?;
    serde_json::from_slice(&body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::Schema(e.to_string()),
        _ => ApiError::MalformedJson(e.to_string()),
    })
}

fn field_error(e: InvalidField) -> ApiError {
    match e {
        InvalidField::Version(_) => ApiError::Version(e),
        other => ApiError::Field(other),
    }
}

async fn announce(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let start = Instant::now();
    let (result, response) = match announce_inner(&app, &headers, body).await {
        Ok(answer) => (AnnounceResult::Ok, Json(answer).into_response()),
        Err(e) => (e.result(), e.into_response()),
    };
    app.metrics.announce(result, start.elapsed().as_secs_f64());
    response
}

async fn announce_inner(
    app: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<AnnounceResponse, ApiError> {
    let req: AnnounceRequest = parse(headers, body)?;
    req.validate().map_err(field_error)?;
    let joined = app.store.announce(&req).await?;
    app.metrics.report(&req.counters);
    Ok(AnnounceResponse {
        interval_secs: app.interval_secs,
        peer_key: joined.peer_key,
        neighbours: if app.policy.p2p {
            joined.neighbours
        } else {
            Vec::new()
        },
        policy: app.policy.clone(),
    })
}

async fn leave(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let req: LeaveRequest = parse(&headers, body)?;
    req.validate().map_err(field_error)?;
    app.store.leave(&req).await?;
    app.metrics.report(&req.counters);
    app.metrics.leave();
    Ok(StatusCode::NO_CONTENT)
}

async fn healthz(State(app): State<Arc<AppState>>) -> Result<&'static str, ApiError> {
    app.store.counts().await?;
    Ok("ok\n")
}

async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    match app.store.counts().await {
        Ok(c) => app.metrics.set_counts(c.peers, c.swarms),
        // Still serve the counters; the gauges keep their last value.
        Err(e) => tracing::warn!(error = %e, "cannot count peers for /metrics"),
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    )
        .into_response()
}

const ROUTES: &str = "POST /v1/announce, POST /v1/leave, GET /metrics, GET /healthz";

async fn not_found(method: Method, uri: Uri) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no route for {method} {}; this tracker serves {ROUTES}",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} does not accept {method}; this tracker serves {ROUTES}",
            uri.path()
        ),
    )
}
