//! Files in conversations: resumable uploads (tus 1.0, docs/files.md) and
//! a room's files with the signed link prefix for the download origin.
//! The protocol's decisions are `files::tus`; the disk's order of writes is
//! `files` (module doc).

use std::time::Duration;

use axum::body::Body;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiResult, AppError, CurrentUser, Path, Query, State};
use crate::files::{self, tus};
use crate::store::files::{self as stored, SharedFile};
use crate::store::users::Role;
use crate::store::{RoomId, guests};

/// A client that sends nothing for this long has dropped its upload (what
/// reached the disk is kept; it resumes with `HEAD`).
const BODY_IDLE: Duration = Duration::from_secs(30);
/// Bytes between two durable checkpoints of a `PATCH` (fsync + offset).
const CHECKPOINT: u64 = 64 << 20;
/// Bytes gathered before a write.
const WRITE_BUF: usize = 1 << 20;

fn refusal(r: tus::Refusal) -> AppError {
    AppError::new(r.status, r.code, r.message)
}

fn no_upload() -> AppError {
    AppError::not_found("no such upload (finished and sent, expired, or someone else's)")
}

fn disk_error(e: &std::io::Error) -> AppError {
    if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) {
        AppError::new(StatusCode::INSUFFICIENT_STORAGE, "disk_full", "the box's disk is full: nothing more was kept")
    } else {
        tracing::error!("files: {e}");
        AppError::internal("the file could not be written")
    }
}

fn tus_headers(h: &mut HeaderMap) {
    h.insert("tus-resumable", HeaderValue::from_static(tus::VERSION));
}

/// Every answer of the upload endpoints says the tus version.
pub async fn tus_layer(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut res = next.run(req).await;
    tus_headers(res.headers_mut());
    res
}

/// What guests of `user`'s link may do about files (members: anything).
async fn may_upload(state: &State, me: &CurrentUser) -> ApiResult<()> {
    if me.user.role != Role::Guest {
        return Ok(());
    }
    let uid = me.user.id;
    let state = state.chat.db.read(move |c| guests::guest_state(c, uid)).await?;
    match state {
        Some((link, false)) if link.perms.upload => Ok(()),
        _ => Err(AppError::forbidden("your guest link does not allow sending files")),
    }
}

/// tus discovery: the version, extensions and the largest file.
#[utoipa::path(options, path = "/rooms/{id}/uploads", tag = "files", params(("id" = i64, Path)),
    responses((status = 204, description = "Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm")))]
pub async fn upload_options(AxState(state): AxState<State>, Path(_id): Path<RoomId>) -> Response {
    let max = state.settings.effective().files.max_file_mb as u64 * 1024 * 1024;
    let mut h = HeaderMap::new();
    h.insert("tus-version", HeaderValue::from_static(tus::VERSION));
    h.insert("tus-extension", HeaderValue::from_static(tus::EXTENSIONS));
    h.insert("tus-checksum-algorithm", HeaderValue::from_static(tus::CHECKSUM_ALGORITHMS));
    h.insert("tus-max-size", HeaderValue::from(max));
    (StatusCode::NO_CONTENT, h).into_response()
}

/// A new upload.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewUpload {
    /// Its id: `PATCH`/`HEAD`/`DELETE /api/uploads/{id}` (also in
    /// `Location`), then `files` of a `send` frame.
    pub id: String,
    /// Unfinished uploads end then (also in `Upload-Expires`).
    pub expires: i64,
}

/// tus creation: `Upload-Length` (bytes) and `Upload-Metadata` (`filename`)
/// for a file to send in this room. The quotas count it from now.
#[utoipa::path(post, path = "/rooms/{id}/uploads", tag = "files", params(("id" = i64, Path)),
    responses((status = 201, body = NewUpload, description = "Location: /api/uploads/{id}"), (status = 400, body = ApiError),
        (status = 403, body = ApiError), (status = 409, body = ApiError), (status = 412, body = ApiError),
        (status = 413, body = ApiError), (status = 507, body = ApiError)))]
pub async fn create_upload(AxState(state): AxState<State>, me: CurrentUser, Path(room): Path<RoomId>, headers: HeaderMap) -> ApiResult<Response> {
    may_upload(&state, &me).await?;
    let uid = me.user.id;
    state.chat.db.read(move |c| crate::store::rooms::member_role(c, room, uid)).await?;
    let creation = tus::parse_creation(&headers).map_err(refusal)?;
    let quotas = files::quotas(&state.settings.effective().files, me.user.role == Role::Guest);
    if state.files.free_space() < creation.length.saturating_add(files::DISK_RESERVE) {
        return Err(AppError::new(StatusCode::INSUFFICIENT_STORAGE, "disk_full", "the box's disk has no room for this file"));
    }
    let id = hex::encode(rand::random::<[u8; 16]>());
    let i = id.clone();
    let length = i64::try_from(creation.length).map_err(|_| AppError::bad_request("Upload-Length is too large"))?;
    let now = state.chat.clock.now_ms();
    let expires = now + files::UPLOAD_MS;
    let up = state
        .chat
        .db
        .write(move |ctx| stored::create_upload(ctx.conn, &i, uid, room, &creation.filename, length, quotas, now, expires))
        .await?;
    if length == 0 {
        // an empty file is complete at once (tus clients send no PATCH for it)
        let path = state.files.part_path(&id);
        tokio::task::spawn_blocking(move || std::fs::File::create(path))
            .await
            .map_err(|_| AppError::internal("internal error"))?
            .map_err(|e| disk_error(&e))?;
        complete(&state, &up, sha2::Sha256::new()).await?;
    }
    let mut h = HeaderMap::new();
    h.insert(header::LOCATION, HeaderValue::from_str(&format!("/api/uploads/{id}")).expect("hex"));
    h.insert("upload-expires", HeaderValue::from_str(&tus::http_date(expires)).expect("ascii"));
    Ok((StatusCode::CREATED, h, axum::Json(NewUpload { id, expires })).into_response())
}

async fn own_upload(state: &State, me: &CurrentUser, id: &str) -> ApiResult<stored::Upload> {
    let (uid, i) = (me.user.id, id.to_string());
    state.chat.db.read(move |c| stored::get_upload(c, &i, uid)).await?.ok_or_else(no_upload)
}

fn offset_headers(up: &stored::Upload, received: u64) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("upload-offset", HeaderValue::from(received));
    h.insert("upload-length", HeaderValue::from(up.length as u64));
    h.insert("upload-expires", HeaderValue::from_str(&tus::http_date(up.expires)).expect("ascii"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h
}

/// tus: how many bytes the server has durably (resume from there).
#[utoipa::path(head, path = "/uploads/{id}", tag = "files", params(("id" = String, Path)),
    responses((status = 200, description = "Upload-Offset, Upload-Length, Upload-Expires"), (status = 404, body = ApiError),
        (status = 412, body = ApiError)))]
pub async fn upload_offset(AxState(state): AxState<State>, me: CurrentUser, Path(id): Path<String>, headers: HeaderMap) -> ApiResult<Response> {
    let up = own_upload(&state, &me, &id).await?;
    tus::check_version(&headers).map_err(refusal)?;
    Ok((StatusCode::OK, offset_headers(&up, up.received as u64)).into_response())
}

/// How a `PATCH` body stopped.
enum Stop {
    Done,
    /// The client went away or stalled: what is durable stays.
    Dropped,
    Refused(tus::Refusal),
    Disk(std::io::Error),
}

/// tus: bytes from `Upload-Offset` (`Content-Type:
/// application/offset+octet-stream`, optional `Upload-Checksum: sha256`).
/// The answer's `Upload-Offset` is durable. The last byte completes the
/// upload: the file then counts as a blob and may be sent.
#[utoipa::path(patch, path = "/uploads/{id}", tag = "files", params(("id" = String, Path)),
    request_body(content = Vec<u8>, content_type = "application/offset+octet-stream"),
    responses((status = 204, description = "Upload-Offset: the bytes now stored"), (status = 400, body = ApiError),
        (status = 404, body = ApiError), (status = 409, body = ApiError), (status = 412, body = ApiError),
        (status = 413, body = ApiError), (status = 415, body = ApiError), (status = 423, body = ApiError),
        (status = 422, body = ApiError), (status = 460, body = ApiError), (status = 503, body = ApiError), (status = 507, body = ApiError)))]
pub async fn upload_bytes(
    AxState(state): AxState<State>,
    me: CurrentUser,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let up = own_upload(&state, &me, &id).await?;
    if up.hash.is_some() {
        // complete already: only "nothing more" is right, and changes nothing
        tus::parse_patch(&headers, up.length as u64, up.length as u64).map_err(refusal)?;
        return Ok((StatusCode::NO_CONTENT, offset_headers(&up, up.length as u64)).into_response());
    }
    let patch = tus::parse_patch(&headers, up.length as u64, up.received as u64).map_err(refusal)?;
    let fs = state.files.clone();
    let Some(_busy) = fs.hold(&id) else {
        return Err(AppError::new(StatusCode::LOCKED, "locked", "another request is writing this upload: wait for it, then ask HEAD"));
    };
    // the offset again, now that no other PATCH can move it
    let up = own_upload(&state, &me, &id).await?;
    if up.received as u64 != patch.offset {
        return Err(refusal(tus::parse_patch(&headers, up.length as u64, up.received as u64).expect_err("offset moved")));
    }
    let Some(_writer) = fs.writer(me.user.id) else {
        return Err(AppError::busy(5));
    };
    let start = patch.offset;
    let checksummed = patch.checksum.is_some();
    let (fs2, i) = (fs.clone(), id.clone());
    let opened = tokio::task::spawn_blocking(move || -> std::io::Result<(std::fs::File, sha2::Sha256)> {
        // past the start, the bytes must be there: never made up as zeros
        let f = std::fs::OpenOptions::new().create(start == 0).write(true).truncate(false).open(fs2.part_path(&i))?;
        if f.metadata()?.len() < start {
            return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "shorter than recorded"));
        }
        f.set_len(start)?;
        Ok((f, fs2.hasher_at(&i, start)?))
    })
    .await
    .map_err(|_| AppError::internal("internal error"))?;
    let (mut file, mut hasher) = match opened {
        Ok(x) => x,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // its bytes were lost (a crash as it completed): it starts again
            let i = id.clone();
            state.chat.db.write(move |ctx| stored::set_received(ctx.conn, &i, 0)).await?;
            return Err(AppError::new(StatusCode::CONFLICT, "offset", "the server lost this upload's bytes: ask HEAD (0) and send it again"));
        }
        Err(e) => return Err(disk_error(&e)),
    };

    let mut recv = tus::Receiving::new(patch);
    let mut stream = body.into_data_stream();
    let mut buf: Vec<u8> = Vec::with_capacity(WRITE_BUF);
    let (mut written, mut durable) = (start, start);
    let record = |at: u64| {
        let (db, i) = (state.chat.db.clone(), id.clone());
        async move { db.write(move |ctx| stored::set_received(ctx.conn, &i, at as i64)).await }
    };
    let stop = loop {
        let next = tokio::time::timeout(BODY_IDLE, stream.next()).await;
        let (end, dropped) = match next {
            Ok(Some(Ok(chunk))) => {
                if let Err(r) = recv.chunk(&chunk) {
                    break Stop::Refused(r);
                }
                buf.extend_from_slice(&chunk);
                (false, false)
            }
            Ok(Some(Err(_))) | Err(_) => (true, true),
            Ok(None) => (true, false),
        };
        if buf.len() >= WRITE_BUF || (end && !buf.is_empty()) {
            // the write (and its hash) off the async threads
            let data = std::mem::take(&mut buf);
            let sync = !checksummed && (end || written + data.len() as u64 - durable >= CHECKPOINT);
            let at = written;
            let res = tokio::task::spawn_blocking(move || {
                let r = files::write_durably(&mut file, at, &data, sync);
                hasher.update(&data);
                (file, hasher, r, data)
            })
            .await
            .map_err(|_| AppError::internal("internal error"))?;
            let r;
            (file, hasher, r, buf) = res;
            buf.clear();
            if let Err(e) = r {
                break Stop::Disk(e);
            }
            written = start + recv.got();
            if sync {
                record(written).await?;
                durable = written;
            }
        }
        if end {
            break if dropped { Stop::Dropped } else { Stop::Done };
        }
    };
    let done = match stop {
        Stop::Done => recv.finish().map_err(refusal),
        Stop::Refused(r) => Err(refusal(r)),
        // with a checksum, nothing unchecked stays; without, what is durable
        Stop::Dropped if !checksummed => {
            // what was written is kept: durable first, then the hash goes on
            // from there (a body cut after its last byte is sent again from
            // the last checkpoint: the whole length is recorded with its blob)
            if written != durable && written < up.length as u64 {
                let sync = tokio::task::spawn_blocking(move || file.sync_data()).await.map_err(|_| AppError::internal("internal error"))?;
                sync.map_err(|e| disk_error(&e))?;
                record(written).await?;
            }
            fs.keep_hasher(&id, written, hasher);
            return Err(AppError::bad_request("the upload was cut short: ask HEAD and resume"));
        }
        Stop::Dropped => Err(AppError::bad_request("the upload was cut short before its checksum could be checked: nothing of it was kept")),
        Stop::Disk(e) => Err(disk_error(&e)),
    };
    let new = match done {
        Ok(n) => n,
        Err(e) => {
            // back to the last durable offset (the whole PATCH if checksummed)
            let keep = if checksummed { start } else { durable };
            let _ = tokio::task::spawn_blocking(move || file.set_len(keep).and_then(|()| file.sync_data())).await;
            if keep != up.received as u64 {
                record(keep).await?;
            }
            return Err(e);
        }
    };
    if new != durable {
        let sync = tokio::task::spawn_blocking(move || file.sync_data()).await.map_err(|_| AppError::internal("internal error"))?;
        sync.map_err(|e| disk_error(&e))?;
        // the whole length is recorded with the blob, in one transaction:
        // an upload never looks complete without being so
        if new != up.length as u64 {
            record(new).await?;
        }
    }
    if new == up.length as u64 {
        complete(&state, &up, hasher).await?;
    } else {
        fs.keep_hasher(&id, new, hasher);
    }
    Ok((StatusCode::NO_CONTENT, offset_headers(&up, new)).into_response())
}

/// Time an image may take to decode and scale for its previews.
const PREVIEW_BUDGET: Duration = Duration::from_secs(20);

/// The last byte came: the file becomes a blob (module doc of `files`),
/// an image with its previews.
async fn complete(state: &State, up: &stored::Upload, hasher: sha2::Sha256) -> ApiResult<()> {
    let hash = hex::encode(hasher.finalize());
    let fs = state.files.clone();
    let (id, name) = (up.id.clone(), up.name.clone());
    let (fs2, i) = (fs.clone(), id.clone());
    let mime = tokio::task::spawn_blocking(move || -> std::io::Result<&'static str> {
        use std::io::Read;
        let mut head = Vec::with_capacity(4096);
        std::fs::File::open(fs2.part_path(&i))?.take(4096).read_to_end(&mut head)?;
        Ok(files::sniff::mime(&head, &name))
    })
    .await
    .map_err(|_| AppError::internal("internal error"))?
    .map_err(|e| disk_error(&e))?;
    let dims = if files::sniff::previewed(mime) { previews(state, up, &hash).await? } else { None };
    let _blobs = fs.blobs.lock().await;
    let (fs2, h) = (fs.clone(), hash.clone());
    tokio::task::spawn_blocking(move || fs2.store_blob(&id, &h))
        .await
        .map_err(|_| AppError::internal("internal error"))?
        .map_err(|e| disk_error(&e))?;
    let (id, now) = (up.id.clone(), state.chat.clock.now_ms());
    state.chat.db.write(move |ctx| stored::complete_upload(ctx.conn, &id, &hash, mime, dims, now)).await?;
    Ok(())
}

/// An image's previews, one image at a time box-wide, within the budget:
/// its upright size, or none (not decodable, or too slow: it stays a file
/// without a preview). A decompression bomb ends the upload.
async fn previews(state: &State, up: &stored::Upload, hash: &str) -> ApiResult<Option<(u32, u32)>> {
    let fs = state.files.clone();
    let permit = tokio::time::timeout(PREVIEW_BUDGET, fs.previewing.clone().acquire_owned()).await;
    let Ok(Ok(permit)) = permit else {
        tracing::warn!(upload = %up.id, "files: no preview (the previewer stayed busy)");
        return Ok(None);
    };
    let (fs2, id, h) = (fs.clone(), up.id.clone(), hash.to_string());
    // the permit goes with the work: a slow image holds it until it ends
    let work = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let made = files::thumbs::previews(&fs2.part_path(&id))?;
        fs2.store_previews(&h, &made.jpegs).map_err(|e| files::thumbs::ThumbError::Undecodable(e.to_string()))?;
        Ok::<_, files::thumbs::ThumbError>((made.width, made.height))
    });
    match tokio::time::timeout(PREVIEW_BUDGET, work).await {
        Ok(Ok(Ok(dims))) => Ok(Some(dims)),
        Ok(Ok(Err(files::thumbs::ThumbError::TooLarge { width, height }))) => {
            let i = up.id.clone();
            state.chat.db.write(move |ctx| stored::delete_upload(ctx.conn, &i)).await?;
            fs.forget(&up.id);
            Err(AppError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "image_too_large",
                format!(
                    "this image says it is {width} × {height} pixels; images may be at most {m} × {m}: it was not kept",
                    m = files::thumbs::MAX_SIDE
                ),
            ))
        }
        Ok(Ok(Err(files::thumbs::ThumbError::Undecodable(why)))) => {
            tracing::info!(upload = %up.id, "files: no preview: {why}");
            Ok(None)
        }
        _ => {
            tracing::warn!(upload = %up.id, "files: no preview (over the time budget)");
            Ok(None)
        }
    }
}

/// tus termination: the upload ends, its bytes go.
#[utoipa::path(delete, path = "/uploads/{id}", tag = "files", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ApiError), (status = 412, body = ApiError), (status = 423, body = ApiError)))]
pub async fn delete_upload(AxState(state): AxState<State>, me: CurrentUser, Path(id): Path<String>, headers: HeaderMap) -> ApiResult<StatusCode> {
    own_upload(&state, &me, &id).await?;
    tus::check_version(&headers).map_err(refusal)?;
    let fs = state.files.clone();
    let Some(_busy) = fs.hold(&id) else {
        return Err(AppError::new(StatusCode::LOCKED, "locked", "a request is writing this upload: wait for it to end"));
    };
    let i = id.clone();
    state.chat.db.write(move |ctx| stored::delete_upload(ctx.conn, &i)).await?;
    fs.forget(&id);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FilesQuery {
    /// Only files whose name contains this (at most 200 bytes).
    q: Option<String>,
    /// Files older than this one (the last `id` of the previous page).
    before: Option<i64>,
    /// Page size, 1 to 200 (default 50).
    limit: Option<u32>,
}

/// Where a room's files are downloaded from, for an hour.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileLink {
    /// The download origin's port (same host as the app, HTTPS).
    pub port: u16,
    /// Path prefix: a file is `https://<host>:<port><prefix>/<id>/<name>`
    /// (`?download` to save it rather than show it).
    pub prefix: String,
    pub expires: i64,
}

/// What I may still upload here, in bytes.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadLimits {
    /// The largest file.
    pub max_file: i64,
    /// Whether my uploads are allowed at all (guests: if their link says so).
    pub allowed: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FilesPage {
    /// Newest first.
    pub files: Vec<SharedFile>,
    pub link: FileLink,
    pub limits: UploadLimits,
}

/// The files shared in a room (the Files panel), and the signed link
/// prefix to show and download them.
#[utoipa::path(get, path = "/rooms/{id}/files", tag = "files", params(("id" = i64, Path), FilesQuery),
    responses((status = 200, body = FilesPage), (status = 400, body = ApiError), (status = 403, body = ApiError)))]
pub async fn room_files(AxState(state): AxState<State>, me: CurrentUser, Path(room): Path<RoomId>, Query(q): Query<FilesQuery>) -> ApiResult<axum::Json<FilesPage>> {
    if q.q.as_ref().is_some_and(|s| s.len() > 200) {
        return Err(AppError::bad_request("q: at most 200 bytes"));
    }
    let uid = me.user.id;
    let needle = q.q.filter(|s| !s.trim().is_empty());
    let files = state.chat.db.read(move |c| stored::room_files(c, room, uid, needle.as_deref(), q.before, q.limit.unwrap_or(50))).await?;
    let expires = state.chat.clock.now_ms() + files::LINK_MS;
    let sig = state.files.sign(room, uid, expires);
    let allowed = may_upload(&state, &me).await.is_ok();
    let config = state.settings.effective().files;
    Ok(axum::Json(FilesPage {
        files,
        link: FileLink { port: state.files.port, prefix: format!("/f/{room}/{uid}/{expires}/{sig}"), expires },
        limits: UploadLimits { max_file: config.max_file_mb as i64 * 1024 * 1024, allowed },
    }))
}
