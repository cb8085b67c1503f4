//! Per-operation [`Options`] and paging: page sizes, the opaque paging token and the cutting of a
//! fetched page. Shared by every driver and the front.

use crate::error::DbError;
use crate::types::{Op, Row};
use serde_json::Value;
use std::collections::HashMap;

/// Per-operation options (docs/data.md). `Options::default()` is what an operation without options uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Columns to return; empty = all. Unknown names are ignored.
    pub select: Vec<String>,
    /// Page size of `select` (default 50; see [`Options::page_size`]).
    pub count: usize,
    /// Paging token from a previous `next_token`.
    pub start: Option<String>,
    /// Column to sort by (default: the primary key).
    pub sort: Option<String>,
    pub desc: bool,
    /// Operator per condition column (default `=`).
    pub ops: HashMap<String, Op>,
    /// Refuse a select without any condition (default on).
    pub noscan: bool,
    /// Writes skip null values instead of storing NULL.
    pub skip_null: bool,
    /// Columns writes ignore.
    pub skip_columns: Vec<String>,
    /// `select` also counts all matching rows into [`crate::Res::total`].
    pub total: bool,
    /// For replace: the column whose stored value must be older for the write to happen.
    pub check_mtime: Option<String>,
    /// For replace: write only when the data differ.
    pub check_data: bool,
    /// `get` reads through the cache (as if the table were in `-db-caching`).
    pub cached: bool,
    /// The pool the request names (`_pool`): it must be the one that holds the table, else the
    /// call is refused (a table lives in one pool, docs/data.md).
    pub pool: Option<String>,
    /// Rows come back without the table's row hooks (`_noprocessrows`).
    pub noprocessrows: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            select: Vec::new(),
            count: 50,
            start: None,
            sort: None,
            desc: false,
            ops: HashMap::new(),
            noscan: true,
            skip_null: false,
            skip_columns: Vec::new(),
            total: false,
            check_mtime: None,
            check_data: false,
            cached: false,
            pool: None,
            noprocessrows: false,
        }
    }
}

impl Options {
    /// The offset the paging token `start` carries (0 without one); a malformed token is the
    /// caller's error.
    pub fn offset(&self) -> Result<u64, DbError> {
        match self.start.as_deref().filter(|t| !t.is_empty()) {
            Some(t) => decode_token(t),
            None => Ok(0),
        }
    }

    /// The page size: `count` within 1..=1,000,000 (`MAX_COUNT`).
    pub fn page_size(&self) -> usize {
        self.count.clamp(1, MAX_COUNT)
    }

    /// Sets the operator of one column (builder style, mostly for tests and internal callers).
    pub fn op(mut self, column: &str, op: Op) -> Options {
        self.ops.insert(column.to_string(), op);
        self
    }
}

/// One page of a select that fetched up to `count + 1` rows: the extra row only tells that more
/// follow, and then the page carries the token of the next one.
pub(crate) fn page(mut rows: Vec<Row>, count: usize, offset: u64) -> (Vec<Row>, Option<String>) {
    if rows.len() > count {
        rows.truncate(count);
        (rows, Some(encode_token(offset + count as u64)))
    } else {
        (rows, None)
    }
}

/// The largest page size a select honours.
pub(crate) const MAX_COUNT: usize = 1_000_000;

/// The largest offset a paging token may carry (keeps offset arithmetic and SQL integers safe).
const MAX_OFFSET: u64 = 1 << 53;

/// Paging token: hex of `{"o": offset}` (opaque to callers).
pub(crate) fn encode_token(offset: u64) -> String {
    let text = serde_json::json!({ "o": offset }).to_string();
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The offset in a token from [`encode_token`]; a malformed token is a caller error.
pub(crate) fn decode_token(token: &str) -> Result<u64, DbError> {
    let bad = || DbError::bad_value("start", "malformed paging token");
    if token.len() % 2 != 0 || token.len() > 256 {
        return Err(bad());
    }
    let bytes: Vec<u8> = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<_>>()
        .ok_or_else(bad)?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    v.get("o")
        .and_then(Value::as_u64)
        .filter(|&o| o <= MAX_OFFSET)
        .ok_or_else(bad)
}
