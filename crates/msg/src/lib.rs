//! Pub/sub (docs/ipc.md): one front, [`PubSub`], with `subscribe`, `unsubscribe` and `publish`, over
//! the backend `-msg-type` names: nng (the default; the server process forwards, no extra
//! service), Redis, RabbitMQ (AMQP) or NATS.
//!
//! Every process holds one [`PubSub`] with one connection to its backend. Local subscribers are
//! kept here, by key; the backend is subscribed to a key while at least one local subscriber
//! wants it and is unsubscribed when the last one goes. Backends reconnect by themselves and
//! subscribe again to every key that is still wanted. Delivery is best effort on every backend
//! (a subscriber that is not connected when a message is published misses it, and a subscriber
//! that does not keep up loses messages rather than slowing the publisher); callers that need
//! every event must read them from the database.

#![deny(unsafe_op_in_unsafe_fn, rust_2018_idioms)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod amqp;
mod backend;
mod nats;
mod nng;
mod redis;

pub use backend::{BoxFuture, Message, MsgError};
pub use nng::{Forwarder, ForwarderStats};

use backend::{Backend, Shared};

use bkjs_base::config::{Config, Kind, Param};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use tokio::sync::mpsc;

/// The backends `-msg-type` chooses from.
pub(crate) const TYPES: &[&str] = &["nng", "redis", "amqp", "nats"];

/// Pub/sub parameters.
pub static PARAMS: &[Param] = &[
    Param::new(
        "msg-type",
        Kind::Enum(TYPES),
        "nng",
        "pub/sub backend: nng (the server forwards, no extra service), redis, amqp or nats",
    ),
    Param::new(
        "msg-host",
        Kind::List,
        "",
        "nng: forwarders (host or host:port) every node publishes to and subscribes from; a server listed here forwards on TCP; needs a cluster secret (-cluster-secret); empty: this machine's server only, over ipc://",
    ),
    Param::new(
        "msg-port",
        Kind::Int { min: 1, max: 65534 },
        "20195",
        "nng: TCP port of a forwarder's publish side; subscribers connect to the next port",
    ),
    Param::new(
        "msg-bind",
        Kind::String,
        "",
        "nng: address a forwarder listens on for TCP; empty: 127.0.0.1 when every -msg-host entry is a loopback address, else 0.0.0.0",
    ),
    Param::new(
        "amqp-host",
        Kind::String,
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        "RabbitMQ server for -msg-type amqp (amqp:// URL)",
    ),
    Param::new(
        "msg-amqp-exchange",
        Kind::String,
        "bkjs",
        "AMQP direct exchange the messages go through (declared when missing)",
    ),
    Param::new(
        "nats-host",
        Kind::String,
        "nats://127.0.0.1:4222",
        "NATS server for -msg-type nats (nats:// URL or host:port)",
    ),
];

/// How many messages a subscriber may have waiting before newer ones are dropped for it.
pub(crate) const SUBSCRIBER_QUEUE: usize = 1024;

/// The longest key accepted (AMQP routing keys stop at 255 bytes).
pub(crate) const MAX_KEY: usize = 255;

/// Counters of one process's pub/sub.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct MsgStats {
    /// Keys with at least one local subscriber.
    pub keys: u64,
    /// Local subscribers.
    pub subscribers: u64,
    /// Messages handed to local subscribers.
    pub delivered: u64,
    /// Messages a slow local subscriber lost.
    pub dropped: u64,
}

/// The pub/sub front of one process; cheap to clone.
#[derive(Clone)]
pub struct PubSub {
    backend: Arc<dyn Backend>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PubSub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubSub")
            .field("backend", &self.backend.describe())
            .finish()
    }
}

/// A key every backend can carry: NATS subjects treat `.` as a separator and spaces as the end,
/// AMQP routing keys stop at 255 bytes, the nng frame separates the key with a space.
pub(crate) fn check_key(key: &str) -> Result<(), MsgError> {
    let ok = !key.is_empty()
        && key.len() <= MAX_KEY
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'@' | b'.'))
        && !key.starts_with('.')
        && !key.ends_with('.')
        && !key.contains("..");
    if ok {
        Ok(())
    } else {
        Err(MsgError::BadKey(key.chars().take(64).collect()))
    }
}

impl PubSub {
    /// The backend `-msg-type` names, connecting in the background on the current tokio runtime
    /// (an unreachable backend is retried, never an error here); only a configuration that
    /// cannot work is an error.
    pub async fn start(cfg: &Config) -> Result<PubSub, MsgError> {
        let shared = Arc::new(Shared::default());
        let backend: Arc<dyn Backend> = match cfg.str("msg-type") {
            "redis" => Arc::new(redis::RedisBackend::start(cfg, shared.clone())?),
            "amqp" => Arc::new(amqp::AmqpBackend::start(cfg, shared.clone())?),
            "nats" => Arc::new(nats::NatsBackend::start(cfg, shared.clone()).await?),
            _ => Arc::new(nng::NngBackend::start(cfg, shared.clone())?),
        };
        tracing::debug!("pub/sub: {}", backend.describe());
        Ok(PubSub { backend, shared })
    }

    /// Starts receiving the messages published to `key`; dropping the subscription (or
    /// [`PubSub::unsubscribe`]) stops it.
    pub fn subscribe(&self, key: &str) -> Result<Subscription, MsgError> {
        check_key(key)?;
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let first = {
            let mut subs = self.shared.lock();
            let list = subs.entry(key.to_string()).or_default();
            list.push((id, tx));
            list.len() == 1
        };
        if first {
            self.backend.subscribe(key);
        }
        Ok(Subscription {
            rx,
            key: key.to_string(),
            id,
            owner: Arc::downgrade(&self.backend),
            shared: Arc::downgrade(&self.shared),
        })
    }

    /// Ends every local subscription to `key` (their receivers see the end).
    pub fn unsubscribe(&self, key: &str) {
        let had = self.shared.lock().remove(key).is_some();
        if had {
            self.backend.unsubscribe(key);
        }
    }

    /// Sends `data` to every subscriber of `key`, on every node using the same backend.
    pub async fn publish(&self, key: &str, data: &str) -> Result<(), MsgError> {
        check_key(key)?;
        self.backend.publish(key, data).await
    }

    /// This process's counters.
    pub fn stats(&self) -> MsgStats {
        let subs = self.shared.lock();
        MsgStats {
            keys: subs.len() as u64,
            subscribers: subs.values().map(|l| l.len() as u64).sum(),
            delivered: self.shared.delivered.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
        }
    }

    /// The backend, for logs (`nng ipc:///...`, `redis://...`).
    pub fn describe(&self) -> String {
        self.backend.describe()
    }
}

/// The messages of one key for one local subscriber; unsubscribes when dropped.
pub struct Subscription {
    rx: mpsc::Receiver<Message>,
    key: String,
    id: u64,
    owner: Weak<dyn Backend>,
    shared: Weak<Shared>,
}

impl Subscription {
    /// The next message; `None` once the key was unsubscribed.
    pub async fn recv(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    /// A message already waiting, without blocking.
    pub fn try_recv(&mut self) -> Option<Message> {
        self.rx.try_recv().ok()
    }

    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let last = {
            let mut subs = shared.lock();
            match subs.get_mut(&self.key) {
                Some(list) => {
                    list.retain(|(id, _)| *id != self.id);
                    if list.is_empty() {
                        subs.remove(&self.key);
                        true
                    } else {
                        false
                    }
                }
                None => false,
            }
        };
        if last {
            if let Some(b) = self.owner.upgrade() {
                b.unsubscribe(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests;
