//! Where the Redis driver keeps things, and the form of a row in its hash: the one place that
//! knows the key layout, so tests and tools can find every key of a table.
//!
//! - `{prefix}t:{table}:{pk}`: the row, a hash with one field per non-NULL column holding its
//!   stored value as JSON text (an integer is plain decimal, so HINCRBY works on it), plus one
//!   hidden field `#col` per unique column holding the row's entry in that column's index;
//! - `{prefix}k:{table}`: the table's keys, a sorted set with score 0 whose members are the
//!   encoded primary keys ([`crate::kv::codec::enc`]), so ZRANGEBYLEX (memcmp order) walks
//!   them in SQLite's key order;
//! - `{prefix}u:{table}:{col}`: a unique column's index, a hash from the encoded value to the
//!   primary key of the row holding it;
//! - `{prefix}meta`: a hash from table name to its recorded description (columns, and the unique
//!   indexes that are complete).
//!
//! Table names are valid names (no `:`), so `t:{table}:` never is the start of another table's
//! keys.

use crate::error::DbError;
use crate::kv::codec::{enc, stored_param, to_stored};
use crate::schema::{Column, ColumnType, Table};
use crate::types::{Param, Row};
use serde_json::Value;

/// The first byte of a hidden field of the row hash (column names never start with it).
pub(super) const HIDDEN: u8 = b'#';

/// The key names of one driver (its `-db-redis-prefix`).
#[derive(Debug, Clone)]
pub(super) struct Keys {
    pub(super) prefix: String,
}

impl Keys {
    fn with(&self, parts: &[&[u8]]) -> Vec<u8> {
        let mut k = self.prefix.as_bytes().to_vec();
        for p in parts {
            k.extend_from_slice(p);
        }
        k
    }

    /// The hash of the row with encoded primary key `pk`.
    pub(super) fn row(&self, t: &Table, pk: &[u8]) -> Vec<u8> {
        self.with(&[b"t:", t.name().as_bytes(), b":", pk])
    }

    /// The sorted set of the table's encoded primary keys.
    pub(super) fn set(&self, t: &Table) -> Vec<u8> {
        self.with(&[b"k:", t.name().as_bytes()])
    }

    /// The index hash of a unique column.
    pub(super) fn unique(&self, t: &Table, col: &str) -> Vec<u8> {
        self.with(&[b"u:", t.name().as_bytes(), b":", col.as_bytes()])
    }

    /// The hash of recorded table descriptions.
    pub(super) fn meta(&self) -> Vec<u8> {
        self.with(&[b"meta"])
    }
}

/// The hidden field of the row hash holding its entry in the index of unique column `col`.
pub(super) fn hidden(col: &str) -> Vec<u8> {
    let mut f = vec![HIDDEN];
    f.extend_from_slice(col.as_bytes());
    f
}

/// A stored value as the row hash holds it.
pub(super) fn field_value(v: &Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

/// The hash fields of a written value: Some(JSON text), or None for NULL.
pub(super) fn write_value(c: &Column, p: &Param) -> Option<Vec<u8>> {
    to_stored(c.kind, p).map(|v| field_value(&v))
}

/// The entry a unique column's index holds for this written value: `+` and the encoded value,
/// or `-` for NULL (SQL allows any number of NULLs in a unique column).
pub(super) fn unique_entry(c: &Column, p: &Param) -> Vec<u8> {
    unique_entry_of(c.kind, to_stored(c.kind, p).as_ref())
}

/// [`unique_entry`] of a stored value.
pub(super) fn unique_entry_of(kind: ColumnType, v: Option<&Value>) -> Vec<u8> {
    match stored_param(kind, v) {
        Param::Null => b"-".to_vec(),
        p => {
            let mut out = vec![b'+'];
            enc(&mut out, &p);
            out
        }
    }
}

/// A hash's field/value pairs as a reply holds them.
pub(super) type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// A stored field value read back: JSON, with real columns (and integers beyond i64) as
/// doubles, as SQLite returns them.
fn read_value(kind: Option<ColumnType>, bytes: &[u8]) -> Result<Value, DbError> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| DbError::Driver(format!("redis: corrupt field value: {e}")))?;
    Ok(match &v {
        Value::Number(n) if kind == Some(ColumnType::Real) || (!n.is_i64() && n.is_u64()) => n
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or(v, Value::Number),
        _ => v,
    })
}

/// The row of a hash's field/value pairs (hidden fields left out); None for an empty hash (no
/// row).
pub(super) fn decode(t: &Table, pairs: Pairs) -> Result<Option<Row>, DbError> {
    if pairs.is_empty() {
        return Ok(None);
    }
    let mut r = Row::new();
    for (f, v) in pairs {
        if f.first() == Some(&HIDDEN) {
            continue;
        }
        let name = String::from_utf8(f)
            .map_err(|_| DbError::Driver("redis: a field name is not UTF-8".into()))?;
        let kind = t.column(&name).map(|c| c.kind);
        r.insert(name, read_value(kind, &v)?);
    }
    Ok(Some(r))
}

/// The field/value pairs of a reply: a flat array (RESP2) or a map (RESP3).
pub(super) fn pairs(v: redis::Value) -> Result<Pairs, DbError> {
    let bytes = |v: redis::Value| match v {
        redis::Value::BulkString(b) => Ok(b),
        redis::Value::SimpleString(s) => Ok(s.into_bytes()),
        redis::Value::Int(i) => Ok(i.to_string().into_bytes()),
        other => Err(DbError::Driver(format!(
            "redis: unexpected reply item {other:?}"
        ))),
    };
    match v {
        redis::Value::Nil => Ok(Vec::new()),
        redis::Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len() / 2);
            let mut it = items.into_iter();
            while let (Some(f), Some(v)) = (it.next(), it.next()) {
                out.push((bytes(f)?, bytes(v)?));
            }
            Ok(out)
        }
        redis::Value::Map(items) => items
            .into_iter()
            .map(|(f, v)| Ok((bytes(f)?, bytes(v)?)))
            .collect(),
        other => Err(DbError::Driver(format!(
            "redis: unexpected reply {other:?}"
        ))),
    }
}
