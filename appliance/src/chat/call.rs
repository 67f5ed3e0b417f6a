//! Who is in which call, and the routing of signaling between them.
//!
//! Pure state behind a mutex: every verb returns [`Effects`] (frames to
//! publish, frames for one connection, durable writes) and the caller
//! applies them, so the rules are tested without sockets or a database.
//!
//! A participant is one browser tab, named by a `pid` the tab chooses, and
//! bound to the tab's WebSocket connection. When that connection drops the
//! participant is kept as `away` for [`AWAY_GRACE_MS`]: the media between
//! browsers does not depend on the WebSocket, and the tab rebinds the same
//! `pid` when it reconnects, so the call goes on (docs/protocol.md, calls).

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::frames::{CallState, Participant as WireParticipant, ServerFrame};
use super::hub::ConnId;
use crate::store::calls::{CallId, CallRoom, OpenCall};
use crate::store::rooms::Published;
use crate::store::{Millis, RoomId, UserId};

/// How long a participant whose connection dropped stays in the call.
pub const AWAY_GRACE_MS: Millis = 30_000;
/// How long a direct call rings before it counts as missed.
pub const RING_MS: Millis = 45_000;
/// How long a call left open by a restart waits for someone to come back.
pub const ORPHAN_GRACE_MS: Millis = 45_000;
/// Longest participant id a tab may choose.
pub const MAX_PID: usize = 40;

/// What a participant sends and shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MediaState {
    #[serde(default)]
    pub audio: bool,
    #[serde(default)]
    pub video: bool,
    /// Id of the MediaStream carrying the shared screen, while sharing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screen: Option<String>,
    #[serde(default)]
    pub hand: bool,
}

impl MediaState {
    pub fn check(&self) -> Result<(), &'static str> {
        match &self.screen {
            Some(s) if s.is_empty() || s.len() > 100 || s.chars().any(char::is_control) => {
                Err("screen: a stream id of 1 to 100 characters")
            }
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone)]
struct Participant {
    pid: String,
    user: UserId,
    conn: Option<ConnId>,
    away_since: Option<Millis>,
    joined_ms: Millis,
    media: MediaState,
    /// Signaling that arrived while away, delivered on rebind.
    held: Vec<ServerFrame>,
}

/// Signaling frames held for an away participant, at most.
pub const MAX_HELD: usize = 500;

#[derive(Debug)]
struct Call {
    id: CallId,
    started_ms: Millis,
    started_by: UserId,
    direct: bool,
    members: Vec<UserId>,
    participants: Vec<Participant>,
    /// Someone other than the caller joined (a direct call stops ringing).
    answered: bool,
    /// Set for a call restored after a restart, until someone rejoins.
    orphan_since: Option<Millis>,
}

/// Work for the caller after a verb.
#[derive(Debug, Default, PartialEq)]
pub struct Effects {
    /// Frames for every connection of the recipients.
    pub publish: Vec<Published>,
    /// Frames for one connection.
    pub direct: Vec<(UserId, ConnId, ServerFrame)>,
    /// Calls to close in the store, with their outcome.
    pub ended: Vec<(CallId, &'static str)>,
    /// (call, user): first time this user joined this call.
    pub joined: Vec<(CallId, UserId)>,
    /// (call, JSON [[pid, user], …]): who is in the call now, to save.
    pub roster: Vec<(CallId, String)>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        *self == Effects::default()
    }
}

/// Why a verb was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallError {
    /// No call in that room, or this connection is not in it.
    NotInCall,
    /// The call has reached its participant cap.
    Full(usize),
    /// The target participant is not in the call.
    NoSuchParticipant,
    /// Only the room's owners and admins may moderate.
    Forbidden,
    Invalid(&'static str),
}

impl CallError {
    pub fn message(&self) -> String {
        match self {
            CallError::NotInCall => "you are not in a call in this room".into(),
            CallError::Full(n) => format!("the call is full ({n} participants)"),
            CallError::NoSuchParticipant => "no such participant in this call".into(),
            CallError::Forbidden => "only the room's owners and admins can do this".into(),
            CallError::Invalid(why) => (*why).to_string(),
        }
    }
}

static VERSION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Every call in progress.
pub struct Calls {
    inner: Mutex<HashMap<RoomId, Call>>,
    max_participants: usize,
}

pub fn check_pid(pid: &str) -> Result<(), CallError> {
    let ok = !pid.is_empty()
        && pid.len() <= MAX_PID
        && pid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok { Ok(()) } else { Err(CallError::Invalid("pid: 1 to 40 letters, digits, '-' or '_'")) }
}

impl Calls {
    pub fn new(max_participants: usize) -> Calls {
        Calls { inner: Mutex::new(HashMap::new()), max_participants }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RoomId, Call>> {
        self.inner.lock().expect("calls poisoned")
    }

    /// True when `room` has a call in memory.
    pub fn has_call(&self, room: RoomId) -> bool {
        self.lock().contains_key(&room)
    }

    /// Takes in a call found open in the store (it was running when the
    /// server stopped, or was just started). Keeps a call already known.
    /// A restored call keeps its roster, every participant away until their
    /// tab rebinds, so nobody's peers are torn down by a restart.
    pub fn adopt(&self, open: &OpenCall, ctx: &CallRoom, orphan: bool, now: Millis) {
        self.lock().entry(open.room).or_insert_with(|| Call {
            id: open.id,
            started_ms: open.started_ms,
            started_by: open.started_by,
            direct: ctx.kind == crate::rules::RoomKind::Direct,
            members: ctx.members.clone(),
            participants: open
                .roster
                .iter()
                .filter(|(pid, user)| check_pid(pid).is_ok() && ctx.members.contains(user))
                .map(|(pid, user)| Participant {
                    pid: pid.clone(),
                    user: *user,
                    conn: None,
                    away_since: Some(now),
                    joined_ms: now,
                    media: MediaState::default(),
                    held: Vec::new(),
                })
                .collect(),
            answered: open.participants.iter().any(|&u| u != open.started_by),
            orphan_since: orphan.then_some(now),
        });
    }

    /// Joins (or, with the same `pid`, rejoins from a new connection).
    /// `replaces` names the pid this tab had before a reload.
    #[allow(clippy::too_many_arguments)]
    pub fn join(
        &self,
        room: RoomId,
        ctx: &CallRoom,
        pid: &str,
        replaces: Option<&str>,
        user: UserId,
        conn: ConnId,
        media: MediaState,
        now: Millis,
    ) -> Result<(Effects, ServerFrame), CallError> {
        check_pid(pid)?;
        media.check().map_err(CallError::Invalid)?;
        let mut calls = self.lock();
        let call = calls.get_mut(&room).ok_or(CallError::NotInCall)?;
        if call.participants.iter().any(|p| p.pid == pid && p.user != user) {
            return Err(CallError::Invalid("pid: taken by someone else"));
        }
        // Participants this tab supersedes: its pid before a reload, and any
        // other pid on this connection (a connection is in one participant).
        let superseded = |p: &Participant| {
            p.pid != pid && (p.conn == Some(conn) || (replaces == Some(p.pid.as_str()) && p.user == user))
        };
        let rejoin = call.participants.iter().any(|p| p.pid == pid);
        if !rejoin && call.participants.iter().filter(|p| !superseded(p)).count() >= self.max_participants {
            return Err(CallError::Full(self.max_participants));
        }
        call.members = ctx.members.clone();
        call.orphan_since = None;
        call.participants.retain(|p| !superseded(p));
        let mut fx = Effects::default();
        match call.participants.iter_mut().find(|p| p.pid == pid) {
            Some(p) => {
                p.conn = Some(conn);
                p.away_since = None;
                p.media = media;
                for frame in p.held.drain(..) {
                    fx.direct.push((user, conn, frame));
                }
            }
            None => {
                call.participants.push(Participant {
                    pid: pid.to_string(),
                    user,
                    conn: Some(conn),
                    away_since: None,
                    joined_ms: now,
                    media,
                    held: Vec::new(),
                });
                fx.joined.push((call.id, user));
            }
        }
        fx.roster.push(roster(call));
        if user != call.started_by {
            call.answered = true;
        }
        let joined = ServerFrame::CallJoined { room, call: call.id, pid: pid.to_string(), participants: participants(call) };
        fx.publish.push(state_frame(room, call, now));
        Ok((fx, joined))
    }

    /// The participant this connection is in `room`'s call.
    fn find(calls: &mut HashMap<RoomId, Call>, room: RoomId, conn: ConnId) -> Option<(&mut Call, usize)> {
        let call = calls.get_mut(&room)?;
        let i = call.participants.iter().position(|p| p.conn == Some(conn))?;
        Some((call, i))
    }

    /// Leaves; the last one out ends the call.
    pub fn leave(&self, room: RoomId, conn: ConnId, now: Millis) -> Result<Effects, CallError> {
        let mut calls = self.lock();
        let (call, i) = Self::find(&mut calls, room, conn).ok_or(CallError::NotInCall)?;
        call.participants.remove(i);
        let mut fx = Effects::default();
        Self::settle(&mut calls, room, now, &mut fx);
        Ok(fx)
    }

    /// After a change: ends a call nobody is in, else announces its state.
    fn settle(calls: &mut HashMap<RoomId, Call>, room: RoomId, now: Millis, fx: &mut Effects) {
        let Some(call) = calls.get(&room) else { return };
        if call.participants.is_empty() {
            let outcome = if call.direct && !call.answered { "missed" } else { "ended" };
            Self::end(calls, room, outcome, fx);
        } else {
            fx.roster.push(roster(call));
            fx.publish.push(state_frame(room, call, now));
        }
    }

    fn end(calls: &mut HashMap<RoomId, Call>, room: RoomId, outcome: &'static str, fx: &mut Effects) {
        let Some(call) = calls.remove(&room) else { return };
        fx.ended.push((call.id, outcome));
        // Whoever is still in (a declined ring) is told to hang up.
        let v = VERSION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let frame = ServerFrame::Call(CallState::Ended { room, call: (), ended: call.id, outcome: outcome.into(), v });
        fx.publish.push(Published { recipients: call.members, frame, event: None });
    }

    /// A connection closed: its participants go away (kept for the grace time).
    pub fn connection_gone(&self, conn: ConnId, now: Millis) -> Effects {
        let mut calls = self.lock();
        let mut fx = Effects::default();
        for (room, call) in calls.iter_mut() {
            let mut changed = false;
            for p in call.participants.iter_mut().filter(|p| p.conn == Some(conn)) {
                p.conn = None;
                p.away_since = Some(now);
                changed = true;
            }
            if changed {
                fx.publish.push(state_frame(*room, call, now));
            }
        }
        fx
    }

    /// Drops participants away too long, ends unanswered rings and calls
    /// nobody came back to after a restart. Run every second or two.
    pub fn sweep(&self, now: Millis) -> Effects {
        let mut calls = self.lock();
        let mut fx = Effects::default();
        let rooms: Vec<RoomId> = calls.keys().copied().collect();
        for room in rooms {
            let call = calls.get_mut(&room).expect("listed");
            let before = call.participants.len();
            call.participants.retain(|p| p.away_since.is_none_or(|t| now - t < AWAY_GRACE_MS));
            let ring_over = call.direct && !call.answered && now - call.started_ms >= RING_MS;
            let orphan_over = call.orphan_since.is_some_and(|t| now - t >= ORPHAN_GRACE_MS);
            if ring_over {
                Self::end(&mut calls, room, "missed", &mut fx);
            } else if orphan_over || call.participants.len() != before {
                Self::settle(&mut calls, room, now, &mut fx);
            }
        }
        fx
    }

    /// The callee turns a ringing direct call down.
    pub fn decline(&self, room: RoomId, user: UserId) -> Result<Effects, CallError> {
        let mut calls = self.lock();
        let call = calls.get(&room).ok_or(CallError::NotInCall)?;
        if !call.members.contains(&user) {
            return Err(CallError::NotInCall);
        }
        let mut fx = Effects::default();
        if call.direct && !call.answered && user != call.started_by {
            Self::end(&mut calls, room, "declined", &mut fx);
        }
        Ok(fx)
    }

    /// Updates what this participant sends (mute, camera, screen, hand).
    pub fn set_media(&self, room: RoomId, conn: ConnId, media: MediaState, now: Millis) -> Result<Effects, CallError> {
        media.check().map_err(CallError::Invalid)?;
        let mut calls = self.lock();
        let (call, i) = Self::find(&mut calls, room, conn).ok_or(CallError::NotInCall)?;
        call.participants[i].media = media;
        Ok(Effects { publish: vec![state_frame(room, call, now)], ..Effects::default() })
    }

    /// Routes one signaling message (SDP or ICE candidate) from this
    /// connection's participant to participant `to` of the same call.
    pub fn signal(&self, room: RoomId, conn: ConnId, to: &str, data: &serde_json::Value) -> Result<Effects, CallError> {
        let mut calls = self.lock();
        let (call, i) = Self::find(&mut calls, room, conn).ok_or(CallError::NotInCall)?;
        let from = call.participants[i].pid.clone();
        let target = call.participants.iter_mut().find(|p| p.pid == to).ok_or(CallError::NoSuchParticipant)?;
        let mut fx = Effects::default();
        let frame = ServerFrame::CallSignal { room, from, data: data.clone() };
        match target.conn {
            Some(c) => fx.direct.push((target.user, c, frame)),
            // Away (reconnecting): held and delivered in order when it is back.
            None if target.held.len() < MAX_HELD => target.held.push(frame),
            None => {}
        }
        Ok(fx)
    }

    /// A room owner or admin mutes or removes a participant.
    pub fn moderate(
        &self,
        room: RoomId,
        by: UserId,
        may_moderate: bool,
        target: &str,
        action: ModAction,
        now: Millis,
    ) -> Result<Effects, CallError> {
        if !may_moderate {
            return Err(CallError::Forbidden);
        }
        let mut calls = self.lock();
        let call = calls.get_mut(&room).ok_or(CallError::NotInCall)?;
        let i = call.participants.iter().position(|p| p.pid == target).ok_or(CallError::NoSuchParticipant)?;
        let mut fx = Effects::default();
        let p = &mut call.participants[i];
        if let Some(c) = p.conn {
            fx.direct.push((p.user, c, ServerFrame::CallModerated { room, action, by }));
        }
        match action {
            ModAction::Mute => {
                p.media.audio = false;
                fx.publish.push(state_frame(room, call, now));
            }
            ModAction::Remove => {
                call.participants.remove(i);
                Self::settle(&mut calls, room, now, &mut fx);
            }
        }
        Ok(fx)
    }

    /// Someone came into or left a room with a call: who sees the call
    /// follows, and a newcomer is sent it now (a guest let in mid-call sees
    /// it at once, without waiting for the next change).
    pub fn membership(&self, room: RoomId, user: UserId, joined: bool, now: Millis) -> Effects {
        let mut calls = self.lock();
        let mut fx = Effects::default();
        if let Some(call) = calls.get_mut(&room) {
            call.members.retain(|m| *m != user);
            if joined {
                call.members.push(user);
                let mut frame = state_frame(room, call, now);
                frame.recipients = vec![user];
                fx.publish.push(frame);
            }
        }
        fx
    }

    /// The state frames of the calls in rooms `user` belongs to (on sync).
    pub fn frames_for(&self, user: UserId, now: Millis) -> Vec<ServerFrame> {
        let calls = self.lock();
        calls.iter().filter(|(_, c)| c.members.contains(&user)).map(|(room, c)| state_frame(*room, c, now).frame).collect()
    }

    /// Calls and participants right now (for /metrics).
    pub fn counts(&self) -> (usize, usize) {
        let calls = self.lock();
        (calls.len(), calls.values().map(|c| c.participants.len()).sum())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModAction {
    Mute,
    Remove,
}

fn roster(call: &Call) -> (CallId, String) {
    let list: Vec<(&str, UserId)> = call.participants.iter().map(|p| (p.pid.as_str(), p.user)).collect();
    (call.id, serde_json::to_string(&list).expect("serializes"))
}

fn participants(call: &Call) -> Vec<WireParticipant> {
    call.participants.iter().map(|p| WireParticipant::new(&p.pid, p.user, p.joined_ms, p.away_since.is_some(), &p.media)).collect()
}

/// The `call` frame: the whole state of one call, for every room member.
/// `version` orders the frames of all calls: a client keeps the newest.
fn state_frame(room: RoomId, call: &Call, now: Millis) -> Published {
    let v = VERSION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ring = call.direct && !call.answered && now - call.started_ms < RING_MS;
    let frame = ServerFrame::Call(CallState::Live {
        room,
        call: call.id,
        started: call.started_ms,
        by: call.started_by,
        ring,
        v,
        participants: participants(call),
    });
    Published { recipients: call.members.clone(), frame, event: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ALICE: UserId = UserId(1);
    const BOB: UserId = UserId(2);
    const CAROL: UserId = UserId(3);

    fn ctx(kind: &str) -> CallRoom {
        CallRoom { kind: crate::rules::RoomKind::parse(kind), role: crate::rules::RoomRole::Member, archived: false, members: vec![ALICE, BOB, CAROL] }
    }

    fn started(calls: &Calls, kind: &str, now: Millis) -> CallRoom {
        let c = ctx(kind);
        let open = OpenCall { id: 7, room: RoomId(1), started_by: ALICE, started_ms: now, participants: vec![ALICE], roster: vec![] };
        calls.adopt(&open, &c, false, now);
        c
    }

    fn on() -> MediaState {
        MediaState { audio: true, video: true, screen: None, hand: false }
    }

    fn state(fx: &Effects) -> serde_json::Value {
        serde_json::to_value(&fx.publish.last().expect("a frame").frame).unwrap()
    }

    #[test]
    fn join_announce_signal_and_last_one_out_ends() {
        let calls = Calls::new(8);
        let c = started(&calls, "group", 0);
        let (fx, joined) = calls.join(RoomId(1), &c, "a1", None, ALICE, 100, on(), 0).unwrap();
        assert_eq!(fx.joined, vec![(7, ALICE)]);
        assert_eq!(serde_json::to_value(&joined).unwrap()["participants"][0]["pid"], "a1");
        let (fx, _) = calls.join(RoomId(1), &c, "b1", None, BOB, 200, on(), 10).unwrap();
        let s = state(&fx);
        assert_eq!(s["participants"].as_array().unwrap().len(), 2);
        assert_eq!(s["ring"], false);
        assert_eq!(fx.publish[0].recipients, vec![ALICE, BOB, CAROL]);
        // signaling goes to exactly the target's connection, naming the sender
        let fx = calls.signal(RoomId(1), 100, "b1", &json!({"description": {"type": "offer", "sdp": "x"}})).unwrap();
        assert_eq!(fx.direct.len(), 1);
        assert_eq!((fx.direct[0].0, fx.direct[0].1), (BOB, 200));
        assert!(fx.direct[0].2.to_json().contains("\"from\":\"a1\""));
        assert_eq!(calls.signal(RoomId(1), 100, "zz", &json!({})), Err(CallError::NoSuchParticipant));
        // a connection that is not in the call can neither signal nor set state
        assert_eq!(calls.signal(RoomId(1), 300, "a1", &json!({})), Err(CallError::NotInCall));
        assert_eq!(calls.set_media(RoomId(1), 300, on(), 0), Err(CallError::NotInCall));
        let fx = calls.leave(RoomId(1), 100, 20).unwrap();
        assert!(fx.ended.is_empty());
        let fx = calls.leave(RoomId(1), 200, 30).unwrap();
        assert_eq!(fx.ended, vec![(7, "ended")]);
        assert!(!calls.has_call(RoomId(1)));
        assert_eq!(calls.leave(RoomId(1), 200, 40), Err(CallError::NotInCall));
    }

    #[test]
    fn the_cap_is_enforced_and_a_rejoin_is_not_a_new_participant() {
        let calls = Calls::new(2);
        let c = started(&calls, "group", 0);
        calls.join(RoomId(1), &c, "a1", None, ALICE, 100, on(), 0).unwrap();
        calls.join(RoomId(1), &c, "b1", None, BOB, 200, on(), 0).unwrap();
        assert_eq!(calls.join(RoomId(1), &c, "c1", None, CAROL, 300, on(), 0).unwrap_err(), CallError::Full(2));
        // Bob's socket drops; he is away, still counted, then rebinds
        let fx = calls.connection_gone(200, 1000);
        assert_eq!(state(&fx)["participants"][1]["away"], true);
        assert_eq!(calls.signal(RoomId(1), 100, "b1", &json!({"n": 1})).unwrap().direct, vec![], "held while away");
        calls.signal(RoomId(1), 100, "b1", &json!({"n": 2})).unwrap();
        let (fx, _) = calls.join(RoomId(1), &c, "b1", None, BOB, 201, on(), 2000).unwrap();
        assert!(fx.joined.is_empty(), "a rejoin is not a new join");
        let held: Vec<_> = fx.direct.iter().map(|(u, c, f)| (*u, *c, f.to_json().contains("\"n\":1"), f.to_json().contains("\"n\":2"))).collect();
        assert_eq!(held, vec![(BOB, 201, true, false), (BOB, 201, false, true)], "delivered in order on rebind");
        assert_eq!(state(&fx)["participants"][1]["away"], false);
        // someone else cannot take Bob's pid
        assert!(matches!(calls.join(RoomId(1), &c, "b1", None, CAROL, 300, on(), 0), Err(CallError::Invalid(_))));
        // a reloaded tab replaces its old pid instead of counting twice
        calls.join(RoomId(1), &c, "b2", Some("b1"), BOB, 202, on(), 3000).unwrap();
        assert_eq!(calls.counts(), (1, 2));
    }

    #[test]
    fn away_participants_expire_and_an_orphan_call_ends() {
        let calls = Calls::new(8);
        let c = started(&calls, "group", 0);
        calls.join(RoomId(1), &c, "a1", None, ALICE, 100, on(), 0).unwrap();
        calls.join(RoomId(1), &c, "b1", None, BOB, 200, on(), 0).unwrap();
        calls.connection_gone(200, 1000);
        assert!(calls.sweep(1000 + AWAY_GRACE_MS - 1).is_empty());
        let fx = calls.sweep(1000 + AWAY_GRACE_MS);
        assert_eq!(state(&fx)["participants"].as_array().unwrap().len(), 1);
        calls.connection_gone(100, 50_000);
        let fx = calls.sweep(50_000 + AWAY_GRACE_MS);
        assert_eq!(fx.ended, vec![(7, "ended")]);

        // restored after a restart: waits for someone, then ends
        let open =
            OpenCall { id: 9, room: RoomId(2), started_by: ALICE, started_ms: 0, participants: vec![ALICE, BOB], roster: vec![] };
        calls.adopt(&open, &c, true, 100_000);
        assert!(calls.sweep(100_000 + ORPHAN_GRACE_MS - 1).is_empty());
        assert_eq!(calls.sweep(100_000 + ORPHAN_GRACE_MS).ended, vec![(9, "ended")]);
        // ... unless someone rejoins in time; the saved roster comes back
        // as away participants, so tabs rebind without losing their peers
        let roster = vec![("a1".to_string(), ALICE), ("b1".to_string(), BOB), ("bad pid".to_string(), BOB)];
        calls.adopt(&OpenCall { id: 10, room: RoomId(3), roster, ..open }, &c, true, 200_000);
        assert_eq!(calls.frames_for(ALICE, 200_000).len(), 1);
        let (fx, _) = calls.join(RoomId(3), &c, "a1", None, ALICE, 100, on(), 200_001).unwrap();
        let s = state(&fx);
        assert_eq!(s["participants"].as_array().unwrap().len(), 2);
        assert_eq!((s["participants"][0]["away"].as_bool(), s["participants"][1]["away"].as_bool()), (Some(false), Some(true)));
        assert_eq!(fx.roster, vec![(10, r#"[["a1",1],["b1",2]]"#.to_string())]);
        let fx = calls.sweep(200_000 + AWAY_GRACE_MS);
        assert!(fx.ended.is_empty());
        assert_eq!(state(&fx)["participants"].as_array().unwrap().len(), 1, "Bob never came back");
    }

    #[test]
    fn a_member_who_comes_in_mid_call_is_sent_the_call_and_one_who_leaves_is_not() {
        let calls = Calls::new(8);
        started(&calls, "group", 0);
        let dana = UserId(9);
        assert!(calls.frames_for(dana, 1).is_empty());
        let fx = calls.membership(RoomId(1), dana, true, 2);
        assert_eq!(fx.publish.len(), 1);
        assert_eq!(fx.publish[0].recipients, vec![dana]);
        assert_eq!(calls.frames_for(dana, 3).len(), 1);
        assert!(calls.membership(RoomId(1), dana, false, 4).publish.is_empty());
        assert!(calls.frames_for(dana, 5).is_empty());
        assert!(calls.membership(RoomId(2), dana, true, 6).is_empty(), "no call there");
    }

    #[test]
    fn a_direct_call_rings_then_is_missed_declined_or_answered() {
        let calls = Calls::new(8);
        let c = started(&calls, "direct", 0);
        let (fx, _) = calls.join(RoomId(1), &c, "a1", None, ALICE, 100, on(), 0).unwrap();
        assert_eq!(state(&fx)["ring"], true);
        assert!(calls.sweep(RING_MS - 1).ended.is_empty());
        assert_eq!(calls.sweep(RING_MS).ended, vec![(7, "missed")]);

        let c = started(&calls, "direct", 0);
        calls.join(RoomId(1), &c, "a1", None, ALICE, 100, on(), 0).unwrap();
        assert!(calls.decline(RoomId(1), ALICE).unwrap().ended.is_empty(), "the caller cannot decline");
        let fx = calls.decline(RoomId(1), BOB).unwrap();
        assert_eq!(fx.ended, vec![(7, "declined")]);
        assert!(fx.publish[0].frame.to_json().contains("\"outcome\":\"declined\""));

        let c = started(&calls, "direct", 0);
        calls.join(RoomId(1), &c, "a1", None, ALICE, 100, on(), 0).unwrap();
        let (fx, _) = calls.join(RoomId(1), &c, "b1", None, BOB, 200, on(), 5).unwrap();
        assert_eq!(state(&fx)["ring"], false);
        assert!(calls.sweep(RING_MS * 2).ended.is_empty(), "an answered call does not expire");
        assert!(calls.decline(RoomId(1), BOB).unwrap().is_empty());
    }

    #[test]
    fn moderation_needs_the_right_and_reaches_the_target() {
        let calls = Calls::new(8);
        let c = started(&calls, "group", 0);
        calls.join(RoomId(1), &c, "a1", None, ALICE, 100, on(), 0).unwrap();
        calls.join(RoomId(1), &c, "b1", None, BOB, 200, on(), 0).unwrap();
        assert_eq!(calls.moderate(RoomId(1), BOB, false, "a1", ModAction::Mute, 0), Err(CallError::Forbidden));
        let fx = calls.moderate(RoomId(1), ALICE, true, "b1", ModAction::Mute, 0).unwrap();
        assert_eq!((fx.direct[0].0, fx.direct[0].1), (BOB, 200));
        assert_eq!(state(&fx)["participants"][1]["audio"], false);
        let fx = calls.moderate(RoomId(1), ALICE, true, "b1", ModAction::Remove, 0).unwrap();
        assert!(fx.direct[0].2.to_json().contains("\"remove\""));
        assert_eq!(state(&fx)["participants"].as_array().unwrap().len(), 1);
        assert_eq!(calls.frames_for(CAROL, 0).len(), 1);
        assert_eq!(calls.frames_for(UserId(99), 0).len(), 0, "only members see a call");
    }

    #[test]
    fn bad_ids_and_states_are_refused() {
        let calls = Calls::new(8);
        let c = started(&calls, "group", 0);
        for pid in ["", "a b", "é", &"x".repeat(41)] {
            assert!(matches!(calls.join(RoomId(1), &c, pid, None, ALICE, 1, on(), 0), Err(CallError::Invalid(_))), "{pid:?}");
        }
        let bad = MediaState { screen: Some(String::new()), ..on() };
        assert!(matches!(calls.join(RoomId(1), &c, "a1", None, ALICE, 1, bad, 0), Err(CallError::Invalid(_))));
        assert_eq!(calls.join(RoomId(2), &c, "a1", None, ALICE, 1, on(), 0).unwrap_err(), CallError::NotInCall);
        // a refused join changes nothing: Alice keeps her place
        calls.join(RoomId(1), &c, "a1", None, ALICE, 1, on(), 0).unwrap();
        calls.join(RoomId(1), &c, "b1", None, BOB, 2, on(), 0).unwrap();
        assert!(matches!(calls.join(RoomId(1), &c, "b1", None, ALICE, 1, on(), 0), Err(CallError::Invalid(_))));
        assert_eq!(calls.counts(), (1, 2));
        assert!(calls.signal(RoomId(1), 1, "b1", &json!({})).is_ok(), "still bound to her connection");
    }
}
