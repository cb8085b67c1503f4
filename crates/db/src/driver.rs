//! The [`Driver`] trait every storage backend implements, its blocking twin [`BlockingDriver`], and
//! [`Blocking`], which runs a blocking driver on tokio's blocking pool (or inline when it cannot
//! wait). Depends only on the leaf types.

use crate::error::DbError;
use crate::options::Options;
use crate::schema::Table;
use crate::types::{Res, Row};
use serde_json::Value;
use std::sync::Arc;

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
    /// Every row whose text column `column` begins with one of `prefixes` (none for an empty
    /// list), all of them (not paged) and in no particular order, with the columns
    /// `opts.select` names (all when empty); no other option applies. The rows of a `select`
    /// with `begins_with` on the list, paged to the end: that is what this default does. SQLite
    /// and PostgreSQL read each prefix's key range apart instead, without the sorting and
    /// deduplicating of an OR of ranges (a location search reads a few hundred cells).
    async fn select_prefixes(
        &self,
        table: &Table,
        column: &str,
        prefixes: &[String],
        opts: &Options,
    ) -> Result<Vec<Row>, DbError> {
        paged_prefixes(self, table, column, prefixes, opts).await
    }
}

/// [`Driver::select_prefixes`] as pages of a `begins_with` select on `d`.
pub(crate) async fn paged_prefixes<D: Driver + ?Sized>(
    d: &D,
    table: &Table,
    column: &str,
    prefixes: &[String],
    opts: &Options,
) -> Result<Vec<Row>, DbError> {
    let Some((query, mut o)) = prefix_select(table, column, prefixes, opts)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    loop {
        let r = d.select(table, &query, &o).await?;
        out.extend(r.rows);
        match r.next_token {
            Some(t) => o.start = Some(t),
            None => return Ok(out),
        }
    }
}

/// The paged `begins_with` select a prefix read ([`Driver::select_prefixes`]) is the same as:
/// its query and options (pages of 1000); None when there is no prefix. Refuses a column that
/// is not a text column of `table`.
pub(crate) fn prefix_select(
    table: &Table,
    column: &str,
    prefixes: &[String],
    opts: &Options,
) -> Result<Option<(Row, Options)>, DbError> {
    crate::query::prefix_column(table, column)?;
    if prefixes.is_empty() {
        return Ok(None);
    }
    let mut query = Row::new();
    query.insert(
        column.to_string(),
        Value::Array(prefixes.iter().cloned().map(Value::String).collect()),
    );
    let o = Options {
        select: opts.select.clone(),
        count: 1000,
        ..Options::default()
    }
    .op(column, crate::types::Op::BeginsWith);
    Ok(Some((query, o)))
}

/// Which write a [`BlockingDriver::queue`] call asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    Put,
    Add,
    Update,
    Incr,
    Del,
}

/// A write handed to [`BlockingDriver::queue`]: its result, already there when the driver could
/// commit it at once, or once the transaction holding it ended.
pub struct Pending(PendingState);

enum PendingState {
    Ready(Result<Res, DbError>),
    Queued(tokio::sync::oneshot::Receiver<Result<Res, DbError>>),
}

impl Pending {
    /// A pending write whose result arrives on `rx`.
    pub fn new(rx: tokio::sync::oneshot::Receiver<Result<Res, DbError>>) -> Pending {
        Pending(PendingState::Queued(rx))
    }

    /// A write already done.
    pub fn ready(r: Result<Res, DbError>) -> Pending {
        Pending(PendingState::Ready(r))
    }

    /// Waits for the result without blocking the thread.
    pub async fn wait(self) -> Result<Res, DbError> {
        match self.0 {
            PendingState::Ready(r) => r,
            PendingState::Queued(rx) => rx
                .await
                .unwrap_or_else(|_| Err(DbError::Driver("database writer stopped".into()))),
        }
    }
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

/// A write: queued to the driver's writer when it has one (group commit, awaited without blocking
/// the runtime), otherwise as [`now_or_off`].
macro_rules! write {
    ($self:ident, $kind:ident, $method:ident, $table:ident, $row:ident, $opts:ident) => {{
        match $self.0.queue(WriteKind::$kind, $table, $row, $opts) {
            Some(queued) => {
                let r = match queued {
                    Ok(p) => p.wait().await,
                    Err(e) => Err(e),
                };
                if r.is_ok() && $self.0.maintenance_due() {
                    let d = $self.0.clone();
                    tokio::task::spawn_blocking(move || d.maintain());
                }
                r
            }
            None => now_or_off!($self, $method, $table, $row, $opts, true),
        }
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
        write!(self, Put, put, table, row, opts)
    }
    async fn add(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        write!(self, Add, add, table, row, opts)
    }
    async fn update(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        write!(self, Update, update, table, row, opts)
    }
    async fn incr(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        write!(self, Incr, incr, table, row, opts)
    }
    async fn del(&self, table: &Table, key: &Row, opts: &Options) -> Result<Res, DbError> {
        write!(self, Del, del, table, key, opts)
    }
    /// A short select (a bounded slice of the key, [`crate::query::short_select`]) runs like a
    /// key lookup; any other on the blocking pool.
    async fn select(&self, table: &Table, query: &Row, opts: &Options) -> Result<Res, DbError> {
        if crate::query::short_select(table, query, opts) {
            now_or_off!(self, select, table, query, opts, false)
        } else {
            off!(self, select, table, query, opts)
        }
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
    /// Ranges of the first key column run like a short select (on the caller's thread when the
    /// driver can without waiting); any other on the blocking pool.
    async fn select_prefixes(
        &self,
        table: &Table,
        column: &str,
        prefixes: &[String],
        opts: &Options,
    ) -> Result<Vec<Row>, DbError> {
        let first = table
            .primary_keys()
            .first()
            .is_some_and(|c| c.name == column);
        if first && self.0.begin_now() {
            let r = self.0.select_prefixes(table, column, prefixes, opts);
            self.0.end_now();
            if !matches!(r, Err(DbError::Busy(_))) {
                return r;
            }
        }
        let (d, t, c, p, o) = (
            self.0.clone(),
            table.clone(),
            column.to_string(),
            prefixes.to_vec(),
            opts.clone(),
        );
        off_runtime(move || d.select_prefixes(&t, &c, &p, &o)).await
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

    /// Group commit: hands the write to the driver's own writer, which answers once the
    /// transaction holding it committed ([`Pending`]); an error building the write comes back at
    /// once. None when the driver has no writer: [`Blocking`] then calls the blocking method.
    fn queue(
        &self,
        _kind: WriteKind,
        _table: &Table,
        _row: &Row,
        _opts: &Options,
    ) -> Option<Result<Pending, DbError>> {
        None
    }
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
    /// Every row whose text column `column` begins with one of `prefixes`, as
    /// [`Driver::select_prefixes`]; by default the paged `begins_with` select.
    fn select_prefixes(
        &self,
        table: &Table,
        column: &str,
        prefixes: &[String],
        opts: &Options,
    ) -> Result<Vec<Row>, DbError> {
        let Some((query, mut o)) = prefix_select(table, column, prefixes, opts)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        loop {
            let r = self.select(table, &query, &o)?;
            out.extend(r.rows);
            match r.next_token {
                Some(t) => o.start = Some(t),
                None => return Ok(out),
            }
        }
    }
}
