//! SQLite access: one writer thread that group-commits, and a pool of
//! readers. Domain verbs live in the sibling modules as plain functions over a
//! `&Connection`, so they are tested on a temporary database without threads.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use super::StoreError;
use super::migrations;

/// Something to do after a batch commits (fan-out of events). Runs on the
/// writer thread in commit order, so every subscriber sees events in order.
pub type AfterCommit = Box<dyn FnOnce() + Send>;

/// The writer's context for one job: the job's savepoint and its deferred
/// post-commit actions.
pub struct WriteCtx<'a> {
    pub conn: &'a Connection,
    after: Vec<AfterCommit>,
}

impl WriteCtx<'_> {
    /// Runs `f` only once the batch holding this job is durably committed.
    pub fn after_commit(&mut self, f: impl FnOnce() + Send + 'static) {
        self.after.push(Box::new(f));
    }
}

/// A queued job: runs in the writer, says whether it succeeded, and returns
/// the completion to call with the batch's commit outcome.
type Job = Box<dyn FnOnce(&mut WriteCtx<'_>) -> (bool, Box<dyn FnOnce(bool) + Send>) + Send>;

/// Handle to the database. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    writer: mpsc::Sender<Job>,
    readers: Arc<Mutex<Vec<Connection>>>,
    path: Arc<PathBuf>,
}

/// Most jobs one commit may hold; more wait for the next commit.
const MAX_BATCH: usize = 256;

impl Db {
    /// Opens (creating if needed) the database at `path`, runs migrations and
    /// starts the writer thread.
    ///
    /// Going forward, a database that needs migrating is first copied (see
    /// [`rollback_copy`]). Going back, a database whose schema is newer than
    /// this build is replaced by that copy when it holds exactly this
    /// build's schema: a newer version migrated it and never became healthy
    /// (the box fell back to this one). Without such a copy it is refused.
    pub fn open(path: &Path) -> Result<Db, StoreError> {
        let mut conn = open_conn(path, false)?;
        let found = migrations::version(&conn)?;
        if found > migrations::LATEST {
            drop(conn);
            restore_rollback_copy(path, found)?;
            conn = open_conn(path, false)?;
        } else if found > 0 && found < migrations::LATEST {
            keep_copy(&conn, path)?;
        }
        migrations::migrate(&mut conn)?;
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("parvis-db-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|e| StoreError::Io(e.to_string()))?;
        Ok(Db { writer: tx, readers: Arc::new(Mutex::new(Vec::new())), path: Arc::new(path.to_path_buf()) })
    }

    /// Queues a write job now (so jobs submitted in order commit in order) and
    /// returns a receiver for its result, delivered after the commit.
    pub fn submit<T, F>(&self, f: F) -> oneshot::Receiver<Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCtx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (done_tx, done_rx) = oneshot::channel();
        let job: Job = Box::new(move |ctx| {
            let result = f(ctx);
            let ok = result.is_ok();
            let complete: Box<dyn FnOnce(bool) + Send> = Box::new(move |committed: bool| {
                let result = match result {
                    Ok(v) if committed => Ok(v),
                    Ok(_) => Err(StoreError::CommitFailed),
                    Err(e) => Err(e),
                };
                let _ = done_tx.send(result);
            });
            (ok, complete)
        });
        if self.writer.send(job).is_err() {
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(Err(StoreError::Closed));
            return rx;
        }
        done_rx
    }

    /// Before an update: copies the database as this build knows it, so
    /// this build can go back to it if the next one migrates the schema and
    /// then fails (the box falls back to this version).
    pub async fn keep_rollback_copy(&self) -> Result<(), StoreError> {
        let path = self.path.clone();
        self.read(move |c| keep_copy(c, &path)).await
    }

    /// This build runs well on this database: the copy kept for going back
    /// is no longer wanted (it would be older than the data).
    pub fn forget_rollback_copy(&self) {
        let copy = rollback_copy(&self.path);
        match std::fs::remove_file(&copy) {
            Ok(()) => tracing::info!("{} removed", copy.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("cannot remove {}: {e}", copy.display()),
        }
    }

    /// Folds the write-ahead log into the database file (on shutdown), so
    /// the file alone holds everything.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        let conn = open_conn(&self.path, false)?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// Runs a write job and waits for its durable commit.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCtx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(f).await.unwrap_or(Err(StoreError::Closed))
    }

    /// Runs a read on a pooled read-only connection, off the async threads.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.read_blocking(f)).await.map_err(|_| StoreError::Closed)?
    }

    /// Same as [`Db::read`], for callers already off the async threads.
    pub fn read_blocking<T>(&self, f: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let pooled = self.readers.lock().expect("reader pool poisoned").pop();
        let conn = match pooled {
            Some(c) => c,
            None => open_conn(&self.path, true)?,
        };
        let result = f(&conn);
        let mut pool = self.readers.lock().expect("reader pool poisoned");
        if pool.len() < 8 {
            pool.push(conn);
        }
        result
    }
}

/// `<db>.rollback`: the database copied before a migration or an update.
pub fn rollback_copy(path: &Path) -> PathBuf {
    sibling(path, ".rollback")
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

fn durable_rename(from: &Path, to: &Path) -> Result<(), StoreError> {
    crate::durable::rename(from, to).map_err(io)
}

/// Writes [`rollback_copy`] from `conn`: a consistent copy (VACUUM INTO)
/// written beside it first, synced, then renamed over the previous copy.
fn keep_copy(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let copy = rollback_copy(path);
    let tmp = sibling(path, ".rollback.tmp");
    let _ = std::fs::remove_file(&tmp);
    let tmp_name = tmp.to_str().ok_or_else(|| StoreError::Io(format!("{} is not UTF-8", tmp.display())))?;
    conn.execute("VACUUM INTO ?1", [tmp_name])?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io)?;
    durable_rename(&tmp, &copy)?;
    tracing::info!("database copied to {} (schema {})", copy.display(), migrations::version(conn)?);
    Ok(())
}

/// The database at `path` has schema `found`, newer than this build: put
/// back the copy taken before that schema came, if it holds exactly this
/// build's schema. The newer database is kept as `<db>.newer`.
fn restore_rollback_copy(path: &Path, found: usize) -> Result<(), StoreError> {
    let too_new = StoreError::TooNew { found, known: migrations::LATEST };
    let copy = rollback_copy(path);
    if !copy.exists() {
        return Err(too_new);
    }
    let held = open_conn(&copy, true).and_then(|c| migrations::version(&c))?;
    if held != migrations::LATEST {
        tracing::error!("{} holds schema {held}, not this version's {}: not restored", copy.display(), migrations::LATEST);
        return Err(too_new);
    }
    let newer = sibling(path, ".newer");
    for suffix in ["-wal", "-shm"] {
        let (from, to) = (sibling(path, suffix), sibling(&newer, suffix));
        let _ = std::fs::remove_file(&to);
        if from.exists() {
            durable_rename(&from, &to)?;
        }
    }
    durable_rename(path, &newer)?;
    durable_rename(&copy, path)?;
    tracing::warn!(
        "the database had schema {found}, from a newer version that did not run well; \
         restored the copy taken before it (schema {held}); the newer one is kept as {}",
        newer.display()
    );
    Ok(())
}

fn open_conn(path: &Path, read_only: bool) -> Result<Connection, StoreError> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    if !read_only {
        // WAL + FULL: an acknowledged message survives power loss, and group
        // commit keeps the fsync cost shared between many messages.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
    }
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// Takes whatever jobs are queued (up to [`MAX_BATCH`]), runs each in its own
/// savepoint inside one transaction, commits once, then completes them.
/// Batching is natural: while one commit's fsync runs, the next batch queues.
fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut completions = Vec::with_capacity(batch.len());
        let mut after_all: Vec<AfterCommit> = Vec::new();
        let committed = match conn.transaction() {
            Ok(mut tx) => {
                for job in batch {
                    let mut sp = match tx.savepoint() {
                        Ok(sp) => sp,
                        Err(e) => {
                            // Dropping the job drops its result sender: the
                            // caller sees StoreError::Closed.
                            tracing::error!("savepoint failed: {e}");
                            continue;
                        }
                    };
                    sp.set_drop_behavior(rusqlite::DropBehavior::Rollback);
                    let mut ctx = WriteCtx { conn: &sp, after: Vec::new() };
                    let (ok, complete) = job(&mut ctx);
                    let after = std::mem::take(&mut ctx.after);
                    if ok {
                        match sp.commit() {
                            Ok(()) => after_all.extend(after),
                            Err(e) => tracing::error!("savepoint release failed: {e}"),
                        }
                    } // else: dropping `sp` rolls the failed job back alone.
                    completions.push(complete);
                }
                match tx.commit() {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!("commit failed: {e}");
                        false
                    }
                }
            }
            Err(e) => {
                tracing::error!("begin failed: {e}");
                false
            }
        };
        if committed {
            for f in after_all {
                f();
            }
        }
        for complete in completions {
            complete(committed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{get_setting, set_setting};

    fn company(path: &Path) -> Option<String> {
        get_setting(&open_conn(path, true).unwrap(), "company").unwrap()
    }

    fn schema(path: &Path) -> usize {
        migrations::version(&open_conn(path, true).unwrap()).unwrap()
    }

    /// A database at this build's schema with a company name, and a copy of
    /// it kept (as before an update); then a newer version "migrates" it.
    fn migrated_by_a_newer_version(path: &Path) {
        let mut conn = open_conn(path, false).unwrap();
        migrations::migrate(&mut conn).unwrap();
        set_setting(&conn, "company", "Acme").unwrap();
        keep_copy(&conn, path).unwrap();
        conn.pragma_update(None, "user_version", (migrations::LATEST + 3) as i64).unwrap();
        set_setting(&conn, "company", "written by the newer version").unwrap();
    }

    #[test]
    fn a_migration_is_preceded_by_a_copy_that_health_removes() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("parvis.db");
        {
            let mut conn = open_conn(&path, false).unwrap();
            migrations::migrate_to(&mut conn, migrations::LATEST - 1);
            set_setting(&conn, "company", "Acme").unwrap();
        }
        let db = Db::open(&path).unwrap();
        assert_eq!(schema(&path), migrations::LATEST);
        let copy = rollback_copy(&path);
        assert_eq!(schema(&copy), migrations::LATEST - 1, "the copy is the database before the migration");
        assert_eq!(company(&copy).as_deref(), Some("Acme"));
        db.forget_rollback_copy();
        assert!(!copy.exists());
        // a database already at this schema is not copied again
        drop(db);
        let _db = Db::open(&path).unwrap();
        assert!(!copy.exists());
    }

    #[test]
    fn falling_back_from_a_failed_newer_version_restores_the_copy() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("parvis.db");
        migrated_by_a_newer_version(&path);
        let db = Db::open(&path).unwrap();
        assert_eq!(schema(&path), migrations::LATEST);
        assert_eq!(company(&path).as_deref(), Some("Acme"));
        let newer = d.path().join("parvis.db.newer");
        assert_eq!(schema(&newer), migrations::LATEST + 3, "the newer database is kept aside");
        assert_eq!(company(&newer).as_deref(), Some("written by the newer version"));
        assert!(!rollback_copy(&path).exists(), "the copy became the database");
        db.checkpoint().unwrap();
        let left: Vec<String> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert!(!left.iter().any(|n| n.contains("rollback")), "nothing of the copy is left: {left:?}");
    }

    #[test]
    fn a_newer_database_without_a_matching_copy_is_refused_untouched() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("parvis.db");
        migrated_by_a_newer_version(&path);
        let copy = rollback_copy(&path);
        // a copy of another schema is no way back
        open_conn(&copy, false).unwrap().pragma_update(None, "user_version", (migrations::LATEST - 1) as i64).unwrap();
        assert!(matches!(Db::open(&path), Err(StoreError::TooNew { .. })));
        std::fs::remove_file(&copy).unwrap();
        let err = Db::open(&path).err().expect("refused");
        assert!(err.to_string().contains("newer than this parvis"), "{err}");
        assert_eq!(schema(&path), migrations::LATEST + 3);
        assert_eq!(company(&path).as_deref(), Some("written by the newer version"));
    }
}
