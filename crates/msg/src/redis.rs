//! `-msg-type redis`: channels on the Redis server `-redis-host` names (the same parameter the
//! Redis cache uses). One RESP3 connection per process carries publishes, subscriptions and the
//! pushed messages; the redis crate's connection manager reconnects by itself and subscribes
//! again to every channel it had.

use crate::backend::{retry_delay, Backend, BoxFuture, MsgError, Shared};
use bkjs_base::config::Config;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

enum Cmd {
    Subscribe(String),
    Unsubscribe(String),
}

pub(crate) struct RedisBackend {
    conn: watch::Receiver<Option<ConnectionManager>>,
    cmds: mpsc::UnboundedSender<Cmd>,
    url: String,
}

/// Hands a pushed `message` to the local subscribers of its channel.
fn push(shared: &Shared, info: PushInfo) {
    if info.kind != PushKind::Message {
        return;
    }
    let mut it = info.data.into_iter();
    let (Some(channel), Some(payload)) = (it.next(), it.next()) else {
        return;
    };
    match (
        redis::from_redis_value::<String>(channel),
        redis::from_redis_value::<String>(payload),
    ) {
        (Ok(c), Ok(p)) => shared.deliver(&c, &p),
        _ => tracing::debug!("pub/sub redis: a message that is not text"),
    }
}

impl RedisBackend {
    pub(crate) fn start(cfg: &Config, shared: Arc<Shared>) -> Result<RedisBackend, MsgError> {
        let host = cfg.str("redis-host");
        let url = if host.contains("://") {
            host.to_string()
        } else {
            format!("redis://{host}")
        };
        let bad = |e: redis::RedisError| MsgError::Config(format!("-redis-host {host}: {e}"));
        let info = url.as_str().into_connection_info().map_err(bad)?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings)).map_err(bad)?;
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| MsgError::Config("pub/sub needs a tokio runtime".into()))?;
        let (conn_tx, conn_rx) = watch::channel(None);
        let (cmds, mut rx) = mpsc::unbounded_channel::<Cmd>();
        let weak = Arc::downgrade(&shared);
        let what = url.clone();
        handle.spawn(async move {
            // Connect (retrying while Redis is away), then serve subscription changes in order.
            let mut attempt = 0;
            let manager = loop {
                let w = weak.clone();
                let config = ConnectionManagerConfig::new()
                    .set_automatic_resubscription()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(Duration::from_secs(5)))
                    .set_max_delay(Duration::from_secs(2))
                    .set_push_sender(move |info: PushInfo| {
                        if let Some(s) = w.upgrade() {
                            push(&s, info);
                        }
                        Ok::<(), redis::aio::SendError>(())
                    });
                match client.get_connection_manager_with_config(config).await {
                    Ok(m) => break m,
                    Err(e) => {
                        if attempt == 0 {
                            tracing::warn!("pub/sub: cannot connect to {what}: {e}; retrying");
                        }
                        attempt += 1;
                        tokio::time::sleep(retry_delay(attempt)).await;
                    }
                }
                if weak.strong_count() == 0 {
                    return;
                }
            };
            if attempt > 0 {
                tracing::info!("pub/sub: connected to {what}");
            }
            let mut m = manager.clone();
            // Keys wanted before the connection existed.
            if let Some(s) = weak.upgrade() {
                for key in s.keys() {
                    if let Err(e) = m.subscribe(&key).await {
                        tracing::warn!("pub/sub redis: subscribe {key}: {e}");
                    }
                }
            }
            let _ = conn_tx.send(Some(manager));
            while let Some(cmd) = rx.recv().await {
                let r = match &cmd {
                    Cmd::Subscribe(k) => m.subscribe(k).await,
                    Cmd::Unsubscribe(k) => m.unsubscribe(k).await,
                };
                if let Err(e) = r {
                    tracing::warn!("pub/sub redis: (un)subscribe: {e}");
                }
            }
        });
        Ok(RedisBackend {
            conn: conn_rx,
            cmds,
            url,
        })
    }
}

impl Backend for RedisBackend {
    fn subscribe(&self, key: &str) {
        let _ = self.cmds.send(Cmd::Subscribe(key.to_string()));
    }

    fn unsubscribe(&self, key: &str) {
        let _ = self.cmds.send(Cmd::Unsubscribe(key.to_string()));
    }

    fn publish(&self, key: &str, data: &str) -> BoxFuture<Result<(), MsgError>> {
        let conn = self.conn.borrow().clone();
        let (key, data) = (key.to_string(), data.to_string());
        let url = self.url.clone();
        Box::pin(async move {
            let Some(mut c) = conn else {
                return Err(MsgError::Unavailable(format!("not connected to {url}")));
            };
            redis::cmd("PUBLISH")
                .arg(&key)
                .arg(&data)
                .query_async::<i64>(&mut c)
                .await
                .map(|_| ())
                .map_err(|e| MsgError::Unavailable(format!("redis publish: {e}")))
        })
    }

    fn describe(&self) -> String {
        format!("redis {}", self.url)
    }
}
