//! Files through a real `parvis serve`: a 200 MiB tus upload cut at half
//! and resumed, the server SIGKILLed mid-upload and restarted, what comes
//! back from the download origin (bytes, headers, ranges), memory flat
//! whatever the size, and hundreds of link guesses at the origin.

// Load and memory checks wait and sample on the real clock.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use parvis_e2e::{Server, Session, rss_kib};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type R = anyhow::Result<()>;
const MIB: usize = 1 << 20;

/// `n` bytes no compressor or deduplication would shorten.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

const TUS: (&str, &str) = ("Tus-Resumable", "1.0.0");

async fn create(s: &Server, who: &Session, room: i64, name: &str, len: usize) -> anyhow::Result<String> {
    use base64::Engine as _;
    let meta = format!("filename {}", base64::engine::general_purpose::STANDARD.encode(name));
    let len = len.to_string();
    let res = s.http_bytes("POST", &format!("/api/rooms/{room}/uploads"), b"", Some(who), &[TUS, ("Upload-Length", &len), ("Upload-Metadata", &meta)]).await?;
    anyhow::ensure!(res.status == 201, "{}", res.text);
    Ok(res.header("location").unwrap().to_string())
}

async fn offset(s: &Server, who: &Session, at: &str) -> anyhow::Result<usize> {
    let res = s.http_bytes("HEAD", at, b"", Some(who), &[TUS]).await?;
    anyhow::ensure!(res.status == 200, "HEAD {}", res.status);
    Ok(res.header("upload-offset").unwrap().parse()?)
}

/// A PATCH of `data` from `from`, sent in 1 MiB writes; with `cut`, the
/// connection is dropped once that many bytes are out (no answer).
async fn patch(s: &Server, who: &Session, at: &str, from: usize, data: &[u8], cut: Option<usize>) -> anyhow::Result<Option<u16>> {
    patch_paced(s, who, at, from, data, cut, Duration::ZERO).await
}

/// [`patch`], waiting `pace` after each MiB (a slow uplink).
async fn patch_paced(s: &Server, who: &Session, at: &str, from: usize, data: &[u8], cut: Option<usize>, pace: Duration) -> anyhow::Result<Option<u16>> {
    let mut tls = s.connect(s.https_port).await?;
    let head = format!(
        "PATCH {at} HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\nCookie: parvis_session={}\r\nX-CSRF-Token: {}\r\n\
         Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: {from}\r\nContent-Length: {}\r\n\r\n",
        s.https_port,
        who.cookie,
        who.csrf,
        data.len()
    );
    tls.write_all(head.as_bytes()).await?;
    for (i, chunk) in data.chunks(MIB).enumerate() {
        if cut.is_some_and(|c| i * MIB >= c) {
            tls.flush().await?;
            drop(tls);
            return Ok(None);
        }
        tls.write_all(chunk).await?;
        if !pace.is_zero() {
            tls.flush().await?;
            tokio::time::sleep(pace).await;
        }
    }
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw);
    Ok(text.split(' ').nth(1).and_then(|s| s.parse().ok()))
}

/// PATCH the rest from where the server is, waiting out the 423 of a
/// request the server has not finished with yet.
async fn finish(s: &Server, who: &Session, at: &str, data: &[u8]) -> anyhow::Result<usize> {
    for _ in 0..100 {
        let from = offset(s, who, at).await?;
        match patch(s, who, at, from, &data[from..], None).await? {
            Some(204) => return Ok(from),
            Some(423) | Some(409) => tokio::time::sleep(Duration::from_millis(100)).await,
            other => anyhow::bail!("PATCH from {from}: {other:?}"),
        }
    }
    anyhow::bail!("the upload stayed locked")
}

/// A raw GET on the download origin: status, headers (lower case), body.
async fn download(s: &Server, path: &str, extra: &str) -> anyhow::Result<(u16, Vec<(String, String)>, Vec<u8>)> {
    let mut tls = s.connect(s.downloads_port).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n{extra}\r\n", s.downloads_port);
    tls.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw).await;
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| anyhow::anyhow!("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
    let mut body = raw[end + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Ok((status, headers, body))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..i]).trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + n]);
        b = &b[i + 2 + n + 2..];
    }
    out
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Sends the finished upload in a message; the file's download path.
async fn send_and_locate(s: &Server, who: &Session, room: i64, at: &str, name: &str) -> anyhow::Result<String> {
    let id = at.rsplit('/').next().unwrap();
    let mut ws = s.ws(who, json!({})).await?;
    ws.until_synced().await?;
    ws.send(json!({"t": "send", "id": format!("m-{id}"), "room": room, "body": "the file", "files": [id]})).await?;
    let ack = ws.recv_until(|f| f["t"] == "ack" || f["t"] == "error").await?;
    anyhow::ensure!(ack["t"] == "ack", "{ack}");
    let history = s.http("GET", &format!("/api/rooms/{room}/messages"), None, Some(who)).await?;
    let sent = history.body["messages"].as_array().unwrap().iter().find(|m| m["seq"] == ack["seq"]).cloned().unwrap_or_default();
    let file = &sent["files"][0];
    anyhow::ensure!(file["name"] == name, "{sent}");
    let page = s.http("GET", &format!("/api/rooms/{room}/files"), None, Some(who)).await?;
    anyhow::ensure!(page.body["files"][0]["id"] == file["id"], "{}", page.text);
    Ok(format!("{}/{}/{}", page.body["link"]["prefix"].as_str().unwrap(), file["id"], name.replace(' ', "%20")))
}

#[tokio::test]
async fn a_200_mib_upload_cut_at_half_resumes_and_downloads_byte_for_byte_with_memory_flat() -> R {
    let s = Server::start().await?;
    let alice = s.setup_admin().await?;
    let room = s.create_room(&alice, "Support", "invite", &[]).await?;
    let data = noise(200 * MIB, 7);
    let pid = s.pid().unwrap();
    let before = rss_kib(pid);
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampler = tokio::spawn({
        let peak = peak.clone();
        async move {
            loop {
                peak.fetch_max(rss_kib(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let at = create(&s, &alice, room, "backup 2026.tar", data.len()).await?;
    assert_eq!(patch(&s, &alice, &at, 0, &data, Some(100 * MIB)).await?, None, "cut");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kept = offset(&s, &alice, &at).await?;
    assert!(kept <= 100 * MIB, "no more than was sent: {kept}");
    assert!(kept >= 48 * MIB, "what reached the disk before the cut is kept: {kept}");
    let from = finish(&s, &alice, &at, &data).await?;
    assert!(from >= kept);
    assert_eq!(offset(&s, &alice, &at).await.ok(), Some(data.len()));
    sampler.abort();
    let grew = peak.load(std::sync::atomic::Ordering::Relaxed).saturating_sub(before);
    eprintln!("cut after {} MiB sent: {kept} bytes kept, resumed from {from}; RSS +{grew} KiB (peak) for 200 MiB", 100);
    assert!(grew < 40 * 1024, "RSS grew {grew} KiB for a 200 MiB upload");

    let path = send_and_locate(&s, &alice, room, &at, "backup 2026.tar").await?;
    let (st, h, body) = download(&s, &path, "").await?;
    assert_eq!(st, 200);
    assert_eq!(body.len(), data.len());
    assert_eq!(Sha256::digest(&body), Sha256::digest(&data), "the same bytes");
    assert_eq!(header(&h, "content-disposition"), Some("attachment; filename=\"backup 2026.tar\"; filename*=UTF-8''backup%202026.tar"));
    assert_eq!(header(&h, "content-type"), Some("application/octet-stream"));
    assert_eq!(header(&h, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(&h, "content-security-policy"), Some("sandbox; default-src 'none'; frame-ancestors 'none'"));
    assert_eq!(header(&h, "referrer-policy"), Some("no-referrer"));
    assert_eq!(header(&h, "accept-ranges"), Some("bytes"));
    assert!(header(&h, "set-cookie").is_none());
    // a resumed download, a seek
    let (st, h, part) = download(&s, &path, &format!("Range: bytes={}-\r\n", 150 * MIB)).await?;
    assert_eq!((st, header(&h, "content-range")), (206, Some(format!("bytes {}-{}/{}", 150 * MIB, data.len() - 1, data.len()).as_str())));
    assert_eq!(part, &data[150 * MIB..]);
    let (st, _, part) = download(&s, &path, "Range: bytes=1000-1999\r\n").await?;
    assert_eq!((st, part.as_slice()), (206, &data[1000..2000]));
    // the app's pages let the origin's images and media in, nothing else
    let page = s.http("GET", "/", None, None).await?;
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains(&format!("img-src 'self' https://localhost:{}", s.downloads_port)), "{csp}");
    Ok(())
}

#[tokio::test]
async fn a_server_killed_mid_upload_resumes_after_restart_with_nothing_corrupt() -> R {
    let mut s = Server::start().await?;
    let alice = s.setup_admin().await?;
    let room = s.create_room(&alice, "Support", "invite", &[]).await?;
    let data = noise(128 * MIB, 11);
    let at = create(&s, &alice, room, "scan.pdf", data.len()).await?;
    // the server dies while the body is coming, after its first checkpoint
    let sending = {
        let (s2, alice, at, part) = (Server::attach(s.data.clone(), s.https_port), alice.clone(), at.clone(), data[..96 * MIB].to_vec());
        tokio::spawn(async move { patch_paced(&s2, &alice, &at, 0, &part, None, Duration::from_millis(10)).await })
    };
    let mut checkpoint = 0;
    for _ in 0..500 {
        checkpoint = offset(&s, &alice, &at).await?;
        if checkpoint > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.kill9();
    let _ = sending.await;
    s.restart().await?;
    let kept = offset(&s, &alice, &at).await?;
    eprintln!("SIGKILL while 96 MiB were coming, after a checkpoint at {checkpoint}: {kept} bytes kept");
    assert!(kept >= checkpoint && kept > 0, "a durable checkpoint survives: {kept} < {checkpoint}");
    assert!(kept < 96 * MIB, "the body was still coming: {kept}");
    // every byte kept is the right one: resuming from there gives the file
    finish(&s, &alice, &at, &data).await?;
    let path = send_and_locate(&s, &alice, room, &at, "scan.pdf").await?;
    let (st, _, body) = download(&s, &path, "").await?;
    assert_eq!((st, body.len()), (200, data.len()));
    assert_eq!(Sha256::digest(&body), Sha256::digest(&data), "resumed after a crash at {kept}: the same bytes");
    // killed again right after the upload completed: nothing half-done stays
    let at = create(&s, &alice, room, "again.pdf", MIB).await?;
    assert_eq!(patch(&s, &alice, &at, 0, &data[..MIB], None).await?, Some(204));
    s.restart().await?;
    let uploads: Vec<String> = std::fs::read_dir(s.data.join("uploads"))?.flatten().map(|e| e.file_name().to_string_lossy().into()).collect();
    assert!(uploads.is_empty(), "no partial file left: {uploads:?}");
    let path = send_and_locate(&s, &alice, room, &at, "again.pdf").await?;
    assert_eq!(download(&s, &path, "").await?.2, &data[..MIB]);
    Ok(())
}

#[tokio::test]
async fn hundreds_of_guessed_links_at_the_download_origin_get_403_and_leave_it_serving() -> R {
    let s = Server::start().await?;
    let alice = s.setup_admin().await?;
    let room = s.create_room(&alice, "Support", "invite", &[]).await?;
    let at = create(&s, &alice, room, "plan.txt", 12).await?;
    assert_eq!(patch(&s, &alice, &at, 0, b"the plan: go", None).await?, Some(204));
    let path = send_and_locate(&s, &alice, room, &at, "plan.txt").await?;
    let pid = s.pid().unwrap();
    let before = rss_kib(pid);
    let mut tasks = Vec::new();
    for i in 0..300 {
        // /f/<room>/<user>/<expires>/<sig>/<id>/<name>: another signature
        let mut parts: Vec<String> = path.split('/').map(str::to_string).collect();
        parts[5] = format!("{i:024}");
        let (s2, guess) = (Server::attach(s.data.clone(), s.https_port), parts.join("/"));
        let downloads_port = s.downloads_port;
        tasks.push(tokio::spawn(async move {
            let mut s2 = s2;
            s2.downloads_port = downloads_port;
            download(&s2, &guess, "").await.map(|(st, _, _)| st).unwrap_or(0)
        }));
    }
    let mut counts = std::collections::BTreeMap::new();
    for t in tasks {
        *counts.entry(t.await?).or_insert(0) += 1;
    }
    // 403 (a bad signature) or closed at the door (the per-address cap); never served
    assert!(counts.keys().all(|st| [0, 403, 404].contains(st)), "{counts:?}");
    assert!(counts.get(&403).copied().unwrap_or(0) >= 50, "{counts:?}");
    let grew = rss_kib(pid).saturating_sub(before);
    eprintln!("300 guessed links: {counts:?} (0: closed at the door); RSS +{grew} KiB");
    assert!(grew < 16 * 1024, "RSS grew {grew} KiB");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (st, _, body) = download(&s, &path, "").await?;
    assert_eq!((st, body.as_slice()), (200, &b"the plan: go"[..]), "the real link still works");
    Ok(())
}
