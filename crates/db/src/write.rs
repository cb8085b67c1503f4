//! Write preparation every driver must apply identically: type coercion of values ([`encode`]),
//! defaults, `now`, `join`, allowed values and `notnull` ([`prepare_write`]), primary keys
//! ([`key_params`]) and the parameters of native queries ([`query_param`]).

use crate::error::DbError;
use crate::options::Options;
use crate::schema::{Column, ColumnType, Table};
use crate::types::{Param, Row};
use serde_json::Value;

/// A JSON parameter of a native query (drivers bind it by the type the statement expects).
pub(crate) fn query_param(v: &Value) -> Param {
    match v {
        Value::Null => Param::Null,
        Value::Bool(b) => Param::Int(*b as i64),
        Value::Number(n) => n
            .as_i64()
            .map(Param::Int)
            .unwrap_or_else(|| Param::Real(n.as_f64().unwrap_or(0.0))),
        Value::String(s) => Param::Text(s.clone()),
        other => Param::Text(other.to_string()),
    }
}

/// The text form of a scalar (for text columns, `values` checks and text operators).
pub(crate) fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Converts `v` to what column `col` stores.
pub(crate) fn encode(col: &Column, v: &Value) -> Result<Param, DbError> {
    if v.is_null() {
        return Ok(Param::Null);
    }
    let bad = |why: &str| Err(DbError::bad_value(&col.name, why));
    match col.kind {
        ColumnType::Text => match v {
            Value::Array(_) | Value::Object(_) => bad("expected text"),
            _ => Ok(Param::Text(scalar_text(v))),
        },
        ColumnType::Json => Ok(Param::Text(v.to_string())),
        ColumnType::Real => match v {
            Value::Number(n) => n
                .as_f64()
                .map(Param::Real)
                .map_or_else(|| bad("expected a number"), Ok),
            Value::String(s) => s
                .trim()
                .parse::<f64>()
                .map(Param::Real)
                .or_else(|_| bad("expected a number")),
            _ => bad("expected a number"),
        },
        ColumnType::Bool => match v {
            Value::Bool(b) => Ok(Param::Int(*b as i64)),
            Value::Number(n) => Ok(Param::Int((n.as_f64() != Some(0.0)) as i64)),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "t" | "yes" | "on" => Ok(Param::Int(1)),
                "false" | "0" | "f" | "no" | "off" | "" => Ok(Param::Int(0)),
                _ => bad("expected a bool"),
            },
            _ => bad("expected a bool"),
        },
        ColumnType::Date => match v {
            Value::String(s) if !s.trim().is_empty() && s.trim().parse::<i64>().is_err() => {
                match humantime::parse_rfc3339_weak(s.trim()) {
                    Ok(t) => Ok(Param::Int(
                        t.duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_millis() as i64)
                            .unwrap_or(0),
                    )),
                    Err(_) => bad("expected milliseconds or an RFC 3339 date"),
                }
            }
            _ => encode_int(col, v),
        },
        ColumnType::Int | ColumnType::Bigint | ColumnType::Counter => encode_int(col, v),
    }
}

fn encode_int(col: &Column, v: &Value) -> Result<Param, DbError> {
    let n = match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        Value::Bool(b) => Some(*b as i64),
        _ => None,
    };
    n.map(Param::Int)
        .ok_or_else(|| DbError::bad_value(&col.name, "expected an integer"))
}

/// What a write does, for [`prepare_write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteMode {
    /// add / put: defaults apply, `notnull` is enforced.
    Insert,
    /// update: only given columns, `readonly` columns are ignored.
    Update,
    /// incr: given columns; numeric ones are increments.
    Incr,
}

/// The columns a write stores, in table order, with encoded values: keys first checked present,
/// unknown row keys ignored, `skip_columns`/`skip_null` applied, `join` composites built, `now`
/// columns set, defaults and `notnull` applied on insert, `values` enforced.
pub(crate) fn prepare_write<'t>(
    table: &'t Table,
    row: &Row,
    opts: &Options,
    mode: WriteMode,
) -> Result<Vec<(&'t Column, Param)>, DbError> {
    let now = bkjs_base::time::now_ms();
    // Defaults first, so that `join` composites see them (a copy only when a default applies).
    let missing = |c: &Column| c.value.is_some() && row.get(&c.name).is_none_or(Value::is_null);
    let mut defaulted;
    let mut row = row;
    if mode == WriteMode::Insert && table.columns().iter().any(missing) {
        defaulted = row.clone();
        for col in table.columns().iter().filter(|c| missing(c)) {
            if let Some(d) = &col.value {
                defaulted.insert(col.name.clone(), d.clone());
            }
        }
        row = &defaulted;
    }
    let mut out = Vec::new();
    for col in table.columns() {
        if col.primary == 0 && opts.skip_columns.iter().any(|s| s == &col.name) {
            continue;
        }
        let mut v = row.get(&col.name).cloned();
        if v.is_none() && !col.join.is_empty() {
            let parts: Option<Vec<String>> = col
                .join
                .iter()
                .map(|s| row.get(s).map(scalar_text))
                .collect();
            v = parts.map(|p| Value::String(p.join(":")));
        }
        if col.now {
            v = Some(match col.kind {
                ColumnType::Text | ColumnType::Json => Value::String(now.to_string()),
                _ => Value::from(now),
            });
        }
        if col.primary > 0 {
            match &v {
                Some(x) if !x.is_null() && !scalar_text(x).is_empty() => {}
                _ => return Err(DbError::bad_value(&col.name, "primary key value required")),
            }
        }
        if mode == WriteMode::Update && col.readonly && col.primary == 0 {
            continue;
        }
        let Some(v) = v else {
            if mode == WriteMode::Insert && col.notnull {
                return Err(DbError::bad_value(&col.name, "a value is required"));
            }
            continue;
        };
        if v.is_null() {
            if opts.skip_null {
                continue;
            }
            if col.notnull {
                return Err(DbError::bad_value(&col.name, "must not be null"));
            }
        } else if !col.values.is_empty() && (mode != WriteMode::Incr || !col.kind.is_numeric()) {
            let t = scalar_text(&v);
            if !col.values.iter().any(|a| a == &t) {
                return Err(DbError::bad_value(
                    &col.name,
                    format!("{t:?} is not one of {:?}", col.values),
                ));
            }
        }
        out.push((col, encode(col, &v)?));
    }
    Ok(out)
}

/// The primary key of `key`, encoded, in key order.
pub(crate) fn key_params<'t>(
    table: &'t Table,
    key: &Row,
) -> Result<Vec<(&'t Column, Param)>, DbError> {
    table
        .primary_keys()
        .into_iter()
        .map(|c| match key.get(&c.name) {
            Some(v) if !v.is_null() => Ok((c, encode(c, v)?)),
            _ => Err(DbError::bad_value(&c.name, "primary key value required")),
        })
        .collect()
}
