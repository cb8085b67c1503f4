//! Secondary and unique index trees: which trees a table description asks for, the entry a row
//! has in each, and the meta record listing the complete ones (read back on open and `init`).

use crate::kv::codec::{enc, stored_param};
use crate::schema::{ColumnType, Table};
use crate::types::{Param, Row};
use serde_json::Value;

use ::sled::Tree;

/// One index tree: its name, columns with their types (the key encoding depends on them) and
/// whether it is a unique column's index.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct IndexDef {
    pub(super) name: String,
    pub(super) cols: Vec<(String, ColumnType)>,
    pub(super) unique: bool,
}

pub(super) fn kind_name(k: ColumnType) -> &'static str {
    match k {
        ColumnType::Text => "text",
        ColumnType::Int => "int",
        ColumnType::Bigint => "bigint",
        ColumnType::Real => "real",
        ColumnType::Counter => "counter",
        ColumnType::Bool => "bool",
        ColumnType::Json => "json",
        ColumnType::Date => "date",
    }
}

pub(super) fn kind_from(name: &str) -> Option<ColumnType> {
    Some(match name {
        "text" => ColumnType::Text,
        "int" => ColumnType::Int,
        "bigint" => ColumnType::Bigint,
        "real" => ColumnType::Real,
        "counter" => ColumnType::Counter,
        "bool" => ColumnType::Bool,
        "json" => ColumnType::Json,
        "date" => ColumnType::Date,
        _ => return None,
    })
}

impl IndexDef {
    pub(super) fn to_json(&self) -> Value {
        serde_json::json!({
            "name": self.name,
            "unique": self.unique,
            "cols": self.cols.iter().map(|(n, k)| serde_json::json!([n, kind_name(*k)])).collect::<Vec<_>>(),
        })
    }

    pub(super) fn from_json(v: &Value) -> Option<IndexDef> {
        let cols = v
            .get("cols")?
            .as_array()?
            .iter()
            .map(|c| {
                Some((
                    c.get(0)?.as_str()?.to_string(),
                    kind_from(c.get(1)?.as_str()?)?,
                ))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(IndexDef {
            name: v.get("name")?.as_str()?.to_string(),
            cols,
            unique: v.get("unique")?.as_bool()?,
        })
    }

    /// The index entry of a stored row with primary key `pk`; None when the row has none (a
    /// unique index skips NULL, which SQL allows any number of times).
    pub(super) fn key(&self, row: &Row, pk: &[u8]) -> Option<Vec<u8>> {
        let mut k = Vec::new();
        for (name, kind) in &self.cols {
            let p = stored_param(*kind, row.get(name));
            if self.unique && p == Param::Null {
                return None;
            }
            enc(&mut k, &p);
        }
        if !self.unique {
            k.extend_from_slice(pk);
        }
        Some(k)
    }
}

/// The index trees a table description asks for: each index group, then each unique column.
pub(super) fn described_indexes(t: &Table) -> Vec<IndexDef> {
    let mut out: Vec<IndexDef> = t
        .indexes()
        .into_iter()
        .map(|cols| IndexDef {
            name: format!(
                "i:{}:{}",
                t.name(),
                cols.iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            cols: cols.iter().map(|c| (c.name.clone(), c.kind)).collect(),
            unique: false,
        })
        .collect();
    out.extend(t.columns().iter().filter(|c| c.unique).map(|c| IndexDef {
        name: format!("u:{}:{}", t.name(), c.name),
        cols: vec![(c.name.clone(), c.kind)],
        unique: true,
    }));
    out
}

pub(super) struct Index {
    pub(super) def: IndexDef,
    pub(super) tree: Tree,
}

/// A table known to the database (created by `init`).
pub(super) struct TableState {
    pub(super) tree: Tree,
    pub(super) indexes: Vec<Index>,
}

/// The meta record of a table: its column names, and its complete index trees.
pub(super) fn read_meta(bytes: &[u8]) -> (Vec<String>, Vec<IndexDef>) {
    let v: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let columns = v
        .get("columns")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c.get(0).and_then(Value::as_str).map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let indexes = v
        .get("indexes")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(IndexDef::from_json).collect())
        .unwrap_or_default();
    (columns, indexes)
}
