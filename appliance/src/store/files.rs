//! Files in conversations. A blob is a file's bytes, stored once under its
//! SHA-256 (`files/` on disk) and counted by the rows that refer to it: a
//! finished upload not yet sent, or an attachment of a message. The room
//! owns its attachments: deleting the message drops them, and a blob no row
//! refers to is collected. An upload is a tus upload in progress (its bytes
//! in `uploads/` until complete); what it declares counts against the
//! quotas from the start, so parallel uploads cannot overrun them.

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Millis, RoomId, Seq, StoreError, UserId};

/// A file of a message, as events, history and the Files panel carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileRef {
    /// The attachment (download: `<files origin>/<room link>/<id>/<name>`).
    pub id: i64,
    /// The name it was sent with (no folders).
    pub name: String,
    /// Bytes.
    pub size: i64,
    /// The type found in its first bytes (never what the sender claimed).
    pub mime: String,
    /// Removed by the retention policy: the name stays, the bytes are gone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gone: bool,
    /// An image's size in pixels, upright (its previews exist then:
    /// `?thumb=320` and `?thumb=1280` on its download link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
}

/// The columns of a [`FileRef`], attachments `a` joined with blobs `b`.
const FILE_COLS: &str = "a.id, a.name, a.size, a.mime, a.gone_ms IS NOT NULL, b.width, b.height";

fn file_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileRef> {
    Ok(FileRef { id: r.get(0)?, name: r.get(1)?, size: r.get(2)?, mime: r.get(3)?, gone: r.get(4)?, width: r.get(5)?, height: r.get(6)? })
}

/// The limits an upload must fit in (bytes; 0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    pub max_file: i64,
    pub per_user: i64,
    pub per_room: i64,
    pub per_box: i64,
}

/// An upload in progress (or finished, not sent yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub id: String,
    pub user: UserId,
    pub room: RoomId,
    pub name: String,
    pub length: i64,
    /// Bytes durably written.
    pub received: i64,
    pub created: Millis,
    pub expires: Millis,
    /// Complete: the blob it became.
    pub hash: Option<String>,
}

/// Files a message may carry.
pub const MAX_FILES_PER_MESSAGE: usize = 10;
/// Longest file name kept (bytes).
pub const MAX_NAME_BYTES: usize = 255;

/// A file name fit to show and to put in a download's header: the last path
/// component, control characters out, at most 255 bytes; never empty.
pub fn clean_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let mut out = String::new();
    for c in last.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_NAME_BYTES {
            break;
        }
        out.push(c);
    }
    let out = out.trim().to_string();
    if out.is_empty() || out == "." || out == ".." { "file".into() } else { out }
}

const UPLOAD_COLS: &str = "id, user_id, room_id, name, length, received, created_ms, expires_ms, hash";

fn upload_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Upload> {
    Ok(Upload {
        id: r.get(0)?,
        user: r.get(1)?,
        room: r.get(2)?,
        name: r.get(3)?,
        length: r.get(4)?,
        received: r.get(5)?,
        created: r.get(6)?,
        expires: r.get(7)?,
        hash: r.get(8)?,
    })
}

/// Whose files a quota counts: a person's, or a conversation's.
#[derive(Clone, Copy)]
enum Owner {
    User(UserId),
    Room(RoomId),
}

/// Bytes the files of `owner` take: sent and still kept, and being uploaded.
fn usage(conn: &Connection, owner: Owner) -> Result<i64, StoreError> {
    let (sent, uploading, id) = match owner {
        Owner::User(u) => ("sender", "user_id", u.0),
        Owner::Room(r) => ("room_id", "room_id", r.0),
    };
    Ok(conn.query_row(
        &format!(
            "SELECT (SELECT COALESCE(SUM(size), 0) FROM attachments WHERE {sent} = ?1 AND gone_ms IS NULL)
                  + (SELECT COALESCE(SUM(length), 0) FROM uploads WHERE {uploading} = ?1)"
        ),
        [id],
        |r| r.get(0),
    )?)
}

/// Bytes a person's files take (sent and being uploaded).
pub fn user_usage(conn: &Connection, user: UserId) -> Result<i64, StoreError> {
    usage(conn, Owner::User(user))
}

/// Bytes on disk for files (each blob once) and promised to uploads.
pub fn box_usage(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row(
        "SELECT (SELECT COALESCE(SUM(size), 0) FROM blobs)
              + (SELECT COALESCE(SUM(length), 0) FROM uploads WHERE hash IS NULL)",
        [],
        |r| r.get(0),
    )?)
}

fn mib(bytes: i64) -> String {
    let m = bytes as f64 / (1024.0 * 1024.0);
    if m >= 1024.0 { format!("{:.1} GiB", m / 1024.0) } else { format!("{m:.0} MiB") }
}

/// Starts an upload of `length` bytes to `room` if it fits: the sender is a
/// member of the (live) room, the file is within the maximum size and
/// every quota it counts against.
#[allow(clippy::too_many_arguments)]
pub fn create_upload(
    conn: &Connection,
    id: &str,
    user: UserId,
    room: RoomId,
    name: &str,
    length: i64,
    quotas: Quotas,
    now: Millis,
    expires: Millis,
) -> Result<Upload, StoreError> {
    super::rooms::check_writable(conn, room, user)?;
    if length < 0 {
        return Err(StoreError::Invalid("Upload-Length must be a number of bytes".into()));
    }
    if quotas.max_file > 0 && length > quotas.max_file {
        return Err(StoreError::TooLarge(format!("files are limited to {} on this box", mib(quotas.max_file))));
    }
    let over = |used: i64, quota: i64| quota > 0 && used + length > quota;
    if over(user_usage(conn, user)?, quotas.per_user) {
        return Err(StoreError::Quota(format!("your files would take more than your {} quota", mib(quotas.per_user))));
    }
    if over(usage(conn, Owner::Room(room))?, quotas.per_room) {
        return Err(StoreError::Quota(format!("this conversation's files would take more than its {} quota", mib(quotas.per_room))));
    }
    if over(box_usage(conn)?, quotas.per_box) {
        return Err(StoreError::Quota(format!("the box's storage for files ({}) is full", mib(quotas.per_box))));
    }
    let name = clean_name(name);
    conn.execute(
        "INSERT INTO uploads(id, user_id, room_id, name, length, received, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7)",
        params![id, user, room, name, length, now, expires],
    )?;
    Ok(Upload { id: id.into(), user, room, name, length, received: 0, created: now, expires, hash: None })
}

/// An upload, if it is this person's.
pub fn get_upload(conn: &Connection, id: &str, user: UserId) -> Result<Option<Upload>, StoreError> {
    Ok(conn
        .query_row(&format!("SELECT {UPLOAD_COLS} FROM uploads WHERE id = ?1 AND user_id = ?2"), params![id, user], upload_from_row)
        .optional()?)
}

/// Every upload (at start: their partial files are checked against it).
pub fn all_uploads(conn: &Connection) -> Result<Vec<Upload>, StoreError> {
    let mut stmt = conn.prepare(&format!("SELECT {UPLOAD_COLS} FROM uploads"))?;
    let rows = stmt.query_map([], upload_from_row)?.collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Records bytes durably written (after their fsync).
pub fn set_received(conn: &Connection, id: &str, received: i64) -> Result<(), StoreError> {
    conn.execute("UPDATE uploads SET received = ?2 WHERE id = ?1 AND hash IS NULL", params![id, received])?;
    Ok(())
}

/// The upload's bytes are a blob now (its file is already in `files/`):
/// the blob is recorded, or counted once more if it was there.
pub fn complete_upload(conn: &Connection, id: &str, hash: &str, mime: &str, dims: Option<(u32, u32)>, now: Millis) -> Result<(), StoreError> {
    let length: i64 = conn.query_row("SELECT length FROM uploads WHERE id = ?1 AND hash IS NULL", [id], |r| r.get(0))?;
    let (w, h) = (dims.map(|d| d.0), dims.map(|d| d.1));
    conn.execute(
        "INSERT INTO blobs(hash, size, mime, refs, created_ms, width, height) VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6)
         ON CONFLICT(hash) DO UPDATE SET refs = refs + 1, width = COALESCE(width, excluded.width), height = COALESCE(height, excluded.height)",
        params![hash, length, mime, now, w, h],
    )?;
    conn.execute("UPDATE uploads SET hash = ?2, received = length WHERE id = ?1", params![id, hash])?;
    Ok(())
}

fn unref(conn: &Connection, hash: &str) -> Result<(), StoreError> {
    conn.execute("UPDATE blobs SET refs = refs - 1 WHERE hash = ?1", [hash])?;
    Ok(())
}

/// Ends an upload (termination, expiry): its row goes, its blob loses a
/// reference.
pub fn delete_upload(conn: &Connection, id: &str) -> Result<(), StoreError> {
    let hash: Option<Option<String>> = conn.query_row("SELECT hash FROM uploads WHERE id = ?1", [id], |r| r.get(0)).optional()?;
    if let Some(Some(h)) = &hash {
        unref(conn, h)?;
    }
    conn.execute("DELETE FROM uploads WHERE id = ?1", [id])?;
    Ok(())
}

/// Turns finished uploads of `sender` into the attachments of message
/// `seq` of `room` (within the message's transaction): each upload's
/// reference to its blob becomes the attachment's.
pub fn attach(conn: &Connection, room: RoomId, seq: Seq, sender: UserId, uploads: &[String], now: Millis) -> Result<Vec<FileRef>, StoreError> {
    if uploads.len() > MAX_FILES_PER_MESSAGE {
        return Err(StoreError::Invalid(format!("a message carries at most {MAX_FILES_PER_MESSAGE} files")));
    }
    let mut out = Vec::with_capacity(uploads.len());
    for id in uploads {
        let up = get_upload(conn, id, sender)?.ok_or_else(|| StoreError::Invalid(format!("files: no upload {id:?} of yours")))?;
        if up.room != room {
            return Err(StoreError::Invalid(format!("files: upload {id:?} was made for another conversation")));
        }
        let Some(hash) = up.hash else {
            return Err(StoreError::Invalid(format!("files: upload {id:?} is not complete")));
        };
        let (mime, width, height): (String, Option<u32>, Option<u32>) =
            conn.query_row("SELECT mime, width, height FROM blobs WHERE hash = ?1", [&hash], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        conn.execute(
            "INSERT INTO attachments(room_id, seq, sender, name, hash, size, mime, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![room, seq, sender, up.name, hash, up.length, mime, now],
        )?;
        out.push(FileRef { id: conn.last_insert_rowid(), name: up.name, size: up.length, mime, gone: false, width, height });
        conn.execute("DELETE FROM uploads WHERE id = ?1", [id])?;
    }
    Ok(out)
}

/// The files of a message (history).
pub fn message_files(conn: &Connection, room: RoomId, seq: Seq) -> Result<Vec<FileRef>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {FILE_COLS} FROM attachments a LEFT JOIN blobs b ON b.hash = a.hash WHERE a.room_id = ?1 AND a.seq = ?2 ORDER BY a.id"
    ))?;
    let rows = stmt.query_map(params![room, seq], file_from_row)?.collect::<Result<_, _>>()?;
    Ok(rows)
}

/// A deleted message's files go for everyone.
pub fn drop_message_files(conn: &Connection, room: RoomId, seq: Seq) -> Result<(), StoreError> {
    let hashes: Vec<String> = conn
        .prepare_cached("SELECT hash FROM attachments WHERE room_id = ?1 AND seq = ?2 AND hash IS NOT NULL")?
        .query_map(params![room, seq], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for h in &hashes {
        unref(conn, h)?;
    }
    conn.execute("DELETE FROM attachments WHERE room_id = ?1 AND seq = ?2", params![room, seq])?;
    Ok(())
}

/// A file of the Files panel.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SharedFile {
    #[serde(flatten)]
    pub file: FileRef,
    /// The message it came with.
    pub seq: Seq,
    pub sender: UserId,
    pub ts: Millis,
}

/// Files shared in a room that `viewer` may see (its history's floor
/// applies, as for messages), newest first, optionally whose name contains
/// `q`; `before`: older than this attachment id.
pub fn room_files(
    conn: &Connection,
    room: RoomId,
    viewer: UserId,
    q: Option<&str>,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<SharedFile>, StoreError> {
    super::rooms::member_role(conn, room, viewer)?;
    let floor = super::rooms::history_floor(conn, room, viewer)?;
    let pattern = q.map(|q| format!("%{}%", q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")));
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {FILE_COLS}, a.seq, a.sender, a.created_ms FROM attachments a LEFT JOIN blobs b ON b.hash = a.hash
         WHERE a.room_id = ?1 AND a.seq > ?2 AND a.id < ?3 AND (?4 IS NULL OR a.name LIKE ?4 ESCAPE '\\')
         ORDER BY a.id DESC LIMIT ?5"
    ))?;
    let rows = stmt
        .query_map(params![room, floor, before.unwrap_or(i64::MAX), pattern, limit.clamp(1, 200)], |r| {
            Ok(SharedFile { file: file_from_row(r)?, seq: r.get(7)?, sender: r.get(8)?, ts: r.get(9)? })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// What the download origin serves `viewer` for attachment `id` of `room`:
/// its blob, name and type; nothing for a file removed, of another room,
/// from before the viewer's history starts (a guest's admission), or for a
/// viewer no longer in the room or disabled (a link outlives neither).
pub fn servable(conn: &Connection, room: RoomId, viewer: UserId, id: i64) -> Result<Option<(String, String, String, i64)>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT a.hash, a.name, a.mime, a.size FROM attachments a
             JOIN members m ON m.room_id = a.room_id AND m.user_id = ?3 AND a.seq > m.since_seq
             JOIN users u ON u.id = m.user_id AND u.disabled = 0
             WHERE a.id = ?1 AND a.room_id = ?2 AND a.hash IS NOT NULL",
            params![id, room, viewer],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?)
}

/// Ends uploads left unfinished past their expiry and removes attachments
/// older than `cutoff` (the retention policy; `None`: keep them). Returns
/// the expired uploads (their partial files are deleted by the caller).
pub fn expire(conn: &Connection, now: Millis, cutoff: Option<Millis>) -> Result<Vec<String>, StoreError> {
    let stale: Vec<String> = conn
        .prepare("SELECT id FROM uploads WHERE expires_ms <= ?1")?
        .query_map([now], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for id in &stale {
        delete_upload(conn, id)?;
    }
    if let Some(cutoff) = cutoff {
        let old: Vec<(i64, String)> = conn
            .prepare("SELECT id, hash FROM attachments WHERE created_ms < ?1 AND hash IS NOT NULL")?
            .query_map([cutoff], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for (id, hash) in old {
            unref(conn, &hash)?;
            conn.execute("UPDATE attachments SET hash = NULL, gone_ms = ?2 WHERE id = ?1", params![id, now])?;
        }
    }
    Ok(stale)
}

/// Blobs no row refers to any more: their rows go, their hashes are
/// returned for the caller to delete the files (row first: a crash in
/// between leaves a file without a row, which the next start removes, never
/// a row without its file).
pub fn collect(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let dead: Vec<String> =
        conn.prepare("SELECT hash FROM blobs WHERE refs <= 0")?.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    conn.execute("DELETE FROM blobs WHERE refs <= 0", [])?;
    Ok(dead)
}

/// Whether a blob is recorded (at start: files on disk without a row go).
pub fn blob_known(conn: &Connection, hash: &str) -> Result<bool, StoreError> {
    Ok(conn.query_row("SELECT EXISTS(SELECT 1 FROM blobs WHERE hash = ?1)", [hash], |r| r.get(0))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::rooms::{Visibility, create_group, delete_message, post_message_with_files, PostOutcome};
    use crate::store::users::{Role, create_user};
    use crate::store::test_conn;

    const Q: Quotas = Quotas { max_file: 1000, per_user: 1500, per_room: 2500, per_box: 3000 };

    fn setup() -> (Connection, UserId, UserId, RoomId) {
        let c = test_conn();
        let a = create_user(&c, "alice", "Alice", "h", Role::Admin, 1).unwrap().id;
        let b = create_user(&c, "bob", "Bob", "h", Role::User, 1).unwrap().id;
        let r = create_group(&c, a, "General", "", Visibility::Open, &[b], 1).unwrap().0;
        (c, a, b, r)
    }

    fn finished(c: &Connection, id: &str, user: UserId, room: RoomId, len: i64, hash: &str) {
        create_upload(c, id, user, room, "report.pdf", len, Q, 10, 1000).unwrap();
        complete_upload(c, id, hash, "application/pdf", None, 11).unwrap();
    }

    fn refs(c: &Connection, hash: &str) -> Option<i64> {
        c.query_row("SELECT refs FROM blobs WHERE hash = ?1", [hash], |r| r.get(0)).optional().unwrap()
    }

    #[test]
    fn names_are_cleaned() {
        assert_eq!(clean_name("../../etc/passwd"), "passwd");
        assert_eq!(clean_name("C:\\Users\\a\\scan 1.pdf"), "scan 1.pdf");
        assert_eq!(clean_name("a\u{0}b\r\n.txt"), "ab.txt");
        assert_eq!(clean_name("  "), "file");
        assert_eq!(clean_name(".."), "file");
        assert!(clean_name(&"é".repeat(300)).len() <= MAX_NAME_BYTES);
    }

    #[test]
    fn quotas_count_uploads_in_progress_and_sent_files() {
        let (c, a, b, r) = setup();
        assert!(matches!(create_upload(&c, "big", a, r, "x", 1001, Q, 1, 9), Err(StoreError::TooLarge(_))));
        create_upload(&c, "u1", a, r, "x", 1000, Q, 1, 9).unwrap();
        // 1000 promised + 600 > 1500 for alice
        assert!(matches!(create_upload(&c, "u2", a, r, "x", 600, Q, 1, 9), Err(StoreError::Quota(_))));
        create_upload(&c, "u3", b, r, "x", 1000, Q, 1, 9).unwrap();
        // the room: 2000 + 600 > 2500
        assert!(matches!(create_upload(&c, "u4", b, r, "x", 600, Q, 1, 9), Err(StoreError::Quota(_))));
        delete_upload(&c, "u1").unwrap();
        create_upload(&c, "u5", a, r, "x", 600, Q, 1, 9).unwrap();
        // not a member, not a room
        let e = create_user(&c, "eve", "Eve", "h", Role::User, 1).unwrap().id;
        assert!(matches!(create_upload(&c, "u6", e, r, "x", 1, Q, 1, 9), Err(StoreError::NotMember)));
        assert!(get_upload(&c, "u5", b).unwrap().is_none(), "someone else's upload is not found");
        assert_eq!(get_upload(&c, "u5", a).unwrap().unwrap().length, 600);
    }

    #[test]
    fn identical_files_are_one_blob_counted_by_each_attachment_and_collected_when_unreferenced() {
        let (c, a, b, r) = setup();
        finished(&c, "u1", a, r, 100, "h1");
        finished(&c, "u2", b, r, 100, "h1");
        assert_eq!(refs(&c, "h1"), Some(2));
        assert_eq!(box_usage(&c).unwrap(), 100, "stored once");
        let PostOutcome::Stored { seq: s1, .. } = post_message_with_files(&c, r, a, "m1", "", None, &["u1".into()], 20).unwrap() else { panic!() };
        let PostOutcome::Stored { seq: s2, .. } = post_message_with_files(&c, r, b, "m2", "same", None, &["u2".into()], 21).unwrap() else { panic!() };
        assert_eq!(refs(&c, "h1"), Some(2), "the uploads' references became the attachments'");
        assert!(get_upload(&c, "u1", a).unwrap().is_none());
        let files = message_files(&c, r, s1).unwrap();
        assert_eq!((files[0].name.as_str(), files[0].size, files[0].mime.as_str()), ("report.pdf", 100, "application/pdf"));
        // an upload is attached once only
        assert!(matches!(post_message_with_files(&c, r, a, "m3", "", None, &["u1".into()], 22), Err(StoreError::Invalid(_))));
        delete_message(&c, r, a, false, s1, 30).unwrap();
        assert!(message_files(&c, r, s1).unwrap().is_empty());
        assert_eq!(refs(&c, "h1"), Some(1));
        assert!(collect(&c).unwrap().is_empty());
        // a moderator (alice, the owner) deletes bob's message: the last reference goes
        delete_message(&c, r, a, false, s2, 31).unwrap();
        assert_eq!(collect(&c).unwrap(), vec!["h1".to_string()]);
        assert!(!blob_known(&c, "h1").unwrap());
    }

    #[test]
    fn only_ones_own_finished_uploads_for_this_room_are_attached() {
        let (c, a, b, r) = setup();
        let other = create_group(&c, a, "Other", "", Visibility::Open, &[b], 1).unwrap().0;
        finished(&c, "mine", a, r, 10, "h1");
        create_upload(&c, "half", a, r, "x", 10, Q, 1, 99).unwrap();
        finished(&c, "elsewhere", a, other, 10, "h2");
        for (cid, up) in [("x1", "mine"), ("x2", "half"), ("x3", "elsewhere")] {
            let who = if up == "mine" { b } else { a };
            assert!(matches!(post_message_with_files(&c, r, who, cid, "", None, &[up.into()], 5), Err(StoreError::Invalid(_))), "{up}");
        }
        // a failed message leaves the uploads as they were
        assert!(get_upload(&c, "mine", a).unwrap().is_some());
        let too_many: Vec<String> = (0..11).map(|i| format!("u{i}")).collect();
        assert!(matches!(post_message_with_files(&c, r, a, "x4", "", None, &too_many, 5), Err(StoreError::Invalid(_))));
        // an empty message without files is still refused
        assert!(matches!(post_message_with_files(&c, r, a, "x5", " ", None, &[], 5), Err(StoreError::Invalid(_))));
    }

    #[test]
    fn expiry_ends_abandoned_uploads_and_retention_removes_old_files_but_keeps_their_names() {
        let (c, a, _, r) = setup();
        create_upload(&c, "stale", a, r, "x", 10, Q, 1, 50).unwrap();
        finished(&c, "sent", a, r, 10, "h1");
        let PostOutcome::Stored { seq, .. } = post_message_with_files(&c, r, a, "m", "", None, &["sent".into()], 20).unwrap() else { panic!() };
        assert!(expire(&c, 49, None).unwrap().is_empty());
        assert_eq!(expire(&c, 50, None).unwrap(), vec!["stale".to_string()]);
        assert!(get_upload(&c, "stale", a).unwrap().is_none());
        assert!(expire(&c, 60, Some(20)).unwrap().is_empty());
        assert!(!message_files(&c, r, seq).unwrap()[0].gone, "not older than the cutoff");
        expire(&c, 60, Some(21)).unwrap();
        let f = &message_files(&c, r, seq).unwrap()[0];
        assert!(f.gone && f.name == "report.pdf");
        assert!(servable(&c, r, a, f.id).unwrap().is_none());
        assert_eq!(collect(&c).unwrap(), vec!["h1".to_string()]);
        assert_eq!(user_usage(&c, a).unwrap(), 0);
    }

    #[test]
    fn the_files_panel_lists_newest_first_by_name_and_only_the_rooms_files() {
        let (c, a, b, r) = setup();
        for (i, name) in ["Invoice March.pdf", "photo_1.jpg", "100%.txt"].iter().enumerate() {
            let id = format!("u{i}");
            create_upload(&c, &id, a, r, name, 10, Q, 1, 99).unwrap();
            complete_upload(&c, &id, &format!("h{i}"), "text/plain", None, 2).unwrap();
            post_message_with_files(&c, r, a, &format!("m{i}"), "", None, &[id], 3 + i as i64).unwrap();
        }
        let all = room_files(&c, r, b, None, None, 50).unwrap();
        assert_eq!(all.iter().map(|f| f.file.name.as_str()).collect::<Vec<_>>(), ["100%.txt", "photo_1.jpg", "Invoice March.pdf"]);
        assert_eq!(room_files(&c, r, b, Some("invoice"), None, 50).unwrap().len(), 1);
        assert_eq!(room_files(&c, r, b, Some("%"), None, 50).unwrap().len(), 1, "% is literal");
        assert_eq!(room_files(&c, r, b, Some("o_"), None, 50).unwrap().len(), 1, "_ is literal");
        assert_eq!(room_files(&c, r, b, None, Some(all[1].file.id), 50).unwrap().len(), 1);
        let e = create_user(&c, "eve", "Eve", "h", Role::User, 1).unwrap().id;
        assert!(matches!(room_files(&c, r, e, None, None, 50), Err(StoreError::NotMember)));
        let other = create_group(&c, a, "Other", "", Visibility::Open, &[], 1).unwrap().0;
        assert!(servable(&c, other, a, all[0].file.id).unwrap().is_none(), "another room's file");
        assert!(servable(&c, r, b, all[0].file.id).unwrap().is_some());
        assert!(servable(&c, r, e, all[0].file.id).unwrap().is_none(), "not a member");
        // a viewer whose history starts later (a guest let in afterwards) does not get earlier files
        c.execute("UPDATE members SET since_seq = ?3 WHERE room_id = ?1 AND user_id = ?2", params![r, b, all[0].seq]).unwrap();
        assert!(servable(&c, r, b, all[0].file.id).unwrap().is_none(), "before its history");
        assert!(room_files(&c, r, b, None, None, 50).unwrap().is_empty());
        c.execute("UPDATE members SET since_seq = 0 WHERE room_id = ?1 AND user_id = ?2", params![r, b]).unwrap();
        c.execute("UPDATE users SET disabled = 1 WHERE id = ?1", [b]).unwrap();
        assert!(servable(&c, r, b, all[0].file.id).unwrap().is_none(), "disabled");
    }
}
