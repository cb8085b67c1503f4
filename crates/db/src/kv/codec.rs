//! How the key-value drivers (sled, Redis, DynamoDB) hold rows and keys: an order-preserving byte
//! encoding of key values (so byte order is SQLite's value order), and rows as JSON objects with
//! values stored as SQLite returns them.

use crate::error::DbError;
use crate::options::page;
use crate::schema::{Column, ColumnType, Table};
use crate::types::{Param, Res, Row};
use serde_json::Value;

pub(crate) fn no_table(t: &Table) -> DbError {
    DbError::Driver(format!("no such table: {}", t.name()))
}

pub(crate) const TAG_NULL: u8 = 0x01;
pub(crate) const TAG_INT: u8 = 0x02;
pub(crate) const TAG_REAL: u8 = 0x03;
pub(crate) const TAG_TEXT: u8 = 0x04;

/// Appends the order-preserving, self-delimiting encoding of `p`: byte order of encodings is
/// SQLite's order of values of one column type, and a composite key compares column by column.
pub(crate) fn enc(out: &mut Vec<u8>, p: &Param) {
    match p {
        Param::Null => out.push(TAG_NULL),
        Param::Int(i) => {
            out.push(TAG_INT);
            out.extend_from_slice(&((*i as u64) ^ (1 << 63)).to_be_bytes());
        }
        Param::Real(f) => {
            out.push(TAG_REAL);
            // -0.0 equals 0.0 in SQL.
            let bits = if *f == 0.0 { 0 } else { f.to_bits() };
            let bits = if bits >> 63 == 1 {
                !bits
            } else {
                bits ^ (1 << 63)
            };
            out.extend_from_slice(&bits.to_be_bytes());
        }
        Param::Text(s) => {
            out.push(TAG_TEXT);
            enc_text_body(out, s);
            out.extend_from_slice(&[0, 1]);
        }
    }
}

/// Text bytes with NUL escaped as `00 FF`, so the `00 01` terminator sorts before any content.
pub(crate) fn enc_text_body(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        if b == 0 {
            out.extend_from_slice(&[0, 0xFF]);
        } else {
            out.push(b);
        }
    }
}

/// The smallest byte string greater than every string starting with `prefix`; None when
/// unbounded.
pub(crate) fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut v = prefix.to_vec();
    while let Some(last) = v.pop() {
        if last < 0xFF {
            v.push(last + 1);
            return Some(v);
        }
    }
    None
}

pub(crate) fn enc_params<'a>(params: impl IntoIterator<Item = &'a Param>) -> Vec<u8> {
    let mut out = Vec::new();
    for p in params {
        enc(&mut out, p);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Stored values

/// A written value as the row stores it (what reads return); None for NULL.
pub(crate) fn to_stored(kind: ColumnType, p: &Param) -> Option<Value> {
    match p {
        Param::Null => None,
        Param::Int(i) if kind == ColumnType::Bool => Some(Value::Bool(*i != 0)),
        Param::Int(i) => Some(Value::from(*i)),
        // SQLite stores NaN as NULL.
        Param::Real(f) => serde_json::Number::from_f64(*f).map(Value::Number),
        Param::Text(s) if kind == ColumnType::Json => {
            Some(serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone())))
        }
        Param::Text(s) => Some(Value::String(s.clone())),
    }
}

/// A stored value as SQLite would hold it (for comparisons, sorting and index keys).
pub(crate) fn stored_param(kind: ColumnType, v: Option<&Value>) -> Param {
    match v {
        None | Some(Value::Null) => Param::Null,
        Some(v) if kind == ColumnType::Json => Param::Text(v.to_string()),
        Some(Value::Bool(b)) => Param::Int(*b as i64),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) => Param::Int(i),
            None => Param::Real(n.as_f64().unwrap_or(0.0)),
        },
        Some(Value::String(s)) => Param::Text(s.clone()),
        Some(other) => Param::Text(other.to_string()),
    }
}

/// The row a write stores: the non-null values in stored form.
pub(crate) fn build_row(vals: &[(&Column, Param)]) -> Row {
    let mut r = Row::new();
    for (c, p) in vals {
        if let Some(v) = to_stored(c.kind, p) {
            r.insert(c.name.clone(), v);
        }
    }
    r
}

/// Sets one column of a stored row (NULL removes it).
pub(crate) fn set_stored(r: &mut Row, c: &Column, p: &Param) {
    match to_stored(c.kind, p) {
        Some(v) => {
            r.insert(c.name.clone(), v);
        }
        None => {
            r.remove(&c.name);
        }
    }
}

/// `COALESCE(old, 0) + n` with SQLite's arithmetic (integer overflow turns into a real).
pub(crate) fn add_params(old: Param, n: &Param) -> Param {
    let num = |p: &Param| match p {
        Param::Int(i) => *i as f64,
        Param::Real(f) => *f,
        Param::Text(s) => s.trim().parse().unwrap_or(0.0),
        Param::Null => 0.0,
    };
    let old = if old == Param::Null {
        Param::Int(0)
    } else {
        old
    };
    match (&old, n) {
        (_, Param::Null) => Param::Null,
        (Param::Int(a), Param::Int(b)) => a
            .checked_add(*b)
            .map_or(Param::Real(*a as f64 + *b as f64), Param::Int),
        (a, b) => Param::Real(num(a) + num(b)),
    }
}

/// The primary key of the values a write stores, encoded.
pub(crate) fn write_key(table: &Table, vals: &[(&Column, Param)]) -> Result<Vec<u8>, DbError> {
    let mut out = Vec::new();
    for k in table.primary_keys() {
        let p = vals
            .iter()
            .find(|(c, _)| c.name == k.name)
            .map(|(_, p)| p)
            .ok_or_else(|| DbError::BadValue {
                column: k.name.clone(),
                reason: "primary key value required".into(),
            })?;
        enc(&mut out, p);
    }
    Ok(out)
}

pub(crate) fn parse_row(bytes: &[u8]) -> Result<Row, DbError> {
    serde_json::from_slice(bytes).map_err(|e| DbError::Driver(format!("corrupt row: {e}")))
}

/// The columns of `cols` present in the stored row, in order.
pub(crate) fn project(row: &Row, cols: &[&Column]) -> Row {
    let mut out = Row::new();
    for c in cols {
        if let Some(v) = row.get(&c.name) {
            out.insert(c.name.clone(), v.clone());
        }
    }
    out
}

/// One page of a select's matching rows, in the select's order: the `count` rows from `offset`,
/// projected on `cols`, the token of the next page, and the total when asked.
pub(crate) fn page_of(
    rows: &[Row],
    cols: &[&Column],
    offset: usize,
    count: usize,
    total: bool,
) -> Res {
    let total = total.then_some(rows.len() as u64);
    let rows: Vec<Row> = rows
        .iter()
        .skip(offset)
        .take(count.saturating_add(1))
        .map(|r| project(r, cols))
        .collect();
    let (rows, next_token) = page(rows, count, offset as u64);
    Res {
        rows,
        affected: 0,
        next_token,
        total,
    }
}
