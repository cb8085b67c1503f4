//! `/data/*`: the DB API over HTTP for admins and trusted networks (docs/api.md). Every parameter not
//! starting with `_` is a column value; control parameters: `_select`, `_count` (≤ 100),
//! `_start`/`_token`, `_sort`, `_desc`, `_ops=col,op,col,op`, `_total`, `_skip_null`,
//! `_check_mtime`, `_check_data`, `_cached`, and `_noscan`, `_pool`, `_noprocessrows` only when
//! `data` is in `-api-unsecure` (the router refuses them otherwise).

use super::common::query::{request, split_list};
use crate::api::Api;
use crate::error::status_of;
use crate::params::Params;
use crate::reply::{error, ok, Reply};
use bkjs_db::{Db, DbError};
use hyper::StatusCode;
use serde_json::{json, Value};

fn refuse(e: DbError) -> Reply {
    let status = status_of(&e);
    if status.is_server_error() {
        tracing::error!("/data: {e}");
    }
    error(status, &e.to_string())
}

/// Dispatches `/data/...`; `None` for a path that is not one of these endpoints.
pub(crate) async fn handle(api: &Api, path: &str, params: &Params) -> Option<Reply> {
    let rest = path.strip_prefix("/data/")?;
    let Some(db) = &api.db else {
        return Some(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no database in this process",
        ));
    };
    let (op, table) = rest.split_once('/').unwrap_or((rest, ""));
    Some(match run(db, op, table, params).await? {
        Ok(mut v) => {
            if let Ok(t) = db.table(table) {
                without_secrets(&t, &mut v);
            }
            ok(v)
        }
        Err(e) => refuse(e),
    })
}

/// Removes the columns no answer carries (`priv`, `writeonly`: secrets) from the row or rows of
/// a reply, also for admins: `/data` is no way around them (docs/security.md).
fn without_secrets(table: &bkjs_db::Table, v: &mut Value) {
    let hidden: Vec<&str> = table
        .columns()
        .iter()
        .filter(|c| c.private || c.writeonly || c.sealed)
        .map(|c| c.name.as_str())
        .collect();
    if hidden.is_empty() {
        return;
    }
    let strip = |row: &mut Value| {
        if let Some(row) = row.as_object_mut() {
            for name in &hidden {
                row.remove(*name);
            }
        }
    };
    match v.get_mut("data").and_then(Value::as_array_mut) {
        Some(rows) => rows.iter_mut().for_each(strip),
        None => strip(v),
    }
}

async fn run(db: &Db, op: &str, table: &str, params: &Params) -> Option<Result<Value, DbError>> {
    Some(match (op, table) {
        ("columns", "") => Ok(json!(db
            .tables()
            .iter()
            .map(|t| (t.name().to_string(), describe(t)))
            .collect::<serde_json::Map<_, _>>())),
        ("columns", t) => db.table(t).map(|t| describe(&t)),
        ("keys", t) => db.table(t).map(|t| {
            json!(t
                .primary_keys()
                .iter()
                .map(|c| c.name.clone())
                .collect::<Vec<_>>())
        }),
        (_, "") => return None,
        (op, t) => {
            let (row, opts) = match request(params) {
                Ok(x) => x,
                Err(e) => return Some(Err(e)),
            };
            match op {
                "get" => db
                    .get(t, &row, &opts)
                    .await
                    .map(|r| r.map(Value::Object).unwrap_or_else(|| json!({}))),
                "select" | "search" => db.select(t, &row, &opts).await.map(list),
                "list" => {
                    let ids = match db.table(t) {
                        Ok(desc) => desc
                            .primary_keys()
                            .first()
                            .and_then(|c| row.get(&c.name))
                            .map(split_list)
                            .unwrap_or_default(),
                        Err(e) => return Some(Err(e)),
                    };
                    db.list(t, ids, &opts).await.map(list)
                }
                "add" => db.add(t, &row, &opts).await.map(written),
                "put" => db.put(t, &row, &opts).await.map(written),
                "update" => db.update(t, &row, &opts).await.map(written),
                "incr" => db.incr(t, &row, &opts).await.map(written),
                "del" => db.del(t, &row, &opts).await.map(written),
                "replace" => db.replace(t, &row, &opts).await.map(written),
                _ => return None,
            }
        }
    })
}

fn list(r: bkjs_db::Res) -> Value {
    let mut v = json!({ "count": r.rows.len(), "data": r.rows });
    if let Some(t) = r.next_token {
        v["next_token"] = json!(t);
    }
    if let Some(total) = r.total {
        v["total"] = json!(total);
    }
    v
}

fn written(r: bkjs_db::Res) -> Value {
    let mut v = json!({ "affected": r.affected });
    if !r.rows.is_empty() {
        v["data"] = json!(r.rows);
    }
    v
}

fn describe(t: &bkjs_db::Table) -> Value {
    let cols: serde_json::Map<String, Value> = t
        .columns()
        .iter()
        .map(|c| {
            let mut props = json!({ "type": format!("{:?}", c.kind).to_lowercase() });
            if c.primary > 0 {
                props["primary"] = json!(c.primary);
            }
            if c.public {
                props["pub"] = json!(true);
            }
            (c.name.clone(), props)
        })
        .collect();
    Value::Object(cols)
}
