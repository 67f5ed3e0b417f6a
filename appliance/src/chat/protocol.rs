//! The chat wire protocol, version 1 (docs/protocol.md): JSON text frames
//! with a `t` field. Parsing is pure and gives precise errors.

use std::collections::HashMap;

use serde::Deserialize;

use super::call::{MediaState, ModAction};
pub use super::frames::{ErrorCode, ErrorFrame};
use crate::store::rooms::MAX_BODY_BYTES;
use crate::store::{RoomId, Seq};

pub const PROTOCOL_VERSION: u32 = 1;

/// Largest frame the server reads. Bigger frames close the connection (1009);
/// frames up to this size but with a body over 16 KiB get a `too_large` error
/// and the connection stays up.
pub const MAX_FRAME_BYTES: usize = 256 * 1024;

/// Frames a client sends.
#[derive(Debug, Clone, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(tag = "t", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// Replay what happened after these sequence numbers (room id → seq).
    Sync { since: HashMap<String, Seq> },
    Send {
        id: String,
        room: RoomId,
        body: String,
        #[serde(default)]
        reply_to: Option<Seq>,
        /// Finished uploads of the sender for this room (at most 10): the
        /// message's files. The body may be empty then.
        #[serde(default)]
        files: Vec<String>,
    },
    Edit { id: String, room: RoomId, seq: Seq, body: String },
    Delete { id: String, room: RoomId, seq: Seq },
    React { id: String, room: RoomId, seq: Seq, emoji: String, on: bool },
    Read { room: RoomId, seq: Seq },
    Typing { room: RoomId },
    Ping {
        #[serde(default)]
        id: Option<String>,
    },
    /// Join the room's call (starting it if there is none) as participant
    /// `pid`; the same `pid` from a new connection rebinds after a drop.
    CallJoin {
        room: RoomId,
        pid: String,
        #[serde(default)]
        replaces: Option<String>,
        #[serde(default)]
        media: MediaState,
    },
    CallLeave { room: RoomId },
    /// SDP or ICE candidate for one other participant; relayed as is.
    CallSignal {
        room: RoomId,
        to: String,
        #[schema(value_type = Object)]
        data: serde_json::Value,
    },
    /// Mute, camera, screen sharing, raised hand.
    CallState { room: RoomId, media: MediaState },
    /// Turn down a ringing direct call.
    CallDecline { room: RoomId },
    /// Owners and admins: mute or remove a participant.
    CallModerate { room: RoomId, pid: String, action: ModAction },
}

/// Largest `data` of a `call_signal` frame (an SDP with many m-lines fits).
pub const MAX_SIGNAL_BYTES: usize = 64 * 1024;

const KNOWN_TYPES: &[&str] = &[
    "sync",
    "send",
    "edit",
    "delete",
    "react",
    "read",
    "typing",
    "ping",
    "call_join",
    "call_leave",
    "call_signal",
    "call_state",
    "call_decline",
    "call_moderate",
];

/// Parses one text frame, or says precisely what is wrong with it.
pub fn parse(text: &str) -> Result<ClientFrame, ErrorFrame> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| ErrorFrame::new(ErrorCode::BadFrame, format!("not valid JSON: {e}")))?;
    let Some(obj) = value.as_object() else {
        return Err(ErrorFrame::new(ErrorCode::BadFrame, "a frame must be a JSON object"));
    };
    let id = obj.get("id").and_then(|v| v.as_str()).map(|s| s.chars().take(64).collect::<String>());
    let Some(t) = obj.get("t").and_then(|v| v.as_str()).map(str::to_string) else {
        return Err(ErrorFrame::new(ErrorCode::BadFrame, "missing string field \"t\"").reference(id));
    };
    let t = t.as_str();
    if !KNOWN_TYPES.contains(&t) {
        let t: String = t.chars().take(32).collect();
        return Err(ErrorFrame::new(ErrorCode::UnknownType, format!("unknown frame type {t:?}")).reference(id));
    }
    if (t == "send" || t == "edit")
        && let Some(body) = obj.get("body").and_then(|v| v.as_str())
            && body.len() > MAX_BODY_BYTES {
                return Err(ErrorFrame::new(
                    ErrorCode::TooLarge,
                    format!("body: {} bytes, the limit is {MAX_BODY_BYTES}", body.len()),
                )
                .reference(id));
            }
    if t == "call_signal" {
        let size = obj.get("data").map_or(0, |d| d.to_string().len());
        if size > MAX_SIGNAL_BYTES {
            return Err(ErrorFrame::new(
                ErrorCode::TooLarge,
                format!("data: {size} bytes, the limit is {MAX_SIGNAL_BYTES}"),
            ));
        }
    }
    serde_json::from_value(value)
        .map_err(|e| ErrorFrame::new(ErrorCode::Invalid, format!("{t}: {e}")).reference(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_frame_type() {
        let cases = [
            r#"{"t":"sync","since":{"1":4,"2":0}}"#,
            r#"{"t":"send","id":"a1","room":1,"body":"hi"}"#,
            r#"{"t":"send","id":"a1","room":1,"body":"hi","reply_to":3}"#,
            r#"{"t":"edit","id":"a2","room":1,"seq":3,"body":"hey"}"#,
            r#"{"t":"delete","id":"a3","room":1,"seq":3}"#,
            r#"{"t":"react","id":"a4","room":1,"seq":3,"emoji":"👍","on":true}"#,
            r#"{"t":"read","room":1,"seq":3}"#,
            r#"{"t":"typing","room":1}"#,
            r#"{"t":"ping"}"#,
            r#"{"t":"call_join","room":1,"pid":"p1"}"#,
            r#"{"t":"call_join","room":1,"pid":"p1","replaces":"p0","media":{"audio":true,"video":false}}"#,
            r#"{"t":"call_leave","room":1}"#,
            r#"{"t":"call_signal","room":1,"to":"p2","data":{"candidate":null}}"#,
            r#"{"t":"call_state","room":1,"media":{"audio":false,"video":true,"screen":"s1","hand":true}}"#,
            r#"{"t":"call_decline","room":1}"#,
            r#"{"t":"call_moderate","room":1,"pid":"p2","action":"mute"}"#,
        ];
        for c in cases {
            parse(c).unwrap_or_else(|e| panic!("{c}: {e:?}"));
        }
    }

    #[test]
    fn errors_are_precise() {
        let code = |s: &str| parse(s).unwrap_err().code;
        assert_eq!(code("not json"), ErrorCode::BadFrame);
        assert_eq!(code("[1,2]"), ErrorCode::BadFrame);
        assert_eq!(code(r#"{"x":1}"#), ErrorCode::BadFrame);
        assert_eq!(code(r#"{"t":"fly"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"t":"send","id":"a","room":"one","body":"x"}"#), ErrorCode::Invalid);
        assert_eq!(code(r#"{"t":"send","id":"a","room":1}"#), ErrorCode::Invalid);
        assert_eq!(code(r#"{"t":"send","id":"a","room":1,"body":"x","evil":1}"#), ErrorCode::Invalid);
        assert_eq!(code(r#"{"t":"call_moderate","room":1,"pid":"p2","action":"ban"}"#), ErrorCode::Invalid);
        assert_eq!(code(r#"{"t":"call_state","room":1,"media":{"mic":true}}"#), ErrorCode::Invalid);
        let sdp = "x".repeat(MAX_SIGNAL_BYTES);
        assert_eq!(code(&format!(r#"{{"t":"call_signal","room":1,"to":"p","data":{{"sdp":"{sdp}"}}}}"#)), ErrorCode::TooLarge);
        let big = format!(r#"{{"t":"send","id":"big1","room":1,"body":"{}"}}"#, "x".repeat(MAX_BODY_BYTES + 1));
        let e = parse(&big).unwrap_err();
        assert_eq!((e.code, e.reference.as_deref()), (ErrorCode::TooLarge, Some("big1")));
    }

    #[test]
    fn error_frames_carry_the_reference() {
        let e = parse(r#"{"t":"send","id":"abc","room":1}"#).unwrap_err();
        let v: serde_json::Value = serde_json::from_str(&e.frame().to_json()).unwrap();
        assert_eq!(v["t"], "error");
        assert_eq!(v["ref"], "abc");
        assert_eq!(v["code"], "invalid");
    }
}
