//! The web side: one axum router for the UI, the REST API and the chat
//! WebSocket. `router(state)` is tested without sockets (tower `oneshot`).

pub mod api;
pub mod install;
pub mod metrics;
pub mod setup;
pub mod ui;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, FromRequestParts, State as AxState};
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header, request::Parts};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::auth::{RateLimiter, token_hash};
use crate::chat::Chat;
use crate::config::Config;
use crate::store::StoreError;
use crate::store::users::{self, Role, User};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "parvis_session";
/// Header carrying the session's CSRF token on state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Session lifetime: 30 days.
pub const SESSION_MS: i64 = 30 * 24 * 3600 * 1000;

/// Shared state of the web side.
pub struct AppState {
    pub chat: Chat,
    pub config: Config,
    /// The one-time setup code while the box has no admin.
    pub setup_code: Mutex<Option<String>>,
    pub login_limiter: RateLimiter,
    pub setup_limiter: RateLimiter,
    /// Password hashing: bounded in threads, memory and queue.
    pub hasher: crate::auth::Hasher,
    /// PEM of the local CA, offered for download so browsers can trust it.
    pub ca_pem: String,
    /// The STUN/TURN server, when it runs.
    pub turn: Option<netstack::driver::Handle>,
    /// The TURN REST secret, for minting browsers' short-lived credentials.
    pub turn_secret: Vec<u8>,
    /// What the certificate manager last did (ACME or local).
    pub cert_status: Arc<Mutex<crate::certs::acme::CertStatus>>,
    /// Wakes the certificate manager for a renewal now.
    pub cert_renew: Arc<tokio::sync::Notify>,
    /// The certificate settings the manager follows (changed live).
    pub tls_settings: tokio::sync::watch::Sender<crate::config::TlsConfig>,
    /// What the wizard and the Settings page edit, as applied now.
    pub settings: Mutex<setup::Settings>,
    /// Where those settings are persisted.
    pub config_file: std::path::PathBuf,
    /// The box name now (the local certificate follows it).
    pub box_name: Arc<std::sync::RwLock<String>>,
    pub mdns: Option<crate::system::mdns::Announcer>,
    /// SHA-256 of the local CA certificate, `AA:BB:…`.
    pub ca_fingerprint: String,
    /// `https://<name>:<port>` for every name and address of the box: the
    /// only other origins the UI may fetch from (the trust check).
    pub own_origins: std::sync::RwLock<Vec<String>>,
    /// Notified to end `parvis serve` (see [`AppState::end_soon`]).
    pub end: Arc<tokio::sync::Notify>,
    /// How it then ends: a reboot (an update was installed) or an
    /// installation (live system).
    pub end_as: Mutex<crate::serve::Exit>,
}

impl AppState {
    /// Ends `parvis serve` as `exit`, once the reply in hand has gone out.
    pub fn end_soon(&self, exit: crate::serve::Exit) {
        *self.end_as.lock().expect("poisoned") = exit;
        let end = self.end.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            end.notify_one();
        });
    }
}

pub type State = Arc<AppState>;

/// Errors of handlers: a status, a stable code, and a message safe to show.
#[derive(Debug)]
pub struct AppError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl AppError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        AppError { status, code, message: message.into(), retry_after: None }
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
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => AppError::new(StatusCode::NOT_FOUND, "not_found", "not found"),
            StoreError::NotMember => {
                AppError::new(StatusCode::FORBIDDEN, "not_member", "you are not a member of this room")
            }
            StoreError::Forbidden(why) => AppError::forbidden(why),
            StoreError::Invalid(why) => AppError::bad_request(why),
            StoreError::TooLarge(why) => AppError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", why),
            StoreError::OutcomeUnknown => {
                tracing::error!("a commit's outcome is unknown");
                AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "outcome_unknown", "the server cannot tell whether this was saved; look, then retry")
            }
            StoreError::Conflict(why) => AppError::new(StatusCode::CONFLICT, "conflict", why),
            StoreError::Archived => AppError::new(StatusCode::CONFLICT, "archived", "this room is archived"),
            other => {
                tracing::error!("internal error: {other}");
                AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
            }
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let mut res = (self.status, Json(json!({"error": self.code, "message": self.message}))).into_response();
        if let Some(wait) = self.retry_after {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait));
        }
        res
    }
}

pub type ApiResult<T> = Result<T, AppError>;

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
        let (user, csrf) = state
            .chat
            .db
            .read(move |c| users::session_user(c, &h, now))
            .await?
            .ok_or_else(AppError::unauthorized)?;
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

/// `Set-Cookie` for a new session (or for clearing it with `None`).
pub fn session_cookie(token: Option<&str>) -> HeaderValue {
    let v = match token {
        Some(t) => format!(
            "{SESSION_COOKIE}={t}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
            SESSION_MS / 1000
        ),
        None => format!("{SESSION_COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0"),
    };
    HeaderValue::from_str(&v).expect("cookie is ASCII")
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
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    let csp = {
        let origins = state.own_origins.read().expect("poisoned");
        if origins.is_empty() { CSP.to_string() } else { CSP.replace("connect-src 'self'", &format!("connect-src 'self' {}", origins.join(" "))) }
    };
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

/// The whole HTTPS application.
pub fn router(state: State) -> Router {
    let api = Router::new()
        .route("/status", get(api::status))
        .route("/setup", post(api::setup))
        .route("/login", post(api::login))
        .route("/logout", post(api::logout))
        .route("/me", get(api::me).patch(api::update_me))
        .route("/me/password", post(api::change_password))
        .route("/users", get(api::list_users).post(api::create_user))
        .route("/users/{id}", axum::routing::patch(api::update_user))
        .route("/users/{id}/password", post(api::reset_password))
        .route("/invites", post(api::create_invite))
        .route("/invites/{token}", get(api::invite_info).post(api::accept_invite))
        .route("/rooms", get(api::list_rooms).post(api::create_room))
        .route("/rooms/browse", get(api::browse_rooms))
        .route("/rooms/{id}", get(api::room_detail).patch(api::update_room))
        .route("/rooms/{id}/members", post(api::add_member))
        .route("/rooms/{id}/members/{user}", delete(api::remove_member))
        .route("/rooms/{id}/messages", get(api::history))
        .route("/direct", post(api::open_direct))
        .route("/search", get(api::search))
        .route("/ice", get(api::ice_servers))
        .route("/ws", get(api::websocket))
        .route("/setup/unlock", post(setup::unlock))
        .route("/setup/draft", get(setup::get_draft).put(setup::put_draft))
        .route("/setup/finish", post(setup::finish))
        .route("/admin/settings", get(setup::get_settings).put(setup::put_settings))
        .route("/admin/certificate/renew", post(setup::renew_certificate))
        .route("/trust", get(setup::trust))
        .route("/admin/install", get(install::get_install).post(install::post_install))
        .route("/admin/restart", post(install::post_restart))
        .route("/admin/update", post(setup::upload_update).layer(axum::extract::DefaultBodyLimit::max(128 << 20)))
        .fallback(|| async { AppError::new(StatusCode::NOT_FOUND, "not_found", "no such API endpoint") });
    Router::new()
        .nest("/api", api)
        .route("/metrics", get(metrics::metrics))
        .merge(ui::routes())
        .layer(middleware::from_fn_with_state(state.clone(), security))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(state)
}

#[cfg(test)]
mod tests;
