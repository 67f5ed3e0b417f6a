//! Numbered schema migrations. `PRAGMA user_version` holds the number of the
//! last one applied; each runs in its own transaction.

use rusqlite::Connection;

use super::StoreError;

/// The migrations, in order. Never edit one that has shipped: append.
pub const MIGRATIONS: &[&str] = &[
    // 1: accounts, sessions, invites, rooms, per-room event log, messages, search.
    r#"
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL UNIQUE COLLATE NOCASE,
        display_name TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('admin', 'user')),
        disabled INTEGER NOT NULL DEFAULT 0,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE sessions (
        token_hash BLOB PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        csrf TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL
    );
    CREATE INDEX sessions_user ON sessions(user_id);
    CREATE TABLE invites (
        token_hash BLOB PRIMARY KEY,
        created_by INTEGER NOT NULL REFERENCES users(id),
        role TEXT NOT NULL CHECK (role IN ('admin', 'user')),
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        used_by INTEGER REFERENCES users(id)
    );
    CREATE TABLE rooms (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('group', 'direct')),
        name TEXT NOT NULL,
        topic TEXT NOT NULL DEFAULT '',
        visibility TEXT NOT NULL CHECK (visibility IN ('open', 'invite')),
        direct_key TEXT UNIQUE,
        archived INTEGER NOT NULL DEFAULT 0,
        last_seq INTEGER NOT NULL DEFAULT 0,
        created_by INTEGER REFERENCES users(id),
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE members (
        room_id INTEGER NOT NULL REFERENCES rooms(id),
        user_id INTEGER NOT NULL REFERENCES users(id),
        role TEXT NOT NULL CHECK (role IN ('owner', 'member')),
        read_seq INTEGER NOT NULL DEFAULT 0,
        joined_ms INTEGER NOT NULL,
        PRIMARY KEY (room_id, user_id)
    ) WITHOUT ROWID;
    CREATE INDEX members_user ON members(user_id);
    CREATE TABLE events (
        room_id INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        actor INTEGER NOT NULL,
        ts_ms INTEGER NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (room_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        room_id INTEGER NOT NULL REFERENCES rooms(id),
        seq INTEGER NOT NULL,
        sender INTEGER NOT NULL REFERENCES users(id),
        client_id TEXT NOT NULL,
        body TEXT NOT NULL,
        reply_to INTEGER,
        created_ms INTEGER NOT NULL,
        edited_ms INTEGER,
        deleted INTEGER NOT NULL DEFAULT 0,
        UNIQUE (room_id, seq),
        UNIQUE (sender, client_id)
    );
    CREATE TABLE reactions (
        message_id INTEGER NOT NULL REFERENCES messages(id),
        user_id INTEGER NOT NULL REFERENCES users(id),
        emoji TEXT NOT NULL,
        PRIMARY KEY (message_id, user_id, emoji)
    );
    CREATE VIRTUAL TABLE messages_fts USING fts5(
        body, content='messages', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
    );
    CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts(rowid, body) VALUES (new.id, new.body);
    END;
    CREATE TRIGGER messages_fts_update AFTER UPDATE OF body ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, body) VALUES ('delete', old.id, old.body);
        INSERT INTO messages_fts(rowid, body) VALUES (new.id, new.body);
    END;
    "#,
    // 2: calls (signaling state is in memory; this is the record that
    // survives a restart, so a call resumed after one is not "started" twice).
    r#"
    CREATE TABLE calls (
        id INTEGER PRIMARY KEY,
        room_id INTEGER NOT NULL REFERENCES rooms(id),
        started_by INTEGER NOT NULL REFERENCES users(id),
        started_ms INTEGER NOT NULL,
        ended_ms INTEGER,
        outcome TEXT,
        participants TEXT NOT NULL DEFAULT '[]',
        roster TEXT NOT NULL DEFAULT '[]'
    );
    CREATE UNIQUE INDEX calls_open ON calls(room_id) WHERE ended_ms IS NULL;
    "#,
    // Guests by link: a link is a capability for one room (only its hash is
    // stored); a guest is a user row tied to the link it came by, and a
    // member whose history starts at `since_seq`.
    r#"
    CREATE TABLE guest_links (
        id INTEGER PRIMARY KEY,
        room_id INTEGER NOT NULL REFERENCES rooms(id),
        token_hash BLOB NOT NULL UNIQUE,
        created_by INTEGER NOT NULL REFERENCES users(id),
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        max_uses INTEGER,
        uses INTEGER NOT NULL DEFAULT 0,
        password_hash TEXT,
        perms INTEGER NOT NULL,
        label TEXT NOT NULL DEFAULT '',
        revoked_ms INTEGER
    );
    CREATE INDEX guest_links_room ON guest_links(room_id);
    ALTER TABLE users ADD COLUMN guest_link INTEGER REFERENCES guest_links(id);
    ALTER TABLE members ADD COLUMN since_seq INTEGER NOT NULL DEFAULT 0;
    "#,
    // The waiting room and a guest's life: a knock link's guests wait until
    // a moderator admits them (`guest_admitted_ms`); an attendee ends
    // (left, denied, removed, its link expired) and is erased N days later,
    // its messages kept under its name. A room may show guests its history.
    r#"
    ALTER TABLE guest_links ADD COLUMN knock INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE rooms ADD COLUMN guest_history INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE users ADD COLUMN guest_admitted_ms INTEGER;
    ALTER TABLE users ADD COLUMN guest_ended_ms INTEGER;
    ALTER TABLE users ADD COLUMN guest_erased_ms INTEGER;
    UPDATE users SET guest_admitted_ms = created_ms WHERE guest_link IS NOT NULL;
    UPDATE users SET guest_ended_ms = created_ms WHERE guest_link IS NOT NULL AND disabled = 1;
    "#,
    // Files: a blob is stored once by its SHA-256 and counted by the rows
    // that refer to it (finished uploads not sent yet, attachments); the
    // room owns its attachments (one per file of a message). A removed
    // attachment keeps its name (`gone_ms`), not its blob.
    r#"
    CREATE TABLE blobs (
        hash TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        mime TEXT NOT NULL,
        refs INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        width INTEGER,
        height INTEGER
    );
    CREATE TABLE uploads (
        id TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id),
        room_id INTEGER NOT NULL REFERENCES rooms(id),
        name TEXT NOT NULL,
        length INTEGER NOT NULL,
        received INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        hash TEXT REFERENCES blobs(hash)
    );
    CREATE INDEX uploads_user ON uploads(user_id);
    CREATE TABLE attachments (
        id INTEGER PRIMARY KEY,
        room_id INTEGER NOT NULL REFERENCES rooms(id),
        seq INTEGER NOT NULL,
        sender INTEGER NOT NULL REFERENCES users(id),
        name TEXT NOT NULL,
        hash TEXT REFERENCES blobs(hash),
        size INTEGER NOT NULL,
        mime TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        gone_ms INTEGER
    );
    CREATE INDEX attachments_message ON attachments(room_id, seq);
    CREATE INDEX attachments_sender ON attachments(sender);
    CREATE INDEX attachments_created ON attachments(created_ms) WHERE hash IS NOT NULL;
    "#,
];

/// The schema version this build writes (the number of migrations).
pub const LATEST: usize = MIGRATIONS.len();

/// The database's schema version (`PRAGMA user_version`).
pub fn version(conn: &Connection) -> Result<usize, StoreError> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))?.max(0) as usize)
}

/// Applies every migration newer than the database's `user_version`.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current = version(conn)?;
    if current > MIGRATIONS.len() {
        return Err(StoreError::TooNew { found: current, known: MIGRATIONS.len() });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!("database migrated to version {}", i + 1);
    }
    Ok(())
}

/// A database as an older build left it: the first `n` migrations only.
#[cfg(test)]
pub(crate) fn migrate_to(conn: &mut Connection, n: usize) {
    for (i, sql) in MIGRATIONS.iter().enumerate().take(n) {
        conn.execute_batch(sql).unwrap();
        conn.pragma_update(None, "user_version", (i + 1) as i64).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_from_empty_and_is_idempotent() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v as usize, MIGRATIONS.len());
    }

    #[test]
    fn refuses_a_newer_database() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        assert!(matches!(migrate(&mut conn), Err(StoreError::TooNew { found: 99, .. })));
    }
}
