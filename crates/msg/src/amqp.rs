//! `-msg-type amqp`: RabbitMQ (AMQP 0.9.1, the lapin client) on `-amqp-host`. Messages go
//! through the direct exchange `-msg-amqp-exchange` with the key as routing key; every process
//! has one exclusive, auto-deleted queue bound to each key it has local subscribers for. A lost
//! connection is re-established by this module, which then declares its queue again and binds
//! every key still wanted.

use crate::backend::{retry_delay, Backend, BoxFuture, MsgError, Shared};
use bkjs_base::config::Config;
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

enum Cmd {
    Bind(String),
    Unbind(String),
}

pub(crate) struct AmqpBackend {
    channel: watch::Receiver<Option<Channel>>,
    cmds: mpsc::UnboundedSender<Cmd>,
    exchange: String,
    url: String,
}

/// The URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let auth = &url[s + 3..at];
            let user = auth.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

impl AmqpBackend {
    pub(crate) fn start(cfg: &Config, shared: Arc<Shared>) -> Result<AmqpBackend, MsgError> {
        let url = cfg.str("amqp-host").to_string();
        url.parse::<lapin::uri::AMQPUri>()
            .map_err(|e| MsgError::Config(format!("-amqp-host {}: {e}", redact(&url))))?;
        let exchange = cfg.str("msg-amqp-exchange").to_string();
        if exchange.is_empty() || exchange.len() > 255 {
            return Err(MsgError::Config(
                "-msg-amqp-exchange must be 1 to 255 characters".into(),
            ));
        }
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| MsgError::Config("pub/sub needs a tokio runtime".into()))?;
        let (chan_tx, chan_rx) = watch::channel(None);
        let (cmds, rx) = mpsc::unbounded_channel();
        handle.spawn(run(
            url.clone(),
            exchange.clone(),
            Arc::downgrade(&shared),
            chan_tx,
            rx,
        ));
        Ok(AmqpBackend {
            channel: chan_rx,
            cmds,
            exchange,
            url: redact(&url),
        })
    }
}

/// Connects, declares, binds and consumes until the connection fails; then again.
async fn run(
    url: String,
    exchange: String,
    shared: std::sync::Weak<Shared>,
    chan_tx: watch::Sender<Option<Channel>>,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
) {
    let what = redact(&url);
    let mut attempt = 0;
    let mut failing = false;
    loop {
        if shared.strong_count() == 0 {
            return;
        }
        // Ok(true): the front is gone; Ok(false): the consumer ended, so connect again.
        let r: Result<bool, lapin::Error> = async {
            let conn = Connection::connect(&url, ConnectionProperties::default()).await?;
            let ch = conn.create_channel().await?;
            ch.exchange_declare(
                &exchange,
                ExchangeKind::Direct,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await?;
            let queue = ch
                .queue_declare(
                    "",
                    QueueDeclareOptions {
                        exclusive: true,
                        auto_delete: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            let qname = queue.name().as_str().to_string();
            let keys = shared.upgrade().map(|s| s.keys()).unwrap_or_default();
            for key in keys {
                ch.queue_bind(&qname, &exchange, &key, QueueBindOptions::default(), FieldTable::default())
                    .await?;
            }
            let mut consumer = ch
                .basic_consume(
                    &qname,
                    "",
                    BasicConsumeOptions {
                        no_ack: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            if failing {
                tracing::info!("pub/sub: connected to {what} again");
                failing = false;
            }
            attempt = 0;
            let _ = chan_tx.send(Some(ch.clone()));
            loop {
                tokio::select! {
                    cmd = cmds.recv() => {
                        let Some(cmd) = cmd else { return Ok(true) };
                        match cmd {
                            Cmd::Bind(k) => ch.queue_bind(&qname, &exchange, &k, QueueBindOptions::default(), FieldTable::default()).await?,
                            Cmd::Unbind(k) => ch.queue_unbind(&qname, &exchange, &k, FieldTable::default()).await?,
                        }
                    }
                    d = consumer.next() => match d {
                        Some(Ok(d)) => {
                            let Some(s) = shared.upgrade() else { return Ok(true) };
                            match std::str::from_utf8(&d.data) {
                                Ok(data) => s.deliver(d.routing_key.as_str(), data),
                                Err(_) => tracing::debug!("pub/sub amqp: a message that is not text"),
                            }
                        }
                        Some(Err(e)) => return Err(e),
                        None => return Ok(false),
                    }
                }
            }
        }
        .await;
        let _ = chan_tx.send(None);
        match r {
            Ok(true) => return,
            Ok(false) => {
                tracing::warn!("pub/sub: {what}: the consumer ended; reconnecting");
                attempt += 1;
                tokio::time::sleep(retry_delay(attempt)).await;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!("pub/sub: {what}: {e}; reconnecting");
                    failing = true;
                }
                attempt += 1;
                tokio::time::sleep(retry_delay(attempt)).await;
            }
        }
    }
}

impl Backend for AmqpBackend {
    fn subscribe(&self, key: &str) {
        let _ = self.cmds.send(Cmd::Bind(key.to_string()));
    }

    fn unsubscribe(&self, key: &str) {
        let _ = self.cmds.send(Cmd::Unbind(key.to_string()));
    }

    fn publish(&self, key: &str, data: &str) -> BoxFuture<Result<(), MsgError>> {
        let ch = self.channel.borrow().clone();
        let (key, data, exchange) = (key.to_string(), data.to_string(), self.exchange.clone());
        let url = self.url.clone();
        Box::pin(async move {
            let Some(ch) = ch else {
                return Err(MsgError::Unavailable(format!("not connected to {url}")));
            };
            ch.basic_publish(
                &exchange,
                &key,
                BasicPublishOptions::default(),
                data.as_bytes(),
                BasicProperties::default(),
            )
            .await
            .map(|_| ())
            .map_err(|e| MsgError::Unavailable(format!("amqp publish: {e}")))
        })
    }

    fn describe(&self) -> String {
        format!("amqp {} exchange {}", self.url, self.exchange)
    }
}
