//! One WebSocket session: reads client frames, queues writes (acked after
//! commit, in order), forwards hub frames, replays missed events on `sync`,
//! and keeps the connection honest with heartbeats. Generic over the sink
//! and stream so it is tested over channels as well as real sockets.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};

use super::Chat;
use super::call::{self, CallError};
use super::hub::{ConnId, Out};
use super::protocol::{self, ClientFrame, ErrorCode, ErrorFrame, PROTOCOL_VERSION};
use crate::store::calls;
use crate::store::rooms::{self, PostOutcome};
use crate::store::users::{Role, User};
use crate::store::{RoomId, Seq, StoreError};

/// How often the server pings an idle client.
pub const PING_EVERY: Duration = Duration::from_secs(20);

/// Token bucket for client writes.
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    at: i64,
}

impl Bucket {
    fn new(rate: u32, now: i64) -> Bucket {
        let rate = f64::from(rate);
        Bucket { tokens: rate * 5.0, rate, burst: rate * 5.0, at: now }
    }
    fn take(&mut self, now: i64) -> bool {
        let elapsed = (now - self.at).max(0) as f64 / 1000.0;
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn text(s: impl Into<Utf8Bytes>) -> Message {
    Message::Text(s.into())
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) }))
}

/// Runs the session until the client leaves, the connection fails, the
/// user is disconnected, or the client stays silent past the idle timeout.
pub async fn run<S, R, E1, E2>(chat: Chat, user: User, mut sink: S, mut stream: R)
where
    S: Sink<Message, Error = E1> + Unpin,
    R: Stream<Item = Result<Message, E2>> + Unpin,
{
    let (conn_id, mut rx) = chat.hub.register(user.id);
    let idle_ms = (chat.config.idle_timeout_secs * 1000) as i64;
    let mut last_heard = chat.clock.now_ms();
    let mut bucket = Bucket::new(chat.config.send_rate, last_heard);
    // ICE candidates come in bursts when a call starts: a separate, larger budget.
    let mut signal_bucket = Bucket::new(200, last_heard);
    let mut typing_sent: HashMap<RoomId, i64> = HashMap::new();
    // Last event sequence delivered per room: live frames at or below it
    // were already replayed and are dropped (exactly-once per connection).
    let mut delivered: HashMap<RoomId, Seq> = HashMap::new();
    // Live frames wait in the hub queue until the first `sync` has replayed
    // the gap, so no live event ever overtakes a replayed one.
    let mut synced = false;
    let mut pending: FuturesOrdered<BoxFuture<'static, Option<String>>> = FuturesOrdered::new();
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);

    let welcome = serde_json::json!({
        "t": "welcome", "v": PROTOCOL_VERSION, "user": user.id, "conn": conn_id,
        "ping_ms": PING_EVERY.as_millis() as u64, "idle_ms": idle_ms,
    });
    let mut ok = sink.send(text(welcome.to_string())).await.is_ok();

    while ok {
        tokio::select! {
            incoming = stream.next() => {
                let Some(Ok(msg)) = incoming else { break };
                last_heard = chat.clock.now_ms();
                match msg {
                    Message::Text(t) => {
                        match protocol::parse(t.as_str()) {
                            Ok(ClientFrame::Sync { since }) => {
                                ok = replay(&chat, &user, since, &mut delivered, &mut sink).await;
                                synced = true;
                            }
                            Ok(ClientFrame::Ping { id }) => {
                                let pong = serde_json::json!({"t": "pong", "id": id, "ts": last_heard});
                                ok = sink.send(text(pong.to_string())).await.is_ok();
                            }
                            Ok(ClientFrame::Typing { room }) => {
                                let due = typing_sent.get(&room).is_none_or(|&t| last_heard - t >= 3000);
                                if due {
                                    typing_sent.insert(room, last_heard);
                                    typing(&chat, &user, room);
                                }
                            }
                            Ok(frame) if is_call(&frame) => {
                                let reply = if signal_bucket.take(last_heard) {
                                    call_frame(&chat, &user, conn_id, frame).await
                                } else {
                                    Some(ErrorFrame::new(ErrorCode::RateLimited, "too much call signaling; slow down").to_json())
                                };
                                if let Some(reply) = reply {
                                    ok = sink.send(text(reply)).await.is_ok();
                                }
                            }
                            Ok(frame) => {
                                if bucket.take(last_heard) {
                                    pending.push_back(dispatch(&chat, &user, frame));
                                } else {
                                    let e = ErrorFrame::new(ErrorCode::RateLimited, "too many messages; slow down")
                                        .reference(frame_id(&frame));
                                    ok = sink.send(text(e.to_json())).await.is_ok();
                                }
                            }
                            Err(e) => ok = sink.send(text(e.to_json())).await.is_ok(),
                        }
                    }
                    Message::Binary(_) => {
                        let e = ErrorFrame::new(ErrorCode::BadFrame, "binary frames are not part of the protocol");
                        ok = sink.send(text(e.to_json())).await.is_ok();
                    }
                    Message::Close(_) => break,
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
            out = rx.recv(), if synced => match out {
                Some(Out::Frame { text: t, event }) => {
                    if let Some((room, seq)) = event {
                        let last = delivered.entry(room).or_insert(0);
                        if seq <= *last {
                            continue;
                        }
                        *last = seq;
                    }
                    ok = sink.send(Message::Text(t)).await.is_ok();
                }
                Some(Out::Close(code, reason)) => {
                    let _ = sink.send(close(code, reason)).await;
                    break;
                }
                None => {
                    // The hub dropped us for lagging: the client resumes.
                    let _ = sink.send(close(1013, "lagging; reconnect and resume")).await;
                    break;
                }
            },
            Some(reply) = pending.next(), if !pending.is_empty() => {
                if let Some(reply) = reply {
                    ok = sink.send(text(reply)).await.is_ok();
                }
            }
            _ = heartbeat.tick() => {
                if chat.clock.now_ms() - last_heard > idle_ms {
                    let _ = sink.send(close(1001, "idle timeout")).await;
                    break;
                }
                ok = sink.send(Message::Ping(Default::default())).await.is_ok();
            }
        }
    }
    chat.hub.unregister(user.id, conn_id);
    let gone = chat.calls.connection_gone(conn_id, chat.clock.now_ms());
    if !gone.is_empty() {
        chat.apply(gone);
    }
    // Writes already queued still commit; their acks are simply not sent.
    let _ = sink.close().await;
}

fn frame_id(frame: &ClientFrame) -> Option<String> {
    match frame {
        ClientFrame::Send { id, .. }
        | ClientFrame::Edit { id, .. }
        | ClientFrame::Delete { id, .. }
        | ClientFrame::React { id, .. } => Some(id.clone()),
        _ => None,
    }
}

/// Queues the write now (so a connection's writes commit in the order sent)
/// and returns a future of the reply frame.
fn dispatch(chat: &Chat, user: &User, frame: ClientFrame) -> BoxFuture<'static, Option<String>> {
    let uid = user.id;
    let is_admin = user.role == Role::Admin;
    let reference = frame_id(&frame);
    let (room, rx) = match frame {
        ClientFrame::Send { id, room, body, reply_to } => {
            let rx = chat.submit(move |c, now| match rooms::post_message(c, room, uid, &id, &body, reply_to, now)? {
                PostOutcome::Stored { seq, published } => Ok((protocol::ack_send(&id, room, seq, false), vec![published])),
                PostOutcome::Duplicate { room, seq } => Ok((protocol::ack_send(&id, room, seq, true), vec![])),
            });
            (room, rx)
        }
        ClientFrame::Edit { id, room, seq, body } => {
            (room, chat.submit(move |c, now| change(&id, room, rooms::edit_message(c, room, uid, seq, &body, now)?)))
        }
        ClientFrame::Delete { id, room, seq } => (
            room,
            chat.submit(move |c, now| change(&id, room, rooms::delete_message(c, room, uid, is_admin, seq, now)?)),
        ),
        ClientFrame::React { id, room, seq, emoji, on } => (
            room,
            chat.submit(move |c, now| change(&id, room, rooms::react(c, room, uid, seq, &emoji, on, now)?)),
        ),
        ClientFrame::Read { room, seq } => {
            let rx = chat.submit(move |c, _| {
                let p = rooms::mark_read(c, room, uid, seq)?;
                Ok((String::new(), p.into_iter().collect()))
            });
            (room, rx)
        }
        ClientFrame::Sync { .. } | ClientFrame::Ping { .. } | ClientFrame::Typing { .. } => {
            unreachable!("handled inline by run()")
        }
        _ => unreachable!("call frames are handled by call_frame()"),
    };
    async move {
        match rx.await.unwrap_or(Err(StoreError::Closed)) {
            Ok(reply) if reply.is_empty() => None,
            Ok(reply) => Some(reply),
            Err(e) => Some(ErrorFrame::from_store(&e).reference(reference).room(room).to_json()),
        }
    }
    .boxed()
}

fn change(
    id: &str,
    room: RoomId,
    p: Option<rooms::Published>,
) -> Result<(String, Vec<rooms::Published>), StoreError> {
    let seq = p.as_ref().and_then(|p| p.event.map(|(_, s)| s));
    Ok((protocol::ack_change(id, room, seq), p.into_iter().collect()))
}

/// Ephemeral "is typing" to the other members; never stored.
fn typing(chat: &Chat, user: &User, room: RoomId) {
    let chat = chat.clone();
    let uid = user.id;
    tokio::spawn(async move {
        let members = chat.db.read(move |c| {
            rooms::member_role(c, room, uid)?;
            rooms::members_of(c, room)
        });
        if let Ok(members) = members.await {
            let frame = format!("{{\"t\":\"typing\",\"room\":{room},\"user\":{uid}}}");
            let recipients = members.into_iter().filter(|&m| m != uid).collect();
            chat.hub.publish(&rooms::Published { recipients, frame: frame.into(), event: None });
        }
    });
}

/// Sends the events after each room's `since`, then `synced`. Rooms the
/// user left get `gone`; rooms with too large a gap get `reset`.
async fn replay<S, E>(
    chat: &Chat,
    user: &User,
    since: HashMap<String, Seq>,
    delivered: &mut HashMap<RoomId, Seq>,
    sink: &mut S,
) -> bool
where
    S: Sink<Message, Error = E> + Unpin,
{
    let mut wanted: Vec<(RoomId, Seq)> = Vec::new();
    for (k, v) in since.into_iter().take(5000) {
        match k.parse::<RoomId>() {
            Ok(room) => wanted.push((room, v.max(0))),
            Err(_) => {
                let e = ErrorFrame::new(ErrorCode::Invalid, format!("sync: {k:?} is not a room id"));
                if sink.send(text(e.to_json())).await.is_err() {
                    return false;
                }
            }
        }
    }
    wanted.sort_unstable();
    let uid = user.id;
    let limit = chat.config.resume_limit;
    let result = chat
        .db
        .read(move |c| {
            let mut out = Vec::with_capacity(wanted.len());
            for (room, since) in wanted {
                let r = rooms::events_since(c, room, uid, since, limit);
                let last: Option<Seq> = match &r {
                    Ok(None) => rooms::room_summary(c, room, uid).ok().map(|s| s.last_seq),
                    _ => None,
                };
                out.push((room, since, r, last));
            }
            Ok(out)
        })
        .await;
    let rooms = match result {
        Ok(r) => r,
        Err(e) => {
            let e = ErrorFrame::from_store(&e);
            return sink.send(text(e.to_json())).await.is_ok();
        }
    };
    for (room, since, r, last) in rooms {
        let frames: Vec<String> = match r {
            Ok(Some(frames)) => {
                let already = delivered.entry(room).or_insert(0);
                let before = *already;
                *already = frames.last().map_or(before, |(seq, _)| before.max(*seq));
                frames.into_iter().filter(|(seq, _)| *seq > before).map(|(_, f)| f).collect()
            }
            Ok(None) => {
                let last = last.unwrap_or(since);
                delivered.insert(room, last);
                vec![format!("{{\"t\":\"reset\",\"room\":{room},\"seq\":{last}}}")]
            }
            Err(StoreError::NotMember) => vec![format!("{{\"t\":\"gone\",\"room\":{room}}}")],
            Err(e) => vec![ErrorFrame::from_store(&e).room(room).to_json()],
        };
        for f in frames {
            if sink.send(text(f)).await.is_err() {
                return false;
            }
        }
    }
    // The calls of the user's rooms, before `synced` so the client knows
    // them when it starts showing live state.
    for f in chat.calls.frames_for(user.id, chat.clock.now_ms()) {
        if sink.send(text(f)).await.is_err() {
            return false;
        }
    }
    sink.send(text("{\"t\":\"synced\"}")).await.is_ok()
}

fn is_call(frame: &ClientFrame) -> bool {
    matches!(
        frame,
        ClientFrame::CallJoin { .. }
            | ClientFrame::CallLeave { .. }
            | ClientFrame::CallSignal { .. }
            | ClientFrame::CallState { .. }
            | ClientFrame::CallDecline { .. }
            | ClientFrame::CallModerate { .. }
    )
}

fn call_error(e: CallError, room: RoomId) -> String {
    let code = match e {
        CallError::NotInCall => ErrorCode::NotInCall,
        CallError::Full(_) => ErrorCode::CallFull,
        CallError::NoSuchParticipant => ErrorCode::NotFound,
        CallError::Forbidden => ErrorCode::Forbidden,
        CallError::Invalid(_) => ErrorCode::Invalid,
    };
    ErrorFrame::new(code, e.message()).room(room).to_json()
}

/// Handles a call frame; returns the reply for this connection, if any.
/// Membership is checked against the store on join and moderation; the
/// other verbs need the connection to be in the call already.
async fn call_frame(chat: &Chat, user: &User, conn: ConnId, frame: ClientFrame) -> Option<String> {
    let uid = user.id;
    let now = chat.clock.now_ms();
    let (room, result) = match frame {
        ClientFrame::CallJoin { room, pid, replaces, media } => {
            let ctx = match chat.db.read(move |c| calls::call_room(c, room, uid)).await {
                Ok(ctx) => ctx,
                Err(e) => return Some(ErrorFrame::from_store(&e).room(room).to_json()),
            };
            if !chat.calls.has_call(room) {
                if let Err(e) = call::check_pid(&pid) {
                    return Some(call_error(e, room));
                }
                match chat.write(move |c, now| {
                    let (open, published) = calls::start(c, room, uid, now)?;
                    Ok((open, published.into_iter().collect()))
                })
                .await
                {
                    Ok(open) => chat.calls.adopt(&open, &ctx, false, now),
                    Err(e) => return Some(ErrorFrame::from_store(&e).room(room).to_json()),
                }
            }
            match chat.calls.join(room, &ctx, &pid, replaces.as_deref(), uid, conn, media, now) {
                Ok((fx, joined)) => {
                    chat.apply(fx);
                    return Some(joined);
                }
                Err(e) => (room, Err(e)),
            }
        }
        ClientFrame::CallLeave { room } => (room, chat.calls.leave(room, conn, now)),
        ClientFrame::CallSignal { room, to, data } => (room, chat.calls.signal(room, conn, &to, &data)),
        ClientFrame::CallState { room, media } => (room, chat.calls.set_media(room, conn, media, now)),
        ClientFrame::CallDecline { room } => (room, chat.calls.decline(room, uid)),
        ClientFrame::CallModerate { room, pid, action } => {
            let role = chat.db.read(move |c| rooms::member_role(c, room, uid)).await;
            let may = matches!(role.as_deref(), Ok("owner")) || (role.is_ok() && user.role == Role::Admin);
            (room, chat.calls.moderate(room, uid, may, &pid, action, now))
        }
        _ => unreachable!("is_call() checked"),
    };
    match result {
        Ok(fx) => {
            chat.apply(fx);
            None
        }
        Err(e) => Some(call_error(e, room)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::extract::ws::Message;
    use futures::channel::mpsc;
    use futures::{SinkExt, StreamExt};
    use serde_json::{Value, json};

    use crate::chat::Chat;
    use crate::config::ChatConfig;
    use crate::store::rooms::{self, PostOutcome, Visibility};
    use crate::store::users::{self, Role, User};
    use crate::store::{Db, RoomId};

    struct Client {
        tx: mpsc::Sender<Result<Message, std::convert::Infallible>>,
        rx: mpsc::Receiver<Message>,
    }

    impl Client {
        async fn send(&mut self, v: Value) {
            self.tx.send(Ok(Message::Text(v.to_string().into()))).await.unwrap();
        }
        async fn recv(&mut self) -> Value {
            loop {
                let m = tokio::time::timeout(Duration::from_secs(5), self.rx.next()).await.unwrap().unwrap();
                if let Message::Text(t) = m {
                    return serde_json::from_str(t.as_str()).unwrap();
                }
            }
        }
        async fn nothing_for(&mut self, ms: u64) -> bool {
            tokio::time::timeout(Duration::from_millis(ms), self.rx.next()).await.is_err()
        }
    }

    async fn setup() -> (Chat, User, User, RoomId, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db")).unwrap();
        let chat = Chat::new(db, Arc::new(crate::SystemClock), ChatConfig::default());
        let (alice, bob, room) = chat
            .write(|c, now| {
                let a = users::create_user(c, "alice", "Alice", "h", Role::Admin, now)?;
                let b = users::create_user(c, "bob", "Bob", "h", Role::User, now)?;
                let (room, _) = rooms::create_group(c, a.id, "Team", "", Visibility::Invite, &[b.id], now)?;
                Ok(((a, b, room), vec![]))
            })
            .await
            .unwrap();
        (chat, alice, bob, room, dir)
    }

    fn connect(chat: &Chat, user: User) -> Client {
        let (to_server, from_client) = mpsc::channel(64);
        let (to_client, from_server) = mpsc::channel(64);
        tokio::spawn(super::run(chat.clone(), user, to_client, from_client));
        Client { tx: to_server, rx: from_server }
    }

    async fn post(chat: &Chat, room: RoomId, who: i64, id: &str) -> i64 {
        let id = id.to_string();
        chat.write(move |c, now| match rooms::post_message(c, room, who, &id, "hi", None, now)? {
            PostOutcome::Stored { seq, published } => Ok((seq, vec![published])),
            PostOutcome::Duplicate { seq, .. } => Ok((seq, vec![])),
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn live_events_wait_for_sync_then_replay_is_exact() {
        let (chat, alice, bob, room, _dir) = setup().await;
        let s1 = post(&chat, room, alice.id, "m1").await;
        let mut b = connect(&chat, bob.clone());
        assert_eq!(b.recv().await["t"], "welcome");
        // committed while Bob has not synced yet: held back, not lost
        let s2 = post(&chat, room, alice.id, "m2").await;
        assert!(b.nothing_for(150).await, "no live event before sync");
        b.send(json!({"t": "sync", "since": {room.to_string(): s1}})).await;
        let replayed = b.recv().await;
        assert_eq!((replayed["t"].as_str(), replayed["seq"].as_i64()), (Some("event"), Some(s2)));
        assert_eq!(b.recv().await["t"], "synced");
        // the queued live copy of s2 is dropped: exactly once
        let s3 = post(&chat, room, alice.id, "m3").await;
        assert_eq!(b.recv().await["seq"].as_i64(), Some(s3));
        assert!(b.nothing_for(150).await);
    }

    #[tokio::test]
    async fn acks_follow_commit_and_errors_keep_the_session() {
        let (chat, _alice, bob, room, _dir) = setup().await;
        let mut b = connect(&chat, bob);
        b.recv().await;
        b.send(json!({"t": "sync", "since": {}})).await;
        assert_eq!(b.recv().await["t"], "synced");
        b.send(json!({"t": "nonsense"})).await;
        assert_eq!(b.recv().await["code"], "unknown_type");
        b.send(json!({"t": "send", "id": "a1", "room": room, "body": "hello"})).await;
        // the event (Bob is a member) and the ack both arrive, once each
        let mut got = [b.recv().await, b.recv().await];
        got.sort_by_key(|v| v["t"].as_str().unwrap_or("").to_string());
        assert_eq!((got[0]["t"].as_str(), got[0]["dup"].as_bool()), (Some("ack"), Some(false)));
        assert_eq!((got[1]["t"].as_str(), got[1]["body"].as_str()), (Some("event"), Some("hello")));
        b.send(json!({"t": "send", "id": "a1", "room": room, "body": "hello"})).await;
        let dup = b.recv().await;
        assert_eq!((dup["dup"].as_bool(), dup["seq"].clone()), (Some(true), got[0]["seq"].clone()));
        assert!(b.nothing_for(150).await, "a retry publishes nothing");
        b.send(json!({"t": "ping", "id": "p"})).await;
        assert_eq!(b.recv().await["t"], "pong");
    }

    async fn synced(chat: &Chat, user: User) -> Client {
        let mut c = connect(chat, user);
        assert_eq!(c.recv().await["t"], "welcome");
        c.send(json!({"t": "sync", "since": {}})).await;
        loop {
            if c.recv().await["t"] == "synced" {
                return c;
            }
        }
    }

    /// The next frame of type `t`, skipping others.
    async fn next_of(c: &mut Client, t: &str) -> Value {
        loop {
            let v = c.recv().await;
            if v["t"] == t {
                return v;
            }
        }
    }

    #[tokio::test]
    async fn calls_reach_members_only_and_signaling_is_routed() {
        let (chat, alice, bob, room, _dir) = setup().await;
        let eve = chat
            .write(|c, now| Ok((users::create_user(c, "eve", "Eve", "h", Role::User, now)?, vec![])))
            .await
            .unwrap();
        let mut a = synced(&chat, alice).await;
        let mut b = synced(&chat, bob.clone()).await;
        let mut e = synced(&chat, eve).await;
        a.send(json!({"t": "call_join", "room": room, "pid": "pa", "media": {"audio": true, "video": true}})).await;
        let joined = next_of(&mut a, "call_joined").await;
        assert_eq!(joined["participants"].as_array().unwrap().len(), 1);
        let started = next_of(&mut b, "event").await;
        assert_eq!(started["kind"], "call_started");
        let state = next_of(&mut b, "call").await;
        assert_eq!(state["participants"][0]["pid"], "pa");
        // Eve is not a member: she cannot join, signal, or see anything
        e.send(json!({"t": "call_join", "room": room, "pid": "pe"})).await;
        assert_eq!(e.recv().await["code"], "not_member");
        e.send(json!({"t": "call_signal", "room": room, "to": "pa", "data": {"sdp": "x"}})).await;
        assert_eq!(e.recv().await["code"], "not_in_call");
        b.send(json!({"t": "call_join", "room": room, "pid": "pb"})).await;
        assert_eq!(next_of(&mut b, "call_joined").await["participants"].as_array().unwrap().len(), 2);
        b.send(json!({"t": "call_signal", "room": room, "to": "pa", "data": {"description": {"type": "offer"}}})).await;
        let sig = next_of(&mut a, "call_signal").await;
        assert_eq!((sig["from"].as_str(), sig["data"]["description"]["type"].as_str()), (Some("pb"), Some("offer")));
        // a fresh connection of a member learns about the call on sync
        let mut b2 = connect(&chat, bob);
        b2.recv().await;
        b2.send(json!({"t": "sync", "since": {}})).await;
        let mut seen = Vec::new();
        loop {
            let v = b2.recv().await;
            if v["t"] == "synced" {
                break;
            }
            seen.push(v["t"].as_str().unwrap_or("").to_string());
        }
        assert!(seen.contains(&"call".to_string()), "{seen:?}");
        assert!(e.nothing_for(200).await, "no call frame ever reached the non-member");
        // last one out ends the call and the room records it
        a.send(json!({"t": "call_leave", "room": room})).await;
        b.send(json!({"t": "call_leave", "room": room})).await;
        loop {
            let v = next_of(&mut a, "event").await;
            if v["kind"] == "call_ended" {
                assert_eq!(v["outcome"], "ended");
                break;
            }
        }
    }

    #[tokio::test]
    async fn a_disconnected_user_is_closed() {
        let (chat, _alice, bob, _room, _dir) = setup().await;
        let mut b = connect(&chat, bob.clone());
        b.recv().await;
        b.send(json!({"t": "sync", "since": {}})).await;
        b.recv().await;
        chat.hub.disconnect_user(bob.id, 4001, "account disabled");
        let m = tokio::time::timeout(Duration::from_secs(5), b.rx.next()).await.unwrap().unwrap();
        assert!(matches!(m, Message::Close(Some(ref c)) if c.code == 4001), "{m:?}");
    }
}
