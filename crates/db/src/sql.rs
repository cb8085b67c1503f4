//! SQL text building shared by the SQL drivers (SQLite now; PostgreSQL and MySQL later). The
//! differences between databases (identifier quoting, placeholders, column types, upsert syntax,
//! a few functions) are confined to [`Dialect`]. Identifiers come only from a [`Table`] and are
//! always quoted; every value becomes a bound parameter ([`Sql::params`]), so neither names nor
//! values from requests can change a statement's meaning.

use super::schema::{Column, ColumnType, Table, MAX_NAME};
use super::{encode, DbError, Op, Options, Param, Row};
use serde_json::Value;

/// The SQL flavour of a driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
    Mysql,
}

impl Dialect {
    /// A quoted identifier (embedded quotes doubled, though validated names never contain any).
    pub fn quote(self, name: &str) -> String {
        match self {
            Dialect::Mysql => format!("`{}`", name.replace('`', "``")),
            _ => format!("\"{}\"", name.replace('"', "\"\"")),
        }
    }

    /// The placeholder of the `n`-th (1-based) parameter.
    pub fn placeholder(self, n: usize) -> String {
        match self {
            Dialect::Postgres => format!("${n}"),
            _ => "?".to_string(),
        }
    }

    /// The storage type of a column type.
    pub fn column_type(self, t: ColumnType) -> &'static str {
        match (self, t) {
            (Dialect::Sqlite, ColumnType::Real) => "REAL",
            (Dialect::Sqlite, ColumnType::Text | ColumnType::Json) => "TEXT",
            (Dialect::Sqlite, _) => "INTEGER",
            (Dialect::Mysql, ColumnType::Real) => "DOUBLE",
            (Dialect::Mysql, ColumnType::Bool) => "TINYINT(1)",
            (_, ColumnType::Real) => "DOUBLE PRECISION",
            (Dialect::Postgres, ColumnType::Bool) => "BOOLEAN",
            // Byte order like SQLite, whatever the server locale: sorting, ranges and the
            // `begins_with` range then agree across drivers (and the range can use an index).
            (Dialect::Postgres, ColumnType::Text | ColumnType::Json) => "TEXT COLLATE \"C\"",
            // MySQL cannot index TEXT without a prefix length; see `column_sql_type` for
            // unindexed text.
            (Dialect::Mysql, ColumnType::Text) => "VARCHAR(255)",
            (Dialect::Mysql, ColumnType::Json) => "LONGTEXT",
            (_, _) => "BIGINT",
        }
    }

    /// The storage type of one column: as [`Dialect::column_type`], except that MySQL keeps
    /// text that is neither part of a key nor indexed in `TEXT` (no length limit, and it does
    /// not count against MySQL's 64 KB row size).
    pub fn column_sql_type(self, c: &Column) -> &'static str {
        if self == Dialect::Mysql && c.kind == ColumnType::Text && !is_keyed(c) {
            "TEXT"
        } else {
            self.column_type(c.kind)
        }
    }

    /// How the upsert clause refers to the value the insert tried to write into `col` (quoted).
    fn excluded(self, col: &str) -> String {
        match self {
            Dialect::Mysql => format!("VALUES({col})"),
            _ => format!("excluded.{col}"),
        }
    }

    /// `col` contains `needle` (both SQL expressions).
    fn contains(self, col: &str, needle: &str) -> String {
        match self {
            Dialect::Sqlite => format!("instr({col}, {needle}) > 0"),
            Dialect::Postgres => format!("strpos({col}, {needle}) > 0"),
            Dialect::Mysql => format!("LOCATE({needle}, {col}) > 0"),
        }
    }
}

/// A statement under construction: text plus bound parameters in order.
#[derive(Debug, Clone)]
pub struct Sql {
    pub dialect: Dialect,
    pub text: String,
    pub params: Vec<Param>,
}

impl Sql {
    pub fn new(dialect: Dialect) -> Sql {
        Sql {
            dialect,
            text: String::new(),
            params: Vec::new(),
        }
    }
    fn push(&mut self, s: &str) {
        self.text.push_str(s);
    }
    fn ident(&mut self, name: &str) {
        let q = self.dialect.quote(name);
        self.text.push_str(&q);
    }
    /// Appends a placeholder bound to `p`.
    fn bind(&mut self, p: Param) {
        self.params.push(p);
        let ph = self.dialect.placeholder(self.params.len());
        self.text.push_str(&ph);
    }
    fn idents<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        for (i, n) in names.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.ident(n);
        }
    }
}

/// Whether `c` is part of the primary key, a secondary index or a unique index.
pub fn is_keyed(c: &Column) -> bool {
    c.primary > 0 || c.unique || c.index.iter().any(|&p| p > 0)
}

/// `CREATE TABLE IF NOT EXISTS` with every column and the primary key.
pub fn create_table(d: Dialect, t: &Table) -> String {
    let mut s = Sql::new(d);
    s.push("CREATE TABLE IF NOT EXISTS ");
    s.ident(t.name());
    s.push(" (");
    for c in t.columns() {
        s.ident(&c.name);
        s.push(" ");
        s.push(d.column_sql_type(c));
        if c.primary > 0 {
            s.push(" NOT NULL");
        }
        s.push(", ");
    }
    s.push("PRIMARY KEY (");
    s.idents(t.primary_keys().iter().map(|c| c.name.as_str()));
    s.push("))");
    s.text
}

/// `ALTER TABLE ... ADD COLUMN` for a column missing from an existing table.
pub fn add_column(d: Dialect, t: &Table, c: &Column) -> String {
    format!(
        "ALTER TABLE {} ADD COLUMN {} {}",
        d.quote(t.name()),
        d.quote(&c.name),
        d.column_sql_type(c)
    )
}

/// A deterministic index name from the table and columns (so a changed index is a new index),
/// shortened with a hash when it would be too long for PostgreSQL.
fn index_name(t: &Table, cols: &[&Column], unique: bool) -> String {
    let mut name = format!(
        "{}_{}",
        t.name(),
        cols.iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join("_")
    );
    name.push_str(if unique { "_uniq" } else { "_idx" });
    if name.len() > MAX_NAME - 1 {
        // FNV-1a: stable across builds and platforms.
        let h = name.bytes().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        });
        name = format!("{}_{h:016x}", &t.name()[..t.name().len().min(40)]);
    }
    name
}

/// `CREATE [UNIQUE] INDEX IF NOT EXISTS` for every secondary index and unique column.
pub fn create_indexes(d: Dialect, t: &Table) -> Vec<String> {
    index_defs(d, t).into_iter().map(|(_, ddl)| ddl).collect()
}

/// Every secondary index and unique column as (index name, `CREATE [UNIQUE] INDEX` statement).
/// MySQL has no `IF NOT EXISTS` for indexes, so its statements lack it: the driver compares the
/// names with the existing indexes first.
pub fn index_defs(d: Dialect, t: &Table) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut make = |cols: Vec<&Column>, unique: bool| {
        let mut s = Sql::new(d);
        s.push(match (unique, d) {
            (true, Dialect::Mysql) => "CREATE UNIQUE INDEX ",
            (false, Dialect::Mysql) => "CREATE INDEX ",
            (true, _) => "CREATE UNIQUE INDEX IF NOT EXISTS ",
            (false, _) => "CREATE INDEX IF NOT EXISTS ",
        });
        let name = index_name(t, &cols, unique);
        s.ident(&name);
        s.push(" ON ");
        s.ident(t.name());
        s.push(" (");
        s.idents(cols.iter().map(|c| c.name.as_str()));
        s.push(")");
        out.push((name, s.text));
    };
    for cols in t.indexes() {
        make(cols, false);
    }
    for c in t.columns().iter().filter(|c| c.unique) {
        make(vec![c], true);
    }
    out
}

/// What an insert does when the key exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// Fail (add).
    Fail,
    /// Replace every non-key column (put).
    Replace,
    /// Add the given numeric columns, set the other given columns (incr).
    Incr,
}

/// An insert of `vals` (which include the key).
pub fn insert(d: Dialect, t: &Table, vals: Vec<(&Column, Param)>, conflict: Conflict) -> Sql {
    let mut s = Sql::new(d);
    s.push("INSERT INTO ");
    s.ident(t.name());
    s.push(" (");
    s.idents(vals.iter().map(|(c, _)| c.name.as_str()));
    s.push(") VALUES (");
    let given: Vec<&Column> = vals.iter().map(|(c, _)| *c).collect();
    for (i, (_, p)) in vals.into_iter().enumerate() {
        if i > 0 {
            s.push(", ");
        }
        s.bind(p);
    }
    s.push(")");
    let sets: Vec<String> = match conflict {
        Conflict::Fail => return s,
        // Columns not inserted get their default (NULL) from `excluded`: a whole-row replace.
        Conflict::Replace => t
            .columns()
            .iter()
            .filter(|c| c.primary == 0)
            .map(|c| {
                let q = d.quote(&c.name);
                format!("{q} = {}", d.excluded(&q))
            })
            .collect(),
        Conflict::Incr => given
            .iter()
            .filter(|c| c.primary == 0)
            .map(|c| {
                let q = d.quote(&c.name);
                if c.kind.is_numeric() {
                    format!(
                        "{q} = COALESCE({}.{q}, 0) + {}",
                        d.quote(t.name()),
                        d.excluded(&q)
                    )
                } else {
                    format!("{q} = {}", d.excluded(&q))
                }
            })
            .collect(),
    };
    let keys: Vec<&Column> = t.primary_keys();
    match d {
        Dialect::Mysql => s.push(" ON DUPLICATE KEY UPDATE "),
        _ => {
            s.push(" ON CONFLICT (");
            s.idents(keys.iter().map(|c| c.name.as_str()));
            s.push(if sets.is_empty() {
                ") DO NOTHING"
            } else {
                ") DO UPDATE SET "
            });
        }
    }
    if sets.is_empty() && d == Dialect::Mysql {
        // MySQL has no DO NOTHING: a no-op assignment of the first key.
        let q = d.quote(&keys[0].name);
        s.push(&format!("{q} = {q}"));
    }
    s.push(&sets.join(", "));
    s
}

fn push_key(s: &mut Sql, keys: Vec<(&Column, Param)>) {
    s.push(" WHERE ");
    for (i, (c, p)) in keys.into_iter().enumerate() {
        if i > 0 {
            s.push(" AND ");
        }
        s.ident(&c.name);
        s.push(" = ");
        s.bind(p);
    }
}

/// `UPDATE ... SET` the given non-key columns `WHERE` key; with nothing to set, a no-op
/// assignment so the affected count still tells whether the row exists.
pub fn update(
    d: Dialect,
    t: &Table,
    sets: Vec<(&Column, Param)>,
    keys: Vec<(&Column, Param)>,
) -> Sql {
    let mut s = Sql::new(d);
    s.push("UPDATE ");
    s.ident(t.name());
    s.push(" SET ");
    let sets: Vec<_> = sets.into_iter().filter(|(c, _)| c.primary == 0).collect();
    if sets.is_empty() {
        let q = d.quote(&keys[0].0.name);
        s.push(&format!("{q} = {q}"));
    }
    for (i, (c, p)) in sets.into_iter().enumerate() {
        if i > 0 {
            s.push(", ");
        }
        s.ident(&c.name);
        s.push(" = ");
        s.bind(p);
    }
    push_key(&mut s, keys);
    s
}

/// `DELETE ... WHERE` key.
pub fn delete(d: Dialect, t: &Table, keys: Vec<(&Column, Param)>) -> Sql {
    let mut s = Sql::new(d);
    s.push("DELETE FROM ");
    s.ident(t.name());
    push_key(&mut s, keys);
    s
}

/// The columns a read returns: `opts.select` restricted to known columns, or all.
pub fn select_columns<'t>(t: &'t Table, opts: &Options) -> Vec<&'t Column> {
    let cols: Vec<&Column> = t
        .columns()
        .iter()
        .filter(|c| opts.select.iter().any(|s| s == &c.name))
        .collect();
    if cols.is_empty() {
        t.columns().iter().collect()
    } else {
        cols
    }
}

/// `SELECT cols FROM table` (no condition yet).
fn select_from(s: &mut Sql, t: &Table, cols: &[&Column]) {
    s.push("SELECT ");
    s.idents(cols.iter().map(|c| c.name.as_str()));
    s.push(" FROM ");
    s.ident(t.name());
}

/// The row with this key.
pub fn get(d: Dialect, t: &Table, cols: &[&Column], keys: Vec<(&Column, Param)>) -> Sql {
    let mut s = Sql::new(d);
    select_from(&mut s, t, cols);
    push_key(&mut s, keys);
    s
}

/// The list of values of an `in`/`between` condition: a JSON array or comma-separated text.
fn list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::String(s) => s.split(',').map(|x| Value::String(x.to_string())).collect(),
        other => vec![other.clone()],
    }
}

/// The smallest string greater than every string starting with `prefix` (code point order, which
/// is the byte order of UTF-8); None when there is none (empty prefix or all U+10FFFF).
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut n = last as u32 + 1;
        if (0xD800..0xE000).contains(&n) {
            n = 0xE000;
        }
        if let Some(c) = char::from_u32(n) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn text_param(v: &Value) -> Param {
    Param::Text(text_of(v))
}

/// Appends one condition on `c`.
fn push_condition(s: &mut Sql, c: &Column, op: Op, v: Option<&Value>) -> Result<(), DbError> {
    let d = s.dialect;
    let q = d.quote(&c.name);
    let v = v.unwrap_or(&Value::Null);
    let op = match (op, v) {
        (Op::Eq, Value::Null) => Op::Null,
        (Op::Ne, Value::Null) => Op::NotNull,
        (Op::Eq, Value::Array(_)) => Op::In,
        (Op::Ne, Value::Array(_)) => Op::NotIn,
        (op, _) => op,
    };
    let is_text = matches!(c.kind, ColumnType::Text | ColumnType::Json);
    let need_text = || {
        if is_text {
            Ok(())
        } else {
            Err(DbError::BadValue {
                column: c.name.clone(),
                reason: format!("{op:?} needs a text column"),
            })
        }
    };
    match op {
        Op::Null => s.push(&format!("{q} IS NULL")),
        Op::NotNull => s.push(&format!("{q} IS NOT NULL")),
        Op::Eq | Op::Ne | Op::Gt | Op::Ge | Op::Lt | Op::Le => {
            let sym = match op {
                Op::Eq => "=",
                Op::Ne => "<>",
                Op::Gt => ">",
                Op::Ge => ">=",
                Op::Lt => "<",
                _ => "<=",
            };
            s.push(&format!("{q} {sym} "));
            s.bind(encode(c, v)?);
        }
        Op::In | Op::NotIn => {
            let items = list(v);
            if items.is_empty() {
                s.push(if op == Op::In { "1 = 0" } else { "1 = 1" });
                return Ok(());
            }
            s.push(&format!(
                "{q} {} (",
                if op == Op::In { "IN" } else { "NOT IN" }
            ));
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    s.push(", ");
                }
                s.bind(encode(c, x)?);
            }
            s.push(")");
        }
        Op::Between | Op::NotBetween => {
            let items = list(v);
            let [lo, hi] = items.as_slice() else {
                return Err(DbError::BadValue {
                    column: c.name.clone(),
                    reason: "between needs two values".into(),
                });
            };
            s.push(&format!(
                "{q} {} ",
                if op == Op::Between {
                    "BETWEEN"
                } else {
                    "NOT BETWEEN"
                }
            ));
            s.bind(encode(c, lo)?);
            s.push(" AND ");
            s.bind(encode(c, hi)?);
        }
        Op::BeginsWith => {
            need_text()?;
            let p = text_of(v);
            // A range, not LIKE: exact, case-sensitive and able to use an index.
            s.push(&format!("{q} >= "));
            s.bind(Param::Text(p.clone()));
            if let Some(end) = prefix_end(&p) {
                s.push(&format!(" AND {q} < "));
                s.bind(Param::Text(end));
            }
        }
        Op::Like | Op::Ilike => {
            need_text()?;
            match (op, d) {
                (Op::Ilike, Dialect::Postgres) => s.push(&format!("{q} ILIKE ")),
                (Op::Ilike, _) => s.push(&format!("LOWER({q}) LIKE LOWER(")),
                _ => s.push(&format!("{q} LIKE ")),
            }
            s.bind(text_param(v));
            if op == Op::Ilike && d != Dialect::Postgres {
                s.push(")");
            }
        }
        Op::Contains | Op::NotContains => {
            need_text()?;
            s.params.push(text_param(v));
            let ph = d.placeholder(s.params.len());
            let expr = d.contains(&q, &ph);
            s.push(&if op == Op::Contains {
                expr
            } else {
                format!("NOT ({expr})")
            });
        }
        Op::Regexp => {
            need_text()?;
            match d {
                Dialect::Sqlite => {
                    // The pattern is compiled by the regex crate: refuse a bad one here, clearly.
                    if let Err(e) = regex::Regex::new(&text_of(v)) {
                        return Err(DbError::bad_value(&c.name, format!("bad regexp: {e}")));
                    }
                    s.push(&format!("{q} REGEXP "))
                }
                Dialect::Postgres => s.push(&format!("{q} ~ ")),
                Dialect::Mysql => s.push(&format!("{q} REGEXP ")),
            }
            s.bind(text_param(v));
        }
    }
    Ok(())
}

/// Appends ` WHERE ...` for the conditions of a select; returns how many there are. Conditions
/// are the table columns present in `query` (unknown keys ignored) plus unary `ops`; an `ops` key
/// that is not a column is refused.
fn push_where(s: &mut Sql, t: &Table, query: &Row, opts: &Options) -> Result<usize, DbError> {
    if let Some(bad) = opts.ops.keys().find(|k| t.column(k).is_none()) {
        return Err(DbError::BadName(format!("{}.{bad}", t.name())));
    }
    let mut n = 0;
    for c in t.columns() {
        let op = opts.ops.get(&c.name).copied().unwrap_or(Op::Eq);
        let v = query.get(&c.name);
        if v.is_none() && !op.is_unary() {
            continue;
        }
        s.push(if n == 0 { " WHERE " } else { " AND " });
        s.push("(");
        push_condition(s, c, op, v)?;
        s.push(")");
        n += 1;
    }
    Ok(n)
}

/// A paged select: the statement fetches up to `count + 1` rows from `offset` so the caller can
/// tell whether another page exists; also the matching `COUNT(*)` statement. Refuses a select
/// without conditions when `opts.noscan` is on, and an unknown sort column.
pub fn select(
    d: Dialect,
    t: &Table,
    cols: &[&Column],
    query: &Row,
    opts: &Options,
    offset: u64,
) -> Result<(Sql, Sql), DbError> {
    let mut s = Sql::new(d);
    select_from(&mut s, t, cols);
    let mut cs = Sql::new(d);
    cs.push("SELECT COUNT(*) FROM ");
    cs.ident(t.name());
    let n = push_where(&mut s, t, query, opts)?;
    push_where(&mut cs, t, query, opts)?;
    if n == 0 && opts.noscan {
        return Err(DbError::NoCondition);
    }
    let dir = if opts.desc { " DESC" } else { "" };
    let mut order: Vec<&Column> = Vec::new();
    if let Some(sort) = &opts.sort {
        order.push(
            t.column(sort)
                .ok_or_else(|| DbError::BadName(format!("{}.{sort}", t.name())))?,
        );
    }
    for k in t.primary_keys() {
        if !order.iter().any(|c| c.name == k.name) {
            order.push(k);
        }
    }
    s.push(" ORDER BY ");
    for (i, c) in order.iter().enumerate() {
        if i > 0 {
            s.push(", ");
        }
        s.ident(&c.name);
        s.push(dir);
    }
    s.push(&format!(" LIMIT {} OFFSET {offset}", opts.page_size() + 1));
    Ok((s, cs))
}
