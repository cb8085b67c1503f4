//! The values the DB API passes around: rows, condition operators, results and the
//! driver-independent [`Param`] drivers bind. Leaf types every other file uses, kept apart from
//! the code that uses them so that dependencies between files point one way.

use crate::error::DbError;
use serde_json::Value;
use std::str::FromStr;

/// A row: column name → JSON value. Reads omit NULL columns.
pub type Row = serde_json::Map<String, Value>;

/// A condition operator (docs/data.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    In,
    NotIn,
    Between,
    NotBetween,
    Null,
    NotNull,
    BeginsWith,
    Like,
    Ilike,
    Contains,
    NotContains,
    Regexp,
}

impl FromStr for Op {
    type Err = DbError;

    /// Accepts symbols and words, case-insensitively, with `_` or spaces between words:
    /// `>=`, `ge`, `not in`, `not_in`, `begins_with`, ...
    fn from_str(s: &str) -> Result<Op, DbError> {
        let norm = s.trim().to_ascii_lowercase().replace('_', " ");
        let norm = norm.split_whitespace().collect::<Vec<_>>().join(" ");
        Ok(match norm.as_str() {
            "=" | "==" | "eq" => Op::Eq,
            "!=" | "<>" | "ne" => Op::Ne,
            ">" | "gt" => Op::Gt,
            ">=" | "ge" => Op::Ge,
            "<" | "lt" => Op::Lt,
            "<=" | "le" => Op::Le,
            "in" => Op::In,
            "not in" => Op::NotIn,
            "between" => Op::Between,
            "not between" => Op::NotBetween,
            "null" => Op::Null,
            "not null" => Op::NotNull,
            "begins with" => Op::BeginsWith,
            "like" => Op::Like,
            "ilike" => Op::Ilike,
            "contains" => Op::Contains,
            "not contains" => Op::NotContains,
            "regexp" => Op::Regexp,
            _ => return Err(DbError::BadOp(s.to_string())),
        })
    }
}

impl Op {
    /// Operators that take no value.
    pub fn is_unary(self) -> bool {
        matches!(self, Op::Null | Op::NotNull)
    }
}

/// The result of an operation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Res {
    pub rows: Vec<Row>,
    /// Rows written or deleted.
    pub affected: u64,
    /// Present only when more rows exist.
    pub next_token: Option<String>,
    /// All matching rows, when `Options::total` was asked.
    pub total: Option<u64>,
}

/// A value converted to what its column stores: the driver-independent form drivers bind.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Param {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}
