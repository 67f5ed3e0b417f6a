//! In-process fan-out: which connections each user has, and delivery of
//! committed frames to them. Replaces Redis + notify_push.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;

use super::frames::ServerFrame;
use crate::store::rooms::Published;
use crate::store::{RoomId, Seq, UserId};

/// Frames a connection can have waiting. Beyond, frames for it are dropped
/// and it is told so ([`Registration::overflowed`]): it catches up from the
/// store (nothing is lost), and one slow reader never holds back the others.
pub const QUEUE: usize = 4096;

/// What the hub hands a connection.
#[derive(Debug, Clone)]
pub enum Out {
    /// A frame, already serialized; `event` names the room event it
    /// carries, if any.
    Frame { text: Utf8Bytes, event: Option<(RoomId, Seq)> },
    /// Close the connection with this WebSocket close code and reason.
    Close(u16, &'static str),
}

pub type ConnId = u64;

struct Conn {
    id: ConnId,
    tx: mpsc::Sender<Out>,
    overflowed: Arc<AtomicBool>,
}

/// One registered connection: its frames, and the flag the hub raises when
/// it had to drop some.
pub struct Registration {
    pub id: ConnId,
    pub frames: mpsc::Receiver<Out>,
    pub overflowed: Arc<AtomicBool>,
}

#[derive(Default)]
pub struct Hub {
    conns: RwLock<HashMap<UserId, Vec<Conn>>>,
    next: AtomicU64,
}

impl Hub {
    pub fn new() -> Hub {
        Hub::default()
    }

    /// Adds a connection of `user`.
    pub fn register(&self, user: UserId) -> Registration {
        let (tx, frames) = mpsc::channel(QUEUE);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let overflowed = Arc::new(AtomicBool::new(false));
        let conn = Conn { id, tx, overflowed: overflowed.clone() };
        self.conns.write().expect("hub poisoned").entry(user).or_default().push(conn);
        Registration { id, frames, overflowed }
    }

    pub fn unregister(&self, user: UserId, id: ConnId) {
        let mut conns = self.conns.write().expect("hub poisoned");
        if let Some(list) = conns.get_mut(&user) {
            list.retain(|c| c.id != id);
            if list.is_empty() {
                conns.remove(&user);
            }
        }
    }

    fn deliver(conn: &Conn, out: Out) {
        if let Err(mpsc::error::TrySendError::Full(_)) = conn.tx.try_send(out)
            && !conn.overflowed.swap(true, Ordering::Relaxed) {
                tracing::info!(conn = conn.id, "connection behind: it will catch up from the store");
            }
    }

    /// Delivers a committed frame to every connection of its recipients,
    /// serialized once. Never blocks.
    pub fn publish(&self, p: &Published) {
        let text = Utf8Bytes::from(p.frame.to_json());
        let conns = self.conns.read().expect("hub poisoned");
        for user in &p.recipients {
            for c in conns.get(user).into_iter().flatten() {
                Self::deliver(c, Out::Frame { text: text.clone(), event: p.event });
            }
        }
    }

    /// Delivers a frame to one connection (call signaling).
    pub fn send_to(&self, user: UserId, conn: ConnId, frame: &ServerFrame) {
        let conns = self.conns.read().expect("hub poisoned");
        if let Some(c) = conns.get(&user).into_iter().flatten().find(|c| c.id == conn) {
            Self::deliver(c, Out::Frame { text: Utf8Bytes::from(frame.to_json()), event: None });
        }
    }

    /// Closes every connection of a user (disabled, logged out everywhere).
    pub fn disconnect_user(&self, user: UserId, code: u16, reason: &'static str) {
        let list = self.conns.write().expect("hub poisoned").remove(&user);
        for c in list.into_iter().flatten() {
            let _ = c.tx.try_send(Out::Close(code, reason));
        }
    }

    /// Connections currently open.
    pub fn connection_count(&self) -> usize {
        self.conns.read().expect("hub poisoned").values().map(Vec::len).sum()
    }

    /// Users with at least one open connection.
    pub fn online_users(&self) -> Vec<UserId> {
        self.conns.read().expect("hub poisoned").keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(to: Vec<UserId>, seq: Seq) -> Published {
        Published { recipients: to, frame: ServerFrame::Read { room: RoomId(1), seq }, event: Some((RoomId(1), seq)) }
    }

    #[tokio::test]
    async fn delivers_to_every_connection_of_each_recipient() {
        let hub = Hub::new();
        let mut a1 = hub.register(UserId(1));
        let mut a2 = hub.register(UserId(1));
        let mut b = hub.register(UserId(2));
        let mut c = hub.register(UserId(3));
        hub.publish(&published(vec![UserId(1), UserId(2)], Seq(7)));
        for r in [&mut a1, &mut a2, &mut b] {
            assert!(matches!(r.frames.try_recv(), Ok(Out::Frame { event: Some((RoomId(1), Seq(7))), .. })));
        }
        assert!(c.frames.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_full_queue_is_flagged_not_waited_for_and_the_connection_stays() {
        let hub = Hub::new();
        let slow = hub.register(UserId(1));
        let mut fast = hub.register(UserId(2));
        for seq in 0..(QUEUE as i64 + 10) {
            hub.publish(&published(vec![UserId(1), UserId(2)], Seq(seq)));
            while fast.frames.try_recv().is_ok() {}
        }
        assert_eq!(hub.connection_count(), 2, "nobody is dropped");
        assert!(slow.overflowed.load(Ordering::Relaxed));
        assert!(!fast.overflowed.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn disconnect_user_closes_all_their_connections() {
        let hub = Hub::new();
        let mut a = hub.register(UserId(1));
        hub.disconnect_user(UserId(1), 4001, "disabled");
        assert!(matches!(a.frames.recv().await, Some(Out::Close(4001, _))));
        assert!(a.frames.recv().await.is_none());
        assert_eq!(hub.connection_count(), 0);
    }
}
