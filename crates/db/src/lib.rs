//! The DB API (SPEC §8), driver-independent part: rows, operators, options, results, errors and the
//! [`Driver`] trait every storage backend implements, plus the write preparation (defaults, `now`,
//! `join`, allowed values, type coercion) that every driver must apply identically. Table
//! descriptions live in [`schema`], SQL text building shared by SQL drivers in [`sql`], the SQLite
//! driver in [`sqlite`].
//!
//! The [`Driver`] trait is async; blocking drivers implement [`BlockingDriver`] and run on tokio's
//! blocking pool through [`Blocking`]. The front that applications use is [`Db`] in [`front`].

#![deny(unsafe_op_in_unsafe_fn, rust_2018_idioms)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod front;
mod metered;
pub mod mysql;
pub mod pgsql;
pub mod schema;
pub mod sled;
pub mod sql;
pub mod sqlite;

#[cfg(test)]
pub(crate) mod conformance;
#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use front::Db;
pub use schema::{builtin_tables, Column, ColumnType, Table};
pub use sqlite::SqliteDriver;

use serde_json::Value;
use std::collections::HashMap;
use std::str::FromStr;

/// A row: column name → JSON value. Reads omit NULL columns.
pub type Row = serde_json::Map<String, Value>;

/// Why an operation failed: whose fault it is ([`DbError::is_caller_error`]) and whether a retry
/// may help ([`DbError::is_retryable`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DbError {
    /// Caller: a table, column or index name that is invalid or not described.
    #[error("bad name: {0}")]
    BadName(String),
    /// Caller: a value that does not fit its column or operator.
    #[error("bad value for {column}: {reason}")]
    BadValue { column: String, reason: String },
    /// Caller: an operator that is not one of SPEC §8.
    #[error("unknown operator: {0}")]
    BadOp(String),
    /// Caller: the row does not exist (update).
    #[error("not found")]
    NotFound,
    /// Caller: a row with this key (or unique value) exists already (add).
    #[error("already exists")]
    Exists,
    /// Caller: a select without any condition while `noscan` is on.
    #[error("select without a condition refused (noscan)")]
    NoCondition,
    /// Caller: the operation or operator is not supported by this driver.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// Transient: the database is locked or the pool is exhausted; a retry may help.
    #[error("database busy: {0}")]
    Busy(String),
    /// Driver or database failure (I/O, corruption, SQL bug); a retry will probably not help.
    #[error("database error: {0}")]
    Driver(String),
}

impl DbError {
    /// The request was wrong (4xx); otherwise the server is at fault (5xx).
    pub fn is_caller_error(&self) -> bool {
        !matches!(self, DbError::Busy(_) | DbError::Driver(_))
    }

    /// Trying the same operation again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, DbError::Busy(_))
    }

    pub fn bad_value(column: &str, reason: impl Into<String>) -> DbError {
        DbError::BadValue {
            column: column.to_string(),
            reason: reason.into(),
        }
    }
}

/// A condition operator (SPEC §8).
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

/// Per-operation options (SPEC §8). `Options::default()` is what an operation without options uses.
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
    /// `select` also counts all matching rows into [`Res::total`].
    pub total: bool,
    /// For replace: the column whose stored value must be older for the write to happen.
    pub check_mtime: Option<String>,
    /// For replace: write only when the data differ.
    pub check_data: bool,
    /// `get` reads through the cache (as if the table were in `-db-caching`).
    pub cached: bool,
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
        }
    }
}

impl Options {
    /// The page size: `count` within 1..=[`MAX_COUNT`].
    /// The offset the paging token `start` carries (0 without one); a malformed token is the
    /// caller's error.
    pub fn offset(&self) -> Result<u64, DbError> {
        match self.start.as_deref().filter(|t| !t.is_empty()) {
            Some(t) => decode_token(t),
            None => Ok(0),
        }
    }

    pub fn page_size(&self) -> usize {
        self.count.clamp(1, MAX_COUNT)
    }

    /// Sets the operator of one column (builder style, mostly for tests and internal callers).
    pub fn op(mut self, column: &str, op: Op) -> Options {
        self.ops.insert(column.to_string(), op);
        self
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

/// A storage backend as the rest of bkjs uses it: asynchronous, so a worker's runtime never
/// blocks on the database. Native async drivers (PostgreSQL, MySQL) implement it directly;
/// blocking ones (SQLite, sled) implement [`BlockingDriver`] and run through [`Blocking`]. Every
/// identifier a driver uses comes from the given [`Table`], never from row keys or option
/// strings (those are only looked up in the table).
#[async_trait::async_trait]
pub trait Driver: Send + Sync {
    /// Driver name (`sqlite`, `pgsql`, ...).
    fn name(&self) -> &'static str;
    /// Creates missing tables, adds missing columns and indexes. Only the master/server calls it.
    async fn init(&self, tables: &[Table]) -> Result<(), DbError>;
    /// The row with the primary key taken from `key`, or None.
    async fn get(&self, table: &Table, key: &Row, opts: &Options) -> Result<Option<Row>, DbError>;
    /// Inserts or replaces the whole row.
    async fn put(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError>;
    /// Inserts; [`DbError::Exists`] when the key (or a unique column) exists.
    async fn add(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError>;
    /// Updates the given columns of an existing row; [`DbError::NotFound`] when there is none.
    async fn update(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError>;
    /// Adds the given numbers to numeric columns (creating the row when missing).
    async fn incr(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError>;
    /// Deletes the row with this primary key (affected = 0 when there was none).
    async fn del(&self, table: &Table, key: &Row, opts: &Options) -> Result<Res, DbError>;
    /// Rows matching the conditions in `query` with `opts.ops`, paged.
    async fn select(&self, table: &Table, query: &Row, opts: &Options) -> Result<Res, DbError>;
    /// Driver-native statement with bound parameters.
    async fn query(&self, text: &str, params: &[Value], opts: &Options) -> Result<Res, DbError>;
}

/// Runs a blocking driver call on tokio's blocking pool.
async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DbError> + Send + 'static,
) -> Result<T, DbError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DbError::Driver(format!("database thread failed: {e}")))?
}

/// An async [`Driver`] over a [`BlockingDriver`]: every call runs on tokio's blocking pool.
pub struct Blocking<D>(pub Arc<D>);

macro_rules! off {
    ($self:ident, $method:ident, $table:ident, $row:ident, $opts:ident) => {{
        let (d, t, r, o) = ($self.0.clone(), $table.clone(), $row.clone(), $opts.clone());
        off_runtime(move || d.$method(&t, &r, &o)).await
    }};
}

/// Runs a short call on the caller's thread when the driver can do it without waiting (SQLite:
/// an idle connection, no lock held by another writer: microseconds), else on the blocking pool.
/// After a write, due housekeeping (a WAL checkpoint) is sent to the blocking pool.
macro_rules! now_or_off {
    ($self:ident, $method:ident, $table:ident, $row:ident, $opts:ident, $write:expr) => {{
        let mut done = None;
        if $self.0.begin_now() {
            let r = $self.0.$method($table, $row, $opts);
            $self.0.end_now();
            if !matches!(r, Err(DbError::Busy(_))) {
                done = Some(r);
            }
        }
        let r = match done {
            Some(r) => r,
            None => off!($self, $method, $table, $row, $opts),
        };
        if $write && r.is_ok() && $self.0.maintenance_due() {
            let d = $self.0.clone();
            tokio::task::spawn_blocking(move || d.maintain());
        }
        r
    }};
}

#[async_trait::async_trait]
impl<D: BlockingDriver + 'static> Driver for Blocking<D> {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    async fn init(&self, tables: &[Table]) -> Result<(), DbError> {
        let (d, t) = (self.0.clone(), tables.to_vec());
        off_runtime(move || d.init(&t)).await
    }
    async fn get(&self, table: &Table, key: &Row, opts: &Options) -> Result<Option<Row>, DbError> {
        now_or_off!(self, get, table, key, opts, false)
    }
    async fn put(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        now_or_off!(self, put, table, row, opts, true)
    }
    async fn add(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        now_or_off!(self, add, table, row, opts, true)
    }
    async fn update(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        now_or_off!(self, update, table, row, opts, true)
    }
    async fn incr(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        now_or_off!(self, incr, table, row, opts, true)
    }
    async fn del(&self, table: &Table, key: &Row, opts: &Options) -> Result<Res, DbError> {
        now_or_off!(self, del, table, key, opts, true)
    }
    async fn select(&self, table: &Table, query: &Row, opts: &Options) -> Result<Res, DbError> {
        off!(self, select, table, query, opts)
    }
    async fn query(&self, text: &str, params: &[Value], opts: &Options) -> Result<Res, DbError> {
        let (d, t, p, o) = (
            self.0.clone(),
            text.to_string(),
            params.to_vec(),
            opts.clone(),
        );
        off_runtime(move || d.query(&t, &p, &o)).await
    }
}

/// A storage backend whose calls block (SQLite, sled); wrap it in [`Blocking`] to use it.
/// Every identifier it uses comes from the given [`Table`].
pub trait BlockingDriver: Send + Sync {
    /// Starts running calls on the caller's (runtime) thread: until [`BlockingDriver::end_now`]
    /// they must not wait for a connection or a lock but fail with [`DbError::Busy`] at once, and
    /// [`Blocking`] then runs them on the blocking pool. Returns false when the driver cannot.
    fn begin_now(&self) -> bool {
        false
    }

    /// Ends what [`BlockingDriver::begin_now`] started.
    fn end_now(&self) {}

    /// Called after every write; true when [`BlockingDriver::maintain`] should run.
    fn maintenance_due(&self) -> bool {
        false
    }

    /// Housekeeping that may block (a WAL checkpoint); runs on the blocking pool.
    fn maintain(&self) {}
    /// Driver name (`sqlite`, ...).
    fn name(&self) -> &'static str;
    /// Creates missing tables, adds missing columns and indexes. Only the master/server calls it.
    fn init(&self, tables: &[Table]) -> Result<(), DbError>;
    /// The row with the primary key taken from `key`, or None.
    fn get(&self, table: &Table, key: &Row, opts: &Options) -> Result<Option<Row>, DbError>;
    /// Inserts or replaces the whole row.
    fn put(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError>;
    /// Inserts; [`DbError::Exists`] when the key (or a unique column) exists.
    fn add(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError>;
    /// Updates the given columns of an existing row; [`DbError::NotFound`] when there is none.
    fn update(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError>;
    /// Adds the given numbers to numeric columns (creating the row when missing), sets other given
    /// columns; returns the resulting row.
    fn incr(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError>;
    /// Deletes the row with this primary key (affected = 0 when there was none).
    fn del(&self, table: &Table, key: &Row, opts: &Options) -> Result<Res, DbError>;
    /// Rows matching the conditions in `query` with `opts.ops`, paged.
    fn select(&self, table: &Table, query: &Row, opts: &Options) -> Result<Res, DbError>;
    /// Driver-native statement with bound parameters.
    fn query(&self, text: &str, params: &[Value], opts: &Options) -> Result<Res, DbError>;
}

/// A value converted to what its column stores: the driver-independent form drivers bind.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

/// One page of a select that fetched up to `count + 1` rows: the extra row only tells that more
/// follow, and then the page carries the token of the next one.
pub fn page(mut rows: Vec<Row>, count: usize, offset: u64) -> (Vec<Row>, Option<String>) {
    if rows.len() > count {
        rows.truncate(count);
        (rows, Some(encode_token(offset + count as u64)))
    } else {
        (rows, None)
    }
}

/// A JSON parameter of a native query (drivers bind it by the type the statement expects).
pub fn query_param(v: &Value) -> Param {
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
fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Converts `v` to what column `col` stores.
pub fn encode(col: &Column, v: &Value) -> Result<Param, DbError> {
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
pub enum WriteMode {
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
pub fn prepare_write<'t>(
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
pub fn key_params<'t>(table: &'t Table, key: &Row) -> Result<Vec<(&'t Column, Param)>, DbError> {
    table
        .primary_keys()
        .into_iter()
        .map(|c| match key.get(&c.name) {
            Some(v) if !v.is_null() => Ok((c, encode(c, v)?)),
            _ => Err(DbError::bad_value(&c.name, "primary key value required")),
        })
        .collect()
}

/// The largest page size a select honours.
pub const MAX_COUNT: usize = 1_000_000;

/// The largest offset a paging token may carry (keeps offset arithmetic and SQL integers safe).
const MAX_OFFSET: u64 = 1 << 53;

/// Paging token: hex of `{"o": offset}` (opaque to callers).
pub fn encode_token(offset: u64) -> String {
    let text = serde_json::json!({ "o": offset }).to_string();
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The offset in a token from [`encode_token`]; a malformed token is a caller error.
pub fn decode_token(token: &str) -> Result<u64, DbError> {
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
