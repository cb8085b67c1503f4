//! The MySQL/MariaDB driver (docs/data.md, issue 4): an async [`crate::Driver`] over `mysql_async`
//! and its built-in connection pool, so a worker's runtime never blocks on the database. Its
//! operations come from the shared SQL layer ([`super::sql`], MySQL dialect: backtick
//! identifiers taken only from the [`Table`], `?` placeholders bound to `Param`s); this file
//! implements [`SqlBackend`] (running statements), keeps MySQL's quirks in one place (binary
//! collation so keys and comparisons behave as in SQLite, found-rows affected counts, index DDL
//! without `IF NOT EXISTS`, `TEXT` columns that become indexed) and converts MySQL values back to
//! JSON by column type.

use crate::error::DbError;
use crate::schema::{Column, ColumnType, Table};
use crate::sql::{self, Dialect, Sql, SqlBackend, Written};
use crate::types::{Param, Res, Row};
use crate::write::query_param;
use mysql_async::consts::ColumnType as MyType;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Params, Pool, PoolConstraints, PoolOpts, TxOpts};
use serde_json::Value;
use std::time::Duration;

const D: Dialect = Dialect::Mysql;

/// How long an operation waits for a pooled connection before answering [`DbError::Busy`].
const CONN_WAIT: Duration = Duration::from_secs(5);

/// MySQL's "binary" character set number: such columns hold bytes, not text.
const BINARY_CHARSET: u16 = 63;

/// Server errors that mean "try again later": too many connections, lock wait timeout, deadlock,
/// server shutdown, read-only/unavailable cluster nodes.
const BUSY_CODES: &[u16] = &[1040, 1053, 1205, 1213, 1290, 1927, 2002, 2003, 2006, 2013];

/// Server errors caused by the written value: column cannot be null, out of range, data too
/// long, incorrect value, truncated data.
const VALUE_CODES: &[u16] = &[1048, 1264, 1265, 1292, 1366, 1406];

fn map_err(e: mysql_async::Error) -> DbError {
    use mysql_async::Error as E;
    match e {
        E::Server(s) if s.code == 1062 || s.code == 1586 => DbError::Exists,
        E::Server(s) if BUSY_CODES.contains(&s.code) => DbError::Busy(s.message),
        E::Server(s) if VALUE_CODES.contains(&s.code) => DbError::BadValue {
            column: error_column(&s.message),
            reason: s.message,
        },
        E::Server(s) => DbError::Driver(format!("mysql {}: {}", s.code, s.message)),
        E::Io(e) => DbError::Busy(format!("mysql: {e}")),
        E::Driver(e) => match e {
            mysql_async::DriverError::ConnectionClosed
            | mysql_async::DriverError::PoolDisconnected => DbError::Busy(format!("mysql: {e}")),
            other => DbError::Driver(format!("mysql: {other}")),
        },
        E::Url(e) => DbError::Driver(format!("mysql url: {e}")),
        // Client-side failures below the protocol (name resolution, TLS): the server is out
        // of reach for now.
        E::Other(e) => DbError::Busy(format!("mysql: {e}")),
    }
}

/// The column a server message names (`... for column 'name' at row 1`), or empty.
fn error_column(msg: &str) -> String {
    msg.split_once("column '")
        .and_then(|(_, rest)| rest.split_once('\''))
        .map(|(name, _)| name.to_string())
        .unwrap_or_default()
}

/// Runs schema DDL; "duplicate column/key name" means a concurrent `init` was first, which is
/// what this statement wanted anyway.
async fn ddl(conn: &mut Conn, text: String) -> Result<(), DbError> {
    match conn.query_drop(text).await {
        Err(mysql_async::Error::Server(e)) if e.code == 1060 || e.code == 1061 => Ok(()),
        r => r.map_err(map_err),
    }
}

fn to_value(p: &Param) -> mysql_async::Value {
    use mysql_async::Value as V;
    match p {
        Param::Null => V::NULL,
        Param::Int(i) => V::Int(*i),
        Param::Real(f) => V::Double(*f),
        Param::Text(s) => V::Bytes(s.as_bytes().to_vec()),
    }
}

fn params(ps: &[Param]) -> Params {
    if ps.is_empty() {
        Params::Empty
    } else {
        Params::Positional(ps.iter().map(to_value).collect())
    }
}

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// A stored value of a described column as JSON by its type; None for NULL.
fn decode(kind: ColumnType, v: &mysql_async::Value) -> Option<Value> {
    use mysql_async::Value as V;
    Some(match (kind, v) {
        (_, V::NULL) => return None,
        (ColumnType::Bool, V::Int(i)) => Value::Bool(*i != 0),
        (ColumnType::Bool, V::UInt(u)) => Value::Bool(*u != 0),
        (ColumnType::Bool, V::Double(f)) => Value::Bool(*f != 0.0),
        (ColumnType::Bool, V::Bytes(b)) => Value::Bool(!matches!(b.as_slice(), b"" | b"0")),
        (ColumnType::Json, V::Bytes(b)) => serde_json::from_slice(b)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into_owned())),
        (ColumnType::Text, V::Bytes(b)) => Value::String(String::from_utf8_lossy(b).into_owned()),
        (_, other) => return decode_native(other, false),
    })
}

/// A value of a native query's result, typed by what the server sent.
fn decode_native(v: &mysql_async::Value, binary: bool) -> Option<Value> {
    use mysql_async::Value as V;
    Some(match v {
        V::NULL => return None,
        V::Int(i) => Value::from(*i),
        V::UInt(u) => Value::from(*u),
        V::Float(f) => float(f64::from(*f)),
        V::Double(f) => float(*f),
        V::Bytes(b) if binary => Value::String(b.iter().map(|x| format!("{x:02x}")).collect()),
        V::Bytes(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
        V::Date(y, mo, d, h, mi, s, us) => Value::String(if (*h, *mi, *s, *us) == (0, 0, 0, 0) {
            format!("{y:04}-{mo:02}-{d:02}")
        } else {
            format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}")
        }),
        V::Time(neg, d, h, mi, s, us) => Value::String(format!(
            "{}{:02}:{mi:02}:{s:02}.{us:06}",
            if *neg { "-" } else { "" },
            u64::from(*d) * 24 + u64::from(*h)
        )),
    })
}

/// A value of a native query's column: decimals become numbers, binary strings hex.
fn decode_column(col: &mysql_async::Column, v: &mysql_async::Value) -> Option<Value> {
    let kind = col.column_type();
    if let (
        MyType::MYSQL_TYPE_NEWDECIMAL | MyType::MYSQL_TYPE_DECIMAL,
        mysql_async::Value::Bytes(b),
    ) = (kind, v)
    {
        if let Ok(n @ Value::Number(_)) = serde_json::from_slice::<Value>(b) {
            return Some(n);
        }
    }
    let binary = col.character_set() == BINARY_CHARSET
        && matches!(
            kind,
            MyType::MYSQL_TYPE_BLOB
                | MyType::MYSQL_TYPE_TINY_BLOB
                | MyType::MYSQL_TYPE_MEDIUM_BLOB
                | MyType::MYSQL_TYPE_LONG_BLOB
                | MyType::MYSQL_TYPE_VAR_STRING
                | MyType::MYSQL_TYPE_STRING
                | MyType::MYSQL_TYPE_VARCHAR
        );
    decode_native(v, binary)
}

/// Runs a statement without a result set; returns the affected (found) rows.
async fn execute(conn: &mut impl Queryable, s: &Sql) -> Result<u64, DbError> {
    let res = conn
        .exec_iter(s.text.as_str(), params(&s.params))
        .await
        .map_err(map_err)?;
    let affected = res.affected_rows();
    res.drop_result().await.map_err(map_err)?;
    Ok(affected)
}

/// Runs a select whose result columns are `cols`, in order.
async fn fetch(conn: &mut impl Queryable, s: &Sql, cols: &[&Column]) -> Result<Vec<Row>, DbError> {
    let rows: Vec<mysql_async::Row> = conn
        .exec(s.text.as_str(), params(&s.params))
        .await
        .map_err(map_err)?;
    Ok(rows
        .iter()
        .map(|r| {
            let mut row = Row::new();
            for (i, c) in cols.iter().enumerate() {
                if let Some(v) = r.as_ref(i).and_then(|v| decode(c.kind, v)) {
                    row.insert(c.name.clone(), v);
                }
            }
            row
        })
        .collect())
}

/// Runs a caller's statement (`?` placeholders) and converts its result by the server's column
/// types.
async fn native(conn: &mut Conn, text: &str, params_: &[Value]) -> Result<Res, DbError> {
    let ps: Vec<Param> = params_.iter().map(query_param).collect();
    let mut res = match conn.exec_iter(text, params(&ps)).await {
        Ok(r) => r,
        // Statements the server cannot prepare run as plain text when they take no values.
        Err(mysql_async::Error::Server(e)) if e.code == 1295 && ps.is_empty() => {
            conn.query_drop(text).await.map_err(map_err)?;
            return Ok(Res {
                affected: conn.affected_rows(),
                ..Res::default()
            });
        }
        Err(e) => return Err(map_err(e)),
    };
    let cols = res.columns_ref().to_vec();
    if cols.is_empty() {
        let affected = res.affected_rows();
        res.drop_result().await.map_err(map_err)?;
        return Ok(Res {
            affected,
            ..Res::default()
        });
    }
    let mut out = Vec::new();
    while let Some(r) = res.next().await.map_err(map_err)? {
        let mut row = Row::new();
        for (i, c) in cols.iter().enumerate() {
            if let Some(v) = r.as_ref(i).and_then(|v| decode_column(c, v)) {
                row.insert(c.name_str().into_owned(), v);
            }
        }
        out.push(row);
    }
    res.drop_result().await.map_err(map_err)?;
    Ok(Res {
        rows: out,
        ..Res::default()
    })
}

/// A transaction begun by [`MysqlDriver::begin`].
pub struct MysqlTx {
    conn: Conn,
}

impl MysqlTx {
    /// Runs one statement (`?` placeholders) in the transaction, as [`crate::Driver::query`]
    /// would.
    pub async fn query(&mut self, text: &str, params: &[Value]) -> Result<Res, DbError> {
        native(&mut self.conn, text, params).await
    }

    /// Commits; the connection goes back to the pool as it is (nothing left open).
    pub async fn commit(mut self) -> Result<(), DbError> {
        self.conn.query_drop("COMMIT").await.map_err(map_err)?;
        self.conn.reset_connection(false);
        Ok(())
    }
}

/// The MySQL/MariaDB driver over one connection pool.
pub struct MysqlDriver {
    pool: Pool,
    /// Table collation: the binary, no-pad one where the server has it (MariaDB), else the
    /// binary one; so `=`, ordering, keys and `begins_with` ranges compare code points as SQLite
    /// does instead of MySQL's case-insensitive default.
    collation: tokio::sync::OnceCell<&'static str>,
}

impl MysqlDriver {
    /// A driver for `url` (`mysql://user:pass@host:3306/db`) with at most `max` pooled
    /// connections. Connections open lazily: an unreachable server shows as [`DbError::Busy`]
    /// on the first operation (or from [`MysqlDriver::check`]).
    pub fn connect(url: &str, max: usize) -> Result<MysqlDriver, DbError> {
        let opts = Opts::from_url(url).map_err(|e| DbError::Driver(format!("mysql url: {e}")))?;
        let max = max.max(1);
        let constraints = PoolConstraints::new(1, max)
            .ok_or_else(|| DbError::Driver("mysql: bad pool size".into()))?;
        let opts = OptsBuilder::from_opts(opts)
            // No COM_RESET_CONNECTION on every return to the pool (a round trip, and it drops
            // the prepared statement cache): the driver's own statements leave no session
            // state; connections that ran a native `query` are reset (see there).
            .pool_opts(
                PoolOpts::default()
                    .with_constraints(constraints)
                    .with_reset_connection(false),
            )
            // Every statement text the driver builds stays prepared (the default keeps 32).
            .stmt_cache_size(256)
            // `affected` counts matched rows, so an update that changes nothing still proves
            // the row exists.
            .client_found_rows(true)
            // Strict mode: a value that does not fit is an error, never silently truncated.
            // (`setup` also runs after a connection reset.)
            .setup(vec!["SET SESSION sql_mode = TRIM(BOTH ',' FROM \
                 CONCAT(@@SESSION.sql_mode, ',STRICT_ALL_TABLES'))"
                .to_string()]);
        Ok(MysqlDriver {
            pool: Pool::new(opts),
            collation: tokio::sync::OnceCell::new(),
        })
    }

    /// Opens a connection and pings the server.
    pub async fn check(&self) -> Result<(), DbError> {
        let mut conn = self.conn().await?;
        conn.ping().await.map_err(map_err)
    }

    /// Runs one statement (`?` placeholders) for a caller whose statements leave no session
    /// state behind (no variables, locks or open transaction), so the connection goes back to
    /// the pool without the reset [`crate::Driver::query`] costs: the job queue's.
    pub async fn query_stateless(&self, text: &str, params: &[Value]) -> Result<Res, DbError> {
        native(&mut self.conn().await?, text, params).await
    }

    /// Starts a transaction of the caller's statements on a connection of its own (the job
    /// queue's claims: select for update, update, read back). Dropped without
    /// [`MysqlTx::commit`], it rolls back: the connection is reset before it is used again.
    pub async fn begin(&self) -> Result<MysqlTx, DbError> {
        let mut conn = self.conn().await?;
        conn.reset_connection(true);
        conn.query_drop("START TRANSACTION")
            .await
            .map_err(map_err)?;
        Ok(MysqlTx { conn })
    }

    /// Closes the pool's connections (waits for borrowed ones to come back).
    pub async fn close(self) -> Result<(), DbError> {
        self.pool.disconnect().await.map_err(map_err)
    }

    async fn conn(&self) -> Result<Conn, DbError> {
        match tokio::time::timeout(CONN_WAIT, self.pool.get_conn()).await {
            Ok(r) => r.map_err(map_err),
            Err(_) => Err(DbError::Busy("no free mysql connection".into())),
        }
    }

    async fn collation(&self, conn: &mut Conn) -> Result<&'static str, DbError> {
        self.collation
            .get_or_try_init(|| async {
                let n: Option<i64> = conn
                    .exec_first(
                        "SELECT COUNT(*) FROM information_schema.COLLATIONS \
                         WHERE COLLATION_NAME = 'utf8mb4_nopad_bin'",
                        Params::Empty,
                    )
                    .await
                    .map_err(map_err)?;
                Ok(if n.unwrap_or(0) > 0 {
                    "utf8mb4_nopad_bin"
                } else {
                    "utf8mb4_bin"
                })
            })
            .await
            .copied()
    }

    async fn init_table(&self, conn: &mut Conn, t: &Table, coll: &str) -> Result<(), DbError> {
        let create = format!(
            "{} ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={coll}",
            sql::create_table(D, t)
        );
        conn.query_drop(create).await.map_err(map_err)?;
        // Existing columns with their data types.
        let existing: Vec<(String, String)> = conn
            .exec(
                "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
                (t.name(),),
            )
            .await
            .map_err(map_err)?;
        for c in t.columns() {
            match existing
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(&c.name))
            {
                None => {
                    tracing::info!(table = t.name(), column = c.name, "db: adding column");
                    ddl(conn, sql::add_column(D, t, c)).await?;
                }
                // A text column that became indexed: MySQL cannot index TEXT in full.
                Some((_, ty)) if sql::is_keyed(c) && ty.to_ascii_lowercase().ends_with("text") => {
                    tracing::info!(
                        table = t.name(),
                        column = c.name,
                        "db: text column to varchar"
                    );
                    let text = format!(
                        "ALTER TABLE {} MODIFY COLUMN {} {}",
                        D.quote(t.name()),
                        D.quote(&c.name),
                        D.column_sql_type(c)
                    );
                    ddl(conn, text).await?;
                }
                Some(_) => {}
            }
        }
        let indexes: Vec<String> = conn
            .exec(
                "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
                (t.name(),),
            )
            .await
            .map_err(map_err)?;
        for (name, text) in sql::index_defs(D, t) {
            if !indexes.iter().any(|i| i.eq_ignore_ascii_case(&name)) {
                tracing::info!(table = t.name(), index = name, "db: creating index");
                ddl(conn, text).await?;
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl SqlBackend for MysqlDriver {
    const NAME: &'static str = "mysql";
    const DIALECT: Dialect = D;

    async fn create(&self, tables: &[Table]) -> Result<(), DbError> {
        // DDL commits implicitly in MySQL, so there is no transaction around it; every step
        // checks what exists first, so a rerun after a failure continues where it stopped.
        let mut conn = self.conn().await?;
        let coll = self.collation(&mut conn).await?;
        for t in tables {
            self.init_table(&mut conn, t, coll).await?;
        }
        Ok(())
    }

    async fn execute(&self, s: &Sql) -> Result<u64, DbError> {
        execute(&mut self.conn().await?, s).await
    }

    async fn fetch(&self, s: &Sql, cols: &[&Column]) -> Result<Vec<Row>, DbError> {
        fetch(&mut self.conn().await?, s, cols).await
    }

    async fn count(&self, s: &Sql) -> Result<i64, DbError> {
        let n: Option<i64> = self
            .conn()
            .await?
            .exec_first(s.text.as_str(), params(&s.params))
            .await
            .map_err(map_err)?;
        Ok(n.unwrap_or(0))
    }

    async fn in_tx(&self, write: &Sql, read: &Sql, cols: &[&Column]) -> Result<Written, DbError> {
        let mut conn = self.conn().await?;
        let mut tx = conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(map_err)?;
        let affected = execute(&mut tx, write).await?;
        let row = fetch(&mut tx, read, cols).await?.into_iter().next();
        tx.commit().await.map_err(map_err)?;
        Ok((affected, row))
    }

    async fn native(&self, text: &str, params_: &[Value]) -> Result<Res, DbError> {
        let mut conn = self.conn().await?;
        // Arbitrary SQL may leave session state behind (variables, locks, an open
        // transaction): this connection is reset before it serves anyone else.
        conn.reset_connection(true);
        native(&mut conn, text, params_).await
    }

    /// `ON DUPLICATE KEY UPDATE` reports 1 for an insert and 2 for an update (found rows: 1 when
    /// the row was unchanged); callers of put/incr see one row written, as with the other drivers.
    fn upserted(affected: u64) -> u64 {
        affected.min(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::row;
    use crate::{Driver, Options};
    use serde_json::json;

    /// Whether InnoDB has a transaction open for `conn`.
    async fn in_transaction(conn: &mut Conn) -> bool {
        let n: Option<i64> = conn
            .query_first(
                "SELECT COUNT(*) FROM information_schema.INNODB_TRX \
                 WHERE trx_mysql_thread_id = CONNECTION_ID()",
            )
            .await
            .expect("innodb_trx");
        n != Some(0)
    }

    const BASE_URL: &str = "mysql://root@127.0.0.1:3306";

    /// Drops the test database when the test ends, also on a panic: from a fresh thread with
    /// its own runtime, because `Drop` cannot await.
    struct DropDb(String);

    impl Drop for DropDb {
        fn drop(&mut self) {
            let name = self.0.clone();
            let what = format!("dropping test database {name}");
            crate::conformance::run_cleanup(&what, move || async move {
                let d = MysqlDriver::connect(&format!("{BASE_URL}/test"), 1)?;
                let drop_db = format!("DROP DATABASE IF EXISTS {}", D.quote(&name));
                let r = d.query(&drop_db, &[], &Options::default()).await;
                let _ = d.close().await;
                r.map(|_| ())
            });
        }
    }

    /// A fresh database `bkjs_t_{pid}_{random}` and a driver on it; None (after printing why)
    /// when the server is not reachable outside CI.
    async fn fresh_db() -> Option<(MysqlDriver, DropDb)> {
        let admin = MysqlDriver::connect(&format!("{BASE_URL}/test"), 2).expect("url");
        if let Err(e) = admin.check().await {
            bkjs_base::testing::required(&format!(
                "MySQL/MariaDB on 127.0.0.1:3306 (root, database test) is not reachable: {e}"
            ));
            return None;
        }
        let name = format!(
            "bkjs_t_{}_{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        admin
            .query(
                &format!("CREATE DATABASE {}", D.quote(&name)),
                &[],
                &Options::default(),
            )
            .await
            .expect("create database");
        let guard = DropDb(name.clone());
        admin.close().await.expect("close admin pool");
        let d = MysqlDriver::connect(&format!("{BASE_URL}/{name}"), 4).expect("url");
        Some((d, guard))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mysql_conformance() {
        let Some((d, _guard)) = fresh_db().await else {
            return;
        };
        crate::conformance::run(&d, "c").await;
        d.close().await.expect("close pool");
    }

    /// MySQL specifics the generic suite does not see: binary collation, types, schema
    /// upgrade of a text column that becomes indexed, error mapping, native queries.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mysql_specifics() {
        let Some((d, guard)) = fresh_db().await else {
            return;
        };
        let o = Options::default();
        // Session state from a native query does not leak to the next user of the connection,
        // and strict mode survives the reset.
        let one = MysqlDriver::connect(&format!("{BASE_URL}/{}", guard.0), 1).expect("url");
        one.query("SET @leak = 5", &[], &o).await.expect("set");
        let r = one
            .query("SELECT @leak AS x, @@SESSION.sql_mode AS m", &[], &o)
            .await
            .expect("select");
        assert!(!r.rows[0].contains_key("x"), "{r:?}");
        let mode = r.rows[0]["m"].as_str().unwrap_or_default();
        assert!(mode.contains("STRICT_ALL_TABLES"), "{mode}");
        one.close().await.expect("close");
        let v1 = Table::new(
            "m_t",
            vec![
                Column::text("id").primary(1),
                Column::text("name"),
                Column::bool("ok"),
                Column::json("data"),
                Column::real("r"),
                Column::int("n"),
                Column::date("d"),
            ],
        )
        .expect("table");
        d.init(std::slice::from_ref(&v1)).await.expect("init");
        d.init(std::slice::from_ref(&v1)).await.expect("init again");
        d.put(
            &v1,
            &row(
                json!({"id": "a", "name": "x".repeat(1000), "ok": true, "data": {"k": [1, 2]},
                "r": 1.5, "n": 2_000_000_000, "d": "2020-01-01T00:00:00Z"}),
            ),
            &o,
        )
        .await
        .expect("put");
        // Keys compare exactly: "A" is another row than "a".
        d.add(&v1, &row(json!({"id": "A", "name": "big"})), &o)
            .await
            .expect("add A");
        assert_eq!(
            d.add(&v1, &row(json!({"id": "a"})), &o).await,
            Err(DbError::Exists)
        );
        let got = d
            .get(&v1, &row(json!({"id": "a"})), &o)
            .await
            .expect("get")
            .expect("row");
        assert_eq!(got["ok"], json!(true));
        assert_eq!(got["data"], json!({"k": [1, 2]}));
        assert_eq!(got["r"], json!(1.5));
        assert_eq!(got["n"], json!(2_000_000_000));
        // `int` is 64-bit like in SQLite: a value past 32 bits is stored as given.
        d.put(&v1, &row(json!({"id": "big", "n": 3_000_000_000i64})), &o)
            .await
            .expect("64-bit int");
        let big = d
            .get(&v1, &row(json!({"id": "big"})), &o)
            .await
            .expect("get")
            .expect("row");
        assert_eq!(big["n"], json!(3_000_000_000i64));
        d.del(&v1, &row(json!({"id": "big"})), &o)
            .await
            .expect("del");
        assert_eq!(got["d"], json!(1_577_836_800_000i64));
        // Update without a change still finds the row.
        let r = d
            .update(&v1, &row(json!({"id": "a", "ok": true})), &o)
            .await
            .expect("update");
        assert_eq!(r.affected, 1);
        assert_eq!(
            d.update(&v1, &row(json!({"id": "zz", "ok": true})), &o)
                .await,
            Err(DbError::NotFound)
        );
        // Case-sensitive like and begins_with, case-insensitive ilike, regexp.
        let sel = |op: crate::Op, v: Value| {
            let d = &d;
            let t = &v1;
            async move {
                let mut ids: Vec<String> = d
                    .select(t, &row(json!({"id": v})), &Options::default().op("id", op))
                    .await
                    .expect("select")
                    .rows
                    .iter()
                    .map(|r| r["id"].as_str().unwrap_or_default().to_string())
                    .collect();
                ids.sort();
                ids
            }
        };
        use crate::Op;
        assert_eq!(sel(Op::BeginsWith, json!("a")).await, vec!["a"]);
        assert_eq!(sel(Op::Like, json!("a%")).await, vec!["a"]);
        assert_eq!(sel(Op::Ilike, json!("a%")).await, vec!["A", "a"]);
        assert_eq!(sel(Op::Regexp, json!("^[A]$")).await, vec!["A"]);
        assert_eq!(sel(Op::Eq, json!("A")).await, vec!["A"]);
        // Schema upgrade: `name` becomes indexed, a new column with an index appears.
        let v2 = Table::new(
            "m_t",
            vec![
                Column::text("id").primary(1),
                Column::text("name").index(1),
                Column::bool("ok"),
                Column::json("data"),
                Column::real("r"),
                Column::int("n"),
                Column::date("d"),
                Column::text("extra").index_n(1, 1),
            ],
        )
        .expect("table");
        // `name` holds 1000 characters, too long for an indexed column: a clear failure.
        let err = d.init(std::slice::from_ref(&v2)).await;
        assert!(err.is_err(), "{err:?}");
        d.put(&v1, &row(json!({"id": "a", "name": "short"})), &o)
            .await
            .expect("put");
        d.init(std::slice::from_ref(&v2)).await.expect("upgrade");
        let got = d
            .get(&v2, &row(json!({"id": "a"})), &o)
            .await
            .expect("get")
            .expect("row");
        assert_eq!(got["name"], json!("short"));
        d.put(&v2, &row(json!({"id": "b", "name": "n", "extra": "e"})), &o)
            .await
            .expect("put v2");
        let r = d
            .query(
                "SELECT COUNT(*) AS n, SUM(r) AS s, 1.25 AS x, NULL AS z FROM m_t WHERE id <> ?",
                &[json!("zz")],
                &o,
            )
            .await
            .expect("query");
        assert_eq!(r.rows[0]["n"], json!(3));
        assert_eq!(r.rows[0]["x"], json!(1.25));
        assert!(!r.rows[0].contains_key("z"));
        let r = d
            .query("DELETE FROM m_t WHERE id = ?", &[json!("b")], &o)
            .await
            .expect("delete");
        assert_eq!(r.affected, 1);
        // A bad statement is a driver error carrying the server's message.
        match d.query("SELEKT 1", &[], &o).await {
            Err(DbError::Driver(m)) => assert!(m.contains("1064"), "{m}"),
            other => panic!("{other:?}"),
        }
        // Transactions are not left open on pooled connections after incr.
        let counters = Table::new(
            "m_c",
            vec![Column::text("id").primary(1), Column::counter("c")],
        )
        .expect("table");
        d.init(std::slice::from_ref(&counters)).await.expect("init");
        for _ in 0..3 {
            d.incr(&counters, &row(json!({"id": "x", "c": 2})), &o)
                .await
                .expect("incr");
        }
        let mut conn = d.conn().await.expect("conn");
        assert!(!in_transaction(&mut conn).await);
        drop(conn);
        let got = d
            .get(&counters, &row(json!({"id": "x"})), &o)
            .await
            .expect("get")
            .expect("row");
        assert_eq!(got["c"], json!(6));
        d.close().await.expect("close pool");
    }

    /// The DDL text, without a server: types by column, varchar only where MySQL indexes it.
    #[test]
    fn mysql_ddl_text() {
        let t = Table::new(
            "t",
            vec![
                Column::text("id").primary(1),
                Column::text("k").index(1),
                Column::text("u").unique(),
                Column::text("body"),
                Column::int("i"),
                Column::bigint("b"),
                Column::counter("c"),
                Column::real("r"),
                Column::bool("f"),
                Column::json("j"),
                Column::date("d"),
            ],
        )
        .expect("table");
        assert_eq!(
            sql::create_table(D, &t),
            "CREATE TABLE IF NOT EXISTS `t` (`id` VARCHAR(255) NOT NULL, `k` VARCHAR(255), \
             `u` VARCHAR(255), `body` TEXT, `i` BIGINT, `b` BIGINT, `c` BIGINT, `r` DOUBLE, \
             `f` TINYINT(1), `j` LONGTEXT, `d` BIGINT, PRIMARY KEY (`id`))"
        );
        assert_eq!(
            sql::index_defs(D, &t),
            vec![
                (
                    "t_k_idx".to_string(),
                    "CREATE INDEX `t_k_idx` ON `t` (`k`)".to_string()
                ),
                (
                    "t_u_uniq".to_string(),
                    "CREATE UNIQUE INDEX `t_u_uniq` ON `t` (`u`)".to_string()
                ),
            ]
        );
        assert_eq!(
            error_column("Data too long for column 'name' at row 1"),
            "name"
        );
    }

    #[tokio::test]
    async fn unreachable_server_is_busy() {
        let d = MysqlDriver::connect("mysql://root@127.0.0.1:1/test", 1).expect("url");
        match d.check().await {
            Err(e) => assert!(e.is_retryable(), "{e:?}"),
            Ok(()) => panic!("port 1 answered"),
        }
    }
}
