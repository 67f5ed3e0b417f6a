//! Files through the router: tus uploads, who may upload, the Files panel,
//! and the download origin's answers.

use super::*;
use crate::files::origin;
use crate::store::RoomId;
use crate::store::files as stored;
use sha2::Digest;

const TUS: (&str, &str) = ("tus-resumable", "1.0.0");

impl Harness {
    async fn tus(&self, method: &str, path: &str, s: &Session, headers: &[(&str, &str)], body: Vec<u8>) -> (StatusCode, HeaderMap, Value) {
        let mut req = Self::request(method, path, Some(s));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.body(Body::from(body)).unwrap()).await
    }

    /// A tus creation for `len` bytes named `name`: the upload's id.
    async fn create_upload(&self, room: i64, s: &Session, name: &str, len: usize) -> (StatusCode, Value, String) {
        use base64::Engine as _;
        let meta = format!("filename {}", base64::engine::general_purpose::STANDARD.encode(name));
        let len = len.to_string();
        let (st, h, b) = self.tus("POST", &format!("/api/rooms/{room}/uploads"), s, &[TUS, ("upload-length", &len), ("upload-metadata", &meta)], vec![]).await;
        let location = h.get(header::LOCATION).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        (st, b, location)
    }

    async fn patch(&self, location: &str, s: &Session, offset: usize, bytes: &[u8], extra: &[(&str, &str)]) -> (StatusCode, HeaderMap, Value) {
        let off = offset.to_string();
        let mut headers = vec![TUS, ("content-type", "application/offset+octet-stream"), ("upload-offset", off.as_str())];
        headers.extend_from_slice(extra);
        self.tus("PATCH", location, s, &headers, bytes.to_vec()).await
    }

    async fn offset(&self, location: &str, s: &Session) -> u64 {
        let (st, h, _) = self.tus("HEAD", location, s, &[TUS], vec![]).await;
        assert_eq!(st, StatusCode::OK);
        h["upload-offset"].to_str().unwrap().parse().unwrap()
    }

    /// Sends the finished upload at `location` in a message of `user`
    /// (what the WebSocket's `send` with `files` does).
    async fn send_upload(&self, room: i64, user: UserId, location: &str) {
        let id = location.rsplit('/').next().unwrap().to_string();
        let cid = format!("m-{}", &id[..8]);
        self.state
            .chat
            .write(move |c, now| match crate::store::rooms::post_message_with_files(c, RoomId(room), user, &cid, "", None, &[id], now)? {
                crate::store::rooms::PostOutcome::Stored { published, .. } => Ok(((), vec![published])),
                other => panic!("{other:?}"),
            })
            .await
            .unwrap();
    }

    fn origin(&self) -> Router {
        origin::router(origin::Origin { files: self.state.files.clone(), db: self.state.chat.db.clone(), clock: self.state.chat.clock.clone() })
    }

    async fn download(&self, path: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut req = Request::builder().uri(path).header(header::HOST, "parvis.test:8444");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = self.origin().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let (parts, body) = res.into_parts();
        (parts.status, parts.headers, axum::body::to_bytes(body, 1 << 24).await.unwrap().to_vec())
    }
}

fn png(len: usize) -> Vec<u8> {
    let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
    b.extend((0..len - 8).map(|i| (i * 7 % 251) as u8));
    b
}

#[tokio::test]
async fn an_upload_resumes_at_the_servers_offset_and_refuses_what_tus_forbids() {
    let h = harness();
    let admin = h.setup_admin().await;
    let (st, _, r) = h.call("POST", "/api/rooms", Some(json!({"name": "Support", "visibility": "invite"})), Some(&admin)).await;
    assert_eq!(st, StatusCode::CREATED);
    let room = r["id"].as_i64().unwrap();
    let data = png(300_000);
    let (st, b, loc) = h.create_upload(room, &admin, "screen shot.png", data.len()).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    assert!(loc.starts_with("/api/uploads/") && loc.ends_with(b["id"].as_str().unwrap()), "{loc}");
    assert_eq!(h.offset(&loc, &admin).await, 0);
    // the first part; a wrong offset, a wrong type, no version, a bad checksum, a body past the length
    let (st, hd, _) = h.patch(&loc, &admin, 0, &data[..100_000], &[]).await;
    assert_eq!((st, hd["upload-offset"].to_str().unwrap()), (StatusCode::NO_CONTENT, "100000"));
    assert_eq!(hd["tus-resumable"], "1.0.0");
    assert_eq!(h.patch(&loc, &admin, 0, &data[..10], &[]).await.0, StatusCode::CONFLICT);
    let (st, _, b) = h.tus("PATCH", &loc, &admin, &[TUS, ("content-type", "application/octet-stream"), ("upload-offset", "100000")], data[100_000..].to_vec()).await;
    assert_eq!((st, b["error"].as_str()), (StatusCode::UNSUPPORTED_MEDIA_TYPE, Some("unsupported_media_type")), "{b}");
    let (st, _, b) = h.tus("PATCH", &loc, &admin, &[("content-type", "application/offset+octet-stream"), ("upload-offset", "100000")], vec![1]).await;
    assert_eq!((st, b["error"].as_str()), (StatusCode::PRECONDITION_FAILED, Some("tus_version")));
    use base64::Engine as _;
    let wrong = format!("sha256 {}", base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(b"other")));
    let (st, _, b) = h.patch(&loc, &admin, 100_000, &data[100_000..200_000], &[("upload-checksum", &wrong)]).await;
    assert_eq!((st.as_u16(), b["error"].as_str()), (460, Some("checksum")), "{b}");
    assert_eq!(h.offset(&loc, &admin).await, 100_000, "nothing of a mismatched body stays");
    let mut long = data[100_000..].to_vec();
    long.extend_from_slice(b"past the end");
    assert_eq!(h.patch(&loc, &admin, 100_000, &long, &[]).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(h.offset(&loc, &admin).await, 100_000);
    // a second writer while one holds the upload
    let id = loc.rsplit('/').next().unwrap();
    let held = h.state.files.hold(id).unwrap();
    assert_eq!(h.patch(&loc, &admin, 100_000, &data[100_000..], &[]).await.0, StatusCode::LOCKED);
    drop(held);
    // the rest, with a right checksum: complete
    let right = format!("sha256 {}", base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&data[100_000..])));
    let (st, hd, b) = h.patch(&loc, &admin, 100_000, &data[100_000..], &[("upload-checksum", &right)]).await;
    assert_eq!((st, hd["upload-offset"].to_str().unwrap()), (StatusCode::NO_CONTENT, "300000"), "{b}");
    let hash = hex::encode(sha2::Sha256::digest(&data));
    assert_eq!(std::fs::read(h.state.files.blob_path(&hash)).unwrap(), data, "the blob is the file, under its hash");
    // complete: "nothing more" is 204 and changes nothing; anything else is refused
    assert_eq!(h.patch(&loc, &admin, 300_000, b"", &[]).await.0, StatusCode::NO_CONTENT);
    assert_eq!(h.patch(&loc, &admin, 0, b"x", &[]).await.0, StatusCode::CONFLICT);
    assert_eq!(h.patch(&loc, &admin, 300_000, b"x", &[("content-length", "1")]).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(std::fs::read(h.state.files.blob_path(&hash)).unwrap(), data);
    // an empty file is complete at its creation
    let (st, _, empty) = h.create_upload(room, &admin, "empty.txt", 0).await;
    assert_eq!((st, h.offset(&empty, &admin).await), (StatusCode::CREATED, 0));
    let uid = h.state.chat.db.read(|c| Ok(crate::store::users::all_users(c)?[0].id)).await.unwrap();
    h.send_upload(room, uid, &empty).await;
    // the bytes of an upload lost on disk are never made up: it starts again
    let (_, _, lost) = h.create_upload(room, &admin, "lost.bin", 10).await;
    h.patch(&lost, &admin, 0, b"12345", &[]).await;
    std::fs::remove_file(h.state.files.part_path(lost.rsplit('/').next().unwrap())).unwrap();
    let (st, _, b) = h.patch(&lost, &admin, 5, b"67890", &[]).await;
    assert_eq!((st, b["error"].as_str()), (StatusCode::CONFLICT, Some("offset")), "{b}");
    assert_eq!(h.offset(&lost, &admin).await, 0);
    // tus discovery
    let (st, hd, _) = h.tus("OPTIONS", &format!("/api/rooms/{room}/uploads"), &admin, &[], vec![]).await;
    assert_eq!((st, hd["tus-version"].to_str().unwrap(), hd["tus-max-size"].to_str().unwrap()), (StatusCode::NO_CONTENT, "1.0.0", "1073741824"));
    assert!(hd["tus-extension"].to_str().unwrap().contains("termination"));
    // termination of another upload
    let (_, _, loc2) = h.create_upload(room, &admin, "x.bin", 10).await;
    h.patch(&loc2, &admin, 0, b"12345", &[]).await;
    assert_eq!(h.tus("DELETE", &loc2, &admin, &[TUS], vec![]).await.0, StatusCode::NO_CONTENT);
    assert_eq!(h.tus("HEAD", &loc2, &admin, &[TUS], vec![]).await.0, StatusCode::NOT_FOUND);
    assert!(!h.state.files.part_path(loc2.rsplit('/').next().unwrap()).exists());
    // too large for the box, declared up front
    let (st, b, _) = h.create_upload(room, &admin, "huge.iso", 2 << 30).await;
    assert_eq!((st, b["error"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("too_large")), "{b}");
    assert!(b["message"].as_str().unwrap().contains("1.0 GiB"), "{b}");
}

#[tokio::test]
async fn files_are_for_the_rooms_members_and_guests_whose_link_allows_them() {
    let h = harness();
    let admin = h.setup_admin().await;
    let (bob_id, bob) = h.add_user(&admin, "bob").await;
    let (_, carol) = h.add_user(&admin, "carol").await;
    let (_, _, r) = h.call("POST", "/api/rooms", Some(json!({"name": "Support", "visibility": "invite", "members": [bob_id.0]})), Some(&admin)).await;
    let room = r["id"].as_i64().unwrap();
    let (_, _, r) = h.call("POST", "/api/rooms", Some(json!({"name": "Board", "visibility": "invite"})), Some(&admin)).await;
    let board = r["id"].as_i64().unwrap();
    // carol is no member
    assert_eq!(h.create_upload(room, &carol, "a.txt", 5).await.0, StatusCode::FORBIDDEN);
    assert_eq!(h.call("GET", &format!("/api/rooms/{room}/files"), None, Some(&carol)).await.0, StatusCode::FORBIDDEN);
    // bob uploads; alice cannot touch bob's upload
    let (st, _, loc) = h.create_upload(room, &bob, "notes.txt", 11).await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(h.tus("HEAD", &loc, &admin, &[TUS], vec![]).await.0, StatusCode::NOT_FOUND);
    assert_eq!(h.patch(&loc, &admin, 0, b"hello world", &[]).await.0, StatusCode::NOT_FOUND);
    assert_eq!(h.patch(&loc, &bob, 0, b"hello world", &[]).await.0, StatusCode::NO_CONTENT);
    // sent with a message (what the WebSocket's send does)
    h.send_upload(room, bob_id, &loc).await;
    let (st, _, page) = h.call("GET", &format!("/api/rooms/{room}/files"), None, Some(&admin)).await;
    assert_eq!(st, StatusCode::OK, "{page}");
    let f = &page["files"][0];
    assert_eq!((f["name"].as_str(), f["size"].as_i64(), f["mime"].as_str(), f["sender"].as_i64()), (Some("notes.txt"), Some(11), Some("text/plain"), Some(bob_id.0)));
    let (_, _, hist) = h.call("GET", &format!("/api/rooms/{room}/messages"), None, Some(&admin)).await;
    assert_eq!(hist["messages"][0]["files"][0]["name"], "notes.txt", "{hist}");
    assert_eq!(page["link"]["port"], 8444);
    let prefix = page["link"]["prefix"].as_str().unwrap().to_string();
    let file = f["id"].as_i64().unwrap();

    // the download origin
    let url = format!("{prefix}/{file}/notes.txt");
    let (st, hd, body) = h.download(&url, &[]).await;
    assert_eq!((st, body.as_slice()), (StatusCode::OK, &b"hello world"[..]));
    assert_eq!(hd["content-type"], "text/plain");
    assert_eq!(hd["x-content-type-options"], "nosniff");
    assert_eq!(hd["content-security-policy"], "sandbox; default-src 'none'; frame-ancestors 'none'");
    assert_eq!(hd["referrer-policy"], "no-referrer");
    assert_eq!(hd["content-disposition"], "inline; filename=\"notes.txt\"; filename*=UTF-8''notes.txt");
    let (_, hd, _) = h.download(&format!("{url}?download"), &[]).await;
    assert!(hd["content-disposition"].to_str().unwrap().starts_with("attachment;"));
    assert_eq!(hd["content-type"], "application/octet-stream");
    let (st, hd, body) = h.download(&url, &[("range", "bytes=6-")]).await;
    assert_eq!((st, body.as_slice(), hd["content-range"].to_str().unwrap()), (StatusCode::PARTIAL_CONTENT, &b"world"[..], "bytes 6-10/11"));
    let (st, hd, _) = h.download(&url, &[("range", "bytes=11-")]).await;
    assert_eq!((st, hd["content-range"].to_str().unwrap()), (StatusCode::RANGE_NOT_SATISFIABLE, "bytes */11"));
    let etag = hd["etag"].to_str().unwrap().to_string();
    assert_eq!(h.download(&url, &[("if-none-match", &etag)]).await.0, StatusCode::NOT_MODIFIED);
    // a tampered, an expired link; another room's prefix for this file
    let (st, _, body) = h.download(&url.replace(&prefix, &format!("{prefix}x")), &[]).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{}", String::from_utf8_lossy(&body));
    let parts: Vec<&str> = prefix.split('/').collect();
    let old = h.state.chat.clock.now_ms() - 1;
    let sig = h.state.files.sign(RoomId(room), UserId(parts[3].parse().unwrap()), old);
    assert_eq!(h.download(&format!("/f/{room}/{}/{old}/{sig}/{file}/x", parts[3]), &[]).await.0, StatusCode::FORBIDDEN);
    let (_, _, other) = h.call("GET", &format!("/api/rooms/{board}/files"), None, Some(&admin)).await;
    let (st, hd, body) = h.download(&format!("{}/{file}/notes.txt", other["link"]["prefix"].as_str().unwrap()), &[]).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "another room's file: {}", String::from_utf8_lossy(&body));
    assert_eq!(hd["content-type"], "application/json");
    assert_eq!(h.download("/", &[]).await.0, StatusCode::NOT_FOUND);

    // guests: only with the upload permission, within their quota
    let link = |perms: Value| {
        let (h, admin) = (&h, admin.clone());
        async move {
            let (st, _, l) = h.call("POST", &format!("/api/rooms/{room}/guest-links"), Some(json!({"perms": perms})), Some(&admin)).await;
            assert_eq!(st, StatusCode::OK, "{l}");
            let (st, hd, b) = h.call("POST", &format!("/api/guest/{}", l["token"].as_str().unwrap()), Some(json!({"display_name": "Claire"})), None).await;
            assert_eq!(st, StatusCode::OK, "{b}");
            Harness::session_from(&hd, &b)
        }
    };
    let plain = link(json!({"chat": true, "call": true, "media": true, "screen": true, "upload": false})).await;
    let (st, b, _) = h.create_upload(room, &plain, "a.txt", 5).await;
    assert_eq!((st, b["error"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")), "{b}");
    let (_, _, page) = h.call("GET", &format!("/api/rooms/{room}/files"), None, Some(&plain)).await;
    assert_eq!(page["limits"]["allowed"], false, "{page}");
    let uploader = link(json!({"chat": true, "call": false, "media": false, "screen": false, "upload": true})).await;
    let (st, b, _) = h.create_upload(room, &uploader, "scan.pdf", 101 << 20).await;
    assert_eq!((st, b["error"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("quota")), "the guest quota: {b}");
    assert_eq!(h.create_upload(room, &uploader, "scan.pdf", 99 << 20).await.0, StatusCode::CREATED);
    assert_eq!(h.create_upload(board, &uploader, "x.pdf", 1).await.0, StatusCode::FORBIDDEN, "not its room");
    let _ = stored::MAX_FILES_PER_MESSAGE;
}

fn png_of(w: u32, h: u32) -> Vec<u8> {
    let img = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 90])));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[tokio::test]
async fn images_get_upright_previews_and_a_decompression_bomb_is_refused() {
    let h = harness();
    let admin = h.setup_admin().await;
    let (_, _, r) = h.call("POST", "/api/rooms", Some(json!({"name": "Photos", "visibility": "invite"})), Some(&admin)).await;
    let room = r["id"].as_i64().unwrap();
    let png = png_of(2000, 1000);
    let (_, _, loc) = h.create_upload(room, &admin, "wide.png", png.len()).await;
    assert_eq!(h.patch(&loc, &admin, 0, &png, &[]).await.0, StatusCode::NO_CONTENT);
    let uid = h.state.chat.db.read(|c| Ok(crate::store::users::all_users(c)?[0].id)).await.unwrap();
    h.send_upload(room, uid, &loc).await;
    let (_, _, page) = h.call("GET", &format!("/api/rooms/{room}/files"), None, Some(&admin)).await;
    let f = &page["files"][0];
    assert_eq!((f["mime"].as_str(), f["width"].as_u64(), f["height"].as_u64()), (Some("image/png"), Some(2000), Some(1000)), "{page}");
    let url = format!("{}/{}/wide.png", page["link"]["prefix"].as_str().unwrap(), f["id"]);
    for (side, w) in [(320, 320), (1280, 1280)] {
        let (st, hd, body) = h.download(&format!("{url}?thumb={side}"), &[]).await;
        assert_eq!((st, hd["content-type"].to_str().unwrap()), (StatusCode::OK, "image/jpeg"));
        let img = image::load_from_memory(&body).unwrap();
        assert_eq!((img.width(), img.height()), (w, w / 2));
    }
    let (_, hd, body) = h.download(&format!("{url}?thumb=77"), &[]).await;
    assert_eq!((hd["content-type"].to_str().unwrap(), body.len()), ("image/png", png.len()), "no such preview: the original");

    // a PNG stating 100000 × 100000 pixels in a few bytes
    let mut bomb = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [(&b"IHDR"[..], [&100_000u32.to_be_bytes()[..], &100_000u32.to_be_bytes()[..], &[8, 2, 0, 0, 0]].concat()), (b"IDAT", vec![0x78, 0x9c, 3, 0]), (b"IEND", vec![])] {
        bomb.extend_from_slice(&(data.len() as u32).to_be_bytes());
        bomb.extend_from_slice(kind);
        bomb.extend_from_slice(&data);
        let mut crc = crc32fast::Hasher::new();
        crc.update(kind);
        crc.update(&data);
        bomb.extend_from_slice(&crc.finalize().to_be_bytes());
    }
    let (_, _, loc) = h.create_upload(room, &admin, "bomb.png", bomb.len()).await;
    let (st, _, b) = h.patch(&loc, &admin, 0, &bomb, &[]).await;
    assert_eq!((st, b["error"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("image_too_large")), "{b}");
    assert!(b["message"].as_str().unwrap().contains("100000 × 100000"), "{b}");
    assert_eq!(h.tus("HEAD", &loc, &admin, &[TUS], vec![]).await.0, StatusCode::NOT_FOUND, "the upload ended");
}
