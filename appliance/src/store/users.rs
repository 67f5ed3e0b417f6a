//! Accounts, sessions and invites. Secrets arrive already hashed: the store
//! never sees a password or a session token in clear.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::{Millis, StoreError, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    User,
    /// Came by a guest link: one room, no directory, no settings.
    Guest,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
            Role::Guest => "guest",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "user" => Some(Role::User),
            _ => None,
        }
    }
}

/// A user as shown to other users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: UserId,
    pub username: String,
    pub display_name: String,
    pub role: Role,
    pub disabled: bool,
}

fn user_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    let role: String = r.get(3)?;
    let guest: bool = r.get(5)?;
    Ok(User {
        id: r.get(0)?,
        username: r.get(1)?,
        display_name: r.get(2)?,
        role: if guest { Role::Guest } else { Role::parse(&role).unwrap_or(Role::User) },
        disabled: r.get(4)?,
    })
}

const USER_COLS: &str = "id, username, display_name, role, disabled, guest_link IS NOT NULL";

/// Usernames: 2–32 of `a-z 0-9 . _ -`, starting with a letter or digit.
pub fn check_username(name: &str) -> Result<(), StoreError> {
    let ok = (2..=32).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(
            "username: 2 to 32 characters among a-z, 0-9, '.', '_', '-', starting with a letter or digit".into(),
        ))
    }
}

/// Display names: 1–64 characters after trimming, no control characters.
pub fn check_display_name(name: &str) -> Result<String, StoreError> {
    let t = name.trim();
    if t.is_empty() || t.chars().count() > 64 || t.chars().any(char::is_control) {
        return Err(StoreError::Invalid("display name: 1 to 64 characters, no control characters".into()));
    }
    Ok(t.to_string())
}

pub fn create_user(
    conn: &Connection,
    username: &str,
    display_name: &str,
    password_hash: &str,
    role: Role,
    now: Millis,
) -> Result<User, StoreError> {
    check_username(username)?;
    let display = check_display_name(display_name)?;
    let res = conn.execute(
        "INSERT INTO users(username, display_name, password_hash, role, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![username, display, password_hash, role.as_str(), now],
    );
    match res {
        Ok(_) => get_user(conn, UserId(conn.last_insert_rowid())),
        Err(e) if StoreError::is_unique_violation(&e) => Err(StoreError::Conflict("username is taken")),
        Err(e) => Err(e.into()),
    }
}

pub fn get_user(conn: &Connection, id: UserId) -> Result<User, StoreError> {
    conn.query_row(&format!("SELECT {USER_COLS} FROM users WHERE id = ?1"), [id], user_from_row)
        .optional()?
        .ok_or(StoreError::NotFound)
}

/// For login: the user and their password hash.
pub fn find_login(conn: &Connection, username: &str) -> Result<Option<(User, String)>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {USER_COLS}, password_hash FROM users WHERE username = ?1"),
            [username],
            |r| Ok((user_from_row(r)?, r.get::<_, String>(6)?)),
        )
        .optional()?)
}

pub fn password_hash(conn: &Connection, id: UserId) -> Result<String, StoreError> {
    conn.query_row("SELECT password_hash FROM users WHERE id = ?1", [id], |r| r.get(0))
        .optional()?
        .ok_or(StoreError::NotFound)
}

/// Every account, guests too (the box's own `parvis user list`).
pub fn all_users(conn: &Connection) -> Result<Vec<User>, StoreError> {
    let mut stmt = conn.prepare(&format!("SELECT {USER_COLS} FROM users ORDER BY display_name COLLATE NOCASE"))?;
    let rows = stmt.query_map([], user_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The company's people as `viewer` may see them: every member of the box,
/// and the guests who were let into one of `viewer`'s rooms (present or
/// former, so their messages keep a name) — not those still waiting, denied
/// or of other rooms.
pub fn list_users(conn: &Connection, viewer: UserId) -> Result<Vec<User>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {USER_COLS} FROM users u WHERE u.guest_link IS NULL
           OR (u.guest_admitted_ms IS NOT NULL AND EXISTS (SELECT 1 FROM guest_links l JOIN members m ON m.room_id = l.room_id
                WHERE l.id = u.guest_link AND m.user_id = ?1))
         ORDER BY display_name COLLATE NOCASE"
    ))?;
    let rows = stmt.query_map([viewer], user_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The people who share a room with `user` (and `user`).
pub fn room_mates(conn: &Connection, user: UserId) -> Result<Vec<User>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {USER_COLS} FROM users WHERE id = ?1 OR id IN
           (SELECT m2.user_id FROM members m1 JOIN members m2 ON m2.room_id = m1.room_id WHERE m1.user_id = ?1)
         ORDER BY display_name COLLATE NOCASE"
    ))?;
    let rows = stmt.query_map([user], user_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn admin_exists(conn: &Connection) -> Result<bool, StoreError> {
    Ok(conn.query_row("SELECT EXISTS(SELECT 1 FROM users WHERE role = 'admin')", [], |r| r.get(0))?)
}

pub fn set_display_name(conn: &Connection, id: UserId, name: &str) -> Result<User, StoreError> {
    let name = check_display_name(name)?;
    if conn.execute("UPDATE users SET display_name = ?2 WHERE id = ?1", params![id, name])? == 0 {
        return Err(StoreError::NotFound);
    }
    get_user(conn, id)
}

/// Sets a new password hash and ends every session of the user except `keep`.
pub fn set_password_hash(conn: &Connection, id: UserId, hash: &str, keep: Option<&[u8]>) -> Result<(), StoreError> {
    if conn.execute("UPDATE users SET password_hash = ?2 WHERE id = ?1", params![id, hash])? == 0 {
        return Err(StoreError::NotFound);
    }
    conn.execute(
        "DELETE FROM sessions WHERE user_id = ?1 AND token_hash IS NOT ?2",
        params![id, keep],
    )?;
    Ok(())
}

/// Disables or re-enables a user; disabling ends their sessions at once.
/// The last enabled admin cannot be disabled.
pub fn set_disabled(conn: &Connection, id: UserId, disabled: bool) -> Result<User, StoreError> {
    let user = get_user(conn, id)?;
    if disabled && user.role == Role::Admin {
        let others: i64 = conn.query_row(
            "SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled = 0 AND id != ?1",
            [id],
            |r| r.get(0),
        )?;
        if others == 0 {
            return Err(StoreError::Forbidden("the last admin cannot be disabled"));
        }
    }
    conn.execute("UPDATE users SET disabled = ?2 WHERE id = ?1", params![id, disabled])?;
    if disabled {
        conn.execute("DELETE FROM sessions WHERE user_id = ?1", [id])?;
    }
    get_user(conn, id)
}

// ---- sessions -------------------------------------------------------------

pub fn create_session(
    conn: &Connection,
    token_hash: &[u8],
    user: UserId,
    csrf: &str,
    now: Millis,
    expires: Millis,
) -> Result<(), StoreError> {
    conn.execute("DELETE FROM sessions WHERE expires_ms < ?1", [now])?;
    conn.execute(
        "INSERT INTO sessions(token_hash, user_id, csrf, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![token_hash, user, csrf, now, expires],
    )?;
    Ok(())
}

/// The enabled user owning a live session, with the session's CSRF token.
/// Who holds a live session, with what it needs on every request.
#[derive(Debug, Clone)]
pub struct SessionUser {
    pub user: User,
    pub csrf: String,
    /// A guest not let in yet (knock links).
    pub waiting: bool,
}

pub fn session_user(conn: &Connection, token_hash: &[u8], now: Millis) -> Result<Option<SessionUser>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT u.id, u.username, u.display_name, u.role, u.disabled, u.guest_link IS NOT NULL, s.csrf,
                 u.guest_link IS NOT NULL AND u.guest_admitted_ms IS NULL
             FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = ?1 AND s.expires_ms > ?2 AND u.disabled = 0",
            params![token_hash, now],
            |r| Ok(SessionUser { user: user_from_row(r)?, csrf: r.get(6)?, waiting: r.get(7)? }),
        )
        .optional()?)
}

pub fn delete_session(conn: &Connection, token_hash: &[u8]) -> Result<(), StoreError> {
    conn.execute("DELETE FROM sessions WHERE token_hash = ?1", [token_hash])?;
    Ok(())
}

// ---- invites --------------------------------------------------------------

pub fn create_invite(
    conn: &Connection,
    token_hash: &[u8],
    by: UserId,
    role: Role,
    now: Millis,
    expires: Millis,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO invites(token_hash, created_by, role, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![token_hash, by, role.as_str(), now, expires],
    )?;
    Ok(())
}

/// A usable invite's role and expiry, or why it is not usable.
pub fn invite_status(conn: &Connection, token_hash: &[u8], now: Millis) -> Result<(Role, Millis), StoreError> {
    let row: Option<(String, Millis, Option<UserId>)> = conn
        .query_row(
            "SELECT role, expires_ms, used_by FROM invites WHERE token_hash = ?1",
            [token_hash],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    match row {
        None => Err(StoreError::NotFound),
        Some((_, _, Some(_))) => Err(StoreError::Forbidden("this invite was already used")),
        Some((_, exp, None)) if exp <= now => Err(StoreError::Forbidden("this invite has expired")),
        Some((role, exp, None)) => Ok((Role::parse(&role).unwrap_or(Role::User), exp)),
    }
}

/// Uses an invite: creates the account and marks the invite used, atomically.
pub fn accept_invite(
    conn: &Connection,
    token_hash: &[u8],
    username: &str,
    display_name: &str,
    password_hash: &str,
    now: Millis,
) -> Result<User, StoreError> {
    let (role, _) = invite_status(conn, token_hash, now)?;
    let user = create_user(conn, username, display_name, password_hash, role, now)?;
    conn.execute("UPDATE invites SET used_by = ?2 WHERE token_hash = ?1", params![token_hash, user.id])?;
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_conn;

    #[test]
    fn usernames_are_unique_case_insensitively() {
        let c = test_conn();
        create_user(&c, "alice", "Alice", "h", Role::Admin, 1).unwrap();
        assert!(matches!(create_user(&c, "ALICE", "A", "h", Role::User, 1), Err(StoreError::Invalid(_))));
        assert!(matches!(create_user(&c, "alice", "A", "h", Role::User, 1), Err(StoreError::Conflict(_))));
    }

    #[test]
    fn disabling_ends_sessions_and_keeps_last_admin() {
        let c = test_conn();
        let a = create_user(&c, "alice", "Alice", "h", Role::Admin, 1).unwrap();
        let b = create_user(&c, "bob", "Bob", "h", Role::User, 1).unwrap();
        create_session(&c, b"tok", b.id, "csrf", 1, 100).unwrap();
        assert!(session_user(&c, b"tok", 2).unwrap().is_some());
        set_disabled(&c, b.id, true).unwrap();
        assert!(session_user(&c, b"tok", 2).unwrap().is_none());
        assert!(matches!(set_disabled(&c, a.id, true), Err(StoreError::Forbidden(_))));
    }

    #[test]
    fn sessions_expire() {
        let c = test_conn();
        let a = create_user(&c, "alice", "Alice", "h", Role::Admin, 1).unwrap();
        create_session(&c, b"tok", a.id, "csrf", 1, 100).unwrap();
        assert!(session_user(&c, b"tok", 99).unwrap().is_some());
        assert!(session_user(&c, b"tok", 100).unwrap().is_none());
    }

    #[test]
    fn invites_are_single_use_and_expire() {
        let c = test_conn();
        let a = create_user(&c, "alice", "Alice", "h", Role::Admin, 1).unwrap();
        create_invite(&c, b"inv", a.id, Role::User, 10, 20).unwrap();
        create_invite(&c, b"old", a.id, Role::User, 10, 20).unwrap();
        let bob = accept_invite(&c, b"inv", "bob", "Bob", "h", 15).unwrap();
        assert_eq!(bob.role, Role::User);
        assert!(matches!(accept_invite(&c, b"inv", "carol", "C", "h", 15), Err(StoreError::Forbidden(_))));
        assert!(matches!(accept_invite(&c, b"old", "carol", "C", "h", 20), Err(StoreError::Forbidden(_))));
        assert!(matches!(invite_status(&c, b"nope", 1), Err(StoreError::NotFound)));
    }

    #[test]
    fn password_change_keeps_only_current_session() {
        let c = test_conn();
        let a = create_user(&c, "alice", "Alice", "h", Role::Admin, 1).unwrap();
        create_session(&c, b"one", a.id, "x", 1, 100).unwrap();
        create_session(&c, b"two", a.id, "y", 1, 100).unwrap();
        set_password_hash(&c, a.id, "h2", Some(b"one")).unwrap();
        assert!(session_user(&c, b"one", 2).unwrap().is_some());
        assert!(session_user(&c, b"two", 2).unwrap().is_none());
    }
}
