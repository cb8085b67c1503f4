//! Rows as DynamoDB items and back: every described column is one attribute named like the
//! column, typed from the stored value (`S` text, `N` number, `BOOL`); a `json` column is its JSON
//! text in an `S`, so any JSON value round-trips. Key attributes take their type from the column
//! (`S` for text, `N` for numbers). Reads keep only described columns, so hidden attributes (the
//! version `_v` of tables with unique columns) never come back.

use crate::error::DbError;
use crate::schema::{Column, ColumnType, Table};
use crate::types::{Param, Row};
use serde_json::{json, Map, Value};

/// A DynamoDB item (attribute name -> typed value).
pub(crate) type Item = Map<String, Value>;

/// The DynamoDB scalar type of a key column: `S` or `N`; bool keys are refused.
pub(crate) fn key_type(t: &Table, c: &Column) -> Result<&'static str, DbError> {
    match c.kind {
        ColumnType::Text | ColumnType::Json => Ok("S"),
        ColumnType::Bool => Err(DbError::Unsupported(format!(
            "dynamodb: {}.{}: a bool column cannot be a DynamoDB key",
            t.name(),
            c.name
        ))),
        _ => Ok("N"),
    }
}

/// A stored value as a typed attribute; None for NULL.
pub(crate) fn attr(kind: ColumnType, v: &Value) -> Option<Value> {
    Some(match v {
        Value::Null => return None,
        v if kind == ColumnType::Json => json!({ "S": v.to_string() }),
        Value::Bool(b) => json!({ "BOOL": b }),
        Value::Number(n) => json!({ "N": n.to_string() }),
        Value::String(s) => json!({ "S": s }),
        other => json!({ "S": other.to_string() }),
    })
}

/// A bound value (key or condition) as a typed attribute; None for NULL.
pub(crate) fn param_attr(p: &Param) -> Option<Value> {
    Some(match p {
        Param::Null => return None,
        Param::Int(i) => json!({ "N": i.to_string() }),
        Param::Real(f) => json!({ "N": number_text(*f) }),
        Param::Text(s) => json!({ "S": s }),
    })
}

/// A float as DynamoDB number text (no `inf`/`NaN`: they are stored as NULL before this).
fn number_text(f: f64) -> String {
    serde_json::Number::from_f64(f)
        .map(|n| n.to_string())
        .unwrap_or_else(|| "0".into())
}

/// Whether a bound value fits a key attribute of this column (so it may go into a key
/// condition; otherwise it is only evaluated in memory).
pub(crate) fn fits_key(c: &Column, p: &Param) -> bool {
    match p {
        Param::Text(s) => matches!(c.kind, ColumnType::Text | ColumnType::Json) && !s.is_empty(),
        Param::Int(_) | Param::Real(_) => !matches!(
            c.kind,
            ColumnType::Text | ColumnType::Json | ColumnType::Bool
        ),
        Param::Null => false,
    }
}

/// The item of a stored row (values as `kv::codec` stores them).
pub(crate) fn to_item(t: &Table, row: &Row) -> Item {
    let mut item = Item::new();
    for (name, v) in row {
        if let Some(c) = t.column(name) {
            if let Some(a) = attr(c.kind, v) {
                item.insert(name.clone(), a);
            }
        }
    }
    item
}

/// The key attributes of a row from its encoded primary key values.
pub(crate) fn key_item(keys: &[(&Column, Param)]) -> Result<Item, DbError> {
    let mut item = Item::new();
    for (c, p) in keys {
        let a = param_attr(p)
            .ok_or_else(|| DbError::bad_value(&c.name, "primary key value required"))?;
        item.insert(c.name.clone(), a);
    }
    Ok(item)
}

/// One attribute in stored form; None when its type does not fit.
fn stored(kind: ColumnType, a: &Value) -> Option<Value> {
    let (ty, v) = a.as_object()?.iter().next()?;
    match (ty.as_str(), v) {
        ("S", Value::String(s)) if kind == ColumnType::Json => {
            Some(serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone())))
        }
        ("S", Value::String(s)) => Some(Value::String(s.clone())),
        ("BOOL", Value::Bool(b)) => Some(Value::Bool(*b)),
        ("N", Value::String(n)) => {
            if kind == ColumnType::Real {
                return n
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number);
            }
            match n.parse::<i64>() {
                Ok(i) => Some(Value::from(i)),
                Err(_) => n
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number),
            }
        }
        ("NULL", _) => None,
        _ => None,
    }
}

/// The stored row of an item: described columns only.
pub(crate) fn from_item(t: &Table, item: &Item) -> Row {
    let mut row = Row::new();
    for c in t.columns() {
        if let Some(v) = item.get(&c.name).and_then(|a| stored(c.kind, a)) {
            row.insert(c.name.clone(), v);
        }
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::items_table;

    #[test]
    fn rows_round_trip_through_items() {
        let t = items_table([]);
        let row = crate::conformance::row(json!({
            "id": "a", "rk": "1", "num": -5, "name": "", "flag": true, "cnt": 7,
            "score": 2.0, "mtime": 1_700_000_000_000i64,
            "data": {"x": [1, "two", null], "s": "text"},
        }));
        let item = to_item(&t, &row);
        assert_eq!(item["num"], json!({"N": "-5"}));
        assert_eq!(item["flag"], json!({"BOOL": true}));
        assert_eq!(from_item(&t, &item), row);
        for data in [
            json!("just text"),
            json!("{\"looks\": 1}"),
            json!(42),
            json!([]),
        ] {
            let mut r = Row::new();
            r.insert("data".into(), data.clone());
            assert_eq!(from_item(&t, &to_item(&t, &r))["data"], data);
        }
        let mut extra = item.clone();
        extra.insert("_v".into(), json!({"N": "3"}));
        extra.insert("other".into(), json!({"S": "x"}));
        assert_eq!(
            from_item(&t, &extra),
            row,
            "undescribed attributes are not read"
        );
    }
}
