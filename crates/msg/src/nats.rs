//! `-msg-type nats`: subjects on the NATS server `-nats-host` names. The async-nats client
//! connects in the background, reconnects by itself and restores its subscriptions; one NATS
//! subscription per key with local subscribers, dropped when the last one goes.

use crate::backend::{Backend, BoxFuture, MsgError, Shared};
use bkjs_base::config::Config;
use futures_util::StreamExt;
use parking_lot::{Mutex, MutexGuard};
use std::collections::HashMap;
use std::sync::Arc;

pub(crate) struct NatsBackend {
    client: async_nats::Client,
    /// The task reading each subscribed key, aborted on unsubscribe.
    subs: Mutex<HashMap<String, tokio::task::AbortHandle>>,
    shared: std::sync::Weak<Shared>,
    url: String,
}

impl NatsBackend {
    pub(crate) async fn start(cfg: &Config, shared: Arc<Shared>) -> Result<NatsBackend, MsgError> {
        let url = cfg.str("nats-host").to_string();
        let opts = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Disconnected => {
                        tracing::warn!("pub/sub nats: disconnected; reconnecting")
                    }
                    async_nats::Event::Connected => tracing::info!("pub/sub nats: connected"),
                    other => tracing::debug!("pub/sub nats: {other}"),
                }
            });
        // With retry_on_initial_connect the client is returned at once and connects in the
        // background; only an address that cannot be parsed fails here.
        let client = opts
            .connect(url.as_str())
            .await
            .map_err(|e| MsgError::Config(format!("-nats-host {url}: {e}")))?;
        Ok(NatsBackend {
            client,
            subs: Mutex::new(HashMap::new()),
            shared: Arc::downgrade(&shared),
            url,
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, tokio::task::AbortHandle>> {
        self.subs.lock()
    }
}

impl Backend for NatsBackend {
    fn subscribe(&self, key: &str) {
        let mut subs = self.lock();
        if subs.contains_key(key) {
            return;
        }
        let (client, shared, key2) = (self.client.clone(), self.shared.clone(), key.to_string());
        let task = tokio::spawn(async move {
            let mut sub = match client.subscribe(key2.clone()).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("pub/sub nats: subscribe {key2}: {e}");
                    return;
                }
            };
            while let Some(m) = sub.next().await {
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                match std::str::from_utf8(&m.payload) {
                    Ok(data) => shared.deliver(&key2, data),
                    Err(_) => tracing::debug!("pub/sub nats: a message that is not text"),
                }
            }
        });
        subs.insert(key.to_string(), task.abort_handle());
    }

    fn unsubscribe(&self, key: &str) {
        if let Some(t) = self.lock().remove(key) {
            // Dropping the subscriber inside the task unsubscribes at the server.
            t.abort();
        }
    }

    fn publish(&self, key: &str, data: &str) -> BoxFuture<Result<(), MsgError>> {
        let client = self.client.clone();
        let (key, data) = (key.to_string(), bytes::Bytes::from(data.to_string()));
        Box::pin(async move {
            if client.connection_state() != async_nats::connection::State::Connected {
                return Err(MsgError::Unavailable("not connected to NATS".into()));
            }
            client
                .publish(key, data)
                .await
                .map_err(|e| MsgError::Unavailable(format!("nats publish: {e}")))
        })
    }

    fn describe(&self) -> String {
        format!("nats {}", self.url)
    }
}
