//! Rooms and direct conversations: listing, creating, settings, members.

use axum::extract::State as AxState;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, ApiResult, AppError, CurrentUser, Json, Path, State};
use crate::store::rooms::{self, Member, OpenRoom, RoomChange, RoomSummary, Visibility};
use crate::store::{RoomId, UserId};

/// My rooms, most recently active first, with unread and mention counts.
#[utoipa::path(get, path = "/rooms", tag = "rooms", responses((status = 200, body = Vec<RoomSummary>), (status = 401, body = ApiError)))]
pub async fn list_rooms(AxState(state): AxState<State>, me: CurrentUser) -> ApiResult<axum::Json<Vec<RoomSummary>>> {
    let uid = me.user.id;
    Ok(axum::Json(state.chat.db.read(move |c| rooms::list_rooms(c, uid)).await?))
}

/// Open rooms I could join.
#[utoipa::path(get, path = "/rooms/browse", tag = "rooms", responses((status = 200, body = Vec<OpenRoom>), (status = 401, body = ApiError)))]
pub async fn browse_rooms(AxState(state): AxState<State>, me: CurrentUser) -> ApiResult<axum::Json<Vec<OpenRoom>>> {
    let uid = me.user.id;
    Ok(axum::Json(state.chat.db.read(move |c| rooms::browse_open(c, uid)).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRoom {
    /// 1 to 80 characters.
    name: String,
    /// At most 500 characters.
    #[serde(default)]
    topic: String,
    visibility: Visibility,
    /// Colleagues added at once (at most 1000).
    #[serde(default)]
    members: Vec<UserId>,
}

#[utoipa::path(post, path = "/rooms", tag = "rooms", request_body = NewRoom,
    responses((status = 201, body = RoomSummary), (status = 400, body = ApiError), (status = 422, body = ApiError)))]
pub async fn create_room(AxState(state): AxState<State>, me: CurrentUser, Json(req): Json<NewRoom>) -> ApiResult<(StatusCode, axum::Json<RoomSummary>)> {
    if req.members.len() > 1000 {
        return Err(AppError::bad_request("members: at most 1000"));
    }
    let uid = me.user.id;
    let summary = state
        .chat
        .write(move |c, now| {
            let (room, published) = rooms::create_group(c, uid, &req.name, &req.topic, req.visibility, &req.members, now)?;
            Ok((rooms::room_summary(c, room, uid)?, published))
        })
        .await?;
    Ok((StatusCode::CREATED, axum::Json(summary)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DirectReq {
    user: UserId,
}

/// Finds or creates the 1:1 conversation with someone.
#[utoipa::path(post, path = "/direct", tag = "rooms", request_body = DirectReq,
    responses((status = 200, body = RoomSummary), (status = 400, body = ApiError)))]
pub async fn open_direct(AxState(state): AxState<State>, me: CurrentUser, Json(req): Json<DirectReq>) -> ApiResult<axum::Json<RoomSummary>> {
    let uid = me.user.id;
    let summary = state
        .chat
        .write(move |c, now| {
            let (room, published) = rooms::open_direct(c, uid, req.user, now)?;
            Ok((rooms::room_summary(c, room, uid)?, published))
        })
        .await?;
    Ok(axum::Json(summary))
}

/// A room and its members.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoomDetail {
    pub room: RoomSummary,
    pub members: Vec<Member>,
}

#[utoipa::path(get, path = "/rooms/{id}", tag = "rooms", params(("id" = i64, Path)),
    responses((status = 200, body = RoomDetail), (status = 403, body = ApiError)))]
pub async fn room_detail(AxState(state): AxState<State>, me: CurrentUser, Path(id): Path<RoomId>) -> ApiResult<axum::Json<RoomDetail>> {
    let uid = me.user.id;
    let (room, members) = state.chat.db.read(move |c| Ok((rooms::room_summary(c, id, uid)?, rooms::members(c, id, uid)?))).await?;
    Ok(axum::Json(RoomDetail { room, members }))
}

/// Owners and admins: rename, topic, visibility, archive.
#[utoipa::path(patch, path = "/rooms/{id}", tag = "rooms", request_body = RoomChange, params(("id" = i64, Path)),
    responses((status = 204), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 409, body = ApiError)))]
pub async fn update_room(
    AxState(state): AxState<State>,
    me: CurrentUser,
    Path(id): Path<RoomId>,
    Json(change): Json<RoomChange>,
) -> ApiResult<StatusCode> {
    let (uid, admin) = (me.user.id, me.is_admin());
    state.chat.write(move |c, now| Ok(((), rooms::update_room(c, id, uid, admin, &change, now)?.into_iter().collect()))).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberReq {
    user: UserId,
}

/// Adds someone (any member may), or oneself to an open room (join).
#[utoipa::path(post, path = "/rooms/{id}/members", tag = "rooms", request_body = MemberReq, params(("id" = i64, Path)),
    responses((status = 204), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
pub async fn add_member(
    AxState(state): AxState<State>,
    me: CurrentUser,
    Path(id): Path<RoomId>,
    Json(req): Json<MemberReq>,
) -> ApiResult<StatusCode> {
    let uid = me.user.id;
    state.chat.write(move |c, now| Ok(((), rooms::add_member(c, id, uid, req.user, now)?.into_iter().collect()))).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes someone (owners and admins), or leaves when `user` is oneself.
#[utoipa::path(delete, path = "/rooms/{id}/members/{user}", tag = "rooms", params(("id" = i64, Path), ("user" = i64, Path)),
    responses((status = 204), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
pub async fn remove_member(
    AxState(state): AxState<State>,
    me: CurrentUser,
    Path((id, user)): Path<(RoomId, UserId)>,
) -> ApiResult<StatusCode> {
    let (uid, admin) = (me.user.id, me.is_admin());
    state.chat.write(move |c, now| Ok(((), rooms::remove_member(c, id, uid, admin, user, now)?.into_iter().collect()))).await?;
    // a guest removed is out: its socket closes, its relay credentials end
    let removed = state.chat.db.read(move |c| crate::store::users::get_user(c, user)).await;
    if removed.is_ok_and(|u| u.role == crate::store::users::Role::Guest) {
        state.chat.hub.disconnect_user(user, 4003, "removed from the conversation");
        state.turn.revoke(&crate::turn::rest_user(user)).await;
    }
    Ok(StatusCode::NO_CONTENT)
}
