//! The HTTP API: routes, request parsing, and every error mapped to a JSON `ErrorBody`.

use crate::client_addr::ClientAddrs;
use crate::digest::{DigestError, DigestService};
use crate::metrics::{AnnounceResult, DigestResult, Metrics};
use crate::policy::{Applied, Policies};
use crate::store::{BanRule, Joined, Neighbours, Store, StoreError};
use crate::token::{unix_now, Keys, TokenError};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};
use shoal_proto::{
    AnnounceRequest, DigestResponse, ErrorBody, InvalidField, LeaveRequest, PeerId, ReportRequest,
    SegmentKey, SwarmId, SwarmPolicy,
};
use std::sync::Arc;
use tokio::time::Instant;

/// Largest request body accepted; a valid announce is well under 2 KiB.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// `Retry-After` (seconds) of a 503 while the store is down: about a Redis Cluster failover.
pub const STORE_RETRY_AFTER_SECS: u32 = 5;

/// What every handler shares.
pub struct AppState {
    /// Swarm membership.
    pub store: Arc<dyn Store>,
    /// Where counts and sums go.
    pub metrics: Arc<Metrics>,
    /// Announce interval handed to peers, in seconds.
    pub interval_secs: u32,
    /// Per-swarm policy: P2P switch and excluded addresses.
    pub policies: Policies,
    /// Trusted segment digests.
    pub digests: DigestService,
    /// Keys access tokens are checked against; `None`: tokens are not checked.
    pub keys: Option<Keys>,
    /// Refuse announces without a token (only with `keys`).
    pub auth_required: bool,
    /// When reports ban a peer.
    pub ban_rule: BanRule,
    /// Where a client's address comes from (the connection, or trusted proxies' headers).
    pub client_addrs: ClientAddrs,
}

/// Header of an announce answer: the address the tracker sees the client at (behind trusted
/// proxies, the one they forwarded).
pub const CLIENT_ADDR_HEADER: &str = "shoal-client-addr";

/// The connection's peer address, when the server records it (`spawn` does; a router used
/// without `into_make_service_with_connect_info` has none).
struct Peer(Option<std::net::SocketAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0),
        ))
    }
}

/// The tracker's routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/announce", post(announce))
        .route("/v1/leave", post(leave))
        .route("/v1/report", post(report))
        .route("/v1/digest", get(digest))
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
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
    /// The query string does not have the request's shape.
    #[error("query string does not match the request: {0}")]
    Query(String),
    /// A peer reported itself.
    #[error("a peer cannot report itself")]
    SelfReport,
    /// The access token is missing or invalid.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// No digest could be given.
    #[error(transparent)]
    Digest(#[from] DigestError),
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
            Self::Query(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            Self::SelfReport => (StatusCode::BAD_REQUEST, "self_report"),
            Self::Token(e) => (StatusCode::UNAUTHORIZED, e.code()),
            Self::Digest(e) => match e {
                DigestError::Unresolvable(_) => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "segment_unresolvable")
                }
                DigestError::BadKey { .. } => (StatusCode::BAD_REQUEST, "invalid_segment"),
                DigestError::NotAllowed(_) => (StatusCode::FORBIDDEN, "origin_not_allowed"),
                DigestError::NotFound(_) => (StatusCode::NOT_FOUND, "segment_not_found"),
                DigestError::TooLarge(_) => (StatusCode::BAD_GATEWAY, "segment_too_large"),
                DigestError::OriginStatus(_) | DigestError::OriginUnreachable(_) => {
                    (StatusCode::BAD_GATEWAY, "origin_error")
                }
            },
            Self::Store(StoreError::Banned) => (StatusCode::FORBIDDEN, "banned"),
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
            Self::Store(StoreError::KeyMismatch | StoreError::Banned) => AnnounceResult::Forbidden,
            Self::Token(_) => AnnounceResult::Unauthorized,
            Self::Store(StoreError::Redis(_) | StoreError::Corrupt(_)) => AnnounceResult::Error,
            _ => AnnounceResult::Invalid,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        match &self {
            // Counted and logged (at most once a second) by the store wrapper.
            Self::Store(StoreError::Redis(_) | StoreError::Corrupt(_)) => store_down(),
            other => {
                if status.is_server_error() {
                    tracing::error!(error = %other, "request failed");
                }
                error_response(status, code, other.to_string())
            }
        }
    }
}

/// 503 `store_unavailable` with `Retry-After`: the store (Redis) is down or failing over.
fn store_down() -> Response {
    let mut r = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        format!(
            "the tracker's store (Redis) is down or failing over; retry after \
             {STORE_RETRY_AFTER_SECS} s (players keep fetching from the CDN meanwhile)"
        ),
    );
    r.headers_mut().insert(
        header::RETRY_AFTER,
        header::HeaderValue::from(STORE_RETRY_AFTER_SECS),
    );
    r
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
    Peer(peer): Peer,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let start = Instant::now();
    let (result, response) = match announce_inner(&app, &headers, body).await {
        Ok(mut response) => {
            if let Some(peer) = peer {
                let client = app.client_addrs.client(peer, &headers);
                if let Ok(v) = header::HeaderValue::from_str(&client.to_string()) {
                    response.headers_mut().insert(CLIENT_ADDR_HEADER, v);
                }
            }
            (AnnounceResult::Ok, response)
        }
        Err(e) => (e.result(), e.into_response()),
    };
    app.metrics.announce(result, start.elapsed().as_secs_f64());
    response
}

async fn announce_inner(
    app: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: AnnounceRequest = parse(headers, body)?;
    req.validate().map_err(field_error)?;
    check_token(app, req.token.as_deref(), &req.swarm_id)?;
    let joined = app.store.announce(&req).await?;
    app.metrics.report(&req.counters);
    app.metrics.report_connections(&req.connections);
    let policy = app.policies.for_swarm(&req.swarm_id);
    Ok(announce_answer(app.interval_secs, &joined, policy))
}

/// The JSON of an [`shoal_proto::AnnounceResponse`], written straight from the store's packed
/// neighbours with the policy applied on the way: no neighbour is built as owned strings.
#[derive(Serialize)]
struct AnnounceAnswer<'a> {
    interval_secs: u32,
    peer_key: &'a str,
    neighbours: NeighboursJson<'a>,
    policy: &'a SwarmPolicy,
}

struct NeighboursJson<'a> {
    list: &'a Neighbours,
    policy: Applied<'a>,
}

impl Serialize for NeighboursJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.list.iter().filter_map(|n| {
            Some(NeighbourJson {
                peer_id: n.peer_id,
                addrs: AddrsJson(self.policy.admit(&n)?),
                fingerprint: n.fingerprint,
            })
        }))
    }
}

/// Field for field a [`shoal_proto::Neighbour`].
#[derive(Serialize)]
#[serde(bound(serialize = ""))]
struct NeighbourJson<'a, I: Iterator<Item = &'a str> + Clone> {
    peer_id: &'a str,
    addrs: AddrsJson<I>,
    fingerprint: &'a str,
}

struct AddrsJson<I>(I);

impl<'a, I: Iterator<Item = &'a str> + Clone> Serialize for AddrsJson<I> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.clone())
    }
}

fn announce_answer(interval_secs: u32, joined: &Joined, policy: Applied<'_>) -> Response {
    let answer = AnnounceAnswer {
        interval_secs,
        peer_key: &joined.peer_key,
        neighbours: NeighboursJson {
            list: &joined.neighbours,
            policy,
        },
        policy: policy.policy,
    };
    // Sized for a typical neighbour record so that the buffer rarely grows.
    let mut body = Vec::with_capacity(128 + 96 * joined.neighbours.len());
    match serde_json::to_writer(&mut body, &answer) {
        Ok(()) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        // Writing into a Vec fails only on a broken Serialize impl.
        Err(e) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("cannot encode the answer: {e}"),
        ),
    }
}

/// Checks the access token when the tracker has keys: a token that is present must be valid;
/// a missing one is refused only when auth is required. Leave, report and digest need no
/// token: they need the `peer_key`, which only an announce that passed this check obtains.
fn check_token(app: &AppState, token: Option<&str>, swarm: &SwarmId) -> Result<(), TokenError> {
    let Some(keys) = &app.keys else {
        return Ok(());
    };
    match token {
        Some(t) => keys.verify(t, swarm, unix_now()).map(|_| ()),
        None if app.auth_required => Err(TokenError::Missing),
        None => Ok(()),
    }
}

async fn report(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let req: ReportRequest = parse(&headers, body)?;
    req.validate().map_err(field_error)?;
    if req.peer_id == req.offender {
        return Err(ApiError::SelfReport);
    }
    app.store
        .check_member(&req.swarm_id, &req.peer_id, &req.peer_key)
        .await?;
    let reported = app
        .store
        .report(&req.swarm_id, &req.peer_id, &req.offender, app.ban_rule)
        .await?;
    app.metrics.peer_report(req.reason);
    if reported.banned {
        tracing::info!(swarm = %req.swarm_id, offender = %req.offender, reporters = reported.reporters, "peer banned after reports");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `GET /v1/digest`: the segment, and the asking member's credentials.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DigestQuery {
    swarm: SwarmId,
    segment: SegmentKey,
    peer_id: PeerId,
    peer_key: String,
}

async fn digest(
    State(app): State<Arc<AppState>>,
    query: Result<Query<DigestQuery>, QueryRejection>,
) -> Result<Json<DigestResponse>, ApiError> {
    let result = digest_inner(&app, query).await;
    if let Err(ApiError::Query(_) | ApiError::Field(_) | ApiError::Store(_)) = &result {
        app.metrics.digest(DigestResult::Refused);
    }
    result.map(Json)
}

async fn digest_inner(
    app: &AppState,
    query: Result<Query<DigestQuery>, QueryRejection>,
) -> Result<DigestResponse, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::Query(e.body_text()))?;
    q.swarm.validate().map_err(ApiError::Field)?;
    q.segment.validate().map_err(ApiError::Field)?;
    q.peer_id.validate().map_err(ApiError::Field)?;
    app.store
        .check_member(&q.swarm, &q.peer_id, &q.peer_key)
        .await?;
    Ok(app.digests.digest(&q.segment).await?)
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

/// Readiness: 200 while the store answers, 503 `store_unavailable` (with `Retry-After`) while
/// it does not, so that a load balancer or Kubernetes stops sending announces here.
async fn healthz(State(app): State<Arc<AppState>>) -> Result<&'static str, ApiError> {
    app.store.ready().await?;
    Ok("ok\n")
}

/// Liveness: 200 whenever the process serves HTTP, store or not (restarting the tracker does
/// not bring Redis back).
async fn livez() -> &'static str {
    "ok\n"
}

async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    match app.store.counts().await {
        Ok(c) => app.metrics.set_counts(c.peers, c.swarms, c.bans),
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

const ROUTES: &str = "POST /v1/announce, POST /v1/leave, POST /v1/report, GET /v1/digest, \
                      GET /metrics, GET /healthz, GET /livez";

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyRule;
    use crate::store::pack_info;
    use shoal_proto::{AnnounceResponse, Neighbour};

    /// The answer written from packed records is byte for byte what serialising the wire type
    /// gives, policy exclusions and odd-but-valid characters included.
    #[tokio::test]
    async fn announce_answer_is_the_wire_types_json() {
        let members: [(&str, &str, &[&str]); 4] = [
            ("p-1", "ab12", &["10.0.0.1:1", "203.0.113.5:2"]),
            ("p.2", "", &["h\"q\\x.example:9"]),
            ("p_3", "ff", &[]),
            ("p4", "", &["10.9.9.9:3"]),
        ];
        let mut list = Neighbours::with_capacity(members.len(), 0);
        for (id, fp, addrs) in members {
            let addrs: Vec<String> = addrs.iter().map(|s| s.to_string()).collect();
            list.push(id, &pack_info(fp, &addrs));
        }
        let joined = Joined {
            peer_key: "00000000000000ff".into(),
            neighbours: list,
        };
        let rules = [PolicyRule {
            swarm: "*".into(),
            p2p: None,
            exclude: vec!["10.0.0.0/8".into()],
        }];
        let policies = Policies::new(&rules, SwarmPolicy::default()).unwrap();
        let swarm = SwarmId::new("s").unwrap();
        let response = announce_answer(20, &joined, policies.for_swarm(&swarm));
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(response.into_body(), MAX_BODY_BYTES)
            .await
            .unwrap();
        let n = |id: &str, addrs: &[&str], fp: &str| Neighbour {
            peer_id: PeerId::new(id).unwrap(),
            addrs: addrs.iter().map(|s| s.to_string()).collect(),
            fingerprint: fp.into(),
        };
        let expected = AnnounceResponse {
            interval_secs: 20,
            peer_key: "00000000000000ff".into(),
            neighbours: vec![
                n("p-1", &["203.0.113.5:2"], "ab12"),
                n("p.2", &["h\"q\\x.example:9"], ""),
                // p_3 announced no address (download-only): handed to nobody.
            ],
            policy: policies.for_swarm(&swarm).policy.clone(),
        };
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            serde_json::to_string(&expected).unwrap()
        );
    }
}
