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
    pub fn open(path: &Path) -> Result<Db, StoreError> {
        let mut conn = open_conn(path, false)?;
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
