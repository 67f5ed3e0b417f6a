//! What a browser needs for calls and chat beyond REST: the ICE servers
//! (this box's own STUN/TURN only) and the WebSocket (docs/protocol.md).

use axum::extract::State as AxState;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::{HeaderMap, header};
use axum::response::Response;
use futures_util::StreamExt;

use super::{ApiError, ApiResult, AppError, CurrentUser, State};
use crate::chat::protocol::MAX_FRAME_BYTES;
use crate::chat::session;
use crate::turn::IceServers;

/// The ICE servers for `RTCPeerConnection`, with TURN REST credentials
/// minted for the caller (never a static password in the page). Order:
/// STUN, then TURN over UDP, TCP, TLS, and TLS on the HTTPS port.
#[utoipa::path(get, path = "/ice", tag = "calls", responses((status = 200, body = IceServers), (status = 401, body = ApiError)))]
pub async fn ice_servers(AxState(state): AxState<State>, me: CurrentUser, headers: HeaderMap, uri: axum::http::Uri) -> ApiResult<axum::Json<IceServers>> {
    // the host the browser used, without its port
    let host = super::strip_port(super::request_host(&headers, &uri).unwrap_or("localhost"));
    let now = (state.chat.clock.now_ms() / 1000) as u64;
    Ok(axum::Json(state.turn.ice(host, &crate::turn::rest_user(me.user.id), now)))
}

/// The chat and call signaling WebSocket (docs/protocol.md). Same origin
/// only.
#[utoipa::path(get, path = "/ws", tag = "calls",
    responses((status = 101, description = "switching to the WebSocket protocol"), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
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
