//! The web side: one axum router for the UI, the REST API and the chat
//! WebSocket, one file per resource. Handlers check the caller, call the
//! services and the store's verbs, and map errors; they hold no state of
//! their own. `router(state)` is tested without sockets (tower `oneshot`);
//! the API is described by OpenAPI 3.1 generated from the handlers' types
//! (`GET /api/openapi.json`).

pub mod account;
pub mod admin;
pub mod guests;
pub mod health;
pub mod calls;
pub mod files;
pub mod invites;
pub mod messages;
pub mod metrics;
pub mod openapi;
pub mod rooms;
pub mod ui;
pub mod users;
pub mod wizard;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, State as AxState};
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header, request::Parts};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

use crate::auth::{Auth, token_hash};
use crate::certs::Certs;
use crate::chat::Chat;
use crate::config::ConfigError;
use crate::serve::Lifecycle;
use crate::settings::SettingsService;
use crate::store::StoreError;
use crate::store::users::{Role, User};
use crate::turn::TurnService;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "parvis_session";
/// Header carrying the session's CSRF token on state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Session lifetime: 30 days.
pub const SESSION_MS: i64 = 30 * 24 * 3600 * 1000;

/// The services the web side calls; each has one owner of its state.
pub struct AppState {
    /// The store, the fan-out hub, the calls, the clock.
    pub chat: Chat,
    /// Password hashing and the limits on guessing.
    pub auth: Auth,
    /// The live settings (box name, certificates, TURN, network…).
    pub settings: Arc<SettingsService>,
    pub certs: Certs,
    pub turn: TurnService,
    /// The one-time setup code while the box has no admin.
    pub setup_code: Mutex<Option<String>>,
    /// How `parvis serve` ends (reboot after an update, install).
    pub lifecycle: Lifecycle,
    /// Files on disk, the download origin's port and link key.
    pub files: Arc<crate::files::Files>,
}

pub type State = Arc<AppState>;

/// The documented error body (`{"error", "message"}`; `errors` for 422).
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    /// A stable code, e.g. `invalid`, `unauthorized`, `rate_limited`.
    pub error: String,
    /// Words safe to show.
    pub message: String,
    /// A 422: every problem, keyed like the configuration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<ConfigError>>,
}

/// Errors of handlers: a status, a stable code, and a message safe to show.
#[derive(Debug)]
pub struct AppError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
    pub errors: Option<Vec<ConfigError>>,
}

impl AppError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        AppError { status, code, message: message.into(), retry_after: None, errors: None }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        AppError::new(StatusCode::BAD_REQUEST, "invalid", message)
    }
    pub fn unauthorized() -> Self {
        AppError::new(StatusCode::UNAUTHORIZED, "unauthorized", "log in first")
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        AppError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        AppError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
    /// The box is busy (the password hashing queue is full): 503.
    pub fn busy(wait_secs: u64) -> Self {
        let mut e = AppError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", format!("the box is busy; try again in {wait_secs} s"));
        e.retry_after = Some(wait_secs);
        e
    }
    pub fn too_many(wait_secs: u64) -> Self {
        let mut e = AppError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many attempts; try again in {wait_secs} s"),
        );
        e.retry_after = Some(wait_secs);
        e
    }
    /// 422 with every problem, keyed like the configuration.
    pub fn invalid(errors: Vec<ConfigError>) -> Self {
        let message = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
        AppError { errors: Some(errors), ..AppError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message) }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => AppError::not_found("not found"),
            StoreError::NotMember => {
                AppError::new(StatusCode::FORBIDDEN, "not_member", "you are not a member of this room")
            }
            StoreError::Forbidden(why) => AppError::forbidden(why),
            StoreError::Invalid(why) => AppError::bad_request(why),
            StoreError::TooLarge(why) => AppError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", why),
            StoreError::Conflict(why) => AppError::new(StatusCode::CONFLICT, "conflict", why),
            StoreError::Quota(why) => AppError::new(StatusCode::PAYLOAD_TOO_LARGE, "quota", why),
            StoreError::Archived => AppError::new(StatusCode::CONFLICT, "archived", "this room is archived"),
            StoreError::OutcomeUnknown => {
                tracing::error!("a commit's outcome is unknown");
                AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "outcome_unknown", "the server cannot tell whether this was saved; look, then retry")
            }
            other => {
                tracing::error!("internal error: {other}");
                AppError::internal("internal error")
            }
        }
    }
}

impl From<JsonRejection> for AppError {
    fn from(r: JsonRejection) -> Self {
        let code = match r {
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            JsonRejection::BytesRejection(_) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            _ => "invalid",
        };
        AppError::new(r.status(), code, r.body_text())
    }
}

impl From<QueryRejection> for AppError {
    fn from(r: QueryRejection) -> Self {
        AppError::new(StatusCode::BAD_REQUEST, "invalid", r.body_text())
    }
}

impl From<PathRejection> for AppError {
    fn from(r: PathRejection) -> Self {
        AppError::new(StatusCode::BAD_REQUEST, "invalid", r.body_text())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = ApiError { error: self.code.into(), message: self.message, errors: self.errors };
        let mut res = (self.status, axum::Json(body)).into_response();
        if let Some(wait) = self.retry_after {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait));
        }
        res
    }
}

pub type ApiResult<T> = Result<T, AppError>;

/// A JSON body; a body that is not one gets the documented error (400, 413,
/// 415, 422) instead of axum's plain text.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = AppError;
    async fn from_request(req: Request<axum::body::Body>, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Json(axum::Json::<T>::from_request(req, state).await?.0))
    }
}

/// A query string, rejected as the documented error.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Query(axum::extract::Query::<T>::from_request_parts(parts, state).await?.0))
    }
}

/// Path parameters, rejected as the documented error.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Path(axum::extract::Path::<T>::from_request_parts(parts, state).await?.0))
    }
}

/// The caller's address as rate limits count it: the IPv4 address or the
/// IPv6 /64, as the listener saw it ("unknown" in router tests).
pub struct ClientIp(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(|| "unknown".to_string(), |ci| netstack::limits::source_of(ci.0.ip()).to_string());
        Ok(ClientIp(ip))
    }
}

/// The logged-in user of a request. For state-changing methods the request
/// must also carry the session's CSRF token in `X-CSRF-Token`.
pub struct CurrentUser {
    pub user: User,
    pub token_hash: Vec<u8>,
    pub csrf: String,
}

impl CurrentUser {
    pub fn is_admin(&self) -> bool {
        self.user.role == Role::Admin
    }
    pub fn require_admin(&self) -> ApiResult<()> {
        if self.is_admin() { Ok(()) } else { Err(AppError::forbidden("admins only")) }
    }
}

/// The value of one cookie.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl FromRequestParts<State> for CurrentUser {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, Self::Rejection> {
        let token = cookie(&parts.headers, SESSION_COOKIE).ok_or_else(AppError::unauthorized)?;
        let hash = token_hash(token);
        let now = state.chat.clock.now_ms();
        let h = hash.clone();
        let crate::store::users::SessionUser { user, csrf, waiting } = state
            .chat
            .db
            .read(move |c| crate::store::users::session_user(c, &h, now))
            .await?
            .ok_or_else(AppError::unauthorized)?;
        if user.role == Role::Guest {
            let route = parts.extensions.get::<axum::extract::MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_default();
            if !guests::guest_may(&parts.method, &route) {
                return Err(AppError::forbidden("guests cannot do this"));
            }
            if waiting && !guests::waiting_guest_may(&parts.method, &route) {
                return Err(AppError::new(StatusCode::FORBIDDEN, "waiting", "waiting for a moderator to let you in"));
            }
        }
        if !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
            use subtle::ConstantTimeEq;
            let sent = parts.headers.get(CSRF_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
            if !bool::from(sent.ct_eq(csrf.as_bytes())) {
                return Err(AppError::new(StatusCode::FORBIDDEN, "csrf", "missing or wrong CSRF token"));
            }
        }
        Ok(CurrentUser { user, token_hash: hash, csrf })
    }
}

/// `Set-Cookie` for a session that lasts `max_age_secs`.
pub fn session_cookie_for(token: &str, max_age_secs: i64) -> HeaderValue {
    let v = format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={max_age_secs}");
    HeaderValue::from_str(&v).expect("cookie is ASCII")
}

/// `Set-Cookie` for a new session (or for clearing it with `None`).
pub fn session_cookie(token: Option<&str>) -> HeaderValue {
    match token {
        Some(t) => session_cookie_for(t, SESSION_MS / 1000),
        None => session_cookie_for("", 0),
    }
}

/// The host (with port) a request was sent to: HTTP/1.1 carries it in
/// `Host`, HTTP/2 in the URI authority.
pub fn request_host<'a>(headers: &'a HeaderMap, uri: &'a axum::http::Uri) -> Option<&'a str> {
    headers.get(header::HOST).and_then(|v| v.to_str().ok()).or_else(|| uri.authority().map(|a| a.as_str()))
}

/// `host[:port]` without the port; IPv6 literals keep their brackets.
pub fn strip_port(host_port: &str) -> &str {
    match host_port.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && (!h.contains(':') || h.ends_with(']')) => h,
        _ => host_port,
    }
}

/// Same-origin check: a request that states an Origin must come from this
/// host. Browsers always send Origin on cross-site POSTs and WebSockets.
pub fn same_origin(headers: &HeaderMap, uri: &axum::http::Uri) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = request_host(headers, uri).unwrap_or("");
    let origin_host = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
    origin_host == Some(host)
}

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
    media-src 'self' blob:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
    frame-ancestors 'none'; form-action 'self'; worker-src 'self'; manifest-src 'self'";

async fn security(AxState(state): AxState<State>, req: Request<axum::body::Body>, next: Next) -> Response {
    let unsafe_method = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if unsafe_method && !same_origin(req.headers(), req.uri()) {
        return AppError::forbidden("cross-origin request refused").into_response();
    }
    let host = request_host(req.headers(), req.uri()).map(|h| strip_port(h).to_string());
    let mut res = next.run(req).await;
    let mut csp = CSP.to_string();
    let origins = state.settings.own_origins();
    if !origins.is_empty() {
        csp = csp.replace("connect-src 'self'", &format!("connect-src 'self' {}", origins.join(" ")));
    }
    // the download origin: this host, its own port (user content is never
    // served from the app's origin)
    if let Some(host) = host.filter(|h| h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-[]:".contains(&b))) {
        let files = format!("https://{host}:{}", state.files.port);
        csp = csp.replace("img-src 'self'", &format!("img-src 'self' {files}")).replace("media-src 'self'", &format!("media-src 'self' {files}"));
    }
    let h = res.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_str(&csp).unwrap_or(HeaderValue::from_static(CSP)));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(self), microphone=(self), display-capture=(self), geolocation=()"),
    );
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// Whatever reaches the client from under `/api` as an error is the
/// documented JSON: this rewrites the rest (405 from the router, a body
/// over its limit refused before a handler, …), keeping the status.
async fn json_errors(req: Request<axum::body::Body>, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let retry = res.headers().get(header::RETRY_AFTER).cloned();
    let text = match axum::body::to_bytes(res.into_body(), 4096).await {
        Ok(b) if !b.is_empty() => String::from_utf8_lossy(&b).trim().to_string(),
        _ => status.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    let code = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::NOT_FOUND => "not_found",
        s if s.is_server_error() => "internal",
        _ => "invalid",
    };
    let mut res = AppError::new(status, code, text).into_response();
    if let Some(r) = retry {
        res.headers_mut().insert(header::RETRY_AFTER, r);
    }
    res
}

/// The whole HTTPS application.
pub fn router(state: State) -> Router {
    health::mark_start(state.chat.clock.now_ms());
    let (api, _) = openapi::api_router().split_for_parts();
    let doc_json = openapi::document().to_json().expect("the API description serializes");
    let api = api
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let doc = doc_json.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], doc) }
            }),
        )
        .fallback(|| async { AppError::not_found("no such API endpoint") })
        .method_not_allowed_fallback(|| async {
            AppError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this method is not allowed here")
        })
        .layer(middleware::from_fn(json_errors));
    Router::new()
        .nest("/api", api)
        .route("/metrics", axum::routing::get(metrics::metrics))
        .merge(ui::routes())
        .layer(middleware::from_fn_with_state(state.clone(), security))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(state)
}

#[cfg(test)]
mod tests;
