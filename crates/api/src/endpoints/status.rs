//! `/status/*` (docs/api.md): presence. An account puts its status (`online` by default) and its
//! last-seen time `atime`; anyone signed in reads statuses, and an account counts as `online`
//! while its `atime` is within `-api-status-interval` and its status is not `offline`.
//!
//! Clients refresh their status often, so `/status/put?_check=1` writes the database only when
//! the stored row is older than half the interval (or the status changed): otherwise it only
//! refreshes `atime` in the cached row, which is what `/status/get` reads. If the cache loses the
//! row, readers see the database's `atime`, at most half an interval behind.

use super::common::ids::check_id;
use super::common::rows::{db_of, flag, list, row, text};
use crate::api::{Req, Routes};
use crate::error::ApiError;
use crate::reply::Out;
use crate::route::RouteError;
use bkjs_db::{Db, Options, Row};
use serde_json::{json, Value};
use std::sync::Arc;

/// Registers the status group.
pub(crate) fn register(r: &mut Routes) -> Result<(), RouteError> {
    r.add(
        "*",
        "/status/get",
        "the caller's status, or of the accounts in id=a,b,... with online = seen within -api-status-interval and not offline",
        get,
    )?;
    r.add(
        "*",
        "/status/put",
        "set the caller's status (default online) and last-seen time; _check=1 skips the database write while the stored one is recent",
        put,
    )?;
    r.add("*", "/status/del", "delete the caller's status", del)?;
    Ok(())
}

fn interval_ms(req: &Req) -> i64 {
    req.api.cfg.duration("api-status-interval").as_millis() as i64
}

fn num(r: &Row, col: &str) -> i64 {
    r.get(col).and_then(Value::as_i64).unwrap_or(0)
}

/// Adds `online` to a status row.
fn with_online(mut r: Row, interval: i64, now: i64) -> Row {
    let seen = now - num(&r, "atime") < interval;
    let online = seen && text(&r, "status") != "offline" && r.contains_key("atime");
    r.insert("online".into(), json!(online));
    r
}

async fn status_of(db: &Db, id: &str) -> Result<Option<Row>, ApiError> {
    Ok(db
        .get_cached("bk_status", &row(&[("id", id)]), &Options::default())
        .await?)
}

/// `/status/get`.
async fn get(req: Arc<Req>) -> Result<Out, ApiError> {
    let db = db_of(&req)?;
    let me = req.account()?;
    let (interval, now) = (interval_ms(&req), bkjs_base::time::now_ms());
    let Some(ids) = req.param("id").filter(|s| !s.is_empty()) else {
        let r = status_of(db, me.id())
            .await?
            .unwrap_or_else(|| row(&[("id", me.id())]));
        return Ok(Out::Json(Value::Object(with_online(r, interval, now))));
    };
    let mut rows = Vec::new();
    for id in ids.split(',').filter(|x| !x.is_empty()).take(100) {
        check_id("id", id)?;
        let r = status_of(db, id)
            .await?
            .unwrap_or_else(|| row(&[("id", id)]));
        rows.push(with_online(r, interval, now));
    }
    Ok(Out::Json(list(rows, None)))
}

/// `/status/put`.
async fn put(req: Arc<Req>) -> Result<Out, ApiError> {
    let db = db_of(&req)?;
    let me = req.account()?;
    let status = req
        .param("status")
        .filter(|s| !s.is_empty())
        .unwrap_or("online");
    if status.len() > 64 || status.chars().any(char::is_control) {
        return Err(ApiError::bad(
            "status must be at most 64 characters without control characters",
        ));
    }
    let (interval, now) = (interval_ms(&req), bkjs_base::time::now_ms());
    if flag(&req, "_check") {
        if let (Some(mut cur), Some(cache)) = (status_of(db, me.id()).await?, &req.api.cache) {
            let written = num(&cur, "mtime");
            if text(&cur, "status") == status && now - written < interval / 2 {
                cur.insert("atime".into(), json!(now));
                let table = db.table("bk_status")?;
                if let Some(k) = Db::cache_key(&table, &cur) {
                    match cache.put(k, Value::Object(cur.clone()).to_string()).await {
                        Ok(()) => {
                            return Ok(Out::Json(Value::Object(with_online(cur, interval, now))))
                        }
                        // Fall through to the database write.
                        Err(e) => tracing::warn!("status: cache refresh of {}: {e}", me.id()),
                    }
                }
            }
        }
    }
    let mut r = row(&[("id", me.id()), ("status", status), ("alias", me.alias())]);
    r.insert("atime".into(), json!(now));
    db.put("bk_status", &r, &Options::default()).await?;
    r.insert("mtime".into(), json!(now));
    Ok(Out::Json(Value::Object(with_online(r, interval, now))))
}

/// `/status/del`.
async fn del(req: Arc<Req>) -> Result<Out, ApiError> {
    let db = db_of(&req)?;
    let me = req.account()?;
    db.del("bk_status", &row(&[("id", me.id())]), &Options::default())
        .await?;
    Ok(Out::Json(json!({})))
}
