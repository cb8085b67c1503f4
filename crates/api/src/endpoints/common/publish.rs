//! Publishing events to accounts over pub/sub: what `_publish=1` of several groups does, the
//! pub/sub of a request, and an event as a reply element (long polls and WebSockets).

use crate::api::Req;

use crate::error::ApiError;
use bkjs_msg::{MsgError, PubSub};
use hyper::StatusCode;
use serde_json::{json, Value};

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
pub(crate) fn pubsub(req: &Req) -> Result<&PubSub, ApiError> {
    req.api.msg.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "pub/sub is not available here",
        )
    })
}

/// True when the request asks for `_publish` (`1` or `true`).
pub(crate) fn wants_publish(req: &Req) -> bool {
    matches!(req.param("_publish"), Some("1") | Some("true"))
}

/// The event an endpoint publishes for the caller: the endpoint's path, the time, the caller's
/// id and alias, then `extra`'s fields (which cannot replace those four).
pub(crate) fn event(req: &Req, extra: Value) -> Value {
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
pub(crate) async fn publish_to_account(req: &Req, to: &str, extra: Value) {
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
pub(crate) fn as_value(data: &str) -> Value {
    serde_json::from_str(data).unwrap_or_else(|_| Value::String(data.to_string()))
}
