//! A room's history, and search across one's rooms.

use axum::extract::State as AxState;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiResult, AppError, CurrentUser, Path, Query, State};
use crate::store::rooms::{self, Message, SearchHit};
use crate::store::{RoomId, Seq};

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Messages before this sequence (default: the newest).
    before: Option<Seq>,
    /// Page size, 1 to 200 (default 50).
    limit: Option<u32>,
}

/// A page of history, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct History {
    /// Messages and call records (`call`) of the page. Edits, deletions and
    /// reactions are folded into the messages; joins, leaves and room
    /// changes are not listed (they come as events on the WebSocket).
    pub messages: Vec<Message>,
    /// Older messages exist: ask again with `before` = the first `seq`.
    pub more: bool,
}

#[utoipa::path(get, path = "/rooms/{id}/messages", tag = "messages", params(("id" = i64, Path), HistoryQuery),
    responses((status = 200, body = History), (status = 400, body = ApiError), (status = 403, body = ApiError)))]
pub async fn history(
    AxState(state): AxState<State>,
    me: CurrentUser,
    Path(id): Path<RoomId>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<axum::Json<History>> {
    let uid = me.user.id;
    let (messages, more) = state.chat.db.read(move |c| rooms::history(c, id, uid, q.before, q.limit.unwrap_or(50))).await?;
    Ok(axum::Json(History { messages, more }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// Words to find (at most 200 bytes); the last one as a prefix.
    q: String,
    /// Only this room.
    room: Option<RoomId>,
}

/// Search results, best first (at most 50).
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchAnswer {
    pub hits: Vec<SearchHit>,
}

#[utoipa::path(get, path = "/search", tag = "messages", params(SearchQuery),
    responses((status = 200, body = SearchAnswer), (status = 400, body = ApiError)))]
pub async fn search(AxState(state): AxState<State>, me: CurrentUser, Query(q): Query<SearchQuery>) -> ApiResult<axum::Json<SearchAnswer>> {
    if q.q.len() > 200 {
        return Err(AppError::bad_request("q: at most 200 bytes"));
    }
    let uid = me.user.id;
    let hits = state.chat.db.read(move |c| rooms::search(c, uid, &q.q, q.room)).await?;
    Ok(axum::Json(SearchAnswer { hits }))
}
