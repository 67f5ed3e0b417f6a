//! Guest links and the guests who came by them. A link is a capability for
//! one room (only its hash is stored); a guest is a user row tied to its
//! link (`users.guest_link`), a member of that one room whose history starts
//! when it was let in (`members.since_seq`).

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use utoipa::ToSchema;

use super::rooms::{self, EventBody, GuestAction, Published};
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
    /// Knock mode: guests wait until a moderator admits them.
    pub knock: bool,
}

impl GuestLink {
    /// Open for new guests at `now`.
    pub fn live(&self, now: Millis) -> bool {
        self.revoked.is_none() && now < self.expires && self.max_uses.is_none_or(|m| self.uses < m)
    }
}

const LINK_COLS: &str =
    "id, room_id, created_by, created_ms, expires_ms, max_uses, uses, password_hash IS NOT NULL, perms, label, revoked_ms, knock";

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
        knock: r.get(11)?,
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
    pub knock: bool,
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
) -> Result<(GuestLink, Published), StoreError> {
    check_moderator(conn, room, by, is_admin)?;
    let label = link.label.trim();
    if label.chars().count() > 80 || label.chars().any(char::is_control) {
        return Err(StoreError::Invalid("label: at most 80 characters, no control characters".into()));
    }
    conn.execute(
        "INSERT INTO guest_links(room_id, token_hash, created_by, created_ms, expires_ms, max_uses, password_hash, perms, label, knock)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![room, token_hash, by, now, link.expires, link.max_uses, link.password_hash, link.perms.bits(), label, link.knock],
    )?;
    let link = get_link(conn, conn.last_insert_rowid())?;
    let audit = EventBody::Guest { action: GuestAction::LinkCreated, link: link.id, guest: None, name: link.label.clone() };
    let published = rooms::append_audit(conn, room, by, now, &audit)?;
    Ok((link, published))
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
            |r| Ok((link_from_row(r)?, r.get::<_, Option<String>>(12)?)),
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
    let mut published = Vec::new();
    if l.revoked.is_none() {
        conn.execute("UPDATE guest_links SET revoked_ms = ?2 WHERE id = ?1", params![link, now])?;
        let audit = EventBody::Guest { action: GuestAction::LinkRevoked, link, guest: None, name: l.label.clone() };
        published.push(rooms::append_audit(conn, room, by, now, &audit)?);
    }
    // those still waiting are turned away (nobody can let them in now);
    // those inside go too if asked
    let guests: Vec<(UserId, String, bool)> = conn
        .prepare("SELECT id, display_name, guest_admitted_ms IS NULL FROM users WHERE guest_link = ?1 AND guest_ended_ms IS NULL")?
        .query_map([link], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut removed = Vec::new();
    for (g, name, waiting) in guests {
        if waiting {
            let audit = EventBody::Guest { action: GuestAction::Denied, link, guest: Some(g), name };
            published.push(rooms::append_audit(conn, room, by, now, &audit)?);
        } else if !remove {
            continue;
        }
        published.extend(end_guest(conn, room, g, now)?);
        removed.push(g);
    }
    Ok((removed, published))
}

/// A guest's attendance ends for good (it left, was denied or removed, or
/// its link expired): out of the room (a `leave` event), sessions ended,
/// the account disabled. Its messages stay.
pub fn end_guest(conn: &Connection, room: RoomId, guest: UserId, now: Millis) -> Result<Vec<Published>, StoreError> {
    let mut published = Vec::new();
    if rooms::member_role(conn, room, guest).is_ok() {
        let (_, p) = rooms::append_to_members(conn, room, guest, now, &EventBody::Leave { user: guest })?;
        conn.execute("DELETE FROM members WHERE room_id = ?1 AND user_id = ?2", (room, guest))?;
        published.push(p);
    }
    close_attendance(conn, guest, now)?;
    Ok(published)
}

/// A guest out of its room has left for good: its account closes, its
/// sessions end (the record stays until the retention sweep).
pub fn close_attendance(conn: &Connection, guest: UserId, now: Millis) -> Result<(), StoreError> {
    conn.execute("UPDATE users SET disabled = 1, guest_ended_ms = COALESCE(guest_ended_ms, ?2) WHERE id = ?1", (guest, now))?;
    conn.execute("DELETE FROM sessions WHERE user_id = ?1", [guest])?;
    Ok(())
}

/// A guest's attendance ends by itself (`Left`: it left or gave up
/// waiting; `Expired`: its link did), recorded for the moderators.
pub fn leave(conn: &Connection, room: RoomId, guest: UserId, action: GuestAction, now: Millis) -> Result<Vec<Published>, StoreError> {
    let (link, name): (i64, String) =
        conn.query_row("SELECT guest_link, display_name FROM users WHERE id = ?1", [guest], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let audit = EventBody::Guest { action, link, guest: Some(guest), name };
    let mut published = vec![rooms::append_audit(conn, room, guest, now, &audit)?];
    published.extend(end_guest(conn, room, guest, now)?);
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

/// Guests waiting on one knock link at most (a leaked link cannot bury the
/// moderators in alerts).
pub const MAX_WAITING: i64 = 20;

/// Comes by a live link: a guest user; the link counts one use. By an open
/// link it is let in at once; by a knock link it waits (and the room's
/// moderators are told) until one of them admits it. The caller checked
/// the password.
pub fn join(conn: &Connection, link: &GuestLink, display_name: &str, now: Millis) -> Result<(User, Vec<Published>), StoreError> {
    if !link.live(now) {
        return Err(StoreError::Forbidden("this guest link has expired or was revoked"));
    }
    if rooms::room_row(conn, link.room)?.archived {
        return Err(StoreError::Forbidden("this conversation is archived"));
    }
    let name = check_guest_name(conn, display_name)?;
    if link.knock {
        let waiting: i64 = conn.query_row(
            "SELECT COUNT(*) FROM users WHERE guest_link = ?1 AND guest_admitted_ms IS NULL AND guest_ended_ms IS NULL",
            [link.id],
            |r| r.get(0),
        )?;
        if waiting >= MAX_WAITING {
            return Err(StoreError::Conflict("the waiting room is full: try again in a few minutes"));
        }
    }
    // a name no member can have ('~' is not allowed in usernames)
    let next: i64 = conn.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM users", [], |r| r.get(0))?;
    let username = format!("~guest{next}");
    conn.execute(
        "INSERT INTO users(username, display_name, password_hash, role, created_ms, guest_link) VALUES (?1, ?2, '', 'user', ?3, ?4)",
        params![username, name, now, link.id],
    )?;
    let user = users::get_user(conn, UserId(conn.last_insert_rowid()))?;
    conn.execute("UPDATE guest_links SET uses = uses + 1 WHERE id = ?1", [link.id])?;
    let action = if link.knock { GuestAction::Knocked } else { GuestAction::Joined };
    let audit = EventBody::Guest { action, link: link.id, guest: Some(user.id), name: user.display_name.clone() };
    let mut published = vec![rooms::append_audit(conn, link.room, user.id, now, &audit)?];
    if !link.knock {
        published.push(enter(conn, link.room, user.id, now)?);
    }
    Ok((user, published))
}

/// A guest becomes a member of its room: from the room's current sequence
/// on, or from the start when the room shows guests its history.
fn enter(conn: &Connection, room: RoomId, guest: UserId, now: Millis) -> Result<Published, StoreError> {
    let row = rooms::room_row(conn, room)?;
    let since = if row.guest_history { crate::store::Seq::ZERO } else { row.last_seq };
    conn.execute(
        "INSERT INTO members(room_id, user_id, role, joined_ms, since_seq) VALUES (?1, ?2, 'member', ?3, ?4)",
        params![room, guest, now, since],
    )?;
    conn.execute("UPDATE users SET guest_admitted_ms = ?2 WHERE id = ?1", (guest, now))?;
    Ok(rooms::append_to_members(conn, room, guest, now, &EventBody::Join { user: guest })?.1)
}

/// A guest in a room's waiting room, as its moderators see it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Waiting {
    pub room: RoomId,
    pub guest: UserId,
    pub name: String,
    /// When it knocked.
    pub since: Millis,
    pub link: i64,
    /// The link's label.
    pub label: String,
}

/// Guests waiting on links still open (`?1`: now): one whose link expired
/// or was revoked can no longer be let in.
const WAITING_SQL: &str = "SELECT l.room_id, u.id, u.display_name, u.created_ms, l.id, l.label
    FROM users u JOIN guest_links l ON l.id = u.guest_link
    WHERE u.guest_admitted_ms IS NULL AND u.guest_ended_ms IS NULL AND l.revoked_ms IS NULL AND l.expires_ms > ?1";

fn waiting_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Waiting> {
    Ok(Waiting { room: r.get(0)?, guest: r.get(1)?, name: r.get(2)?, since: r.get(3)?, link: r.get(4)?, label: r.get(5)? })
}

/// Everyone waiting in the rooms `user` moderates (owners, and admins in
/// the room), oldest first.
pub fn waiting(conn: &Connection, user: UserId, now: Millis) -> Result<Vec<Waiting>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "{WAITING_SQL} AND l.room_id IN (SELECT m.room_id FROM members m JOIN users me ON me.id = m.user_id
            WHERE m.user_id = ?2 AND (m.role = 'owner' OR me.role = 'admin'))
         ORDER BY u.created_ms, u.id"
    ))?;
    let rows = stmt.query_map(params![now, user], waiting_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A moderator admits or denies guests waiting in `room`: those listed, or
/// everyone waiting when `only` is `None`. Guests no longer waiting (another
/// moderator was quicker, they left) are passed over. Returns the guests
/// decided; the denied leave with their sessions.
pub fn decide(
    conn: &Connection,
    room: RoomId,
    by: UserId,
    is_admin: bool,
    only: Option<&[UserId]>,
    admit: bool,
    now: Millis,
) -> Result<(Vec<UserId>, Vec<Published>), StoreError> {
    check_moderator(conn, room, by, is_admin)?;
    let waiting: Vec<Waiting> = conn
        .prepare(&format!("{WAITING_SQL} AND l.room_id = ?2 ORDER BY u.created_ms, u.id"))?
        .query_map(params![now, room], waiting_from_row)?
        .collect::<Result<_, _>>()?;
    let mut decided = Vec::new();
    let mut published = Vec::new();
    for w in waiting.into_iter().filter(|w| only.is_none_or(|o| o.contains(&w.guest))) {
        let action = if admit { GuestAction::Admitted } else { GuestAction::Denied };
        let audit = EventBody::Guest { action, link: w.link, guest: Some(w.guest), name: w.name };
        published.push(rooms::append_audit(conn, room, by, now, &audit)?);
        if admit {
            published.push(enter(conn, room, w.guest, now)?);
        } else {
            published.extend(end_guest(conn, room, w.guest, now)?);
        }
        decided.push(w.guest);
    }
    Ok((decided, published))
}

/// A guest's link and whether it is still waiting to be let in.
pub fn guest_state(conn: &Connection, guest: UserId) -> Result<Option<(GuestLink, bool)>, StoreError> {
    let row: Option<(Option<i64>, bool)> = conn
        .query_row("SELECT guest_link, guest_admitted_ms IS NULL FROM users WHERE id = ?1", [guest], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match row {
        Some((Some(link), waiting)) => Ok(Some((get_link(conn, link)?, waiting))),
        _ => Ok(None),
    }
}

/// The guests' life cycle, run now and then: attendees whose link expired
/// end (they leave their room); attendees ended more than `keep_ms` ago are
/// deleted: what remains is the name under their messages and reactions,
/// shown as a former guest's, and nothing else (no session, no membership,
/// no username). Returns the guests who ended now.
pub fn sweep(conn: &Connection, now: Millis, keep_ms: Millis) -> Result<(Vec<UserId>, Vec<Published>), StoreError> {
    let expired: Vec<(UserId, RoomId)> = conn
        .prepare(
            "SELECT u.id, l.room_id FROM users u JOIN guest_links l ON l.id = u.guest_link
             WHERE u.guest_ended_ms IS NULL AND l.expires_ms <= ?1",
        )?
        .query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut published = Vec::new();
    let mut ended = Vec::new();
    for (guest, room) in expired {
        published.extend(leave(conn, room, guest, GuestAction::Expired, now)?);
        ended.push(guest);
    }
    let stale: Vec<UserId> = conn
        .prepare("SELECT id FROM users WHERE guest_link IS NOT NULL AND guest_erased_ms IS NULL AND guest_ended_ms <= ?1")?
        .query_map([now - keep_ms], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for guest in stale {
        conn.execute("DELETE FROM sessions WHERE user_id = ?1", [guest])?;
        conn.execute("UPDATE users SET guest_erased_ms = ?2, username = '~former' || id WHERE id = ?1", (guest, now))?;
    }
    Ok((ended, published))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::rooms::{Visibility, create_group, history};
    use crate::store::users::{Role, create_user};
    use crate::store::{Seq, test_conn};

    fn link_for(c: &Connection, room: RoomId, by: UserId, max_uses: Option<i64>) -> GuestLink {
        let terms = NewLink { expires: 1_000_000, max_uses, password_hash: None, perms: Perms::SUPPORT, label: "support".into(), knock: false };
        create_link(c, room, by, false, b"tok", terms, 10).unwrap().0
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
        let terms = || NewLink { expires: 100, max_uses: None, password_hash: None, perms: Perms::SUPPORT, label: String::new(), knock: false };
        assert!(matches!(create_link(&c, room, b, false, b"x", terms(), 5), Err(StoreError::Forbidden(_))), "a member is no moderator");
        let link = link_for(&c, room, a, Some(1));
        assert_eq!(link_by_token(&c, b"tok").unwrap().unwrap().0, link);
        assert!(matches!(join(&c, &link, " ann ", 20), Err(StoreError::Conflict(_))), "a member's name");
        let (guest, published) = join(&c, &link, "Claire (customer)", 20).unwrap();
        assert_eq!((guest.role, guest.username.starts_with('~')), (Role::Guest, true));
        assert_eq!(published.len(), 2, "the audit entry and the join");
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
        assert_eq!((removed, published.len()), (vec![guest.id], 2), "the audit entry and the guest's leave");
        assert!(users::session_user(&c, b"gs", 41).unwrap().is_none());
        assert!(matches!(history(&c, room, guest.id, None, 50), Err(StoreError::NotMember)));
        assert_eq!(links(&c, room, a, false).unwrap()[0].revoked, Some(40));
    }
    fn audit_actions(c: &Connection, room: RoomId, who: UserId) -> Vec<GuestAction> {
        let (msgs, _) = history(c, room, who, None, 200).unwrap();
        msgs.iter()
            .filter_map(|m| m.audit.as_ref())
            .map(|a| serde_json::from_value::<EventBody>(a.clone()).unwrap())
            .map(|b| match b {
                EventBody::Guest { action, .. } => action,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_knock_link_keeps_guests_waiting_until_a_moderator_decides_and_the_trail_is_the_moderators() {
        let c = test_conn();
        let a = create_user(&c, "ann", "Ann", "h", Role::User, 1).unwrap().id;
        let b = create_user(&c, "bob", "Bob", "h", Role::User, 1).unwrap().id;
        let (room, _) = create_group(&c, a, "Support", "", Visibility::Invite, &[b], 2).unwrap();
        rooms::post_message(&c, room, a, "m1", "before anyone came", None, 3).unwrap();
        let terms = NewLink { expires: 1000, max_uses: None, password_hash: None, perms: Perms::SUPPORT, label: "ACME".into(), knock: true };
        let (link, p) = create_link(&c, room, a, false, b"k", terms, 5).unwrap();
        assert_eq!(p.recipients, vec![a], "the trail goes to the owner only");
        let (claire, p) = join(&c, &link, "Claire", 10).unwrap();
        assert_eq!(p.len(), 1, "a knock: no join yet");
        let (dan, _) = join(&c, &link, "Dan", 11).unwrap();
        let (eve, _) = join(&c, &link, "Eve", 12).unwrap();
        assert_eq!(guest_state(&c, claire.id).unwrap().map(|(l, w)| (l.id, w)), Some((link.id, true)));
        assert!(matches!(history(&c, room, claire.id, None, 50), Err(StoreError::NotMember)), "nothing before admission");
        let names = |v: Vec<Waiting>| v.into_iter().map(|w| w.name).collect::<Vec<_>>();
        assert_eq!(names(waiting(&c, a, 12).unwrap()), ["Claire", "Dan", "Eve"]);
        assert!(waiting(&c, b, 12).unwrap().is_empty(), "a plain member moderates nothing");
        assert!(matches!(decide(&c, room, b, false, None, true, 13), Err(StoreError::Forbidden(_))));
        // the room shows guests its history
        rooms::update_room(&c, room, a, false, &rooms::RoomChange { guest_history: Some(true), ..Default::default() }, 13).unwrap();
        let (done, _) = decide(&c, room, a, false, Some(&[claire.id]), true, 14).unwrap();
        assert_eq!(done, vec![claire.id]);
        let (msgs, _) = history(&c, room, claire.id, None, 50).unwrap();
        assert_eq!(msgs.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), ["before anyone came"], "no audit entries for a guest");
        let (done, _) = decide(&c, room, a, false, Some(&[dan.id]), false, 15).unwrap();
        assert_eq!(done, vec![dan.id]);
        assert!(guest_state(&c, dan.id).unwrap().is_some_and(|(_, w)| w), "denied: never admitted");
        // admit all: only who is still waiting
        let (done, _) = decide(&c, room, a, false, None, true, 16).unwrap();
        assert_eq!(done, vec![eve.id]);
        assert!(decide(&c, room, a, false, None, true, 17).unwrap().0.is_empty());
        use GuestAction::*;
        assert_eq!(audit_actions(&c, room, a), [LinkCreated, Knocked, Knocked, Knocked, Admitted, Denied, Admitted]);
        assert!(audit_actions(&c, room, b).is_empty(), "members do not see the trail");
        match rooms::resume(&c, room, b, Seq::ZERO, 100).unwrap() {
            rooms::Resume::Events(ev) => assert!(!ev.iter().any(|e| matches!(e.body, EventBody::Guest { .. })), "{ev:?}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn attendees_end_with_their_link_and_are_erased_later_keeping_their_messages() {
        let c = test_conn();
        let a = create_user(&c, "ann", "Ann", "h", Role::User, 1).unwrap().id;
        let (room, _) = create_group(&c, a, "Support", "", Visibility::Invite, &[], 2).unwrap();
        let link = link_for(&c, room, a, None);
        let (g, _) = join(&c, &link, "Claire", 20).unwrap();
        rooms::post_message(&c, room, g.id, "g1", "thanks!", None, 30).unwrap();
        users::create_session(&c, b"gs", g.id, "csrf", 30, 2_000_000).unwrap();
        let day = 86_400_000;
        assert_eq!(sweep(&c, 999_999, day).unwrap().0, vec![], "the link still runs");
        let (ended, published) = sweep(&c, 1_000_000, day).unwrap();
        assert_eq!((ended, published.len()), (vec![g.id], 2), "expired: the trail, and its leave");
        assert!(users::session_user(&c, b"gs", 1_000_001).unwrap().is_none());
        assert!(sweep(&c, 1_000_000 + day - 1, day).unwrap().0.is_empty());
        sweep(&c, 1_000_000 + day, day).unwrap();
        let former = users::get_user(&c, g.id).unwrap();
        assert_eq!((former.display_name.as_str(), former.disabled, former.role), ("Claire", true, Role::Guest));
        assert!(former.username.starts_with("~former"));
        let (msgs, _) = history(&c, room, a, None, 50).unwrap();
        assert!(msgs.iter().any(|m| m.sender == g.id && m.body == "thanks!"), "its messages stay");
        assert_eq!(audit_actions(&c, room, a), [GuestAction::LinkCreated, GuestAction::Joined, GuestAction::Expired]);
    }

    #[test]
    fn guests_come_in_by_their_link_only_and_go_when_it_goes() {
        let c = test_conn();
        let a = create_user(&c, "ann", "Ann", "h", Role::User, 1).unwrap().id;
        let b = create_user(&c, "bob", "Bob", "h", Role::User, 1).unwrap().id;
        let (room, _) = create_group(&c, a, "Support", "", Visibility::Invite, &[b], 2).unwrap();
        let (other, _) = create_group(&c, b, "Elsewhere", "", Visibility::Open, &[], 2).unwrap();
        let knock = |label: &str, expires| NewLink {
            expires, max_uses: None, password_hash: None, perms: Perms::SUPPORT, label: label.into(), knock: true };
        let (l1, _) = create_link(&c, room, a, false, b"t1", knock("one", 1000), 5).unwrap();
        let (waiting_guest, _) = join(&c, &l1, "Gil", 10).unwrap();
        // nobody adds a guest anywhere, not even to its own room
        assert!(matches!(rooms::add_member(&c, room, b, waiting_guest.id, 11), Err(StoreError::Forbidden(_))));
        assert!(matches!(rooms::add_member(&c, other, b, waiting_guest.id, 11), Err(StoreError::Forbidden(_))));
        assert!(matches!(create_group(&c, b, "Sneaky", "", Visibility::Invite, &[waiting_guest.id], 11), Err(StoreError::Forbidden(_))));
        assert!(matches!(rooms::open_direct(&c, b, waiting_guest.id, 11), Err(StoreError::Forbidden(_))));
        // members do not see who waits; they see the guests let into their rooms
        let names = |v: Vec<User>| v.into_iter().map(|u| u.display_name).collect::<Vec<_>>();
        assert_eq!(names(users::list_users(&c, b).unwrap()), ["Ann", "Bob"]);
        decide(&c, room, a, false, None, true, 12).unwrap();
        assert_eq!(names(users::list_users(&c, b).unwrap()), ["Ann", "Bob", "Gil"]);
        let carol = create_user(&c, "carol", "Carol", "h", Role::User, 1).unwrap().id;
        assert_eq!(names(users::list_users(&c, carol).unwrap()), ["Ann", "Bob", "Carol"], "not in Carol's rooms");
        // revoked without removing those inside: who still waits is turned away
        let (hal, _) = join(&c, &l1, "Hal", 13).unwrap();
        users::create_session(&c, b"hal", hal.id, "csrf", 13, 1000).unwrap();
        let (gone, _) = revoke_link(&c, room, l1.id, a, false, false, 14).unwrap();
        assert_eq!(gone, vec![hal.id]);
        assert!(users::session_user(&c, b"hal", 15).unwrap().is_none());
        assert!(rooms::member_role(&c, room, waiting_guest.id).is_ok(), "the guest inside stays");
        // an expired link's guest can no longer be let in
        let (l2, _) = create_link(&c, room, a, false, b"t2", knock("two", 100), 20).unwrap();
        let (ivy, _) = join(&c, &l2, "Ivy", 30).unwrap();
        assert!(waiting(&c, a, 100).unwrap().is_empty());
        assert!(decide(&c, room, a, false, Some(&[ivy.id]), true, 100).unwrap().0.is_empty());
        // removed from its room: its attendance ends
        users::create_session(&c, b"gil", waiting_guest.id, "csrf", 40, 1000).unwrap();
        rooms::remove_member(&c, room, a, false, waiting_guest.id, 41).unwrap();
        assert!(users::session_user(&c, b"gil", 42).unwrap().is_none());
        assert!(users::get_user(&c, waiting_guest.id).unwrap().disabled);
        // an archived room lets nobody in
        let (l3, _) = create_link(&c, room, a, false, b"t3", knock("three", 1000), 50).unwrap();
        rooms::update_room(&c, room, a, false, &rooms::RoomChange { archived: Some(true), ..Default::default() }, 51).unwrap();
        assert!(matches!(join(&c, &l3, "Jo", 52), Err(StoreError::Forbidden(_))));
    }
}
