//! Invite links for colleagues: made by admins, single use, expiring.

use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::account::{check_password, company, hash_password, start_session};
use super::{ApiError, ApiResult, AppError, ClientIp, CurrentUser, Json, Path, State};
use crate::auth;
use crate::store::rooms;
use crate::store::users::{self, Role};
use crate::store::{Millis, StoreError};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInvite {
    /// The account will be an admin.
    #[serde(default)]
    admin: bool,
    /// Hours until the link expires: 1 to 720, default 72.
    #[serde(default)]
    hours: Option<u32>,
}

/// A new invite link (shown once: only its hash is stored).
#[derive(Debug, Serialize, ToSchema)]
pub struct Invite {
    pub token: String,
    /// `/invite/{token}`: the page that takes it.
    pub path: String,
    /// Expiry, ms since the Unix epoch.
    pub expires: Millis,
}

#[utoipa::path(post, path = "/invites", tag = "invites", request_body = NewInvite,
    responses((status = 200, body = Invite), (status = 400, body = ApiError), (status = 403, body = ApiError)))]
pub async fn create_invite(AxState(state): AxState<State>, me: CurrentUser, Json(req): Json<NewInvite>) -> ApiResult<axum::Json<Invite>> {
    me.require_admin()?;
    let hours = req.hours.unwrap_or(72);
    if !(1..=720).contains(&hours) {
        return Err(AppError::bad_request("hours: between 1 and 720"));
    }
    let token = auth::new_token(&mut rand::rng());
    let hash = auth::token_hash(&token);
    let now = state.chat.clock.now_ms();
    let expires = now + i64::from(hours) * 3_600_000;
    let role = if req.admin { Role::Admin } else { Role::User };
    let by = me.user.id;
    state.chat.db.write(move |ctx| users::create_invite(ctx.conn, &hash, by, role, now, expires)).await?;
    Ok(axum::Json(Invite { path: format!("/invite/{token}"), token, expires }))
}

/// What an invite link offers.
#[derive(Debug, Serialize, ToSchema)]
pub struct InviteInfo {
    pub role: Role,
    pub expires: Millis,
    pub company: String,
}

#[utoipa::path(get, path = "/invites/{token}", tag = "invites", params(("token" = String, Path)),
    responses((status = 200, body = InviteInfo), (status = 403, description = "used or expired", body = ApiError), (status = 404, body = ApiError)))]
pub async fn invite_info(AxState(state): AxState<State>, Path(token): Path<String>) -> ApiResult<axum::Json<InviteInfo>> {
    let hash = auth::token_hash(&token);
    let now = state.chat.clock.now_ms();
    let (role, expires) = state.chat.db.read(move |c| users::invite_status(c, &hash, now)).await?;
    Ok(axum::Json(InviteInfo { role, expires, company: company(&state).await? }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptInvite {
    username: String,
    display_name: String,
    password: String,
}

/// Takes an invite: creates the account, logs in. Ten tries per address in
/// ten minutes (a link that works is not counted).
#[utoipa::path(post, path = "/invites/{token}", tag = "invites", request_body = AcceptInvite, params(("token" = String, Path)),
    responses((status = 200, body = super::account::SessionInfo), (status = 400, body = ApiError), (status = 403, body = ApiError),
        (status = 404, body = ApiError), (status = 409, body = ApiError), (status = 429, body = ApiError)))]
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
    state.auth.links.take(&[(&ip.0, 10)], now).map_err(AppError::too_many)?;
    let hash = auth::token_hash(&token);
    let pw = match hash_password(&state, req.password).await {
        Ok(pw) => pw,
        Err(e) => {
            state.auth.links.give_back(&[&ip.0], now);
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
            state.auth.links.give_back(&[&ip.0], now);
            start_session(&state, user).await
        }
        Err(StoreError::NotFound) => Err(AppError::new(StatusCode::NOT_FOUND, "not_found", "this invite link is not valid")),
        Err(e) => Err(e.into()),
    }
}
