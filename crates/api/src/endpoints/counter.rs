//! `/counter/*` (docs/api.md): the per-account `bk_counter` row. Anyone signed in may read another
//! account's public counters and increment its public ones (`ping`); the owner reads everything
//! and sets or increments its own. The `autoincr` columns (`like0`, `follow1`, `msg1`, ...) are
//! kept by the connection and message endpoints, so only admins may write them directly
//! (**bkjs:** the original let an account inflate its own received-likes counter).

use super::common::ids::check_id;
use super::common::publish::{publish_to_account, wants_publish};
use super::common::rows::{db_of, public_only, row};
use crate::api::{Req, Routes};
use crate::error::ApiError;
use crate::reply::Out;
use crate::route::RouteError;
use bkjs_db::{Db, DbError, Options, Row, Table};
use serde_json::{json, Value};
use std::sync::Arc;

/// Registers the counter group.
pub(crate) fn register(r: &mut Routes) -> Result<(), RouteError> {
    r.add(
        "*",
        "/counter/get",
        "the caller's counters, or account id's public ones",
        get,
    )?;
    r.add(
        "*",
        "/counter/put",
        "set the caller's counters: col=N ...",
        put,
    )?;
    r.add(
        "*",
        "/counter/incr",
        "add to counters: col=N ...; on another account (id) only public ones (_publish)",
        incr,
    )?;
    Ok(())
}

/// The counter columns a request names with their integer values; refuses what the caller may
/// not write.
fn columns(req: &Req, table: &Table, other: bool, admin: bool) -> Result<Row, ApiError> {
    let mut out = Row::new();
    for (k, v) in req.params.pairs() {
        if k.starts_with('_') || k == "id" {
            continue;
        }
        let Some(col) = table.column(k) else { continue };
        if !col.kind.is_numeric() {
            continue;
        }
        if other && !col.public && !admin {
            return Err(ApiError::denied(format!(
                "{k} is not a public counter of another account"
            )));
        }
        if col.autoincr && !admin {
            return Err(ApiError::denied(format!(
                "{k} is kept by the API and cannot be written directly"
            )));
        }
        let n = req
            .params
            .json(k)
            .and_then(Value::as_i64)
            .or_else(|| v.trim().parse::<i64>().ok())
            .ok_or_else(|| ApiError::bad(format!("{k} must be an integer")))?;
        out.insert(k.clone(), json!(n));
    }
    if out.is_empty() {
        return Err(ApiError::bad("no counter given (col=N)"));
    }
    Ok(out)
}

/// The account a request is about: `id` or the caller; whether it is another one.
fn target(req: &Req) -> Result<(String, bool), ApiError> {
    let me = req.account()?;
    match req.param("id").filter(|i| !i.is_empty()) {
        Some(id) if id != me.id() => {
            check_id("id", id)?;
            Ok((id.to_string(), true))
        }
        _ => Ok((me.id().to_string(), false)),
    }
}

/// What the caller sees of a counter row.
fn visible(db: &Db, mut r: Row, other: bool, admin: bool) -> Result<Value, DbError> {
    if other && !admin {
        public_only(&*db.table("bk_counter")?, &mut r);
    }
    Ok(Value::Object(r))
}

/// `/counter/get`.
async fn get(req: Arc<Req>) -> Result<Out, ApiError> {
    let db = db_of(&req)?;
    let admin = req.account()?.is_admin();
    let (id, other) = target(&req)?;
    let found = db
        .get("bk_counter", &row(&[("id", &id)]), &Options::default())
        .await?
        .unwrap_or_else(|| row(&[("id", &id)]));
    Ok(Out::Json(visible(db, found, other, admin)?))
}

/// `/counter/put`: the caller's own row; given columns are set, others kept.
async fn put(req: Arc<Req>) -> Result<Out, ApiError> {
    let db = db_of(&req)?;
    let me = req.account()?;
    let admin = me.is_admin();
    let (id, other) = target(&req)?;
    if other && !admin {
        return Err(ApiError::denied(
            "only admins may set another account's counters",
        ));
    }
    let table = db.table("bk_counter")?;
    let mut r = columns(&req, &table, other, admin)?;
    r.insert("id".into(), json!(id));
    let o = Options::default();
    match db.update("bk_counter", &r, &o).await {
        Err(DbError::NotFound) => {
            db.put("bk_counter", &r, &o).await?;
        }
        res => {
            res?;
        }
    }
    let found = db
        .get("bk_counter", &row(&[("id", &id)]), &o)
        .await?
        .unwrap_or(r);
    Ok(Out::Json(visible(db, found, other, admin)?))
}

/// `/counter/incr`.
async fn incr(req: Arc<Req>) -> Result<Out, ApiError> {
    let db = db_of(&req)?;
    let admin = req.account()?.is_admin();
    let (id, other) = target(&req)?;
    if other
        && db
            .get_cached("bk_account", &row(&[("id", &id)]), &Options::default())
            .await?
            .is_none()
    {
        return Err(ApiError::not_found("no such account"));
    }
    let table = db.table("bk_counter")?;
    let mut r = columns(&req, &table, other, admin)?;
    r.insert("id".into(), json!(id));
    let res = db.incr("bk_counter", &r, &Options::default()).await?;
    if other && wants_publish(&req) {
        let mut cols = r.clone();
        cols.remove("id");
        publish_to_account(&req, &id, Value::Object(cols)).await;
    }
    let found = res.rows.into_iter().next().unwrap_or(r);
    Ok(Out::Json(visible(db, found, other, admin)?))
}
