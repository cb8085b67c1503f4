//! Events to accounts over pub/sub (docs/ipc.md, §7): `/account/subscribe` long-polls for the events
//! published to the caller's account (`common::publish::publish_to_account` is what endpoints
//! call for `_publish=1`), and `/system/msg/*` lets an admin publish to any key and see this
//! worker's pub/sub counters. The same subscription feeds a WebSocket (see `api::websocket`).

use super::common::publish::{as_value, pubsub};
use crate::api::{Req, Routes};
use crate::error::ApiError;
use crate::reply::Out;
use bkjs_msg::Subscription;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Registers `/account/subscribe` and `/system/msg/*`.
pub(crate) fn register(r: &mut Routes) -> Result<(), crate::route::RouteError> {
    r.add(
        "*",
        "/account/subscribe",
        "long poll: waits for events published to the caller (connections, messages, counters with _publish=1), answers them as a JSON array after -api-subscribe-interval, or [] after -api-subscribe-timeout; match=REGEXP keeps only matching events",
        subscribe,
    )?;
    r.add(
        "*",
        "/system/msg/publish",
        "admin: publishes data (text, usually JSON) to key on every node",
        publish,
    )?;
    r.add(
        "*",
        "/system/msg/stats",
        "admin: this worker's pub/sub backend and counters",
        stats,
    )?;
    Ok(())
}

/// The `match` parameter: only events whose JSON text matches are kept.
pub(crate) fn matcher(req: &Req) -> Result<Option<regex::Regex>, ApiError> {
    match req.param("match").filter(|m| !m.is_empty()) {
        None => Ok(None),
        Some(m) => regex::RegexBuilder::new(m)
            .size_limit(1 << 20)
            .build()
            .map(Some)
            .map_err(|e| ApiError::bad(format!("match is not a valid regexp: {e}"))),
    }
}

/// Waits for the first matching event (until `timeout` or the drain), then gathers what comes
/// within `interval`; empty when nothing came.
pub(crate) async fn batch(
    req: &Req,
    sub: &mut Subscription,
    rx: Option<&regex::Regex>,
    interval: Duration,
    timeout: Duration,
) -> Vec<Value> {
    let keep = |d: &str| rx.is_none_or(|r| r.is_match(d));
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        tokio::select! {
            m = sub.recv() => match m {
                Some(m) if keep(&m.data) => { out.push(as_value(&m.data)); break; }
                Some(_) => continue,
                None => return out,
            },
            _ = tokio::time::sleep_until(deadline) => return out,
            _ = req.api.draining() => return out,
        }
    }
    let until = tokio::time::Instant::now() + interval;
    loop {
        tokio::select! {
            m = sub.recv() => match m {
                Some(m) if keep(&m.data) => out.push(as_value(&m.data)),
                Some(_) => {}
                None => break,
            },
            _ = tokio::time::sleep_until(until) => break,
            _ = req.api.draining() => break,
        }
    }
    out
}

/// `/account/subscribe`.
async fn subscribe(req: Arc<Req>) -> Result<Out, ApiError> {
    let me = req.account()?.id().to_string();
    let rx = matcher(&req)?;
    let mut sub = pubsub(&req)?.subscribe(&me)?;
    let cfg = &req.api.cfg;
    let events = batch(
        &req,
        &mut sub,
        rx.as_ref(),
        cfg.duration("api-subscribe-interval"),
        cfg.duration("api-subscribe-timeout"),
    )
    .await;
    Ok(Out::Json(Value::Array(events)))
}

/// `/system/msg/publish?key=K&data=D`.
async fn publish(req: Arc<Req>) -> Result<Out, ApiError> {
    let key = req.required("key")?;
    let data = req.param("data").unwrap_or("");
    pubsub(&req)?.publish(key, data).await?;
    Ok(Out::Json(json!({})))
}

/// `/system/msg/stats`.
async fn stats(req: Arc<Req>) -> Result<Out, ApiError> {
    let p = pubsub(&req)?;
    let mut v = json!(p.stats());
    v["backend"] = json!(p.describe());
    Ok(Out::Json(v))
}
