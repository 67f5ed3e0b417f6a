//! REST handlers (JSON) and the WebSocket upgrade. Handlers validate,
//! call store verbs, and map errors; no SQL here.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiResult, AppError, ClientIp, CurrentUser, SESSION_MS, State, session_cookie};
use crate::auth;
use crate::chat::protocol::MAX_FRAME_BYTES;
use crate::chat::session;
use crate::store::rooms::{self, RoomChange, Visibility};
use crate::store::users::{self, Role, User};
use crate::store::{self, RoomId, Seq, StoreError, UserId};

/// Hashes a password in the bounded hashing pool (503 when it is full).
pub(super) async fn hash_password(state: &State, password: String) -> ApiResult<String> {
    state.hasher.hash(password).await.map_err(|b| AppError::busy(b.retry_after))
}

/// Checks a password in the bounded hashing pool (503 when it is full).
async fn verify_password(state: &State, password: String, hash: String) -> ApiResult<bool> {
    state.hasher.verify(password, hash).await.map_err(|b| AppError::busy(b.retry_after))
}

fn check_password(p: &str) -> ApiResult<()> {
    auth::check_password(p).map_err(AppError::bad_request)
}

/// Creates a session for `user`; returns the cookie header and the body.
pub(super) async fn start_session(state: &State, user: User) -> ApiResult<Response> {
    let token = auth::new_token(&mut rand::rngs::OsRng);
    let csrf = auth::new_token(&mut rand::rngs::OsRng);
    let hash = auth::token_hash(&token);
    let now = state.chat.clock.now_ms();
    let (uid, c2) = (user.id, csrf.clone());
    state.chat.db.write(move |ctx| users::create_session(ctx.conn, &hash, uid, &c2, now, now + SESSION_MS)).await?;
    let company = company(state).await?;
    let body = Json(json!({"user": user, "csrf": csrf, "company": company}));
    Ok(([(header::SET_COOKIE, session_cookie(Some(&token)))], body).into_response())
}

async fn company(state: &State) -> ApiResult<String> {
    Ok(state.chat.db.read(|c| store::get_setting(c, "company")).await?.unwrap_or_default())
}

// ---- status, setup, login -------------------------------------------------

pub async fn status(AxState(state): AxState<State>) -> ApiResult<Json<Value>> {
    let setup_needed = state.setup_code.lock().expect("poisoned").is_some();
    Ok(Json(json!({
        "setup_needed": setup_needed,
        "company": company(&state).await?,
        "name": state.settings.lock().expect("poisoned").name.clone(),
        "version": env!("CARGO_PKG_VERSION"),
        "image_version": crate::system::update::running_version(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupReq {
    code: String,
    company: String,
    username: String,
    display_name: String,
    password: String,
}

/// First start: whoever knows the setup code creates the admin account.
pub async fn setup(AxState(state): AxState<State>, ip: ClientIp, Json(req): Json<SetupReq>) -> ApiResult<Response> {
    super::setup::check_setup_code(&state, &ip, &req.code)?;
    let company = req.company.trim().to_string();
    if company.is_empty() || company.chars().count() > 100 {
        return Err(AppError::bad_request("company: 1 to 100 characters"));
    }
    users::check_username(&req.username)?;
    users::check_display_name(&req.display_name)?;
    check_password(&req.password)?;
    let hash = hash_password(&state, req.password).await?;
    let user = super::setup::claim(&state, company, req.username, req.display_name, hash).await?;
    super::setup::end_setup(&state);
    tracing::info!(admin = %user.username, "setup complete");
    start_session(&state, user).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginReq {
    username: String,
    password: String,
}

pub async fn login(AxState(state): AxState<State>, ip: ClientIp, Json(req): Json<LoginReq>) -> ApiResult<Response> {
    let now = state.chat.clock.now_ms();
    let name: String = req.username.trim().to_lowercase().chars().take(64).collect();
    // counted before the hash, for every key at once: parallel guesses
    // cannot pass the limit; a success is given back
    let keys = auth::login_keys(&name, &ip.0);
    let limits: Vec<(&str, usize)> = keys.iter().map(|(k, l)| (k.as_str(), *l)).collect();
    let key_names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
    state.login_limiter.take(&limits, now).map_err(AppError::too_many)?;
    // a place in the hashing queue before anything else: a box that is busy
    // says so at no cost, and holds it against nobody
    let slot = match state.hasher.reserve() {
        Ok(slot) => slot,
        Err(busy) => {
            state.login_limiter.give_back(&key_names, now);
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
            state.login_limiter.give_back(&key_names, now);
            state.login_limiter.clear(&keys[0].0);
            start_session(&state, u).await
        }
        Some(u) if good && u.disabled => Err(AppError::forbidden("this account is disabled")),
        _ => Err(AppError::new(StatusCode::UNAUTHORIZED, "bad_credentials", "wrong username or password")),
    }
}

pub async fn logout(AxState(state): AxState<State>, me: CurrentUser) -> ApiResult<Response> {
    let h = me.token_hash.clone();
    state.chat.db.write(move |ctx| users::delete_session(ctx.conn, &h)).await?;
    Ok(([(header::SET_COOKIE, session_cookie(None))], StatusCode::NO_CONTENT).into_response())
}

pub async fn me(AxState(state): AxState<State>, me: CurrentUser) -> ApiResult<Json<Value>> {
    Ok(Json(json!({"user": me.user, "csrf": me.csrf, "company": company(&state).await?})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeChange {
    display_name: String,
}

pub async fn update_me(AxState(state): AxState<State>, me: CurrentUser, Json(req): Json<MeChange>) -> ApiResult<Json<User>> {
    let uid = me.user.id;
    let user = state.chat.db.write(move |ctx| users::set_display_name(ctx.conn, uid, &req.display_name)).await?;
    Ok(Json(user))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    current: String,
    new: String,
}

pub async fn change_password(
    AxState(state): AxState<State>,
    me: CurrentUser,
    Json(req): Json<PasswordChange>,
) -> ApiResult<StatusCode> {
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

// ---- users (directory and admin) -----------------------------------------

pub async fn list_users(AxState(state): AxState<State>, _me: CurrentUser) -> ApiResult<Json<Vec<User>>> {
    Ok(Json(state.chat.db.read(users::list_users).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    username: String,
    display_name: String,
    password: String,
    #[serde(default)]
    admin: bool,
}

pub async fn create_user(AxState(state): AxState<State>, me: CurrentUser, Json(req): Json<NewUser>) -> ApiResult<(StatusCode, Json<User>)> {
    me.require_admin()?;
    users::check_username(&req.username)?;
    check_password(&req.password)?;
    let hash = hash_password(&state, req.password).await?;
    let role = if req.admin { Role::Admin } else { Role::User };
    let user = state
        .chat
        .write(move |c, now| {
            let user = users::create_user(c, &req.username, &req.display_name, &hash, role, now)?;
            let published = rooms::join_default_room(c, user.id, now)?;
            Ok((user, published))
        })
        .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    disabled: bool,
}

/// Admin: disable or re-enable an account. Disabling ends its sessions and
/// closes its WebSockets at once.
pub async fn update_user(
    AxState(state): AxState<State>,
    me: CurrentUser,
    Path(id): Path<UserId>,
    Json(req): Json<UserChange>,
) -> ApiResult<Json<User>> {
    me.require_admin()?;
    let user = state.chat.db.write(move |ctx| users::set_disabled(ctx.conn, id, req.disabled)).await?;
    if req.disabled {
        state.chat.hub.disconnect_user(id, 4001, "account disabled");
    }
    Ok(Json(user))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordReset {
    password: String,
}

/// Admin: set a new password for someone; their sessions end.
pub async fn reset_password(
    AxState(state): AxState<State>,
    me: CurrentUser,
    Path(id): Path<UserId>,
    Json(req): Json<PasswordReset>,
) -> ApiResult<StatusCode> {
    me.require_admin()?;
    check_password(&req.password)?;
    let hash = hash_password(&state, req.password).await?;
    state.chat.db.write(move |ctx| users::set_password_hash(ctx.conn, id, &hash, None)).await?;
    state.chat.hub.disconnect_user(id, 4002, "password reset");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewInvite {
    #[serde(default)]
    admin: bool,
    /// Hours until the link expires; default 72, at most 720.
    #[serde(default)]
    hours: Option<u32>,
}

pub async fn create_invite(AxState(state): AxState<State>, me: CurrentUser, Json(req): Json<NewInvite>) -> ApiResult<Json<Value>> {
    me.require_admin()?;
    let hours = req.hours.unwrap_or(72);
    if !(1..=720).contains(&hours) {
        return Err(AppError::bad_request("hours: between 1 and 720"));
    }
    let token = auth::new_token(&mut rand::rngs::OsRng);
    let hash = auth::token_hash(&token);
    let now = state.chat.clock.now_ms();
    let expires = now + i64::from(hours) * 3_600_000;
    let role = if req.admin { Role::Admin } else { Role::User };
    let by = me.user.id;
    state.chat.db.write(move |ctx| users::create_invite(ctx.conn, &hash, by, role, now, expires)).await?;
    Ok(Json(json!({"token": token, "path": format!("/invite/{token}"), "expires": expires})))
}

pub async fn invite_info(AxState(state): AxState<State>, Path(token): Path<String>) -> ApiResult<Json<Value>> {
    let hash = auth::token_hash(&token);
    let now = state.chat.clock.now_ms();
    let (role, expires) = state.chat.db.read(move |c| users::invite_status(c, &hash, now)).await?;
    Ok(Json(json!({"role": role, "expires": expires, "company": company(&state).await?})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptInvite {
    username: String,
    display_name: String,
    password: String,
}

pub async fn accept_invite(
    AxState(state): AxState<State>,
    ip: ClientIp,
    Path(token): Path<String>,
    Json(req): Json<AcceptInvite>,
) -> ApiResult<Response> {
    let now = state.chat.clock.now_ms();
    users::check_username(&req.username)?;
    users::check_display_name(&req.display_name)?;
    check_password(&req.password)?;
    // counted before the hash; a link that works is given back
    state.setup_limiter.take(&[(&ip.0, 10)], now).map_err(AppError::too_many)?;
    let hash = auth::token_hash(&token);
    let pw = match hash_password(&state, req.password).await {
        Ok(pw) => pw,
        Err(e) => {
            state.setup_limiter.give_back(&[&ip.0], now);
            return Err(e);
        }
    };
    let result = state
        .chat
        .write(move |c, now| {
            let user = users::accept_invite(c, &hash, &req.username, &req.display_name, &pw, now)?;
            let published = rooms::join_default_room(c, user.id, now)?;
            Ok((user, published))
        })
        .await;
    match result {
        Ok(user) => {
            state.setup_limiter.give_back(&[&ip.0], now);
            start_session(&state, user).await
        }
        Err(StoreError::NotFound) => Err(AppError::new(StatusCode::NOT_FOUND, "not_found", "this invite link is not valid")),
        Err(e) => Err(e.into()),
    }
}

// ---- rooms ------------------------------------------------------------------

pub async fn list_rooms(AxState(state): AxState<State>, me: CurrentUser) -> ApiResult<Json<Vec<rooms::RoomSummary>>> {
    let uid = me.user.id;
    Ok(Json(state.chat.db.read(move |c| rooms::list_rooms(c, uid)).await?))
}

pub async fn browse_rooms(AxState(state): AxState<State>, me: CurrentUser) -> ApiResult<Json<Vec<rooms::OpenRoom>>> {
    let uid = me.user.id;
    Ok(Json(state.chat.db.read(move |c| rooms::browse_open(c, uid)).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRoom {
    name: String,
    #[serde(default)]
    topic: String,
    visibility: Visibility,
    #[serde(default)]
    members: Vec<UserId>,
}

pub async fn create_room(
    AxState(state): AxState<State>,
    me: CurrentUser,
    Json(req): Json<NewRoom>,
) -> ApiResult<(StatusCode, Json<rooms::RoomSummary>)> {
    if req.members.len() > 1000 {
        return Err(AppError::bad_request("members: at most 1000"));
    }
    let uid = me.user.id;
    let summary = state
        .chat
        .write(move |c, now| {
            let (room, published) =
                rooms::create_group(c, uid, &req.name, &req.topic, req.visibility, &req.members, now)?;
            Ok((rooms::room_summary(c, room, uid)?, published))
        })
        .await?;
    Ok((StatusCode::CREATED, Json(summary)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectReq {
    user: UserId,
}

pub async fn open_direct(AxState(state): AxState<State>, me: CurrentUser, Json(req): Json<DirectReq>) -> ApiResult<Json<rooms::RoomSummary>> {
    let uid = me.user.id;
    let summary = state
        .chat
        .write(move |c, now| {
            let (room, published) = rooms::open_direct(c, uid, req.user, now)?;
            Ok((rooms::room_summary(c, room, uid)?, published))
        })
        .await?;
    Ok(Json(summary))
}

pub async fn room_detail(AxState(state): AxState<State>, me: CurrentUser, Path(id): Path<RoomId>) -> ApiResult<Json<Value>> {
    let uid = me.user.id;
    let (summary, members) = state
        .chat
        .db
        .read(move |c| Ok((rooms::room_summary(c, id, uid)?, rooms::members(c, id, uid)?)))
        .await?;
    Ok(Json(json!({"room": summary, "members": members})))
}

pub async fn update_room(
    AxState(state): AxState<State>,
    me: CurrentUser,
    Path(id): Path<RoomId>,
    Json(change): Json<RoomChange>,
) -> ApiResult<StatusCode> {
    let (uid, admin) = (me.user.id, me.is_admin());
    state
        .chat
        .write(move |c, now| Ok(((), rooms::update_room(c, id, uid, admin, &change, now)?.into_iter().collect())))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberReq {
    user: UserId,
}

/// Adds someone (or oneself, to join an open room).
pub async fn add_member(
    AxState(state): AxState<State>,
    me: CurrentUser,
    Path(id): Path<RoomId>,
    Json(req): Json<MemberReq>,
) -> ApiResult<StatusCode> {
    let uid = me.user.id;
    state
        .chat
        .write(move |c, now| Ok(((), rooms::add_member(c, id, uid, req.user, now)?.into_iter().collect())))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes someone, or leaves when `user` is oneself.
pub async fn remove_member(
    AxState(state): AxState<State>,
    me: CurrentUser,
    Path((id, user)): Path<(RoomId, UserId)>,
) -> ApiResult<StatusCode> {
    let (uid, admin) = (me.user.id, me.is_admin());
    state
        .chat
        .write(move |c, now| Ok(((), rooms::remove_member(c, id, uid, admin, user, now)?.into_iter().collect())))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct HistoryQuery {
    before: Option<Seq>,
    limit: Option<u32>,
}

pub async fn history(
    AxState(state): AxState<State>,
    me: CurrentUser,
    Path(id): Path<RoomId>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<Json<Value>> {
    let uid = me.user.id;
    let (messages, more) = state
        .chat
        .db
        .read(move |c| rooms::history(c, id, uid, q.before, q.limit.unwrap_or(50)))
        .await?;
    Ok(Json(json!({"messages": messages, "more": more})))
}

#[derive(Deserialize)]
pub struct SearchQuery {
    q: String,
    room: Option<RoomId>,
}

pub async fn search(AxState(state): AxState<State>, me: CurrentUser, Query(q): Query<SearchQuery>) -> ApiResult<Json<Value>> {
    if q.q.len() > 200 {
        return Err(AppError::bad_request("q: at most 200 bytes"));
    }
    let uid = me.user.id;
    let hits = state.chat.db.read(move |c| rooms::search(c, uid, &q.q, q.room)).await?;
    Ok(Json(json!({"hits": hits})))
}

// ---- websocket ---------------------------------------------------------------

/// `GET /api/ws`: the chat WebSocket (docs/protocol.md). Same-origin only.
pub async fn websocket(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    me: CurrentUser,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    if headers.get(header::ORIGIN).is_none() || !super::same_origin(&headers, &uri) {
        return Err(AppError::forbidden("WebSocket from another origin refused"));
    }
    let chat = state.chat.clone();
    let user = me.user;
    Ok(ws
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .on_upgrade(move |socket| async move {
            let (sink, stream) = socket.split();
            session::run(chat, user, sink, stream).await;
        }))
}

// ---- calls: ICE servers ----------------------------------------------------

/// `GET /api/ice`: the ICE servers a browser should use — only this box's
/// own STUN/TURN — with TURN REST credentials valid for one hour (never a
/// static password in the page).
pub async fn ice_servers(
    AxState(state): AxState<State>,
    me: CurrentUser,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> ApiResult<Json<Value>> {
    if !state.config.turn.enabled {
        return Ok(Json(json!({"iceServers": [], "ttl": 0})));
    }
    // The host the browser used, without its port.
    let host = super::strip_port(super::request_host(&headers, &uri).unwrap_or("localhost"));
    let ttl = 3600u64.min(state.config.turn.credential_horizon_secs);
    let now = (state.chat.clock.now_ms() / 1000) as u64;
    let username = netstack::turn::auth::rest_username(now + ttl, &format!("u{}", me.user.id));
    let credential = netstack::turn::auth::rest_password(&state.turn_secret, &username);
    let uris = crate::turn::uris(&state.config, host);
    let (stun, turn): (Vec<String>, Vec<String>) = uris.into_iter().partition(|u| u.starts_with("stun:"));
    Ok(Json(json!({
        "iceServers": [
            {"urls": stun},
            {"urls": turn, "username": username, "credential": credential},
        ],
        "ttl": ttl,
    })))
}
