//! Chat: the store's room verbs plus in-process fan-out, shared by the
//! WebSocket sessions and the REST handlers.

pub mod call;
pub mod frames;
pub mod hub;
pub mod protocol;
pub mod session;

use std::sync::Arc;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::clock::Clock;
use crate::config::ChatConfig;
use crate::store::rooms::{EventBody, Published};
use crate::store::{Db, Millis, StoreError, calls};
pub use hub::Hub;

/// Everything chat needs. Cheap to clone.
#[derive(Clone)]
pub struct Chat {
    pub db: Db,
    pub hub: Arc<Hub>,
    pub calls: Arc<call::Calls>,
    pub clock: Arc<dyn Clock>,
    pub config: ChatConfig,
}

impl Chat {
    pub fn new(db: Db, clock: Arc<dyn Clock>, config: ChatConfig) -> Chat {
        let calls = Arc::new(call::Calls::new(config.max_call_participants));
        Chat { db, hub: Arc::new(Hub::new()), calls, clock, config }
    }

    /// Carries out what a call verb decided: frames now, store writes queued
    /// (their room events are published after commit).
    pub fn apply(&self, fx: call::Effects) {
        for p in &fx.publish {
            self.hub.publish(p);
        }
        for (user, conn, frame) in &fx.direct {
            self.hub.send_to(*user, *conn, frame);
        }
        for (call, user) in fx.joined {
            drop(self.submit(move |c, _| Ok((calls::record_join(c, call, user)?, vec![]))));
        }
        for (call, roster) in fx.roster {
            drop(self.submit(move |c, _| Ok((calls::save_roster(c, call, &roster)?, vec![]))));
        }
        for (call, outcome) in fx.ended {
            drop(self.submit(move |c, now| Ok(((), calls::end(c, call, outcome, now)?.into_iter().collect()))));
        }
    }

    /// Picks up the calls a previous run left open; they end unless someone
    /// rejoins within [`call::ORPHAN_GRACE_MS`].
    pub async fn restore_calls(&self) -> Result<usize, StoreError> {
        let open = self
            .db
            .read(|c| {
                let mut out = Vec::new();
                for call in calls::open_calls(c)? {
                    let ctx = calls::call_room(c, call.room, call.started_by);
                    out.push((call, ctx));
                }
                Ok(out)
            })
            .await?;
        let now = self.clock.now_ms();
        let n = open.len();
        for (call, ctx) in open {
            match ctx {
                Ok(ctx) => self.calls.adopt(&call, &ctx, true, now),
                // The starter left the room meanwhile: close it now.
                Err(_) => self.apply(call::Effects { ended: vec![(call.id, "ended")], ..Default::default() }),
            }
        }
        Ok(n)
    }

    /// Runs the call sweeper (away participants, unanswered rings) forever.
    pub async fn sweep_calls(self) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            let fx = self.calls.sweep(self.clock.now_ms());
            if !fx.is_empty() {
                self.apply(fx);
            }
        }
    }

    /// Queues a write whose verb returns frames to publish; the frames reach
    /// the hub right after the commit, in commit order.
    pub fn submit<T, F>(&self, f: F) -> oneshot::Receiver<Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, Millis) -> Result<(T, Vec<Published>), StoreError> + Send + 'static,
    {
        let (hub, calls) = (self.hub.clone(), self.calls.clone());
        let now = self.clock.now_ms();
        self.db.submit(move |ctx| {
            let (value, published) = f(ctx.conn, now)?;
            if !published.is_empty() {
                ctx.after_commit(move || {
                    for p in &published {
                        hub.publish(p);
                        // who sees a room's call follows its membership
                        if let frames::ServerFrame::Event(frames::Event { room, body, .. }) = &p.frame {
                            let change = match body {
                                EventBody::Join { user } => Some((*user, true)),
                                EventBody::Leave { user } => Some((*user, false)),
                                _ => None,
                            };
                            if let Some((user, joined)) = change {
                                for q in calls.membership(*room, user, joined, now).publish {
                                    hub.publish(&q);
                                }
                            }
                        }
                    }
                });
            }
            Ok(value)
        })
    }

    /// [`Chat::submit`] and wait for the commit.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, Millis) -> Result<(T, Vec<Published>), StoreError> + Send + 'static,
    {
        self.submit(f).await.unwrap_or(Err(StoreError::Closed))
    }
}
