//! SQLite access: one writer thread that group-commits, and a pool of
//! readers. Domain verbs live in the sibling modules as plain functions over a
//! `&Connection`, so they are tested on a temporary database without threads.

use std::path::{Path, PathBuf};
use std::collections::VecDeque;
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

/// What became of a batch, for each job that ran in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Durably committed.
    Committed,
    /// Rolled back: nothing of it is stored.
    NotStored,
    /// The commit failed in a way that may or may not have reached the disk
    /// (an I/O error while writing or syncing the log).
    Unknown,
}

/// The completion of a job that ran: told the batch's outcome.
type Completion = Box<dyn FnOnce(Outcome) + Send>;

/// A queued job. Given a context it runs in the writer and returns whether
/// it succeeded and its completion; given none it was abandoned (the
/// database stayed unusable) and tells its caller so.
type Job = Box<dyn FnOnce(Option<&mut WriteCtx<'_>>) -> Option<(bool, Completion)> + Send>;

/// Handle to the database. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    writer: mpsc::Sender<Job>,
    readers: Arc<Mutex<Vec<Connection>>>,
    /// Reads running at once, at most [`MAX_READERS`]: a flood of requests
    /// waits here instead of starting a thread and a connection each.
    reading: Arc<tokio::sync::Semaphore>,
    path: Arc<PathBuf>,
}

/// Read connections (and blocking threads reading) at most.
pub const MAX_READERS: usize = 8;

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
        let writer_path = path.to_path_buf();
        std::thread::Builder::new()
            .name("parvis-db-writer".into())
            .spawn(move || writer_loop(&writer_path, conn, rx))
            .map_err(|e| StoreError::Io(e.to_string()))?;
        Ok(Db {
            writer: tx,
            readers: Arc::new(Mutex::new(Vec::new())),
            reading: Arc::new(tokio::sync::Semaphore::new(MAX_READERS)),
            path: Arc::new(path.to_path_buf()),
        })
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
            let Some(ctx) = ctx else {
                let _ = done_tx.send(Err(StoreError::NotStored));
                return None;
            };
            let result = f(ctx);
            let ok = result.is_ok();
            let complete: Completion = Box::new(move |outcome| {
                let result = match (result, outcome) {
                    (Ok(v), Outcome::Committed) => Ok(v),
                    (_, Outcome::Unknown) => Err(StoreError::OutcomeUnknown),
                    // a job that failed says why; one rolled back with its batch, that
                    (Err(e), _) => Err(e),
                    (Ok(_), Outcome::NotStored) => Err(StoreError::NotStored),
                };
                let _ = done_tx.send(result);
            });
            Some((ok, complete))
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
        let permit = self.reading.clone().acquire_owned().await.map_err(|_| StoreError::Closed)?;
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            db.read_blocking(f)
        })
        .await
        .map_err(|_| StoreError::Closed)?
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
        if pool.len() < MAX_READERS {
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
    crate::system::durable::rename(from, to).map_err(io)
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
    // Temporary data (statement and savepoint journals, sorts) in memory:
    // on the box Parvis runs unprivileged with no writable temporary
    // directory, and a savepoint that outgrew 64 KiB (FTS merges under a
    // reconnect storm) failed with "disk I/O error" for want of a file.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    if !read_only {
        // WAL + FULL: an acknowledged message survives power loss, and group
        // commit keeps the fsync cost shared between many messages.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
    }
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// Whether a failed commit may nonetheless have reached the disk: an I/O
/// error while the log was written or synced. Any other failure (busy,
/// full, constraint) left nothing behind.
fn commit_outcome(e: &rusqlite::Error) -> Outcome {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::SystemIoFailure | rusqlite::ErrorCode::DatabaseCorrupt) => Outcome::Unknown,
        _ => Outcome::NotStored,
    }
}

/// Runs as many queued jobs as one batch holds, each in its own savepoint
/// inside one transaction, then commits once. Jobs not run stay in
/// `queue` (for the next batch). Returns false when the batch failed.
///
/// SQLite rolls a whole transaction back by itself on some errors (I/O,
/// disk full): that is checked after every job, and the batch ends there,
/// so no later job can run outside the transaction (a SAVEPOINT then starts
/// a transaction of its own, which its RELEASE commits: stored, and yet
/// reported failed).
fn run_batch(conn: &mut Connection, queue: &mut VecDeque<Job>) -> bool {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        tracing::error!("database: begin failed: {e}");
        return false;
    }
    let mut ran: Vec<(bool, Completion)> = Vec::with_capacity(queue.len());
    let mut after_all: Vec<AfterCommit> = Vec::new();
    let mut broken = false;
    while ran.len() < MAX_BATCH {
        let Some(job) = queue.pop_front() else { break };
        let mut sp = match conn.savepoint() {
            Ok(sp) => sp,
            Err(e) => {
                tracing::error!("database: savepoint failed: {e}");
                queue.push_front(job);
                broken = true;
                break;
            }
        };
        sp.set_drop_behavior(rusqlite::DropBehavior::Rollback);
        let mut ctx = WriteCtx { conn: &sp, after: Vec::new() };
        let Some((ok, complete)) = job(Some(&mut ctx)) else { continue };
        let after = std::mem::take(&mut ctx.after);
        if sp.is_autocommit() {
            // the transaction is gone, this job's work with it
            tracing::error!("database: the transaction was rolled back under a job; {} queued jobs wait for the next batch", queue.len());
            sp.set_drop_behavior(rusqlite::DropBehavior::Ignore);
            drop(sp);
            ran.push((false, complete));
            broken = true;
            break;
        }
        let released = if ok {
            match sp.commit() {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!("database: savepoint release failed: {e}");
                    false
                }
            }
        } else {
            drop(sp); // rolls the failed job back alone
            false
        };
        if released {
            after_all.extend(after);
        }
        ran.push((released, complete));
        if conn.is_autocommit() {
            broken = true;
            break;
        }
    }
    let outcome = if broken {
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        Outcome::NotStored
    } else {
        match conn.execute_batch("COMMIT") {
            Ok(()) => Outcome::Committed,
            Err(e) => {
                let outcome = commit_outcome(&e);
                tracing::error!("database: commit failed ({outcome:?}): {e}");
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                outcome
            }
        }
    };
    if outcome == Outcome::Committed {
        for f in after_all {
            f();
        }
    }
    for (ok, complete) in ran {
        // a job that failed by itself was rolled back alone: it reports its
        // own error whatever became of the batch
        complete(if ok { outcome } else { Outcome::NotStored });
    }
    outcome == Outcome::Committed
}

/// The writer thread: takes whatever jobs are queued (up to [`MAX_BATCH`])
/// and runs them as one batch. Batching is natural: while one commit's
/// fsync runs, the next batch queues. A failed batch is followed by a
/// pause (50 ms, doubling to 2 s); after three in a row the connection is
/// opened again; after a minute of failures the waiting jobs are answered
/// "not stored" rather than kept waiting, and new ones are still tried.
fn writer_loop(path: &Path, mut conn: Connection, rx: mpsc::Receiver<Job>) {
    let mut queue: VecDeque<Job> = VecDeque::new();
    let mut failures: u32 = 0;
    loop {
        if queue.is_empty() {
            match rx.recv() {
                Ok(job) => queue.push_back(job),
                Err(_) => return,
            }
        }
        while queue.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => queue.push_back(job),
                Err(_) => break,
            }
        }
        if run_batch(&mut conn, &mut queue) {
            if failures > 0 {
                tracing::info!("database: writing again after {failures} failed batches");
            }
            failures = 0;
            continue;
        }
        failures += 1;
        if failures.is_multiple_of(3) {
            match open_conn(path, false) {
                Ok(fresh) => {
                    tracing::warn!("database: connection opened again after {failures} failed batches");
                    conn = fresh;
                }
                Err(e) => tracing::error!("database: cannot open it again: {e}"),
            }
        }
        if failures >= 35 {
            tracing::error!("database: still failing; {} waiting writes are answered \"not stored\"", queue.len());
            for job in queue.drain(..) {
                job(None);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis((50u64 << failures.min(6)).min(2000)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{get_setting, set_setting};

    /// A job that holds the writer until `go` is sent, so that the jobs
    /// submitted meanwhile form the next batch together.
    fn hold(db: &Db) -> (std::sync::mpsc::Sender<()>, oneshot::Receiver<Result<(), StoreError>>) {
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let rx = db.submit(move |_| {
            let _ = wait.recv();
            Ok(())
        });
        (go, rx)
    }

    fn count(db: &Db, key: &str) -> usize {
        let key = key.to_string();
        db.read_blocking(|c| Ok(get_setting(c, &key)?.is_some() as usize)).unwrap()
    }

    /// SQLite rolls the whole transaction back on some errors (I/O, disk
    /// full). The jobs of the batch before it are told "not stored" (true),
    /// and the jobs after it run in the next batch: stored and acked — never
    /// committed by a stray savepoint and reported failed (that answered
    /// "internal" to sends a retry then found stored).
    #[tokio::test]
    async fn a_transaction_rolled_back_under_a_job_fails_only_what_it_held() {
        let d = tempfile::tempdir().unwrap();
        let db = Db::open(&d.path().join("t.db")).unwrap();
        let (go, held) = hold(&db);
        // give the writer time to start the held batch
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let before = db.submit(|ctx| set_setting(ctx.conn, "before", "1"));
        let breaker = db.submit(|ctx| {
            set_setting(ctx.conn, "breaker", "1")?;
            // what SQLite does by itself after an I/O error
            ctx.conn.execute_batch("ROLLBACK")?;
            Ok(())
        });
        let after = db.submit(|ctx| set_setting(ctx.conn, "after", "1"));
        go.send(()).unwrap();
        held.await.unwrap().unwrap();
        assert!(matches!(before.await.unwrap(), Err(StoreError::NotStored)));
        assert!(matches!(breaker.await.unwrap(), Err(StoreError::NotStored)));
        after.await.unwrap().expect("the job after the rollback is stored and acked");
        assert_eq!((count(&db, "before"), count(&db, "breaker"), count(&db, "after")), (0, 0, 1));
        // and the writer goes on
        db.write(|ctx| set_setting(ctx.conn, "later", "1")).await.unwrap();
        assert_eq!(count(&db, "later"), 1);
    }

    #[tokio::test]
    async fn a_failing_job_is_rolled_back_alone() {
        let d = tempfile::tempdir().unwrap();
        let db = Db::open(&d.path().join("t.db")).unwrap();
        let (go, held) = hold(&db);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let a = db.submit(|ctx| set_setting(ctx.conn, "a", "1"));
        let bad = db.submit(|ctx| {
            set_setting(ctx.conn, "bad", "1")?;
            Err::<(), _>(StoreError::Invalid("no".into()))
        });
        let b = db.submit(|ctx| set_setting(ctx.conn, "b", "1"));
        go.send(()).unwrap();
        held.await.unwrap().unwrap();
        a.await.unwrap().unwrap();
        assert!(matches!(bad.await.unwrap(), Err(StoreError::Invalid(_))));
        b.await.unwrap().unwrap();
        assert_eq!((count(&db, "a"), count(&db, "bad"), count(&db, "b")), (1, 0, 1));
    }

    #[test]
    fn temporary_data_stays_in_memory() {
        let d = tempfile::tempdir().unwrap();
        let conn = open_conn(&d.path().join("t.db"), false).unwrap();
        let store: i64 = conn.query_row("PRAGMA temp_store", [], |r| r.get(0)).unwrap();
        assert_eq!(store, 2, "MEMORY");
    }

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
