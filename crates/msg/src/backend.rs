//! What the backends (nng, Redis, AMQP, NATS) share with the front: the error type, the
//! [`Backend`] trait they implement, the local subscribers they deliver into ([`Shared`]) and the
//! reconnect delay. In its own file so that the front ([`crate::PubSub`]) can build the backends
//! and the backends can use these without depending on the front.

use parking_lot::{Mutex, MutexGuard};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

/// Why a pub/sub call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MsgError {
    /// The caller's fault: a key that no backend can carry.
    #[error("bad key {0:?}: 1 to 255 letters, digits and _ - : @ . (no leading, trailing or double dot)")]
    BadKey(String),
    /// The backend is not reachable or refused the operation; a retry may help.
    #[error("pub/sub unavailable: {0}")]
    Unavailable(String),
    /// The configuration names something unusable (a bad URL); retrying will not help.
    #[error("pub/sub configuration: {0}")]
    Config(String),
}

/// A boxed future returned by backends.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// One message as a subscriber receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub key: String,
    /// What the publisher sent (JSON text for the events bkjs publishes).
    pub data: String,
}

/// What a backend does for the front. Subscriptions are idempotent per key: the front calls
/// `subscribe` when a key gets its first local subscriber and `unsubscribe` when it loses its
/// last; a backend that reconnects subscribes again to [`Shared::keys`].
pub(crate) trait Backend: Send + Sync {
    fn subscribe(&self, key: &str);
    fn unsubscribe(&self, key: &str);
    fn publish(&self, key: &str, data: &str) -> BoxFuture<Result<(), MsgError>>;
    /// A short description for logs and stats (`nng ipc:///...`, `redis://...`).
    fn describe(&self) -> String;
}

/// Local subscribers by key: (subscription id, its queue).
pub(crate) type Subscribers = HashMap<String, Vec<(u64, mpsc::Sender<Message>)>>;

/// The local subscribers, shared by the front and its backend (which delivers into it).
#[derive(Default)]
pub(crate) struct Shared {
    subs: Mutex<Subscribers>,
    pub(crate) next_id: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) dropped: AtomicU64,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Subscribers> {
        self.subs.lock()
    }

    /// Every key some local subscriber wants (what a reconnected backend subscribes to).
    pub(crate) fn keys(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Hands a message that arrived from the backend to every local subscriber of its key; a
    /// subscriber whose queue is full loses it.
    pub(crate) fn deliver(&self, key: &str, data: &str) {
        let subs = self.lock();
        let Some(list) = subs.get(key) else { return };
        for (_, tx) in list {
            let m = Message {
                key: key.to_string(),
                data: data.to_string(),
            };
            match tx.try_send(m) {
                Ok(()) => {
                    self.delivered.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    if self.dropped.fetch_add(1, Ordering::Relaxed) % 1000 == 0 {
                        tracing::warn!(
                            "pub/sub: a subscriber of {key} is not keeping up; messages dropped"
                        );
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }
}

/// Delay before the next reconnect attempt: doubles from 100 ms up to 5 s.
pub(crate) fn retry_delay(attempt: u32) -> std::time::Duration {
    std::time::Duration::from_millis((100u64 << attempt.min(6)).min(5000))
}
