//! The store: SQLite behind domain verbs (`rooms::post_message`, …). SQL
//! stays here; handlers call verbs.

pub mod calls;
pub mod db;
pub mod files;
pub mod guests;
pub mod ids;
pub mod migrations;
pub mod rooms;
pub mod users;

pub use db::{Db, WriteCtx};
pub use ids::{RoomId, Seq, UserId};

/// Milliseconds since the Unix epoch; passed in, never read inside the store.
pub type Millis = i64;

/// Store errors. The domain ones map to precise client errors; the others
/// are internal and hidden from clients.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("not a member of this room")]
    NotMember,
    #[error("not allowed: {0}")]
    Forbidden(&'static str),
    #[error("invalid: {0}")]
    Invalid(String),
    /// Over a size limit (a message body).
    #[error("too large: {0}")]
    TooLarge(String),
    /// Over a storage quota (files).
    #[error("over quota: {0}")]
    Quota(String),
    #[error("already exists: {0}")]
    Conflict(&'static str),
    #[error("room is archived")]
    Archived,
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database schema version {found} is newer than this parvis ({known})")]
    TooNew { found: usize, known: usize },
    /// The write was rolled back (its batch failed): nothing is stored, and
    /// a retry is safe.
    #[error("not stored: the write was rolled back")]
    NotStored,
    /// The commit failed in a way that may or may not have reached the
    /// disk: a retry (deduplicated by its id) tells.
    #[error("commit outcome unknown")]
    OutcomeUnknown,
    #[error("database closed")]
    Closed,
    #[error("io: {0}")]
    Io(String),
}

impl StoreError {
    /// True for SQLite UNIQUE violations (a concurrent duplicate).
    pub fn is_unique_violation(e: &rusqlite::Error) -> bool {
        matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
    }
}

/// Settings table helpers.
pub fn get_setting(conn: &rusqlite::Connection, key: &str) -> Result<Option<String>, StoreError> {
    use rusqlite::OptionalExtension;
    Ok(conn.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| r.get(0)).optional()?)
}

pub fn set_setting(conn: &rusqlite::Connection, key: &str, value: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO settings(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [key, value],
    )?;
    Ok(())
}

#[cfg(test)]
pub(crate) fn test_conn() -> rusqlite::Connection {
    let mut conn = rusqlite::Connection::open_in_memory().unwrap();
    conn.pragma_update(None, "foreign_keys", "ON").unwrap();
    migrations::migrate(&mut conn).unwrap();
    conn
}
