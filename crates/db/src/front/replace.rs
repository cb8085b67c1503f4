//! `replace` on any driver: a conditional `put` that reads the stored row first and skips the
//! write when that row is newer (`check_mtime`) or already holds the same data (`check_data`).

use crate::driver::Driver;
use crate::error::DbError;
use crate::options::Options;
use crate::schema::Table;
use crate::types::{Res, Row};
use serde_json::Value;

/// `replace` on one driver: reads the stored row and writes only when `check_mtime`'s column
/// is older there (or absent) and, with `check_data`, when some given value differs.
pub(crate) async fn replace_on(
    d: &dyn Driver,
    t: &Table,
    row: &Row,
    opts: &Options,
) -> Result<Res, DbError> {
    if opts.check_mtime.is_some() || opts.check_data {
        if let Some(old) = d.get(t, row, &Options::default()).await? {
            if let Some(col) = &opts.check_mtime {
                let newer = match (old.get(col).and_then(num), row.get(col).and_then(num)) {
                    (Some(o), Some(n)) => o >= n,
                    _ => false,
                };
                if newer {
                    return Ok(Res::default());
                }
            }
            if opts.check_data
                && row
                    .iter()
                    .all(|(k, v)| old.get(k).is_none_or(|o| same(o, v)))
            {
                return Ok(Res::default());
            }
        }
    }
    d.put(t, row, opts).await
}

/// A number from a JSON number or numeric string.
fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Equal as stored: numbers and numeric strings compare by value, booleans also match their
/// stored forms (`1`/`0`, `true`/`false`), everything else exactly.
fn same(a: &Value, b: &Value) -> bool {
    match (num(a), num(b)) {
        (Some(x), Some(y)) => x == y,
        _ => match (a, b) {
            (Value::String(s), Value::Bool(v)) | (Value::Bool(v), Value::String(s)) => {
                let (word, digit) = if *v { ("true", "1") } else { ("false", "0") };
                s == word || s == digit
            }
            _ => a == b,
        },
    }
}
