//! `/connection/*` and `/reference/*` (docs/api.md): typed links between two accounts. A connection
//! `like` from A to B is the row `bk_connection (A, "like:B")`; its reverse `bk_reference
//! (B, "like:A")` lets B see who connected to it. Making one also increments the `like0` counter
//! of A and `like1` of B when those `bk_counter` columns are `autoincr`; deleting it decrements
//! them. Replies show `type` and the other account's `id` split out of the stored key.
//!
//! The two rows and two counters are separate writes, not a transaction: a failure after the
//! first write is undone for add/put, and logged for the counters (which never fail a request).

use super::common::ids::{auto_counter, check_id};
use super::common::publish::{publish_to_account, wants_publish};
use super::common::query::request;
use super::common::rows::{db_of, details, flag, list, row, rows_of_type, text};
use crate::api::{Req, Routes};
use crate::auth::Account;
use crate::error::ApiError;
use crate::hooks::{AccountDeletion, HookFuture};
use crate::reply::Out;
use crate::route::RouteError;
use bkjs_db::{Db, DbError, Op, Options, Row};
use serde_json::{json, Value};
use std::sync::Arc;

/// Registers the connection and reference groups.
pub(crate) fn register(r: &mut Routes) -> Result<(), RouteError> {
    for op in ["add", "put", "incr", "update"] {
        r.add(
            "*",
            &format!("/connection/{op}"),
            "connect to account id with type: writes the reverse reference and the TYPE0/TYPE1 counters (_noreference, _nocounter, _connected, _publish)",
            move |req| async move { put(req, op).await },
        )?;
    }
    r.add(
        "*",
        "/connection/del",
        "delete the connection id+type, or all of a type, or all: reverse rows and counters too (_noreference, _nocounter)",
        del,
    )?;
    for table in ["connection", "reference"] {
        let name: &'static str = if table == "connection" {
            "bk_connection"
        } else {
            "bk_reference"
        };
        r.add(
            "*",
            &format!("/{table}/get"),
            "one row by id and type (_details merges the account's public columns)",
            move |req| async move { get(req, name).await },
        )?;
        r.add(
            "*",
            &format!("/{table}/select"),
            "the caller's rows, optionally of one type (a prefix), paged (_count, _start, _details)",
            move |req| async move { select(req, name).await },
        )?;
    }
    r.on_account_delete(on_account_delete);
    Ok(())
}

/// A connection type: a short word, no `:` (it separates the type from the id in the key).
fn check_type(t: &str) -> Result<(), ApiError> {
    let ok = !t.is_empty()
        && t.len() <= 64
        && t.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad(
            "type must be 1-64 letters, digits, _ or - (no :)",
        ))
    }
}

/// The database, the caller, and the other account's `id` and the connection `type` of a
/// request, both checked.
fn link(req: &Req) -> Result<(&Arc<Db>, &Account, &str, &str), ApiError> {
    let db = db_of(req)?;
    let me = req.account()?;
    let other = req.required("id")?;
    let kind = req.required("type")?;
    check_id("id", other)?;
    check_type(kind)?;
    Ok((db, me, other, kind))
}

/// `type:id` as stored in the second key column.
fn key(kind: &str, id: &str) -> String {
    format!("{kind}:{id}")
}

/// A stored row as a client sees it: `type` and `id` of the other account split out of the key.
pub(crate) fn split(mut r: Row) -> Row {
    // In place: the stored text becomes `type`, the part after the colon a new `id`.
    let Some(Value::String(stored)) = r.get_mut("type") else {
        return r;
    };
    let Some(colon) = stored.find(':') else {
        return r;
    };
    let other = stored[colon + 1..].to_string();
    stored.truncate(colon);
    r.insert("id".into(), Value::String(other));
    r
}

/// The columns of `table` a client may give for a connection (not the key, not mtime).
fn extra_columns(db: &Db, table: &str, req: &Req) -> Result<Row, ApiError> {
    let t = db.table(table)?;
    let mut out = Row::new();
    for (k, v) in req.params.pairs() {
        if k.starts_with('_') || matches!(k.as_str(), "id" | "type" | "mtime") {
            continue;
        }
        if t.column(k).is_some() {
            let value = req.params.json(k).cloned().unwrap_or_else(|| json!(v));
            out.insert(k.clone(), value);
        }
    }
    Ok(out)
}

/// Runs one write op on a connection table.
async fn write(db: &Db, op: &str, table: &str, r: &Row) -> Result<(), DbError> {
    let o = Options::default();
    match op {
        "add" => db.add(table, r, &o).await.map(|_| ()),
        "put" => db.put(table, r, &o).await.map(|_| ()),
        "incr" => db.incr(table, r, &o).await.map(|_| ()),
        _ => db.update(table, r, &o).await.map(|_| ()),
    }
}

/// `/connection/add|put|incr|update`.
async fn put(req: Arc<Req>, op: &'static str) -> Result<Out, ApiError> {
    let (db, me, other, kind) = link(&req)?;
    if other == me.id() {
        return Err(ApiError::bad("cannot connect to itself"));
    }
    let Some(account) = db
        .get_cached("bk_account", &row(&[("id", other)]), &Options::default())
        .await?
    else {
        return Err(ApiError::not_found("no such account"));
    };
    let extra = extra_columns(db, "bk_connection", &req)?;
    let mut conn = extra.clone();
    conn.insert("id".into(), json!(me.id()));
    conn.insert("type".into(), json!(key(kind, other)));
    if !conn.contains_key("alias") && matches!(op, "add" | "put") {
        conn.insert("alias".into(), json!(text(&account, "alias")));
    }
    // A put (or incr) of a connection that exists changes it but counts nothing; one that
    // creates it counts like an add.
    let existed = match op {
        "put" | "incr" => db
            .get("bk_connection", &conn, &Options::default())
            .await?
            .is_some(),
        "add" => false,
        _ => true,
    };
    match write(db, op, "bk_connection", &conn).await {
        Err(DbError::Exists) => {
            return Err(ApiError::new(
                hyper::StatusCode::CONFLICT,
                "connection already exists",
            ))
        }
        Err(DbError::NotFound) => return Err(ApiError::not_found("no such connection")),
        r => r?,
    }
    if !flag(&req, "_noreference") {
        let mut reference = extra;
        reference.insert("id".into(), json!(other));
        reference.insert("type".into(), json!(key(kind, me.id())));
        if matches!(op, "add" | "put") {
            reference.insert("alias".into(), json!(me.alias()));
        }
        match write(db, op, "bk_reference", &reference).await {
            Ok(()) => {}
            // A connection made with _noreference has no reverse row to change.
            Err(DbError::NotFound) if op == "update" => {}
            Err(e) => {
                if !existed {
                    let _ = db.del("bk_connection", &conn, &Options::default()).await;
                }
                return Err(e.into());
            }
        }
    }
    if !existed && !flag(&req, "_nocounter") {
        auto_counter(db, me.id(), &format!("{kind}0"), 1).await;
        auto_counter(db, other, &format!("{kind}1"), 1).await;
    }
    if matches!(op, "add" | "put") && wants_publish(&req) {
        publish_to_account(&req, other, json!({"type": kind})).await;
    }
    if matches!(op, "add" | "put") && !existed && flag(&req, "_notify") {
        let mut data = serde_json::Map::new();
        data.insert("type".into(), json!("connection"));
        data.insert("connection".into(), json!(kind));
        data.insert("id".into(), json!(me.id()));
        let n = bkjs_push::Notification {
            title: me.alias().to_string(),
            body: kind.to_string(),
            data,
            collapse_id: Some(format!("{kind}-{}", me.id()).chars().take(32).collect()),
            ..Default::default()
        };
        let unique = format!("conn:{other}:{kind}:{}", me.id());
        crate::push::notify(&req.api.cfg, other, &unique, n).await;
    }
    if flag(&req, "_connected") {
        let back = db
            .get(
                "bk_connection",
                &row(&[("id", other), ("type", &key(kind, me.id()))]),
                &Options::default(),
            )
            .await?;
        return Ok(Out::Json(Value::Object(
            back.map(split).unwrap_or_default(),
        )));
    }
    Ok(Out::Json(json!({})))
}

/// Deletes the connection from `me` to `other` of `kind` (and its reverse row and counters);
/// true when it existed.
pub(crate) async fn delete_one(
    db: &Db,
    me: &str,
    kind: &str,
    other: &str,
    reference: bool,
    counters: bool,
) -> Result<bool, DbError> {
    let o = Options::default();
    let gone = db
        .del(
            "bk_connection",
            &row(&[("id", me), ("type", &key(kind, other))]),
            &o,
        )
        .await?
        .affected
        > 0;
    if reference {
        db.del(
            "bk_reference",
            &row(&[("id", other), ("type", &key(kind, me))]),
            &o,
        )
        .await?;
    }
    if gone && counters {
        auto_counter(db, me, &format!("{kind}0"), -1).await;
        auto_counter(db, other, &format!("{kind}1"), -1).await;
    }
    Ok(gone)
}

/// `/connection/del`: one (id and type), all of a type, or all the caller's connections.
async fn del(req: Arc<Req>) -> Result<Out, ApiError> {
    let db = db_of(&req)?;
    let me = req.account()?;
    let reference = !flag(&req, "_noreference");
    let counters = !flag(&req, "_nocounter");
    let kind = req.param("type").filter(|t| !t.is_empty());
    let other = req.param("id").filter(|t| !t.is_empty());
    if let Some(k) = kind {
        check_type(k)?;
    }
    if let Some(o) = other {
        check_id("id", o)?;
    }
    if let (Some(k), Some(o)) = (kind, other) {
        let n = delete_one(db, me.id(), k, o, reference, counters).await? as usize;
        return Ok(Out::Json(json!({ "count": n })));
    }
    let prefix = kind.map(|k| format!("{k}:")).unwrap_or_default();
    let mut n = 0;
    for r in rows_of_type(db, "bk_connection", me.id(), &prefix).await? {
        let r = split(r);
        if other.is_some_and(|o| o != text(&r, "id")) {
            continue;
        }
        if delete_one(
            db,
            me.id(),
            text(&r, "type"),
            text(&r, "id"),
            reference,
            counters,
        )
        .await?
        {
            n += 1;
        }
    }
    Ok(Out::Json(json!({ "count": n })))
}

/// Removes every connection and reference of account `id` with the other side's rows and
/// counters (`/account/del`).
pub(crate) async fn delete_account(db: &Db, id: &str) -> Result<(), DbError> {
    for r in rows_of_type(db, "bk_connection", id, "").await? {
        let r = split(r);
        delete_one(db, id, text(&r, "type"), text(&r, "id"), true, true).await?;
    }
    // Connections other accounts made to this one.
    for r in rows_of_type(db, "bk_reference", id, "").await? {
        let r = split(r);
        delete_one(db, text(&r, "id"), text(&r, "type"), id, true, true).await?;
    }
    Ok(())
}

/// `/connection/get`, `/reference/get`.
async fn get(req: Arc<Req>, table: &'static str) -> Result<Out, ApiError> {
    let (db, me, other, kind) = link(&req)?;
    let found = db
        .get(
            table,
            &row(&[("id", me.id()), ("type", &key(kind, other))]),
            &Options::default(),
        )
        .await?
        .ok_or_else(|| ApiError::not_found("no such connection"))?;
    let mut rows = vec![split(found)];
    if flag(&req, "_details") {
        details(db, &mut rows, "id").await?;
    }
    Ok(Out::Json(Value::Object(rows.remove(0))))
}

/// `/connection/select`, `/reference/select`.
async fn select(req: Arc<Req>, table: &'static str) -> Result<Out, ApiError> {
    let db = db_of(&req)?;
    let me = req.account()?;
    let (mut query, mut opts) = request(&req.params)?;
    let t = db.table(table)?;
    // Conditions on the table's columns, with their `_ops` (`mtime` ranges too); `id` and `type`
    // are the caller's key below.
    query.retain(|k, _| t.column(k).is_some());
    let other = query.remove("id");
    let prefix = match query.get("type").and_then(Value::as_str) {
        Some(k) if !k.is_empty() => {
            check_type(k)?;
            // With an id too: that one account's row of this type.
            match other
                .as_ref()
                .and_then(Value::as_str)
                .filter(|o| !o.is_empty())
            {
                Some(o) => key(k, o),
                None => format!("{k}:"),
            }
        }
        _ => String::new(),
    };
    query.insert("id".into(), json!(me.id()));
    query.insert("type".into(), json!(prefix));
    opts.ops.insert("type".into(), Op::BeginsWith);
    opts.ops.remove("id");
    let res = db.select(table, &query, &opts).await?;
    let mut rows: Vec<Row> = res.rows.into_iter().map(split).collect();
    if flag(&req, "_details") {
        details(db, &mut rows, "id").await?;
    }
    Ok(Out::Json(list(rows, res.next_token)))
}

/// Account deletion: removes the account's connections and references with the other side's
/// rows and counters, unless either table is kept.
fn on_account_delete<'a>(d: &'a AccountDeletion<'a>) -> HookFuture<'a> {
    Box::pin(async move {
        if d.kept("bk_connection") || d.kept("bk_reference") {
            return Ok(());
        }
        delete_account(d.db, d.id).await
    })
}
