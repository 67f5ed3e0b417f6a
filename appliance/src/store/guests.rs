//! Guest links and the guests who came by them. A link is a capability for
//! one room (only its hash is stored); a guest is a user row tied to its
//! link (`users.guest_link`), a member of that one room whose history starts
//! when it was let in (`members.since_seq`).

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use utoipa::ToSchema;

use super::rooms::{self, EventBody, Published};
use super::users::{self, User};
use super::{Millis, RoomId, StoreError, UserId};

/// What a link's guests may do (bits; `upload` waits for files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct Perms {
    pub chat: bool,
    pub call: bool,
    pub media: bool,
    pub screen: bool,
    pub upload: bool,
}

impl Perms {
    pub const SUPPORT: Perms = Perms { chat: true, call: true, media: true, screen: true, upload: false };

    pub fn bits(self) -> i64 {
        [self.chat, self.call, self.media, self.screen, self.upload]
            .iter()
            .enumerate()
            .map(|(i, on)| i64::from(*on) << i)
            .sum()
    }

    pub fn from_bits(b: i64) -> Perms {
        let on = |i: u32| b & (1 << i) != 0;
        Perms { chat: on(0), call: on(1), media: on(2), screen: on(3), upload: on(4) }
    }
}

/// A link as its room's moderators see it (never its token).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct GuestLink {
    pub id: i64,
    pub room: RoomId,
    pub created_by: UserId,
    pub created: Millis,
    pub expires: Millis,
    /// Absent: any number of guests.
    pub max_uses: Option<i64>,
    pub uses: i64,
    pub password: bool,
    pub perms: Perms,
    pub label: String,
    pub revoked: Option<Millis>,
}

impl GuestLink {
    /// Open for new guests at `now`.
    pub fn live(&self, now: Millis) -> bool {
        self.revoked.is_none() && now < self.expires && self.max_uses.is_none_or(|m| self.uses < m)
    }
}

const LINK_COLS: &str =
    "id, room_id, created_by, created_ms, expires_ms, max_uses, uses, password_hash IS NOT NULL, perms, label, revoked_ms";

fn link_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<GuestLink> {
    Ok(GuestLink {
        id: r.get(0)?,
        room: r.get(1)?,
        created_by: r.get(2)?,
        created: r.get(3)?,
        expires: r.get(4)?,
        max_uses: r.get(5)?,
        uses: r.get(6)?,
        password: r.get(7)?,
        perms: Perms::from_bits(r.get(8)?),
        label: r.get(9)?,
        revoked: r.get(10)?,
    })
}

/// A new link's terms (already checked by the caller: expiry within the
/// admin's maximum, the password hashed).
pub struct NewLink {
    pub expires: Millis,
    pub max_uses: Option<i64>,
    pub password_hash: Option<String>,
    pub perms: Perms,
    pub label: String,
}

/// Who may make, list and revoke a room's links: its owners and admins, in
/// a group room that is not archived.
fn check_moderator(conn: &Connection, room: RoomId, user: UserId, is_admin: bool) -> Result<(), StoreError> {
    let row = rooms::room_row(conn, room)?;
    let who = rooms::actor_in(conn, room, user, is_admin).map_err(|e| match e {
        StoreError::NotMember => StoreError::NotFound,
        e => e,
    })?;
    if row.kind != crate::rules::RoomKind::Group {
        return Err(StoreError::Forbidden("guests are invited to group rooms"));
    }
    if row.archived {
        return Err(StoreError::Archived);
    }
    if !who.moderates() {
        return Err(StoreError::Forbidden("only a room owner or an admin can invite guests"));
    }
    Ok(())
}

pub fn create_link(
    conn: &Connection,
    room: RoomId,
    by: UserId,
    is_admin: bool,
    token_hash: &[u8],
    link: NewLink,
    now: Millis,
) -> Result<GuestLink, StoreError> {
    check_moderator(conn, room, by, is_admin)?;
    let label = link.label.trim();
    if label.chars().count() > 80 || label.chars().any(char::is_control) {
        return Err(StoreError::Invalid("label: at most 80 characters, no control characters".into()));
    }
    conn.execute(
        "INSERT INTO guest_links(room_id, token_hash, created_by, created_ms, expires_ms, max_uses, password_hash, perms, label)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![room, token_hash, by, now, link.expires, link.max_uses, link.password_hash, link.perms.bits(), label],
    )?;
    get_link(conn, conn.last_insert_rowid())
}

fn get_link(conn: &Connection, id: i64) -> Result<GuestLink, StoreError> {
    conn.query_row(&format!("SELECT {LINK_COLS} FROM guest_links WHERE id = ?1"), [id], link_from_row)
        .optional()?
        .ok_or(StoreError::NotFound)
}

/// The room's links, newest first.
pub fn links(conn: &Connection, room: RoomId, user: UserId, is_admin: bool) -> Result<Vec<GuestLink>, StoreError> {
    check_moderator(conn, room, user, is_admin)?;
    let mut stmt =
        conn.prepare(&format!("SELECT {LINK_COLS} FROM guest_links WHERE room_id = ?1 ORDER BY created_ms DESC, id DESC"))?;
    let rows = stmt.query_map([room], link_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The link a token names, and its password hash, whatever its state.
pub fn link_by_token(conn: &Connection, token_hash: &[u8]) -> Result<Option<(GuestLink, Option<String>)>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {LINK_COLS}, password_hash FROM guest_links WHERE token_hash = ?1"),
            [token_hash],
            |r| Ok((link_from_row(r)?, r.get::<_, Option<String>>(11)?)),
        )
        .optional()?)
}

/// Revokes a link: nobody new comes by it. With `remove`, its guests leave
/// the room and their sessions end now.
pub fn revoke_link(
    conn: &Connection,
    room: RoomId,
    link: i64,
    by: UserId,
    is_admin: bool,
    remove: bool,
    now: Millis,
) -> Result<(Vec<UserId>, Vec<Published>), StoreError> {
    check_moderator(conn, room, by, is_admin)?;
    let l = get_link(conn, link)?;
    if l.room != room {
        return Err(StoreError::NotFound);
    }
    conn.execute("UPDATE guest_links SET revoked_ms = COALESCE(revoked_ms, ?2) WHERE id = ?1", params![link, now])?;
    let mut removed = Vec::new();
    let mut published = Vec::new();
    if remove {
        let guests: Vec<UserId> = conn
            .prepare("SELECT id FROM users WHERE guest_link = ?1 AND disabled = 0")?
            .query_map([link], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for g in guests {
            published.extend(end_guest(conn, room, g, now)?);
            removed.push(g);
        }
    }
    Ok((removed, published))
}

/// A guest leaves for good: out of the room (a `leave` event), sessions
/// ended, the account disabled. Its messages stay.
fn end_guest(conn: &Connection, room: RoomId, guest: UserId, now: Millis) -> Result<Vec<Published>, StoreError> {
    let mut published = Vec::new();
    if rooms::member_role(conn, room, guest).is_ok() {
        let (_, p) = rooms::append_to_members(conn, room, guest, now, &EventBody::Leave { user: guest })?;
        conn.execute("DELETE FROM members WHERE room_id = ?1 AND user_id = ?2", (room, guest))?;
        published.push(p);
    }
    conn.execute("UPDATE users SET disabled = 1 WHERE id = ?1", [guest])?;
    conn.execute("DELETE FROM sessions WHERE user_id = ?1", [guest])?;
    Ok(published)
}

/// A display name a guest may take: a valid name that no member of the box
/// has (case and spacing aside), so a guest cannot pass for a colleague.
pub fn check_guest_name(conn: &Connection, name: &str) -> Result<String, StoreError> {
    let name = users::check_display_name(name)?;
    let taken: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM users WHERE guest_link IS NULL AND lower(trim(display_name)) = lower(?1))",
        [&name],
        |r| r.get(0),
    )?;
    if taken {
        return Err(StoreError::Conflict("this name belongs to a member: choose another"));
    }
    Ok(name)
}

/// Comes in by a live link: a guest user, a member of the link's room from
/// the room's current sequence on (no earlier history), with a `join`
/// event; the link counts one use. The caller checked the password.
pub fn join(conn: &Connection, link: &GuestLink, display_name: &str, now: Millis) -> Result<(User, Vec<Published>), StoreError> {
    if !link.live(now) {
        return Err(StoreError::Forbidden("this guest link has expired or was revoked"));
    }
    let name = check_guest_name(conn, display_name)?;
    // a name no member can have ('~' is not allowed in usernames)
    let next: i64 = conn.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM users", [], |r| r.get(0))?;
    let username = format!("~guest{next}");
    conn.execute(
        "INSERT INTO users(username, display_name, password_hash, role, created_ms, guest_link) VALUES (?1, ?2, '', 'user', ?3, ?4)",
        params![username, name, now, link.id],
    )?;
    let user = users::get_user(conn, UserId(conn.last_insert_rowid()))?;
    let since = rooms::room_row(conn, link.room)?.last_seq;
    conn.execute(
        "INSERT INTO members(room_id, user_id, role, joined_ms, since_seq) VALUES (?1, ?2, 'member', ?3, ?4)",
        params![link.room, user.id, now, since],
    )?;
    conn.execute("UPDATE guest_links SET uses = uses + 1 WHERE id = ?1", [link.id])?;
    let (_, p) = rooms::append_to_members(conn, link.room, user.id, now, &EventBody::Join { user: user.id })?;
    Ok((user, vec![p]))
}

/// A guest's link and room (for a guest's requests: what it may do, where).
pub fn guest_scope(conn: &Connection, guest: UserId) -> Result<Option<GuestLink>, StoreError> {
    let link: Option<i64> =
        conn.query_row("SELECT guest_link FROM users WHERE id = ?1", [guest], |r| r.get(0)).optional()?.flatten();
    link.map(|id| get_link(conn, id)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::rooms::{Visibility, create_group, history};
    use crate::store::users::{Role, create_user};
    use crate::store::{Seq, test_conn};

    fn link_for(c: &Connection, room: RoomId, by: UserId, max_uses: Option<i64>) -> GuestLink {
        let terms = NewLink { expires: 1_000_000, max_uses, password_hash: None, perms: Perms::SUPPORT, label: "support".into() };
        create_link(c, room, by, false, b"tok", terms, 10).unwrap()
    }

    #[test]
    fn perms_round_trip_as_bits() {
        for b in 0..32 {
            assert_eq!(Perms::from_bits(b).bits(), b);
        }
        assert_eq!(Perms::SUPPORT.bits(), 0b01111);
    }

    #[test]
    fn owners_make_links_members_do_not_and_a_guest_starts_at_its_admission() {
        let c = test_conn();
        let a = create_user(&c, "ann", "Ann", "h", Role::User, 1).unwrap().id;
        let b = create_user(&c, "bob", "Bob", "h", Role::User, 1).unwrap().id;
        let (room, _) = create_group(&c, a, "Support", "", Visibility::Invite, &[b], 2).unwrap();
        rooms::post_message(&c, room, a, "m1", "before the guest", None, 3).unwrap();
        let terms = || NewLink { expires: 100, max_uses: None, password_hash: None, perms: Perms::SUPPORT, label: String::new() };
        assert!(matches!(create_link(&c, room, b, false, b"x", terms(), 5), Err(StoreError::Forbidden(_))), "a member is no moderator");
        let link = link_for(&c, room, a, Some(1));
        assert_eq!(link_by_token(&c, b"tok").unwrap().unwrap().0, link);
        assert!(matches!(join(&c, &link, " ann ", 20), Err(StoreError::Conflict(_))), "a member's name");
        let (guest, published) = join(&c, &link, "Claire (customer)", 20).unwrap();
        assert_eq!((guest.role, guest.username.starts_with('~')), (Role::Guest, true));
        assert_eq!(published.len(), 1);
        let (msgs, more) = history(&c, room, guest.id, None, 50).unwrap();
        assert!(msgs.is_empty() && !more, "nothing from before the admission: {msgs:?}");
        // an edit of a message from before it came is not the guest's to see
        let edited = rooms::edit_message(&c, room, a, Seq(3), "before the guest (edited)", 25).unwrap().unwrap();
        assert!(!edited.recipients.contains(&guest.id) && edited.recipients.contains(&b), "{:?}", edited.recipients);
        rooms::post_message(&c, room, a, "m2", "hello Claire", None, 30).unwrap();
        let (msgs, _) = history(&c, room, guest.id, None, 50).unwrap();
        assert_eq!(msgs.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), ["hello Claire"]);
        assert!(rooms::search(&c, guest.id, "before", None).unwrap().is_empty());
        match rooms::resume(&c, room, guest.id, Seq::ZERO, 100).unwrap() {
            rooms::Resume::Events(ev) => {
                assert!(ev.iter().all(|e| e.seq > Seq(3)), "{ev:?}");
                assert!(!ev.iter().any(|e| matches!(e.body, EventBody::Edit { .. })), "not the edit of an earlier message: {ev:?}");
            }
            other => panic!("{other:?}"),
        }
        // one use only
        let link = get_link(&c, link.id).unwrap();
        assert!(!link.live(21));
        assert!(matches!(join(&c, &link, "Dan", 21), Err(StoreError::Forbidden(_))));
        // revoked with removal: out of the room, sessions gone
        users::create_session(&c, b"gs", guest.id, "csrf", 22, 1000).unwrap();
        let (removed, published) = revoke_link(&c, room, link.id, a, false, true, 40).unwrap();
        assert_eq!((removed, published.len()), (vec![guest.id], 1));
        assert!(users::session_user(&c, b"gs", 41).unwrap().is_none());
        assert!(matches!(history(&c, room, guest.id, None, 50), Err(StoreError::NotMember)));
        assert_eq!(links(&c, room, a, false).unwrap()[0].revoked, Some(40));
    }
}
