//! The HTTP API against its own description: every operation of
//! `/api/openapi.json` is called on a real `parvis serve` (the harness
//! checks each answer against the description: path, method, status,
//! body schema), and none may be left uncalled.

use parvis_e2e::Server;
use serde_json::json;

type R = anyhow::Result<()>;

#[tokio::test]
async fn every_operation_answers_as_described() -> R {
    // the wizard, on a box not set up yet
    let w = Server::start().await?;
    let code = w.setup_code();
    let st = w.http("GET", "/api/status", None, None).await?;
    assert_eq!(st.body["setup_needed"], true);
    assert_eq!(w.http("POST", "/api/setup/unlock", Some(json!({"code": "WRONG-CODE"})), None).await?.status, 403);
    let unlocked = w.http("POST", "/api/setup/unlock", Some(json!({"code": code, "language": "en"})), None).await?;
    assert_eq!(unlocked.status, 200, "{}", unlocked.text);
    let token = unlocked.body["token"].as_str().unwrap().to_string();
    let with_token = |method: &str, path: &str, body: Option<serde_json::Value>| {
        let (w, token) = (&w, token.clone());
        let (method, path) = (method.to_string(), path.to_string());
        async move { w.http_with(&method, &path, body, None, &[("x-setup-token", &token)]).await }
    };
    let draft = with_token("GET", "/api/setup/draft", None).await?;
    assert_eq!(draft.status, 200, "{}", draft.text);
    let mut settings = draft.body["settings"].clone();
    settings["company"] = json!("Acme");
    let bad = with_token("PUT", "/api/setup/draft", Some(json!({"step": 3, "settings": settings, "admin": {"username": "A", "display_name": "", "password": "x"}}))).await?;
    assert_eq!(bad.status, 422, "{}", bad.text);
    let saved = with_token("PUT", "/api/setup/draft", Some(json!({"step": 7, "settings": settings, "admin": {"username": "alice", "display_name": "Alice", "password": "password-1"}}))).await?;
    assert_eq!(saved.status, 200, "{}", saved.text);
    assert_eq!(w.http("GET", "/api/trust", None, None).await?.status, 200);
    let finished = with_token("POST", "/api/setup/finish", None).await?;
    assert_eq!(finished.status, 200, "{}", finished.text);
    assert_eq!(w.http("POST", "/api/setup", Some(json!({"code": code, "company": "x", "username": "bob", "display_name": "B", "password": "password-1"})), None).await?.status, 409);

    // everything else, on a box set up through POST /api/setup
    let s = Server::start().await?;
    let alice = s.setup_admin().await?;
    assert_eq!(s.http("GET", "/api/me", None, Some(&alice)).await?.status, 200);
    assert_eq!(s.http("PATCH", "/api/me", Some(json!({"display_name": "Alice M."})), Some(&alice)).await?.status, 200);
    assert_eq!(s.http("POST", "/api/me/password", Some(json!({"current": "nope-nope", "new": "password-9"})), Some(&alice)).await?.status, 403);
    let (bob_id, bob) = s.add_user(&alice, "bob").await?;
    assert_eq!(s.http("GET", "/api/users", None, Some(&bob)).await?.status, 200);
    assert_eq!(s.http("PATCH", &format!("/api/users/{bob_id}"), Some(json!({"disabled": false})), Some(&alice)).await?.status, 200);
    assert_eq!(s.http("POST", &format!("/api/users/{bob_id}/password"), Some(json!({"password": "password-2"})), Some(&alice)).await?.status, 204);
    let bob = s.login("bob", "password-2").await.unwrap_or(bob);
    let inv = s.http("POST", "/api/invites", Some(json!({"hours": 2})), Some(&alice)).await?;
    let token = inv.body["token"].as_str().unwrap().to_string();
    assert_eq!(s.http("GET", &format!("/api/invites/{token}"), None, None).await?.status, 200);
    let carol = s.http("POST", &format!("/api/invites/{token}"), Some(json!({"username": "carol", "display_name": "Carol", "password": "password-3"})), None).await?;
    assert_eq!(carol.status, 200, "{}", carol.text);
    let carol_id = carol.body["user"]["id"].as_i64().unwrap();
    let room = s.create_room(&alice, "Support", "open", &[bob_id]).await?;
    assert_eq!(s.http("GET", "/api/rooms", None, Some(&bob)).await?.status, 200);
    assert_eq!(s.http("GET", "/api/rooms/browse", None, Some(&bob)).await?.status, 200);
    assert_eq!(s.http("GET", &format!("/api/rooms/{room}"), None, Some(&bob)).await?.status, 200);
    assert_eq!(s.http("PATCH", &format!("/api/rooms/{room}"), Some(json!({"topic": "helping customers"})), Some(&alice)).await?.status, 204);
    assert_eq!(s.http("POST", &format!("/api/rooms/{room}/members"), Some(json!({"user": carol_id})), Some(&alice)).await?.status, 204);
    assert_eq!(s.http("DELETE", &format!("/api/rooms/{room}/members/{carol_id}"), None, Some(&alice)).await?.status, 204);
    assert_eq!(s.http("POST", "/api/direct", Some(json!({"user": bob_id})), Some(&alice)).await?.status, 200);
    assert_eq!(s.http("GET", &format!("/api/rooms/{room}/messages?limit=10"), None, Some(&bob)).await?.status, 200);
    assert_eq!(s.http("GET", "/api/search?q=help", None, Some(&bob)).await?.status, 200);
    assert_eq!(s.http("GET", "/api/ice", None, Some(&bob)).await?.status, 200);
    assert_eq!(s.http("GET", "/api/ws", None, Some(&bob)).await?.status, 400, "not a WebSocket upgrade");
    let settings = s.http("GET", "/api/admin/settings", None, Some(&alice)).await?;
    assert_eq!(settings.status, 200);
    let mut wrong = settings.body["settings"].clone();
    wrong["name"] = json!("Not A Name");
    assert_eq!(s.http("PUT", "/api/admin/settings", Some(json!({"settings": wrong})), Some(&alice)).await?.status, 422);
    assert_eq!(s.http("POST", "/api/admin/certificate/renew", None, Some(&alice)).await?.status, 200);
    assert_eq!(s.http("GET", "/api/admin/health", None, Some(&alice)).await?.status, 200);
    assert_eq!(s.http("GET", "/api/admin/health", None, Some(&bob)).await?.status, 403);
    assert_eq!(s.http("GET", "/api/admin/install", None, Some(&alice)).await?.status, 200);
    assert_eq!(s.http("POST", "/api/admin/install", Some(json!({"disk": "sda", "confirm": "sda"})), Some(&alice)).await?.status, 409);
    assert_eq!(s.http("POST", "/api/admin/restart", None, Some(&alice)).await?.status, 409);
    assert_eq!(s.http("POST", "/api/admin/update", Some(json!("not a bundle")), Some(&alice)).await?.status, 409);
    // a guest link with a password: its page, a wrong password, the guest in
    // its one room and nowhere else, the link revoked with its guests
    let made = s.http("POST", &format!("/api/rooms/{room}/guest-links"), Some(json!({"hours": 2, "password": "guest-pass-1", "label": "ACME"})), Some(&alice)).await?;
    assert_eq!(made.status, 200, "{}", made.text);
    let gtoken = made.body["token"].as_str().unwrap().to_string();
    assert_eq!(s.http("GET", &format!("/api/rooms/{room}/guest-links"), None, Some(&alice)).await?.status, 200);
    let info = s.http("GET", &format!("/api/guest/{gtoken}"), None, None).await?;
    assert_eq!((info.status, &info.body["password"]), (200, &json!(true)), "{}", info.text);
    assert_eq!(s.http("GET", "/api/guest/not-a-token", None, None).await?.status, 404);
    let wrong = s.http("POST", &format!("/api/guest/{gtoken}"), Some(json!({"display_name": "Claire", "password": "nope-nope"})), None).await?;
    assert_eq!(wrong.status, 401, "{}", wrong.text);
    let taken = s.http("POST", &format!("/api/guest/{gtoken}"), Some(json!({"display_name": "bob", "password": "guest-pass-1"})), None).await?;
    assert_eq!(taken.status, 409, "a member's name: {}", taken.text);
    let claire = s.http("POST", &format!("/api/guest/{gtoken}"), Some(json!({"display_name": "Claire", "password": "guest-pass-1"})), None).await?.session()?;
    assert_eq!(s.http("GET", &format!("/api/rooms/{room}/messages"), None, Some(&claire)).await?.status, 200);
    assert_eq!(s.http("POST", "/api/rooms", Some(json!({"name": "Mine", "visibility": "open"})), Some(&claire)).await?.status, 403);
    let link_id = made.body["link"]["id"].as_i64().unwrap();
    assert_eq!(s.http("DELETE", &format!("/api/rooms/{room}/guest-links/{link_id}?remove_guests=true"), None, Some(&alice)).await?.status, 204);
    assert_eq!(s.http("GET", "/api/me", None, Some(&claire)).await?.status, 401);
    // a knock link: the guest waits until the owner admits it (all of them)
    let knock = s.http("POST", &format!("/api/rooms/{room}/guest-links"), Some(json!({"knock": true})), Some(&alice)).await?;
    let ktoken = knock.body["token"].as_str().unwrap().to_string();
    let dana = s.http("POST", &format!("/api/guest/{ktoken}"), Some(json!({"display_name": "Dana"})), None).await?.session()?;
    assert_eq!(s.http("GET", "/api/rooms", None, Some(&dana)).await?.status, 403, "waiting");
    assert_eq!(s.http("GET", "/api/guests/waiting", None, Some(&alice)).await?.body[0]["name"], "Dana");
    let admitted = s.http("POST", &format!("/api/rooms/{room}/admission"), Some(json!({"admit": true})), Some(&alice)).await?;
    assert_eq!(admitted.body["decided"], json!([dana.user]), "{}", admitted.text);
    assert_eq!(s.http("GET", "/api/rooms", None, Some(&dana)).await?.status, 200);
    // a customer call from the direct conversation: a room of its own, a knock link
    let dm = s.http("POST", "/api/direct", Some(json!({"user": bob_id})), Some(&alice)).await?.body["id"].as_i64().unwrap();
    let call = s.http("POST", &format!("/api/rooms/{dm}/customer-call"), Some(json!({"name": "Support call"})), Some(&alice)).await?;
    assert_eq!((call.status, call.body["room"]["name"].as_str(), &call.body["link"]["knock"]), (200, Some("Support call"), &json!(true)), "{}", call.text);
    assert!(call.body["qr"]["size"].as_u64().unwrap() >= 21, "a QR code: {}", call.body["qr"]);
    // a file: tus discovery, creation, bytes, offset, sent, listed; another upload ended
    let tus = [("Tus-Resumable", "1.0.0")];
    let opts = s.http_bytes("OPTIONS", &format!("/api/rooms/{room}/uploads"), b"", Some(&bob), &[]).await?;
    assert_eq!((opts.status, opts.header("tus-version")), (204, Some("1.0.0")));
    let made = s.http_bytes("POST", &format!("/api/rooms/{room}/uploads"), b"", Some(&bob), &[tus[0], ("Upload-Length", "5"), ("Upload-Metadata", "filename aGkudHh0")]).await?;
    assert_eq!(made.status, 201, "{}", made.text);
    let at = made.header("location").unwrap().to_string();
    let patch = [tus[0], ("Content-Type", "application/offset+octet-stream"), ("Upload-Offset", "0")];
    assert_eq!(s.http_bytes("PATCH", &at, b"hello", Some(&bob), &patch).await?.status, 204);
    assert_eq!(s.http_bytes("HEAD", &at, b"", Some(&bob), &tus).await?.header("upload-offset"), Some("5"));
    let mut ws = s.ws(&bob, json!({})).await?;
    ws.until_synced().await?;
    ws.send(json!({"t": "send", "id": "f1", "room": room, "body": "", "files": [made.body["id"]]})).await?;
    let ack = ws.recv_until(|f| f["t"] == "ack").await?;
    assert!(ack["seq"].is_i64(), "{ack}");
    let files = s.http("GET", &format!("/api/rooms/{room}/files?q=hi"), None, Some(&alice)).await?;
    assert_eq!((files.status, &files.body["files"][0]["name"]), (200, &json!("hi.txt")), "{}", files.text);
    let other = s.http_bytes("POST", &format!("/api/rooms/{room}/uploads"), b"", Some(&bob), &[tus[0], ("Upload-Length", "5")]).await?;
    assert_eq!(s.http_bytes("DELETE", other.header("location").unwrap(), b"", Some(&bob), &tus).await?.status, 204);
    assert_eq!(s.http("POST", "/api/logout", None, Some(&bob)).await?.status, 204);
    // and a few errors through the same description
    assert_eq!(s.http("GET", "/api/me", None, Some(&bob)).await?.status, 401);
    assert_eq!(s.http("GET", "/api/rooms/one", None, Some(&alice)).await?.status, 400);

    // nothing in the description went uncalled
    let mut seen = s.contract().await?.seen.lock().unwrap().clone();
    seen.extend(w.contract().await?.seen.lock().unwrap().iter().cloned());
    let missing: Vec<_> = s.contract().await?.operations().into_iter().filter(|op| !seen.contains(op)).collect();
    assert!(missing.is_empty(), "operations no test called: {missing:?}");
    Ok(())
}
