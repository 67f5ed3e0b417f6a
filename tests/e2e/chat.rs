//! Chat against a real `parvis serve` process, with real TLS WebSocket
//! clients: the delivery contract of docs/protocol.md, end to end.

use std::collections::BTreeSet;
use std::time::Duration;

use parvis_e2e::{Server, Ws};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::protocol::Message;

type R = anyhow::Result<()>;

fn is_message(f: &Value) -> bool {
    f["t"] == "event" && f["kind"] == "message"
}

async fn send(ws: &mut Ws, id: &str, room: i64, body: &str) -> anyhow::Result<i64> {
    ws.send(json!({"t": "send", "id": id, "room": room, "body": body})).await?;
    let ack = ws.recv_until(|f| f["t"] == "ack" && f["id"] == id || f["t"] == "error").await?;
    anyhow::ensure!(ack["t"] == "ack", "send {id} failed: {ack}");
    Ok(ack["seq"].as_i64().unwrap())
}

/// A server with Alice (admin) and Bob in an invite-only room, both
/// connected and synced.
struct Team {
    server: Server,
    alice: parvis_e2e::Session,
    bob_id: i64,
    bob: parvis_e2e::Session,
    room: i64,
    a: Ws,
    b: Ws,
}

async fn team() -> anyhow::Result<Team> {
    let server = Server::start().await?;
    let alice = server.setup_admin().await?;
    let (bob_id, bob) = server.add_user(&alice, "bob").await?;
    let room = server.create_room(&alice, "Team", "invite", &[bob_id]).await?;
    let mut a = server.ws(&alice, json!({})).await?;
    a.until_synced().await?;
    let mut b = server.ws(&bob, json!({})).await?;
    b.until_synced().await?;
    Ok(Team { server, alice, bob_id, bob, room, a, b })
}

#[tokio::test]
async fn two_users_chat_over_real_websockets() -> R {
    let Team { server, alice, bob_id, bob, room, mut a, mut b } = team().await?;

    let seq = send(&mut a, "m1", room, "Bonjour @bob !").await?;
    let got = b.recv_until(is_message).await?;
    assert_eq!((got["room"].as_i64(), got["seq"].as_i64()), (Some(room), Some(seq)));
    assert_eq!(got["body"], "Bonjour @bob !");
    assert_eq!(got["actor"].as_i64(), Some(alice.user));
    assert_eq!(got["mentions"], json!([bob_id]));

    b.send(json!({"t": "typing", "room": room})).await?;
    let typing = a.recv_until(|f| f["t"] == "typing").await?;
    assert_eq!(typing["user"].as_i64(), Some(bob_id));

    let reply = send(&mut b, "r1", room, "Salut").await?;
    assert_eq!(reply, seq + 1, "sequence numbers are per room and gapless");
    let got = a.recv_until(is_message).await?;
    assert_eq!(got["body"], "Salut");

    // reactions, edits and deletes are events too
    b.send(json!({"t": "react", "id": "x1", "room": room, "seq": seq, "emoji": "👍", "on": true})).await?;
    let ev = a.recv_until(|f| f["t"] == "event").await?;
    assert_eq!((ev["kind"].as_str(), ev["target"].as_i64()), (Some("react"), Some(seq)));
    a.send(json!({"t": "edit", "id": "x2", "room": room, "seq": seq, "body": "Bonjour Bob !"})).await?;
    let ev = b.recv_until(|f| f["t"] == "event" && f["kind"] == "edit").await?;
    assert_eq!(ev["body"], "Bonjour Bob !");

    // read markers reach the reader's other tabs, and unread counts follow
    let rooms = server.http("GET", "/api/rooms", None, Some(&bob)).await?;
    let summary = rooms.body.as_array().unwrap().iter().find(|r| r["id"] == room).unwrap().clone();
    assert_eq!(summary["unread"], 1);
    let mut b2 = server.ws(&bob, json!({})).await?;
    b2.until_synced().await?;
    b.send(json!({"t": "read", "room": room, "seq": ev["seq"]})).await?;
    let read = b2.recv_until(|f| f["t"] == "read").await?;
    assert_eq!(read["seq"], ev["seq"]);
    let rooms = server.http("GET", "/api/rooms", None, Some(&bob)).await?;
    let summary = rooms.body.as_array().unwrap().iter().find(|r| r["id"] == room).unwrap().clone();
    assert_eq!(summary["unread"], 0);

    let hist = server.http("GET", &format!("/api/rooms/{room}/messages"), None, Some(&bob)).await?;
    let msgs = hist.body["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0]["reactions"]["👍"], json!([bob_id]));
    let found = server.http("GET", "/api/search?q=bonj", None, Some(&bob)).await?;
    assert_eq!(found.body["hits"].as_array().unwrap().len(), 1);
    Ok(())
}

#[tokio::test]
async fn reconnect_resumes_with_no_gap_and_no_duplicate() -> R {
    let Team { server, bob, room, mut a, mut b, .. } = team().await?;

    let mut seen: Vec<(i64, String)> = Vec::new();
    for i in 0..5 {
        send(&mut a, &format!("m{i}"), room, &format!("n{i}")).await?;
        let f = b.recv_until(is_message).await?;
        seen.push((f["seq"].as_i64().unwrap(), f["body"].as_str().unwrap().into()));
    }
    // bob drops off mid-stream
    drop(b);
    for i in 5..25 {
        send(&mut a, &format!("m{i}"), room, &format!("n{i}")).await?;
    }
    // alice keeps writing while bob reconnects and resumes
    let writer = tokio::spawn(async move {
        for i in 25..45 {
            a.send(json!({"t": "send", "id": format!("m{i}"), "room": room, "body": format!("n{i}")})).await.unwrap();
        }
        a.recv_until(|f| f["t"] == "ack" && f["id"] == "m44").await.unwrap();
        a
    });
    let last = seen.last().unwrap().0;
    let mut b = server.ws(&bob, json!({ room.to_string(): last })).await?;
    while seen.len() < 45 {
        let f = b.recv().await?;
        if is_message(&f) {
            seen.push((f["seq"].as_i64().unwrap(), f["body"].as_str().unwrap().into()));
        }
    }
    writer.await?;
    assert!(b.quiet_for(Duration::from_millis(300)).await.is_none_or(|f| !is_message(&f)), "no duplicate after the last");
    let seqs: Vec<i64> = seen.iter().map(|s| s.0).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "gapless, ordered, no duplicate: {seqs:?}");
    let bodies: Vec<String> = seen.iter().map(|s| s.1.clone()).collect();
    let expected: Vec<String> = (0..45).map(|i| format!("n{i}")).collect();
    assert_eq!(bodies, expected);
    Ok(())
}

#[tokio::test]
async fn retried_send_is_not_doubled() -> R {
    let server = Server::start().await?;
    let alice = server.setup_admin().await?;
    let room = server.create_room(&alice, "Solo", "invite", &[]).await?;
    let mut a = server.ws(&alice, json!({})).await?;
    a.until_synced().await?;
    a.send(json!({"t": "send", "id": "same", "room": room, "body": "once"})).await?;
    let first = a.recv_until(|f| f["t"] == "ack").await?;
    assert_eq!(first["dup"], false);
    // the same frame again on this connection, then after a reconnect
    a.send(json!({"t": "send", "id": "same", "room": room, "body": "once"})).await?;
    let again = a.recv_until(|f| f["t"] == "ack").await?;
    assert_eq!((again["dup"].as_bool(), again["seq"].clone()), (Some(true), first["seq"].clone()));
    drop(a);
    let mut a = server.ws(&alice, json!({})).await?;
    a.until_synced().await?;
    a.send(json!({"t": "send", "id": "same", "room": room, "body": "once"})).await?;
    let third = a.recv_until(|f| f["t"] == "ack").await?;
    assert_eq!((third["dup"].as_bool(), third["seq"].clone()), (Some(true), first["seq"].clone()));
    let hist = server.http("GET", &format!("/api/rooms/{room}/messages"), None, Some(&alice)).await?;
    assert_eq!(hist.body["messages"].as_array().unwrap().len(), 1);
    Ok(())
}

#[tokio::test]
async fn acknowledged_messages_survive_sigkill() -> R {
    let mut server = Server::start().await?;
    let alice = server.setup_admin().await?;
    let room = server.create_room(&alice, "Durable", "invite", &[]).await?;
    let mut a = server.ws(&alice, json!({})).await?;
    a.until_synced().await?;
    let n = 300;
    for i in 0..n {
        a.send(json!({"t": "send", "id": format!("d{i}"), "room": room, "body": format!("durable {i}")})).await?;
    }
    // Past the burst the server says rate_limited; like the web client, retry
    // those with the same id (which also proves retries are not doubled).
    let mut acked = BTreeSet::new();
    while acked.len() < n {
        let f = a.recv().await?;
        if f["t"] == "ack" {
            acked.insert(f["id"].as_str().unwrap().to_string());
        } else if f["t"] == "error" && f["code"] == "rate_limited" {
            let id = f["ref"].as_str().unwrap().to_string();
            let i: usize = id[1..].parse()?;
            tokio::time::sleep(Duration::from_millis(50)).await;
            a.send(json!({"t": "send", "id": id, "room": room, "body": format!("durable {i}")})).await?;
        }
    }
    // the moment the last ack arrived, pull the plug
    server.kill9();
    server.restart().await?;
    let alice = server.login("alice", "password-1").await?;
    let mut bodies = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let q = before.map_or(String::from("?limit=200"), |b| format!("?limit=200&before={b}"));
        let page = server.http("GET", &format!("/api/rooms/{room}/messages{q}"), None, Some(&alice)).await?;
        let msgs = page.body["messages"].as_array().unwrap().clone();
        before = msgs.first().and_then(|m| m["seq"].as_i64());
        let mut chunk: Vec<String> = msgs.iter().map(|m| m["body"].as_str().unwrap().to_string()).collect();
        chunk.extend(bodies);
        bodies = chunk;
        if page.body["more"] != true {
            break;
        }
    }
    let mut expected: Vec<String> = (0..n).map(|i| format!("durable {i}")).collect();
    expected.sort();
    bodies.sort();
    assert_eq!(bodies, expected, "every acknowledged message is there, exactly once");
    Ok(())
}

#[tokio::test]
async fn bad_frames_get_precise_errors_and_the_connection_survives() -> R {
    let server = Server::start().await?;
    let alice = server.setup_admin().await?;
    let (_, bob) = server.add_user(&alice, "bob").await?;
    let secret = server.create_room(&alice, "Secret", "invite", &[]).await?;
    let mine = server.create_room(&bob, "Mine", "invite", &[]).await?;
    let mut b = server.ws(&bob, json!({})).await?;
    b.until_synced().await?;
    let mut expect = async |frame: Message, code: &str| -> R {
        b.send_raw(frame).await?;
        let e = b.recv_until(|f| f["t"] == "error").await?;
        assert_eq!(e["code"], code, "{e}");
        assert!(!e["message"].as_str().unwrap().is_empty());
        Ok(())
    };
    expect(Message::Text("garbage".into()), "bad_frame").await?;
    expect(Message::Text("[]".into()), "bad_frame").await?;
    expect(Message::Text(r#"{"t":"teleport"}"#.into()), "unknown_type").await?;
    expect(Message::Text(r#"{"t":"send","id":"x","room":"one","body":"hi"}"#.into()), "invalid").await?;
    expect(Message::Binary(vec![1, 2, 3].into()), "bad_frame").await?;
    let big = json!({"t": "send", "id": "big", "room": mine, "body": "x".repeat(20 * 1024)});
    expect(Message::Text(big.to_string().into()), "too_large").await?;
    let wrong = json!({"t": "send", "id": "w", "room": secret, "body": "let me in"});
    expect(Message::Text(wrong.to_string().into()), "not_member").await?;
    let nope = json!({"t": "edit", "id": "e", "room": mine, "seq": 999, "body": "x"});
    expect(Message::Text(nope.to_string().into()), "not_found").await?;
    // every frame gets an answer, even those that normally get none
    expect(Message::Text(json!({"t": "read", "room": mine, "seq": -1}).to_string().into()), "invalid").await?;
    expect(Message::Text(json!({"t": "typing", "room": secret}).to_string().into()), "not_member").await?;
    expect(Message::Text(json!({"t": "read", "room": secret, "seq": 1}).to_string().into()), "not_member").await?;
    // still usable after all that
    assert!(send(&mut b, "ok1", mine, "still here").await? > 0);
    // a frame beyond the 256 KiB limit closes this connection only
    let huge = "y".repeat(300 * 1024);
    let _ = b.send_raw(Message::Text(huge.into())).await;
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(5), futures_util::StreamExt::next(&mut b.stream)).await {
            Ok(Some(Ok(Message::Close(c)))) => break c.map(|c| u16::from(c.code)),
            Ok(Some(Ok(_))) => continue,
            _ => break None,
        }
    };
    assert_eq!(closed, Some(1009), "the documented close code");
    let mut b = server.ws(&bob, json!({})).await?;
    b.until_synced().await?;
    assert!(send(&mut b, "ok2", mine, "server still up").await? > 0);
    let hist = server.http("GET", &format!("/api/rooms/{secret}/messages"), None, Some(&alice)).await?;
    assert_eq!(hist.body["messages"].as_array().unwrap().len(), 0, "nothing stored in the wrong room");
    Ok(())
}

#[tokio::test]
async fn non_members_neither_receive_nor_resume_a_room() -> R {
    let server = Server::start().await?;
    let alice = server.setup_admin().await?;
    let (_, eve) = server.add_user(&alice, "eve").await?;
    let secret = server.create_room(&alice, "Secret", "invite", &[]).await?;
    let rooms = server.http("GET", "/api/rooms", None, Some(&alice)).await?;
    let general = rooms.body.as_array().unwrap().iter().find(|r| r["name"] == "General").unwrap()["id"].as_i64().unwrap();
    server.http("POST", &format!("/api/rooms/{general}/members"), Some(json!({"user": eve.user})), Some(&eve)).await?;
    let mut e = server.ws(&eve, json!({ secret.to_string(): 0 })).await?;
    let replay = e.until_synced().await?;
    assert_eq!(replay, vec![json!({"t": "gone", "room": secret})]);
    let mut a = server.ws(&alice, json!({})).await?;
    a.until_synced().await?;
    send(&mut a, "s1", secret, "classified").await?;
    send(&mut a, "g1", general, "public").await?;
    let got = e.recv_until(is_message).await?;
    assert_eq!((got["room"].as_i64(), got["body"].as_str()), (Some(general), Some("public")));
    Ok(())
}

#[tokio::test]
async fn websocket_from_another_origin_is_refused() -> R {
    let server = Server::start().await?;
    let alice = server.setup_admin().await?;
    let err = server.ws_with_origin(&alice, "https://evil.example").await.err().expect("refused");
    assert!(err.to_string().contains("403"), "{err}");
    Ok(())
}

#[tokio::test]
async fn http_redirects_to_https_and_offers_the_ca() -> R {
    let server = Server::start().await?;
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.http_port)).await?;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(b"GET /room?x=1 HTTP/1.1\r\nHost: parvis.local\r\nConnection: close\r\n\r\n").await?;
    let mut out = String::new();
    tcp.read_to_string(&mut out).await?;
    assert!(out.starts_with("HTTP/1.1 308"), "{out}");
    assert!(out.contains(&format!("location: https://parvis.local:{}/room?x=1", server.https_port)), "{out}");
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.http_port)).await?;
    tcp.write_all(b"GET /parvis-ca.pem HTTP/1.1\r\nHost: parvis.local\r\nConnection: close\r\n\r\n").await?;
    let mut out = String::new();
    tcp.read_to_string(&mut out).await?;
    let ca = std::fs::read_to_string(server.data.join("tls/ca.pem"))?;
    assert!(out.contains(ca.trim()), "the CA is downloadable before it is trusted");
    Ok(())
}

#[tokio::test]
async fn a_second_start_keeps_the_data_and_the_ca() -> R {
    let mut server = Server::start().await?;
    let code = server.setup_code();
    server.restart().await?;
    assert_eq!(server.setup_code(), code, "the setup code stays valid until setup is done");
    let ca = std::fs::read_to_string(server.data.join("tls/ca.pem"))?;
    server.setup_admin().await?;
    assert!(!server.data.join("setup-code").exists(), "the code is gone once used");
    server.restart().await?;
    assert_eq!(ca, std::fs::read_to_string(server.data.join("tls/ca.pem"))?);
    let status = server.http("GET", "/api/status", None, None).await?;
    assert_eq!(status.body["setup_needed"], false);
    server.login("alice", "password-1").await?;
    Ok(())
}

/// A socket that has not synced yet while thousands of events pile up is
/// not closed: its `sync` answers from the store (here a `reset`, the gap
/// being over the resume limit), and it goes on live.
#[tokio::test]
async fn a_pile_up_before_sync_is_answered_by_the_replay_not_by_a_close() -> R {
    let mut server = Server::unstarted(&[])?;
    std::fs::write(server.data.join("parvis.toml"), "[chat]\nsend_rate = 10000\n")?;
    server.launch().await?;
    let alice = server.setup_admin().await?;
    let (bob_id, bob) = server.add_user(&alice, "bob").await?;
    let room = server.create_room(&alice, "Busy", "invite", &[bob_id]).await?;
    // Bob connects and stays silent (no sync)
    let mut b = server.ws_with_origin(&bob, &format!("https://localhost:{}", server.https_port)).await?;
    let mut a = server.ws(&alice, json!({})).await?;
    a.until_synced().await?;
    for chunk in 0..45 {
        for i in 0..100 {
            a.send(json!({"t": "send", "id": format!("p{chunk}-{i}"), "room": room, "body": "busy"})).await?;
        }
        a.recv_until(|f| f["t"] == "ack" && f["id"] == format!("p{chunk}-99").as_str()).await?;
    }
    b.send(json!({"t": "sync", "since": {room.to_string(): 0}})).await?;
    let before = b.until_synced().await?;
    assert!(before.iter().any(|f| f["t"] == "reset" && f["room"] == room), "{:?}", before.first());
    assert_eq!(send(&mut a, "after", room, "still with us?").await.map(|_| ())?, ());
    let live = b.recv_until(|f| f["t"] == "event" && f["client_id"] == "after").await?;
    assert_eq!(live["body"], "still with us?");
    tokio::time::sleep(Duration::from_secs(1)).await;
    send(&mut a, "again", room, "and again").await?;
    b.recv_until(|f| f["t"] == "event" && f["client_id"] == "again").await?;
    Ok(())
}

/// A knock link over a real server: the guest waits with nothing of the
/// room (no socket, no history), the owner's socket gets the knock, the
/// owner admits it and it chats; another is denied and is gone; the member
/// who is no moderator sees none of it.
#[tokio::test]
async fn a_knock_link_keeps_the_guest_out_until_the_owner_admits_it() -> R {
    let Team { server, alice, bob, room, mut a, mut b, .. } = team().await?;
    let made = server
        .http("POST", &format!("/api/rooms/{room}/guest-links"), Some(json!({"knock": true, "label": "ACME"})), Some(&alice))
        .await?;
    assert_eq!(made.status, 200, "{}", made.text);
    let created = a.recv_until(|f| f["kind"] == "guest").await?;
    assert_eq!((created["action"].as_str(), created["name"].as_str()), (Some("link_created"), Some("ACME")));
    let token = made.body["token"].as_str().unwrap().to_string();
    let join = |name: &'static str| {
        let (server, token) = (&server, token.clone());
        async move { server.http("POST", &format!("/api/guest/{token}"), Some(json!({"display_name": name})), None).await }
    };
    let claire = join("Claire").await?;
    assert_eq!((claire.status, &claire.body["guest"]["waiting"]), (200, &json!(true)), "{}", claire.text);
    let claire = claire.session()?;
    let knock = a.recv_until(|f| f["kind"] == "guest").await?;
    assert_eq!((knock["action"].as_str(), knock["guest"].as_i64()), (Some("knocked"), Some(claire.user)));
    // waiting: no room, no messages, no socket
    for path in ["/api/rooms".to_string(), format!("/api/rooms/{room}/messages"), "/api/ice".into()] {
        let r = server.http("GET", &path, None, Some(&claire)).await?;
        assert_eq!((r.status, r.body["error"].as_str()), (403, Some("waiting")), "{path}: {}", r.text);
    }
    assert!(server.ws(&claire, json!({})).await.is_err(), "no socket while waiting");
    let dan = join("Dan").await?.session()?;
    let waiting = server.http("GET", "/api/guests/waiting", None, Some(&alice)).await?;
    let names: Vec<&str> = waiting.body.as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Claire", "Dan"]);
    assert_eq!(server.http("GET", "/api/guests/waiting", None, Some(&bob)).await?.body, json!([]), "bob moderates nothing");
    let denied = server.http("POST", &format!("/api/rooms/{room}/admission"), Some(json!({"admit": true})), Some(&bob)).await?;
    assert_eq!(denied.status, 403, "a member cannot admit");

    // admitted: in, with a socket, chatting both ways
    let ok = server
        .http("POST", &format!("/api/rooms/{room}/admission"), Some(json!({"admit": true, "guests": [claire.user]})), Some(&alice))
        .await?;
    assert_eq!(ok.body["decided"], json!([claire.user]), "{}", ok.text);
    let joined = b.recv_until(|f| f["kind"] == "join").await?;
    assert_eq!(joined["user"].as_i64(), Some(claire.user));
    assert_eq!(server.http("GET", "/api/me", None, Some(&claire)).await?.body["guest"]["waiting"], json!(false));
    let mut c = server.ws(&claire, json!({})).await?;
    c.until_synced().await?;
    send(&mut c, "c1", room, "hello, I waited").await?;
    let got = b.recv_until(is_message).await?;
    assert_eq!(got["body"], "hello, I waited");
    // denied: its session ends
    let no = server
        .http("POST", &format!("/api/rooms/{room}/admission"), Some(json!({"admit": false, "guests": [dan.user]})), Some(&alice))
        .await?;
    assert_eq!(no.body["decided"], json!([dan.user]));
    assert_eq!(server.http("GET", "/api/me", None, Some(&dan)).await?.status, 401);
    // the trail: the moderator's history has it, the member's does not
    let trail = |s: &parvis_e2e::Session| {
        let (server, s) = (&server, s.clone());
        async move {
            let h = server.http("GET", &format!("/api/rooms/{room}/messages"), None, Some(&s)).await?;
            anyhow::Ok(h.body["messages"].as_array().unwrap().iter().filter_map(|m| m["audit"]["action"].as_str().map(String::from)).collect::<Vec<_>>())
        }
    };
    assert_eq!(trail(&alice).await?, ["link_created", "knocked", "knocked", "admitted", "denied"]);
    assert!(trail(&bob).await?.is_empty());
    // the guest leaves: gone for good, and the owner is told
    assert_eq!(server.http("POST", "/api/logout", None, Some(&claire)).await?.status, 204);
    let left = a.recv_until(|f| f["kind"] == "guest" && f["action"] == "left").await?;
    assert_eq!(left["guest"].as_i64(), Some(claire.user));
    Ok(())
}
