//! What the server writes on the WebSocket: one typed frame, [`ServerFrame`]
//! (docs/protocol.md, "Server → client"). No frame text is built by hand
//! anywhere: sessions, calls and the store hand these over, the hub
//! serializes each one once for all its recipients.

use serde::Serialize;
use utoipa::ToSchema;

use super::call::{MediaState, ModAction};
use super::hub::ConnId;
use crate::store::rooms::EventBody;
use crate::store::{Millis, RoomId, Seq, StoreError, UserId};

/// Every frame the server sends, tagged by `t`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ServerFrame {
    /// First frame of every connection.
    Welcome {
        /// Protocol version.
        v: u32,
        user: UserId,
        /// This connection's id (for call participants).
        conn: ConnId,
        /// How often the server pings, ms.
        ping_ms: u64,
        /// Silence after which the server closes, ms.
        idle_ms: u64,
    },
    /// Something happened in a room (stored, with its sequence number).
    Event(Event),
    /// The frame with this `id` is committed.
    Ack(Ack),
    /// The user's read marker moved (from any of their tabs).
    Read { room: RoomId, seq: Seq },
    /// Someone is typing (ephemeral, never stored).
    Typing { room: RoomId, user: UserId },
    /// Too many events were missed, or the client is ahead of the server:
    /// reload that room's history over HTTP; `seq` is its last event now.
    Reset { room: RoomId, seq: Seq },
    /// The user is no longer a member of a room named in `sync`.
    Gone { room: RoomId },
    /// The replay is done; live events follow.
    Synced,
    /// Answer to `ping`.
    Pong {
        id: Option<String>,
        /// Server time, ms since the Unix epoch.
        ts: Millis,
    },
    /// A frame could not be carried out; the connection stays open.
    Error(ErrorFrame),
    /// The whole state of a room's call (see `CallEnded` for the end).
    Call(CallState),
    /// Answer to `call_join`.
    CallJoined {
        room: RoomId,
        call: i64,
        pid: String,
        participants: Vec<Participant>,
    },
    /// Signaling from another participant, relayed unchanged.
    CallSignal {
        room: RoomId,
        from: String,
        #[schema(value_type = Object)]
        data: serde_json::Value,
    },
    /// A room owner or admin muted or removed you.
    CallModerated { room: RoomId, action: ModAction, by: UserId },
}

/// A room event on the wire: the stored event's own fields (`kind` and what
/// goes with it) beside its place in the room's log.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Event {
    pub room: RoomId,
    pub seq: Seq,
    /// Commit time, ms since the Unix epoch.
    pub ts: Millis,
    /// Who caused it.
    pub actor: UserId,
    #[serde(flatten)]
    pub body: EventBody,
}

/// `ack`: for `send`, `seq` of the message and `dup` (an earlier try stored
/// it); for edit, delete and react, `seq` of the new event or `null` when
/// nothing changed.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Ack {
    pub id: String,
    pub room: RoomId,
    pub seq: Option<Seq>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dup: Option<bool>,
}

/// The `call` frame. With `call: null` the call ended (`ended`, `outcome`);
/// otherwise it carries the state. Keep the frame with the highest `v`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum CallState {
    Live {
        room: RoomId,
        call: i64,
        /// When it started, ms since the Unix epoch.
        started: Millis,
        /// Who started it.
        by: UserId,
        /// A direct call still ringing for the other person.
        ring: bool,
        /// Orders the `call` frames of all calls.
        v: u64,
        participants: Vec<Participant>,
    },
    Ended {
        room: RoomId,
        /// Always null: there is no call any more.
        #[schema(value_type = Option<i64>)]
        call: (),
        /// The call that ended.
        ended: i64,
        /// `ended`, `missed` or `declined`.
        outcome: String,
        v: u64,
    },
}

/// One participant of a call.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Participant {
    pub pid: String,
    pub user: UserId,
    /// When they joined, ms since the Unix epoch.
    pub joined: Millis,
    /// Their connection dropped; kept for 30 s.
    pub away: bool,
    pub audio: bool,
    pub video: bool,
    /// The MediaStream id of their shared screen, while sharing.
    pub screen: Option<String>,
    pub hand: bool,
}

impl Participant {
    pub fn new(pid: &str, user: UserId, joined: Millis, away: bool, media: &MediaState) -> Participant {
        Participant {
            pid: pid.to_string(),
            user,
            joined,
            away,
            audio: media.audio,
            video: media.video,
            screen: media.screen.clone(),
            hand: media.hand,
        }
    }
}

/// Error codes of the `error` frame (docs/protocol.md, "Error codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not an object, or no `t`; a binary frame.
    BadFrame,
    /// `t` names no frame type of this protocol version.
    UnknownType,
    /// A field is missing, of the wrong type, unknown, or out of range.
    Invalid,
    /// The message body is over 16 KiB (or call signaling over 64 KiB).
    TooLarge,
    /// The room does not exist or the user is not in it.
    NotMember,
    /// The message (or call participant) does not exist.
    NotFound,
    /// The user may not do this.
    Forbidden,
    /// The room is archived (read-only).
    Archived,
    /// Too many frames; slow down.
    RateLimited,
    /// The user is not in a call in this room (or no call runs there).
    NotInCall,
    /// The call has reached its participant cap.
    CallFull,
    /// The server failed and nothing was stored: retry with the same id.
    Internal,
    /// The server could not tell whether the write was stored (an I/O
    /// error during its commit): retry with the same id; the answer says
    /// (`ack` with `dup: true` when it had been).
    OutcomeUnknown,
}

/// An `error` frame.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ErrorFrame {
    pub code: ErrorCode,
    pub message: String,
    /// The `id` of the frame this answers, when it had one.
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<RoomId>,
}

impl ServerFrame {
    /// The frame's `t`.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerFrame::Welcome { .. } => "welcome",
            ServerFrame::Event(_) => "event",
            ServerFrame::Ack(_) => "ack",
            ServerFrame::Read { .. } => "read",
            ServerFrame::Typing { .. } => "typing",
            ServerFrame::Reset { .. } => "reset",
            ServerFrame::Gone { .. } => "gone",
            ServerFrame::Synced => "synced",
            ServerFrame::Pong { .. } => "pong",
            ServerFrame::Error(_) => "error",
            ServerFrame::Call(_) => "call",
            ServerFrame::CallJoined { .. } => "call_joined",
            ServerFrame::CallSignal { .. } => "call_signal",
            ServerFrame::CallModerated { .. } => "call_moderated",
        }
    }

    /// Every `t` the server sends.
    pub const KINDS: &'static [&'static str] = &[
        "welcome",
        "event",
        "ack",
        "read",
        "typing",
        "reset",
        "gone",
        "synced",
        "pong",
        "error",
        "call",
        "call_joined",
        "call_signal",
        "call_moderated",
    ];

    /// The JSON text of this frame.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server frames serialize")
    }

    pub fn error(code: ErrorCode, message: impl Into<String>) -> ServerFrame {
        ServerFrame::Error(ErrorFrame { code, message: message.into(), reference: None, room: None })
    }

    pub fn ack(id: &str, room: RoomId, seq: Option<Seq>, dup: Option<bool>) -> ServerFrame {
        ServerFrame::Ack(Ack { id: id.to_string(), room, seq, dup })
    }
}

impl ErrorFrame {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorFrame { code, message: message.into(), reference: None, room: None }
    }
    pub fn reference(mut self, id: Option<String>) -> Self {
        self.reference = id;
        self
    }
    pub fn room(mut self, room: RoomId) -> Self {
        self.room = Some(room);
        self
    }
    pub fn frame(self) -> ServerFrame {
        ServerFrame::Error(self)
    }

    /// What the client is told of a store error. Internal errors are logged
    /// and not described.
    pub fn from_store(e: &StoreError) -> Self {
        match e {
            StoreError::NotMember => ErrorFrame::new(ErrorCode::NotMember, "you are not a member of this room"),
            StoreError::NotFound => ErrorFrame::new(ErrorCode::NotFound, "no such message"),
            StoreError::Forbidden(why) => ErrorFrame::new(ErrorCode::Forbidden, *why),
            StoreError::Archived => ErrorFrame::new(ErrorCode::Archived, "this room is archived"),
            StoreError::TooLarge(why) | StoreError::Quota(why) => ErrorFrame::new(ErrorCode::TooLarge, why.clone()),
            StoreError::Invalid(why) => ErrorFrame::new(ErrorCode::Invalid, why.clone()),
            StoreError::Conflict(why) => ErrorFrame::new(ErrorCode::Invalid, *why),
            StoreError::OutcomeUnknown => {
                tracing::error!("chat store: a commit's outcome is unknown");
                ErrorFrame::new(ErrorCode::OutcomeUnknown, "the server cannot tell whether this was stored; retry with the same id")
            }
            other => {
                tracing::error!("chat store error: {other}");
                ErrorFrame::new(ErrorCode::Internal, "server error, nothing was stored; retry with the same id")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kinds_list_is_every_variant_and_each_serializes_with_its_t() {
        let media = MediaState::default();
        let samples = vec![
            ServerFrame::Welcome { v: 1, user: UserId(1), conn: 2, ping_ms: 20_000, idle_ms: 60_000 },
            ServerFrame::Event(Event { room: RoomId(1), seq: Seq(2), ts: 3, actor: UserId(4), body: EventBody::Join { user: UserId(4) } }),
            ServerFrame::ack("a", RoomId(1), Some(Seq(2)), Some(false)),
            ServerFrame::Read { room: RoomId(1), seq: Seq(2) },
            ServerFrame::Typing { room: RoomId(1), user: UserId(2) },
            ServerFrame::Reset { room: RoomId(1), seq: Seq(2) },
            ServerFrame::Gone { room: RoomId(1) },
            ServerFrame::Synced,
            ServerFrame::Pong { id: None, ts: 1 },
            ServerFrame::error(ErrorCode::Invalid, "x"),
            ServerFrame::Call(CallState::Ended { room: RoomId(1), call: (), ended: 3, outcome: "ended".into(), v: 1 }),
            ServerFrame::CallJoined { room: RoomId(1), call: 2, pid: "p".into(), participants: vec![Participant::new("p", UserId(1), 0, false, &media)] },
            ServerFrame::CallSignal { room: RoomId(1), from: "p".into(), data: serde_json::json!({"candidate": null}) },
            ServerFrame::CallModerated { room: RoomId(1), action: ModAction::Mute, by: UserId(2) },
        ];
        let kinds: Vec<&str> = samples.iter().map(ServerFrame::kind).collect();
        assert_eq!(kinds, ServerFrame::KINDS);
        for f in &samples {
            let v: serde_json::Value = serde_json::from_str(&f.to_json()).unwrap();
            assert_eq!(v["t"], f.kind(), "{v}");
        }
        let ended: serde_json::Value = serde_json::from_str(&samples[10].to_json()).unwrap();
        assert!(ended["call"].is_null() && ended["ended"] == 3, "{ended}");
        let event: serde_json::Value = serde_json::from_str(&samples[1].to_json()).unwrap();
        assert_eq!((event["kind"].as_str(), event["user"].as_i64()), (Some("join"), Some(4)), "{event}");
    }

    #[test]
    fn docs_protocol_md_lists_exactly_the_frame_types_the_server_sends() {
        let doc = include_str!("../../../docs/protocol.md");
        let start = doc.find("<!-- server-frames -->").expect("the list's start marker");
        let end = doc.find("<!-- /server-frames -->").expect("the list's end marker");
        let mut listed: Vec<&str> = doc[start..end]
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .filter(|t| *t != "t")
            .collect();
        let mut kinds = ServerFrame::KINDS.to_vec();
        listed.sort_unstable();
        kinds.sort_unstable();
        assert_eq!(listed, kinds, "docs/protocol.md's list of server frames and ServerFrame disagree");
    }

}
