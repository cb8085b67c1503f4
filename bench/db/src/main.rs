//! `bench-db`: sequential put and get ops/s through `bkjs::db` against the raw client library on
//! the same database in the same run (issue 4: library >= 0.7x raw).
//!
//! ```text
//! bench-db sqlite FILE N   # Db over Blocking<SqliteDriver> vs rusqlite, both on FILE
//! bench-db pgsql URL N     # Db over PgsqlDriver vs tokio-postgres, in a fresh schema
//! bench-db redis URL N     # Db over RedisDriver vs the redis crate (HSET/HGETALL), own prefix
//! bench-db dynamodb URL N  # Db over DynamoDriver vs signed hyper requests, same endpoint
//! ```
//!
//! Each side writes N rows (`name` = `k<i>`, `value`, `mtime`) into its own table of the same
//! shape (the library's `bk_property`; the raw side a copy of its DDL), then reads them back by
//! primary key, one operation at a time. The library side runs in a current-thread tokio runtime
//! like a web worker with `-api-threads 1`; SQLite calls go through `spawn_blocking` as they do in
//! bkjs. The raw side uses one connection and statements prepared once: rusqlite in WAL mode with
//! `synchronous=NORMAL` (as the driver sets), tokio-postgres on the same runtime. To keep drift
//! (WAL checkpoints, page cache, CPU frequency) from favouring either side, the N operations run
//! in alternating chunks of 1000: library chunk, raw chunk, library chunk, ...
//!
//! For SQLite a third line, raw rusqlite called through `spawn_blocking`, separates the cost of
//! leaving the async runtime from the cost of the library itself (informational only).
//! On Redis the raw side writes each row as a hash with HSET (name, value, mtime) and reads it
//! with HGETALL on one multiplexed connection, the library side one RedisDriver connection (a
//! put is its Lua script, a get one HGETALL); every key of the run (prefix
//! `bench:db:<pid>:<time>:`) is deleted at the end, also after an error.
//! On PostgreSQL both tables are analyzed between the puts and the gets. Every get must find its
//! row; a miss fails the run. The PostgreSQL schema
//! (`bench_db_<pid>_<time>`) is dropped at the end, also after an error.
//!
//! On DynamoDB (a local one: bench/db-bench starts moto) the raw side is one hyper HTTP/1.1
//! connection (opened again whenever the server closed it) sending hand-built PutItem / GetItem (ConsistentRead) JSON, signed with
//! SigV4 exactly as the driver signs, and parsing the answer; the library side is `Db` over
//! `DynamoDriver`. Tables are named `bench_<pid>_<time>_...` so runs against one server never
//! share rows.

use bkjs::db::dynamodb::{DynamoConfig, DynamoDriver};
use bkjs::db::pgsql::PgsqlDriver;
use bkjs::db::redis::RedisDriver;
use bkjs::db::{builtin_tables, Blocking, Db, Driver, Options, Row, SqliteDriver, Table};
use parking_lot::Mutex;
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// The allocator of the `bkjs` binary, so the library runs as it does there (the raw side, in the
/// same process, gets it too).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TABLE: &str = "bk_property";
const RAW: &str = "bench_raw_property";
const RAW_SPAWN: &str = "bench_raw_spawn_property";
const CHUNK: usize = 1000;
const WARMUP: usize = 200;

type Res<T> = Result<T, String>;

/// Per-operation latencies of one side and one operation.
#[derive(Default)]
struct Samples {
    each: Vec<Duration>,
}

impl Samples {
    fn with_capacity(n: usize) -> Samples {
        Samples {
            each: Vec::with_capacity(n),
        }
    }
    fn total(&self) -> Duration {
        self.each.iter().sum()
    }
    fn ops_per_s(&self) -> f64 {
        let s = self.total().as_secs_f64();
        if s > 0.0 {
            self.each.len() as f64 / s
        } else {
            0.0
        }
    }
    fn pct_us(&self, p: f64) -> f64 {
        let mut v = self.each.clone();
        v.sort_unstable();
        if v.is_empty() {
            return 0.0;
        }
        let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
        v[i].as_secs_f64() * 1e6
    }
    fn print(&self, label: &str) {
        println!(
            "  {label:<28} {:>9.0} ops/s  p50 {:>8.1} us  p99 {:>8.1} us",
            self.ops_per_s(),
            self.pct_us(0.50),
            self.pct_us(0.99)
        );
    }
}

/// Times one operation, appending its latency.
async fn timed<F: Future<Output = Res<()>>>(s: &mut Samples, f: F) -> Res<()> {
    let t = Instant::now();
    f.await?;
    s.each.push(t.elapsed());
    Ok(())
}

fn timed_sync(s: &mut Samples, f: impl FnOnce() -> Res<()>) -> Res<()> {
    let t = Instant::now();
    f()?;
    s.each.push(t.elapsed());
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn key(i: usize) -> String {
    format!("k{i}")
}

fn value(i: usize) -> String {
    format!("value-{i:08}")
}

fn put_row(i: usize) -> Row {
    let mut r = Row::new();
    r.insert("name".into(), Value::String(key(i)));
    r.insert("value".into(), Value::String(value(i)));
    r
}

fn key_row(i: usize) -> Row {
    let mut r = Row::new();
    r.insert("name".into(), Value::String(key(i)));
    r
}

fn property_table() -> Res<Table> {
    builtin_tables()
        .into_iter()
        .find(|t| t.name() == TABLE)
        .ok_or_else(|| format!("the library describes no {TABLE} table"))
}

/// A Db with `bk_property` as its only table, in `pool`.
async fn library(pool: &str, driver: Arc<dyn Driver>) -> Res<Db> {
    let pools: HashMap<String, Arc<dyn Driver>> = HashMap::from([(pool.to_string(), driver)]);
    let db = Db::with_pools(pools, pool, vec![property_table()?], None);
    db.init().await.map_err(|e| format!("library init: {e}"))?;
    Ok(db)
}

async fn lib_put(db: &Db, opts: &Options, i: usize) -> Res<()> {
    db.put(TABLE, &put_row(i), opts)
        .await
        .map(drop)
        .map_err(|e| format!("library put {}: {e}", key(i)))
}

async fn lib_get(db: &Db, opts: &Options, i: usize) -> Res<()> {
    match db.get(TABLE, &key_row(i), opts).await {
        Ok(Some(r)) if r.get("value") == Some(&Value::String(value(i))) => Ok(()),
        Ok(other) => Err(format!("library get {}: unexpected {other:?}", key(i))),
        Err(e) => Err(format!("library get {}: {e}", key(i))),
    }
}

fn check_got(side: &str, i: usize, name: String, val: Option<String>) -> Res<()> {
    if name == key(i) && val.as_deref() == Some(value(i).as_str()) {
        Ok(())
    } else {
        Err(format!("{side} get {}: got {name} = {val:?}", key(i)))
    }
}

/// The ratio lines, and one `RESULT|...` line per operation for bench/run-all (the format is in
/// bench/README.md): `driver` names the database, `raw` the baseline client.
fn ratios(driver: &str, raw_name: &str, lib: &[&Samples; 2], raw: &[&Samples; 2]) {
    let r = |a: &Samples, b: &Samples| {
        let b = b.ops_per_s();
        if b > 0.0 {
            a.ops_per_s() / b
        } else {
            0.0
        }
    };
    println!(
        "library/raw put = {:.2}, get = {:.2} (target >= 0.7)",
        r(lib[0], raw[0]),
        r(lib[1], raw[1])
    );
    for (i, op) in ["put", "get"].iter().enumerate() {
        println!(
            "RESULT|bench/db-bench|{driver} library {op}|{:.0}|ops/s|{raw_name} {op}|{:.0}|{:.2}|>= 0.7",
            lib[i].ops_per_s(),
            raw[i].ops_per_s(),
            r(lib[i], raw[i])
        );
    }
}

// ---- SQLite ---------------------------------------------------------------------------------

fn raw_sqlite(file: &str, ddl: &str, table: &str) -> Res<rusqlite::Connection> {
    let e = |what: &str, err: rusqlite::Error| format!("raw sqlite {what}: {err}");
    let conn = rusqlite::Connection::open(file).map_err(|x| e("open", x))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|x| e("busy_timeout", x))?;
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))
        .map_err(|x| e("journal_mode", x))?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(|x| e("synchronous", x))?;
    let ddl = ddl.replacen(TABLE, table, 1);
    conn.execute_batch(&format!("DROP TABLE IF EXISTS \"{table}\"; {ddl}"))
        .map_err(|x| e("create table", x))?;
    Ok(conn)
}

fn sql_put(table: &str) -> String {
    format!("INSERT OR REPLACE INTO \"{table}\" (name, value, mtime) VALUES (?1, ?2, ?3)")
}

fn sql_get(table: &str) -> String {
    format!("SELECT name, value, mtime FROM \"{table}\" WHERE name = ?1")
}

fn sqlite_put(stmt: &mut rusqlite::Statement<'_>, i: usize) -> Res<()> {
    stmt.execute(rusqlite::params![key(i), value(i), now_ms()])
        .map(drop)
        .map_err(|e| format!("raw put {}: {e}", key(i)))
}

fn sqlite_get(stmt: &mut rusqlite::Statement<'_>, i: usize) -> Res<()> {
    let (name, val, _mtime) = stmt
        .query_row([key(i)], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        })
        .map_err(|e| format!("raw get {}: {e}", key(i)))?;
    check_got("raw", i, name, val)
}

/// rusqlite on tokio's blocking pool: what the Blocking wrapper costs without the library.
async fn spawned(
    conn: &Arc<Mutex<rusqlite::Connection>>,
    sql: &Arc<String>,
    i: usize,
    put: bool,
) -> Res<()> {
    let (conn, sql) = (conn.clone(), sql.clone());
    tokio::task::spawn_blocking(move || {
        let c = conn.lock();
        let mut stmt = c
            .prepare_cached(&sql)
            .map_err(|e| format!("raw prepare: {e}"))?;
        if put {
            sqlite_put(&mut stmt, i)
        } else {
            sqlite_get(&mut stmt, i)
        }
    })
    .await
    .map_err(|e| format!("spawn_blocking: {e}"))?
}

async fn sqlite(file: &str, n: usize) -> Res<()> {
    let driver = SqliteDriver::open(file, 4).map_err(|e| format!("open {file}: {e}"))?;
    let db = library("sqlite", Arc::new(Blocking(Arc::new(driver)))).await?;
    let opts = Options::default();

    // The raw tables copy the library's DDL, so both sides write the same row shape.
    let probe = rusqlite::Connection::open(file).map_err(|e| format!("open {file}: {e}"))?;
    let ddl: String = probe
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [TABLE],
            |r| r.get(0),
        )
        .map_err(|e| format!("read the DDL of {TABLE}: {e}"))?;
    drop(probe);
    let raw = raw_sqlite(file, &ddl, RAW)?;
    let spawn_conn = Arc::new(Mutex::new(raw_sqlite(file, &ddl, RAW_SPAWN)?));
    let mut put = raw
        .prepare(&sql_put(RAW))
        .map_err(|e| format!("prepare put: {e}"))?;
    let mut get = raw
        .prepare(&sql_get(RAW))
        .map_err(|e| format!("prepare get: {e}"))?;
    let (sp_put, sp_get) = (Arc::new(sql_put(RAW_SPAWN)), Arc::new(sql_get(RAW_SPAWN)));

    // Warm-up on keys past N (statement caches, first pages), not measured.
    for i in n..n + WARMUP {
        lib_put(&db, &opts, i).await?;
        lib_get(&db, &opts, i).await?;
        sqlite_put(&mut put, i)?;
        sqlite_get(&mut get, i)?;
        spawned(&spawn_conn, &sp_put, i, true).await?;
        spawned(&spawn_conn, &sp_get, i, false).await?;
    }

    let [mut lp, mut rp, mut sp, mut lg, mut rg, mut sg] =
        std::array::from_fn(|_| Samples::with_capacity(n));
    for c in (0..n).step_by(CHUNK) {
        let r = c..(c + CHUNK).min(n);
        for i in r.clone() {
            timed(&mut lp, lib_put(&db, &opts, i)).await?;
        }
        for i in r.clone() {
            timed_sync(&mut rp, || sqlite_put(&mut put, i))?;
        }
        for i in r {
            timed(&mut sp, spawned(&spawn_conn, &sp_put, i, true)).await?;
        }
    }
    for c in (0..n).step_by(CHUNK) {
        let r = c..(c + CHUNK).min(n);
        for i in r.clone() {
            timed(&mut lg, lib_get(&db, &opts, i)).await?;
        }
        for i in r.clone() {
            timed_sync(&mut rg, || sqlite_get(&mut get, i))?;
        }
        for i in r {
            timed(&mut sg, spawned(&spawn_conn, &sp_get, i, false)).await?;
        }
    }

    println!(
        "== bench-db sqlite {file}: N = {n} sequential ops each, chunks of {CHUNK} alternating"
    );
    lp.print("library put");
    rp.print("raw rusqlite put");
    sp.print("raw via spawn_blocking put");
    lg.print("library get");
    rg.print("raw rusqlite get");
    sg.print("raw via spawn_blocking get");
    ratios("sqlite", "raw rusqlite", &[&lp, &lg], &[&rp, &rg]);
    let r = |a: &Samples, b: &Samples| a.ops_per_s() / b.ops_per_s().max(f64::MIN_POSITIVE);
    println!(
        "library/(raw via spawn_blocking) put = {:.2}, get = {:.2} (informational)",
        r(&lp, &sp),
        r(&lg, &sg)
    );
    Ok(())
}

// ---- PostgreSQL -----------------------------------------------------------------------------

/// Formats a raw tokio-postgres error with what was being done.
fn pg_err(what: &'static str) -> impl Fn(tokio_postgres::Error) -> String {
    move |err| format!("raw postgresql {what}: {err}")
}

async fn pg_connect(url: &str) -> Res<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("connect {url}: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("bench-db: raw postgresql connection: {e}");
        }
    });
    Ok(client)
}

async fn pgsql(url: &str, n: usize) -> Res<()> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let schema = format!("bench_db_{}_{stamp}", std::process::id());
    let admin = pg_connect(url).await?;
    let result = pgsql_run(url, n, &schema).await;
    // Always drop the schema, whatever happened in the run.
    let dropped = admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await
        .map_err(|e| format!("drop schema {schema}: {e}"));
    result
        .and(dropped)
        .map(|()| println!("schema {schema} dropped"))
}

async fn pgsql_run(url: &str, n: usize, schema: &str) -> Res<()> {
    let driver = PgsqlDriver::connect(url, 4, Some(schema))
        .await
        .map_err(|e| format!("library connect {url}: {e}"))?;
    let db = library("pgsql", Arc::new(driver)).await?;
    let opts = Options::default();

    let raw = pg_connect(url).await?;
    raw.batch_execute(&format!(
        "SET search_path TO \"{schema}\"; \
         CREATE TABLE \"{RAW}\" (LIKE \"{TABLE}\" INCLUDING ALL)"
    ))
    .await
    .map_err(pg_err("create table"))?;
    let put = raw
        .prepare(&format!(
            "INSERT INTO \"{RAW}\" (name, value, mtime) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, mtime = EXCLUDED.mtime"
        ))
        .await
        .map_err(pg_err("prepare put"))?;
    let get = raw
        .prepare(&format!(
            "SELECT name, value, mtime FROM \"{RAW}\" WHERE name = $1"
        ))
        .await
        .map_err(pg_err("prepare get"))?;
    let raw_put = |i: usize| {
        let (raw, put) = (&raw, &put);
        async move {
            raw.execute(put, &[&key(i), &value(i), &now_ms()])
                .await
                .map(drop)
                .map_err(|err| format!("raw put {}: {err}", key(i)))
        }
    };
    let raw_get = |i: usize| {
        let (raw, get) = (&raw, &get);
        async move {
            let rows = raw
                .query(get, &[&key(i)])
                .await
                .map_err(|err| format!("raw get {}: {err}", key(i)))?;
            let row = rows
                .first()
                .ok_or_else(|| format!("raw get {}: no row", key(i)))?;
            let name: String = row
                .try_get(0)
                .map_err(|err| format!("raw get name: {err}"))?;
            let val: Option<String> = row
                .try_get(1)
                .map_err(|err| format!("raw get value: {err}"))?;
            let _mtime: Option<i64> = row
                .try_get(2)
                .map_err(|err| format!("raw get mtime: {err}"))?;
            check_got("raw", i, name, val)
        }
    };

    for i in n..n + WARMUP {
        lib_put(&db, &opts, i).await?;
        lib_get(&db, &opts, i).await?;
        raw_put(i).await?;
        raw_get(i).await?;
    }

    let [mut lp, mut rp, mut lg, mut rg] = std::array::from_fn(|_| Samples::with_capacity(n));
    for c in (0..n).step_by(CHUNK) {
        let r = c..(c + CHUNK).min(n);
        for i in r.clone() {
            timed(&mut lp, lib_put(&db, &opts, i)).await?;
        }
        for i in r {
            timed(&mut rp, raw_put(i)).await?;
        }
    }
    // Fresh planner statistics on both tables (autovacuum may have analyzed only one of them),
    // so neither side's prepared plan is built for an empty table.
    raw.batch_execute(&format!("ANALYZE \"{TABLE}\"; ANALYZE \"{RAW}\""))
        .await
        .map_err(pg_err("analyze"))?;
    for c in (0..n).step_by(CHUNK) {
        let r = c..(c + CHUNK).min(n);
        for i in r.clone() {
            timed(&mut lg, lib_get(&db, &opts, i)).await?;
        }
        for i in r {
            timed(&mut rg, raw_get(i)).await?;
        }
    }

    println!(
        "== bench-db pgsql (schema {schema}): N = {n} sequential ops each, chunks of {CHUNK} alternating"
    );
    lp.print("library put");
    rp.print("raw tokio-postgres put");
    lg.print("library get");
    rg.print("raw tokio-postgres get");
    ratios("pgsql", "raw tokio-postgres", &[&lp, &lg], &[&rp, &rg]);
    Ok(())
}

// ---- Redis ----------------------------------------------------------------------------------

fn redis_err(what: &'static str) -> impl Fn(redis::RedisError) -> String {
    move |err| format!("raw redis {what}: {err}")
}

/// Deletes every key starting with `prefix` (letters, digits and `:`: no glob characters).
async fn redis_clear(c: &mut redis::aio::MultiplexedConnection, prefix: &str) -> Res<u64> {
    let mut cursor = 0u64;
    let mut n = 0;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(c)
            .await
            .map_err(redis_err("scan"))?;
        if !keys.is_empty() {
            n += redis::cmd("DEL")
                .arg(&keys)
                .query_async::<u64>(c)
                .await
                .map_err(redis_err("del"))?;
        }
        if next == 0 {
            return Ok(n);
        }
        cursor = next;
    }
}

async fn redis_bench(url: &str, n: usize) -> Res<()> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let prefix = format!("bench:db:{}:{stamp}:", std::process::id());
    let client = redis::Client::open(url).map_err(|e| format!("connect {url}: {e}"))?;
    let mut raw = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("connect {url}: {e}"))?;
    let result = redis_run(url, n, &prefix, &mut raw).await;
    // Always delete the run's keys, whatever happened in the run.
    let cleared = redis_clear(&mut raw, &prefix).await;
    result.and(cleared.map(|k| println!("{k} keys under {prefix} deleted")))
}

async fn redis_run(
    url: &str,
    n: usize,
    prefix: &str,
    raw: &mut redis::aio::MultiplexedConnection,
) -> Res<()> {
    let driver = RedisDriver::connect(url, prefix, 1)
        .await
        .map_err(|e| format!("library connect {url}: {e}"))?;
    let db = library("redis", Arc::new(driver)).await?;
    let opts = Options::default();
    let raw_key = |i: usize| format!("{prefix}raw:{}", key(i));
    let raw_put = |c: &mut redis::aio::MultiplexedConnection, i: usize| {
        let mut c = c.clone();
        let k = raw_key(i);
        async move {
            redis::cmd("HSET")
                .arg(k)
                .arg("name")
                .arg(key(i))
                .arg("value")
                .arg(value(i))
                .arg("mtime")
                .arg(now_ms())
                .query_async::<()>(&mut c)
                .await
                .map_err(|err| format!("raw put {}: {err}", key(i)))
        }
    };
    let raw_get = |c: &mut redis::aio::MultiplexedConnection, i: usize| {
        let mut c = c.clone();
        let k = raw_key(i);
        async move {
            let mut h: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(k)
                .query_async(&mut c)
                .await
                .map_err(|err| format!("raw get {}: {err}", key(i)))?;
            let _mtime: Option<i64> = h.get("mtime").and_then(|m| m.parse().ok());
            check_got(
                "raw",
                i,
                h.remove("name").unwrap_or_default(),
                h.remove("value"),
            )
        }
    };

    for i in n..n + WARMUP {
        lib_put(&db, &opts, i).await?;
        lib_get(&db, &opts, i).await?;
        raw_put(raw, i).await?;
        raw_get(raw, i).await?;
    }

    let [mut lp, mut rp, mut lg, mut rg] = std::array::from_fn(|_| Samples::with_capacity(n));
    for c in (0..n).step_by(CHUNK) {
        let r = c..(c + CHUNK).min(n);
        for i in r.clone() {
            timed(&mut lp, lib_put(&db, &opts, i)).await?;
        }
        for i in r {
            timed(&mut rp, raw_put(raw, i)).await?;
        }
    }
    for c in (0..n).step_by(CHUNK) {
        let r = c..(c + CHUNK).min(n);
        for i in r.clone() {
            timed(&mut lg, lib_get(&db, &opts, i)).await?;
        }
        for i in r {
            timed(&mut rg, raw_get(raw, i)).await?;
        }
    }

    println!(
        "== bench-db redis (prefix {prefix}): N = {n} sequential ops each, chunks of {CHUNK} alternating"
    );
    lp.print("library put");
    rp.print("raw redis HSET put");
    lg.print("library get");
    rg.print("raw redis HGETALL get");
    ratios("redis", "raw redis", &[&lp, &lg], &[&rp, &rg]);
    Ok(())
}

// ---- DynamoDB --------------------------------------------------------------------------------

/// A new HTTP/1.1 connection to the endpoint (the raw client's).
async fn raw_dynamo_connect(url: &str) -> Res<SendRequest<Full<Bytes>>> {
    let authority = url
        .strip_prefix("http://")
        .ok_or("bench-db dynamodb: an http:// endpoint is required")?
        .trim_end_matches('/');
    let tcp = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connect {authority}: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(s)
}

/// The raw client: one HTTP/1.1 connection, opened again when the server closed it (moto's
/// werkzeug answers every request with `Connection: close`, so both sides connect per call there).
struct RawDynamo {
    url: String,
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl RawDynamo {
    /// One signed raw call: the answer's JSON.
    async fn call(&mut self, signer: &DynamoDriver, op: &str, body: Value) -> Res<Value> {
        let req = signer
            .signed_request(op, body.to_string().into_bytes())
            .map_err(|e| format!("raw {op}: {e}"))?;
        let mut s = match self.conn.take() {
            Some(mut s) => match s.ready().await {
                Ok(()) => s,
                Err(_) => raw_dynamo_connect(&self.url).await?,
            },
            None => raw_dynamo_connect(&self.url).await?,
        };
        let resp = s
            .send_request(req)
            .await
            .map_err(|e| format!("raw {op}: {e}"))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("raw {op}: {e}"))?
            .to_bytes();
        self.conn = Some(s);
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| format!("raw {op}: {e}"))?;
        if !status.is_success() {
            return Err(format!("raw {op}: {status} {v}"));
        }
        Ok(v)
    }
}

async fn dynamodb(url: &str, n: usize) -> Res<()> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let prefix = format!("bench_{}_{stamp}_", std::process::id());
    let cfg = DynamoConfig {
        url: url.to_string(),
        region: "us-east-1".into(),
        key: std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "bench".into()),
        secret: std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "bench".into()),
        prefix: prefix.clone(),
    };
    let driver = Arc::new(DynamoDriver::new(&cfg).map_err(|e| format!("library: {e}"))?);
    let db = library("dynamodb", driver.clone()).await?;
    let opts = Options::default();
    // The raw table: the same key schema, created by the driver's init (not measured).
    let raw_table = Table::new(RAW, property_table()?.columns().to_vec())
        .map_err(|e| format!("raw table: {e}"))?;
    driver
        .init(std::slice::from_ref(&raw_table))
        .await
        .map_err(|e| format!("create the raw table: {e}"))?;
    let raw_name = driver.table_name(RAW);
    let conn = tokio::sync::Mutex::new(RawDynamo {
        url: url.to_string(),
        conn: Some(raw_dynamo_connect(url).await?),
    });
    let raw_put = |i: usize| {
        let (conn, driver, raw_name) = (&conn, &driver, &raw_name);
        async move {
            let body = serde_json::json!({
                "TableName": raw_name,
                "Item": {
                    "name": {"S": key(i)},
                    "value": {"S": value(i)},
                    "mtime": {"N": now_ms().to_string()},
                },
            });
            conn.lock()
                .await
                .call(driver, "PutItem", body)
                .await
                .map(drop)
        }
    };
    let raw_get = |i: usize| {
        let (conn, driver, raw_name) = (&conn, &driver, &raw_name);
        async move {
            let body = serde_json::json!({
                "TableName": raw_name,
                "Key": {"name": {"S": key(i)}},
                "ConsistentRead": true,
            });
            let v = conn.lock().await.call(driver, "GetItem", body).await?;
            let item = &v["Item"];
            let name = item["name"]["S"].as_str().unwrap_or_default().to_string();
            let val = item["value"]["S"].as_str().map(String::from);
            check_got("raw", i, name, val)
        }
    };

    for i in n..n + WARMUP {
        lib_put(&db, &opts, i).await?;
        lib_get(&db, &opts, i).await?;
        raw_put(i).await?;
        raw_get(i).await?;
    }
    let [mut lp, mut rp, mut lg, mut rg] = std::array::from_fn(|_| Samples::with_capacity(n));
    for c in (0..n).step_by(CHUNK) {
        let r = c..(c + CHUNK).min(n);
        for i in r.clone() {
            timed(&mut lp, lib_put(&db, &opts, i)).await?;
        }
        for i in r {
            timed(&mut rp, raw_put(i)).await?;
        }
    }
    for c in (0..n).step_by(CHUNK) {
        let r = c..(c + CHUNK).min(n);
        for i in r.clone() {
            timed(&mut lg, lib_get(&db, &opts, i)).await?;
        }
        for i in r {
            timed(&mut rg, raw_get(i)).await?;
        }
    }
    println!(
        "== bench-db dynamodb {url} (tables {prefix}*): N = {n} sequential ops each, chunks of {CHUNK} alternating"
    );
    lp.print("library put");
    rp.print("raw signed hyper put");
    lg.print("library get");
    rg.print("raw signed hyper get");
    ratios("dynamodb", "raw signed hyper", &[&lp, &lg], &[&rp, &rg]);
    Ok(())
}

fn usage() -> ! {
    eprintln!("usage: bench-db sqlite FILE N | bench-db pgsql URL N | bench-db redis URL N | bench-db dynamodb URL N");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, target, n] = args.as_slice() else {
        usage()
    };
    let Some(n) = n.parse::<usize>().ok().filter(|&n| n > 0) else {
        usage()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime can be built");
    let result = match mode.as_str() {
        "sqlite" => rt.block_on(sqlite(target, n)),
        "pgsql" => rt.block_on(pgsql(target, n)),
        "redis" => rt.block_on(redis_bench(target, n)),
        "dynamodb" => rt.block_on(dynamodb(target, n)),
        _ => usage(),
    };
    if let Err(e) = result {
        eprintln!("bench-db: {e}");
        std::process::exit(1);
    }
}
