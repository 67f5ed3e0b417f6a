//! Rooms, membership, and the per-room event log.
//!
//! Every change to a room (message, edit, delete, reaction, membership,
//! rename) appends one event with the room's next sequence number in the same
//! transaction as the change. Clients resume by asking for the events after
//! the last sequence they hold (docs/protocol.md). Verbs return the frames
//! to publish; the caller publishes them after commit.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{Millis, RoomId, Seq, StoreError, UserId};
use crate::chat::frames::{Event, ServerFrame};
use crate::rules::{self, RoomKind, RoomRole};

/// Largest message body, in bytes of UTF-8.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// What happened in a room. Stored as JSON in `events.body`; on the wire it
/// is flattened into the `event` frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventBody {
    Message {
        body: String,
        client_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        reply_to: Option<Seq>,
        #[serde(skip_serializing_if = "Vec::is_empty", default)]
        mentions: Vec<UserId>,
        /// Files sent with the message.
        #[serde(skip_serializing_if = "Vec::is_empty", default)]
        files: Vec<super::files::FileRef>,
    },
    Edit { target: Seq, body: String },
    Delete { target: Seq },
    React { target: Seq, emoji: String, on: bool },
    Join { user: UserId },
    Leave { user: UserId },
    Room {
        name: String,
        topic: String,
        visibility: Visibility,
        archived: bool,
        /// Guests who come in read the history from before their arrival.
        #[serde(default)]
        guest_history: bool,
    },
    /// A call began (actor: who started it).
    CallStarted { call: i64 },
    /// A call ended: how long it lasted, who was in it, and how it ended
    /// (`ended`, `missed`: nobody answered, `declined`).
    CallEnded { call: i64, duration_ms: Millis, participants: Vec<UserId>, outcome: String },
    /// The guests' audit trail, for the room's moderators only: a link made
    /// or revoked, a guest who came in by an open link, knocked, was
    /// admitted or denied (actor: who did it).
    Guest {
        action: GuestAction,
        link: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        guest: Option<UserId>,
        /// The guest's name, or the link's label.
        name: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GuestAction {
    LinkCreated,
    LinkRevoked,
    Joined,
    Knocked,
    Admitted,
    Denied,
    /// The guest left by itself (or gave up waiting).
    Left,
    /// Its link expired: the guest's attendance ended.
    Expired,
}

/// A frame to deliver after commit to every connection of `recipients`.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub recipients: Vec<UserId>,
    pub frame: ServerFrame,
    /// Room and sequence of a logged event (`None` for per-user frames), so
    /// a connection can drop what it already delivered during a resume.
    pub event: Option<(RoomId, Seq)>,
}

/// A stored event as the wire's `event` frame. A row whose body no longer
/// parses is an internal error (the log is written only through `EventBody`).
fn event_from_row(room: RoomId, seq: Seq, ts: Millis, actor: UserId, body_json: &str) -> rusqlite::Result<Event> {
    let body = serde_json::from_str(body_json)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, Box::new(e)))?;
    Ok(Event { room, seq, ts, actor, body })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Anyone in the company can find and join it.
    Open,
    /// Only members see it; members add others.
    Invite,
}

impl Visibility {
    fn as_str(self) -> &'static str {
        match self {
            Visibility::Open => "open",
            Visibility::Invite => "invite",
        }
    }
    fn parse(s: &str) -> Visibility {
        if s == "open" { Visibility::Open } else { Visibility::Invite }
    }
}

/// A room as listed for one user.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RoomSummary {
    pub id: RoomId,
    pub kind: String,
    pub name: String,
    pub topic: String,
    pub visibility: Visibility,
    pub archived: bool,
    pub last_seq: Seq,
    pub read_seq: Seq,
    pub unread: i64,
    pub mentions: i64,
    pub member_count: i64,
    pub role: String,
    /// For direct conversations: the other person.
    pub peer: Option<UserId>,
    /// Guests read the history from before they came in.
    pub guest_history: bool,
}

/// One member of a room.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Member {
    pub user: UserId,
    pub role: String,
    pub read_seq: Seq,
}

/// A message as returned by history.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Message {
    pub seq: Seq,
    pub sender: UserId,
    pub body: String,
    pub client_id: String,
    pub reply_to: Option<Seq>,
    pub ts: Millis,
    pub edited: Option<Millis>,
    pub deleted: bool,
    /// emoji → users who reacted with it.
    pub reactions: BTreeMap<String, Vec<UserId>>,
    /// Files sent with the message.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<super::files::FileRef>,
    /// For a call record (started/ended) shown in the timeline: the event
    /// body; `body` is empty then.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub call: Option<serde_json::Value>,
    /// For an entry of the guests' audit trail (moderators only): the event
    /// body (`kind: "guest"`); `body` is empty then.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub audit: Option<serde_json::Value>,
}

/// Result of posting: stored now, or already stored by an earlier try.
#[derive(Debug, Clone, PartialEq)]
pub enum PostOutcome {
    Stored { seq: Seq, published: Published },
    Duplicate { room: RoomId, seq: Seq },
}

pub(crate) struct RoomRow {
    pub kind: RoomKind,
    pub name: String,
    pub topic: String,
    pub visibility: Visibility,
    pub archived: bool,
    pub last_seq: Seq,
    pub guest_history: bool,
}

pub(crate) fn room_row(conn: &Connection, room: RoomId) -> Result<RoomRow, StoreError> {
    conn.query_row("SELECT kind, name, topic, visibility, archived, last_seq, guest_history FROM rooms WHERE id = ?1", [room], |r| {
        Ok(RoomRow {
            kind: RoomKind::parse(&r.get::<_, String>(0)?),
            name: r.get(1)?,
            topic: r.get(2)?,
            visibility: Visibility::parse(&r.get::<_, String>(3)?),
            archived: r.get(4)?,
            last_seq: r.get(5)?,
            guest_history: r.get(6)?,
        })
    })
    .optional()?
    .ok_or(StoreError::NotFound)
}

/// The member's role in the room, or `NotMember`.
pub fn member_role(conn: &Connection, room: RoomId, user: UserId) -> Result<RoomRole, StoreError> {
    conn.query_row("SELECT role FROM members WHERE room_id = ?1 AND user_id = ?2", (room, user), |r| r.get::<_, String>(0))
        .optional()?
        .map(|r| RoomRole::parse(&r))
        .ok_or(StoreError::NotMember)
}

/// `user` as the rules see them in `room`: an admin needs no membership.
pub(crate) fn actor_in(conn: &Connection, room: RoomId, user: UserId, is_admin: bool) -> Result<rules::Actor, StoreError> {
    match member_role(conn, room, user) {
        Ok(role) => Ok(rules::Actor { role: Some(role), admin: is_admin }),
        Err(StoreError::NotMember) if is_admin => Ok(rules::Actor { role: None, admin: true }),
        Err(e) => Err(e),
    }
}

pub fn members_of(conn: &Connection, room: RoomId) -> Result<Vec<UserId>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT user_id FROM members WHERE room_id = ?1")?;
    let rows = stmt.query_map([room], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Appends an event to the room's log and returns the frame for `recipients`.
fn append_event(
    conn: &Connection,
    room: RoomId,
    actor: UserId,
    now: Millis,
    body: &EventBody,
    recipients: Vec<UserId>,
) -> Result<(Seq, Published), StoreError> {
    let seq: Seq = conn.query_row(
        "UPDATE rooms SET last_seq = last_seq + 1 WHERE id = ?1 RETURNING last_seq",
        [room],
        |r| r.get(0),
    )?;
    let json = serde_json::to_string(body).expect("event bodies serialize");
    conn.prepare_cached("INSERT INTO events(room_id, seq, actor, ts_ms, body) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![room, seq, actor, now, json])?;
    let frame = ServerFrame::Event(Event { room, seq, ts: now, actor, body: body.clone() });
    Ok((seq, Published { recipients, frame, event: Some((room, seq)) }))
}

pub(crate) fn append_to_members(
    conn: &Connection,
    room: RoomId,
    actor: UserId,
    now: Millis,
    body: &EventBody,
) -> Result<(Seq, Published), StoreError> {
    let recipients = members_of(conn, room)?;
    append_event(conn, room, actor, now, body, recipients)
}

/// The members who moderate `room`: its owners and the box's admins in it.
pub(crate) fn moderators_of(conn: &Connection, room: RoomId) -> Result<Vec<UserId>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT m.user_id FROM members m JOIN users u ON u.id = m.user_id
         WHERE m.room_id = ?1 AND (m.role = 'owner' OR u.role = 'admin') AND u.disabled = 0",
    )?;
    let rows = stmt.query_map([room], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn moderates(conn: &Connection, room: RoomId, user: UserId) -> Result<bool, StoreError> {
    Ok(moderators_of(conn, room)?.contains(&user))
}

/// An entry of the guests' audit trail, logged in the room and sent to its
/// moderators only.
pub(crate) fn append_audit(conn: &Connection, room: RoomId, actor: UserId, now: Millis, body: &EventBody) -> Result<Published, StoreError> {
    let recipients = moderators_of(conn, room)?;
    Ok(append_event(conn, room, actor, now, body, recipients)?.1)
}

/// An event about message `target` (an edit, a delete, a reaction): only
/// to the members who can read that message (a guest who came in after it
/// cannot).
fn append_to_readers(
    conn: &Connection,
    room: RoomId,
    actor: UserId,
    now: Millis,
    body: &EventBody,
    target: Seq,
) -> Result<(Seq, Published), StoreError> {
    let mut stmt = conn.prepare_cached("SELECT user_id FROM members WHERE room_id = ?1 AND since_seq < ?2")?;
    let recipients = stmt.query_map((room, target), |r| r.get(0))?.collect::<Result<_, _>>()?;
    append_event(conn, room, actor, now, body, recipients)
}

fn check_room_name(name: &str) -> Result<String, StoreError> {
    let t = name.trim();
    if t.is_empty() || t.chars().count() > 80 || t.chars().any(char::is_control) {
        return Err(StoreError::Invalid("room name: 1 to 80 characters, no control characters".into()));
    }
    Ok(t.to_string())
}

fn check_topic(topic: &str) -> Result<String, StoreError> {
    let t = topic.trim();
    if t.chars().count() > 500 {
        return Err(StoreError::Invalid("topic: at most 500 characters".into()));
    }
    Ok(t.to_string())
}

/// Someone who may be put in a room: an enabled member of the box. A guest
/// comes only into its link's room, and only by its link (and a moderator,
/// for a knock link): never added.
fn check_enabled_user(conn: &Connection, user: UserId) -> Result<(), StoreError> {
    let row: Option<(bool, bool)> = conn
        .query_row("SELECT disabled, guest_link IS NOT NULL FROM users WHERE id = ?1", [user], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match row {
        Some((false, false)) => Ok(()),
        Some((_, true)) => Err(StoreError::Forbidden("a guest comes in by its link only")),
        _ => Err(StoreError::Invalid(format!("user {user} does not exist or is disabled"))),
    }
}

fn insert_member(conn: &Connection, room: RoomId, user: UserId, role: RoomRole, now: Millis) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO members(room_id, user_id, role, joined_ms) VALUES (?1, ?2, ?3, ?4)",
        params![room, user, role.as_str(), now],
    )?;
    Ok(())
}

/// Creates a group room with `creator` as owner and `members` invited.
pub fn create_group(
    conn: &Connection,
    creator: UserId,
    name: &str,
    topic: &str,
    visibility: Visibility,
    members: &[UserId],
    now: Millis,
) -> Result<(RoomId, Vec<Published>), StoreError> {
    let name = check_room_name(name)?;
    let topic = check_topic(topic)?;
    conn.execute(
        "INSERT INTO rooms(kind, name, topic, visibility, created_by, created_ms) VALUES ('group', ?1, ?2, ?3, ?4, ?5)",
        params![name, topic, visibility.as_str(), creator, now],
    )?;
    let room = RoomId(conn.last_insert_rowid());
    insert_member(conn, room, creator, RoomRole::Owner, now)?;
    let mut published = vec![append_to_members(conn, room, creator, now, &EventBody::Join { user: creator })?.1];
    for &m in members {
        if m == creator {
            continue;
        }
        check_enabled_user(conn, m)?;
        if member_role(conn, room, m).is_ok() {
            continue;
        }
        insert_member(conn, room, m, RoomRole::Member, now)?;
        published.push(append_to_members(conn, room, creator, now, &EventBody::Join { user: m })?.1);
    }
    Ok((room, published))
}

/// Finds or creates the direct conversation between two users.
pub fn open_direct(conn: &Connection, a: UserId, b: UserId, now: Millis) -> Result<(RoomId, Vec<Published>), StoreError> {
    if a == b {
        return Err(StoreError::Invalid("a direct conversation needs two different people".into()));
    }
    check_enabled_user(conn, b)?;
    let key = format!("{}:{}", a.min(b), a.max(b));
    let existing: Option<RoomId> =
        conn.query_row("SELECT id FROM rooms WHERE direct_key = ?1", [&key], |r| r.get(0)).optional()?;
    if let Some(room) = existing {
        return Ok((room, Vec::new()));
    }
    conn.execute(
        "INSERT INTO rooms(kind, name, visibility, direct_key, created_by, created_ms) VALUES ('direct', '', 'invite', ?1, ?2, ?3)",
        params![key, a, now],
    )?;
    let room = RoomId(conn.last_insert_rowid());
    insert_member(conn, room, a, RoomRole::Owner, now)?;
    insert_member(conn, room, b, RoomRole::Owner, now)?;
    let p1 = append_to_members(conn, room, a, now, &EventBody::Join { user: a })?.1;
    let p2 = append_to_members(conn, room, a, now, &EventBody::Join { user: b })?.1;
    Ok((room, vec![p1, p2]))
}

pub(crate) fn check_writable(conn: &Connection, room: RoomId, user: UserId) -> Result<(RoomRole, RoomRow), StoreError> {
    let row = room_row(conn, room).map_err(|e| match e {
        StoreError::NotFound => StoreError::NotMember,
        e => e,
    })?;
    let role = member_role(conn, room, user)?;
    if row.archived {
        return Err(StoreError::Archived);
    }
    Ok((role, row))
}

/// Client ids: 1–64 of `A-Z a-z 0-9 _ -`.
pub fn check_client_id(id: &str) -> Result<(), StoreError> {
    if (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        Ok(())
    } else {
        Err(StoreError::Invalid("id: 1 to 64 characters among A-Z, a-z, 0-9, '_', '-'".into()))
    }
}

/// Message bodies: not blank, at most [`MAX_BODY_BYTES`].
pub fn check_body(body: &str) -> Result<(), StoreError> {
    if body.trim().is_empty() {
        return Err(StoreError::Invalid("body: empty message".into()));
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(StoreError::TooLarge(format!(
            "body: {} bytes, the limit is {MAX_BODY_BYTES}",
            body.len()
        )));
    }
    Ok(())
}

/// `@username` mentions that name members of the room (the names are
/// found by [`rules::mentioned_names`]), at most 50.
fn mentions(conn: &Connection, room: RoomId, body: &str) -> Result<Vec<UserId>, StoreError> {
    let mut out = Vec::new();
    let mut stmt = conn
        .prepare_cached("SELECT u.id FROM users u JOIN members m ON m.user_id = u.id AND m.room_id = ?1 WHERE u.username = ?2")?;
    for name in rules::mentioned_names(body, 200) {
        let id: Option<UserId> = stmt.query_row(params![room, name], |r| r.get(0)).optional()?;
        if let Some(id) = id.filter(|id| !out.contains(id)) {
            out.push(id);
            if out.len() >= 50 {
                break;
            }
        }
    }
    Ok(out)
}

/// Stores a message unless this sender already stored one with this client
/// id (a retry), in which case the earlier sequence number is returned.
pub fn post_message(
    conn: &Connection,
    room: RoomId,
    sender: UserId,
    client_id: &str,
    body: &str,
    reply_to: Option<Seq>,
    now: Millis,
) -> Result<PostOutcome, StoreError> {
    post_message_with_files(conn, room, sender, client_id, body, reply_to, &[], now)
}

/// [`post_message`] carrying finished uploads of the sender as its files
/// (then the text may be empty).
#[allow(clippy::too_many_arguments)]
pub fn post_message_with_files(
    conn: &Connection,
    room: RoomId,
    sender: UserId,
    client_id: &str,
    body: &str,
    reply_to: Option<Seq>,
    uploads: &[String],
    now: Millis,
) -> Result<PostOutcome, StoreError> {
    check_client_id(client_id)?;
    let earlier: Option<(RoomId, Seq)> = conn
        .prepare_cached("SELECT room_id, seq FROM messages WHERE sender = ?1 AND client_id = ?2")?
        .query_row(params![sender, client_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some((room, seq)) = earlier {
        return Ok(PostOutcome::Duplicate { room, seq });
    }
    if uploads.is_empty() || !body.is_empty() {
        check_body(body)?;
    }
    check_writable(conn, room, sender)?;
    if let Some(target) = reply_to {
        message_id(conn, room, target)?;
    }
    let mentions = mentions(conn, room, body)?;
    // the sequence number the message will take, for its attachments
    let next = Seq(conn.query_row("SELECT last_seq + 1 FROM rooms WHERE id = ?1", [room], |r| r.get(0))?);
    let files = super::files::attach(conn, room, next, sender, uploads, now)?;
    let event = EventBody::Message { body: body.to_string(), client_id: client_id.to_string(), reply_to, mentions, files };
    let (seq, published) = append_to_members(conn, room, sender, now, &event)?;
    debug_assert_eq!(seq, next);
    conn.prepare_cached(
        "INSERT INTO messages(room_id, seq, sender, client_id, body, reply_to, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![room, seq, sender, client_id, body, reply_to, now])?;
    Ok(PostOutcome::Stored { seq, published })
}

fn message_id(conn: &Connection, room: RoomId, seq: Seq) -> Result<(i64, UserId, bool, String), StoreError> {
    conn.query_row(
        "SELECT id, sender, deleted, body FROM messages WHERE room_id = ?1 AND seq = ?2",
        (room, seq),
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .optional()?
    .ok_or(StoreError::NotFound)
}

/// Edits one's own message. Setting the same text again changes nothing.
pub fn edit_message(
    conn: &Connection,
    room: RoomId,
    user: UserId,
    target: Seq,
    body: &str,
    now: Millis,
) -> Result<Option<Published>, StoreError> {
    check_body(body)?;
    check_writable(conn, room, user)?;
    let (id, sender, deleted, old) = message_id(conn, room, target)?;
    rules::may_edit_message(sender == user, deleted).map_err(StoreError::Forbidden)?;
    if old == body {
        return Ok(None);
    }
    conn.execute("UPDATE messages SET body = ?2, edited_ms = ?3 WHERE id = ?1", params![id, body, now])?;
    let event = EventBody::Edit { target, body: body.to_string() };
    Ok(Some(append_to_readers(conn, room, user, now, &event, target)?.1))
}

/// Deletes a message (author, room owner or admin). Deleting twice is a no-op.
pub fn delete_message(
    conn: &Connection,
    room: RoomId,
    user: UserId,
    is_admin: bool,
    target: Seq,
    now: Millis,
) -> Result<Option<Published>, StoreError> {
    let (role, _) = check_writable(conn, room, user)?;
    let (id, sender, deleted, _) = message_id(conn, room, target)?;
    let who = rules::Actor { role: Some(role), admin: is_admin };
    rules::may_delete_message(sender == user, who).map_err(StoreError::Forbidden)?;
    if deleted {
        return Ok(None);
    }
    conn.execute("UPDATE messages SET body = '', deleted = 1 WHERE id = ?1", [id])?;
    conn.execute("DELETE FROM reactions WHERE message_id = ?1", [id])?;
    super::files::drop_message_files(conn, room, target)?;
    Ok(Some(append_to_readers(conn, room, user, now, &EventBody::Delete { target }, target)?.1))
}

/// Emoji reactions: 1–32 bytes, no whitespace or control characters.
pub fn check_emoji(emoji: &str) -> Result<(), StoreError> {
    if emoji.is_empty() || emoji.len() > 32 || emoji.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(StoreError::Invalid("emoji: 1 to 32 bytes, no spaces".into()));
    }
    Ok(())
}

/// Adds or removes a reaction. Repeating the same state is a no-op.
pub fn react(
    conn: &Connection,
    room: RoomId,
    user: UserId,
    target: Seq,
    emoji: &str,
    on: bool,
    now: Millis,
) -> Result<Option<Published>, StoreError> {
    check_emoji(emoji)?;
    check_writable(conn, room, user)?;
    let (id, _, deleted, _) = message_id(conn, room, target)?;
    if deleted {
        return Err(StoreError::Forbidden("the message was deleted"));
    }
    let changed = if on {
        let distinct: i64 = conn.query_row(
            "SELECT COUNT(DISTINCT emoji) FROM reactions WHERE message_id = ?1 AND emoji != ?2",
            params![id, emoji],
            |r| r.get(0),
        )?;
        if distinct >= 20 {
            return Err(StoreError::Invalid("at most 20 different reactions per message".into()));
        }
        conn.execute(
            "INSERT OR IGNORE INTO reactions(message_id, user_id, emoji) VALUES (?1, ?2, ?3)",
            params![id, user, emoji],
        )?
    } else {
        conn.execute(
            "DELETE FROM reactions WHERE message_id = ?1 AND user_id = ?2 AND emoji = ?3",
            params![id, user, emoji],
        )?
    };
    if changed == 0 {
        return Ok(None);
    }
    let event = EventBody::React { target, emoji: emoji.to_string(), on };
    Ok(Some(append_to_readers(conn, room, user, now, &event, target)?.1))
}

/// Moves the user's read marker forward (never back). Returns the frame for
/// the user's own connections when it moved.
pub fn mark_read(conn: &Connection, room: RoomId, user: UserId, seq: Seq) -> Result<Option<Published>, StoreError> {
    member_role(conn, room, user)?;
    let n = conn.execute(
        "UPDATE members SET read_seq = MIN(?3, (SELECT last_seq FROM rooms WHERE id = ?1))
         WHERE room_id = ?1 AND user_id = ?2 AND read_seq < ?3",
        params![room, user, seq],
    )?;
    if n == 0 {
        return Ok(None);
    }
    let now_read: Seq =
        conn.query_row("SELECT read_seq FROM members WHERE room_id = ?1 AND user_id = ?2", (room, user), |r| r.get(0))?;
    Ok(Some(Published { recipients: vec![user], frame: ServerFrame::Read { room, seq: now_read }, event: None }))
}

/// Changes to a group room's settings; `None` keeps a field.
#[derive(Debug, Default, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoomChange {
    pub name: Option<String>,
    pub topic: Option<String>,
    pub visibility: Option<Visibility>,
    pub archived: Option<bool>,
    /// Guests who come in read the room's earlier history.
    pub guest_history: Option<bool>,
}

/// Renames, re-topics, changes visibility or (un)archives a group room.
/// Owners and admins only.
pub fn update_room(
    conn: &Connection,
    room: RoomId,
    user: UserId,
    is_admin: bool,
    change: &RoomChange,
    now: Millis,
) -> Result<Option<Published>, StoreError> {
    let row = room_row(conn, room)?;
    let who = actor_in(conn, room, user, is_admin)?;
    rules::may_change_room(row.kind, who).map_err(StoreError::Forbidden)?;
    if row.archived && change.archived != Some(false) {
        return Err(StoreError::Archived);
    }
    let name = match &change.name {
        Some(n) => check_room_name(n)?,
        None => row.name.clone(),
    };
    let topic = match &change.topic {
        Some(t) => check_topic(t)?,
        None => row.topic.clone(),
    };
    let visibility = change.visibility.unwrap_or(row.visibility);
    let archived = change.archived.unwrap_or(row.archived);
    let guest_history = change.guest_history.unwrap_or(row.guest_history);
    if name == row.name
        && topic == row.topic
        && visibility == row.visibility
        && archived == row.archived
        && guest_history == row.guest_history
    {
        return Ok(None);
    }
    conn.execute(
        "UPDATE rooms SET name = ?2, topic = ?3, visibility = ?4, archived = ?5, guest_history = ?6 WHERE id = ?1",
        params![room, name, topic, visibility.as_str(), archived, guest_history],
    )?;
    let event = EventBody::Room { name, topic, visibility, archived, guest_history };
    Ok(Some(append_to_members(conn, room, user, now, &event)?.1))
}

/// Adds `target` to a group room. Any member may add people; anyone may add
/// themselves to an open room (join).
pub fn add_member(
    conn: &Connection,
    room: RoomId,
    actor: UserId,
    target: UserId,
    now: Millis,
) -> Result<Option<Published>, StoreError> {
    let row = room_row(conn, room)?;
    rules::may_add_member(row.kind).map_err(StoreError::Forbidden)?;
    if row.archived {
        return Err(StoreError::Archived);
    }
    let self_join_open = actor == target && row.visibility == Visibility::Open;
    if !self_join_open {
        member_role(conn, room, actor).map_err(|_| {
            if row.visibility == Visibility::Open { StoreError::NotMember } else { StoreError::NotFound }
        })?;
    }
    check_enabled_user(conn, target)?;
    if member_role(conn, room, target).is_ok() {
        return Ok(None);
    }
    insert_member(conn, room, target, RoomRole::Member, now)?;
    Ok(Some(append_to_members(conn, room, actor, now, &EventBody::Join { user: target })?.1))
}

/// Puts a newcomer in the company-wide room (the oldest open group room),
/// if there is one.
pub fn join_default_room(conn: &Connection, user: UserId, now: Millis) -> Result<Vec<Published>, StoreError> {
    let general: Option<RoomId> = conn
        .query_row(
            "SELECT id FROM rooms WHERE kind = 'group' AND visibility = 'open' AND archived = 0 ORDER BY id LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    match general {
        Some(room) => Ok(add_member(conn, room, user, user, now)?.into_iter().collect()),
        None => Ok(Vec::new()),
    }
}

/// Removes `target` from a group room: oneself (leave), or anyone by an
/// owner or admin. The removed user receives the leave event too.
pub fn remove_member(
    conn: &Connection,
    room: RoomId,
    actor: UserId,
    is_admin: bool,
    target: UserId,
    now: Millis,
) -> Result<Option<Published>, StoreError> {
    let row = room_row(conn, room)?;
    let who = if actor == target { rules::Actor { role: None, admin: is_admin } } else { actor_in(conn, room, actor, is_admin)? };
    rules::may_remove_member(row.kind, actor == target, who).map_err(StoreError::Forbidden)?;
    if member_role(conn, room, target).is_err() {
        return Ok(None);
    }
    let recipients = members_of(conn, room)?;
    let (_, published) = append_event(conn, room, actor, now, &EventBody::Leave { user: target }, recipients)?;
    conn.execute("DELETE FROM members WHERE room_id = ?1 AND user_id = ?2", (room, target))?;
    // a guest removed from its one room has left for good
    let guest: bool = conn.query_row("SELECT guest_link IS NOT NULL FROM users WHERE id = ?1", [target], |r| r.get(0))?;
    if guest {
        super::guests::close_attendance(conn, target, now)?;
    }
    // A room never stays without an owner while it has members.
    let owners: i64 =
        conn.query_row("SELECT COUNT(*) FROM members WHERE room_id = ?1 AND role = 'owner'", [room], |r| r.get(0))?;
    if owners == 0 {
        conn.execute(
            "UPDATE members SET role = 'owner' WHERE room_id = ?1 AND user_id =
             (SELECT user_id FROM members WHERE room_id = ?1 ORDER BY joined_ms, user_id LIMIT 1)",
            [room],
        )?;
    }
    Ok(Some(published))
}

const SUMMARY_SQL: &str = "
    SELECT r.id, r.kind, r.name, r.topic, r.visibility, r.archived, r.last_seq, m.read_seq, m.role,
        (SELECT COUNT(*) FROM messages x WHERE x.room_id = r.id AND x.seq > m.read_seq
            AND x.sender != m.user_id AND x.deleted = 0),
        (SELECT COUNT(*) FROM members y WHERE y.room_id = r.id),
        (SELECT user_id FROM members z WHERE z.room_id = r.id AND r.kind = 'direct' AND z.user_id != m.user_id),
        (SELECT COUNT(*) FROM events e WHERE e.room_id = r.id AND e.seq > m.read_seq
            AND e.actor != m.user_id AND e.body LIKE '{\"kind\":\"message\"%'
            AND EXISTS (SELECT 1 FROM json_each(e.body, '$.mentions') j WHERE j.value = m.user_id)),
        r.guest_history
    FROM members m JOIN rooms r ON r.id = m.room_id
    WHERE m.user_id = ?1";

fn summary_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RoomSummary> {
    Ok(RoomSummary {
        id: r.get(0)?,
        kind: r.get(1)?,
        name: r.get(2)?,
        topic: r.get(3)?,
        visibility: Visibility::parse(&r.get::<_, String>(4)?),
        archived: r.get(5)?,
        last_seq: r.get(6)?,
        read_seq: r.get(7)?,
        role: r.get(8)?,
        unread: r.get(9)?,
        member_count: r.get(10)?,
        peer: r.get(11)?,
        mentions: r.get(12)?,
        guest_history: r.get(13)?,
    })
}

/// The rooms `user` belongs to, most recently active first.
pub fn list_rooms(conn: &Connection, user: UserId) -> Result<Vec<RoomSummary>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("{SUMMARY_SQL} ORDER BY r.archived, r.last_seq DESC, r.id"))?;
    let rows = stmt.query_map([user], summary_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One room as seen by a member.
pub fn room_summary(conn: &Connection, room: RoomId, user: UserId) -> Result<RoomSummary, StoreError> {
    conn.prepare_cached(&format!("{SUMMARY_SQL} AND r.id = ?2"))?
        .query_row((user, room), summary_from_row)
        .optional()?
        .ok_or(StoreError::NotMember)
}

/// An open room that a user can join.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct OpenRoom {
    pub id: RoomId,
    pub name: String,
    pub topic: String,
    pub member_count: i64,
}

/// Open, unarchived group rooms the user is not in.
pub fn browse_open(conn: &Connection, user: UserId) -> Result<Vec<OpenRoom>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT r.id, r.name, r.topic, (SELECT COUNT(*) FROM members y WHERE y.room_id = r.id)
         FROM rooms r WHERE r.kind = 'group' AND r.visibility = 'open' AND r.archived = 0
           AND NOT EXISTS (SELECT 1 FROM members m WHERE m.room_id = r.id AND m.user_id = ?1)
         ORDER BY r.name COLLATE NOCASE",
    )?;
    let rows = stmt.query_map([user], |r| {
        Ok(OpenRoom { id: r.get(0)?, name: r.get(1)?, topic: r.get(2)?, member_count: r.get(3)? })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn members(conn: &Connection, room: RoomId, user: UserId) -> Result<Vec<Member>, StoreError> {
    member_role(conn, room, user)?;
    let mut stmt = conn.prepare("SELECT user_id, role, read_seq FROM members WHERE room_id = ?1 ORDER BY joined_ms")?;
    let rows = stmt.query_map([room], |r| Ok(Member { user: r.get(0)?, role: r.get(1)?, read_seq: r.get(2)? }))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Up to `limit` messages before sequence `before` (newest page when
/// `None`), oldest first, with `true` when older ones exist.
pub fn history(
    conn: &Connection,
    room: RoomId,
    user: UserId,
    before: Option<Seq>,
    limit: u32,
) -> Result<(Vec<Message>, bool), StoreError> {
    member_role(conn, room, user)?;
    let floor = history_floor(conn, room, user)?;
    let limit = limit.clamp(1, 200);
    let mut stmt = conn.prepare_cached(
        "SELECT id, seq, sender, body, client_id, reply_to, created_ms, edited_ms, deleted FROM messages
         WHERE room_id = ?1 AND seq < ?2 AND seq > ?4 ORDER BY seq DESC LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![room, before.unwrap_or(Seq(i64::MAX)), limit + 1, floor], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            Message {
                seq: r.get(1)?,
                sender: r.get(2)?,
                body: r.get(3)?,
                client_id: r.get(4)?,
                reply_to: r.get(5)?,
                ts: r.get(6)?,
                edited: r.get(7)?,
                deleted: r.get(8)?,
                reactions: BTreeMap::new(),
                files: Vec::new(),
                call: None,
                audit: None,
            },
        ))
    })?;
    let mut msgs: Vec<(i64, Message)> = rows.collect::<Result<_, _>>()?;
    let more = msgs.len() > limit as usize;
    msgs.truncate(limit as usize);
    msgs.reverse();
    let mut react = conn.prepare_cached("SELECT emoji, user_id FROM reactions WHERE message_id = ?1 ORDER BY rowid")?;
    let mut out = Vec::with_capacity(msgs.len());
    for (id, mut m) in msgs {
        let rows = react.query_map([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, UserId>(1)?)))?;
        for row in rows {
            let (emoji, uid) = row?;
            m.reactions.entry(emoji).or_default().push(uid);
        }
        if !m.deleted {
            m.files = super::files::message_files(conn, room, m.seq)?;
        }
        out.push(m);
    }
    // Call records (and, for moderators, the guests' audit trail) in the
    // same stretch of the log go in the timeline too.
    let from = if more { out.first().map_or(floor, |m| m.seq) } else { floor };
    let to = before.unwrap_or(Seq(i64::MAX));
    let audit = moderates(conn, room, user)?;
    let mut calls = conn.prepare_cached(
        "SELECT seq, actor, ts_ms, body FROM events WHERE room_id = ?1 AND seq > ?2 AND seq < ?3
         AND (body LIKE '{\"kind\":\"call_started\"%' OR body LIKE '{\"kind\":\"call_ended\"%'
              OR (?4 AND body LIKE '{\"kind\":\"guest\"%')) ORDER BY seq",
    )?;
    let rows = calls.query_map(params![room, from, to, audit], |r| {
        let body: Option<serde_json::Value> = serde_json::from_str(&r.get::<_, String>(3)?).ok();
        let is_audit = body.as_ref().and_then(|b| b["kind"].as_str()) == Some("guest");
        let (call, audit) = if is_audit { (None, body) } else { (body, None) };
        Ok(Message {
            seq: r.get(0)?,
            sender: r.get(1)?,
            body: String::new(),
            client_id: String::new(),
            reply_to: None,
            ts: r.get(2)?,
            edited: None,
            deleted: false,
            reactions: BTreeMap::new(),
            files: Vec::new(),
            call,
            audit,
        })
    })?;
    let mut calls: Vec<Message> = rows.collect::<Result<_, _>>()?;
    if !calls.is_empty() {
        out.append(&mut calls);
        out.sort_by_key(|m| m.seq);
    }
    Ok((out, more))
}

/// What a resuming connection gets for one room (docs/protocol.md, `sync`).
#[derive(Debug, Clone, PartialEq)]
pub enum Resume {
    /// Every event after the given sequence, in order (perhaps none).
    Events(Vec<Event>),
    /// More than the limit are missing, or the client holds a sequence the
    /// room never reached (a restored database): reload, from `last`.
    Reset { last: Seq },
    /// The user is not (or no longer) a member.
    Gone,
}

/// The events of `room` after `since`, at most `limit` of them.
pub fn resume(conn: &Connection, room: RoomId, user: UserId, since: Seq, limit: u32) -> Result<Resume, StoreError> {
    if member_role(conn, room, user).is_err() {
        return Ok(Resume::Gone);
    }
    let last: Seq = conn.query_row("SELECT last_seq FROM rooms WHERE id = ?1", [room], |r| r.get(0))?;
    if since > last {
        return Ok(Resume::Reset { last });
    }
    let floor = history_floor(conn, room, user)?;
    let since = since.max(floor);
    let mut stmt = conn.prepare_cached(
        "SELECT seq, actor, ts_ms, body FROM events WHERE room_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![room, since, limit + 1], |r| {
        event_from_row(room, r.get(0)?, r.get(2)?, r.get(1)?, &r.get::<_, String>(3)?)
    })?;
    let mut events: Vec<Event> = rows.collect::<Result<_, _>>()?;
    if events.len() > limit as usize {
        return Ok(Resume::Reset { last });
    }
    // nothing about messages from before a guest came in; the guests'
    // audit trail for moderators only
    let audit = moderates(conn, room, user)?;
    events.retain(|e| match &e.body {
        EventBody::Edit { target, .. } | EventBody::Delete { target } | EventBody::React { target, .. } => *target > floor,
        EventBody::Guest { .. } => audit,
        _ => true,
    });
    Ok(Resume::Events(events))
}

/// The sequence after which `user` may read `room`: 0 for members, the
/// room's sequence at admission for guests.
pub(crate) fn history_floor(conn: &Connection, room: RoomId, user: UserId) -> Result<Seq, StoreError> {
    Ok(conn
        .query_row("SELECT since_seq FROM members WHERE room_id = ?1 AND user_id = ?2", (room, user), |r| r.get(0))
        .optional()?
        .unwrap_or(Seq::ZERO))
}

/// The rooms `user` belongs to, with each one's last sequence.
pub fn member_rooms(conn: &Connection, user: UserId) -> Result<Vec<(RoomId, Seq)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT r.id, r.last_seq FROM members m JOIN rooms r ON r.id = m.room_id WHERE m.user_id = ?1 ORDER BY r.id",
    )?;
    let rows = stmt.query_map([user], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One search hit.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SearchHit {
    pub room: RoomId,
    pub seq: Seq,
    pub sender: UserId,
    pub ts: Millis,
    /// Excerpt; matched terms are wrapped in U+0002 … U+0003 for the client
    /// to highlight without interpreting any markup.
    pub snippet: String,
}

/// Turns what a person typed into a safe FTS5 query: every word quoted (so
/// FTS syntax characters are literal), all words required, the last one as
/// a prefix.
pub fn fts_query(input: &str) -> Option<String> {
    let words: Vec<String> = input
        .split_whitespace()
        .map(|w| w.chars().filter(|c| *c != '"' && !c.is_control()).collect::<String>())
        .filter(|w| !w.is_empty())
        .take(16)
        .map(|w| format!("\"{w}\""))
        .collect();
    if words.is_empty() {
        return None;
    }
    let mut q = words.join(" ");
    q.push('*');
    Some(q)
}

/// Full-text search over the rooms the user belongs to, best matches first.
pub fn search(conn: &Connection, user: UserId, query: &str, room: Option<RoomId>) -> Result<Vec<SearchHit>, StoreError> {
    let Some(q) = fts_query(query) else {
        return Ok(Vec::new());
    };
    let mut stmt = conn.prepare_cached(
        "SELECT m.room_id, m.seq, m.sender, m.created_ms,
                snippet(messages_fts, 0, char(2), char(3), '…', 16)
         FROM messages_fts
         JOIN messages m ON m.id = messages_fts.rowid
         JOIN members mb ON mb.room_id = m.room_id AND mb.user_id = ?1
         WHERE messages_fts MATCH ?2 AND m.deleted = 0 AND m.seq > mb.since_seq AND (?3 IS NULL OR m.room_id = ?3)
         ORDER BY rank LIMIT 50",
    )?;
    let rows = stmt.query_map(params![user, q, room], |r| {
        Ok(SearchHit { room: r.get(0)?, seq: r.get(1)?, sender: r.get(2)?, ts: r.get(3)?, snippet: r.get(4)? })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_conn;
    use crate::store::users::{Role, create_user};

    fn setup() -> (Connection, UserId, UserId, UserId) {
        let c = test_conn();
        let a = create_user(&c, "alice", "Alice", "h", Role::Admin, 1).unwrap().id;
        let b = create_user(&c, "bob", "Bob", "h", Role::User, 1).unwrap().id;
        let e = create_user(&c, "eve", "Eve", "h", Role::User, 1).unwrap().id;
        (c, a, b, e)
    }

    fn post(c: &Connection, room: RoomId, who: UserId, cid: &str, body: &str) -> Seq {
        match post_message(c, room, who, cid, body, None, 5).unwrap() {
            PostOutcome::Stored { seq, .. } => seq,
            other => panic!("not stored: {other:?}"),
        }
    }

    #[test]
    fn sequence_numbers_are_per_room_and_gapless() {
        let (c, a, b, _) = setup();
        let (r1, p) = create_group(&c, a, "General", "", Visibility::Open, &[b], 2).unwrap();
        assert_eq!(p.len(), 2);
        let (r2, _) = create_group(&c, a, "Other", "", Visibility::Open, &[], 2).unwrap();
        assert_eq!(post(&c, r1, a, "m1", "hello"), Seq(3));
        assert_eq!(post(&c, r2, a, "m2", "hello"), Seq(2));
        assert_eq!(post(&c, r1, b, "m3", "hi"), Seq(4));
        let Resume::Events(events) = resume(&c, r1, b, Seq(2), 100).unwrap() else { panic!("events") };
        assert_eq!(events.len(), 2);
        assert_eq!((events[0].seq, events[1].seq), (Seq(3), Seq(4)));
        let v = serde_json::to_value(ServerFrame::Event(events[1].clone())).unwrap();
        assert_eq!((v["t"].as_str(), v["kind"].as_str(), v["body"].as_str()), (Some("event"), Some("message"), Some("hi")));
    }

    #[test]
    fn retried_send_is_not_doubled() {
        let (c, a, b, _) = setup();
        let (r, _) = create_group(&c, a, "General", "", Visibility::Open, &[b], 2).unwrap();
        let s = post(&c, r, a, "same-id", "hello");
        let again = post_message(&c, r, a, "same-id", "hello", None, 6).unwrap();
        assert_eq!(again, PostOutcome::Duplicate { room: r, seq: s });
        assert_eq!(history(&c, r, b, None, 50).unwrap().0.len(), 1);
    }

    #[test]
    fn non_members_cannot_post_or_read() {
        let (c, a, _, e) = setup();
        let (r, _) = create_group(&c, a, "Secret", "", Visibility::Invite, &[], 2).unwrap();
        assert!(matches!(post_message(&c, r, e, "x", "hi", None, 3), Err(StoreError::NotMember)));
        assert!(matches!(history(&c, r, e, None, 50), Err(StoreError::NotMember)));
        assert_eq!(resume(&c, r, e, Seq(0), 50).unwrap(), Resume::Gone);
        assert!(matches!(add_member(&c, r, e, e, 3), Err(StoreError::NotFound)));
        assert!(browse_open(&c, e).unwrap().is_empty());
        assert!(search(&c, e, "hi", None).unwrap().is_empty());
    }

    #[test]
    fn oversized_and_blank_bodies_are_refused_without_side_effects() {
        let (c, a, _, _) = setup();
        let (r, _) = create_group(&c, a, "General", "", Visibility::Open, &[], 2).unwrap();
        let big = "x".repeat(MAX_BODY_BYTES + 1);
        assert!(matches!(post_message(&c, r, a, "big", &big, None, 3), Err(StoreError::TooLarge(_))));
        assert!(matches!(post_message(&c, r, a, "blank", "  \n", None, 3), Err(StoreError::Invalid(_))));
        assert!(matches!(post_message(&c, r, a, "bad id!", "x", None, 3), Err(StoreError::Invalid(_))));
        let exact = "y".repeat(MAX_BODY_BYTES);
        assert_eq!(post(&c, r, a, "ok", &exact), Seq(2));
    }

    #[test]
    fn edit_delete_react_are_logged_and_idempotent() {
        let (c, a, b, _) = setup();
        let (r, _) = create_group(&c, a, "General", "", Visibility::Open, &[b], 2).unwrap();
        let s = post(&c, r, a, "m", "helo");
        assert!(matches!(edit_message(&c, r, b, s, "hack", 3), Err(StoreError::Forbidden(_))));
        assert!(edit_message(&c, r, a, s, "hello", 3).unwrap().is_some());
        assert!(edit_message(&c, r, a, s, "hello", 3).unwrap().is_none());
        assert!(react(&c, r, b, s, "👍", true, 3).unwrap().is_some());
        assert!(react(&c, r, b, s, "👍", true, 3).unwrap().is_none());
        let (msgs, _) = history(&c, r, a, None, 10).unwrap();
        assert_eq!(msgs[0].body, "hello");
        assert_eq!(msgs[0].reactions["👍"], vec![b]);
        assert!(msgs[0].edited.is_some());
        assert!(matches!(delete_message(&c, r, b, false, s, 4), Err(StoreError::Forbidden(_))));
        assert!(delete_message(&c, r, a, false, s, 4).unwrap().is_some());
        assert!(delete_message(&c, r, a, false, s, 4).unwrap().is_none());
        let (msgs, _) = history(&c, r, a, None, 10).unwrap();
        assert!(msgs[0].deleted && msgs[0].body.is_empty() && msgs[0].reactions.is_empty());
    }

    #[test]
    fn unread_counts_and_mentions_follow_read_marker() {
        let (c, a, b, _) = setup();
        let (r, _) = create_group(&c, a, "General", "", Visibility::Open, &[b], 2).unwrap();
        post(&c, r, a, "1", "hello @bob.");
        post(&c, r, a, "2", "second");
        let s3 = post(&c, r, b, "3", "mine");
        let sb = room_summary(&c, r, b).unwrap();
        assert_eq!((sb.unread, sb.mentions), (2, 1));
        let p = mark_read(&c, r, b, s3).unwrap().unwrap();
        assert_eq!(p.recipients, vec![b]);
        assert!(mark_read(&c, r, b, Seq(1)).unwrap().is_none(), "read marker never moves back");
        let sb = room_summary(&c, r, b).unwrap();
        assert_eq!((sb.unread, sb.mentions), (0, 0));
    }

    #[test]
    fn membership_changes_route_events() {
        let (c, a, b, e) = setup();
        let (r, _) = create_group(&c, a, "Open", "", Visibility::Open, &[], 2).unwrap();
        assert_eq!(browse_open(&c, e).unwrap().len(), 1);
        let p = add_member(&c, r, e, e, 3).unwrap().unwrap();
        assert!(p.recipients.contains(&e));
        assert!(matches!(remove_member(&c, r, e, false, a, 3), Err(StoreError::Forbidden(_))));
        add_member(&c, r, a, b, 3).unwrap();
        let p = remove_member(&c, r, a, false, b, 4).unwrap().unwrap();
        assert!(p.recipients.contains(&b), "the removed user learns it");
        assert!(matches!(post_message(&c, r, b, "x", "hi", None, 5), Err(StoreError::NotMember)));
        // the owner leaves: ownership passes on
        remove_member(&c, r, a, false, a, 6).unwrap();
        assert_eq!(member_role(&c, r, e).unwrap(), RoomRole::Owner);
    }

    #[test]
    fn archived_rooms_are_read_only_until_unarchived() {
        let (c, a, b, _) = setup();
        let (r, _) = create_group(&c, a, "Old", "", Visibility::Invite, &[b], 2).unwrap();
        let ch = RoomChange { archived: Some(true), ..Default::default() };
        assert!(matches!(update_room(&c, r, b, false, &ch, 3), Err(StoreError::Forbidden(_))));
        update_room(&c, r, a, false, &ch, 3).unwrap();
        assert!(matches!(post_message(&c, r, a, "x", "hi", None, 4), Err(StoreError::Archived)));
        let rename = RoomChange { name: Some("New".into()), ..Default::default() };
        assert!(matches!(update_room(&c, r, a, false, &rename, 4), Err(StoreError::Archived)));
        update_room(&c, r, a, false, &RoomChange { archived: Some(false), ..Default::default() }, 5).unwrap();
        post(&c, r, a, "y", "back");
    }

    #[test]
    fn direct_conversations_are_unique_per_pair() {
        let (c, a, b, _) = setup();
        let (r1, p) = open_direct(&c, a, b, 2).unwrap();
        assert_eq!(p.len(), 2);
        let (r2, p2) = open_direct(&c, b, a, 3).unwrap();
        assert_eq!((r1, p2.len()), (r2, 0));
        assert_eq!(room_summary(&c, r1, a).unwrap().peer, Some(b));
        assert!(matches!(open_direct(&c, a, a, 2), Err(StoreError::Invalid(_))));
    }

    #[test]
    fn search_finds_words_safely_and_only_in_own_rooms() {
        let (c, a, b, e) = setup();
        let (r, _) = create_group(&c, a, "General", "", Visibility::Open, &[b], 2).unwrap();
        post(&c, r, a, "1", "Réunion budget demain");
        post(&c, r, a, "2", "nothing here");
        let hits = search(&c, b, "reunion budg", None).unwrap();
        assert_eq!(hits.len(), 1);
        assert!(hits[0].snippet.contains('\u{2}'));
        for hostile in ["\"", "AND OR NOT", "*", "a:b", "(x", "NEAR(", "\u{0}"] {
            search(&c, b, hostile, None).unwrap();
        }
        assert!(search(&c, e, "budget", None).unwrap().is_empty());
    }

    #[test]
    fn history_pages_backwards() {
        let (c, a, _, _) = setup();
        let (r, _) = create_group(&c, a, "General", "", Visibility::Open, &[], 2).unwrap();
        for i in 0..25 {
            post(&c, r, a, &format!("m{i}"), &format!("n{i}"));
        }
        let (page, more) = history(&c, r, a, None, 10).unwrap();
        assert!(more);
        assert_eq!(page.first().unwrap().body, "n15");
        assert_eq!(page.last().unwrap().body, "n24");
        let (page2, _) = history(&c, r, a, Some(page[0].seq), 10).unwrap();
        assert_eq!(page2.last().unwrap().body, "n14");
    }

    #[test]
    fn resume_beyond_limit_asks_for_reload() {
        let (c, a, _, _) = setup();
        let (r, _) = create_group(&c, a, "General", "", Visibility::Open, &[], 2).unwrap();
        for i in 0..20 {
            post(&c, r, a, &format!("m{i}"), "x");
        }
        assert!(matches!(resume(&c, r, a, Seq(0), 10).unwrap(), Resume::Reset { last: Seq(21) }));
        assert!(matches!(resume(&c, r, a, Seq(11), 10).unwrap(), Resume::Events(e) if e.len() == 10));
        assert!(matches!(resume(&c, r, a, Seq(22), 10).unwrap(), Resume::Reset { last: Seq(21) }), "ahead of the room");
        assert!(matches!(resume(&c, r, a, Seq(21), 10).unwrap(), Resume::Events(e) if e.is_empty()));
        assert_eq!(member_rooms(&c, a).unwrap(), vec![(r, Seq(21))]);
    }
}
