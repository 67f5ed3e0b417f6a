//! The company directory, and what admins do to accounts.

use axum::extract::State as AxState;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use super::account::{check_password, hash_password};
use super::{ApiError, ApiResult, CurrentUser, Json, Path, State};
use crate::store::rooms;
use crate::store::users::{self, Role, User};
use crate::store::UserId;

/// Everyone in the company, and the guests let into one's rooms; a guest
/// sees only the people of its room.
#[utoipa::path(get, path = "/users", tag = "users", responses((status = 200, body = Vec<User>), (status = 401, body = ApiError)))]
pub async fn list_users(AxState(state): AxState<State>, me: CurrentUser) -> ApiResult<axum::Json<Vec<User>>> {
    let uid = me.user.id;
    if me.user.role == Role::Guest {
        return Ok(axum::Json(state.chat.db.read(move |c| users::room_mates(c, uid)).await?));
    }
    Ok(axum::Json(state.chat.db.read(move |c| users::list_users(c, uid)).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// 2–32 of `a-z 0-9 . _ -`, starting with a letter or digit.
    username: String,
    display_name: String,
    password: String,
    #[serde(default)]
    admin: bool,
}

/// Admin: creates an account (it joins the company room).
#[utoipa::path(post, path = "/users", tag = "users", request_body = NewUser,
    responses((status = 201, body = User), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 409, body = ApiError)))]
pub async fn create_user(AxState(state): AxState<State>, me: CurrentUser, Json(req): Json<NewUser>) -> ApiResult<(StatusCode, axum::Json<User>)> {
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
    Ok((StatusCode::CREATED, axum::Json(user)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    disabled: bool,
}

/// Admin: disables or re-enables an account. Disabling ends its sessions
/// and closes its WebSockets at once (close code 4001).
#[utoipa::path(patch, path = "/users/{id}", tag = "users", request_body = UserChange, params(("id" = i64, Path)),
    responses((status = 200, body = User), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
pub async fn update_user(
    AxState(state): AxState<State>,
    me: CurrentUser,
    Path(id): Path<UserId>,
    Json(req): Json<UserChange>,
) -> ApiResult<axum::Json<User>> {
    me.require_admin()?;
    let user = state.chat.db.write(move |ctx| users::set_disabled(ctx.conn, id, req.disabled)).await?;
    if req.disabled {
        state.chat.hub.disconnect_user(id, 4001, "account disabled");
        state.turn.revoke(&crate::turn::rest_user(id)).await;
    }
    Ok(axum::Json(user))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordReset {
    password: String,
}

/// Admin: sets a new password for someone; their sessions end (4002).
#[utoipa::path(post, path = "/users/{id}/password", tag = "users", request_body = PasswordReset, params(("id" = i64, Path)),
    responses((status = 204), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
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
    state.turn.revoke(&crate::turn::rest_user(id)).await;
    Ok(StatusCode::NO_CONTENT)
}
