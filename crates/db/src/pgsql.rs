//! The PostgreSQL driver (SPEC §8, `-db-pgsql-pool postgresql://...`): natively asynchronous over
//! tokio-postgres with a bounded deadpool pool, so a worker's runtime never waits on a thread for
//! the database. Statements come from [`super::sql`] with the Postgres dialect (quoted identifiers
//! from the [`Table`] only, `$n` placeholders); this file runs them, binds every [`Param`] with
//! the Rust type the server expects for that placeholder (PostgreSQL does not coerce a bound
//! `int8` into an `int4` or `bool` column), converts results back to JSON by type, and maps server
//! errors onto [`DbError`]. An optional schema isolates a pool (one schema per test run).

use super::schema::{valid_name, ColumnType, Table};
use super::sql::{self, Conflict, Dialect, Sql};
use super::{key_params, prepare_write, DbError, Driver, Options, Param, Res, Row, WriteMode};
use bytes::BytesMut;
use deadpool_postgres::{
    Client, GenericClient, Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime,
    Transaction,
};
use serde_json::Value;
use std::error::Error as StdError;
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use tokio_postgres::{NoTls, Statement};

const D: Dialect = Dialect::Postgres;

/// How long an operation waits for a pooled connection, and a new connection for the server.
const WAIT: Duration = Duration::from_secs(5);

/// Advisory lock key serialising concurrent `init` calls (CREATE TABLE IF NOT EXISTS races).
const INIT_LOCK: i64 = 0x626b_6a73_696e_6974; // "bkjsinit"

type BoxError = Box<dyn StdError + Sync + Send>;

/// A parameter that cannot become the type the server expects for its placeholder.
#[derive(Debug)]
struct BadParam(String);

impl std::fmt::Display for BadParam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for BadParam {}

fn bad_param(p: &Param, ty: &Type) -> BoxError {
    Box::new(BadParam(format!("{p:?} does not fit {ty}")))
}

fn param_text(p: &Param) -> String {
    match p {
        Param::Null => String::new(),
        Param::Int(i) => i.to_string(),
        Param::Real(f) => f.to_string(),
        Param::Text(s) => s.clone(),
    }
}

fn param_i64(p: &Param) -> Option<i64> {
    match p {
        Param::Int(i) => Some(*i),
        Param::Real(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => Some(*f as i64),
        Param::Text(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn param_f64(p: &Param) -> Option<f64> {
    match p {
        Param::Int(i) => Some(*i as f64),
        Param::Real(f) => Some(*f),
        Param::Text(s) => s.trim().parse().ok(),
        Param::Null => None,
    }
}

fn param_bool(p: &Param) -> Option<bool> {
    match p {
        Param::Int(i) => Some(*i != 0),
        Param::Real(f) => Some(*f != 0.0),
        Param::Text(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "t" | "yes" | "on" => Some(true),
            "false" | "0" | "f" | "no" | "off" | "" => Some(false),
            _ => None,
        },
        Param::Null => None,
    }
}

/// A [`Param`] binds as whatever the server inferred for its placeholder: the integer of an
/// `int4` column becomes an `i32`, a bool column's 0/1 a `bool`, JSON text a `jsonb` value.
impl ToSql for Param {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        if *self == Param::Null {
            return Ok(IsNull::Yes);
        }
        let bad = || bad_param(self, ty);
        match *ty {
            Type::BOOL => param_bool(self).ok_or_else(bad)?.to_sql(ty, out),
            Type::INT2 => i16::try_from(param_i64(self).ok_or_else(bad)?)
                .map_err(|_| bad())?
                .to_sql(ty, out),
            Type::INT4 => i32::try_from(param_i64(self).ok_or_else(bad)?)
                .map_err(|_| bad())?
                .to_sql(ty, out),
            Type::INT8 => param_i64(self).ok_or_else(bad)?.to_sql(ty, out),
            Type::FLOAT4 => (param_f64(self).ok_or_else(bad)? as f32).to_sql(ty, out),
            Type::FLOAT8 => param_f64(self).ok_or_else(bad)?.to_sql(ty, out),
            Type::JSON | Type::JSONB => {
                let v = match self {
                    // JSON columns hold JSON text; plain text that is not JSON is a JSON string.
                    Param::Text(s) => {
                        serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone()))
                    }
                    Param::Int(i) => Value::from(*i),
                    Param::Real(f) => Value::from(*f),
                    Param::Null => Value::Null,
                };
                v.to_sql(ty, out)
            }
            _ => param_text(self).to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(
            *ty,
            Type::BOOL
                | Type::INT2
                | Type::INT4
                | Type::INT8
                | Type::FLOAT4
                | Type::FLOAT8
                | Type::JSON
                | Type::JSONB
        ) || <String as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

/// One result cell as JSON, decoded by its PostgreSQL type; NULL is `None`.
struct Cell(Option<Value>);

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// Milliseconds between the Unix epoch and PostgreSQL's 2000-01-01.
const PG_EPOCH_MS: i64 = 946_684_800_000;

/// The binary NUMERIC format: ndigits, weight, sign, dscale, then base-10000 digits.
fn numeric(raw: &[u8]) -> Result<Value, BoxError> {
    let word = |i: usize| -> Result<u16, BoxError> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated numeric".into())
    };
    let ndigits = word(0)? as usize;
    let weight = word(1)? as i16 as i64;
    let sign = word(2)?;
    let dscale = word(3)? as usize;
    if matches!(sign, 0xC000 | 0xD000 | 0xF000) {
        return Ok(Value::Null); // NaN, +/-Infinity: no JSON number, like a float NaN
    }
    let digit = |i: i64| -> Result<u16, BoxError> {
        if i < 0 || i as usize >= ndigits {
            Ok(0)
        } else {
            word(4 + i as usize)
        }
    };
    let mut int = String::from("0");
    for i in 0..=weight {
        let d = digit(i)?;
        if i == 0 {
            int = d.to_string();
        } else {
            int.push_str(&format!("{d:04}"));
        }
    }
    let mut frac = String::new();
    let mut i = weight + 1;
    while frac.len() < dscale {
        frac.push_str(&format!("{:04}", digit(i)?));
        i += 1;
    }
    frac.truncate(dscale);
    let neg = if sign == 0x4000 { "-" } else { "" };
    if frac.is_empty() {
        if let Ok(n) = format!("{neg}{int}").parse::<i64>() {
            return Ok(Value::from(n));
        }
    }
    let text = if frac.is_empty() {
        format!("{neg}{int}")
    } else {
        format!("{neg}{int}.{frac}")
    };
    Ok(text
        .parse::<f64>()
        .map(float)
        .unwrap_or(Value::String(text)))
}

impl<'a> FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Cell, BoxError> {
        let v = match *ty {
            Type::BOOL => Value::Bool(bool::from_sql(ty, raw)?),
            Type::INT2 => Value::from(i16::from_sql(ty, raw)?),
            Type::INT4 => Value::from(i32::from_sql(ty, raw)?),
            Type::INT8 => Value::from(i64::from_sql(ty, raw)?),
            Type::OID => Value::from(u32::from_sql(ty, raw)?),
            Type::FLOAT4 => float(f32::from_sql(ty, raw)? as f64),
            Type::FLOAT8 => float(f64::from_sql(ty, raw)?),
            Type::NUMERIC => numeric(raw)?,
            Type::JSON | Type::JSONB => Value::from_sql(ty, raw)?,
            Type::BYTEA => Value::String(raw.iter().map(|b| format!("{b:02x}")).collect()),
            // Times as milliseconds since the Unix epoch, like `date` columns.
            Type::TIMESTAMP | Type::TIMESTAMPTZ => {
                Value::from(i64::from_sql(&Type::INT8, raw)?.div_euclid(1000) + PG_EPOCH_MS)
            }
            Type::DATE => {
                Value::from(i32::from_sql(&Type::INT4, raw)? as i64 * 86_400_000 + PG_EPOCH_MS)
            }
            Type::UUID if raw.len() == 16 => {
                let h: String = raw.iter().map(|b| format!("{b:02x}")).collect();
                Value::String(format!(
                    "{}-{}-{}-{}-{}",
                    &h[0..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..32]
                ))
            }
            _ if <&str as FromSql>::accepts(ty) => {
                Value::String(<&str as FromSql>::from_sql(ty, raw)?.to_string())
            }
            _ => return Err(format!("unsupported result type {ty} (cast it to text)").into()),
        };
        Ok(Cell(Some(v)))
    }

    fn from_sql_null(_: &Type) -> Result<Cell, BoxError> {
        Ok(Cell(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Whether `e` or one of its sources is of type `T`.
fn caused_by<'e, T: StdError + 'static>(e: &'e (dyn StdError + 'static)) -> Option<&'e T> {
    let mut cur = Some(e);
    while let Some(x) = cur {
        if let Some(t) = x.downcast_ref::<T>() {
            return Some(t);
        }
        cur = x.source();
    }
    None
}

fn map_err(e: tokio_postgres::Error) -> DbError {
    if let Some(db) = e.as_db_error() {
        let mut text = db.message().to_string();
        if let Some(detail) = db.detail() {
            text.push_str(": ");
            text.push_str(detail);
        }
        let code = db.code();
        if *code == SqlState::UNIQUE_VIOLATION {
            return DbError::Exists;
        }
        let class = code.code().get(..2).unwrap_or("");
        return match class {
            // Data exceptions and integrity violations: the value was wrong.
            "22" | "23" => DbError::BadValue {
                column: db.column().unwrap_or_default().to_string(),
                reason: text,
            },
            // Serialization failure / deadlock, too many connections, connection trouble, lock
            // not available, server starting or shutting down: a retry may succeed.
            "40" | "53" | "08" | "55" | "57" => DbError::Busy(text),
            _ => DbError::Driver(text),
        };
    }
    let text = match e.source() {
        Some(s) => format!("{e}: {s}"),
        None => e.to_string(),
    };
    if let Some(b) = caused_by::<BadParam>(&e) {
        return DbError::BadValue {
            column: String::new(),
            reason: b.to_string(),
        };
    }
    if e.is_closed()
        || caused_by::<std::io::Error>(&e).is_some()
        || text.contains("timeout")
        || text.contains("connect")
    {
        return DbError::Busy(text);
    }
    DbError::Driver(text)
}

fn map_pool_err(e: PoolError) -> DbError {
    match e {
        PoolError::Timeout(_) => DbError::Busy(format!("postgresql pool: {e}")),
        PoolError::Backend(e) => map_err(e),
        other => DbError::Driver(format!("postgresql pool: {other}")),
    }
}

/// The PostgreSQL driver over a pool of connections.
pub struct PgsqlDriver {
    pool: Pool,
    schema: Option<String>,
}

impl std::fmt::Debug for PgsqlDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgsqlDriver")
            .field("schema", &self.schema)
            .field("status", &self.pool.status())
            .finish()
    }
}

fn params(p: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    p.iter().map(|x| x as &(dyn ToSql + Sync)).collect()
}

/// A pooled connection or a transaction on one: what the statement helpers run on. (An enum
/// rather than a generic over deadpool's `GenericClient`, whose futures are not known to be
/// `Send`.)
#[derive(Clone, Copy)]
enum Conn<'a> {
    Client(&'a Client),
    Tx(&'a Transaction<'a>),
}

impl Conn<'_> {
    async fn prepare(self, s: &Sql) -> Result<Statement, DbError> {
        match self {
            Conn::Client(c) => c.prepare_cached(&s.text).await,
            Conn::Tx(t) => t.prepare_cached(&s.text).await,
        }
        .map_err(map_err)
    }

    async fn execute(self, s: &Sql) -> Result<u64, DbError> {
        let stmt = self.prepare(s).await?;
        let ps = params(&s.params);
        match self {
            Conn::Client(c) => c.execute(&stmt, &ps).await,
            Conn::Tx(t) => t.execute(&stmt, &ps).await,
        }
        .map_err(map_err)
    }

    async fn query(self, s: &Sql) -> Result<Vec<tokio_postgres::Row>, DbError> {
        let stmt = self.prepare(s).await?;
        let ps = params(&s.params);
        match self {
            Conn::Client(c) => c.query(&stmt, &ps).await,
            Conn::Tx(t) => t.query(&stmt, &ps).await,
        }
        .map_err(map_err)
    }
}

/// Converts a stored value to what its column type returns: JSON text parsed (text that is not
/// JSON stays a string), bools as JSON bools even from an integer column.
fn column_value(kind: ColumnType, v: Value) -> Value {
    match (kind, v) {
        (ColumnType::Json, Value::String(s)) => {
            serde_json::from_str(&s).unwrap_or(Value::String(s))
        }
        (ColumnType::Bool, Value::Number(n)) => Value::Bool(n.as_f64() != Some(0.0)),
        (_, v) => v,
    }
}

/// Runs a select whose result columns are `cols`, in order.
async fn fetch(c: Conn<'_>, s: &Sql, cols: &[&super::Column]) -> Result<Vec<Row>, DbError> {
    let rows = c.query(s).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let mut row = Row::new();
        for (i, col) in cols.iter().enumerate() {
            if let Cell(Some(v)) = r.try_get::<_, Cell>(i).map_err(map_err)? {
                row.insert(col.name.clone(), column_value(col.kind, v));
            }
        }
        out.push(row);
    }
    Ok(out)
}

async fn get_row(
    c: Conn<'_>,
    table: &Table,
    key: &Row,
    opts: &Options,
) -> Result<Option<Row>, DbError> {
    let cols = sql::select_columns(table, opts);
    let s = sql::get(D, table, &cols, key_params(table, key)?);
    Ok(fetch(c, &s, &cols).await?.into_iter().next())
}

impl PgsqlDriver {
    /// Builds a pool of at most `max` connections to `url` (`postgresql://user@host:port/db`).
    /// With `schema`, every pooled connection uses it as its `search_path` and the schema is
    /// created when missing, so this pool's tables live apart from everyone else's. Checks out
    /// one connection so a wrong URL fails here; an unreachable server is [`DbError::Busy`].
    pub async fn connect(
        url: &str,
        max: usize,
        schema: Option<&str>,
    ) -> Result<PgsqlDriver, DbError> {
        let mut cfg: tokio_postgres::Config = url
            .parse()
            .map_err(|e| DbError::Driver(format!("bad postgresql url: {e}")))?;
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(WAIT);
        }
        if let Some(s) = schema {
            // The name goes into a connection option and DDL: only plain identifiers.
            if !valid_name(s) {
                return Err(DbError::BadName(s.to_string()));
            }
            let opts = match cfg.get_options() {
                Some(o) if !o.trim().is_empty() => format!("{o} -c search_path={s}"),
                _ => format!("-c search_path={s}"),
            };
            cfg.options(opts);
        }
        let mgr = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(max.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(WAIT))
            .create_timeout(Some(WAIT))
            .recycle_timeout(Some(WAIT))
            .build()
            .map_err(|e| DbError::Driver(format!("postgresql pool: {e}")))?;
        let driver = PgsqlDriver {
            pool,
            schema: schema.map(str::to_string),
        };
        let client = driver.pool.get().await.map_err(map_pool_err)?;
        if let Some(s) = &driver.schema {
            let ddl = format!("CREATE SCHEMA IF NOT EXISTS {}", D.quote(s));
            match client.batch_execute(&ddl).await.map_err(map_err) {
                // Another process created it at the same moment.
                Ok(()) | Err(DbError::Exists) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(driver)
    }

    /// The schema this pool works in, when one was given.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The underlying pool (for raw access in benchmarks and tools).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, DbError> {
        self.pool.get().await.map_err(map_pool_err)
    }
}

#[async_trait::async_trait]
impl Driver for PgsqlDriver {
    fn name(&self) -> &'static str {
        "pgsql"
    }

    async fn init(&self, tables: &[Table]) -> Result<(), DbError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&INIT_LOCK])
            .await
            .map_err(map_err)?;
        for t in tables {
            tx.batch_execute(&sql::create_table(D, t))
                .await
                .map_err(map_err)?;
            let existing: Vec<String> = tx
                .query(
                    "SELECT column_name::text FROM information_schema.columns \
                     WHERE table_schema = current_schema() AND table_name::text = $1",
                    &[&t.name()],
                )
                .await
                .map_err(map_err)?
                .iter()
                .map(|r| r.try_get::<_, String>(0))
                .collect::<Result<_, _>>()
                .map_err(map_err)?;
            for c in t.columns().iter().filter(|c| !existing.contains(&c.name)) {
                tracing::info!(table = t.name(), column = c.name, "db: adding column");
                tx.batch_execute(&sql::add_column(D, t, c))
                    .await
                    .map_err(map_err)?;
            }
            for ddl in sql::create_indexes(D, t) {
                tx.batch_execute(&ddl).await.map_err(map_err)?;
            }
        }
        tx.commit().await.map_err(map_err)
    }

    async fn get(&self, table: &Table, key: &Row, opts: &Options) -> Result<Option<Row>, DbError> {
        get_row(Conn::Client(&self.client().await?), table, key, opts).await
    }

    async fn put(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        let s = sql::insert(
            D,
            table,
            prepare_write(table, row, opts, WriteMode::Insert)?,
            Conflict::Replace,
        );
        let affected = Conn::Client(&self.client().await?).execute(&s).await?;
        Ok(Res {
            affected,
            ..Res::default()
        })
    }

    async fn add(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        let s = sql::insert(
            D,
            table,
            prepare_write(table, row, opts, WriteMode::Insert)?,
            Conflict::Fail,
        );
        let affected = Conn::Client(&self.client().await?).execute(&s).await?;
        Ok(Res {
            affected,
            ..Res::default()
        })
    }

    async fn update(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        let keys = key_params(table, row)?;
        let vals = prepare_write(table, row, opts, WriteMode::Update)?;
        let s = sql::update(D, table, vals, keys);
        let affected = Conn::Client(&self.client().await?).execute(&s).await?;
        if affected == 0 {
            return Err(DbError::NotFound);
        }
        Ok(Res {
            affected,
            ..Res::default()
        })
    }

    async fn incr(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        let s = sql::insert(
            D,
            table,
            prepare_write(table, row, opts, WriteMode::Incr)?,
            Conflict::Incr,
        );
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        let affected = Conn::Tx(&tx).execute(&s).await?;
        let rows = get_row(Conn::Tx(&tx), table, row, opts)
            .await?
            .into_iter()
            .collect();
        tx.commit().await.map_err(map_err)?;
        Ok(Res {
            rows,
            affected,
            ..Res::default()
        })
    }

    async fn del(&self, table: &Table, key: &Row, _opts: &Options) -> Result<Res, DbError> {
        let s = sql::delete(D, table, key_params(table, key)?);
        let affected = Conn::Client(&self.client().await?).execute(&s).await?;
        Ok(Res {
            affected,
            ..Res::default()
        })
    }

    async fn select(&self, table: &Table, query: &Row, opts: &Options) -> Result<Res, DbError> {
        let offset = opts.offset()?;
        let count = opts.page_size();
        let cols = sql::select_columns(table, opts);
        let (s, cs) = sql::select(D, table, &cols, query, opts, offset)?;
        let client = self.client().await?;
        let rows = fetch(Conn::Client(&client), &s, &cols).await?;
        let (rows, next_token) = super::page(rows, count, offset);
        let total = if opts.total {
            let r = Conn::Client(&client).query(&cs).await?;
            let n: i64 = match r.first() {
                Some(r) => r.try_get(0).map_err(map_err)?,
                None => 0,
            };
            Some(n.max(0) as u64)
        } else {
            None
        };
        Ok(Res {
            rows,
            affected: 0,
            next_token,
            total,
        })
    }

    async fn query(&self, text: &str, params: &[Value], _opts: &Options) -> Result<Res, DbError> {
        let client = self.client().await?;
        // Not cached: native statements are arbitrary text.
        let stmt = client.prepare(text).await.map_err(map_err)?;
        let ps: Vec<Param> = params.iter().map(super::query_param).collect();
        let refs = self::params(&ps);
        if stmt.columns().is_empty() {
            let affected = client.execute(&stmt, &refs).await.map_err(map_err)?;
            return Ok(Res {
                affected,
                ..Res::default()
            });
        }
        let rows = client.query(&stmt, &refs).await.map_err(map_err)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut row = Row::new();
            for (i, c) in stmt.columns().iter().enumerate() {
                if let Cell(Some(v)) = r.try_get::<_, Cell>(i).map_err(map_err)? {
                    row.insert(c.name().to_string(), v);
                }
            }
            out.push(row);
        }
        Ok(Res {
            rows: out,
            ..Res::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{items_table, row};
    use crate::{Column, Op};
    use serde_json::json;

    const ADDR: &str = "127.0.0.1:5432";
    const URLS: [&str; 2] = [
        "postgresql://postgres@127.0.0.1:5432/test",
        "postgresql://root@127.0.0.1:5432/test",
    ];

    /// Drops the test schema when the test ends, also when it fails: from a thread of its own
    /// with its own runtime and connection, since `Drop` cannot await.
    struct DropSchema {
        url: String,
        schema: String,
    }

    impl Drop for DropSchema {
        fn drop(&mut self) {
            let (url, schema) = (self.url.clone(), self.schema.clone());
            let done = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    let (client, conn) = tokio_postgres::connect(&url, NoTls).await?;
                    tokio::spawn(conn);
                    let ddl = format!("DROP SCHEMA IF EXISTS {} CASCADE", D.quote(&schema));
                    client.batch_execute(&ddl).await
                })
            })
            .join();
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("dropping schema {}: {e}", self.schema),
                Err(_) => eprintln!("dropping schema {}: cleanup thread panicked", self.schema),
            }
        }
    }

    /// A driver in a fresh schema plus the guard that drops it; None (test skipped) when no
    /// server listens and CI is not set.
    async fn setup(max: usize) -> Option<(DropSchema, PgsqlDriver)> {
        let reachable = matches!(
            tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(ADDR))
                .await,
            Ok(Ok(_))
        );
        if !reachable {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("PostgreSQL not reachable on {ADDR} (CI=true: this test must run)");
            }
            println!("skipped: PostgreSQL not reachable on {ADDR}");
            return None;
        }
        let schema = format!(
            "bkjs_t_{}_{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let mut errors = Vec::new();
        for url in URLS {
            let guard = DropSchema {
                url: url.to_string(),
                schema: schema.clone(),
            };
            match PgsqlDriver::connect(url, max, Some(&schema)).await {
                Ok(d) => return Some((guard, d)),
                Err(e) => {
                    std::mem::forget(guard);
                    errors.push(format!("{url}: {e}"));
                }
            }
        }
        panic!("PostgreSQL on {ADDR} refused every test URL: {errors:?}");
    }

    fn table() -> Table {
        items_table([Column::date("day"), Column::text("email").unique()])
    }

    fn o() -> Options {
        Options::default()
    }

    /// The driver conformance suite of issue 4, in a schema of its own dropped afterwards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pgsql_conformance() {
        let Some((_guard, d)) = setup(8).await else {
            return;
        };
        crate::conformance::run(&d, "c").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pgsql_driver_basics() {
        let Some((_guard, d)) = setup(4).await else {
            return;
        };
        let t = table();
        d.init(std::slice::from_ref(&t)).await.expect("init");
        d.init(std::slice::from_ref(&t)).await.expect("init twice");

        // Types round-trip: int, json, bool, real, date (RFC 3339 in, ms out); unknown ignored.
        let r = row(
            json!({"id": "a", "rk": "1", "num": "42", "data": {"x": [1, 2]},
            "flag": "yes", "score": 2.5, "day": "1970-01-01T00:00:01Z", "email": "a@x",
            "nope": 1}),
        );
        d.add(&t, &r, &o()).await.expect("add");
        let g = d
            .get(&t, &row(json!({"id": "a", "rk": "1"})), &o())
            .await
            .expect("get")
            .expect("row");
        assert_eq!(g["num"], json!(42));
        assert_eq!(g["data"], json!({"x": [1, 2]}));
        assert_eq!(g["flag"], json!(true));
        assert_eq!(g["score"], json!(2.5));
        assert_eq!(g["day"], json!(1000));
        assert!(g["mtime"].as_i64().expect("mtime") > 0);
        assert!(!g.contains_key("cnt"), "NULL columns are omitted: {g:?}");

        // add twice, or a duplicate unique value: Exists.
        assert_eq!(d.add(&t, &r, &o()).await, Err(DbError::Exists));
        let dup = row(json!({"id": "b", "rk": "1", "email": "a@x"}));
        assert_eq!(d.add(&t, &dup, &o()).await, Err(DbError::Exists));
        // An int column takes 64 bits, like in SQLite.
        let big = row(json!({"id": "b", "rk": "2", "num": 1u64 << 40}));
        d.put(&t, &big, &o()).await.expect("64-bit int");
        let got = d
            .get(&t, &row(json!({"id": "b", "rk": "2"})), &o())
            .await
            .expect("get")
            .expect("row");
        assert_eq!(got["num"], json!(1u64 << 40));
        d.del(&t, &big, &o()).await.expect("del");

        // update keeps other columns; a missing row is NotFound.
        d.update(&t, &row(json!({"id": "a", "rk": "1", "name": "n1"})), &o())
            .await
            .expect("update");
        let g = d
            .get(&t, &row(json!({"id": "a", "rk": "1"})), &o())
            .await
            .expect("get")
            .expect("row");
        assert_eq!(
            (g["name"].clone(), g["num"].clone()),
            (json!("n1"), json!(42))
        );
        assert_eq!(
            d.update(&t, &row(json!({"id": "zz", "rk": "1", "name": "x"})), &o())
                .await,
            Err(DbError::NotFound)
        );

        // put replaces the whole row.
        d.put(&t, &row(json!({"id": "a", "rk": "1", "score": 1})), &o())
            .await
            .expect("put");
        let g = d
            .get(&t, &row(json!({"id": "a", "rk": "1"})), &o())
            .await
            .expect("get")
            .expect("row");
        assert!(!g.contains_key("name") && g["score"] == json!(1.0), "{g:?}");

        // incr creates, then adds; returns the row.
        let k = json!({"id": "c", "rk": "1"});
        for (n, want) in [(1, 1), (2, 3), (-1, 2)] {
            let mut r = row(k.clone());
            r.insert("cnt".into(), json!(n));
            r.insert("score".into(), json!(0.5));
            let res = d.incr(&t, &r, &o()).await.expect("incr");
            assert_eq!(res.rows[0]["cnt"], json!(want));
        }

        // Operators and paging over 9 rows.
        for i in 0..9 {
            d.put(
                &t,
                &row(json!({"id": "p", "rk": format!("r{i}"), "num": i,
                    "name": format!("Name{i}"), "flag": i % 2 == 0})),
                &o(),
            )
            .await
            .expect("put page row");
        }
        let sel = |q: Value, opts: Options| {
            let (t, q) = (t.clone(), row(q));
            let d = &d;
            async move { d.select(&t, &q, &opts).await }
        };
        let n = |res: &Res| res.rows.len();
        let r = sel(json!({"id": "p", "num": 5}), o().op("num", Op::Gt))
            .await
            .expect("gt");
        assert_eq!(n(&r), 3);
        let r = sel(json!({"id": "p", "rk": "r"}), o().op("rk", Op::BeginsWith))
            .await
            .expect("begins_with");
        assert_eq!(n(&r), 9);
        let r = sel(
            json!({"id": "p", "name": "name%"}),
            o().op("name", Op::Ilike),
        )
        .await
        .expect("ilike");
        assert_eq!(n(&r), 9);
        let r = sel(
            json!({"id": "p", "name": "name%"}),
            o().op("name", Op::Like),
        )
        .await
        .expect("like");
        assert_eq!(n(&r), 0);
        let r = sel(
            json!({"id": "p", "name": "^Name[1-3]$"}),
            o().op("name", Op::Regexp),
        )
        .await
        .expect("regexp");
        assert_eq!(n(&r), 3);
        let r = sel(json!({"id": "p", "flag": true}), o())
            .await
            .expect("bool");
        assert_eq!(n(&r), 5);
        let r = sel(
            json!({"id": "p", "num": [2, 4]}),
            o().op("num", Op::Between),
        )
        .await
        .expect("between");
        assert_eq!(n(&r), 3);
        let r = sel(json!({"id": "p", "rk": ["r1", "r8"]}), o().op("rk", Op::In))
            .await
            .expect("in");
        assert_eq!(n(&r), 2);
        let mut opts = o();
        opts.count = 2;
        opts.desc = true;
        opts.total = true;
        let mut seen = Vec::new();
        loop {
            let r = sel(json!({"id": "p"}), opts.clone()).await.expect("page");
            assert_eq!(r.total, Some(9));
            seen.extend(r.rows.iter().map(|x| x["rk"].clone()));
            match r.next_token {
                Some(tok) => opts.start = Some(tok),
                None => break,
            }
        }
        let want: Vec<Value> = (0..9).rev().map(|i| json!(format!("r{i}"))).collect();
        assert_eq!(seen, want);
        assert_eq!(sel(json!({}), o()).await, Err(DbError::NoCondition));

        // Injection through values stays a value; through names is refused.
        let evil = "x'); DROP TABLE \"t\"; --";
        d.put(&t, &row(json!({"id": evil, "rk": "1"})), &o())
            .await
            .expect("put evil");
        assert!(d
            .get(&t, &row(json!({"id": evil, "rk": "1"})), &o())
            .await
            .expect("get evil")
            .is_some());
        let bad_op = o().op("id\"; DROP TABLE t; --", Op::Eq);
        assert!(matches!(
            sel(json!({"id": "p"}), bad_op).await,
            Err(DbError::BadName(_))
        ));

        // del, then nothing.
        let k = row(json!({"id": "a", "rk": "1"}));
        assert_eq!(d.del(&t, &k, &o()).await.expect("del").affected, 1);
        assert_eq!(d.get(&t, &k, &o()).await.expect("get"), None);

        // Native query with bound parameters; numeric and count results as numbers.
        let q = d
            .query(
                "SELECT count(*) AS n, sum(num) AS s, avg(num)::numeric(10,3) AS a \
                 FROM t WHERE id = $1",
                &[json!("p")],
                &o(),
            )
            .await
            .expect("query");
        assert_eq!(q.rows[0]["n"], json!(9));
        assert_eq!(q.rows[0]["s"], json!(36));
        assert_eq!(q.rows[0]["a"], json!(4.0));
        let q = d
            .query(
                "SELECT (-12345.0678)::numeric AS a, 0.00012::numeric AS b, \
                 123456789012::numeric AS c, 'NaN'::numeric AS d, $1::int4 AS e, $2::bool AS f",
                &[json!("7"), json!(true)],
                &o(),
            )
            .await
            .expect("numeric");
        let want = json!({"a": -12345.0678, "b": 0.00012, "c": 123456789012i64, "d": null, "e": 7, "f": true});
        assert_eq!(Value::Object(q.rows[0].clone()), want);
        let q = d
            .query(
                "UPDATE t SET num = $1 WHERE id = $2",
                &[json!(7), json!("p")],
                &o(),
            )
            .await
            .expect("native update");
        assert_eq!(q.affected, 9);
        assert!(matches!(
            d.query("SELECT * FROM no_such_table", &[], &o()).await,
            Err(DbError::Driver(_))
        ));

        // Upgrade: a new column and index, data intact.
        let mut cols = t.columns().to_vec();
        cols.push(Column::text("extra").index_n(2, 1));
        let t2 = Table::new("t", cols).expect("t2");
        d.init(std::slice::from_ref(&t2)).await.expect("upgrade");
        d.update(
            &t2,
            &row(json!({"id": "p", "rk": "r1", "extra": "e"})),
            &o(),
        )
        .await
        .expect("update new column");
        let g = d
            .get(&t2, &row(json!({"id": "p", "rk": "r1"})), &o())
            .await
            .expect("get")
            .expect("row");
        assert_eq!(
            (g["extra"].clone(), g["name"].clone()),
            (json!("e"), json!("Name1"))
        );
        let idx = d
            .query(
                "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() \
                 AND indexname = 't_extra_idx'",
                &[],
                &o(),
            )
            .await
            .expect("indexes");
        assert_eq!(idx.rows.len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pgsql_busy_and_bad_urls() {
        // Nothing listens on port 1: a retryable Busy, not a driver failure.
        let e = PgsqlDriver::connect("postgresql://postgres@127.0.0.1:1/test", 1, None)
            .await
            .expect_err("no server on port 1");
        assert!(e.is_retryable(), "{e:?}");
        assert!(matches!(
            PgsqlDriver::connect("postgresql://x@127.0.0.1/test", 1, Some("a; DROP")).await,
            Err(DbError::BadName(_))
        ));
    }
}
