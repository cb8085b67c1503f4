//! The SQLite driver, the embedded default (docs/data.md): one database file in WAL mode with
//! `synchronous=NORMAL` (an acknowledged write survives a crash of the process), reached through a
//! small bounded pool of connections so concurrent readers do not queue behind one connection.
//! Statements are built by [`super::sql`] with the SQLite dialect; this file only runs them and
//! converts SQLite values back to JSON by column type. Writes go through the group-commit writer
//! of [`writer`] (one transaction for all writes queued while the previous one committed).

mod writer;

pub use writer::{Batching, GroupStats};

use crate::driver::{BlockingDriver, Pending, WriteKind};
use crate::error::DbError;
use crate::options::Options;
use crate::query::{disjoint_prefixes, prefix_column, prefix_ranges, select_columns};
use crate::schema::{Column, ColumnType, Table};
use crate::sql::{self, Conflict, Dialect, InsertTexts, SelectPlan, Sql};
use crate::types::{Param, Res, Row};
use crate::write::{key_params, query_param};
use parking_lot::{Condvar, Mutex, MutexGuard};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode, ToSql, TransactionBehavior};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use writer::{Done, Op, Writer};

const D: Dialect = Dialect::Sqlite;

impl ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        use rusqlite::types::Value as V;
        Ok(match self {
            Param::Null => ToSqlOutput::Owned(V::Null),
            Param::Int(i) => ToSqlOutput::Owned(V::Integer(*i)),
            Param::Real(f) => ToSqlOutput::Owned(V::Real(*f)),
            Param::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

pub(crate) fn map_err(e: rusqlite::Error) -> DbError {
    if let rusqlite::Error::SqliteFailure(f, msg) = &e {
        let text = msg.clone().unwrap_or_else(|| f.to_string());
        match f.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => return DbError::Busy(text),
            ErrorCode::ConstraintViolation
                if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                    || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
            {
                return DbError::Exists
            }
            ErrorCode::ConstraintViolation => {
                return DbError::BadValue {
                    column: String::new(),
                    reason: text,
                };
            }
            _ => return DbError::Driver(text),
        }
    }
    DbError::Driver(e.to_string())
}

struct PoolState {
    idle: Vec<Connection>,
    open: usize,
    /// Threads waiting for a connection: returning one wakes a waiter only when there is one
    /// (a wake is a system call on every return otherwise).
    waiting: usize,
}

thread_local! {
    /// Set while a call runs on a runtime thread ([`BlockingDriver::begin_now`]): it must not
    /// wait for a connection or a lock, it fails with `Busy` instead and goes to the blocking pool.
    static NO_WAIT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 256;

/// Writes between two WAL checkpoints (SQLite's own automatic checkpoint is off: it would run
/// inside whichever write crosses the threshold, possibly on a runtime thread).
const CHECKPOINT_EVERY: u64 = 1000;

/// A connection borrowed from the pool; returned on drop.
struct Pooled<'a> {
    driver: &'a SqliteDriver,
    conn: Option<Connection>,
    /// Borrowed without waiting: its busy timeout was set to zero and is restored on drop.
    no_wait: bool,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
            .as_ref()
            .expect("a pooled connection is present until drop")
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn
            .as_mut()
            .expect("a pooled connection is present until drop")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if self.no_wait {
            if let Some(c) = &self.conn {
                let _ = c.busy_timeout(self.driver.wait);
            }
        }
        let mut st = self.driver.lock();
        match self.conn.take() {
            // A connection left inside a transaction (a panic mid-way) is not reused.
            Some(c) if c.is_autocommit() => st.idle.push(c),
            _ => st.open -= 1,
        }
        let wake = st.waiting > 0;
        drop(st);
        if wake {
            self.driver.freed.notify_one();
        }
    }
}

type GetSql = std::collections::HashMap<String, (Vec<String>, std::sync::Arc<str>)>;

/// The SQLite driver over one database file.
pub struct SqliteDriver {
    path: PathBuf,
    max: usize,
    wait: Duration,
    /// Writes so far, for the periodic WAL checkpoint.
    writes: std::sync::atomic::AtomicU64,
    /// Short calls may run on the caller's thread (see [`SqliteDriver::set_inline`]).
    inline: std::sync::atomic::AtomicBool,
    /// `SELECT * ... WHERE key` text per table: built once, the hottest statement.
    /// The columns it selects are kept with it: a table described differently gets new text.
    get_sql: Mutex<GetSql>,
    /// Insert texts (put, add, incr) per table and column set.
    inserts: InsertTexts,
    state: Mutex<PoolState>,
    freed: Condvar,
    /// `synchronous=FULL` instead of `NORMAL` (`-db-sqlite-sync full`).
    sync_full: bool,
    /// The group-commit writer; None for `:memory:` or with batching off (`max` 0).
    writer: Option<Writer>,
}

/// How a [`SqliteDriver`] commits (`-db-sqlite-batch-max`, `-db-sqlite-batch-delay`,
/// `-db-sqlite-sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Commit {
    pub batching: Batching,
    /// `synchronous=FULL`: every commit waits for the disk (survives power loss).
    pub sync_full: bool,
}

impl SqliteDriver {
    /// Opens (creating) the database at `path` with at most `max` connections; `:memory:` gets a
    /// single connection (each connection would be another database). Waits for a connection or a
    /// lock at most 5 s before answering [`DbError::Busy`].
    pub fn open(path: impl AsRef<Path>, max: usize) -> Result<SqliteDriver, DbError> {
        SqliteDriver::open_with(path, max, Commit::default())
    }

    /// [`SqliteDriver::open`] with the commit settings `commit`.
    pub fn open_with(
        path: impl AsRef<Path>,
        max: usize,
        commit: Commit,
    ) -> Result<SqliteDriver, DbError> {
        let path = path.as_ref().to_path_buf();
        let memory = path.as_os_str() == ":memory:";
        if !memory {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| DbError::Driver(format!("{}: {e}", dir.display())))?;
            }
        }
        let mut driver = SqliteDriver {
            path,
            max: if memory { 1 } else { max.max(1) },
            wait: Duration::from_secs(5),
            writes: std::sync::atomic::AtomicU64::new(0),
            inline: std::sync::atomic::AtomicBool::new(true),
            get_sql: Mutex::new(std::collections::HashMap::new()),
            inserts: InsertTexts::new(D),
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
                waiting: 0,
            }),
            freed: Condvar::new(),
            sync_full: commit.sync_full,
            writer: None,
        };
        // Fail now on a bad path, and switch the file to WAL (persistent) once.
        drop(driver.conn()?);
        if !memory && commit.batching.max > 0 {
            driver.writer = Some(Writer::start(driver.connect()?, commit.batching)?);
        }
        Ok(driver)
    }

    /// Group-commit counters (all zero without a writer).
    pub fn group_stats(&self) -> GroupStats {
        self.writer.as_ref().map(Writer::stats).unwrap_or_default()
    }

    /// The write `kind` as one [`Op`], its SQL built here, on the caller's thread.
    fn op(&self, kind: WriteKind, table: &Table, row: &Row, opts: &Options) -> Result<Op, DbError> {
        let written: fn(u64) -> Result<Res, DbError> = |n| Ok(sql::written(n));
        Ok(match kind {
            WriteKind::Put => Op::Exec(self.insert(table, row, opts, Conflict::Replace)?, written),
            WriteKind::Add => Op::Exec(self.insert(table, row, opts, Conflict::Fail)?, written),
            WriteKind::Update => Op::Exec(sql::update(D, table, row, opts)?, sql::updated),
            WriteKind::Del => Op::Exec(sql::del(D, table, row)?, written),
            WriteKind::Incr => {
                let write = self.insert(table, row, opts, Conflict::Incr)?;
                let (get, cols) = sql::get(D, table, row, opts)?;
                let cols = cols.iter().map(|c| (c.name.clone(), c.kind)).collect();
                Op::Incr { write, get, cols }
            }
        })
    }

    /// The insert of a put, add or incr, its text built once per table and column set.
    fn insert(
        &self,
        table: &Table,
        row: &Row,
        opts: &Options,
        conflict: Conflict,
    ) -> Result<Sql, DbError> {
        sql::insert_cached(&self.inserts, table, row, opts, conflict)
    }

    /// A write from a blocking caller: through the writer (waiting for its commit), or alone on a
    /// pool connection without one.
    fn write(
        &self,
        kind: WriteKind,
        table: &Table,
        row: &Row,
        opts: &Options,
    ) -> Result<Res, DbError> {
        let op = self.op(kind, table, row, opts)?;
        if let Some(w) = &self.writer {
            if NO_WAIT.get() {
                // A runtime thread must not wait for the writer: the blocking pool will.
                return Err(DbError::Busy("sqlite writer busy".into()));
            }
            return match w.write(op) {
                Done::Now(r) => r,
                Done::Later(rx) => rx
                    .blocking_recv()
                    .unwrap_or_else(|_| Err(DbError::Driver("sqlite writer stopped".into()))),
            };
        }
        let mut conn = self.conn()?;
        if let Op::Incr { .. } = op {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let r = op.run(&tx)?;
            tx.commit().map_err(map_err)?;
            return Ok(r);
        }
        op.run(&conn)
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock()
    }

    /// With `false`, every call goes to the blocking pool, even a key lookup that would take
    /// microseconds on the caller's thread (`-db-sqlite-inline 0`).
    pub fn set_inline(&self, on: bool) {
        self.inline.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    fn connect(&self) -> Result<Connection, DbError> {
        let conn = Connection::open(&self.path).map_err(map_err)?;
        conn.busy_timeout(self.wait).map_err(map_err)?;
        // Every statement text a process runs stays prepared: rusqlite keeps 16 by default,
        // fewer than the distinct gets, writes and selects of the built-in tables.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))
            .map_err(map_err)?;
        let sync = if self.sync_full { "FULL" } else { "NORMAL" };
        conn.pragma_update(None, "synchronous", sync)
            .map_err(map_err)?;
        // Checkpoints run on the blocking pool every CHECKPOINT_EVERY writes, never inside a write.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(map_err)?;
        // `like` is case-sensitive, `ilike` is not (docs/data.md).
        conn.pragma_update(None, "case_sensitive_like", true)
            .map_err(map_err)?;
        // `X REGEXP P` calls regexp(P, X); the compiled pattern is cached per statement.
        conn.create_scalar_function(
            "regexp",
            2,
            rusqlite::functions::FunctionFlags::SQLITE_UTF8
                | rusqlite::functions::FunctionFlags::SQLITE_DETERMINISTIC,
            |ctx| {
                let re = ctx.get_or_create_aux(
                    0,
                    |v| -> Result<regex::Regex, Box<dyn std::error::Error + Send + Sync>> {
                        Ok(regex::Regex::new(v.as_str()?)?)
                    },
                )?;
                let text: Option<String> = ctx.get(1)?;
                Ok(text.is_some_and(|t| re.is_match(&t)))
            },
        )
        .map_err(map_err)?;
        Ok(conn)
    }

    fn conn(&self) -> Result<Pooled<'_>, DbError> {
        if NO_WAIT.get() {
            // On a runtime thread: an idle connection and no lock wait, or Busy at once.
            let c = self
                .lock()
                .idle
                .pop()
                .ok_or_else(|| DbError::Busy("no idle sqlite connection".into()))?;
            let pooled = Pooled {
                driver: self,
                conn: Some(c),
                no_wait: true,
            };
            pooled.busy_timeout(Duration::ZERO).map_err(map_err)?;
            return Ok(pooled);
        }
        let deadline = Instant::now() + self.wait;
        let mut st = self.lock();
        loop {
            if let Some(c) = st.idle.pop() {
                return Ok(Pooled {
                    driver: self,
                    conn: Some(c),
                    no_wait: false,
                });
            }
            if st.open < self.max {
                st.open += 1;
                drop(st);
                return match self.connect() {
                    Ok(c) => Ok(Pooled {
                        driver: self,
                        conn: Some(c),
                        no_wait: false,
                    }),
                    Err(e) => {
                        self.lock().open -= 1;
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(DbError::Busy("no free sqlite connection".into()));
            }
            st.waiting += 1;
            self.freed.wait_for(&mut st, deadline - now);
            st.waiting -= 1;
        }
    }
}

pub(crate) fn execute(conn: &Connection, s: &Sql) -> Result<u64, DbError> {
    let mut stmt = conn.prepare_cached(&s.text).map_err(map_err)?;
    stmt.execute(rusqlite::params_from_iter(s.params.iter()))
        .map(|n| n as u64)
        .map_err(map_err)
}

/// A stored value as JSON by column type; None for NULL.
fn decode(kind: Option<ColumnType>, v: ValueRef<'_>) -> Option<Value> {
    Some(match (kind, v) {
        (_, ValueRef::Null) => return None,
        (Some(ColumnType::Bool), ValueRef::Integer(i)) => Value::Bool(i != 0),
        (Some(ColumnType::Bool), ValueRef::Real(f)) => Value::Bool(f != 0.0),
        (Some(ColumnType::Json), ValueRef::Text(t)) => serde_json::from_slice(t)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(t).into_owned())),
        (_, ValueRef::Integer(i)) => Value::from(i),
        (_, ValueRef::Real(f)) => {
            serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
        }
        (_, ValueRef::Text(t)) => Value::String(text(t)),
        (_, ValueRef::Blob(b)) => Value::String(b.iter().map(|x| format!("{x:02x}")).collect()),
    })
}

/// Stored text as a string: valid UTF-8 (nearly always) copied as is, else with replacement
/// characters (`from_utf8_lossy` alone walks the bytes chunk by chunk: several times slower).
fn text(t: &[u8]) -> String {
    match std::str::from_utf8(t) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(t).into_owned(),
    }
}

/// Runs a select whose result columns are `cols`, in order.
fn fetch(conn: &Connection, s: &Sql, cols: &[&Column]) -> Result<Vec<Row>, DbError> {
    fetch_text(conn, &s.text, &s.params, cols)
}

/// [`fetch`] of a statement given as its text and parameters.
fn fetch_text(
    conn: &Connection,
    text: &str,
    params: &[Param],
    cols: &[&Column],
) -> Result<Vec<Row>, DbError> {
    let mut stmt = conn.prepare_cached(text).map_err(map_err)?;
    read_rows(&mut stmt, params, cols.len(), |i| {
        (cols[i].name.as_str(), Some(cols[i].kind))
    })
}

/// Runs a prepared select with `params`; result column `i` of `n` is named and typed (when it
/// belongs to a described column) by `col(i)`.
pub(crate) fn read_rows<'c>(
    stmt: &mut rusqlite::Statement<'_>,
    params: &[Param],
    n: usize,
    col: impl Fn(usize) -> (&'c str, Option<ColumnType>),
) -> Result<Vec<Row>, DbError> {
    let mut out = Vec::new();
    read_into(
        stmt,
        rusqlite::params_from_iter(params.iter()),
        n,
        col,
        &mut out,
    )?;
    Ok(out)
}

/// [`read_rows`] appending to `out`, with parameters of any form rusqlite binds.
fn read_into<'c>(
    stmt: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
    n: usize,
    col: impl Fn(usize) -> (&'c str, Option<ColumnType>),
    out: &mut Vec<Row>,
) -> Result<(), DbError> {
    let mut rows = stmt.query(params).map_err(map_err)?;
    while let Some(r) = rows.next().map_err(map_err)? {
        let mut row = Row::new();
        for i in 0..n {
            let (name, kind) = col(i);
            if let Some(v) = decode(kind, r.get_ref(i).map_err(map_err)?) {
                row.insert(name.to_string(), v);
            }
        }
        out.push(row);
    }
    Ok(())
}

fn get_row(
    conn: &Connection,
    table: &Table,
    key: &Row,
    opts: &Options,
) -> Result<Option<Row>, DbError> {
    let (s, cols) = sql::get(D, table, key, opts)?;
    Ok(fetch(conn, &s, &cols)?.into_iter().next())
}

impl BlockingDriver for SqliteDriver {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn init(&self, tables: &[Table]) -> Result<(), DbError> {
        let mut conn = self.conn()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(map_err)?;
        for t in tables {
            tx.execute(&sql::create_table(D, t), []).map_err(map_err)?;
            let existing: Vec<String> = {
                let mut stmt = tx
                    .prepare("SELECT name FROM pragma_table_info(?1)")
                    .map_err(map_err)?;
                let names = stmt
                    .query_map([t.name()], |r| r.get::<_, String>(0))
                    .map_err(map_err)?;
                names.collect::<Result<_, _>>().map_err(map_err)?
            };
            for c in t.columns().iter().filter(|c| !existing.contains(&c.name)) {
                tracing::info!(table = t.name(), column = c.name, "db: adding column");
                tx.execute(&sql::add_column(D, t, c), []).map_err(map_err)?;
            }
            for ddl in sql::create_indexes(D, t) {
                tx.execute(&ddl, []).map_err(map_err)?;
            }
        }
        tx.commit().map_err(map_err)
    }

    fn get(&self, table: &Table, key: &Row, opts: &Options) -> Result<Option<Row>, DbError> {
        if !opts.select.is_empty() {
            return get_row(&*self.conn()?, table, key, opts);
        }
        let params: Vec<Param> = key_params(table, key)?
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        let cols = select_columns(table, opts);
        let cached = self
            .get_sql
            .lock()
            .get(table.name())
            .filter(|(n, _)| n.iter().eq(cols.iter().map(|c| &c.name)))
            .map(|(_, t)| t.clone());
        let text = match cached {
            Some(t) => t,
            None => {
                let built: std::sync::Arc<str> = sql::get(D, table, key, opts)?.0.text.into();
                let names = cols.iter().map(|c| c.name.clone()).collect();
                self.get_sql
                    .lock()
                    .insert(table.name().to_string(), (names, built.clone()));
                built
            }
        };
        Ok(fetch_text(&*self.conn()?, &text, &params, &cols)?
            .into_iter()
            .next())
    }

    fn begin_now(&self) -> bool {
        if !self.inline.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        NO_WAIT.set(true);
        true
    }

    fn end_now(&self) {
        NO_WAIT.set(false);
    }

    fn maintenance_due(&self) -> bool {
        let n = self
            .writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        n % CHECKPOINT_EVERY == 0
    }

    fn maintain(&self) {
        match self.conn() {
            Ok(c) => {
                if let Err(e) = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!("sqlite checkpoint: {e}");
                }
            }
            Err(e) => tracing::warn!("sqlite checkpoint: {e}"),
        }
    }

    fn queue(
        &self,
        kind: WriteKind,
        table: &Table,
        row: &Row,
        opts: &Options,
    ) -> Option<Result<Pending, DbError>> {
        let w = self.writer.as_ref()?;
        let op = match self.op(kind, table, row, opts) {
            Ok(op) => op,
            Err(e) => return Some(Err(e)),
        };
        if !self.inline.load(std::sync::atomic::Ordering::Relaxed) {
            return Some(Ok(Pending::new(w.enqueue_only(op))));
        }
        // On the runtime thread: commit at once when nothing stands in the way, never wait.
        let before = NO_WAIT.replace(true);
        let done = w.write(op);
        NO_WAIT.set(before);
        Some(Ok(match done {
            Done::Now(r) => Pending::ready(r),
            Done::Later(rx) => Pending::new(rx),
        }))
    }

    fn put(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        self.write(WriteKind::Put, table, row, opts)
    }

    fn add(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        self.write(WriteKind::Add, table, row, opts)
    }

    fn update(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        self.write(WriteKind::Update, table, row, opts)
    }

    fn incr(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        self.write(WriteKind::Incr, table, row, opts)
    }

    fn del(&self, table: &Table, key: &Row, opts: &Options) -> Result<Res, DbError> {
        self.write(WriteKind::Del, table, key, opts)
    }

    fn select(&self, table: &Table, query: &Row, opts: &Options) -> Result<Res, DbError> {
        let plan = SelectPlan::new(D, table, query, opts)?;
        let conn = self.conn()?;
        let rows = fetch(&conn, &plan.rows, &plan.cols)?;
        let total = match &plan.count {
            Some(cs) => {
                let mut stmt = conn.prepare_cached(&cs.text).map_err(map_err)?;
                let n: i64 = stmt
                    .query_row(rusqlite::params_from_iter(cs.params.iter()), |r| r.get(0))
                    .map_err(map_err)?;
                Some(n)
            }
            None => None,
        };
        Ok(plan.result(rows, total))
    }

    /// One cached statement per range (`col >= ? AND col < ?`), run range after range on one
    /// connection in one read transaction: each range is one index probe and a walk, without
    /// the row set and the sort SQLite gives an OR of ranges.
    fn select_prefixes(
        &self,
        table: &Table,
        column: &str,
        prefixes: &[String],
        opts: &Options,
    ) -> Result<Vec<Row>, DbError> {
        let col = prefix_column(table, column)?;
        let mut out = Vec::new();
        if prefixes.is_empty() {
            return Ok(out);
        }
        let ranges = prefix_ranges(disjoint_prefixes(prefixes.to_vec()));
        let cols = select_columns(table, opts);
        let named = |i: usize| (cols[i].name.as_str(), Some(cols[i].kind));
        let conn = self.conn()?;
        // One read transaction for all ranges: one snapshot (a row moving from one range to
        // another meanwhile is read once or not at all, never twice), and SQLite opens and
        // ends its read of the file once instead of once per statement. Dropped on an error:
        // rolled back.
        let tx = (ranges.len() > 1)
            .then(|| conn.unchecked_transaction())
            .transpose()
            .map_err(map_err)?;
        let mut bounded = None;
        for (start, end) in &ranges {
            match end {
                Some(end) => {
                    let stmt = match &mut bounded {
                        Some(s) => s,
                        None => bounded.insert(
                            conn.prepare_cached(&sql::range_select(D, table, &cols, col, true))
                                .map_err(map_err)?,
                        ),
                    };
                    read_into(stmt, (start, end), cols.len(), named, &mut out)?;
                }
                None => {
                    let text = sql::range_select(D, table, &cols, col, false);
                    let mut stmt = conn.prepare_cached(&text).map_err(map_err)?;
                    read_into(&mut stmt, [start], cols.len(), named, &mut out)?;
                }
            }
        }
        drop(bounded);
        if let Some(tx) = tx {
            tx.commit().map_err(map_err)?;
        }
        Ok(out)
    }

    fn query(&self, text: &str, params: &[Value], _opts: &Options) -> Result<Res, DbError> {
        let conn = self.conn()?;
        // Cached like the driver's own statements: a caller's statement is usually run again
        // (the job queue's enqueue and claim run on every batch).
        let mut stmt = conn.prepare_cached(text).map_err(map_err)?;
        let params: Vec<Param> = params.iter().map(query_param).collect();
        if stmt.column_count() == 0 {
            let affected = stmt
                .execute(rusqlite::params_from_iter(params.iter()))
                .map_err(map_err)? as u64;
            return Ok(Res {
                affected,
                ..Res::default()
            });
        }
        let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
        let rows = read_rows(&mut stmt, &params, names.len(), |i| {
            (names[i].as_str(), None)
        })?;
        Ok(Res {
            rows,
            ..Res::default()
        })
    }
}

#[cfg(test)]
mod group_tests;
