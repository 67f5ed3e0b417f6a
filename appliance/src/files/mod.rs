//! Files on disk: uploads in progress under `<data>/uploads/<id>`, blobs
//! under `<data>/files/<2 hex>/<sha256>` (content-addressed: one copy of
//! identical files), the key that signs download links, and the order of
//! writes that keeps disk and database consistent through a crash:
//!
//! 1. an upload's bytes are written, `fsync`ed, then its offset recorded;
//! 2. a complete upload's file is renamed to its blob path (directory
//!    `fsync`ed), then the database records the blob;
//! 3. a blob's row is deleted, then its file.
//!
//! So a row never points to a missing file; a crash can leave a file
//! without a row (2 or 3 cut short), which [`Files::recover`] removes at
//! the next start.

pub mod origin;
pub mod sniff;
pub mod thumbs;
pub mod tus;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::config::FilesConfig;
use crate::store::files::{self, Quotas};
use crate::store::{Db, Millis, RoomId, StoreError, UserId};

/// How long a signed download link works.
pub const LINK_MS: Millis = 3600 * 1000;
/// How long an upload may stay unfinished.
pub const UPLOAD_MS: Millis = 24 * 3600 * 1000;
/// Free disk space uploads never take (the database and the system need it).
pub const DISK_RESERVE: u64 = 512 * 1024 * 1024;
/// `PATCH` requests writing at once, box-wide (each holds a 1 MiB buffer).
pub const MAX_WRITERS: usize = 32;
/// `PATCH` requests one person may have writing at once (so nobody holds
/// every writer with slow bodies).
pub const MAX_WRITERS_PER_USER: usize = 4;

/// The files service: paths, the signing key, who is writing what.
pub struct Files {
    files: PathBuf,
    uploads: PathBuf,
    thumbs: PathBuf,
    key: [u8; 32],
    /// The download origin's port (same host as the app).
    pub port: u16,
    /// Uploads a `PATCH` is writing to (a second one gets 423).
    busy: Mutex<HashSet<String>>,
    /// The running SHA-256 of uploads, with the offset it reached.
    hashers: Mutex<HashMap<String, (u64, Sha256)>>,
    /// Completing an upload and collecting blobs do not interleave (a blob
    /// collected while the same bytes arrive again would lose its file).
    pub blobs: tokio::sync::Mutex<()>,
    writers: tokio::sync::Semaphore,
    writing: Mutex<HashMap<UserId, usize>>,
    /// Images decoded for previews at once (one: the Pi has few cores).
    pub previewing: Arc<tokio::sync::Semaphore>,
}

/// A place among the writers: released when dropped.
pub struct Writer<'a> {
    files: &'a Files,
    user: UserId,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl Drop for Writer<'_> {
    fn drop(&mut self) {
        let mut w = self.files.writing.lock().expect("poisoned");
        if let Some(n) = w.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                w.remove(&self.user);
            }
        }
    }
}

/// A held upload: released when dropped.
pub struct Busy<'a> {
    files: &'a Files,
    id: String,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.files.busy.lock().expect("poisoned").remove(&self.id);
    }
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

impl Files {
    /// Opens (creating) the folders and the link key under `data`.
    pub fn open(data: &Path, port: u16) -> anyhow::Result<Arc<Files>> {
        use std::os::unix::fs::DirBuilderExt;
        let (files, uploads, thumbs) = (data.join("files"), data.join("uploads"), data.join("thumbs"));
        for d in [&files, &uploads, &thumbs] {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(d)?;
        }
        let key_path = data.join("files.key");
        let stored = std::fs::read_to_string(&key_path).ok().and_then(|s| hex::decode(s.trim()).ok());
        let key = match stored.and_then(|k| <[u8; 32]>::try_from(k).ok()) {
            Some(k) => k,
            None => {
                let k: [u8; 32] = rand::random();
                crate::certs::local::write_file(&key_path, &hex::encode(k), true)?;
                k
            }
        };
        Ok(Arc::new(Files {
            files,
            uploads,
            thumbs,
            key,
            port,
            busy: Mutex::default(),
            hashers: Mutex::default(),
            blobs: tokio::sync::Mutex::new(()),
            writers: tokio::sync::Semaphore::new(MAX_WRITERS),
            writing: Mutex::default(),
            previewing: Arc::new(tokio::sync::Semaphore::new(1)),
        }))
    }

    pub fn part_path(&self, id: &str) -> PathBuf {
        self.uploads.join(id)
    }

    pub fn blob_path(&self, hash: &str) -> PathBuf {
        self.files.join(&hash[..2.min(hash.len())]).join(hash)
    }

    /// A preview of blob `hash` whose longest side is `side` pixels.
    pub fn thumb_path(&self, hash: &str, side: u32) -> PathBuf {
        self.thumbs.join(&hash[..2.min(hash.len())]).join(format!("{hash}-{side}.jpg"))
    }

    /// Writes the previews of blob `hash` (before the blob is recorded: a
    /// crash leaves previews without a row, removed at the next start).
    pub fn store_previews(&self, hash: &str, jpegs: &[(u32, Vec<u8>)]) -> std::io::Result<()> {
        for (side, bytes) in jpegs {
            let to = self.thumb_path(hash, *side);
            std::fs::create_dir_all(to.parent().expect("under thumbs/"))?;
            let tmp = to.with_extension("tmp");
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, &to)?;
        }
        Ok(())
    }

    /// A place to write for `user`, unless the box or this person has
    /// every place taken.
    pub fn writer(&self, user: UserId) -> Option<Writer<'_>> {
        let mut w = self.writing.lock().expect("poisoned");
        let n = w.entry(user).or_insert(0);
        if *n >= MAX_WRITERS_PER_USER {
            return None;
        }
        let Ok(permit) = self.writers.try_acquire() else {
            if *n == 0 {
                w.remove(&user);
            }
            return None;
        };
        *n += 1;
        Some(Writer { files: self, user, _permit: permit })
    }

    /// Holds upload `id` for one writer, or says it is held.
    pub fn hold(&self, id: &str) -> Option<Busy<'_>> {
        self.busy.lock().expect("poisoned").insert(id.to_string()).then(|| Busy { files: self, id: id.to_string() })
    }

    /// The signature of a download link: room, person, expiry.
    pub fn sign(&self, room: RoomId, user: UserId, expires: Millis) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(format!("{room}/{user}/{expires}").as_bytes());
        let tag = mac.finalize().into_bytes();
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tag[..18])
    }

    pub fn verify(&self, room: RoomId, user: UserId, expires: Millis, sig: &str, now: Millis) -> bool {
        use subtle::ConstantTimeEq;
        now < expires && bool::from(self.sign(room, user, expires).as_bytes().ct_eq(sig.as_bytes()))
    }

    /// The hash of an upload's first `upto` bytes, carried on from the
    /// last `PATCH` if it got there, else read back from the file.
    pub fn hasher_at(&self, id: &str, upto: u64) -> std::io::Result<Sha256> {
        if let Some((at, h)) = self.hashers.lock().expect("poisoned").remove(id)
            && at == upto
        {
            return Ok(h);
        }
        let mut h = Sha256::new();
        let mut f = std::fs::File::open(self.part_path(id))?.take(upto);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(h)
    }

    pub fn keep_hasher(&self, id: &str, at: u64, h: Sha256) {
        self.hashers.lock().expect("poisoned").insert(id.to_string(), (at, h));
    }

    pub fn forget(&self, id: &str) {
        self.hashers.lock().expect("poisoned").remove(id);
        let _ = std::fs::remove_file(self.part_path(id));
    }

    /// A complete upload's file becomes blob `hash` (step 2 of the module
    /// doc, disk half): renamed into `files/`, or dropped if the blob is
    /// there already. Blocking.
    pub fn store_blob(&self, id: &str, hash: &str) -> std::io::Result<()> {
        let to = self.blob_path(hash);
        let dir = to.parent().expect("under files/");
        std::fs::create_dir_all(dir)?;
        if to.exists() {
            std::fs::remove_file(self.part_path(id))?;
        } else {
            crate::system::durable::rename(&self.part_path(id), &to)?;
        }
        Ok(())
    }

    /// Free bytes on the disk of the files.
    pub fn free_space(&self) -> u64 {
        nix::sys::statvfs::statvfs(&self.files).map_or(u64::MAX, |s| s.blocks_available() * s.fragment_size())
    }

    /// At start: partial files cut back to what was recorded as durable,
    /// files without a row (a crash between a write and its record)
    /// removed, and uploads whose file is missing restarted from 0.
    pub async fn recover(self: &Arc<Self>, db: &Db) -> Result<(), StoreError> {
        let uploads = db.read(files::all_uploads).await?;
        let known: HashSet<String> = uploads.iter().map(|u| u.id.clone()).collect();
        let mut restart = Vec::new();
        for u in uploads.iter().filter(|u| u.hash.is_none()) {
            match std::fs::OpenOptions::new().write(true).open(self.part_path(&u.id)) {
                Ok(f) => {
                    let len = f.metadata().map_err(io)?.len() as i64;
                    if len > u.received {
                        f.set_len(u.received as u64).map_err(io)?;
                    } else if len < u.received {
                        restart.push((u.id.clone(), len));
                    }
                }
                Err(_) => restart.push((u.id.clone(), 0)),
            }
        }
        for (id, at) in restart {
            tracing::warn!(upload = %id, at, "upload: its file is shorter than recorded; it resumes from there");
            db.write(move |ctx| files::set_received(ctx.conn, &id, at)).await?;
        }
        for entry in std::fs::read_dir(&self.uploads).map_err(io)?.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if !known.contains(&name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let mut orphans = Vec::new();
        for root in [&self.files, &self.thumbs] {
            for dir in std::fs::read_dir(root).map_err(io)?.flatten().filter(|d| d.path().is_dir()) {
                for f in std::fs::read_dir(dir.path()).map_err(io)?.flatten() {
                    // a blob is named by its hash; a preview `<hash>-<side>.jpg`
                    let name = f.file_name().to_string_lossy().to_string();
                    let hash = name.split(['-', '.']).next().unwrap_or("").to_string();
                    orphans.push((hash, f.path()));
                }
            }
        }
        for (hash, path) in orphans {
            let h = hash.clone();
            if !db.read(move |c| files::blob_known(c, &h)).await? {
                tracing::info!(blob = %hash, "files: removing a file no row refers to (a crash cut a write short)");
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(())
    }

    /// Ends expired uploads, applies the retention policy, collects blobs
    /// nothing refers to (step 3 of the module doc).
    pub async fn sweep(&self, db: &Db, now: Millis, retention_days: u32) -> Result<usize, StoreError> {
        let cutoff = (retention_days > 0).then(|| now - retention_days as i64 * 24 * 3600 * 1000);
        let stale = db.write(move |ctx| files::expire(ctx.conn, now, cutoff)).await?;
        for id in &stale {
            self.forget(id);
        }
        let _guard = self.blobs.lock().await;
        let dead = db.write(|ctx| files::collect(ctx.conn)).await?;
        for h in &dead {
            let _ = std::fs::remove_file(self.blob_path(h));
            for side in thumbs::SIZES {
                let _ = std::fs::remove_file(self.thumb_path(h, side));
            }
        }
        Ok(dead.len())
    }
}

/// The quotas of `config` for a member, or for a guest (its own, smaller).
pub fn quotas(config: &FilesConfig, guest: bool) -> Quotas {
    const MIB: i64 = 1024 * 1024;
    Quotas {
        max_file: config.max_file_mb as i64 * MIB,
        per_user: if guest { config.guest_quota_mb } else { config.user_quota_mb } as i64 * MIB,
        per_room: config.room_quota_mb as i64 * MIB,
        per_box: config.box_quota_mb as i64 * MIB,
    }
}

/// Appends `buf` at `at` of an open upload file and makes it durable.
pub fn write_durably(f: &mut std::fs::File, at: u64, buf: &[u8], sync: bool) -> std::io::Result<()> {
    f.seek(SeekFrom::Start(at))?;
    f.write_all(buf)?;
    if sync {
        f.sync_data()?;
    }
    Ok(())
}
