//! The row and options of a DB request read from HTTP parameters (`_select`, `_count`, `_ops`,
//! ...): `/data/*` and every group that lists rows read them the same way.

use crate::params::Params;
use bkjs_db::{DbError, Op, Options, Row};
use serde_json::{json, Value};
use std::str::FromStr;

/// `a,b` → ["a","b"]; a JSON array stays as it is.
pub(crate) fn split_list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::String(s) => s
            .split(',')
            .filter(|x| !x.is_empty())
            .map(|x| json!(x))
            .collect(),
        other => vec![other.clone()],
    }
}

/// Control parameters only endpoint groups listed in `-api-unsecure` accept (SPEC §6).
pub(crate) const UNSECURE: &[&str] = &["_pool", "_noscan", "_noprocessrows"];

fn flag(v: &str) -> bool {
    matches!(v, "1" | "true" | "yes" | "on")
}

/// The row (non-`_` parameters) and options (`_` parameters) of a request. `_noscan`, `_pool`
/// and `_noprocessrows` reach here only for groups in `-api-unsecure`: the router refuses them
/// everywhere else ([`UNSECURE`]).
pub(crate) fn request(params: &Params) -> Result<(Row, Options), DbError> {
    let mut row = Row::new();
    let mut opts = Options::default();
    for (k, v) in params.pairs() {
        match k.strip_prefix('_') {
            None => {
                let value = params
                    .json(k)
                    .cloned()
                    .unwrap_or_else(|| Value::String(v.clone()));
                row.insert(k.clone(), value);
            }
            Some("select") => {
                opts.select = v
                    .split(',')
                    .filter(|x| !x.is_empty())
                    .map(str::to_string)
                    .collect()
            }
            Some("count") => {
                let n: usize = v
                    .parse()
                    .map_err(|_| DbError::bad_value("_count", "not a number"))?;
                opts.count = n.clamp(1, 100);
            }
            Some("start" | "token") => opts.start = Some(v.clone()).filter(|s| !s.is_empty()),
            Some("sort") => opts.sort = Some(v.clone()).filter(|s| !s.is_empty()),
            Some("desc") => opts.desc = flag(v),
            Some("total") => opts.total = flag(v),
            Some("skip_null") => opts.skip_null = flag(v),
            Some("check_mtime") => opts.check_mtime = Some(v.clone()).filter(|s| !s.is_empty()),
            Some("check_data") => opts.check_data = flag(v),
            Some("cached") => opts.cached = flag(v),
            Some("noscan") => opts.noscan = flag(v),
            Some("noprocessrows") => opts.noprocessrows = flag(v),
            Some("pool") => opts.pool = Some(v.clone()).filter(|p| !p.is_empty()),
            Some("ops") => {
                let parts: Vec<&str> = v.split(',').collect();
                if parts.len() % 2 != 0 {
                    return Err(DbError::bad_value("_ops", "expected col,op,col,op"));
                }
                for pair in parts.chunks(2) {
                    let op = Op::from_str(pair[1].trim())?;
                    opts.ops.insert(pair[0].trim().to_string(), op);
                }
            }
            Some(_) => {}
        }
    }
    // List operators take several values: `a,b` from a query string becomes an array.
    for (col, op) in &opts.ops {
        if matches!(op, Op::In | Op::NotIn | Op::Between | Op::NotBetween) {
            if let Some(v @ Value::String(_)) = row.get(col) {
                let list = split_list(v);
                row.insert(col.clone(), Value::Array(list));
            }
        }
    }
    Ok((row, opts))
}
