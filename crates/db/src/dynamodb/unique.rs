//! Unique columns on DynamoDB, which has no unique constraint of its own: each non-NULL value of a
//! unique column owns a guard item `u = "<column>:<encoded value>"` in the table's guard table
//! (`<name>.unique`) naming the row's key. A write of such a table reads the row, computes the new
//! one as the sled driver does, and writes row and guards in one TransactWriteItems: the row
//! conditioned on its hidden version attribute `_v` (so a concurrent change makes it start over),
//! new guards on not existing (a taken value is [`DbError::Exists`]), dropped guards on being the
//! row's own. Reads never see `_v` (only described columns are read back).

use super::client::CallError;
use super::item::{key_item, to_item, Item};
use super::ops::{write_keys, Expr};
use super::DynamoDriver;
use crate::error::DbError;
use crate::kv::codec::{add_params, build_row, enc_params, project, set_stored, stored_param};
use crate::options::Options;
use crate::query::select_columns;
use crate::schema::{Column, Table};
use crate::types::{Param, Res, Row};
use crate::write::WriteMode;
use serde_json::{json, Value};

/// How often a write starts over after a concurrent change of its row.
const ATTEMPTS: usize = 50;

/// The hidden version attribute of rows of tables with unique columns.
const VERSION: &str = "_v";

/// Why a transaction did not happen.
enum Conflict {
    /// The row changed since it was read: read it again.
    Row,
    /// A unique value belongs to another row.
    Taken,
    Other(DbError),
}

/// A row as read: its stored form and its version.
struct Old {
    row: Row,
    version: Option<i64>,
}

fn guard_key(c: &Column, p: &Param) -> String {
    format!("{}:{}", c.name, hex::encode(enc_params([p])))
}

impl DynamoDriver {
    async fn read_old(&self, t: &Table, key: &Item) -> Result<Option<Old>, DbError> {
        let req = json!({"TableName": self.name(t), "Key": key, "ConsistentRead": true});
        let v = self
            .client
            .call("GetItem", &req)
            .await
            .map_err(CallError::into_db)?;
        Ok(v.get("Item").and_then(Value::as_object).map(|item| Old {
            row: super::item::from_item(t, item),
            version: item
                .get(VERSION)
                .and_then(|a| a.get("N"))
                .and_then(Value::as_str)
                .and_then(|n| n.parse().ok()),
        }))
    }

    /// Writes `new` (or deletes the row when None) over `old` with the guards of its unique
    /// values, in one transaction.
    async fn transact(
        &self,
        t: &Table,
        keys: &[(&Column, Param)],
        old: Option<&Old>,
        new: Option<&Row>,
    ) -> Result<(), Conflict> {
        let key = key_item(keys).map_err(Conflict::Other)?;
        let owner = hex::encode(enc_params(keys.iter().map(|(_, p)| p)));
        let mut e = Expr::default();
        let hash = &t.primary_keys()[0].name;
        let cond = match old {
            None => {
                let h = e.name(hash);
                format!("attribute_not_exists({h})")
            }
            Some(Old {
                version: Some(v), ..
            }) => {
                let n = e.name(VERSION);
                let val = e.value(json!({"N": v.to_string()}));
                format!("{n} = {val}")
            }
            Some(Old { version: None, .. }) => {
                let h = e.name(hash);
                let n = e.name(VERSION);
                format!("attribute_exists({h}) AND attribute_not_exists({n})")
            }
        };
        let mut row_op = match new {
            Some(r) => {
                let mut item = to_item(t, r);
                let v = old.and_then(|o| o.version).unwrap_or(0) + 1;
                item.insert(VERSION.into(), json!({"N": v.to_string()}));
                json!({"Put": {"TableName": self.name(t), "Item": item, "ConditionExpression": cond}})
            }
            None => {
                json!({"Delete": {"TableName": self.name(t), "Key": key, "ConditionExpression": cond}})
            }
        };
        let body = row_op
            .as_object_mut()
            .and_then(|o| o.values_mut().next())
            .expect("one operation");
        e.apply(body);
        let mut items = vec![row_op];
        let guards = self.guard_name(t);
        for c in t.columns().iter().filter(|c| c.unique && c.primary == 0) {
            let before = old.map(|o| stored_param(c.kind, o.row.get(&c.name)));
            let after = new.map(|r| stored_param(c.kind, r.get(&c.name)));
            let before = before.filter(|p| *p != Param::Null);
            let after = after.filter(|p| *p != Param::Null);
            if before == after {
                continue;
            }
            if let Some(p) = &before {
                items.push(json!({"Delete": {
                    "TableName": guards,
                    "Key": {"u": {"S": guard_key(c, p)}},
                    "ConditionExpression": "attribute_not_exists(u) OR #p = :p",
                    "ExpressionAttributeNames": {"#p": "p"},
                    "ExpressionAttributeValues": {":p": {"S": owner}},
                }}));
            }
            if let Some(p) = &after {
                items.push(json!({"Put": {
                    "TableName": guards,
                    "Item": {"u": {"S": guard_key(c, p)}, "p": {"S": owner}},
                    "ConditionExpression": "attribute_not_exists(u)",
                }}));
            }
        }
        match self
            .client
            .call("TransactWriteItems", &json!({"TransactItems": items}))
            .await
        {
            Ok(_) => Ok(()),
            Err(CallError::Service {
                code,
                message,
                body,
            }) if code == "TransactionCanceledException" => {
                let reasons: Vec<String> =
                    match body.get("CancellationReasons").and_then(Value::as_array) {
                        Some(a) => a
                            .iter()
                            .map(|r| {
                                r.get("Code")
                                    .and_then(Value::as_str)
                                    .unwrap_or("None")
                                    .to_string()
                            })
                            .collect(),
                        // "... [ConditionalCheckFailed, None]" in the message.
                        None => message
                            .rsplit_once('[')
                            .map(|(_, r)| {
                                r.trim_end_matches(']')
                                    .split(',')
                                    .map(|s| s.trim().to_string())
                                    .collect()
                            })
                            .unwrap_or_default(),
                    };
                let failed = |r: &String| r != "None" && !r.is_empty();
                if reasons
                    .iter()
                    .skip(1)
                    .any(|r| r == "ConditionalCheckFailed")
                {
                    Err(Conflict::Taken)
                } else if reasons.first().is_some_and(failed)
                    || reasons.iter().any(|r| r == "TransactionConflict")
                {
                    Err(Conflict::Row)
                } else {
                    Err(Conflict::Other(DbError::Busy(format!(
                        "dynamodb: transaction cancelled: {message}"
                    ))))
                }
            }
            Err(e) if e.code() == Some("TransactionConflictException") => Err(Conflict::Row),
            Err(e) => Err(Conflict::Other(e.into_db())),
        }
    }

    /// put / add (`add_only`) / update / incr of a table with unique columns.
    pub(super) async fn unique_write(
        &self,
        t: &Table,
        vals: &[(&Column, Param)],
        mode: WriteMode,
        add_only: bool,
        opts: &Options,
    ) -> Result<Res, DbError> {
        let keys = write_keys(t, vals)?;
        let key = key_item(&keys)?;
        for _ in 0..ATTEMPTS {
            let old = self.read_old(t, &key).await?;
            let new = match mode {
                WriteMode::Insert => {
                    if add_only && old.is_some() {
                        return Err(DbError::Exists);
                    }
                    build_row(vals)
                }
                WriteMode::Update => {
                    let mut r = old.as_ref().ok_or(DbError::NotFound)?.row.clone();
                    for (c, p) in vals.iter().filter(|(c, _)| c.primary == 0) {
                        set_stored(&mut r, c, p);
                    }
                    r
                }
                WriteMode::Incr => match &old {
                    None => build_row(vals),
                    Some(o) => {
                        let mut r = o.row.clone();
                        for (c, p) in vals.iter().filter(|(c, _)| c.primary == 0) {
                            if c.kind.is_numeric() {
                                let sum = add_params(stored_param(c.kind, r.get(&c.name)), p);
                                set_stored(&mut r, c, &sum);
                            } else {
                                set_stored(&mut r, c, p);
                            }
                        }
                        r
                    }
                },
            };
            match self.transact(t, &keys, old.as_ref(), Some(&new)).await {
                Ok(()) => {
                    let rows = if mode == WriteMode::Incr {
                        vec![project(&new, &select_columns(t, opts))]
                    } else {
                        Vec::new()
                    };
                    return Ok(Res {
                        rows,
                        affected: 1,
                        ..Res::default()
                    });
                }
                Err(Conflict::Row) => continue,
                Err(Conflict::Taken) => return Err(DbError::Exists),
                Err(Conflict::Other(e)) => return Err(e),
            }
        }
        Err(DbError::Busy(format!(
            "dynamodb: {}: the row kept changing during {ATTEMPTS} attempts",
            t.name()
        )))
    }

    /// del of a table with unique columns: the row and its guards.
    pub(super) async fn unique_del(
        &self,
        t: &Table,
        keys: &[(&Column, Param)],
        _opts: &Options,
    ) -> Result<Res, DbError> {
        let key = key_item(keys)?;
        for _ in 0..ATTEMPTS {
            let Some(old) = self.read_old(t, &key).await? else {
                return Ok(Res::default());
            };
            match self.transact(t, keys, Some(&old), None).await {
                Ok(()) => {
                    return Ok(Res {
                        affected: 1,
                        ..Res::default()
                    })
                }
                Err(Conflict::Row) => continue,
                Err(Conflict::Taken) => return Err(DbError::Exists),
                Err(Conflict::Other(e)) => return Err(e),
            }
        }
        Err(DbError::Busy(format!(
            "dynamodb: {}: the row kept changing during {ATTEMPTS} attempts",
            t.name()
        )))
    }
}
