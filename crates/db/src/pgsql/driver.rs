//! The PostgreSQL pool ([`PgsqlDriver::connect`], optional schema per pool) and the [`crate::Driver`]
//! operations: statements from the shared SQL layer, run on a pooled connection or a
//! transaction.

use super::errors::{map_err, map_pool_err};
use super::types::{column_value, Cell};
use crate::error::DbError;
use crate::schema::{valid_name, Column, Table};
use crate::sql::{self, Dialect, Sql, SqlBackend, Written};
use crate::types::{Param, Res, Row};
use crate::write::query_param;
use deadpool_postgres::{
    Client, GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Transaction,
};
use serde_json::Value;
use std::time::Duration;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Statement};

const D: Dialect = Dialect::Postgres;

/// How long an operation waits for a pooled connection, and a new connection for the server.
const WAIT: Duration = Duration::from_secs(5);

/// Advisory lock key serialising concurrent `init` calls (CREATE TABLE IF NOT EXISTS races).
const INIT_LOCK: i64 = 0x626b_6a73_696e_6974; // "bkjsinit"

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

/// Runs a select whose result columns are `cols`, in order.
async fn fetch(c: Conn<'_>, s: &Sql, cols: &[&Column]) -> Result<Vec<Row>, DbError> {
    decode(c.query(s).await?, cols)
}

/// Fetched rows whose result columns are `cols`, in order, as rows.
fn decode(rows: Vec<tokio_postgres::Row>, cols: &[&Column]) -> Result<Vec<Row>, DbError> {
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

    /// A driver-native statement as [`crate::Driver::query`] runs it, but prepared once per
    /// pooled connection and kept in its statement cache, saving the parse round trip of every
    /// later call: for a caller's own fixed statements (the job queue's). Arbitrary text must
    /// not come here: the cache keeps every text it sees.
    pub async fn query_cached(&self, text: &str, params: &[Value]) -> Result<Res, DbError> {
        self.run_native(text, params, true).await
    }

    async fn run_native(&self, text: &str, params: &[Value], cached: bool) -> Result<Res, DbError> {
        let client = self.client().await?;
        // Not cached by default: native statements are arbitrary text.
        let stmt = if cached {
            client.prepare_cached(text).await
        } else {
            client.prepare(text).await
        }
        .map_err(map_err)?;
        let ps: Vec<Param> = params.iter().map(query_param).collect();
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

    /// The underlying pool (for raw access in benchmarks and tools).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, DbError> {
        self.pool.get().await.map_err(map_pool_err)
    }
}

#[async_trait::async_trait]
impl SqlBackend for PgsqlDriver {
    const NAME: &'static str = "pgsql";
    const DIALECT: Dialect = D;

    async fn create(&self, tables: &[Table]) -> Result<(), DbError> {
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

    async fn execute(&self, s: &Sql) -> Result<u64, DbError> {
        Conn::Client(&self.client().await?).execute(s).await
    }

    async fn fetch(&self, s: &Sql, cols: &[&Column]) -> Result<Vec<Row>, DbError> {
        fetch(Conn::Client(&self.client().await?), s, cols).await
    }

    async fn count(&self, s: &Sql) -> Result<i64, DbError> {
        let r = Conn::Client(&self.client().await?).query(s).await?;
        match r.first() {
            Some(r) => r.try_get(0).map_err(map_err),
            None => Ok(0),
        }
    }

    async fn in_tx(&self, write: &Sql, read: &Sql, cols: &[&Column]) -> Result<Written, DbError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        let affected = Conn::Tx(&tx).execute(write).await?;
        let row = fetch(Conn::Tx(&tx), read, cols).await?.into_iter().next();
        tx.commit().await.map_err(map_err)?;
        Ok((affected, row))
    }

    /// One round trip: the bounds as two text arrays, one index scan per range
    /// ([`sql::ranges_select_pg`]); the statement is prepared once per connection.
    async fn fetch_ranges(
        &self,
        t: &Table,
        col: &Column,
        cols: &[&Column],
        ranges: &[(String, String)],
    ) -> Option<Result<Vec<Row>, DbError>> {
        let run = async {
            let text = sql::ranges_select_pg(t, cols, col);
            let client = self.client().await?;
            let stmt = client.prepare_cached(&text).await.map_err(map_err)?;
            let starts: Vec<&str> = ranges.iter().map(|r| r.0.as_str()).collect();
            let ends: Vec<&str> = ranges.iter().map(|r| r.1.as_str()).collect();
            let rows = client
                .query(&stmt, &[&starts, &ends])
                .await
                .map_err(map_err)?;
            decode(rows, cols)
        };
        Some(run.await)
    }

    async fn native(&self, text: &str, params: &[Value]) -> Result<Res, DbError> {
        self.run_native(text, params, false).await
    }
}
