//! Events to accounts over pub/sub (SPEC §4, §7): `/account/subscribe` long-polls for the events
//! published to the caller's account, [`publish_to_account`] is what endpoints call for
//! `_publish=1`, and `/system/msg/*` lets an admin publish to any key and see this worker's
//! pub/sub counters. The same subscription feeds a WebSocket (see `api::websocket`).

use crate::route::{ApiError, Out, Req, Routes};
use bkjs_msg::{MsgError, PubSub, Subscription};
use hyper::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Registers `/account/subscribe` and `/system/msg/*`.
pub fn register(r: &mut Routes) -> Result<(), crate::route::RouteError> {
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

impl From<MsgError> for ApiError {
    fn from(e: MsgError) -> ApiError {
        match e {
            MsgError::BadKey(_) => ApiError::bad(e.to_string()),
            other => {
                tracing::warn!("{other}");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, other.to_string())
            }
        }
    }
}

/// The worker's pub/sub, or 503.
pub fn pubsub(req: &Req) -> Result<&PubSub, ApiError> {
    req.api.msg.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "pub/sub is not available here",
        )
    })
}

/// True when the request asks for `_publish` (`1` or `true`).
pub fn wants_publish(req: &Req) -> bool {
    matches!(req.param("_publish"), Some("1") | Some("true"))
}

/// The event an endpoint publishes for the caller: the endpoint's path, the time, the caller's
/// id and alias, then `extra`'s fields (which cannot replace those four).
pub fn event(req: &Req, extra: Value) -> Value {
    let (id, alias) = match &req.account {
        Some(a) => (a.id().to_string(), a.alias().to_string()),
        None => (String::new(), String::new()),
    };
    let mut ev = serde_json::Map::new();
    ev.insert("path".into(), json!(req.path));
    ev.insert("mtime".into(), json!(bkjs_base::time::now_ms()));
    ev.insert("id".into(), json!(id));
    ev.insert("alias".into(), json!(alias));
    if let Value::Object(m) = extra {
        for (k, v) in m {
            ev.entry(k).or_insert(v);
        }
    }
    Value::Object(ev)
}

/// Publishes [`event`]`(req, extra)` to account `to` (`_publish=1` of connection add, message
/// add, counter incr). The write it reports has happened already, so a failure is logged, not
/// returned: pub/sub is best effort.
pub async fn publish_to_account(req: &Req, to: &str, extra: Value) {
    let Some(msg) = &req.api.msg else {
        tracing::warn!(
            "{}: _publish to {to}: pub/sub is not available here",
            req.path
        );
        return;
    };
    let ev = event(req, extra);
    if let Err(e) = msg.publish(to, &ev.to_string()).await {
        tracing::warn!("{}: _publish to {to}: {e}", req.path);
    }
}

/// An event as a reply element: the published JSON, or the text when it is not JSON.
pub fn as_value(data: &str) -> Value {
    serde_json::from_str(data).unwrap_or_else(|_| Value::String(data.to_string()))
}

/// The `match` parameter: only events whose JSON text matches are kept.
pub fn matcher(req: &Req) -> Result<Option<regex::Regex>, ApiError> {
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
pub async fn batch(
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
