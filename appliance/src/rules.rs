//! The chat's rules, without a database: the kinds of rooms, the roles in
//! them, who may do what, and which `@names` a message mentions. The store
//! (`store/rooms.rs`) reads the facts and asks here; these functions are
//! tested on their own.

/// A room's kind (the `rooms.kind` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomKind {
    /// A named room, open or invite-only.
    Group,
    /// A conversation between exactly two people.
    Direct,
}

impl RoomKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RoomKind::Group => "group",
            RoomKind::Direct => "direct",
        }
    }

    /// The stored text; anything unknown is read as a group room (the
    /// stricter rules of direct conversations are never assumed).
    pub fn parse(s: &str) -> RoomKind {
        if s == "direct" { RoomKind::Direct } else { RoomKind::Group }
    }
}

/// A member's role in a room (the `members.role` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomRole {
    Owner,
    Member,
}

impl RoomRole {
    pub fn as_str(self) -> &'static str {
        match self {
            RoomRole::Owner => "owner",
            RoomRole::Member => "member",
        }
    }

    /// The stored text; anything unknown is a plain member.
    pub fn parse(s: &str) -> RoomRole {
        if s == "owner" { RoomRole::Owner } else { RoomRole::Member }
    }
}

/// Who acts, as far as a room's rules care: their role there (none when
/// they are not a member) and whether they administer the box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actor {
    pub role: Option<RoomRole>,
    pub admin: bool,
}

impl Actor {
    /// Owners of the room and admins of the box moderate it.
    pub fn moderates(self) -> bool {
        self.admin || self.role == Some(RoomRole::Owner)
    }
}

/// Why something is not allowed; the store answers `forbidden` with it.
pub type Denied = &'static str;

/// Renaming, changing the topic or visibility, archiving.
pub fn may_change_room(kind: RoomKind, who: Actor) -> Result<(), Denied> {
    if kind == RoomKind::Direct {
        return Err("direct conversations have no settings");
    }
    if !who.moderates() {
        return Err("only a room owner or an admin can change the room");
    }
    Ok(())
}

/// Editing a message: its author only, and not once deleted.
pub fn may_edit_message(is_author: bool, deleted: bool) -> Result<(), Denied> {
    if !is_author {
        return Err("only the author can edit a message");
    }
    if deleted {
        return Err("the message was deleted");
    }
    Ok(())
}

/// Deleting a message: its author, a room owner or an admin.
pub fn may_delete_message(is_author: bool, who: Actor) -> Result<(), Denied> {
    if is_author || who.moderates() { Ok(()) } else { Err("only the author, a room owner or an admin can delete a message") }
}

/// Adding people: never to a direct conversation.
pub fn may_add_member(kind: RoomKind) -> Result<(), Denied> {
    if kind == RoomKind::Direct { Err("direct conversations have exactly two people") } else { Ok(()) }
}

/// Removing someone: oneself (leaving) or, by a moderator, anyone; never
/// from a direct conversation.
pub fn may_remove_member(kind: RoomKind, is_self: bool, who: Actor) -> Result<(), Denied> {
    if kind == RoomKind::Direct {
        return Err("direct conversations cannot be left");
    }
    if !is_self && !who.moderates() {
        return Err("only a room owner or an admin can remove people");
    }
    Ok(())
}

/// The user names a message mentions (`@name`, 2 or more characters among
/// letters, digits, `.`, `_`, `-`, not inside a word or an address, a
/// trailing `.` dropped), in order, without repeats, at most `max`.
pub fn mentioned_names(body: &str, max: usize) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    let bytes = body.as_bytes();
    let mut i = 0;
    while let Some(pos) = body[i..].find('@') {
        let start = i + pos + 1;
        let preceded_ok = start == 1 || !bytes[start - 2].is_ascii_alphanumeric();
        let end = body[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c)))
            .map_or(body.len(), |e| start + e);
        let name = body[start..end].trim_end_matches('.');
        if preceded_ok && name.len() >= 2 && !out.contains(&name) {
            out.push(name);
            if out.len() >= max {
                break;
            }
        }
        i = end.max(start);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMBER: Actor = Actor { role: Some(RoomRole::Member), admin: false };
    const OWNER: Actor = Actor { role: Some(RoomRole::Owner), admin: false };
    const ADMIN_OUTSIDE: Actor = Actor { role: None, admin: true };

    #[test]
    fn owners_and_admins_moderate_group_rooms_and_nobody_changes_a_direct_one() {
        assert!(may_change_room(RoomKind::Group, MEMBER).is_err());
        assert!(may_change_room(RoomKind::Group, OWNER).is_ok());
        assert!(may_change_room(RoomKind::Group, ADMIN_OUTSIDE).is_ok());
        assert!(may_change_room(RoomKind::Direct, OWNER).is_err());
        assert!(may_remove_member(RoomKind::Group, true, MEMBER).is_ok(), "anyone may leave");
        assert!(may_remove_member(RoomKind::Group, false, MEMBER).is_err());
        assert!(may_remove_member(RoomKind::Group, false, ADMIN_OUTSIDE).is_ok());
        assert!(may_remove_member(RoomKind::Direct, true, OWNER).is_err());
        assert!(may_add_member(RoomKind::Direct).is_err());
    }

    #[test]
    fn authors_edit_and_moderators_delete() {
        assert!(may_edit_message(true, false).is_ok());
        assert!(may_edit_message(false, false).is_err());
        assert!(may_edit_message(true, true).is_err());
        assert!(may_delete_message(false, MEMBER).is_err());
        assert!(may_delete_message(true, MEMBER).is_ok());
        assert!(may_delete_message(false, OWNER).is_ok());
    }

    #[test]
    fn mentions_are_names_after_an_at_sign_outside_words() {
        assert_eq!(mentioned_names("hi @bob and @carol.", 50), ["bob", "carol"]);
        assert_eq!(mentioned_names("mail bob@example.org, @x, @bob again @bob", 50), ["bob"]);
        assert_eq!(mentioned_names("@jean-luc.martin: ok", 50), ["jean-luc.martin"]);
        assert_eq!(mentioned_names("@a @b @c @dd @ee @ff", 2), ["dd", "ee"]);
        assert!(mentioned_names("no mentions @ all", 50).is_empty());
        assert_eq!(RoomKind::parse("direct"), RoomKind::Direct);
        assert_eq!(RoomRole::parse(RoomRole::Owner.as_str()), RoomRole::Owner);
    }
}
