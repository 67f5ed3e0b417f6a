//! The durable side of calls: one row per call, and the `call_started` /
//! `call_ended` events that show in the room. Who is in a call right now and
//! the signaling live in memory (`chat::call`); this record lets a call that
//! was running when the server restarted resume without a second "started"
//! message, and end properly if nobody comes back.

use crate::rules::{RoomKind, RoomRole};
use rusqlite::{Connection, OptionalExtension, params};

use super::rooms::{self, EventBody, Published};
use super::{Millis, RoomId, StoreError, UserId};

pub type CallId = i64;

/// What a user may do with a room's call.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRoom {
    pub kind: RoomKind,
    /// The user's role in the room.
    pub role: RoomRole,
    pub archived: bool,
    pub members: Vec<UserId>,
}

/// Checks membership and returns what calls need to know about the room.
pub fn call_room(conn: &Connection, room: RoomId, user: UserId) -> Result<CallRoom, StoreError> {
    let role = rooms::member_role(conn, room, user)?;
    let (kind, archived): (String, bool) =
        conn.query_row("SELECT kind, archived FROM rooms WHERE id = ?1", [room], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(CallRoom { kind: RoomKind::parse(&kind), role, archived, members: rooms::members_of(conn, room)? })
}

/// A call that was not ended.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenCall {
    pub id: CallId,
    pub room: RoomId,
    pub started_by: UserId,
    pub started_ms: Millis,
    pub participants: Vec<UserId>,
    /// Who was in the call at the last change: (pid, user).
    pub roster: Vec<(String, UserId)>,
}

fn participants_of(json: &str) -> Vec<UserId> {
    serde_json::from_str(json).unwrap_or_default()
}

/// The room's open call, if any.
pub fn open_call(conn: &Connection, room: RoomId) -> Result<Option<OpenCall>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT id, started_by, started_ms, participants, roster FROM calls WHERE room_id = ?1 AND ended_ms IS NULL",
            [room],
            |r| {
                Ok(OpenCall {
                    id: r.get(0)?,
                    room,
                    started_by: r.get(1)?,
                    started_ms: r.get(2)?,
                    participants: participants_of(&r.get::<_, String>(3)?),
                    roster: serde_json::from_str(&r.get::<_, String>(4)?).unwrap_or_default(),
                })
            },
        )
        .optional()?)
}

/// Every call not ended (after a restart).
pub fn open_calls(conn: &Connection) -> Result<Vec<OpenCall>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT id, room_id, started_by, started_ms, participants, roster FROM calls WHERE ended_ms IS NULL")?;
    let rows = stmt.query_map([], |r| {
        Ok(OpenCall {
            id: r.get(0)?,
            room: r.get(1)?,
            started_by: r.get(2)?,
            started_ms: r.get(3)?,
            participants: participants_of(&r.get::<_, String>(4)?),
            roster: serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or_default(),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Starts a call in `room`, or returns the one already open there (a
/// restart left it open): `None` for the frame then, nothing is announced twice.
pub fn start(
    conn: &Connection,
    room: RoomId,
    user: UserId,
    now: Millis,
) -> Result<(OpenCall, Option<Published>), StoreError> {
    let ctx = call_room(conn, room, user)?;
    if ctx.archived {
        return Err(StoreError::Archived);
    }
    if let Some(open) = open_call(conn, room)? {
        return Ok((open, None));
    }
    conn.execute(
        "INSERT INTO calls(room_id, started_by, started_ms, participants) VALUES (?1, ?2, ?3, ?4)",
        params![room, user, now, format!("[{user}]")],
    )?;
    let id = conn.last_insert_rowid();
    let (_, published) = rooms::append_to_members(conn, room, user, now, &EventBody::CallStarted { call: id })?;
    let call = OpenCall { id, room, started_by: user, started_ms: now, participants: vec![user], roster: vec![] };
    Ok((call, Some(published)))
}

/// Adds `user` to the call's participants (for the summary at the end).
pub fn record_join(conn: &Connection, call: CallId, user: UserId) -> Result<(), StoreError> {
    let json: Option<String> =
        conn.query_row("SELECT participants FROM calls WHERE id = ?1", [call], |r| r.get(0)).optional()?;
    let mut list = participants_of(&json.ok_or(StoreError::NotFound)?);
    if !list.contains(&user) {
        list.push(user);
        conn.execute("UPDATE calls SET participants = ?2 WHERE id = ?1", params![call, serde_json::to_string(&list)?])?;
    }
    Ok(())
}

/// Saves who is in the call now, so a restart can wait for exactly them.
pub fn save_roster(conn: &Connection, call: CallId, roster: &str) -> Result<(), StoreError> {
    conn.execute("UPDATE calls SET roster = ?2 WHERE id = ?1 AND ended_ms IS NULL", params![call, roster])?;
    Ok(())
}

/// Ends the call once; later calls return `None`.
pub fn end(conn: &Connection, call: CallId, outcome: &str, now: Millis) -> Result<Option<Published>, StoreError> {
    let row: Option<(RoomId, UserId, Millis, String)> = conn
        .query_row(
            "UPDATE calls SET ended_ms = ?2, outcome = ?3 WHERE id = ?1 AND ended_ms IS NULL
             RETURNING room_id, started_by, started_ms, participants",
            params![call, now, outcome],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((room, by, started, participants)) = row else { return Ok(None) };
    let body = EventBody::CallEnded {
        call,
        duration_ms: (now - started).max(0),
        participants: participants_of(&participants),
        outcome: outcome.to_string(),
    };
    let (_, published) = rooms::append_to_members(conn, room, by, now, &body)?;
    Ok(Some(published))
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Invalid(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::rooms::Visibility;
    use crate::store::users::{self, Role};
    use crate::store::test_conn;

    #[test]
    fn a_call_starts_once_records_joins_and_ends_once() {
        let c = test_conn();
        let a = users::create_user(&c, "ann", "A", "h", Role::User, 1).unwrap();
        let b = users::create_user(&c, "bob", "B", "h", Role::User, 1).unwrap();
        let x = users::create_user(&c, "xav", "X", "h", Role::User, 1).unwrap();
        let (room, _) = rooms::create_group(&c, a.id, "T", "", Visibility::Invite, &[b.id], 1).unwrap();
        assert!(matches!(start(&c, room, x.id, 10), Err(StoreError::NotMember)));
        let (call, p) = start(&c, room, a.id, 10).unwrap();
        let p = p.expect("announced");
        assert!(p.frame.to_json().contains("\"kind\":\"call_started\""), "{:?}", p.frame);
        let mut to = p.recipients.clone();
        to.sort();
        assert_eq!(to, vec![a.id, b.id]);
        // a second start (e.g. after a restart) returns the open call silently
        let (again, p2) = start(&c, room, b.id, 20).unwrap();
        assert_eq!((again.id, again.started_by, p2), (call.id, a.id, None));
        record_join(&c, call.id, b.id).unwrap();
        record_join(&c, call.id, b.id).unwrap();
        assert_eq!(open_calls(&c).unwrap()[0].participants, vec![a.id, b.id]);
        save_roster(&c, call.id, r#"[["pa",1],["pb",2]]"#).unwrap();
        assert_eq!(open_call(&c, room).unwrap().unwrap().roster, vec![("pa".to_string(), UserId(1)), ("pb".to_string(), UserId(2))]);
        let ended = end(&c, call.id, "ended", 70_010).unwrap().expect("announced");
        let v: serde_json::Value = serde_json::to_value(&ended.frame).unwrap();
        assert_eq!(v["kind"], "call_ended");
        assert_eq!(v["duration_ms"], 70_000);
        assert_eq!(v["participants"], serde_json::json!([a.id, b.id]));
        assert_eq!(end(&c, call.id, "ended", 80_000).unwrap(), None);
        // both records show in the room's history, between the messages
        rooms::post_message(&c, room, b.id, "m1", "after the call", None, 80_001).unwrap();
        let (list, _) = rooms::history(&c, room, a.id, None, 50).unwrap();
        let kinds: Vec<_> =
            list.iter().map(|m| m.call.as_ref().map_or("message", |v| v["kind"].as_str().unwrap())).collect();
        assert_eq!(kinds, ["call_started", "call_ended", "message"]);
        assert!(open_calls(&c).unwrap().is_empty());
        // the next call is a new one
        let (next, p3) = start(&c, room, b.id, 90_000).unwrap();
        assert!(next.id != call.id && p3.is_some());
    }

    #[test]
    fn no_call_in_an_archived_room() {
        let c = test_conn();
        let a = users::create_user(&c, "ann", "A", "h", Role::User, 1).unwrap();
        let (room, _) = rooms::create_group(&c, a.id, "T", "", Visibility::Invite, &[], 1).unwrap();
        c.execute("UPDATE rooms SET archived = 1 WHERE id = ?1", [room]).unwrap();
        assert!(matches!(start(&c, room, a.id, 1), Err(StoreError::Archived)));
    }
}
