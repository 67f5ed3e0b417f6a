//! Chat: the store's room verbs plus in-process fan-out, shared by the
//! WebSocket sessions and the REST handlers.

pub mod hub;
pub mod protocol;
pub mod session;

use std::sync::Arc;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::Clock;
use crate::config::ChatConfig;
use crate::store::rooms::Published;
use crate::store::{Db, Millis, StoreError};
pub use hub::Hub;

/// Everything chat needs. Cheap to clone.
#[derive(Clone)]
pub struct Chat {
    pub db: Db,
    pub hub: Arc<Hub>,
    pub clock: Arc<dyn Clock>,
    pub config: ChatConfig,
}

impl Chat {
    /// Queues a write whose verb returns frames to publish; the frames reach
    /// the hub right after the commit, in commit order.
    pub fn submit<T, F>(&self, f: F) -> oneshot::Receiver<Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, Millis) -> Result<(T, Vec<Published>), StoreError> + Send + 'static,
    {
        let hub = self.hub.clone();
        let now = self.clock.now_ms();
        self.db.submit(move |ctx| {
            let (value, published) = f(ctx.conn, now)?;
            if !published.is_empty() {
                ctx.after_commit(move || {
                    for p in &published {
                        hub.publish(p);
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
