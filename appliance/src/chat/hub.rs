//! In-process fan-out: which connections each user has, and delivery of
//! committed frames to them. Replaces Redis + notify_push.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;

use crate::store::rooms::Published;
use crate::store::{RoomId, Seq, UserId};

/// Frames a connection can queue before it counts as lagging. A lagging
/// connection is closed; its client resumes from its last sequence, so
/// nothing is lost, and one slow reader never holds back the others.
pub const QUEUE: usize = 4096;

/// What the hub hands a connection.
#[derive(Debug, Clone)]
pub enum Out {
    /// A frame; `event` names the room event it carries, if any.
    Frame { text: Utf8Bytes, event: Option<(RoomId, Seq)> },
    /// Close the connection with this WebSocket close code and reason.
    Close(u16, &'static str),
}

pub type ConnId = u64;

/// The open connections of one user.
type UserConns = Vec<(ConnId, mpsc::Sender<Out>)>;

#[derive(Default)]
pub struct Hub {
    conns: RwLock<HashMap<UserId, UserConns>>,
    next: AtomicU64,
}

impl Hub {
    pub fn new() -> Hub {
        Hub::default()
    }

    /// Adds a connection of `user`; frames for the user arrive on the receiver.
    pub fn register(&self, user: UserId) -> (ConnId, mpsc::Receiver<Out>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.conns.write().expect("hub poisoned").entry(user).or_default().push((id, tx));
        (id, rx)
    }

    pub fn unregister(&self, user: UserId, id: ConnId) {
        let mut conns = self.conns.write().expect("hub poisoned");
        if let Some(list) = conns.get_mut(&user) {
            list.retain(|(c, _)| *c != id);
            if list.is_empty() {
                conns.remove(&user);
            }
        }
    }

    /// Delivers a committed frame to every connection of its recipients.
    /// Never blocks: a full queue drops that connection (it will resume).
    pub fn publish(&self, p: &Published) {
        let text = Utf8Bytes::from(p.frame.to_string());
        let mut lagging = Vec::new();
        {
            let conns = self.conns.read().expect("hub poisoned");
            for user in &p.recipients {
                for (id, tx) in conns.get(user).into_iter().flatten() {
                    let out = Out::Frame { text: text.clone(), event: p.event };
                    if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(out) {
                        lagging.push((*user, *id));
                    }
                }
            }
        }
        for (user, id) in lagging {
            tracing::info!(user, conn = id, "connection lagging: closed so that it resumes");
            self.unregister(user, id);
        }
    }

    /// Delivers a frame to one connection (call signaling). A full queue
    /// drops the frame: the call re-syncs, the chat is not held back.
    pub fn send_to(&self, user: UserId, conn: ConnId, text: &str) {
        let conns = self.conns.read().expect("hub poisoned");
        if let Some((_, tx)) = conns.get(&user).into_iter().flatten().find(|(c, _)| *c == conn) {
            let _ = tx.try_send(Out::Frame { text: Utf8Bytes::from(text.to_string()), event: None });
        }
    }

    /// Closes every connection of a user (disabled, logged out everywhere).
    pub fn disconnect_user(&self, user: UserId, code: u16, reason: &'static str) {
        let list = self.conns.write().expect("hub poisoned").remove(&user);
        for (_, tx) in list.into_iter().flatten() {
            let _ = tx.try_send(Out::Close(code, reason));
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
        Published { recipients: to, frame: format!("{{\"seq\":{seq}}}").into(), event: Some((1, seq)) }
    }

    #[tokio::test]
    async fn delivers_to_every_connection_of_each_recipient() {
        let hub = Hub::new();
        let (_, mut a1) = hub.register(1);
        let (_, mut a2) = hub.register(1);
        let (_, mut b) = hub.register(2);
        let (_, mut c) = hub.register(3);
        hub.publish(&published(vec![1, 2], 7));
        for rx in [&mut a1, &mut a2, &mut b] {
            assert!(matches!(rx.try_recv(), Ok(Out::Frame { event: Some((1, 7)), .. })));
        }
        assert!(c.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_lagging_connection_is_dropped_not_waited_for() {
        let hub = Hub::new();
        let (_, mut slow) = hub.register(1);
        let (_, mut fast) = hub.register(2);
        for seq in 0..(QUEUE as i64 + 10) {
            hub.publish(&published(vec![1, 2], seq));
            while fast.try_recv().is_ok() {}
        }
        assert_eq!(hub.connection_count(), 1);
        let mut n = 0;
        while slow.recv().await.is_some() {
            n += 1;
        }
        assert_eq!(n, QUEUE, "queued frames are still delivered, then the stream ends");
    }

    #[tokio::test]
    async fn disconnect_user_closes_all_their_connections() {
        let hub = Hub::new();
        let (_, mut a) = hub.register(1);
        hub.disconnect_user(1, 4001, "disabled");
        assert!(matches!(a.recv().await, Some(Out::Close(4001, _))));
        assert!(a.recv().await.is_none());
        assert_eq!(hub.connection_count(), 0);
    }
}
