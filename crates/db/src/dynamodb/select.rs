//! Selects on DynamoDB: a Query per hash key value when the first key column is given with `=` or
//! `in` (a range condition on the second key column becomes the KeyConditionExpression), a Scan
//! otherwise (refused without conditions under `noscan`). Every condition is evaluated in memory
//! on the items read ([`crate::kv::filter`], SQLite's semantics), rows are sorted in memory by the
//! select's order, and pages are offsets into that order, as with every driver. When the order is
//! the key order of one Query and no total is asked, reading stops after the page; otherwise
//! every matching item is read, at most [`MAX_READ`].

use super::client::CallError;
use super::item::{fits_key, from_item, Item};
use super::ops::{typed, Expr};
use super::{DynamoDriver, MAX_READ};
use crate::error::DbError;
use crate::kv::codec::{enc_params, page_of};
use crate::kv::filter::{compare, compile, matches, sort_rows, Cond, Test};
use crate::options::Options;
use crate::query::{order_columns, select_columns};
use crate::schema::{Column, Table};
use crate::types::{Op, Param, Res, Row};
use serde_json::{json, Value};
use std::cmp::Ordering;

/// The KeyConditionExpression part of a range condition, when DynamoDB can answer it.
fn range_condition(range: &Column, conds: &[Cond<'_>], e: &mut Expr) -> Option<String> {
    let cond = conds.iter().find(|c| c.col.name == range.name)?;
    let op = |e: &mut Expr, sym: &str, p: &Param| {
        let v = e.value(typed(p)?);
        let n = e.name(&range.name);
        Some(format!("{n} {sym} {v}"))
    };
    match &cond.test {
        Test::Cmp(o, p) if fits_key(range, p) => match o {
            Op::Eq => op(e, "=", p),
            Op::Lt => op(e, "<", p),
            Op::Le => op(e, "<=", p),
            Op::Gt => op(e, ">", p),
            Op::Ge => op(e, ">=", p),
            _ => None,
        },
        Test::Between(lo, hi)
            if fits_key(range, lo)
                && fits_key(range, hi)
                && compare(lo, hi).is_some_and(|o| o != Ordering::Greater) =>
        {
            let n = e.name(&range.name);
            let (lo, hi) = (e.value(typed(lo)?), e.value(typed(hi)?));
            Some(format!("{n} BETWEEN {lo} AND {hi}"))
        }
        Test::Prefix(ps) if ps.len() == 1 && fits_key(range, &Param::Text(ps[0].clone())) => {
            let n = e.name(&range.name);
            let v = e.value(json!({ "S": ps[0] }));
            Some(format!("begins_with({n}, {v})"))
        }
        _ => None,
    }
}

/// The hash key values a select is limited to (`=` or `in` on the first key column), in key
/// order; None when it is not.
fn hash_values(hash: &Column, conds: &[Cond<'_>]) -> Option<Vec<Param>> {
    let cond = conds.iter().find(|c| c.col.name == hash.name)?;
    let mut vals = match &cond.test {
        Test::Cmp(Op::Eq, p) if *p != Param::Null => vec![p.clone()],
        Test::In(items) => items
            .iter()
            .filter(|p| **p != Param::Null)
            .cloned()
            .collect(),
        _ => return None,
    };
    if !vals.iter().all(|p| fits_key(hash, p)) {
        return None;
    }
    vals.sort_by_key(|p| enc_params([p]));
    vals.dedup();
    Some(vals)
}

/// The rows a select gathered: at most `limit` when given, counting the items read.
struct Gathered {
    limit: Option<usize>,
    read: usize,
    rows: Vec<Row>,
}

impl DynamoDriver {
    /// Reads every page of a Query or Scan request, keeping the items matching `conds`, until
    /// `limit` matches when given.
    async fn read_all(
        &self,
        op: &str,
        mut req: Value,
        t: &Table,
        conds: &[Cond<'_>],
        out: &mut Gathered,
    ) -> Result<(), DbError> {
        loop {
            let v = self
                .client
                .call(op, &req)
                .await
                .map_err(CallError::into_db)?;
            let items = v.get("Items").and_then(Value::as_array);
            for item in items.into_iter().flatten() {
                out.read += 1;
                if out.read > MAX_READ {
                    return Err(DbError::Unsupported(format!(
                        "dynamodb: a select reading more than {MAX_READ} items of {}; add a condition on the hash key {}",
                        t.name(),
                        t.primary_keys()[0].name
                    )));
                }
                let Some(item) = item.as_object() else {
                    continue;
                };
                let row = from_item(t, item as &Item);
                if matches(conds, &row) {
                    out.rows.push(row);
                    if out.limit.is_some_and(|l| out.rows.len() >= l) {
                        return Ok(());
                    }
                }
            }
            match v.get("LastEvaluatedKey") {
                Some(k) if k.is_object() => req["ExclusiveStartKey"] = k.clone(),
                _ => return Ok(()),
            }
        }
    }

    pub(super) async fn select_rows(
        &self,
        table: &Table,
        query: &Row,
        opts: &Options,
    ) -> Result<Res, DbError> {
        let offset = usize::try_from(opts.offset()?).unwrap_or(usize::MAX);
        let count = opts.page_size();
        let cols = select_columns(table, opts);
        let conds = compile(table, query, opts)?;
        if conds.is_empty() && opts.noscan {
            return Err(DbError::NoCondition);
        }
        let order = order_columns(table, opts)?;
        let pks = table.primary_keys();
        let (hash, range) = (pks[0], pks.get(1).copied());
        let mut got = Gathered {
            limit: None,
            read: 0,
            rows: Vec::new(),
        };
        if !conds.iter().any(|c| matches!(c.test, Test::Const(false))) {
            match hash_values(hash, &conds) {
                Some(mut vals) => {
                    // One Query returns its rows in key order: when that is the select's order,
                    // reading may stop after the page.
                    let key_order = vals.len() == 1
                        && order.first().is_some_and(|c| {
                            c.name == hash.name || range.is_some_and(|r| r.name == c.name)
                        });
                    got.limit = (key_order && !opts.total)
                        .then(|| offset.saturating_add(count).saturating_add(1));
                    if opts.desc {
                        vals.reverse();
                    }
                    for v in &vals {
                        let mut e = Expr::default();
                        let h = e.name(&hash.name);
                        let hv = e.value(typed(v).ok_or_else(|| {
                            DbError::bad_value(&hash.name, "primary key value required")
                        })?);
                        let mut kc = format!("{h} = {hv}");
                        if let Some(rc) = range.and_then(|r| range_condition(r, &conds, &mut e)) {
                            kc = format!("{kc} AND {rc}");
                        }
                        let mut req = json!({
                            "TableName": self.name(table),
                            "KeyConditionExpression": kc,
                            "ConsistentRead": true,
                            "ScanIndexForward": !opts.desc,
                        });
                        e.apply(&mut req);
                        self.read_all("Query", req, table, &conds, &mut got).await?;
                    }
                }
                None => {
                    let req = json!({"TableName": self.name(table), "ConsistentRead": true});
                    self.read_all("Scan", req, table, &conds, &mut got).await?;
                }
            }
        }
        let mut rows = got.rows;
        sort_rows(&mut rows, &order, opts.desc);
        Ok(page_of(&rows, &cols, offset, count, opts.total))
    }
}
