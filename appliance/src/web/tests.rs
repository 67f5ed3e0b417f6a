//! The HTTP API through the router, without sockets (tower `oneshot`).

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::chat::Chat;
use crate::config::Config;
use crate::store::{Db, UserId};

struct Harness {
    app: Router,
    state: State,
    _dir: tempfile::TempDir,
}

const CODE: &str = "ABCD-2345";
const TURN_SECRET: &str = "test-secret-0123456789";

fn harness() -> Harness {
    harness_with(crate::auth::Hasher::new(2, 64))
}

fn harness_with(hasher: crate::auth::Hasher) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("t.db")).unwrap();
    let config = Config { data: dir.path().to_path_buf(), ..Config::default() };
    let chat = Chat::new(db, Arc::new(crate::clock::SystemClock), config.chat.clone());
    std::fs::write(dir.path().join("turn-secret"), TURN_SECRET).unwrap();
    let settings = crate::settings::SettingsService::new(config.clone(), String::new(), "fr".into(), chat.db.clone());
    let state = Arc::new(AppState {
        chat,
        auth: crate::auth::Auth { hasher, ..crate::auth::Auth::new(&config.limits) },
        settings,
        certs: crate::certs::Certs {
            ca_pem: "-----BEGIN CERTIFICATE-----\n".into(),
            ca_fingerprint: "AA:BB".into(),
            status: Arc::default(),
            renew: Arc::default(),
        },
        turn: crate::turn::TurnService::new(None, &config).unwrap(),
        setup_code: Mutex::new(Some(CODE.into())),
        lifecycle: crate::serve::Lifecycle::default(),
        files: crate::files::Files::open(dir.path(), 8444).unwrap(),
    });
    Harness { app: router(state.clone()), state, _dir: dir }
}

/// A logged-in browser: its cookie and CSRF token.
#[derive(Clone, Default)]
struct Session {
    cookie: String,
    csrf: String,
}

impl Harness {
    /// A request from this site's page, logged in as `s` if given.
    fn request(method: &str, path: &str, s: Option<&Session>) -> axum::http::request::Builder {
        let req = Request::builder().method(method).uri(path).header(header::HOST, "parvis.test");
        match s {
            Some(s) => req.header(header::COOKIE, format!("{SESSION_COOKIE}={}", s.cookie)).header(CSRF_HEADER, &s.csrf),
            None => req,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>, s: Option<&Session>) -> (StatusCode, HeaderMap, Value) {
        let req = Self::request(method, path, s);
        let req = match body {
            Some(b) => req.header(header::CONTENT_TYPE, "application/json").body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        self.send(req).await
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, HeaderMap, Value) {
        let res = self.app.clone().oneshot(req).await.unwrap();
        let (parts, body) = res.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
        (parts.status, parts.headers, v)
    }

    fn session_from(headers: &HeaderMap, body: &Value) -> Session {
        let set = headers.get(header::SET_COOKIE).unwrap().to_str().unwrap();
        let cookie = set.split(';').next().unwrap().split_once('=').unwrap().1.to_string();
        Session { cookie, csrf: body["csrf"].as_str().unwrap().to_string() }
    }

    async fn setup_admin(&self) -> Session {
        let (st, h, b) = self
            .call(
                "POST",
                "/api/setup",
                Some(json!({"code": CODE, "company": "Acme", "username": "alice", "display_name": "Alice", "password": "password-1"})),
                None,
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{b}");
        Self::session_from(&h, &b)
    }

    async fn add_user(&self, admin: &Session, name: &str) -> (UserId, Session) {
        let (st, _, b) = self
            .call(
                "POST",
                "/api/users",
                Some(json!({"username": name, "display_name": name, "password": "password-2"})),
                Some(admin),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{b}");
        let id = UserId(b["id"].as_i64().unwrap());
        (id, self.login(name, "password-2").await)
    }

    async fn login(&self, name: &str, password: &str) -> Session {
        let (st, h, b) = self.call("POST", "/api/login", Some(json!({"username": name, "password": password})), None).await;
        assert_eq!(st, StatusCode::OK, "{b}");
        Self::session_from(&h, &b)
    }
}

#[tokio::test]
async fn setup_needs_the_code_and_happens_once() {
    let h = harness();
    let (_, _, status) = h.call("GET", "/api/status", None, None).await;
    assert_eq!(status["setup_needed"], true);
    let body = |code: &str| json!({"code": code, "company": "Acme", "username": "alice", "display_name": "Alice", "password": "password-1"});
    let (st, _, b) = h.call("POST", "/api/setup", Some(body("WRONG-CODE")), None).await;
    assert_eq!((st, b["error"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
    let (st, headers, _) = h.call("POST", "/api/setup", Some(body("abcd 2345")), None).await;
    assert_eq!(st, StatusCode::OK);
    let cookie = headers.get(header::SET_COOKIE).unwrap().to_str().unwrap();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    let (st, _, _) = h.call("POST", "/api/setup", Some(body(CODE)), None).await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (_, _, status) = h.call("GET", "/api/status", None, None).await;
    assert_eq!((status["setup_needed"].as_bool(), status["company"].as_str()), (Some(false), Some("Acme")));
}

#[tokio::test]
async fn wrong_setup_codes_are_rate_limited() {
    let h = harness();
    let body = json!({"code": "NOPE-NOPE", "company": "A", "username": "alice", "display_name": "A", "password": "password-1"});
    for _ in 0..10 {
        let (st, _, _) = h.call("POST", "/api/setup", Some(body.clone()), None).await;
        assert_eq!(st, StatusCode::FORBIDDEN);
    }
    let (st, headers, _) = h.call("POST", "/api/setup", Some(body), None).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert!(headers.contains_key(header::RETRY_AFTER));
}

#[tokio::test]
async fn login_logout_and_rate_limit() {
    let h = harness();
    h.setup_admin().await;
    let (st, _, b) = h.call("POST", "/api/login", Some(json!({"username": "alice", "password": "nope-nope"})), None).await;
    assert_eq!((st, b["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("bad_credentials")));
    let (st, _, _) = h.call("POST", "/api/login", Some(json!({"username": "nobody", "password": "nope-nope"})), None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let s = h.login("ALICE", "password-1").await;
    let (st, _, me) = h.call("GET", "/api/me", None, Some(&s)).await;
    assert_eq!((st, me["user"]["username"].as_str()), (StatusCode::OK, Some("alice")));
    let (st, _, _) = h.call("POST", "/api/logout", None, Some(&s)).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _, _) = h.call("GET", "/api/me", None, Some(&s)).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    for _ in 0..10 {
        h.call("POST", "/api/login", Some(json!({"username": "alice", "password": "wrong-wrong"})), None).await;
    }
    let (st, _, _) = h.call("POST", "/api/login", Some(json!({"username": "alice", "password": "password-1"})), None).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "ten failures block even the right password for a while");
}

#[tokio::test]
async fn state_changes_need_the_csrf_token_and_same_origin() {
    let h = harness();
    let s = h.setup_admin().await;
    let no_csrf = Session { csrf: "forged".into(), ..s.clone() };
    let (st, _, b) = h.call("PATCH", "/api/me", Some(json!({"display_name": "X"})), Some(&no_csrf)).await;
    assert_eq!((st, b["error"].as_str()), (StatusCode::FORBIDDEN, Some("csrf")));
    let req = Request::builder()
        .method("PATCH")
        .uri("/api/me")
        .header(header::HOST, "parvis.test")
        .header(header::ORIGIN, "https://evil.example")
        .header(header::COOKIE, format!("{SESSION_COOKIE}={}", s.cookie))
        .header(CSRF_HEADER, &s.csrf)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"display_name":"X"}"#))
        .unwrap();
    let (st, _, _) = h.send(req).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _, b) = h.call("PATCH", "/api/me", Some(json!({"display_name": "Alice B."})), Some(&s)).await;
    assert_eq!((st, b["display_name"].as_str()), (StatusCode::OK, Some("Alice B.")));
}

#[tokio::test]
async fn responses_carry_a_strict_csp() {
    let h = harness();
    for path in ["/", "/api/status", "/assets/app.js"] {
        let (st, headers, _) = h.call("GET", path, None, None).await;
        assert_eq!(st, StatusCode::OK, "{path}");
        let csp = headers.get(header::CONTENT_SECURITY_POLICY).unwrap().to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe"), "{csp}");
        assert_eq!(headers.get(header::X_CONTENT_TYPE_OPTIONS).unwrap(), "nosniff");
    }
    let (st, _, _) = h.call("GET", "/assets/../Cargo.toml", None, None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn admin_surface_is_admin_only() {
    let h = harness();
    let admin = h.setup_admin().await;
    let (_, bob) = h.add_user(&admin, "bob").await;
    let (st, _, _) = h
        .call("POST", "/api/users", Some(json!({"username": "eve", "display_name": "Eve", "password": "password-3"})), Some(&bob))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _, _) = h.call("POST", "/api/invites", Some(json!({})), Some(&bob)).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _, _) = h.call("GET", "/api/users", None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn disabling_a_user_ends_their_session_at_once() {
    let h = harness();
    let admin = h.setup_admin().await;
    let (bob_id, bob) = h.add_user(&admin, "bob").await;
    let mut ws_rx = h.state.chat.hub.register(bob_id).frames;
    let (st, _, _) = h.call("PATCH", &format!("/api/users/{bob_id}"), Some(json!({"disabled": true})), Some(&admin)).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _, _) = h.call("GET", "/api/me", None, Some(&bob)).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert!(matches!(ws_rx.recv().await, Some(crate::chat::hub::Out::Close(4001, _))));
    let (st, _, b) = h.call("POST", "/api/login", Some(json!({"username": "bob", "password": "password-2"})), None).await;
    assert_eq!((st, b["error"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
    // the admin resets bob's password and re-enables him
    h.call("PATCH", &format!("/api/users/{bob_id}"), Some(json!({"disabled": false})), Some(&admin)).await;
    let (st, _, _) = h.call("POST", &format!("/api/users/{bob_id}/password"), Some(json!({"password": "fresh-pass-1"})), Some(&admin)).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    h.login("bob", "fresh-pass-1").await;
}

#[tokio::test]
async fn invites_are_single_use() {
    let h = harness();
    let admin = h.setup_admin().await;
    let (st, _, inv) = h.call("POST", "/api/invites", Some(json!({"hours": 24})), Some(&admin)).await;
    assert_eq!(st, StatusCode::OK);
    let path = format!("/api{}", inv["path"].as_str().unwrap().replace("/invite/", "/invites/"));
    let (st, _, info) = h.call("GET", &path, None, None).await;
    assert_eq!((st, info["company"].as_str()), (StatusCode::OK, Some("Acme")));
    let join = json!({"username": "carol", "display_name": "Carol", "password": "password-4"});
    let (st, headers, b) = h.call("POST", &path, Some(join.clone()), None).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let carol = Harness::session_from(&headers, &b);
    let (_, _, rooms) = h.call("GET", "/api/rooms", None, Some(&carol)).await;
    assert_eq!(rooms[0]["name"], "General", "newcomers land in the company room");
    let (st, _, _) = h.call("POST", &path, Some(json!({"username": "dave", "display_name": "D", "password": "password-5"})), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _, _) = h.call("GET", "/api/invites/not-a-token", None, None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn rooms_history_and_permissions_over_http() {
    let h = harness();
    let admin = h.setup_admin().await;
    let (bob_id, bob) = h.add_user(&admin, "bob").await;
    let (_, eve) = h.add_user(&admin, "eve").await;
    let (st, _, room) = h
        .call("POST", "/api/rooms", Some(json!({"name": "Sales", "visibility": "invite", "members": [bob_id]})), Some(&admin))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{room}");
    let id = room["id"].as_i64().unwrap();
    let (st, _, b) = h.call("GET", &format!("/api/rooms/{id}/messages"), None, Some(&eve)).await;
    assert_eq!((st, b["error"].as_str()), (StatusCode::FORBIDDEN, Some("not_member")));
    let (st, _, b) = h.call("GET", &format!("/api/rooms/{id}/messages"), None, Some(&bob)).await;
    assert_eq!((st, b["more"].as_bool()), (StatusCode::OK, Some(false)));
    let (_, _, browse) = h.call("GET", "/api/rooms/browse", None, Some(&eve)).await;
    assert!(browse.as_array().unwrap().iter().all(|r| r["name"] != "Sales"), "invite-only rooms stay hidden");
    let (st, _, _) = h.call("PATCH", &format!("/api/rooms/{id}"), Some(json!({"name": "Hacked"})), Some(&bob)).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _, _) = h.call("PATCH", &format!("/api/rooms/{id}"), Some(json!({"name": "Sales EU"})), Some(&admin)).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _, _) = h.call("DELETE", &format!("/api/rooms/{id}/members/{bob_id}"), None, Some(&bob)).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "leaving");
    let (st, _, _) = h.call("GET", &format!("/api/rooms/{id}"), None, Some(&bob)).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _, b) = h.call("GET", "/api/search?q=%22%20OR%20*", None, Some(&bob)).await;
    assert_eq!((st, b["hits"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)));
    let (st, _, _) = h.call("GET", "/api/nope", None, Some(&bob)).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn malformed_bodies_get_precise_errors() {
    let h = harness();
    let s = h.setup_admin().await;
    let req = Request::builder()
        .method("POST")
        .uri("/api/rooms")
        .header(header::HOST, "parvis.test")
        .header(header::COOKIE, format!("{SESSION_COOKIE}={}", s.cookie))
        .header(CSRF_HEADER, &s.csrf)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"name\": \"x\", "))
        .unwrap();
    let (st, headers, b) = h.send(req).await;
    assert_eq!((st, b["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid")), "{b}");
    assert_eq!(headers.get(header::CONTENT_TYPE).unwrap(), "application/json");
    let (st, _, b) = h.call("POST", "/api/rooms", Some(json!({"name": "x", "visibility": "public"})), Some(&s)).await;
    assert_eq!((st, b["error"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid")), "{b}");
    assert!(b["message"].as_str().unwrap().contains("visibility"), "{b}");
    let (st, _, b) = h.call("POST", "/api/rooms", Some(json!({"name": " ", "visibility": "open"})), Some(&s)).await;
    assert_eq!((st, b["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid")));
}

/// Every error under /api is the documented JSON, whatever refused the
/// request: an extractor, the body limit, the router.
#[tokio::test]
async fn every_api_error_is_the_documented_json() {
    let h = harness();
    let s = h.setup_admin().await;
    let raw = |method: &str, path: &str, ctype: Option<&str>, body: Vec<u8>| {
        let mut r = Harness::request(method, path, Some(&s));
        if let Some(t) = ctype {
            r = r.header(header::CONTENT_TYPE, t);
        }
        r.body(Body::from(body)).unwrap()
    };
    let cases = [
        (raw("GET", "/api/rooms/1/messages?before=yesterday", None, vec![]), StatusCode::BAD_REQUEST, "invalid"),
        (raw("GET", "/api/rooms/one/messages", None, vec![]), StatusCode::BAD_REQUEST, "invalid"),
        (raw("GET", "/api/search", None, vec![]), StatusCode::BAD_REQUEST, "invalid"),
        (raw("POST", "/api/rooms", Some("application/json"), vec![b' '; 70 * 1024]), StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        (raw("POST", "/api/rooms", Some("text/plain"), b"{}".to_vec()), StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        (raw("POST", "/api/rooms", Some("application/json"), b"[1]".to_vec()), StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
        (raw("DELETE", "/api/rooms", None, vec![]), StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        (raw("GET", "/api/ws", None, vec![]), StatusCode::BAD_REQUEST, "invalid"),
        (raw("GET", "/api/no/such/thing", None, vec![]), StatusCode::NOT_FOUND, "not_found"),
        (raw("POST", "/api/admin/update", Some("application/octet-stream"), vec![0; 129 << 20]), StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
    ];
    for (req, status, code) in cases {
        let what = format!("{} {}", req.method(), req.uri());
        let (st, headers, b) = h.send(req).await;
        assert_eq!((st, b["error"].as_str()), (status, Some(code)), "{what}: {b}");
        assert!(b["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {b}");
        assert_eq!(headers.get(header::CONTENT_TYPE).unwrap(), "application/json", "{what}");
    }
}

#[tokio::test]
async fn metrics_are_for_admins_or_the_box_itself() {
    let h = harness();
    let admin = h.setup_admin().await;
    let (_, bob) = h.add_user(&admin, "bob").await;
    let (st, _, _) = h.call("GET", "/metrics", None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _, _) = h.call("GET", "/metrics", None, Some(&bob)).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _, body) = h.call("GET", "/metrics", None, Some(&admin)).await;
    assert_eq!(st, StatusCode::OK);
    assert!(body.as_str().unwrap().contains("parvis_chat_connections 0"), "{body}");
    let mut req = Request::builder().uri("/metrics").header(header::HOST, "parvis.test").body(Body::empty()).unwrap();
    req.extensions_mut().insert(axum::extract::ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 4000))));
    let (st, _, _) = h.send(req).await;
    assert_eq!(st, StatusCode::OK, "loopback may scrape");
}

#[tokio::test]
async fn ice_servers_are_only_this_box_with_short_lived_credentials() {
    let h = harness();
    let (st, _, _) = h.call("GET", "/api/ice", None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let admin = h.setup_admin().await;
    let (st, _, v) = h.call("GET", "/api/ice", None, Some(&admin)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let servers = v["iceServers"].as_array().unwrap();
    let urls: Vec<&str> = servers.iter().flat_map(|s| s["urls"].as_array().unwrap()).map(|u| u.as_str().unwrap()).collect();
    assert!(urls.iter().all(|u| u.contains(":parvis.test:")), "only this box: {urls:?}");
    assert!(urls.iter().any(|u| u.starts_with("turns:parvis.test:8443")), "TURN over TLS on the HTTPS port: {urls:?}");
    let turn = servers.iter().find(|s| s["username"].is_string()).unwrap();
    let username = turn["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, "u1");
    let ttl = v["ttl"].as_u64().unwrap();
    assert!(ttl <= 3600);
    let now = crate::clock::Clock::now_ms(&crate::clock::SystemClock) as u64 / 1000;
    assert!(expiry.parse::<u64>().unwrap() <= now + ttl + 1);
    assert_eq!(turn["credential"], netstack::turn::auth::rest_password(TURN_SECRET.as_bytes(), username));
}

#[test]
fn ports_are_stripped_from_every_host_form() {
    for (given, host) in [
        ("parvis.local:8443", "parvis.local"),
        ("parvis.local", "parvis.local"),
        ("192.0.2.7:443", "192.0.2.7"),
        ("[fd00::2]:8443", "[fd00::2]"),
        ("[fd00::2]", "[fd00::2]"),
    ] {
        assert_eq!(strip_port(given), host, "{given}");
    }
}

impl Harness {
    async fn wizard(&self, method: &str, path: &str, body: Option<Value>, token: &str) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path).header(header::HOST, "parvis.test").header("x-setup-token", token);
        req = req.header(header::CONTENT_TYPE, "application/json");
        let req = req.body(body.map_or_else(Body::empty, |b| Body::from(b.to_string()))).unwrap();
        let (st, _, v) = self.send(req).await;
        (st, v)
    }
}

#[tokio::test]
async fn the_wizard_needs_the_code_validates_each_step_resumes_and_finishes_into_chat() {
    let h = harness();
    let (st, _, _) = h.call("POST", "/api/setup/unlock", Some(json!({"code": "NOPE-NOPE"})), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = h.wizard("GET", "/api/setup/draft", None, "made-up-token").await;
    assert_eq!(st, StatusCode::FORBIDDEN, "no draft without the code");
    let (st, _, b) = h.call("POST", "/api/setup/unlock", Some(json!({"code": CODE, "language": "en"})), None).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let token = b["token"].as_str().unwrap().to_string();
    let mut settings = b["draft"]["settings"].clone();
    assert_eq!(settings["language"], "en");
    assert_eq!(settings["name"], "parvis");
    assert!(b["draft"]["info"]["ca_fingerprint"].is_string());

    // a bad step is refused with every problem keyed like the configuration
    settings["company"] = json!("");
    settings["name"] = json!("Not A Label");
    let (st, e) = h.wizard("PUT", "/api/setup/draft", Some(json!({"step": 4, "settings": settings,
        "admin": {"username": "A", "display_name": "", "password": "short"}})), &token).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let keys: Vec<&str> = e["errors"].as_array().unwrap().iter().map(|x| x["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["company", "name", "admin.username", "admin.display_name", "admin.password"]);
    // saving step 1 does not judge what later steps ask
    let (st, _) = h.wizard("PUT", "/api/setup/draft", Some(json!({"step": 2, "settings": settings})), &token).await;
    assert_eq!(st, StatusCode::OK);

    settings["company"] = json!("Acme");
    settings["name"] = json!("office");
    let (st, d) = h.wizard("PUT", "/api/setup/draft", Some(json!({"step": 3, "settings": settings,
        "admin": {"username": "alice", "display_name": "Alice", "password": "password-1"}})), &token).await;
    assert_eq!(st, StatusCode::OK, "{d}");
    assert_eq!(d["admin"]["password_set"], true);

    // after a reboot (new unlock), the draft is where it was; the old token is gone
    let (_, _, b) = h.call("POST", "/api/setup/unlock", Some(json!({"code": CODE})), None).await;
    let token2 = b["token"].as_str().unwrap().to_string();
    assert_eq!((b["draft"]["step"].as_u64(), b["draft"]["settings"]["name"].as_str()), (Some(3), Some("office")));
    assert_eq!(h.wizard("GET", "/api/setup/draft", None, &token).await.0, StatusCode::FORBIDDEN);

    settings["turn_external_address"] = json!("203.0.113.7");
    settings["federation"] = json!("allowlist");
    settings["federation_allow"] = json!(["Chat.Partner.example"]);
    let (st, _) = h.wizard("PUT", "/api/setup/draft", Some(json!({"step": 7, "settings": settings})), &token2).await;
    assert_eq!(st, StatusCode::OK);
    let req = Request::builder().method("POST").uri("/api/setup/finish").header(header::HOST, "parvis.test")
        .header("x-setup-token", &token2).body(Body::empty()).unwrap();
    let (st, headers, b) = h.send(req).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let admin = Harness::session_from(&headers, &b);
    let (_, _, rooms) = h.call("GET", "/api/rooms", None, Some(&admin)).await;
    assert_eq!(rooms[0]["name"], "General", "{rooms}");
    let saved = Config::from_toml(&std::fs::read_to_string(h.state.settings.base().data.join("parvis.toml")).unwrap()).unwrap();
    assert_eq!((saved.name.as_str(), saved.federation), ("office", crate::config::Federation::Allowlist));
    assert_eq!(saved.federation_allow, ["chat.partner.example"]);
    assert_eq!(saved.turn.external_address, Some("203.0.113.7".parse().unwrap()));
    let (_, _, status) = h.call("GET", "/api/status", None, None).await;
    assert_eq!((status["setup_needed"].as_bool(), status["company"].as_str()), (Some(false), Some("Acme")));
    // the code stops working
    let (st, _, _) = h.call("POST", "/api/setup/unlock", Some(json!({"code": CODE})), None).await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(h.wizard("GET", "/api/setup/draft", None, &token2).await.0, StatusCode::CONFLICT);
}

#[tokio::test]
async fn settings_are_for_admins_and_go_through_the_same_check() {
    let h = harness();
    let admin = h.setup_admin().await;
    let (_, bob) = h.add_user(&admin, "bob").await;
    assert_eq!(h.call("GET", "/api/admin/settings", None, Some(&bob)).await.0, StatusCode::FORBIDDEN);
    let (st, _, v) = h.call("GET", "/api/admin/settings", None, Some(&admin)).await;
    assert_eq!(st, StatusCode::OK);
    let mut s = v["settings"].clone();
    assert_eq!(s["company"], "Acme", "the company given at setup");
    assert_eq!(s["network"]["mode"], "dhcp");
    s["tls"]["mode"] = json!("acme");
    let (st, _, e) = h.call("PUT", "/api/admin/settings", Some(json!({"settings": s})), Some(&admin)).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(e["errors"][0]["key"], "tls.acme_domains");
    s["tls"]["acme_domains"] = json!(["chat.example.com"]);
    s["relay_port_max"] = json!(50100);
    let (st, _, v) = h.call("PUT", "/api/admin/settings", Some(json!({"settings": s})), Some(&admin)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(h.state.settings.tls_watch().borrow().acme_domains, ["chat.example.com"], "applied live");
    assert_eq!(v["settings"]["relay_port_max"], 50100);
    // a static address: checked, then kept for the box's next start
    s["network"] = json!({"mode": "static", "address": "192.168.1.20/24", "gateway": "10.0.0.1", "dns": []});
    let (st, _, e) = h.call("PUT", "/api/admin/settings", Some(json!({"settings": s})), Some(&admin)).await;
    assert_eq!((st, e["errors"][0]["key"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("network.gateway")));
    s["network"]["gateway"] = json!("192.168.1.1");
    let (st, _, v) = h.call("PUT", "/api/admin/settings", Some(json!({"settings": s})), Some(&admin)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let saved = std::fs::read_to_string(h.state.settings.base().file_to_save()).unwrap();
    assert!(saved.contains("[network]") && saved.contains("192.168.1.20/24"), "{saved}");
}

#[tokio::test]
async fn installing_is_for_admins_of_a_live_box_only() {
    let h = harness();
    let admin = h.setup_admin().await;
    let (_, bob) = h.add_user(&admin, "bob").await;
    assert_eq!(h.call("GET", "/api/admin/install", None, Some(&bob)).await.0, StatusCode::FORBIDDEN);
    let (st, _, v) = h.call("GET", "/api/admin/install", None, Some(&admin)).await;
    assert_eq!((st, v["live"].as_bool()), (StatusCode::OK, Some(false)), "{v}");
    let (st, _, e) = h.call("POST", "/api/admin/install", Some(json!({"disk": "sda", "confirm": "sda"})), Some(&admin)).await;
    assert_eq!((st, e["error"].as_str()), (StatusCode::CONFLICT, Some("not_live")), "{e}");
    assert_eq!(h.state.lifecycle.exit(), crate::serve::Exit::Reboot, "nothing was started");
}

#[tokio::test]
async fn an_update_off_a_box_is_refused_and_leaves_no_database_copy() {
    let h = harness();
    let admin = h.setup_admin().await;
    let (_, bob) = h.add_user(&admin, "bob").await;
    let upload = |s: &Session| {
        Harness::request("POST", "/api/admin/update", Some(s))
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(Body::from(vec![0u8; 4096]))
            .unwrap()
    };
    assert_eq!(h.send(upload(&bob)).await.0, StatusCode::FORBIDDEN);
    let (st, _, e) = h.send(upload(&admin)).await;
    assert_eq!((st, e["error"].as_str()), (StatusCode::CONFLICT, Some("not_a_box")), "{e}");
    let copy = crate::store::db::rollback_copy(&h.state.settings.base().data.join("t.db"));
    assert!(!copy.exists(), "the copy taken for the update is gone with it");
    assert_eq!(h.state.lifecycle.exit(), crate::serve::Exit::Reboot, "nothing was started");
}

#[tokio::test]
async fn restarting_is_for_admins_on_the_box() {
    let h = harness();
    let admin = h.setup_admin().await;
    let (_, bob) = h.add_user(&admin, "bob").await;
    assert_eq!(h.call("POST", "/api/admin/restart", None, Some(&bob)).await.0, StatusCode::FORBIDDEN);
    let (st, _, e) = h.call("POST", "/api/admin/restart", None, Some(&admin)).await;
    assert_eq!((st, e["error"].as_str()), (StatusCode::CONFLICT, Some("not_a_box")), "{e}");
    let (_, _, v) = h.call("GET", "/api/admin/settings", None, Some(&admin)).await;
    assert_eq!(v["info"]["on_box"], json!(false), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_wrong_passwords_cannot_pass_the_limit() {
    let h = harness();
    h.setup_admin().await;
    let tries = (0..64).map(|_| {
        let app = h.app.clone();
        tokio::spawn(async move {
            let req = Harness::request("POST", "/api/login", None)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(json!({"username": "alice", "password": "wrong-wrong"}).to_string()))
                .unwrap();
            app.oneshot(req).await.unwrap().status()
        })
    }).collect::<Vec<_>>();
    let mut codes = Vec::new();
    for t in tries {
        codes.push(t.await.unwrap());
    }
    let unauthorized = codes.iter().filter(|c| **c == StatusCode::UNAUTHORIZED).count();
    let limited = codes.iter().filter(|c| **c == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!((unauthorized, limited), (crate::auth::LOGIN_PER_USER_AND_ADDRESS, 64 - crate::auth::LOGIN_PER_USER_AND_ADDRESS));
}

#[tokio::test]
async fn one_persons_typos_do_not_lock_out_colleagues_behind_the_same_address() {
    let h = harness();
    let admin = h.setup_admin().await;
    h.add_user(&admin, "bob").await;
    h.add_user(&admin, "carol").await;
    for _ in 0..crate::auth::LOGIN_PER_USER_AND_ADDRESS {
        let (st, _, _) = h.call("POST", "/api/login", Some(json!({"username": "bob", "password": "typo-typo"})), None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
    }
    let (st, headers, b) = h.call("POST", "/api/login", Some(json!({"username": "bob", "password": "password-2"})), None).await;
    assert_eq!((st, b["error"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")));
    assert!(headers.contains_key(header::RETRY_AFTER));
    h.login("carol", "password-2").await;
    h.login("alice", "password-1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_hashing_queue_answers_503_with_retry_after_and_counts_nothing() {
    // one hasher, one waiting place: a burst finds the queue full
    let h = harness_with(crate::auth::Hasher::new(1, 1));
    h.setup_admin().await;
    let app = h.app.clone();
    let tries = (0..200).map(|i| {
        let app = app.clone();
        tokio::spawn(async move {
            let user = format!("user{i}");
            let req = Harness::request("POST", "/api/login", None)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(json!({"username": user, "password": "wrong-wrong"}).to_string()))
                .unwrap();
            let res = app.oneshot(req).await.unwrap();
            let retry = res.headers().contains_key(header::RETRY_AFTER);
            let body = axum::body::to_bytes(res.into_body(), 4096).await.unwrap();
            (serde_json::from_slice::<Value>(&body).unwrap(), retry)
        })
    }).collect::<Vec<_>>();
    let mut busy = 0;
    for t in tries {
        let (v, retry) = t.await.unwrap();
        if v["error"] == "busy" {
            assert!(retry, "503 carries Retry-After");
            busy += 1;
        } else {
            assert!(v["error"] == "bad_credentials" || v["error"] == "rate_limited", "{v}");
        }
    }
    assert!(busy > 0, "the queue was full at some point");
    // the busy ones were not held against anyone: alice still has all her tries
    for _ in 0..crate::auth::LOGIN_PER_USER_AND_ADDRESS - 1 {
        let (st, _, _) = h.call("POST", "/api/login", Some(json!({"username": "alice", "password": "wrong-wrong"})), None).await;
        assert_ne!(st, StatusCode::TOO_MANY_REQUESTS);
    }
}

#[tokio::test]
async fn health_is_for_admins_and_says_what_was_checked() {
    let h = harness();
    let admin = h.setup_admin().await;
    let (_, bob) = h.add_user(&admin, "bob").await;
    assert_eq!(h.call("GET", "/api/admin/health", None, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(h.call("GET", "/api/admin/health", None, Some(&bob)).await.0, StatusCode::FORBIDDEN);
    let (st, _, v) = h.call("GET", "/api/admin/health", None, Some(&admin)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let ids: Vec<&str> = v["checks"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["disk", "database", "certificate", "turn"]);
    let db = &v["checks"][1];
    assert_eq!((db["level"].as_str(), db["detail"].as_str().unwrap().ends_with(" KiB, 2 accounts")), (Some("ok"), true), "{db}");
    assert!(v["figures"]["disk_total_bytes"].as_u64().unwrap() > 0, "{v}");
    assert!(["ok", "warn", "fail"].contains(&v["level"].as_str().unwrap()));
}

/// Every documented operation, for every kind of caller: guest of the room,
/// guest of another room, revoked guest, guest of an expired link, member,
/// admin. A route added without a thought for guests is closed to them
/// (default deny) and shows up here.
#[tokio::test]
async fn guest_authorization_matrix() {
    let h = harness();
    let admin = h.setup_admin().await;
    let (bob_id, bob) = h.add_user(&admin, "bob").await;
    let (st, _, r) = h.call("POST", "/api/rooms", Some(json!({"name": "Support", "visibility": "invite", "members": [bob_id.0]})), Some(&admin)).await;
    assert_eq!(st, StatusCode::CREATED, "{r}");
    let room = r["id"].as_i64().unwrap();
    let (_, _, other) = h.call("POST", "/api/rooms", Some(json!({"name": "Board", "visibility": "invite"})), Some(&admin)).await;
    let other = other["id"].as_i64().unwrap();

    // bob is a member, not an owner: no links
    let (st, _, _) = h.call("POST", &format!("/api/rooms/{room}/guest-links"), Some(json!({})), Some(&bob)).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let link = |room: i64, body: Value| {
        let h = &h;
        let admin = admin.clone();
        async move {
            let (st, _, l) = h.call("POST", &format!("/api/rooms/{room}/guest-links"), Some(body), Some(&admin)).await;
            assert_eq!(st, StatusCode::OK, "{l}");
            l
        }
    };
    let join = |token: String, name: &'static str| {
        let h = &h;
        async move {
            let (st, hd, b) = h.call("POST", &format!("/api/guest/{token}"), Some(json!({"display_name": name})), None).await;
            assert_eq!(st, StatusCode::OK, "{b}");
            (Harness::session_from(&hd, &b), b["user"]["id"].as_i64().unwrap())
        }
    };
    // this room's guest may send files (the files routes are open to it)
    let upload = json!({"chat": true, "call": true, "media": true, "screen": true, "upload": true});
    let l1 = link(room, json!({"label": "customer", "perms": upload})).await;
    assert_eq!(l1["link"]["expires"].as_i64().unwrap() - l1["link"]["created"].as_i64().unwrap(), 168 * 3_600_000, "7 days by default");
    // the box's own CA: a guest outside would meet a certificate warning, and the link says so
    assert_eq!((l1["url"].clone(), l1["warnings"][0]["code"].as_str()), (Value::Null, Some("local_certificate")), "{l1}");
    let (guest, guest_id) = join(l1["token"].as_str().unwrap().into(), "Claire").await;
    let l2 = link(other, json!({})).await;
    let (other_guest, _) = join(l2["token"].as_str().unwrap().into(), "Dan").await;
    let l3 = link(room, json!({})).await;
    let (revoked, _) = join(l3["token"].as_str().unwrap().into(), "Eve").await;
    let l3_id = l3["link"]["id"].as_i64().unwrap();
    let (st, _, _) = h.call("DELETE", &format!("/api/rooms/{room}/guest-links/{l3_id}?remove_guests=true"), None, Some(&admin)).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let l4 = link(room, json!({"hours": 1})).await;
    let (expired, _) = join(l4["token"].as_str().unwrap().into(), "Fay").await;
    let l4_id = l4["link"]["id"].as_i64().unwrap();
    h.state
        .chat
        .db
        .write(move |ctx| {
            ctx.conn.execute("UPDATE guest_links SET expires_ms = 1 WHERE id = ?1", [l4_id])?;
            ctx.conn.execute("UPDATE sessions SET expires_ms = 1 WHERE user_id = (SELECT id FROM users WHERE guest_link = ?1)", [l4_id])?;
            Ok(())
        })
        .await
        .unwrap();

    // a knock link: the guest waits, and may only ask who it is (or leave)
    let l5 = link(room, json!({"knock": true, "label": "lobby"})).await;
    let (waiting, waiting_id) = join(l5["token"].as_str().unwrap().into(), "Gil").await;
    let (_, _, me) = h.call("GET", "/api/me", None, Some(&waiting)).await;
    assert_eq!((me["guest"]["waiting"].as_bool(), me["guest"]["room"].as_i64()), (Some(true), Some(room)), "{me}");

    // the expired and revoked links turn new guests away
    for (token, why) in [(&l3["token"], "revoked"), (&l4["token"], "expired")] {
        let (st, _, b) = h.call("POST", &format!("/api/guest/{}", token.as_str().unwrap()), Some(json!({"display_name": "Gus"})), None).await;
        assert_eq!((st, b["error"].as_str()), (StatusCode::GONE, Some("link_gone")), "{why}: {b}");
    }

    let doc = super::openapi::document();
    let mut cells = 0;
    for (path, item) in &doc.paths.paths {
        let ops = [
            ("GET", item.get.is_some()),
            ("POST", item.post.is_some()),
            ("PUT", item.put.is_some()),
            ("PATCH", item.patch.is_some()),
            ("DELETE", item.delete.is_some()),
            ("HEAD", item.head.is_some()),
            ("OPTIONS", item.options.is_some()),
        ];
        for (method, _) in ops.iter().filter(|(_, on)| *on) {
            // logging out is checked last, on its own
            if path == "/api/logout" {
                continue;
            }
            let concrete = |r: i64| {
                path.replace("{id}", &r.to_string())
                    .replace("{user}", &bob_id.to_string())
                    .replace("{link}", &l1["link"]["id"].to_string())
                    .replace("{token}", "not-a-token")
            };
            let body = match *method {
                // deciding nobody: the cells would otherwise admit the waiting guest
                "POST" if path.ends_with("/admission") => Some(json!({"admit": true, "guests": []})),
                "POST" | "PUT" | "PATCH" => Some(json!({})),
                _ => None,
            };
            let (anon, _, _) = h.call(method, &concrete(room), body.clone(), None).await;
            let public = anon != StatusCode::UNAUTHORIZED;
            let route_allowed = super::guests::guest_may(&method.parse().unwrap(), path);
            // a guest of this room
            let (st, _, b) = h.call(method, &concrete(room), body.clone(), Some(&guest)).await;
            if public {
                assert_ne!(st, StatusCode::UNAUTHORIZED, "{method} {path}: public");
            } else if route_allowed {
                assert_ne!(st, StatusCode::FORBIDDEN, "{method} {path}: open to guests: {b}");
                assert_ne!(st, StatusCode::UNAUTHORIZED, "{method} {path}");
            } else {
                assert_eq!((st, b["error"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")), "{method} {path}: closed to guests");
            }
            // a guest of another room gets nothing of this one
            let (st, _, b) = h.call(method, &concrete(room), body.clone(), Some(&other_guest)).await;
            if !public && path.contains("{id}") {
                assert!(matches!(st, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND), "{method} {path}: another room's guest: {st} {b}");
            }
            // a guest still waiting: only who it is
            let (st, _, b) = h.call(method, &concrete(room), body.clone(), Some(&waiting)).await;
            if !public && (*method, path.as_str()) != ("GET", "/api/me") {
                assert_eq!(st, StatusCode::FORBIDDEN, "{method} {path}: a waiting guest: {b}");
            }
            // revoked, expired: no session at all
            for (who, s) in [("revoked", &revoked), ("expired", &expired)] {
                let (st, _, _) = h.call(method, &concrete(room), body.clone(), Some(s)).await;
                if !public {
                    assert_eq!(st, StatusCode::UNAUTHORIZED, "{method} {path}: {who} guest");
                }
            }
            // members and admins are not turned away as guests are
            for (who, s) in [("member", &bob), ("admin", &admin)] {
                // removing bob or revoking the link would change the next cells
                if *method == "DELETE" {
                    continue;
                }
                let (st, _, b) = h.call(method, &concrete(room), body.clone(), Some(s)).await;
                assert_ne!(st, StatusCode::UNAUTHORIZED, "{method} {path}: {who}");
                if (path.contains("guest-links") || path.ends_with("/admission") || path.ends_with("/customer-call")) && who == "member" {
                    assert_eq!(st, StatusCode::FORBIDDEN, "{method} {path}: a member who does not own the room: {b}");
                }
            }
            cells += 7;
        }
    }
    assert!(cells > 7 * 40, "{cells} cells");

    // the waiting guest is let in by the owner, not by a member
    let (st, _, _) = h.call("POST", &format!("/api/rooms/{room}/admission"), Some(json!({"admit": true})), Some(&bob)).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (_, _, w) = h.call("GET", "/api/guests/waiting", None, Some(&admin)).await;
    assert_eq!(w[0]["name"].as_str(), Some("Gil"), "{w}");
    let (st, _, d) = h.call("POST", &format!("/api/rooms/{room}/admission"), Some(json!({"admit": true, "guests": [waiting_id]})), Some(&admin)).await;
    assert_eq!((st, d["decided"][0].as_i64()), (StatusCode::OK, Some(waiting_id)), "{d}");
    let (_, _, me) = h.call("GET", "/api/me", None, Some(&waiting)).await;
    assert_eq!(me["guest"]["waiting"].as_bool(), Some(false));
    let (st, _, _) = h.call("GET", &format!("/api/rooms/{room}/messages"), None, Some(&waiting)).await;
    assert_eq!(st, StatusCode::OK, "admitted: the room opens");

    // what a guest sees: its room only, its room's people only, no history before it came
    let (_, _, rooms) = h.call("GET", "/api/rooms", None, Some(&guest)).await;
    assert_eq!(rooms.as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect::<Vec<_>>(), [room]);
    let (_, _, people) = h.call("GET", "/api/users", None, Some(&guest)).await;
    let mut names: Vec<&str> = people.as_array().unwrap().iter().map(|u| u["display_name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, ["Alice", "Claire", "Fay", "Gil", "bob"], "Dan is in another room, Eve was removed");
    let (st, _, _) = h.call("GET", &format!("/api/rooms/{other}/messages"), None, Some(&guest)).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // a guest cannot take a member's name, and is shown as a guest
    let (st, _, b) = h.call("PATCH", "/api/me", Some(json!({"display_name": "ALICE"})), Some(&guest)).await;
    assert_eq!(st, StatusCode::CONFLICT, "{b}");
    let (_, _, me) = h.call("GET", "/api/me", None, Some(&guest)).await;
    assert_eq!((me["user"]["role"].as_str(), me["user"]["id"].as_i64()), (Some("guest"), Some(guest_id)));
    // a guest may log out; then it is nobody
    assert_eq!(h.call("POST", "/api/logout", None, Some(&guest)).await.0, StatusCode::NO_CONTENT);
    assert_eq!(h.call("GET", "/api/me", None, Some(&guest)).await.0, StatusCode::UNAUTHORIZED);
}

mod files;
