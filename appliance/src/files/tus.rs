//! The tus 1.0 resumable upload protocol (core, with the creation,
//! expiration, termination and checksum extensions), as pure functions of
//! headers and upload state: what a request asks, or which status refuses
//! it. The handlers (`web::files`) do the I/O. See docs/files.md.

use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use sha2::{Digest, Sha256};

pub const VERSION: &str = "1.0.0";
pub const EXTENSIONS: &str = "creation,expiration,termination,checksum";
pub const CHECKSUM_ALGORITHMS: &str = "sha256";
pub const PATCH_TYPE: &str = "application/offset+octet-stream";

/// Why a tus request is refused: a status and words for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

fn refuse(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal { status, code, message: message.into() }
}

/// 460 Checksum Mismatch (tus checksum extension).
pub fn checksum_mismatch() -> StatusCode {
    StatusCode::from_u16(460).expect("valid status")
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// Every request but `OPTIONS` states the protocol version it speaks.
pub fn check_version(h: &HeaderMap) -> Result<(), Refusal> {
    match header(h, "tus-resumable") {
        Some(VERSION) => Ok(()),
        Some(v) => Err(refuse(StatusCode::PRECONDITION_FAILED, "tus_version", format!("Tus-Resumable {v:?} is not supported; this server speaks {VERSION}"))),
        None => Err(refuse(StatusCode::PRECONDITION_FAILED, "tus_version", format!("Tus-Resumable: {VERSION} is required"))),
    }
}

fn number(h: &HeaderMap, name: &str) -> Result<Option<u64>, Refusal> {
    match header(h, name) {
        None => Ok(None),
        Some(v) if !v.is_empty() && v.len() <= 19 && v.bytes().all(|b| b.is_ascii_digit()) => {
            v.parse().map(Some).map_err(|_| refuse(StatusCode::BAD_REQUEST, "invalid", format!("{name}: not a number of bytes")))
        }
        Some(_) => Err(refuse(StatusCode::BAD_REQUEST, "invalid", format!("{name}: not a number of bytes"))),
    }
}

/// What a creation (`POST`) asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creation {
    pub length: u64,
    /// `filename` (or `name`) from `Upload-Metadata`.
    pub filename: String,
}

/// A creation request: `Upload-Length` (deferred length is not offered)
/// and `Upload-Metadata`; no body (creation-with-upload is not offered).
pub fn parse_creation(h: &HeaderMap) -> Result<Creation, Refusal> {
    check_version(h)?;
    if header(h, "upload-defer-length").is_some() {
        return Err(refuse(StatusCode::BAD_REQUEST, "invalid", "Upload-Defer-Length is not supported: state Upload-Length"));
    }
    let length = number(h, "upload-length")?.ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "invalid", "Upload-Length is required"))?;
    if number(h, "content-length")?.unwrap_or(0) > 0 {
        return Err(refuse(StatusCode::BAD_REQUEST, "invalid", "send the bytes with PATCH (creation-with-upload is not supported)"));
    }
    let meta = parse_metadata(header(h, "upload-metadata").unwrap_or(""))?;
    let filename = meta
        .iter()
        .find(|(k, _)| k == "filename")
        .or_else(|| meta.iter().find(|(k, _)| k == "name"))
        .and_then(|(_, v)| v.clone())
        .unwrap_or_default();
    Ok(Creation { length, filename })
}

/// `Upload-Metadata`: comma-separated `key base64(value)` pairs (the value
/// may be absent); keys unique, ASCII without spaces or commas.
pub fn parse_metadata(v: &str) -> Result<Vec<(String, Option<String>)>, Refusal> {
    let bad = |why: &str| refuse(StatusCode::BAD_REQUEST, "invalid", format!("Upload-Metadata: {why}"));
    if v.len() > 4096 {
        return Err(bad("longer than 4096 bytes"));
    }
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for pair in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut parts = pair.split(' ').filter(|p| !p.is_empty());
        let key = parts.next().unwrap_or("");
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad("a key must be ASCII without spaces"));
        }
        if out.iter().any(|(k, _)| k == key) {
            return Err(bad(&format!("key {key:?} given twice")));
        }
        let value = match parts.next() {
            None => None,
            Some(b64) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|_| bad(&format!("the value of {key:?} is not base64")))?;
                Some(String::from_utf8(bytes).map_err(|_| bad(&format!("the value of {key:?} is not UTF-8")))?)
            }
        };
        if parts.next().is_some() {
            return Err(bad("a pair is a key and one value"));
        }
        out.push((key.to_string(), value));
    }
    Ok(out)
}

/// What a `PATCH` may write: from `offset` (the upload's current offset),
/// at most `room` bytes, checked against `checksum` if given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    pub offset: u64,
    pub room: u64,
    pub content_length: Option<u64>,
    pub checksum: Option<[u8; 32]>,
}

/// A `PATCH` for an upload of `length` bytes of which `received` are stored.
pub fn parse_patch(h: &HeaderMap, length: u64, received: u64) -> Result<Patch, Refusal> {
    check_version(h)?;
    let ctype = header(h, "content-type").unwrap_or("");
    if !ctype.eq_ignore_ascii_case(PATCH_TYPE) {
        return Err(refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", format!("Content-Type must be {PATCH_TYPE}")));
    }
    let offset = number(h, "upload-offset")?.ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "invalid", "Upload-Offset is required"))?;
    if offset != received {
        return Err(refuse(StatusCode::CONFLICT, "offset", format!("Upload-Offset is {offset} but the server has {received} bytes: ask HEAD and resume from there")));
    }
    let room = length - received;
    let content_length = number(h, "content-length")?;
    if content_length.is_some_and(|n| n > room) {
        return Err(refuse(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("the body goes past Upload-Length: {room} bytes remain")));
    }
    let checksum = match header(h, "upload-checksum") {
        None => None,
        Some(v) => {
            let (algo, b64) = v.split_once(' ').ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "invalid", "Upload-Checksum: <algorithm> <base64>"))?;
            if !algo.eq_ignore_ascii_case("sha256") {
                return Err(refuse(StatusCode::BAD_REQUEST, "checksum_algorithm", format!("checksum algorithm {algo:?} is not supported (sha256 is)")));
            }
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "invalid", "Upload-Checksum: not a base64 SHA-256"))?;
            Some(raw)
        }
    };
    Ok(Patch { offset, room, content_length, checksum })
}

/// The bytes of one `PATCH` as they arrive: refuses any past the upload's
/// length, and checks the checksum at the end.
pub struct Receiving {
    patch: Patch,
    got: u64,
    hasher: Option<Sha256>,
}

impl Receiving {
    pub fn new(patch: Patch) -> Receiving {
        let hasher = patch.checksum.map(|_| Sha256::new());
        Receiving { patch, got: 0, hasher }
    }

    /// A chunk of the body, to be written if this returns Ok.
    pub fn chunk(&mut self, bytes: &[u8]) -> Result<(), Refusal> {
        let n = bytes.len() as u64;
        if self.got + n > self.patch.room {
            return Err(refuse(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("the body goes past Upload-Length: {} bytes remained", self.patch.room)));
        }
        self.got += n;
        if let Some(h) = &mut self.hasher {
            h.update(bytes);
        }
        Ok(())
    }

    /// Bytes accepted so far.
    pub fn got(&self) -> u64 {
        self.got
    }

    /// The whole body has come: the new offset, unless its checksum does
    /// not match (then none of its bytes may stay) or it was shorter than
    /// its Content-Length said.
    pub fn finish(self) -> Result<u64, Refusal> {
        if let (Some(h), Some(want)) = (self.hasher, self.patch.checksum)
            && h.finalize().as_slice() != want
        {
            return Err(refuse(checksum_mismatch(), "checksum", "the body does not match Upload-Checksum: nothing of it was kept"));
        }
        if self.patch.content_length.is_some_and(|n| n != self.got) {
            return Err(refuse(StatusCode::BAD_REQUEST, "invalid", "the body was shorter than its Content-Length"));
        }
        Ok(self.patch.offset + self.got)
    }
}

/// An HTTP date (IMF-fixdate) for `Upload-Expires`.
pub fn http_date(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[t.weekday().number_days_from_monday() as usize],
        t.day(),
        MONTHS[u8::from(t.month()) as usize - 1],
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        m
    }

    const V: (&str, &str) = ("tus-resumable", "1.0.0");
    const T: (&str, &str) = ("content-type", PATCH_TYPE);

    #[test]
    fn creation_reads_the_length_and_the_file_name() {
        let c = parse_creation(&h(&[V, ("upload-length", "1048576"), ("upload-metadata", "filename cmFwcG9ydC5wZGY=,is_confidential")])).unwrap();
        assert_eq!(c, Creation { length: 1_048_576, filename: "rapport.pdf".into() });
        let c = parse_creation(&h(&[V, ("upload-length", "0")])).unwrap();
        assert_eq!(c.filename, "");
        for (pairs, status) in [
            (vec![("upload-length", "5")], 412),
            (vec![("tus-resumable", "0.2.2"), ("upload-length", "5")], 412),
            (vec![V], 400),
            (vec![V, ("upload-length", "-5")], 400),
            (vec![V, ("upload-length", "5 ")], 201),
            (vec![V, ("upload-length", "99999999999999999999")], 400),
            (vec![V, ("upload-defer-length", "1")], 400),
            (vec![V, ("upload-length", "5"), ("upload-metadata", "filename !!!")], 400),
            (vec![V, ("upload-length", "5"), ("upload-metadata", "a YQ==,a YQ==")], 400),
            (vec![V, ("upload-length", "5"), ("content-length", "5")], 400),
        ] {
            let got = parse_creation(&h(&pairs)).map_or_else(|r| r.status.as_u16(), |_| 201);
            assert_eq!(got, status, "{pairs:?}");
        }
    }

    #[test]
    fn a_patch_must_continue_exactly_where_the_server_is() {
        let p = parse_patch(&h(&[V, T, ("upload-offset", "40"), ("content-length", "60")]), 100, 40).unwrap();
        assert_eq!((p.offset, p.room), (40, 60));
        let status = |pairs: &[(&str, &str)], received| parse_patch(&h(pairs), 100, received).unwrap_err().status.as_u16();
        assert_eq!(status(&[V, T, ("upload-offset", "0")], 40), 409, "behind the server");
        assert_eq!(status(&[V, T, ("upload-offset", "50")], 40), 409, "ahead of the server");
        assert_eq!(status(&[V, ("content-type", "application/octet-stream"), ("upload-offset", "40")], 40), 415);
        assert_eq!(status(&[T, ("upload-offset", "40")], 40), 412);
        assert_eq!(status(&[V, T], 40), 400);
        assert_eq!(status(&[V, T, ("upload-offset", "40"), ("content-length", "61")], 40), 413, "overlong by its length");
        assert_eq!(status(&[V, T, ("upload-offset", "40"), ("upload-checksum", "md5 AAAA")], 40), 400);
    }

    #[test]
    fn a_body_is_stopped_at_the_declared_length_and_checked_against_its_checksum() {
        let p = parse_patch(&h(&[V, T, ("upload-offset", "90")]), 100, 90).unwrap();
        let mut r = Receiving::new(p);
        r.chunk(&[0; 6]).unwrap();
        assert_eq!(r.chunk(&[0; 5]).unwrap_err().status, StatusCode::PAYLOAD_TOO_LARGE, "overlong without a length");
        assert_eq!(r.got(), 6);
        let sum = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(b"hello"));
        let good = format!("sha256 {sum}");
        let p = parse_patch(&h(&[V, T, ("upload-offset", "0"), ("upload-checksum", &good)]), 100, 0).unwrap();
        let mut r = Receiving::new(p.clone());
        r.chunk(b"hel").unwrap();
        r.chunk(b"lo").unwrap();
        assert_eq!(r.finish().unwrap(), 5);
        let mut r = Receiving::new(p);
        r.chunk(b"jello").unwrap();
        assert_eq!(r.finish().unwrap_err().status.as_u16(), 460);
        let p = parse_patch(&h(&[V, T, ("upload-offset", "0"), ("content-length", "5")]), 100, 0).unwrap();
        let mut r = Receiving::new(p);
        r.chunk(b"hel").unwrap();
        assert_eq!(r.finish().unwrap_err().status, StatusCode::BAD_REQUEST, "cut short");
    }

    #[test]
    fn expiry_dates_are_http_dates() {
        assert_eq!(http_date(784_111_777_000), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    }
}
