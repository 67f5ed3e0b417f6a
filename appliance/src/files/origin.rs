//! The download origin: a second HTTPS port (same certificate) that serves
//! attachments and nothing else, so user content never runs in the app's
//! origin. A link is `/f/<room>/<user>/<expires>/<sig>/<attachment>/<name>`,
//! signed when a member of the room asked for it (`GET /api/rooms/{id}/files`)
//! and good for an hour; `?download` forces a download, `?thumb=320` or
//! `?thumb=1280` asks for an image's preview (the original if it has none,
//! being smaller). Range requests work.
//! No cookie is read here.

use std::io::SeekFrom;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{Files, sniff};
use crate::clock::Clock;
use crate::store::{Db, Millis, RoomId, UserId, files};

#[derive(Clone)]
pub struct Origin {
    pub files: Arc<Files>,
    pub db: Db,
    pub clock: Arc<dyn Clock>,
}

/// Headers on every answer of the origin.
fn harden(h: &mut HeaderMap) {
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox; default-src 'none'; frame-ancestors 'none'"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // the app (another port of the same host) shows images and plays media;
    // its <img crossorigin> asks without cookies
    h.insert("cross-origin-resource-policy", HeaderValue::from_static("same-site"));
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("Content-Range, Content-Length, Accept-Ranges"));
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"error": code, "message": message}).to_string();
    let mut res = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    harden(res.headers_mut());
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

pub fn router(origin: Origin) -> Router {
    Router::new()
        .route("/f/{room}/{user}/{expires}/{sig}/{id}/{name}", axum::routing::get(serve))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "nothing here: this origin serves attached files only") })
        .with_state(origin)
}

/// One byte range asked for, of a file of `size` bytes: `Ok(None)` for the
/// whole file (no Range, or one this server does not serve, such as several
/// ranges), `Err` if it cannot be satisfied.
fn range(h: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(v) = h.get(header::RANGE).and_then(|v| v.to_str().ok()) else { return Ok(None) };
    let Some(spec) = v.trim().strip_prefix("bytes=") else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.trim().split_once('-') else { return Ok(None) };
    let num = |s: &str| s.trim().parse::<u64>().ok();
    let (start, end) = match (a.trim().is_empty(), b.trim().is_empty()) {
        (true, false) => {
            let n = num(b).ok_or(())?;
            if n == 0 {
                return Err(());
            }
            (size.saturating_sub(n), size.saturating_sub(1))
        }
        (false, _) => {
            let start = num(a).ok_or(())?;
            let end = if b.trim().is_empty() { size.saturating_sub(1) } else { num(b).ok_or(())?.min(size.saturating_sub(1)) };
            if start > end {
                return Err(());
            }
            (start, end)
        }
        (true, true) => return Ok(None),
    };
    if size == 0 || start >= size { Err(()) } else { Ok(Some((start, end))) }
}

async fn serve(
    State(o): State<Origin>,
    Path((room, user, expires, sig, id, _name)): Path<(RoomId, UserId, Millis, String, i64, String)>,
    RawQuery(query): RawQuery,
    method: Method,
    headers: HeaderMap,
) -> Response {
    if !o.files.verify(room, user, expires, &sig, o.clock.now_ms()) {
        return error(StatusCode::FORBIDDEN, "link_expired", "this link has expired or is not valid: open the conversation again");
    }
    let found = match o.db.read(move |c| files::servable(c, room, user, id)).await {
        Ok(f) => f,
        Err(e) => {
            tracing::error!("files: {e}");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the file cannot be read now");
        }
    };
    let Some((hash, name, mime, size)) = found else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such file in this conversation (it may have been deleted)");
    };
    let args: Vec<&str> = query.as_deref().map(|q| q.split('&').collect()).unwrap_or_default();
    let download = args.iter().any(|kv| *kv == "download" || kv.starts_with("download="));
    // a preview, if asked for and made
    let thumb = args
        .iter()
        .filter_map(|kv| kv.strip_prefix("thumb="))
        .filter_map(|v| v.parse::<u32>().ok())
        .find(|side| super::thumbs::SIZES.contains(side))
        .map(|side| (side, o.files.thumb_path(&hash, side)))
        .filter(|(_, p)| p.exists());
    let (path, mime, size, etag) = match thumb {
        Some((side, p)) => {
            let len = std::fs::metadata(&p).map_or(0, |m| m.len());
            (p, "image/jpeg".to_string(), len, format!("\"{hash}-{side}\""))
        }
        None => (o.files.blob_path(&hash), mime, size as u64, format!("\"{hash}\"")),
    };
    let mut h = HeaderMap::new();
    harden(&mut h);
    let show = sniff::inline(&mime) && !download;
    h.insert(header::CONTENT_TYPE, HeaderValue::from_str(if show { &mime } else { "application/octet-stream" }).unwrap_or(HeaderValue::from_static("application/octet-stream")));
    if let Ok(v) = HeaderValue::from_str(&sniff::disposition(show, &name)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600"));
    h.insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex"));
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.split(',').any(|t| t.trim() == etag)) {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    // If-Range with another validator: the whole file
    let if_range_ok = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()).is_none_or(|v| v.trim() == etag);
    let wanted = if if_range_ok { range(&headers, size) } else { Ok(None) };
    let (status, start, len) = match wanted {
        Err(()) => {
            h.insert(header::CONTENT_RANGE, HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"));
            let mut res = error(StatusCode::RANGE_NOT_SATISFIABLE, "range", "the range asked for is outside the file");
            res.headers_mut().extend(h);
            return res;
        }
        Ok(None) => (StatusCode::OK, 0, size),
        Ok(Some((a, b))) => {
            h.insert(header::CONTENT_RANGE, HeaderValue::from_str(&format!("bytes {a}-{b}/{size}")).expect("ascii"));
            (StatusCode::PARTIAL_CONTENT, a, b - a + 1)
        }
    };
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if method == Method::HEAD {
        return (status, h).into_response();
    }
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(blob = %hash, "files: a recorded blob cannot be opened: {e}");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the file cannot be read now");
        }
    };
    if start > 0 && file.seek(SeekFrom::Start(start)).await.is_err() {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the file cannot be read now");
    }
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file.take(len), 256 * 1024));
    (status, h, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(v: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, v.parse().unwrap());
        range(&h, size)
    }

    #[test]
    fn byte_ranges() {
        assert_eq!(r("bytes=0-99", 1000), Ok(Some((0, 99))));
        assert_eq!(r("bytes=500-", 1000), Ok(Some((500, 999))));
        assert_eq!(r("bytes=-100", 1000), Ok(Some((900, 999))));
        assert_eq!(r("bytes=-5000", 1000), Ok(Some((0, 999))));
        assert_eq!(r("bytes=900-5000", 1000), Ok(Some((900, 999))));
        assert_eq!(r("bytes=1000-", 1000), Err(()));
        assert_eq!(r("bytes=5-1", 1000), Err(()));
        assert_eq!(r("bytes=-0", 1000), Err(()));
        assert_eq!(r("bytes=x-1", 1000), Err(()));
        assert_eq!(r("bytes=0-1,5-6", 1000), Ok(None), "several ranges: the whole file");
        assert_eq!(r("items=0-1", 1000), Ok(None));
        assert_eq!(r("bytes=0-", 0), Err(()));
        assert_eq!(range(&HeaderMap::new(), 10), Ok(None));
    }
}
