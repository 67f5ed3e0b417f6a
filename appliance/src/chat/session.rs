//! One WebSocket session, in two parts.
//!
//! [`Session`] is the protocol as a state machine, sans-IO: fed the time and
//! what happened ([`Session::handle`], [`Session::handle_timeout`]), it says
//! what to send ([`Session::poll_transmit`]), what to ask of the store and
//! the calls ([`Session::poll_effect`]) and when to wake it
//! ([`Session::poll_timeout`]). Heartbeats, the idle timeout, rate limits,
//! holding live frames until `sync` has replayed the gap, exactly-once
//! delivery, catching up after the hub dropped frames, and closing a reader
//! that keeps falling behind are all decided here, tested with a fake clock.
//!
//! [`run`] is the socket task: it moves bytes between the WebSocket and the
//! session and carries out the effects. Generic over the sink and stream so
//! it is tested over channels as well as real sockets.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};

use super::Chat;
use super::call::{self, CallError};
use super::frames::{ErrorCode, ErrorFrame, ServerFrame};
use super::hub::{ConnId, Out};
use super::protocol::{self, ClientFrame, PROTOCOL_VERSION};
use crate::config::ChatConfig;
use crate::store::rooms::{self, PostOutcome, Resume};
use crate::store::users::{Role, User};
use crate::store::guests::{self, Perms};
use crate::store::{Millis, RoomId, Seq, StoreError, UserId, calls};

/// How often the server pings a client.
pub const PING_EVERY: Duration = Duration::from_secs(20);
/// Live frames held while a replay runs, at most; beyond, they are dropped
/// and the connection catches up from the store afterwards.
pub const MAX_HELD: usize = 4096;
/// Catch-ups (the hub dropped frames for this connection) tolerated in
/// [`CATCH_UP_WINDOW_MS`]; one more and the reader is too slow: closed 1013.
pub const MAX_CATCH_UPS: usize = 3;
pub const CATCH_UP_WINDOW_MS: Millis = 60_000;
/// A send to the socket that does not complete in this time ends the
/// connection (a peer that stopped reading).
pub const SEND_STALL: Duration = Duration::from_secs(30);
/// Typing notices per room, at most one in this many ms.
const TYPING_EVERY_MS: Millis = 3000;

/// The limits a session enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    pub ping_every_ms: Millis,
    pub idle_ms: Millis,
    /// Writes per second (burst 5x).
    pub send_rate: u32,
    /// Call signaling frames per second (burst 5x).
    pub signal_rate: u32,
    /// Events replayed per room before a `reset`.
    pub resume_limit: u32,
}

impl Limits {
    pub fn of(c: &ChatConfig) -> Limits {
        Limits {
            ping_every_ms: PING_EVERY.as_millis() as Millis,
            idle_ms: (c.idle_timeout_secs * 1000) as Millis,
            send_rate: c.send_rate,
            signal_rate: 200,
            resume_limit: c.resume_limit,
        }
    }
}

/// Token bucket.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    at: Millis,
}

impl Bucket {
    fn new(rate: u32, now: Millis) -> Bucket {
        let rate = f64::from(rate);
        Bucket { tokens: rate * 5.0, rate, burst: rate * 5.0, at: now }
    }
    fn take(&mut self, now: Millis) -> bool {
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

/// A write the store carries out for the session.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    Send { id: String, body: String, reply_to: Option<Seq>, files: Vec<String> },
    Edit { id: String, seq: Seq, body: String },
    Delete { id: String, seq: Seq },
    React { id: String, seq: Seq, emoji: String, on: bool },
    Read { seq: Seq },
}

/// What the session asks of the world.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Queue this write now (writes commit in the order asked); answer with
    /// [`Done::Written`].
    Write { room: RoomId, op: WriteOp },
    /// Read what happened in these rooms after these sequences (and, for a
    /// catch-up, the user's other rooms: they get `reset`); answer with
    /// [`Done::Replayed`].
    Replay { rooms: Vec<(RoomId, Seq)>, catch_up: bool },
    /// A call verb (in order, one at a time); answer with [`Done::Frame`].
    Call(ClientFrame),
    /// Tell the room's other members; a refusal comes back as [`Done::Frame`].
    Typing(RoomId),
}

/// The outcome of an [`Effect`].
#[derive(Debug)]
pub enum Done {
    /// A write: its `ack`, or nothing to say, or why it failed.
    Written { room: RoomId, reference: Option<String>, result: Result<Option<ServerFrame>, StoreError> },
    /// A replay: per room, and the call frames of the user's rooms.
    Replayed { rooms: Vec<(RoomId, Resume)>, calls: Vec<ServerFrame>, catch_up: bool },
    /// A frame for this connection, if any.
    Frame(Option<ServerFrame>),
}

/// What happened on the connection.
#[derive(Debug)]
pub enum Input {
    /// A text frame.
    Text(String),
    Binary,
    /// A frame over [`protocol::MAX_FRAME_BYTES`].
    Oversized,
    /// A WebSocket ping or pong: the client is there.
    Control,
    /// From the hub.
    Hub(Out),
    /// The hub had to drop frames for this connection.
    Overflowed,
    Done(Done),
}

/// What to write on the socket.
#[derive(Debug, Clone, PartialEq)]
pub enum Transmit {
    Text(Utf8Bytes),
    Ping,
    /// Send this close frame, then end.
    Close(u16, &'static str),
}

/// The protocol state of one connection. See the module documentation.
#[derive(Debug)]
pub struct Session {
    user: UserId,
    is_admin: bool,
    limits: Limits,
    last_heard: Millis,
    next_ping: Millis,
    sends: Bucket,
    signals: Bucket,
    typing_sent: HashMap<RoomId, Millis>,
    /// Last event sequence delivered per room: anything at or below it was
    /// already sent and is dropped (exactly once per connection).
    delivered: HashMap<RoomId, Seq>,
    /// A first `sync` was answered: live frames flow.
    synced: bool,
    /// Replays asked and not answered yet; live frames wait meanwhile.
    replays: usize,
    /// Live frames waiting for a replay to finish.
    held: VecDeque<Out>,
    /// Frames were dropped since the last replay was asked.
    behind: bool,
    /// When the last catch-ups were asked.
    catch_ups: VecDeque<Millis>,
    transmit: VecDeque<Transmit>,
    effects: VecDeque<Effect>,
    closed: bool,
    /// A guest's link permissions; `None` for members.
    guest: Option<Perms>,
}

fn text(frame: &ServerFrame) -> Transmit {
    Transmit::Text(Utf8Bytes::from(frame.to_json()))
}

impl Session {
    /// A session for `user` on connection `conn`; its first frame is `welcome`.
    pub fn new(user: &User, conn: ConnId, limits: Limits, now: Millis) -> Session {
        let mut s = Session {
            user: user.id,
            is_admin: user.role == Role::Admin,
            last_heard: now,
            next_ping: now + limits.ping_every_ms,
            sends: Bucket::new(limits.send_rate, now),
            signals: Bucket::new(limits.signal_rate, now),
            limits,
            typing_sent: HashMap::new(),
            delivered: HashMap::new(),
            synced: false,
            replays: 0,
            held: VecDeque::new(),
            behind: false,
            catch_ups: VecDeque::new(),
            transmit: VecDeque::new(),
            guest: None,
            effects: VecDeque::new(),
            closed: false,
        };
        let welcome = ServerFrame::Welcome {
            v: PROTOCOL_VERSION,
            user: user.id,
            conn,
            ping_ms: s.limits.ping_every_ms as u64,
            idle_ms: s.limits.idle_ms as u64,
        };
        s.send(&welcome);
        s
    }

    pub fn user(&self) -> UserId {
        self.user
    }

    pub fn is_admin(&self) -> bool {
        self.is_admin
    }

    /// The session ended (a close frame is the last thing to send).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmit.pop_front()
    }

    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// When [`Session::handle_timeout`] is due: the next ping or the idle deadline.
    pub fn poll_timeout(&self) -> Millis {
        self.next_ping.min(self.last_heard + self.limits.idle_ms + 1)
    }

    fn send(&mut self, frame: &ServerFrame) {
        self.transmit.push_back(text(frame));
    }

    fn error(&mut self, e: ErrorFrame) {
        self.send(&e.frame());
    }

    fn close(&mut self, code: u16, reason: &'static str) {
        if !self.closed {
            self.closed = true;
            self.transmit.push_back(Transmit::Close(code, reason));
        }
    }

    /// Pings when due; closes a client silent for longer than the idle timeout.
    pub fn handle_timeout(&mut self, now: Millis) {
        if self.closed {
            return;
        }
        if now - self.last_heard > self.limits.idle_ms {
            self.close(1001, "idle timeout");
            return;
        }
        if now >= self.next_ping {
            self.transmit.push_back(Transmit::Ping);
            self.next_ping = now + self.limits.ping_every_ms;
        }
    }

    pub fn handle(&mut self, now: Millis, input: Input) {
        if self.closed {
            return;
        }
        match input {
            Input::Text(t) => {
                self.last_heard = now;
                match protocol::parse(&t) {
                    Ok(frame) => self.client_frame(now, frame),
                    Err(e) => self.error(e),
                }
            }
            Input::Binary => {
                self.last_heard = now;
                self.error(ErrorFrame::new(ErrorCode::BadFrame, "binary frames are not part of the protocol"));
            }
            Input::Oversized => self.close(1009, "frame over 256 KiB"),
            Input::Control => self.last_heard = now,
            Input::Hub(Out::Close(code, reason)) => self.close(code, reason),
            Input::Hub(out) => {
                if self.synced && self.replays == 0 {
                    self.live(out);
                } else if self.held.len() < MAX_HELD {
                    self.held.push_back(out);
                } else {
                    // the replay (or the catch-up after it) reads the store anyway
                    self.held.clear();
                    self.behind = true;
                }
            }
            Input::Overflowed => self.overflowed(now),
            Input::Done(done) => self.done(now, done),
        }
    }

    /// A live frame: dropped if its event was already delivered.
    fn live(&mut self, out: Out) {
        if let Out::Frame { text, event } = out {
            if let Some((room, seq)) = event {
                let last = self.delivered.entry(room).or_insert(Seq::ZERO);
                if seq <= *last {
                    return;
                }
                *last = seq;
            }
            self.transmit.push_back(Transmit::Text(text));
        }
    }

    /// The hub dropped frames: catch up from the store, unless this reader
    /// keeps falling behind.
    fn overflowed(&mut self, now: Millis) {
        if !self.synced && self.replays == 0 {
            // the first `sync` will replay everything anyway
            self.held.clear();
            return;
        }
        if self.replays > 0 {
            // what was dropped may be newer than the replay's read
            self.behind = true;
            return;
        }
        self.catch_up(now);
    }

    fn catch_up(&mut self, now: Millis) {
        self.catch_ups.retain(|&t| now - t < CATCH_UP_WINDOW_MS);
        if self.catch_ups.len() >= MAX_CATCH_UPS {
            self.close(1013, "lagging; reconnect and resume");
            return;
        }
        self.catch_ups.push_back(now);
        self.behind = false;
        self.replays += 1;
        let mut rooms: Vec<(RoomId, Seq)> = self.delivered.iter().map(|(r, s)| (*r, *s)).collect();
        rooms.sort_unstable();
        self.effects.push_back(Effect::Replay { rooms, catch_up: true });
    }

    /// A guest's session: what its link allows, checked on every frame.
    pub fn for_guest(mut self, perms: Perms) -> Session {
        self.guest = Some(perms);
        self
    }

    /// Why this guest may not send this frame (`None`: it may, or a member).
    fn guest_refusal(&self, frame: &ClientFrame) -> Option<(&'static str, Option<RoomId>)> {
        let p = self.guest?;
        let media_refused = |m: &crate::chat::call::MediaState| {
            if (m.audio || m.video) && !p.media {
                Some("this guest link does not allow camera or microphone")
            } else if m.screen.is_some() && !p.screen {
                Some("this guest link does not allow screen sharing")
            } else {
                None
            }
        };
        match frame {
            ClientFrame::Send { room, .. } | ClientFrame::Edit { room, .. } | ClientFrame::Delete { room, .. } | ClientFrame::React { room, .. }
                if !p.chat =>
            {
                Some(("this guest link does not allow writing", Some(*room)))
            }
            ClientFrame::CallJoin { room, .. } | ClientFrame::CallState { room, .. } if !p.call => {
                Some(("this guest link does not allow calls", Some(*room)))
            }
            ClientFrame::CallJoin { room, media, .. } | ClientFrame::CallState { room, media } => media_refused(media).map(|w| (w, Some(*room))),
            ClientFrame::CallModerate { room, .. } => Some(("guests cannot moderate a call", Some(*room))),
            _ => None,
        }
    }

    fn client_frame(&mut self, now: Millis, frame: ClientFrame) {
        if let Some((why, room)) = self.guest_refusal(&frame) {
            let reference = match &frame {
                ClientFrame::Send { id, .. } | ClientFrame::Edit { id, .. } | ClientFrame::Delete { id, .. } | ClientFrame::React { id, .. } => {
                    Some(id.clone())
                }
                _ => None,
            };
            let mut e = ErrorFrame::new(ErrorCode::Forbidden, why).reference(reference);
            if let Some(r) = room {
                e = e.room(r);
            }
            self.error(e);
            return;
        }
        match frame {
            ClientFrame::Sync { since } => self.sync(since),
            ClientFrame::Ping { id } => self.send(&ServerFrame::Pong { id, ts: now }),
            ClientFrame::Typing { room } => {
                let due = self.typing_sent.get(&room).is_none_or(|&t| now - t >= TYPING_EVERY_MS);
                if due {
                    self.typing_sent.insert(room, now);
                    self.effects.push_back(Effect::Typing(room));
                }
            }
            ClientFrame::Read { room, seq } if seq < Seq::ZERO => {
                self.error(ErrorFrame::new(ErrorCode::Invalid, "read: seq must be 0 or more").room(room));
            }
            f @ (ClientFrame::CallJoin { .. }
            | ClientFrame::CallLeave { .. }
            | ClientFrame::CallSignal { .. }
            | ClientFrame::CallState { .. }
            | ClientFrame::CallDecline { .. }
            | ClientFrame::CallModerate { .. }) => {
                if self.signals.take(now) {
                    self.effects.push_back(Effect::Call(f));
                } else {
                    self.error(ErrorFrame::new(ErrorCode::RateLimited, "too much call signaling; slow down"));
                }
            }
            write => {
                let (room, op) = match write {
                    ClientFrame::Send { id, room, body, reply_to, files } => (room, WriteOp::Send { id, body, reply_to, files }),
                    ClientFrame::Edit { id, room, seq, body } => (room, WriteOp::Edit { id, seq, body }),
                    ClientFrame::Delete { id, room, seq } => (room, WriteOp::Delete { id, seq }),
                    ClientFrame::React { id, room, seq, emoji, on } => (room, WriteOp::React { id, seq, emoji, on }),
                    ClientFrame::Read { room, seq } => (room, WriteOp::Read { seq }),
                    _ => unreachable!("every other frame is matched above"),
                };
                // refused frames count too: a client that floods is slowed
                // down whatever it sends
                if !self.sends.take(now) {
                    let e = ErrorFrame::new(ErrorCode::RateLimited, "too many messages; slow down");
                    self.error(e.reference(op.id().map(str::to_string)).room(room));
                } else if let Some(Err(e)) = op.id().map(rooms::check_client_id) {
                    // every write's id follows the same rule as a send's
                    self.error(ErrorFrame::from_store(&e).room(room));
                } else {
                    self.effects.push_back(Effect::Write { room, op });
                }
            }
        }
    }

    fn sync(&mut self, since: HashMap<String, Seq>) {
        let mut rooms: Vec<(RoomId, Seq)> = Vec::new();
        for (k, v) in since.into_iter().take(5000) {
            match k.parse::<RoomId>() {
                // a negative sequence is read as 0: everything
                Ok(room) => rooms.push((room, v.max(Seq::ZERO))),
                Err(_) => self.error(ErrorFrame::new(ErrorCode::Invalid, format!("sync: {k:?} is not a room id"))),
            }
        }
        rooms.sort_unstable();
        self.replays += 1;
        // everything committed until now is in what the replay reads
        self.behind = false;
        self.effects.push_back(Effect::Replay { rooms, catch_up: false });
    }

    fn done(&mut self, now: Millis, done: Done) {
        match done {
            Done::Written { room, reference, result } => match result {
                Ok(Some(frame)) => self.send(&frame),
                Ok(None) => {}
                Err(e) => self.error(ErrorFrame::from_store(&e).reference(reference).room(room)),
            },
            Done::Frame(Some(frame)) => self.send(&frame),
            Done::Frame(None) => {}
            Done::Replayed { rooms, calls, catch_up } => self.replayed(now, rooms, calls, catch_up),
        }
    }

    fn replayed(&mut self, now: Millis, rooms: Vec<(RoomId, Resume)>, calls: Vec<ServerFrame>, catch_up: bool) {
        for (room, r) in rooms {
            match r {
                Resume::Events(events) => {
                    let before = self.delivered.get(&room).copied().unwrap_or(Seq::ZERO);
                    let mut last = before;
                    for e in events.into_iter().filter(|e| e.seq > before) {
                        last = last.max(e.seq);
                        self.send(&ServerFrame::Event(e));
                    }
                    self.delivered.insert(room, last);
                }
                Resume::Reset { last } => {
                    self.delivered.insert(room, last);
                    self.send(&ServerFrame::Reset { room, seq: last });
                }
                Resume::Gone => {
                    self.delivered.remove(&room);
                    self.send(&ServerFrame::Gone { room });
                }
            }
        }
        // the calls before `synced`, so the client knows them when it shows live state
        for f in &calls {
            self.send(f);
        }
        self.replays = self.replays.saturating_sub(1);
        if !catch_up {
            self.synced = true;
            self.send(&ServerFrame::Synced);
        }
        if self.replays == 0 {
            for out in std::mem::take(&mut self.held) {
                self.live(out);
            }
            if self.behind {
                // frames were dropped while it read: they may be newer
                self.catch_up(now);
            }
        }
    }
}

impl WriteOp {
    /// The client's id of the frame, when it has one.
    pub fn id(&self) -> Option<&str> {
        match self {
            WriteOp::Send { id, .. } | WriteOp::Edit { id, .. } | WriteOp::Delete { id, .. } | WriteOp::React { id, .. } => {
                Some(id)
            }
            WriteOp::Read { .. } => None,
        }
    }
}

// ---- the socket task ------------------------------------------------------

fn message(t: Transmit) -> Message {
    match t {
        Transmit::Text(t) => Message::Text(t),
        Transmit::Ping => Message::Ping(Default::default()),
        Transmit::Close(code, reason) => Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) })),
    }
}

/// Whether a read error is a frame over the size limit.
fn oversized<E: 'static>(e: &E) -> bool {
    let any = e as &dyn std::any::Any;
    let inner = if let Some(e) = any.downcast_ref::<axum::Error>() {
        std::error::Error::source(e).and_then(|s| s.downcast_ref::<tungstenite::Error>())
    } else {
        any.downcast_ref::<tungstenite::Error>()
    };
    matches!(inner, Some(tungstenite::Error::Capacity(_)))
}

/// Queues the store write now (so a connection's writes commit in the
/// order sent) and returns its outcome to be.
fn write(chat: &Chat, user: UserId, is_admin: bool, room: RoomId, op: WriteOp) -> BoxFuture<'static, Done> {
    let reference = op.id().map(str::to_string);
    type Reply = Result<Option<ServerFrame>, StoreError>;
    let change = move |id: String, p: Option<rooms::Published>| {
        let seq = p.as_ref().and_then(|p| p.event.map(|(_, s)| s));
        Ok((Some(ServerFrame::ack(&id, room, seq, None)), p.into_iter().collect()))
    };
    let rx = match op {
        WriteOp::Send { id, body, reply_to, files } => chat.submit(move |c, now| match rooms::post_message_with_files(c, room, user, &id, &body, reply_to, &files, now)? {
            PostOutcome::Stored { seq, published } => Ok((Some(ServerFrame::ack(&id, room, Some(seq), Some(false))), vec![published])),
            PostOutcome::Duplicate { room, seq } => Ok((Some(ServerFrame::ack(&id, room, Some(seq), Some(true))), vec![])),
        }),
        WriteOp::Edit { id, seq, body } => chat.submit(move |c, now| change(id, rooms::edit_message(c, room, user, seq, &body, now)?)),
        WriteOp::Delete { id, seq } => chat.submit(move |c, now| change(id, rooms::delete_message(c, room, user, is_admin, seq, now)?)),
        WriteOp::React { id, seq, emoji, on } => {
            chat.submit(move |c, now| change(id, rooms::react(c, room, user, seq, &emoji, on, now)?))
        }
        WriteOp::Read { seq } => chat.submit(move |c, _| Ok((None, rooms::mark_read(c, room, user, seq)?.into_iter().collect()))),
    };
    async move {
        let result: Reply = rx.await.unwrap_or(Err(StoreError::Closed));
        Done::Written { room, reference, result }
    }
    .boxed()
}

/// Reads a replay (off the async threads).
fn replay(chat: &Chat, user: UserId, rooms: Vec<(RoomId, Seq)>, catch_up: bool) -> BoxFuture<'static, Done> {
    let chat = chat.clone();
    let limit = chat.config.resume_limit;
    async move {
        let read = chat
            .db
            .read(move |c| {
                let mut out = Vec::with_capacity(rooms.len());
                for &(room, since) in &rooms {
                    out.push((room, rooms::resume(c, room, user, since, limit)?));
                }
                if catch_up {
                    // rooms joined meanwhile: reload them
                    for (room, last) in rooms::member_rooms(c, user)? {
                        if !rooms.iter().any(|(r, _)| *r == room) {
                            out.push((room, Resume::Reset { last }));
                        }
                    }
                }
                Ok(out)
            })
            .await;
        match read {
            Ok(rooms) => {
                let calls = chat.calls.frames_for(user, chat.clock.now_ms());
                Done::Replayed { rooms, calls, catch_up }
            }
            Err(e) => {
                // nothing was replayed: the client syncs again after the error
                Done::Frame(Some(ErrorFrame::from_store(&e).frame()))
            }
        }
    }
    .boxed()
}

/// Ephemeral "is typing" to the other members; never stored.
fn typing(chat: &Chat, user: UserId, room: RoomId) -> BoxFuture<'static, Done> {
    let chat = chat.clone();
    async move {
        let members = chat
            .db
            .read(move |c| {
                rooms::member_role(c, room, user)?;
                rooms::members_of(c, room)
            })
            .await;
        match members {
            Ok(members) => {
                let recipients = members.into_iter().filter(|&m| m != user).collect();
                chat.hub.publish(&rooms::Published { recipients, frame: ServerFrame::Typing { room, user }, event: None });
                Done::Frame(None)
            }
            Err(e) => Done::Frame(Some(ErrorFrame::from_store(&e).room(room).frame())),
        }
    }
    .boxed()
}

fn call_error(e: CallError, room: RoomId) -> ServerFrame {
    let code = match e {
        CallError::NotInCall => ErrorCode::NotInCall,
        CallError::Full(_) => ErrorCode::CallFull,
        CallError::NoSuchParticipant => ErrorCode::NotFound,
        CallError::Forbidden => ErrorCode::Forbidden,
        CallError::Invalid(_) => ErrorCode::Invalid,
    };
    ErrorFrame::new(code, e.message()).room(room).frame()
}

/// Carries out a call frame; returns the reply for this connection, if any.
/// Membership is checked against the store on join and moderation; the
/// other verbs need the connection to be in the call already.
async fn call_frame(chat: Chat, user: UserId, is_admin: bool, conn: ConnId, frame: ClientFrame) -> Option<ServerFrame> {
    let now = chat.clock.now_ms();
    let (room, result) = match frame {
        ClientFrame::CallJoin { room, pid, replaces, media } => {
            let ctx = match chat.db.read(move |c| calls::call_room(c, room, user)).await {
                Ok(ctx) => ctx,
                Err(e) => return Some(ErrorFrame::from_store(&e).room(room).frame()),
            };
            if !chat.calls.has_call(room) {
                if let Err(e) = call::check_pid(&pid) {
                    return Some(call_error(e, room));
                }
                let started = chat
                    .write(move |c, now| {
                        let (open, published) = calls::start(c, room, user, now)?;
                        Ok((open, published.into_iter().collect()))
                    })
                    .await;
                match started {
                    Ok(open) => chat.calls.adopt(&open, &ctx, false, now),
                    Err(e) => return Some(ErrorFrame::from_store(&e).room(room).frame()),
                }
            }
            match chat.calls.join(room, &ctx, &pid, replaces.as_deref(), user, conn, media, now) {
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
        ClientFrame::CallDecline { room } => (room, chat.calls.decline(room, user)),
        ClientFrame::CallModerate { room, pid, action } => {
            // members who moderate the room: its owners, and admins in it
            let role = chat.db.read(move |c| rooms::member_role(c, room, user)).await.ok();
            let may = role.is_some() && crate::rules::Actor { role, admin: is_admin }.moderates();
            (room, chat.calls.moderate(room, user, may, &pid, action, now))
        }
        _ => return None,
    };
    match result {
        Ok(fx) => {
            chat.apply(fx);
            None
        }
        Err(e) => Some(call_error(e, room)),
    }
}

/// Runs the session until the client leaves, the connection fails, the
/// user is disconnected, or the session closes (idle, oversized, lagging).
pub async fn run<S, R, E1, E2>(chat: Chat, user: User, mut sink: S, mut stream: R)
where
    S: Sink<Message, Error = E1> + Unpin,
    R: Stream<Item = Result<Message, E2>> + Unpin,
    E2: 'static,
{
    let reg = chat.hub.register(user.id);
    let (conn, mut hub, overflowed) = (reg.id, reg.frames, reg.overflowed);
    let mut s = Session::new(&user, conn, Limits::of(&chat.config), chat.clock.now_ms());
    if user.role == Role::Guest {
        let uid = user.id;
        let link = chat.db.read(move |c| guests::guest_state(c, uid)).await.ok().flatten();
        // no link found: a guest that may do nothing
        s = s.for_guest(link.map_or(Perms::from_bits(0), |(l, _)| l.perms));
    }
    let (uid, is_admin) = (s.user(), s.is_admin());
    // store work, completed in the order it was asked
    let mut pending: FuturesOrdered<BoxFuture<'static, Done>> = FuturesOrdered::new();
    // call verbs, one at a time, in order
    let mut calls_waiting: VecDeque<ClientFrame> = VecDeque::new();
    let mut call_running: Option<BoxFuture<'static, Option<ServerFrame>>> = None;
    'run: loop {
        while let Some(effect) = s.poll_effect() {
            match effect {
                Effect::Write { room, op } => pending.push_back(write(&chat, uid, is_admin, room, op)),
                Effect::Replay { rooms, catch_up } => pending.push_back(replay(&chat, uid, rooms, catch_up)),
                Effect::Typing(room) => pending.push_back(typing(&chat, uid, room)),
                Effect::Call(frame) => calls_waiting.push_back(frame),
            }
        }
        if call_running.is_none()
            && let Some(frame) = calls_waiting.pop_front() {
                call_running = Some(call_frame(chat.clone(), uid, is_admin, conn, frame).boxed());
            }
        while let Some(t) = s.poll_transmit() {
            let last = matches!(t, Transmit::Close(..));
            let sent = tokio::time::timeout(SEND_STALL, sink.send(message(t))).await;
            if !matches!(sent, Ok(Ok(()))) || last {
                break 'run;
            }
        }
        let wait = (s.poll_timeout() - chat.clock.now_ms()).max(0) as u64;
        tokio::select! {
            incoming = stream.next() => {
                let now = chat.clock.now_ms();
                match incoming {
                    Some(Ok(Message::Text(t))) => s.handle(now, Input::Text(t.to_string())),
                    Some(Ok(Message::Binary(_))) => s.handle(now, Input::Binary),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => s.handle(now, Input::Control),
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Err(e)) if oversized(&e) => s.handle(now, Input::Oversized),
                    Some(Err(_)) => break,
                }
            }
            out = hub.recv() => match out {
                Some(out) => s.handle(chat.clock.now_ms(), Input::Hub(out)),
                None => break,
            },
            Some(done) = pending.next(), if !pending.is_empty() => s.handle(chat.clock.now_ms(), Input::Done(done)),
            reply = async { call_running.as_mut().expect("guarded").await }, if call_running.is_some() => {
                call_running = None;
                s.handle(chat.clock.now_ms(), Input::Done(Done::Frame(reply)));
            }
            _ = tokio::time::sleep(Duration::from_millis(wait)) => s.handle_timeout(chat.clock.now_ms()),
        }
        if overflowed.swap(false, std::sync::atomic::Ordering::Relaxed) {
            s.handle(chat.clock.now_ms(), Input::Overflowed);
        }
    }
    chat.hub.unregister(uid, conn);
    let gone = chat.calls.connection_gone(conn, chat.clock.now_ms());
    if !gone.is_empty() {
        chat.apply(gone);
    }
    // Writes already queued still commit; their acks are simply not sent.
    let _ = sink.close().await;
}

#[cfg(test)]
mod machine {
    //! The state machine alone, with a fake clock in milliseconds.
    use super::*;
    use crate::chat::frames::Event;
    use crate::store::users::Role;

    fn user() -> User {
        User { id: UserId(7), username: "bob".into(), display_name: "Bob".into(), role: Role::User, disabled: false }
    }

    fn limits() -> Limits {
        Limits { ping_every_ms: 20_000, idle_ms: 60_000, send_rate: 20, signal_rate: 200, resume_limit: 1000 }
    }

    fn frames(s: &mut Session) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        while let Some(t) = s.poll_transmit() {
            match t {
                Transmit::Text(t) => out.push(serde_json::from_str(t.as_str()).unwrap()),
                Transmit::Ping => out.push(serde_json::json!({"ws": "ping"})),
                Transmit::Close(code, _) => out.push(serde_json::json!({"ws": "close", "code": code})),
            }
        }
        out
    }

    fn effects(s: &mut Session) -> Vec<Effect> {
        std::iter::from_fn(|| s.poll_effect()).collect()
    }

    #[test]
    fn a_guest_is_held_to_its_link_on_every_frame() {
        let chat_only = crate::store::guests::Perms { chat: true, call: false, media: false, screen: false, upload: false };
        let mut s = Session::new(&user(), 1, limits(), 0).for_guest(chat_only);
        frames(&mut s);
        s.handle(1, Input::Text(r#"{"t":"send","id":"m1","room":3,"body":"hi"}"#.into()));
        assert!(matches!(effects(&mut s).as_slice(), [Effect::Write { .. }]), "chat is allowed");
        s.handle(2, Input::Text(r#"{"t":"call_join","room":3,"pid":"p1","media":{"audio":true}}"#.into()));
        let f = frames(&mut s);
        assert_eq!((f[0]["code"].as_str(), f[0]["room"].as_i64()), (Some("forbidden"), Some(3)), "{f:?}");
        assert!(effects(&mut s).is_empty());
        let support = crate::store::guests::Perms { screen: false, ..crate::store::guests::Perms::SUPPORT };
        let mut s = Session::new(&user(), 1, limits(), 0).for_guest(support);
        frames(&mut s);
        s.handle(1, Input::Text(r#"{"t":"call_join","room":3,"pid":"p1","media":{"audio":true,"video":true}}"#.into()));
        assert!(matches!(effects(&mut s).as_slice(), [Effect::Call(_)]), "camera allowed");
        s.handle(2, Input::Text(r#"{"t":"call_state","room":3,"media":{"audio":true,"screen":"s1"}}"#.into()));
        assert_eq!(frames(&mut s)[0]["message"], "this guest link does not allow screen sharing");
        s.handle(3, Input::Text(r#"{"t":"call_moderate","room":3,"pid":"p2","action":"mute"}"#.into()));
        assert_eq!(frames(&mut s)[0]["code"], "forbidden");
        let nothing = crate::store::guests::Perms::from_bits(0);
        let mut s = Session::new(&user(), 1, limits(), 0).for_guest(nothing);
        frames(&mut s);
        s.handle(1, Input::Text(r#"{"t":"react","id":"r1","room":3,"seq":4,"emoji":"👍","on":true}"#.into()));
        let f = frames(&mut s);
        assert_eq!((f[0]["code"].as_str(), f[0]["ref"].as_str()), (Some("forbidden"), Some("r1")), "{f:?}");
        s.handle(2, Input::Text(r#"{"t":"read","room":3,"seq":4}"#.into()));
        assert!(matches!(effects(&mut s).as_slice(), [Effect::Write { .. }]), "reading is always allowed");
    }

    fn hub_event(room: RoomId, seq: Seq) -> Input {
        let f = ServerFrame::Event(Event { room, seq, ts: 0, actor: UserId(1), body: rooms::EventBody::Join { user: UserId(1) } });
        Input::Hub(Out::Frame { text: Utf8Bytes::from(f.to_json()), event: Some((room, seq)) })
    }

    fn event(room: RoomId, seq: Seq) -> Event {
        Event { room, seq, ts: 0, actor: UserId(1), body: rooms::EventBody::Join { user: UserId(1) } }
    }

    fn synced(now: Millis) -> Session {
        let mut s = Session::new(&user(), 1, limits(), now);
        s.handle(now, Input::Text(r#"{"t":"sync","since":{"3":5}}"#.into()));
        assert_eq!(effects(&mut s), vec![Effect::Replay { rooms: vec![(RoomId(3), Seq(5))], catch_up: false }]);
        s.handle(now, Input::Done(Done::Replayed { rooms: vec![(RoomId(3), Resume::Events(vec![]))], calls: vec![], catch_up: false }));
        frames(&mut s);
        s
    }

    #[test]
    fn welcome_then_pings_every_20_s_and_silence_closes_after_60() {
        let mut s = Session::new(&user(), 9, limits(), 0);
        let f = frames(&mut s);
        assert_eq!((f[0]["t"].as_str(), f[0]["conn"].as_i64(), f[0]["idle_ms"].as_i64()), (Some("welcome"), Some(9), Some(60_000)));
        assert_eq!(s.poll_timeout(), 20_000);
        s.handle_timeout(20_000);
        assert_eq!(frames(&mut s), vec![serde_json::json!({"ws": "ping"})]);
        s.handle(30_000, Input::Control);
        s.handle_timeout(40_000);
        s.handle_timeout(60_000);
        assert_eq!(frames(&mut s).len(), 2, "pinged at 40 and 60 s");
        assert_eq!(s.poll_timeout(), 80_000);
        s.handle_timeout(90_001);
        assert_eq!(frames(&mut s), vec![serde_json::json!({"ws": "close", "code": 1001})], "60 s after the last frame heard");
        assert!(s.is_closed());
    }

    #[test]
    fn live_frames_wait_for_the_replay_and_are_delivered_once() {
        let mut s = Session::new(&user(), 1, limits(), 0);
        frames(&mut s);
        s.handle(1, hub_event(RoomId(3), Seq(6)));
        assert!(frames(&mut s).is_empty(), "nothing live before sync");
        s.handle(2, Input::Text(r#"{"t":"sync","since":{"3":5,"x":1}}"#.into()));
        assert_eq!(frames(&mut s)[0]["code"], "invalid", "a bad room id is answered");
        s.handle(3, hub_event(RoomId(3), Seq(7)));
        let replay = Resume::Events(vec![event(RoomId(3), Seq(6))]);
        s.handle(4, Input::Done(Done::Replayed { rooms: vec![(RoomId(3), replay)], calls: vec![], catch_up: false }));
        let got: Vec<(String, Option<i64>)> =
            frames(&mut s).iter().map(|f| (f["t"].as_str().unwrap().to_string(), f["seq"].as_i64())).collect();
        assert_eq!(got, [("event".into(), Some(6)), ("synced".into(), None), ("event".into(), Some(7))], "6 once, then 7 live");
        s.handle(5, hub_event(RoomId(3), Seq(7)));
        assert!(frames(&mut s).is_empty(), "never twice");
    }

    #[test]
    fn a_client_ahead_of_the_server_or_too_far_behind_is_reset() {
        let mut s = Session::new(&user(), 1, limits(), 0);
        frames(&mut s);
        s.handle(1, Input::Text(r#"{"t":"sync","since":{"3":-4,"4":900,"5":1}}"#.into()));
        assert_eq!(effects(&mut s), vec![Effect::Replay { rooms: vec![(RoomId(3), Seq(0)), (RoomId(4), Seq(900)), (RoomId(5), Seq(1))], catch_up: false }], "negative reads as 0");
        let rooms = vec![(RoomId(3), Resume::Events(vec![event(RoomId(3), Seq(1))])), (RoomId(4), Resume::Reset { last: Seq(12) }), (RoomId(5), Resume::Gone)];
        s.handle(2, Input::Done(Done::Replayed { rooms, calls: vec![], catch_up: false }));
        let ts: Vec<String> = frames(&mut s).iter().map(|f| f["t"].as_str().unwrap().to_string()).collect();
        assert_eq!(ts, ["event", "reset", "gone", "synced"]);
    }

    #[test]
    fn writes_are_rate_limited_with_a_burst_of_five_seconds() {
        let mut s = synced(0);
        for i in 0..101 {
            s.handle(10, Input::Text(format!(r#"{{"t":"send","id":"m{i}","room":3,"body":"hi"}}"#)));
        }
        assert_eq!(effects(&mut s).len(), 100);
        let f = frames(&mut s);
        assert_eq!((f.len(), f[0]["code"].as_str(), f[0]["ref"].as_str()), (1, Some("rate_limited"), Some("m100")));
        s.handle(1010, Input::Text(r#"{"t":"send","id":"later","room":3,"body":"hi"}"#.into()));
        assert_eq!(effects(&mut s).len(), 1, "20 more a second");
    }

    #[test]
    fn every_write_id_follows_the_send_id_rule() {
        let mut s = synced(0);
        let long = "x".repeat(65);
        for f in [
            format!(r#"{{"t":"edit","id":"{long}","room":3,"seq":1,"body":"b"}}"#),
            r#"{"t":"delete","id":"a b","room":3,"seq":1}"#.to_string(),
            r#"{"t":"react","id":"","room":3,"seq":1,"emoji":"x","on":true}"#.to_string(),
        ] {
            s.handle(10, Input::Text(f));
        }
        assert!(effects(&mut s).is_empty(), "nothing is written");
        let codes: Vec<_> = frames(&mut s).iter().map(|f| f["code"].as_str().unwrap_or("").to_string()).collect();
        assert_eq!(codes, ["invalid", "invalid", "invalid"]);
        s.handle(20, Input::Text(r#"{"t":"edit","id":"ok-1","room":3,"seq":1,"body":"b"}"#.into()));
        assert_eq!(effects(&mut s).len(), 1);
    }

    #[test]
    fn every_frame_gets_an_answer() {
        let mut s = synced(0);
        s.handle(1, Input::Text(r#"{"t":"read","room":3,"seq":-1}"#.into()));
        assert_eq!(frames(&mut s)[0]["code"], "invalid");
        s.handle(2, Input::Text(r#"{"t":"typing","room":99}"#.into()));
        assert_eq!(effects(&mut s), vec![Effect::Typing(RoomId(99))]);
        let refused = ErrorFrame::from_store(&StoreError::NotMember).room(RoomId(99)).frame();
        s.handle(3, Input::Done(Done::Frame(Some(refused))));
        assert_eq!(frames(&mut s)[0]["code"], "not_member");
        s.handle(4, Input::Binary);
        assert_eq!(frames(&mut s)[0]["code"], "bad_frame");
        s.handle(5, Input::Text("{".into()));
        assert_eq!(frames(&mut s)[0]["code"], "bad_frame");
        s.handle(6, Input::Text(r#"{"t":"ping","id":"p"}"#.into()));
        assert_eq!((frames(&mut s)[0]["t"].as_str()), Some("pong"));
        s.handle(7, Input::Oversized);
        assert_eq!(frames(&mut s), vec![serde_json::json!({"ws": "close", "code": 1009})]);
    }

    /// A socket that has not synced while more events pile up than the hub
    /// holds is not closed: its sync replays everything from the store.
    #[test]
    fn a_pile_up_before_sync_costs_nothing() {
        let mut s = Session::new(&user(), 1, limits(), 0);
        frames(&mut s);
        for seq in 1..=(MAX_HELD as i64 + 100) {
            s.handle(1, hub_event(RoomId(3), Seq(seq)));
        }
        s.handle(1, Input::Overflowed);
        s.handle(2, Input::Text(r#"{"t":"sync","since":{"3":0}}"#.into()));
        assert_eq!(effects(&mut s).len(), 1);
        let all: Vec<Event> = (1..=4196).map(|seq| event(RoomId(3), Seq(seq))).collect();
        s.handle(3, Input::Done(Done::Replayed { rooms: vec![(RoomId(3), Resume::Events(all))], calls: vec![], catch_up: false }));
        let f = frames(&mut s);
        assert_eq!(f.len(), 4197);
        assert_eq!(f.last().unwrap()["t"], "synced");
        assert!(!s.is_closed());
        assert!(effects(&mut s).is_empty(), "no catch-up needed");
    }

    #[test]
    fn frames_dropped_by_the_hub_are_caught_up_from_the_store_and_a_hopeless_reader_is_closed() {
        let mut s = synced(0);
        s.handle(1, hub_event(RoomId(3), Seq(6)));
        frames(&mut s);
        s.handle(100, Input::Overflowed);
        assert_eq!(effects(&mut s), vec![Effect::Replay { rooms: vec![(RoomId(3), Seq(6))], catch_up: true }]);
        // a live frame during the catch-up waits for it
        s.handle(101, hub_event(RoomId(3), Seq(9)));
        assert!(frames(&mut s).is_empty());
        let missed = Resume::Events(vec![event(RoomId(3), Seq(7)), event(RoomId(3), Seq(8))]);
        s.handle(102, Input::Done(Done::Replayed { rooms: vec![(RoomId(3), missed), (RoomId(4), Resume::Reset { last: Seq(2) })], calls: vec![], catch_up: true }));
        let seqs: Vec<(String, i64)> = frames(&mut s).iter().map(|f| (f["t"].as_str().unwrap().to_string(), f["seq"].as_i64().unwrap())).collect();
        assert_eq!(seqs, [("event".into(), 7), ("event".into(), 8), ("reset".into(), 2), ("event".into(), 9)], "no synced for a catch-up");
        for t in [200, 300] {
            s.handle(t, Input::Overflowed);
            assert_eq!(effects(&mut s).len(), 1);
            s.handle(t + 1, Input::Done(Done::Replayed { rooms: vec![], calls: vec![], catch_up: true }));
        }
        s.handle(400, Input::Overflowed);
        assert_eq!(frames(&mut s), vec![serde_json::json!({"ws": "close", "code": 1013})], "the fourth in a minute");
        // after a quiet minute a reader gets its catch-ups back
        let mut s = synced(0);
        for t in [0, 20_000, 40_000, 70_000] {
            s.handle(t, Input::Overflowed);
            assert_eq!(effects(&mut s).len(), 1, "at {t}");
            s.handle(t + 1, Input::Done(Done::Replayed { rooms: vec![], calls: vec![], catch_up: true }));
        }
        assert!(!s.is_closed());
    }

    #[test]
    fn frames_dropped_during_a_replay_bring_a_catch_up_after_it() {
        let mut s = Session::new(&user(), 1, limits(), 0);
        s.handle(1, Input::Text(r#"{"t":"sync","since":{"3":0}}"#.into()));
        effects(&mut s);
        s.handle(2, Input::Overflowed);
        s.handle(3, Input::Done(Done::Replayed { rooms: vec![(RoomId(3), Resume::Events(vec![event(RoomId(3), Seq(1))]))], calls: vec![], catch_up: false }));
        assert_eq!(effects(&mut s), vec![Effect::Replay { rooms: vec![(RoomId(3), Seq(1))], catch_up: true }]);
    }

    #[test]
    fn call_signaling_has_its_own_budget() {
        let mut s = synced(0);
        for _ in 0..1001 {
            s.handle(1, Input::Text(r#"{"t":"call_leave","room":3}"#.into()));
        }
        assert_eq!(effects(&mut s).len(), 1000);
        assert_eq!(frames(&mut s)[0]["code"], "rate_limited");
        s.handle(2, Input::Text(r#"{"t":"send","id":"a","room":3,"body":"x"}"#.into()));
        assert_eq!(effects(&mut s).len(), 1, "chat writes unaffected");
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
    use crate::store::{Db, RoomId, Seq, UserId};

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
        let chat = Chat::new(db, Arc::new(crate::clock::SystemClock), ChatConfig::default());
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

    async fn post(chat: &Chat, room: RoomId, who: UserId, id: &str) -> Seq {
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
        assert_eq!((replayed["t"].as_str(), replayed["seq"].as_i64()), (Some("event"), Some(s2.0)));
        assert_eq!(b.recv().await["t"], "synced");
        // the queued live copy of s2 is dropped: exactly once
        let s3 = post(&chat, room, alice.id, "m3").await;
        assert_eq!(b.recv().await["seq"].as_i64(), Some(s3.0));
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
        // typing in a room Bob is not in is refused, not ignored
        b.send(json!({"t": "typing", "room": 999})).await;
        let e = b.recv().await;
        assert_eq!((e["code"].as_str(), e["room"].as_i64()), (Some("not_member"), Some(999)));
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
