//! The box's status, the first admin (`POST /api/setup`), logging in and
//! out, and one's own profile and password.

use axum::extract::State as AxState;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, ApiResult, AppError, ClientIp, CurrentUser, Json, SESSION_MS, State, session_cookie, session_cookie_for};
use crate::auth;
use crate::store::users::{self, User};
use crate::store::{self, Millis};

/// Hashes a password in the bounded hashing pool (503 when it is full).
pub(super) async fn hash_password(state: &State, password: String) -> ApiResult<String> {
    state.auth.hasher.hash(password).await.map_err(|b| AppError::busy(b.retry_after))
}

/// Checks a password in the bounded hashing pool (503 when it is full).
pub(super) async fn verify_password(state: &State, password: String, hash: String) -> ApiResult<bool> {
    state.auth.hasher.verify(password, hash).await.map_err(|b| AppError::busy(b.retry_after))
}

pub(super) fn check_password(p: &str) -> ApiResult<()> {
    auth::check_password(p).map_err(AppError::bad_request)
}

/// A logged-in session: who, its CSRF token, and the company.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionInfo {
    pub user: User,
    /// Send it in `X-CSRF-Token` with every POST, PUT, PATCH and DELETE.
    pub csrf: String,
    pub company: String,
    /// For a guest: its room, and whether it still waits to be let in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest: Option<super::guests::GuestStatus>,
}

/// Creates a session for `user`: the cookie and the session's answer.
pub(super) async fn start_session(state: &State, user: User) -> ApiResult<Response> {
    let until = state.chat.clock.now_ms() + SESSION_MS;
    start_session_until(state, user, until).await
}

/// A session that ends at `until` (a guest's ends with its link).
pub(super) async fn start_session_until(state: &State, user: User, until: Millis) -> ApiResult<Response> {
    let token = auth::new_token(&mut rand::rng());
    let csrf = auth::new_token(&mut rand::rng());
    let hash = auth::token_hash(&token);
    let now = state.chat.clock.now_ms();
    let (uid, c2) = (user.id, csrf.clone());
    state.chat.db.write(move |ctx| users::create_session(ctx.conn, &hash, uid, &c2, now, until)).await?;
    let company = company(state).await?;
    let guest = if user.role == users::Role::Guest { super::guests::guest_status(state, user.id).await? } else { None };
    let body = axum::Json(SessionInfo { user, csrf, company, guest });
    let max_age = ((until - now) / 1000).max(0);
    Ok(([(header::SET_COOKIE, session_cookie_for(&token, max_age))], body).into_response())
}

pub(super) async fn company(state: &State) -> ApiResult<String> {
    Ok(state.chat.db.read(|c| store::get_setting(c, "company")).await?.unwrap_or_default())
}

/// What anyone may know of the box.
#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    /// The box has no admin yet: the wizard (or `POST /api/setup`) comes first.
    pub setup_needed: bool,
    pub company: String,
    /// The box's name (`<name>.local`).
    pub name: String,
    /// Parvis's version.
    pub version: String,
    /// The box image's version (`/etc/os-release`), else Parvis's.
    pub image_version: String,
    /// The longest a guest link may live, in hours (the admin's
    /// `guests.max_link_days`).
    pub guest_link_max_hours: u32,
}

#[utoipa::path(get, path = "/status", tag = "account", responses((status = 200, body = Status)))]
pub async fn status(AxState(state): AxState<State>) -> ApiResult<axum::Json<Status>> {
    let setup_needed = state.setup_code.lock().expect("poisoned").is_some();
    Ok(axum::Json(Status {
        setup_needed,
        company: company(&state).await?,
        name: state.settings.name(),
        version: env!("CARGO_PKG_VERSION").into(),
        image_version: crate::system::update::running_version(),
        guest_link_max_hours: state.settings.current().guests.max_link_days * 24,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetupReq {
    /// The setup code printed by the box.
    code: String,
    company: String,
    username: String,
    display_name: String,
    password: String,
}

/// First start: whoever knows the setup code creates the admin account
/// (the same as the wizard's last step, without its other settings).
#[utoipa::path(post, path = "/setup", tag = "account", request_body = SetupReq,
    responses((status = 200, description = "the admin, logged in", body = SessionInfo),
        (status = 403, body = ApiError), (status = 409, body = ApiError), (status = 429, body = ApiError)))]
pub async fn setup(AxState(state): AxState<State>, ip: ClientIp, Json(req): Json<SetupReq>) -> ApiResult<Response> {
    super::wizard::check_setup_code(&state, &ip, &req.code)?;
    let company = req.company.trim().to_string();
    if company.is_empty() || company.chars().count() > 100 {
        return Err(AppError::bad_request("company: 1 to 100 characters"));
    }
    users::check_username(&req.username)?;
    users::check_display_name(&req.display_name)?;
    check_password(&req.password)?;
    let hash = hash_password(&state, req.password).await?;
    let user = super::wizard::claim(&state, company, req.username, req.display_name, hash).await?;
    super::wizard::end_setup(&state);
    tracing::info!(admin = %user.username, "setup complete");
    start_session(&state, user).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginReq {
    username: String,
    password: String,
}

/// Logs in. Attempts are counted before the password is checked: 10 per
/// user and address, 30 per user, 300 per address in 15 minutes (429 with
/// Retry-After beyond); a box busy hashing answers 503 with Retry-After.
#[utoipa::path(post, path = "/login", tag = "account", request_body = LoginReq,
    responses((status = 200, description = "logged in; the session cookie is set", body = SessionInfo),
        (status = 401, body = ApiError), (status = 403, description = "disabled", body = ApiError),
        (status = 429, body = ApiError), (status = 503, body = ApiError)))]
pub async fn login(AxState(state): AxState<State>, ip: ClientIp, Json(req): Json<LoginReq>) -> ApiResult<Response> {
    let now = state.chat.clock.now_ms();
    let name: String = req.username.trim().to_lowercase().chars().take(64).collect();
    // counted before the hash, for every key at once: parallel guesses
    // cannot pass the limit; a success is given back
    let keys = auth::login_keys(&name, &ip.0);
    let limits: Vec<(&str, usize)> = keys.iter().map(|(k, l)| (k.as_str(), *l)).collect();
    let key_names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
    state.auth.logins.take(&limits, now).map_err(AppError::too_many)?;
    // a place in the hashing queue before anything else: a box that is busy
    // says so at no cost, and holds it against nobody
    let slot = match state.auth.hasher.reserve() {
        Ok(slot) => slot,
        Err(busy) => {
            state.auth.logins.give_back(&key_names, now);
            return Err(AppError::busy(busy.retry_after));
        }
    };
    let n = name.clone();
    let found = state.chat.db.read(move |c| users::find_login(c, &n)).await?;
    let (user, hash) = match found {
        Some((u, h)) => (Some(u), h),
        None => (None, auth::dummy_hash().to_string()),
    };
    let good = slot.verify(req.password, hash).await;
    match user {
        Some(u) if good && !u.disabled => {
            state.auth.logins.give_back(&key_names, now);
            state.auth.logins.clear(&keys[0].0);
            start_session(&state, u).await
        }
        Some(u) if good && u.disabled => Err(AppError::forbidden("this account is disabled")),
        _ => Err(AppError::new(StatusCode::UNAUTHORIZED, "bad_credentials", "wrong username or password")),
    }
}

#[utoipa::path(post, path = "/logout", tag = "account", responses((status = 204), (status = 401, body = ApiError)))]
pub async fn logout(AxState(state): AxState<State>, me: CurrentUser) -> ApiResult<Response> {
    if me.user.role == users::Role::Guest {
        // a guest who leaves is gone (its sessions with it)
        super::guests::guest_leaves(&state, me.user.id).await?;
    }
    let h = me.token_hash.clone();
    state.chat.db.write(move |ctx| users::delete_session(ctx.conn, &h)).await?;
    Ok(([(header::SET_COOKIE, session_cookie(None))], StatusCode::NO_CONTENT).into_response())
}

#[utoipa::path(get, path = "/me", tag = "account", responses((status = 200, body = SessionInfo), (status = 401, body = ApiError)))]
pub async fn me(AxState(state): AxState<State>, me: CurrentUser) -> ApiResult<axum::Json<SessionInfo>> {
    let guest = if me.user.role == users::Role::Guest { super::guests::guest_status(&state, me.user.id).await? } else { None };
    Ok(axum::Json(SessionInfo { user: me.user, csrf: me.csrf, company: company(&state).await?, guest }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MeChange {
    display_name: String,
}

#[utoipa::path(patch, path = "/me", tag = "account", request_body = MeChange,
    responses((status = 200, body = User), (status = 400, body = ApiError), (status = 409, body = ApiError)))]
pub async fn update_me(AxState(state): AxState<State>, me: CurrentUser, Json(req): Json<MeChange>) -> ApiResult<axum::Json<User>> {
    let (uid, guest) = (me.user.id, me.user.role == users::Role::Guest);
    let user = state
        .chat
        .db
        .write(move |ctx| {
            // a guest cannot take a member's name
            let name = if guest { crate::store::guests::check_guest_name(ctx.conn, &req.display_name)? } else { req.display_name };
            users::set_display_name(ctx.conn, uid, &name)
        })
        .await?;
    Ok(axum::Json(user))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    current: String,
    new: String,
}

/// Changes one's password; one's other sessions end.
#[utoipa::path(post, path = "/me/password", tag = "account", request_body = PasswordChange,
    responses((status = 204), (status = 400, body = ApiError), (status = 403, body = ApiError)))]
pub async fn change_password(AxState(state): AxState<State>, me: CurrentUser, Json(req): Json<PasswordChange>) -> ApiResult<StatusCode> {
    check_password(&req.new)?;
    let uid = me.user.id;
    let old = state.chat.db.read(move |c| users::password_hash(c, uid)).await?;
    if !verify_password(&state, req.current, old).await? {
        return Err(AppError::forbidden("the current password is wrong"));
    }
    let hash = hash_password(&state, req.new).await?;
    let keep = me.token_hash.clone();
    state.chat.db.write(move |ctx| users::set_password_hash(ctx.conn, uid, &hash, Some(&keep))).await?;
    Ok(StatusCode::NO_CONTENT)
}
