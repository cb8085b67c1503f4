//! The sled driver (SPEC §8, issue 4): an embedded key-value store behind the same
//! [`BlockingDriver`] interface as SQLite, answering every call with the same result SQLite would.
//! sled is unmaintained upstream, so nothing of it leaks out of this file: callers see only
//! [`SledDriver`] and the driver traits.
//!
//! Layout: one sled tree per table (`t:NAME`) holding each row as a JSON object, keyed by an
//! order-preserving encoding of its primary key values, so a key prefix or range answers
//! conditions on the leading key columns and rows come out sorted by primary key; one tree per
//! described index (`i:NAME:COLS`, key = index values + primary key) and per unique column
//! (`u:NAME:COL`, key = the value), kept in the same sled transaction as the row write; and a
//! meta tree recording which index trees exist and are complete. Conditions a key or an index
//! cannot answer are evaluated in memory with SQLite's semantics (three-valued logic for NULL,
//! `LIKE` with `%`/`_`, case-sensitive unless `ilike`); `regexp` uses the `regex` crate.

use super::schema::{Column, ColumnType, Table};
use super::{
    encode, encode_token, key_params, prepare_write, sql, BlockingDriver, DbError, Op, Options,
    Param, Res, Row, WriteMode,
};
use ::sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use ::sled::Tree;
use serde_json::Value;
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard};

/// The tree recording each table's index trees: table name → JSON list of [`IndexDef`].
const META: &str = "__bkjs_meta";

/// The most key ranges one select probes (`in` lists multiply them); beyond it, a wider range.
const MAX_RANGES: usize = 1024;

fn storage(e: ::sled::Error) -> DbError {
    DbError::Driver(format!("sled: {e}"))
}

fn no_table(t: &Table) -> DbError {
    DbError::Driver(format!("no such table: {}", t.name()))
}

// ---------------------------------------------------------------------------------------------
// Key encoding

const TAG_NULL: u8 = 0x01;
const TAG_INT: u8 = 0x02;
const TAG_REAL: u8 = 0x03;
const TAG_TEXT: u8 = 0x04;

/// Appends the order-preserving, self-delimiting encoding of `p`: byte order of encodings is
/// SQLite's order of values of one column type, and a composite key compares column by column.
fn enc(out: &mut Vec<u8>, p: &Param) {
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
fn enc_text_body(out: &mut Vec<u8>, s: &str) {
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
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut v = prefix.to_vec();
    while let Some(last) = v.pop() {
        if last < 0xFF {
            v.push(last + 1);
            return Some(v);
        }
    }
    None
}

fn enc_params<'a>(params: impl IntoIterator<Item = &'a Param>) -> Vec<u8> {
    let mut out = Vec::new();
    for p in params {
        enc(&mut out, p);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Stored values

/// A written value as the row stores it (what reads return); None for NULL.
fn to_stored(kind: ColumnType, p: &Param) -> Option<Value> {
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
fn stored_param(kind: ColumnType, v: Option<&Value>) -> Param {
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
fn build_row(vals: &[(&Column, Param)]) -> Row {
    let mut r = Row::new();
    for (c, p) in vals {
        if let Some(v) = to_stored(c.kind, p) {
            r.insert(c.name.clone(), v);
        }
    }
    r
}

/// Sets one column of a stored row (NULL removes it).
fn set_stored(r: &mut Row, c: &Column, p: &Param) {
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
fn add_params(old: Param, n: &Param) -> Param {
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
fn write_key(table: &Table, vals: &[(&Column, Param)]) -> Result<Vec<u8>, DbError> {
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

fn parse_row(bytes: &[u8]) -> Result<Row, DbError> {
    serde_json::from_slice(bytes).map_err(|e| DbError::Driver(format!("sled: corrupt row: {e}")))
}

/// The columns of `cols` present in the stored row, in order.
fn project(row: &Row, cols: &[&Column]) -> Row {
    let mut out = Row::new();
    for c in cols {
        if let Some(v) = row.get(&c.name) {
            out.insert(c.name.clone(), v.clone());
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Indexes

/// One index tree: its name, columns with their types (the key encoding depends on them) and
/// whether it is a unique column's index.
#[derive(Debug, Clone, PartialEq)]
struct IndexDef {
    name: String,
    cols: Vec<(String, ColumnType)>,
    unique: bool,
}

fn kind_name(k: ColumnType) -> &'static str {
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

fn kind_from(name: &str) -> Option<ColumnType> {
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
    fn to_json(&self) -> Value {
        serde_json::json!({
            "name": self.name,
            "unique": self.unique,
            "cols": self.cols.iter().map(|(n, k)| serde_json::json!([n, kind_name(*k)])).collect::<Vec<_>>(),
        })
    }

    fn from_json(v: &Value) -> Option<IndexDef> {
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
    fn key(&self, row: &Row, pk: &[u8]) -> Option<Vec<u8>> {
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
fn described_indexes(t: &Table) -> Vec<IndexDef> {
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

struct Index {
    def: IndexDef,
    tree: Tree,
}

/// A table known to the database (created by `init`).
struct TableState {
    tree: Tree,
    indexes: Vec<Index>,
}

// ---------------------------------------------------------------------------------------------
// Conditions

/// One compiled condition of a select, evaluated on the stored value as SQLite would.
enum Test {
    Null,
    NotNull,
    /// `=`, `<>`, `>`, `>=`, `<`, `<=`.
    Cmp(Op, Param),
    In(Vec<Param>),
    NotIn(Vec<Param>),
    Between(Param, Param),
    NotBetween(Param, Param),
    Prefix(String),
    /// Pattern, case-insensitive (`ilike`).
    Like(String, bool),
    Contains(String),
    NotContains(String),
    Regexp(regex::Regex),
    Const(bool),
}

struct Cond<'t> {
    col: &'t Column,
    test: Test,
}

/// SQLite's comparison of two values; None when either is NULL. Numbers sort before text.
fn compare(a: &Param, b: &Param) -> Option<Ordering> {
    let rank = |p: &Param| match p {
        Param::Null => 0,
        Param::Int(_) | Param::Real(_) => 1,
        Param::Text(_) => 2,
    };
    Some(match (a, b) {
        (Param::Null, _) | (_, Param::Null) => return None,
        (Param::Int(x), Param::Int(y)) => x.cmp(y),
        (Param::Text(x), Param::Text(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Param::Int(x), Param::Real(y)) => (*x as f64).partial_cmp(y)?,
        (Param::Real(x), Param::Int(y)) => x.partial_cmp(&(*y as f64))?,
        (Param::Real(x), Param::Real(y)) => x.partial_cmp(y)?,
        _ => rank(a).cmp(&rank(b)),
    })
}

/// SQLite's `ORDER BY` order: NULL first, then numbers, then text.
fn sort_order(a: &Param, b: &Param) -> Ordering {
    match (a, b) {
        (Param::Null, Param::Null) => Ordering::Equal,
        (Param::Null, _) => Ordering::Less,
        (_, Param::Null) => Ordering::Greater,
        _ => compare(a, b).unwrap_or(Ordering::Equal),
    }
}

fn and3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

/// The text SQLite's text functions see for a value; None for NULL.
fn text(v: &Param) -> Option<String> {
    match v {
        Param::Null => None,
        Param::Text(s) => Some(s.clone()),
        Param::Int(i) => Some(i.to_string()),
        Param::Real(f) => Some(f.to_string()),
    }
}

/// SQL `LIKE`: `%` any run of characters, `_` one character, no escape character.
fn like(pattern: &[char], s: &[char]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match pattern.get(pi) {
            Some('%') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == '_' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    pattern[pi..].iter().all(|&c| c == '%')
}

impl Test {
    fn eval(&self, v: &Param) -> Option<bool> {
        let eq = |p: &Param| compare(v, p).map(|o| o == Ordering::Equal);
        let is_in = |items: &[Param]| {
            let mut unknown = false;
            for p in items {
                match eq(p) {
                    Some(true) => return Some(true),
                    None => unknown = true,
                    _ => {}
                }
            }
            if unknown {
                None
            } else {
                Some(false)
            }
        };
        let between = |lo: &Param, hi: &Param| {
            and3(
                compare(v, lo).map(|o| o != Ordering::Less),
                compare(v, hi).map(|o| o != Ordering::Greater),
            )
        };
        match self {
            Test::Null => Some(*v == Param::Null),
            Test::NotNull => Some(*v != Param::Null),
            Test::Cmp(op, p) => compare(v, p).map(|o| match op {
                Op::Eq => o == Ordering::Equal,
                Op::Ne => o != Ordering::Equal,
                Op::Gt => o == Ordering::Greater,
                Op::Ge => o != Ordering::Less,
                Op::Lt => o == Ordering::Less,
                _ => o != Ordering::Greater,
            }),
            Test::In(items) => is_in(items),
            Test::NotIn(items) => is_in(items).map(|b| !b),
            Test::Between(lo, hi) => between(lo, hi),
            Test::NotBetween(lo, hi) => between(lo, hi).map(|b| !b),
            Test::Prefix(p) => match v {
                Param::Null => None,
                Param::Text(s) => Some(s.starts_with(p.as_str())),
                // Numbers sort before text: `num >= 'p'` is false.
                _ => Some(false),
            },
            Test::Like(p, ci) => {
                let s = text(v)?;
                let chars = |x: &str| -> Vec<char> {
                    if *ci {
                        x.to_ascii_lowercase().chars().collect()
                    } else {
                        x.chars().collect()
                    }
                };
                Some(like(&chars(p), &chars(&s)))
            }
            Test::Contains(n) => Some(text(v)?.contains(n.as_str())),
            Test::NotContains(n) => Some(!text(v)?.contains(n.as_str())),
            Test::Regexp(re) => Some(re.is_match(&text(v)?)),
            Test::Const(b) => Some(*b),
        }
    }
}

/// The list of values of an `in`/`between` condition: a JSON array or comma-separated text.
fn list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::String(s) => s.split(',').map(|x| Value::String(x.to_string())).collect(),
        other => vec![other.clone()],
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One condition on `c`, with the same operator rewriting and refusals as the SQL drivers.
fn compile_one(c: &Column, op: Op, v: Option<&Value>) -> Result<Test, DbError> {
    let v = v.unwrap_or(&Value::Null);
    let op = match (op, v) {
        (Op::Eq, Value::Null) => Op::Null,
        (Op::Ne, Value::Null) => Op::NotNull,
        (Op::Eq, Value::Array(_)) => Op::In,
        (Op::Ne, Value::Array(_)) => Op::NotIn,
        (op, _) => op,
    };
    let need_text = || {
        if matches!(c.kind, ColumnType::Text | ColumnType::Json) {
            Ok(())
        } else {
            Err(DbError::BadValue {
                column: c.name.clone(),
                reason: format!("{op:?} needs a text column"),
            })
        }
    };
    Ok(match op {
        Op::Null => Test::Null,
        Op::NotNull => Test::NotNull,
        Op::Eq | Op::Ne | Op::Gt | Op::Ge | Op::Lt | Op::Le => Test::Cmp(op, encode(c, v)?),
        Op::In | Op::NotIn => {
            let items = list(v);
            if items.is_empty() {
                return Ok(Test::Const(op == Op::NotIn));
            }
            let items = items
                .iter()
                .map(|x| encode(c, x))
                .collect::<Result<Vec<_>, _>>()?;
            if op == Op::In {
                Test::In(items)
            } else {
                Test::NotIn(items)
            }
        }
        Op::Between | Op::NotBetween => {
            let items = list(v);
            let [lo, hi] = items.as_slice() else {
                return Err(DbError::BadValue {
                    column: c.name.clone(),
                    reason: "between needs two values".into(),
                });
            };
            let (lo, hi) = (encode(c, lo)?, encode(c, hi)?);
            if op == Op::Between {
                Test::Between(lo, hi)
            } else {
                Test::NotBetween(lo, hi)
            }
        }
        Op::BeginsWith => {
            need_text()?;
            Test::Prefix(text_of(v))
        }
        Op::Like | Op::Ilike => {
            need_text()?;
            Test::Like(text_of(v), op == Op::Ilike)
        }
        Op::Contains => {
            need_text()?;
            Test::Contains(text_of(v))
        }
        Op::NotContains => {
            need_text()?;
            Test::NotContains(text_of(v))
        }
        Op::Regexp => {
            need_text()?;
            let re = regex::Regex::new(&text_of(v)).map_err(|e| DbError::BadValue {
                column: c.name.clone(),
                reason: format!("bad regexp: {e}"),
            })?;
            Test::Regexp(re)
        }
    })
}

/// The conditions of a select: table columns present in `query` (unknown keys ignored) plus
/// unary `ops`; an `ops` key that is not a column is refused.
fn compile<'t>(t: &'t Table, query: &Row, opts: &Options) -> Result<Vec<Cond<'t>>, DbError> {
    if let Some(bad) = opts.ops.keys().find(|k| t.column(k).is_none()) {
        return Err(DbError::BadName(format!("{}.{bad}", t.name())));
    }
    let mut out = Vec::new();
    for c in t.columns() {
        let op = opts.ops.get(&c.name).copied().unwrap_or(Op::Eq);
        let v = query.get(&c.name);
        if v.is_none() && !op.is_unary() {
            continue;
        }
        out.push(Cond {
            col: c,
            test: compile_one(c, op, v)?,
        });
    }
    Ok(out)
}

fn matches(conds: &[Cond<'_>], row: &Row) -> bool {
    conds
        .iter()
        .all(|c| c.test.eval(&stored_param(c.col.kind, row.get(&c.col.name))) == Some(true))
}

/// A key range: inclusive start, exclusive end (None = unbounded).
type Range = (Vec<u8>, Option<Vec<u8>>);

/// The bounds one condition puts on a key column after a fixed prefix: the start suffix (None:
/// the prefix itself) and the end suffix with whether the end lies past every key starting with
/// it (None: past every key starting with the prefix).
type Bounds = (Option<Vec<u8>>, Option<(Vec<u8>, bool)>);

/// The key ranges of a composite key over `cols` that hold every row the conditions can match:
/// `=` and `in` on leading columns fix prefixes, then one range condition may bound the next
/// column. None when the first column is not constrained.
fn key_ranges(cols: &[&Column], conds: &[Cond<'_>]) -> Option<Vec<Range>> {
    let mut prefixes: Vec<Vec<u8>> = vec![Vec::new()];
    let mut used = false;
    for col in cols {
        let Some(cond) = conds.iter().find(|c| c.col.name == col.name) else {
            break;
        };
        match &cond.test {
            Test::Cmp(Op::Eq, p) if *p != Param::Null => {
                for pre in &mut prefixes {
                    enc(pre, p);
                }
                used = true;
                continue;
            }
            Test::In(items)
                if !items.contains(&Param::Null) && prefixes.len() * items.len() <= MAX_RANGES =>
            {
                let mut encoded: Vec<Vec<u8>> = items.iter().map(|p| enc_params([p])).collect();
                encoded.sort();
                encoded.dedup();
                prefixes = prefixes
                    .iter()
                    .flat_map(|pre| {
                        encoded.iter().map(move |e| {
                            let mut k = pre.clone();
                            k.extend_from_slice(e);
                            k
                        })
                    })
                    .collect();
                used = true;
                continue;
            }
            _ => {}
        }
        // A range on this column: (start suffix, end) where end is exclusive after the suffix
        // (`true`: past every key starting with it).
        let bounds: Option<Bounds> = match &cond.test {
            Test::Cmp(Op::Gt | Op::Ge, p) if *p != Param::Null => {
                Some((Some(enc_params([p])), None))
            }
            Test::Cmp(Op::Lt, p) if *p != Param::Null => {
                Some((None, Some((enc_params([p]), false))))
            }
            Test::Cmp(Op::Le, p) if *p != Param::Null => {
                Some((None, Some((enc_params([p]), true))))
            }
            Test::Between(lo, hi) if *lo != Param::Null && *hi != Param::Null => {
                Some((Some(enc_params([lo])), Some((enc_params([hi]), true))))
            }
            Test::Prefix(s) => {
                let mut b = vec![TAG_TEXT];
                enc_text_body(&mut b, s);
                Some((Some(b.clone()), Some((b, true))))
            }
            _ => None,
        };
        if let Some((start, end)) = bounds {
            let ranges = prefixes
                .iter()
                .filter_map(|pre| {
                    let mut lo = pre.clone();
                    if let Some(s) = &start {
                        lo.extend_from_slice(s);
                    }
                    let hi = match &end {
                        None => successor(pre),
                        Some((e, past)) => {
                            let mut h = pre.clone();
                            h.extend_from_slice(e);
                            if *past {
                                successor(&h)
                            } else {
                                Some(h)
                            }
                        }
                    };
                    match &hi {
                        Some(h) if *h <= lo => None,
                        _ => Some((lo, hi)),
                    }
                })
                .collect();
            return Some(ranges);
        }
        break;
    }
    used.then(|| {
        prefixes
            .into_iter()
            .map(|p| {
                let hi = successor(&p);
                (p, hi)
            })
            .collect()
    })
}

fn bounds(r: &Range) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    (
        Bound::Included(r.0.clone()),
        r.1.clone().map_or(Bound::Unbounded, Bound::Excluded),
    )
}

// ---------------------------------------------------------------------------------------------
// The driver

/// The sled driver over one database directory.
pub struct SledDriver {
    db: ::sled::Db,
    meta: Tree,
    /// Tables created by `init` (loaded from the meta tree on open). Writes hold the read lock
    /// for their transaction, `init` the write lock, so an index is never built while a write
    /// could miss it.
    tables: RwLock<HashMap<String, Arc<TableState>>>,
    /// Flush to disk before a write returns (default on), so that an acknowledged write survives
    /// a crash of the process as with SQLite; off, sled flushes every 500 ms.
    sync: bool,
}

type Tables<'a> = RwLockReadGuard<'a, HashMap<String, Arc<TableState>>>;

/// What a write does to the row it read.
enum Change {
    Put(Row),
    Delete,
    Keep,
}

impl SledDriver {
    /// Opens (creating) the database directory at `path`. Writes are flushed before they
    /// return; see [`SledDriver::sync_writes`].
    pub fn open(path: impl AsRef<Path>) -> Result<SledDriver, DbError> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| DbError::Driver(format!("{}: {e}", dir.display())))?;
        }
        // sled releases its directory lock from a background thread after the last handle is
        // dropped: a quick reopen (a restarted process, a test) waits for it a little.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let db = loop {
            match ::sled::Config::new().path(path).open() {
                Ok(db) => break db,
                // sled reports the held lock as an I/O error whose kind is not always WouldBlock.
                Err(::sled::Error::Io(e))
                    if (e.kind() == std::io::ErrorKind::WouldBlock
                        || e.to_string().contains("could not acquire lock"))
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(DbError::Driver(format!("sled: {}: {e}", path.display()))),
            }
        };
        let meta = db.open_tree(META).map_err(storage)?;
        let mut tables = HashMap::new();
        for item in meta.iter() {
            let (name, defs) = item.map_err(storage)?;
            let name = String::from_utf8_lossy(&name).into_owned();
            let tree = db.open_tree(format!("t:{name}")).map_err(storage)?;
            let mut indexes = Vec::new();
            for def in read_meta(&defs).1 {
                let tree = db.open_tree(&def.name).map_err(storage)?;
                indexes.push(Index { def, tree });
            }
            tables.insert(name, Arc::new(TableState { tree, indexes }));
        }
        Ok(SledDriver {
            db,
            meta,
            tables: RwLock::new(tables),
            sync: true,
        })
    }

    /// Whether writes wait for their flush to disk (default true). Off trades the last ~500 ms of
    /// acknowledged writes on a crash for write throughput.
    pub fn sync_writes(mut self, on: bool) -> SledDriver {
        self.sync = on;
        self
    }

    fn tables(&self) -> Tables<'_> {
        // The map is replaced entry by entry; a panic elsewhere cannot leave it half-updated.
        self.tables.read().unwrap_or_else(|e| e.into_inner())
    }

    fn state<'a>(tables: &'a Tables<'_>, t: &Table) -> Result<&'a Arc<TableState>, DbError> {
        tables.get(t.name()).ok_or_else(|| no_table(t))
    }

    /// Reads the row at `pk`, applies `f` and writes the result with its index entries, all in
    /// one sled transaction (retried on conflict, so `f` may run more than once). Returns
    /// whether the row existed and the row as written.
    fn modify<F>(&self, table: &Table, pk: &[u8], f: F) -> Result<(bool, Option<Row>), DbError>
    where
        F: Fn(Option<Row>) -> Result<Change, DbError>,
    {
        let tables = self.tables();
        let st = Self::state(&tables, table)?;
        let mut trees: Vec<Tree> = Vec::with_capacity(st.indexes.len() + 1);
        trees.push(st.tree.clone());
        trees.extend(st.indexes.iter().map(|i| i.tree.clone()));
        let sync = self.sync;
        let abort = ConflictableTransactionError::Abort;
        let result = trees.as_slice().transaction(|tx| {
            let old = match tx[0].get(pk)? {
                Some(b) => Some(parse_row(&b).map_err(abort)?),
                None => None,
            };
            let existed = old.is_some();
            let new = match f(old.clone()).map_err(abort)? {
                Change::Put(r) => Some(r),
                Change::Delete if existed => None,
                Change::Delete | Change::Keep => return Ok((existed, old)),
            };
            for (ix, t) in st.indexes.iter().zip(&tx[1..]) {
                let old_k = old.as_ref().and_then(|r| ix.def.key(r, pk));
                let new_k = new.as_ref().and_then(|r| ix.def.key(r, pk));
                if old_k == new_k {
                    continue;
                }
                if let Some(k) = &old_k {
                    t.remove(k.as_slice())?;
                }
                if let Some(k) = &new_k {
                    if ix.def.unique && t.get(k.as_slice())?.is_some_and(|other| other != pk) {
                        return Err(abort(DbError::Exists));
                    }
                    t.insert(k.as_slice(), pk)?;
                }
            }
            match &new {
                Some(r) => {
                    let bytes = serde_json::to_vec(r)
                        .map_err(|e| abort(DbError::Driver(format!("sled: {e}"))))?;
                    tx[0].insert(pk, bytes)?;
                }
                None => {
                    tx[0].remove(pk)?;
                }
            }
            if sync {
                tx[0].flush();
            }
            Ok((existed, new))
        });
        result.map_err(|e| match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => storage(e),
        })
    }

    /// Builds the index tree of `def` from the rows of `table` (the tree must be empty).
    fn backfill(table: &Tree, def: &IndexDef, tree: &Tree) -> Result<(), DbError> {
        let mut batch = ::sled::Batch::default();
        let mut seen = HashSet::new();
        for item in table.iter() {
            let (pk, bytes) = item.map_err(storage)?;
            let row = parse_row(&bytes)?;
            if let Some(k) = def.key(&row, &pk) {
                if def.unique && !seen.insert(k.clone()) {
                    return Err(DbError::Exists);
                }
                batch.insert(k, pk);
            }
        }
        tree.apply_batch(batch).map_err(storage)
    }

    /// Records the description of `t` with the index trees that are complete.
    fn save_meta(&self, t: &Table, defs: &[IndexDef]) -> Result<(), DbError> {
        let v = serde_json::json!({
            "columns": t
                .columns()
                .iter()
                .map(|c| serde_json::json!([c.name, kind_name(c.kind), c.primary]))
                .collect::<Vec<_>>(),
            "indexes": defs.iter().map(IndexDef::to_json).collect::<Vec<_>>(),
        });
        self.meta
            .insert(t.name(), v.to_string().into_bytes())
            .map_err(storage)?;
        Ok(())
    }

    /// The rows matching `conds`, in the select's order, at most `limit` when given.
    fn matching(
        &self,
        st: &TableState,
        table: &Table,
        conds: &[Cond<'_>],
        order: &[&Column],
        desc: bool,
        limit: Option<usize>,
    ) -> Result<Vec<Row>, DbError> {
        let pks = table.primary_keys();
        // Rows come out of the table tree in primary key order, which is the select's order when
        // the sort column is the first key column not fixed by `=`.
        let fixed = |c: &Column| {
            conds.iter().any(|x| {
                x.col.name == c.name && matches!(&x.test, Test::Cmp(Op::Eq, p) if *p != Param::Null)
            })
        };
        let key_order = match order.first() {
            Some(s) if s.primary == 0 => false,
            Some(s) => pks
                .iter()
                .take_while(|k| k.name != s.name)
                .all(|k| fixed(k)),
            None => true,
        };
        let mut out = Vec::new();
        if let Some(mut ranges) = key_ranges(&pks, conds) {
            if desc {
                ranges.reverse();
            }
            let limit = limit.filter(|_| key_order);
            'ranges: for r in &ranges {
                let iter = st.tree.range(bounds(r));
                let iter: Box<dyn Iterator<Item = _>> = if desc {
                    Box::new(iter.rev())
                } else {
                    Box::new(iter)
                };
                for item in iter {
                    let (_, bytes) = item.map_err(storage)?;
                    let row = parse_row(&bytes)?;
                    if matches(conds, &row) {
                        out.push(row);
                        if limit.is_some_and(|l| out.len() >= l) {
                            break 'ranges;
                        }
                    }
                }
            }
            if !key_order {
                sort_rows(&mut out, order, desc);
            }
            return Ok(out);
        }
        for ix in &st.indexes {
            let cols: Option<Vec<&Column>> = ix
                .def
                .cols
                .iter()
                .map(|(n, k)| table.column(n).filter(|c| c.kind == *k))
                .collect();
            let Some(ranges) = cols.and_then(|cols| key_ranges(&cols, conds)) else {
                continue;
            };
            for r in &ranges {
                for item in ix.tree.range(bounds(r)) {
                    let (_, pk) = item.map_err(storage)?;
                    if let Some(bytes) = st.tree.get(&pk).map_err(storage)? {
                        let row = parse_row(&bytes)?;
                        if matches(conds, &row) {
                            out.push(row);
                        }
                    }
                }
            }
            sort_rows(&mut out, order, desc);
            return Ok(out);
        }
        let iter = st.tree.iter();
        let iter: Box<dyn Iterator<Item = _>> = if desc && key_order {
            Box::new(iter.rev())
        } else {
            Box::new(iter)
        };
        let limit = limit.filter(|_| key_order);
        for item in iter {
            let (_, bytes) = item.map_err(storage)?;
            let row = parse_row(&bytes)?;
            if matches(conds, &row) {
                out.push(row);
                if limit.is_some_and(|l| out.len() >= l) {
                    break;
                }
            }
        }
        if !key_order {
            sort_rows(&mut out, order, desc);
        }
        Ok(out)
    }
}

/// Sorts by the `order` columns with SQLite's `ORDER BY` semantics, all descending when `desc`.
fn sort_rows(rows: &mut [Row], order: &[&Column], desc: bool) {
    rows.sort_by(|a, b| {
        for c in order {
            let o = sort_order(
                &stored_param(c.kind, a.get(&c.name)),
                &stored_param(c.kind, b.get(&c.name)),
            );
            if o != Ordering::Equal {
                return if desc { o.reverse() } else { o };
            }
        }
        Ordering::Equal
    });
}

/// The meta record of a table: its column names, and its complete index trees.
fn read_meta(bytes: &[u8]) -> (Vec<String>, Vec<IndexDef>) {
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

impl BlockingDriver for SledDriver {
    fn name(&self) -> &'static str {
        "sled"
    }

    fn init(&self, tables: &[Table]) -> Result<(), DbError> {
        let mut map = self.tables.write().unwrap_or_else(|e| e.into_inner());
        for t in tables {
            let tree = self
                .db
                .open_tree(format!("t:{}", t.name()))
                .map_err(storage)?;
            let (old_columns, old) = match self.meta.get(t.name()).map_err(storage)? {
                Some(b) => read_meta(&b),
                None => (Vec::new(), Vec::new()),
            };
            if !old_columns.is_empty() {
                // Rows are schemaless JSON: a new column needs nothing for existing rows.
                for c in t
                    .columns()
                    .iter()
                    .filter(|c| !old_columns.contains(&c.name))
                {
                    tracing::info!(table = t.name(), column = c.name, "db: adding column");
                }
            }
            let wanted = described_indexes(t);
            // Index trees no longer described (or whose column types changed) go first, so the
            // meta tree never lists a tree that is not complete.
            let mut done: Vec<IndexDef> =
                old.iter().filter(|d| wanted.contains(d)).cloned().collect();
            self.save_meta(t, &done)?;
            for d in old.iter().filter(|d| !wanted.contains(d)) {
                if !wanted.iter().any(|w| w.name == d.name) {
                    self.db.drop_tree(&d.name).map_err(storage)?;
                }
            }
            let mut indexes = Vec::new();
            for def in &done {
                let itree = self.db.open_tree(&def.name).map_err(storage)?;
                indexes.push(Index {
                    def: def.clone(),
                    tree: itree,
                });
            }
            let mut failed = None;
            let missing: Vec<IndexDef> = wanted.into_iter().filter(|d| !done.contains(d)).collect();
            for def in missing {
                tracing::info!(table = t.name(), index = def.name, "db: building index");
                let itree = self.db.open_tree(&def.name).map_err(storage)?;
                itree.clear().map_err(storage)?;
                if let Err(e) = Self::backfill(&tree, &def, &itree) {
                    itree.clear().map_err(storage)?;
                    failed = Some(e);
                    break;
                }
                done.push(def.clone());
                self.save_meta(t, &done)?;
                indexes.push(Index { def, tree: itree });
            }
            // Writes maintain exactly the complete index trees, even when one could not be built.
            map.insert(t.name().to_string(), Arc::new(TableState { tree, indexes }));
            if let Some(e) = failed {
                return Err(e);
            }
        }
        self.db.flush().map_err(storage)?;
        Ok(())
    }

    fn get(&self, table: &Table, key: &Row, opts: &Options) -> Result<Option<Row>, DbError> {
        let cols = sql::select_columns(table, opts);
        let keys = key_params(table, key)?;
        let pk = enc_params(keys.iter().map(|(_, p)| p));
        let tables = self.tables();
        let st = Self::state(&tables, table)?;
        match st.tree.get(pk).map_err(storage)? {
            Some(bytes) => Ok(Some(project(&parse_row(&bytes)?, &cols))),
            None => Ok(None),
        }
    }

    fn put(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        let vals = prepare_write(table, row, opts, WriteMode::Insert)?;
        let pk = write_key(table, &vals)?;
        let new = build_row(&vals);
        self.modify(table, &pk, |_| Ok(Change::Put(new.clone())))?;
        Ok(Res {
            affected: 1,
            ..Res::default()
        })
    }

    fn add(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        let vals = prepare_write(table, row, opts, WriteMode::Insert)?;
        let pk = write_key(table, &vals)?;
        let new = build_row(&vals);
        self.modify(table, &pk, |old| match old {
            Some(_) => Err(DbError::Exists),
            None => Ok(Change::Put(new.clone())),
        })?;
        Ok(Res {
            affected: 1,
            ..Res::default()
        })
    }

    fn update(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        let keys = key_params(table, row)?;
        let vals = prepare_write(table, row, opts, WriteMode::Update)?;
        let pk = enc_params(keys.iter().map(|(_, p)| p));
        self.modify(table, &pk, |old| {
            let mut r = old.ok_or(DbError::NotFound)?;
            for (c, p) in vals.iter().filter(|(c, _)| c.primary == 0) {
                set_stored(&mut r, c, p);
            }
            Ok(Change::Put(r))
        })?;
        Ok(Res {
            affected: 1,
            ..Res::default()
        })
    }

    fn incr(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        let vals = prepare_write(table, row, opts, WriteMode::Incr)?;
        let pk = write_key(table, &vals)?;
        let (_, new) = self.modify(table, &pk, |old| {
            let Some(mut r) = old else {
                return Ok(Change::Put(build_row(&vals)));
            };
            for (c, p) in vals.iter().filter(|(c, _)| c.primary == 0) {
                if c.kind.is_numeric() {
                    let sum = add_params(stored_param(c.kind, r.get(&c.name)), p);
                    set_stored(&mut r, c, &sum);
                } else {
                    set_stored(&mut r, c, p);
                }
            }
            Ok(Change::Put(r))
        })?;
        let cols = sql::select_columns(table, opts);
        Ok(Res {
            rows: new.map(|r| project(&r, &cols)).into_iter().collect(),
            affected: 1,
            ..Res::default()
        })
    }

    fn del(&self, table: &Table, key: &Row, _opts: &Options) -> Result<Res, DbError> {
        let keys = key_params(table, key)?;
        let pk = enc_params(keys.iter().map(|(_, p)| p));
        let (existed, _) = self.modify(table, &pk, |old| {
            Ok(if old.is_some() {
                Change::Delete
            } else {
                Change::Keep
            })
        })?;
        Ok(Res {
            affected: existed as u64,
            ..Res::default()
        })
    }

    fn select(&self, table: &Table, query: &Row, opts: &Options) -> Result<Res, DbError> {
        let offset = opts.offset()?;
        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
        let count = opts.page_size();
        let cols = sql::select_columns(table, opts);
        let conds = compile(table, query, opts)?;
        if conds.is_empty() && opts.noscan {
            return Err(DbError::NoCondition);
        }
        let mut order: Vec<&Column> = Vec::new();
        if let Some(sort) = &opts.sort {
            order.push(
                table
                    .column(sort)
                    .ok_or_else(|| DbError::BadName(format!("{}.{sort}", table.name())))?,
            );
        }
        for k in table.primary_keys() {
            if !order.iter().any(|c| c.name == k.name) {
                order.push(k);
            }
        }
        let tables = self.tables();
        let st = Self::state(&tables, table)?;
        let rows = if conds.iter().any(|c| matches!(c.test, Test::Const(false))) {
            Vec::new()
        } else {
            let limit = (!opts.total).then(|| offset.saturating_add(count).saturating_add(1));
            self.matching(st, table, &conds, &order, opts.desc, limit)?
        };
        let total = opts.total.then_some(rows.len() as u64);
        let mut page: Vec<Row> = rows
            .iter()
            .skip(offset)
            .take(count.saturating_add(1))
            .map(|r| project(r, &cols))
            .collect();
        let mut next_token = None;
        if page.len() > count {
            page.truncate(count);
            next_token = Some(encode_token((offset + count) as u64));
        }
        Ok(Res {
            rows: page,
            affected: 0,
            next_token,
            total,
        })
    }

    fn query(&self, _text: &str, _params: &[Value], _opts: &Options) -> Result<Res, DbError> {
        Err(DbError::Unsupported(
            "native queries on sled (a key-value store)".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{items_table, row};
    use crate::SqliteDriver;
    use serde_json::json;
    use std::path::PathBuf;

    /// A temporary directory removed on drop.
    struct Tmp(PathBuf);

    impl Tmp {
        fn new() -> Tmp {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "bkjs-sled-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            std::fs::create_dir_all(&p).expect("create temp dir");
            Tmp(p)
        }
        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn o() -> Options {
        Options::default()
    }

    fn test_table() -> Table {
        items_table([Column::text("email").unique()])
    }

    fn setup(tmp: &Tmp) -> (SledDriver, Table) {
        let db = SledDriver::open(tmp.path("sled"))
            .expect("open")
            .sync_writes(false);
        let t = test_table();
        db.init(std::slice::from_ref(&t)).expect("init");
        (db, t)
    }

    fn nine(db: &dyn BlockingDriver, t: &Table) {
        for i in 1..=9 {
            let mut r = row(
                json!({"id": "a", "rk": format!("r{i}"), "num": i, "name": format!("n{}", 10 - i)}),
            );
            if i % 3 == 0 {
                r.insert("score".into(), json!(i as f64 / 2.0));
                r.insert("data".into(), json!({"i": i}));
            }
            db.add(t, &r, &o()).expect("add");
        }
        db.add(
            t,
            &row(json!({"id": "b", "rk": "r1", "num": 100, "name": "N%_x"})),
            &o(),
        )
        .expect("add");
    }

    fn nums(r: &Res) -> Vec<i64> {
        r.rows
            .iter()
            .filter_map(|r| r.get("num").and_then(Value::as_i64))
            .collect()
    }

    /// Every non-time column of the rows, for comparing drivers.
    fn strip(mut r: Result<Res, DbError>) -> Result<Res, DbError> {
        if let Ok(res) = &mut r {
            for row in &mut res.rows {
                row.remove("mtime");
            }
        }
        r
    }

    #[test]
    fn key_encoding_preserves_order() {
        let ints = [i64::MIN, -5, -1, 0, 1, 7, 300, i64::MAX];
        for w in ints.windows(2) {
            assert!(enc_params([&Param::Int(w[0])]) < enc_params([&Param::Int(w[1])]));
        }
        let reals = [
            f64::NEG_INFINITY,
            -2.5,
            -0.1,
            0.0,
            1e-9,
            0.5,
            3.0,
            f64::INFINITY,
        ];
        for w in reals.windows(2) {
            assert!(enc_params([&Param::Real(w[0])]) < enc_params([&Param::Real(w[1])]));
        }
        assert_eq!(
            enc_params([&Param::Real(-0.0)]),
            enc_params([&Param::Real(0.0)])
        );
        let texts = ["", "\0", "\0a", "a", "a\0", "a\0b", "aa", "ab", "b", "é"];
        for w in texts.windows(2) {
            let t = |s: &str| enc_params([&Param::Text(s.into()), &Param::Text("z".into())]);
            assert!(t(w[0]) < t(w[1]), "{:?} < {:?}", w[0], w[1]);
        }
        assert_eq!(successor(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(successor(&[0xFF]), None);
    }

    #[test]
    fn like_matches_sql() {
        let m = |p: &str, s: &str| {
            like(
                &p.chars().collect::<Vec<_>>(),
                &s.chars().collect::<Vec<_>>(),
            )
        };
        assert!(m("a%", "abc") && m("%c", "abc") && m("a_c", "abc") && m("%", ""));
        assert!(m("%b%", "abc") && m("a%%c", "ac") && m("_é_", "aéb"));
        assert!(!m("a_", "abc") && !m("A%", "abc") && !m("_", "") && !m("a%d", "abc"));
    }

    #[test]
    fn core_operations() {
        let tmp = Tmp::new();
        let (db, t) = setup(&tmp);
        let k = row(json!({"id": "a", "rk": "1"}));
        db.add(&t, &row(json!({"id": "a", "rk": "1", "num": 5, "bogus": 1, "flag": "yes", "score": 2, "data": [1, {"x": null}]})), &o())
            .expect("add");
        let g = db.get(&t, &k, &o()).expect("get").expect("row");
        assert_eq!(g["num"], json!(5));
        assert_eq!(g["flag"], json!(true));
        assert_eq!(g["score"], json!(2.0));
        assert_eq!(g["data"], json!([1, {"x": null}]));
        assert!(!g.contains_key("bogus"));
        assert!(g["mtime"].as_i64().is_some_and(|m| m > 1_600_000_000_000));
        assert_eq!(db.add(&t, &k, &o()), Err(DbError::Exists));
        db.update(&t, &row(json!({"id": "a", "rk": "1", "num": 6})), &o())
            .expect("update");
        let g = db.get(&t, &k, &o()).expect("get").expect("row");
        assert_eq!(
            (g["num"].clone(), g["flag"].clone()),
            (json!(6), json!(true))
        );
        assert_eq!(
            db.update(&t, &row(json!({"id": "a", "rk": "2", "num": 1})), &o()),
            Err(DbError::NotFound)
        );
        db.put(&t, &row(json!({"id": "a", "rk": "1", "name": "x"})), &o())
            .expect("put");
        let g = db.get(&t, &k, &o()).expect("get").expect("row");
        assert!(!g.contains_key("num"), "put replaces the row: {g:?}");
        let mut expect = 0;
        for n in [1, 2, -1] {
            let r = db
                .incr(
                    &t,
                    &row(json!({"id": "c", "rk": "1", "cnt": n, "score": 0.5})),
                    &o(),
                )
                .expect("incr");
            expect += n;
            assert_eq!(r.rows[0]["cnt"], json!(expect));
        }
        let g = db
            .get(&t, &row(json!({"id": "c", "rk": "1"})), &o())
            .expect("get")
            .expect("row");
        assert_eq!(
            (g["cnt"].clone(), g["score"].clone()),
            (json!(2), json!(1.5))
        );
        assert_eq!(db.del(&t, &k, &o()).expect("del").affected, 1);
        assert_eq!(db.get(&t, &k, &o()).expect("get"), None);
        assert_eq!(db.del(&t, &k, &o()).expect("del").affected, 0);
        assert!(matches!(
            db.query("SELECT 1", &[], &o()),
            Err(DbError::Unsupported(_))
        ));
        let other = Table::new("nope", vec![Column::text("id").primary(1)]).expect("table");
        assert!(matches!(
            db.get(&other, &row(json!({"id": "x"})), &o()),
            Err(DbError::Driver(_))
        ));
    }

    #[test]
    fn unique_columns_refuse_duplicates() {
        let tmp = Tmp::new();
        let (db, t) = setup(&tmp);
        db.add(&t, &row(json!({"id": "a", "rk": "1", "email": "e"})), &o())
            .expect("add");
        db.add(&t, &row(json!({"id": "a", "rk": "2"})), &o())
            .expect("null is not a duplicate");
        db.add(&t, &row(json!({"id": "a", "rk": "3"})), &o())
            .expect("null is not a duplicate");
        assert_eq!(
            db.add(&t, &row(json!({"id": "a", "rk": "2", "email": "e"})), &o()),
            Err(DbError::Exists)
        );
        assert_eq!(
            db.update(&t, &row(json!({"id": "a", "rk": "2", "email": "e"})), &o()),
            Err(DbError::Exists)
        );
        db.update(&t, &row(json!({"id": "a", "rk": "1", "email": "e"})), &o())
            .expect("same row keeps its value");
        db.update(&t, &row(json!({"id": "a", "rk": "1", "email": "f"})), &o())
            .expect("change");
        db.update(&t, &row(json!({"id": "a", "rk": "2", "email": "e"})), &o())
            .expect("the old value is free again");
        let r = db
            .select(&t, &row(json!({"email": "e"})), &o())
            .expect("select by unique");
        assert_eq!(r.rows.len(), 1);
        assert_eq!(r.rows[0]["rk"], json!("2"));
    }

    /// The index tree follows every write: selecting through it after changing or deleting the
    /// indexed column finds exactly the current rows.
    #[test]
    fn index_stays_consistent() {
        let tmp = Tmp::new();
        let (db, t) = setup(&tmp);
        let by_name = |name: &str| -> Vec<String> {
            db.select(&t, &row(json!({"name": name})), &o())
                .expect("select by index")
                .rows
                .iter()
                .map(|r| {
                    format!(
                        "{}/{}",
                        r["id"].as_str().unwrap_or(""),
                        r["rk"].as_str().unwrap_or("")
                    )
                })
                .collect()
        };
        for i in 0..5 {
            db.put(
                &t,
                &row(json!({"id": format!("u{i}"), "rk": "1", "name": "x"})),
                &o(),
            )
            .expect("put");
        }
        assert_eq!(by_name("x").len(), 5);
        db.update(&t, &row(json!({"id": "u1", "rk": "1", "name": "y"})), &o())
            .expect("update");
        db.put(&t, &row(json!({"id": "u2", "rk": "1"})), &o())
            .expect("put without name");
        db.incr(
            &t,
            &row(json!({"id": "u3", "rk": "1", "name": "y", "cnt": 1})),
            &o(),
        )
        .expect("incr sets name");
        db.incr(
            &t,
            &row(json!({"id": "u9", "rk": "1", "name": "y", "cnt": 1})),
            &o(),
        )
        .expect("incr creates");
        db.del(&t, &row(json!({"id": "u4", "rk": "1"})), &o())
            .expect("del");
        assert_eq!(by_name("x"), ["u0/1"]);
        assert_eq!(by_name("y"), ["u1/1", "u3/1", "u9/1"]);
        assert!(by_name("z").is_empty());
        // The index tree holds one entry per row, no stale ones.
        let tables = db.tables();
        let st = tables.get("t").expect("state");
        let idx = st
            .indexes
            .iter()
            .find(|i| !i.def.unique)
            .expect("name index");
        assert_eq!(idx.tree.len(), st.tree.len());
        // The null entry serves `name` null selects like the others.
        drop(tables);
        let r = db
            .select(&t, &row(json!({"name": null})), &o())
            .expect("select null");
        assert_eq!(r.rows.len(), 1);
        assert_eq!(r.rows[0]["id"], json!("u2"));
    }

    #[test]
    fn upgrade_backfills_new_indexes() {
        let tmp = Tmp::new();
        let v1 =
            Table::new("up", vec![Column::text("id").primary(1), Column::int("a")]).expect("v1");
        {
            let db = SledDriver::open(tmp.path("sled")).expect("open");
            db.init(std::slice::from_ref(&v1)).expect("init v1");
            db.add(&v1, &row(json!({"id": "x", "a": 1})), &o())
                .expect("add");
            db.add(&v1, &row(json!({"id": "y", "a": 2})), &o())
                .expect("add");
        }
        let v2 = Table::new(
            "up",
            vec![
                Column::text("id").primary(1),
                Column::int("a").index(1),
                Column::text("b").index_n(1, 1),
            ],
        )
        .expect("v2");
        let db = SledDriver::open(tmp.path("sled")).expect("reopen");
        db.init(std::slice::from_ref(&v2)).expect("init v2");
        db.init(std::slice::from_ref(&v2)).expect("init v2 again");
        assert_eq!(
            db.get(&v2, &row(json!({"id": "x"})), &o()).expect("get"),
            Some(row(json!({"id": "x", "a": 1})))
        );
        let r = db.select(&v2, &row(json!({"a": 2})), &o()).expect("by a");
        assert_eq!(r.rows, vec![row(json!({"id": "y", "a": 2}))]);
        db.update(&v2, &row(json!({"id": "x", "b": "new"})), &o())
            .expect("update");
        let r = db
            .select(&v2, &row(json!({"b": "new"})), &o())
            .expect("by b");
        assert_eq!(r.rows, vec![row(json!({"id": "x", "a": 1, "b": "new"}))]);
        // Dropping an index from the description drops its tree; re-adding rebuilds it.
        db.init(std::slice::from_ref(&v1)).expect("back to v1");
        db.update(&v1, &row(json!({"id": "x", "a": 5})), &o())
            .expect("update");
        db.init(std::slice::from_ref(&v2)).expect("v2 again");
        let r = db.select(&v2, &row(json!({"a": 5})), &o()).expect("by a");
        assert_eq!(nums(&r), Vec::<i64>::new());
        assert_eq!(r.rows.len(), 1);
        assert!(db
            .select(&v2, &row(json!({"a": 1})), &o())
            .expect("by a")
            .rows
            .is_empty());
    }

    #[test]
    fn unique_index_over_duplicates_is_refused() {
        let tmp = Tmp::new();
        let db = SledDriver::open(tmp.path("sled")).expect("open");
        let v1 =
            Table::new("uq", vec![Column::text("id").primary(1), Column::text("e")]).expect("v1");
        db.init(std::slice::from_ref(&v1)).expect("init v1");
        for id in ["1", "2"] {
            db.add(&v1, &row(json!({"id": id, "e": "same"})), &o())
                .expect("add");
        }
        let v2 = Table::new(
            "uq",
            vec![Column::text("id").primary(1), Column::text("e").unique()],
        )
        .expect("v2");
        assert_eq!(db.init(std::slice::from_ref(&v2)), Err(DbError::Exists));
        db.put(&v2, &row(json!({"id": "3", "e": "other"})), &o())
            .expect("writes go on");
        let r = db
            .select(&v2, &row(json!({"e": "same"})), &o())
            .expect("select without the index");
        assert_eq!(r.rows.len(), 2);
        db.del(&v2, &row(json!({"id": "2"})), &o()).expect("del");
        db.init(std::slice::from_ref(&v2))
            .expect("init once unique");
        assert_eq!(
            db.add(&v2, &row(json!({"id": "4", "e": "other"})), &o()),
            Err(DbError::Exists)
        );
        let r = db
            .select(&v2, &row(json!({"e": "other"})), &o())
            .expect("select by the unique index");
        assert_eq!(r.rows, vec![row(json!({"id": "3", "e": "other"}))]);
    }

    #[test]
    fn concurrent_incr_is_atomic() {
        let tmp = Tmp::new();
        let (db, t) = setup(&tmp);
        let db = Arc::new(db);
        let t = Arc::new(t);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (db, t) = (db.clone(), t.clone());
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        db.incr(&t, &row(json!({"id": "p", "rk": "1", "cnt": 1})), &o())
                            .expect("incr");
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().expect("thread");
        }
        let g = db
            .get(&t, &row(json!({"id": "p", "rk": "1"})), &o())
            .expect("get")
            .expect("row");
        assert_eq!(g["cnt"], json!(200));
    }

    /// The same selects against SQLite and sled give the same answers (rows, order, paging,
    /// totals and errors).
    #[test]
    fn selects_match_sqlite() {
        let tmp = Tmp::new();
        let (sled, t) = setup(&tmp);
        let lite = SqliteDriver::open(tmp.path("lite.db"), 2).expect("sqlite");
        lite.init(std::slice::from_ref(&t)).expect("init");
        nine(&sled, &t);
        nine(&lite, &t);
        let cases: Vec<(Value, Vec<(&str, &str)>)> = vec![
            (json!({"id": "a"}), vec![]),
            (json!({"id": "a", "num": 6}), vec![("num", "gt")]),
            (json!({"id": "a", "num": "6"}), vec![("num", "ge")]),
            (json!({"id": "a", "num": 3}), vec![("num", "lt")]),
            (json!({"id": "a", "num": 3}), vec![("num", "<=")]),
            (json!({"id": "a", "num": 3}), vec![("num", "ne")]),
            (json!({"id": "a", "rk": "r"}), vec![("rk", "begins_with")]),
            (json!({"id": "a", "rk": "r3"}), vec![("rk", "begins_with")]),
            (json!({"id": "a", "rk": "R"}), vec![("rk", "begins_with")]),
            (json!({"id": "a", "rk": "r4"}), vec![("rk", "gt")]),
            (json!({"id": "a", "rk": "r4"}), vec![("rk", "le")]),
            (json!({"id": "a", "rk": "r4"}), vec![("rk", "lt")]),
            (
                json!({"id": "a", "rk": ["r2", "r4"]}),
                vec![("rk", "between")],
            ),
            (
                json!({"id": "a", "rk": ["r4", "r2"]}),
                vec![("rk", "between")],
            ),
            (json!({"id": "a", "num": [3, 5]}), vec![("num", "between")]),
            (
                json!({"id": "a", "num": "3,5"}),
                vec![("num", "not between")],
            ),
            (json!({"num": [1, 9, 4, 100]}), vec![("num", "in")]),
            (json!({"id": ["b", "a", "zz"]}), vec![]),
            (json!({"id": ["b", "a"], "rk": ["r2", "r1"]}), vec![]),
            (json!({"id": "a", "rk": "r1,r2"}), vec![("rk", "not in")]),
            (json!({"id": "a", "num": []}), vec![("num", "in")]),
            (json!({"id": "a", "num": []}), vec![("num", "not in")]),
            (json!({"num": [2, 3]}), vec![]),
            (json!({"name": "N1"}), vec![("name", "like")]),
            (json!({"name": "N1%"}), vec![("name", "ilike")]),
            (json!({"name": "n%"}), vec![("name", "like")]),
            (json!({"name": "n_"}), vec![("name", "like")]),
            (json!({"name": "%\\_%"}), vec![("name", "like")]),
            (json!({"name": "5"}), vec![("name", "contains")]),
            (json!({"name": "5"}), vec![("name", "not contains")]),
            (json!({"name": "n5"}), vec![]),
            (json!({"name": ["n5", "n6"]}), vec![]),
            (json!({"name": "n5"}), vec![("name", "gt")]),
            (json!({"name": "n"}), vec![("name", "begins_with")]),
            (json!({"id": "a"}), vec![("data", "null")]),
            (json!({}), vec![("data", "not null")]),
            (json!({"data": {"i": 3}}), vec![]),
            (json!({"data": "{\"i\":"}), vec![("data", "begins_with")]),
            (json!({"score": 1.4}), vec![("score", "gt")]),
            (json!({"score": null}), vec![]),
            (json!({"score": null}), vec![("score", "ne")]),
            (json!({"score": 3}), vec![("score", "ne")]),
            (json!({"score": [1.5, 3]}), vec![("score", "not in")]),
            (json!({"flag": false}), vec![]),
            (json!({"id": "a", "num": 1}), vec![("num", "between")]),
            (json!({"num": 1}), vec![("num", "begins_with")]),
            (json!({"id": "a", "num": "1 OR 1=1"}), vec![]),
            (json!({}), vec![]),
            (json!({"unknown": 1}), vec![]),
        ];
        let sorts: [(Option<&str>, bool); 6] = [
            (None, false),
            (None, true),
            (Some("name"), false),
            (Some("score"), true),
            (Some("rk"), true),
            (Some("id"), false),
        ];
        for (query, ops) in &cases {
            for (sort, desc) in sorts {
                for count in [2usize, 3, 50] {
                    let mut opts = Options {
                        count,
                        sort: sort.map(String::from),
                        desc,
                        total: count == 3,
                        ..o()
                    };
                    for (c, op) in ops {
                        opts.ops.insert(c.to_string(), op.parse().expect("op"));
                    }
                    let q = row(query.clone());
                    loop {
                        let a = strip(sled.select(&t, &q, &opts));
                        let b = strip(lite.select(&t, &q, &opts));
                        assert_eq!(
                            a, b,
                            "{query} {ops:?} sort {sort:?} desc {desc} count {count}"
                        );
                        match a.ok().and_then(|r| r.next_token) {
                            Some(tok) => opts.start = Some(tok),
                            None => break,
                        }
                    }
                }
            }
        }
        let mut bad = o();
        bad.ops.insert("id) OR (1=1".into(), Op::Eq);
        assert_eq!(
            sled.select(&t, &row(json!({"id": "a"})), &bad),
            lite.select(&t, &row(json!({"id": "a"})), &bad)
        );
        let bad = Options {
            sort: Some("name; DROP TABLE t".into()),
            ..o()
        };
        assert!(matches!(
            sled.select(&t, &row(json!({"id": "a"})), &bad),
            Err(DbError::BadName(_))
        ));
        let scan = Options {
            noscan: false,
            select: vec!["rk".into(), "num".into()],
            ..o()
        };
        assert_eq!(
            sled.select(&t, &Row::new(), &scan),
            lite.select(&t, &Row::new(), &scan)
        );
        let re = sled
            .select(
                &t,
                &row(json!({"name": "^n[1-3]$"})),
                &o().op("name", Op::Regexp),
            )
            .expect("regexp");
        assert_eq!(nums(&re), [7, 8, 9]);
        assert!(matches!(
            sled.select(&t, &row(json!({"name": "("})), &o().op("name", Op::Regexp)),
            Err(DbError::BadValue { .. })
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sled_conformance() {
        let tmp = Tmp::new();
        let driver = SledDriver::open(tmp.path("sled")).expect("open");
        let d = crate::Blocking(Arc::new(driver));
        crate::conformance::run(&d, "c").await;
    }
}
