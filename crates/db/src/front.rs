//! The DB API as applications and endpoints use it: named pools from the configuration, the
//! registry of described tables and which pool holds each, cached reads (`get_cached`, keys
//! `TABLE|pk1|pk2...`) with invalidation on every write, row hooks, and the operations built on
//! the driver primitives (`del_all`, `replace`, `batch`, `scan`).
//!
//! Only the server (and `bksh`) call [`Db::init`]; web workers open the same pools and never
//! change schemas.

use super::{Blocking, DbError, Driver, Op, Options, Res, Row, SqliteDriver, Table};
use bkjs_base::config::{Config, Kind, Param};
use bkjs_cache::Cache;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The drivers a pool can use.
pub const DRIVERS: &[&str] = &["sqlite", "pgsql", "mysql", "sled"];

/// DB parameters.
pub static PARAMS: &[Param] = &[
    Param::new(
        "db-pool",
        Kind::Enum(DRIVERS),
        "sqlite",
        "the default pool: tables not pinned elsewhere live there",
    ),
    Param::new(
        "db-sqlite-pool",
        Kind::Path,
        "var/bkjs.db",
        "SQLite database file",
    ),
    Param::new(
        "db-sqlite-max",
        Kind::Int { min: 1, max: 256 },
        "4",
        "connections of the SQLite pool per process",
    ),
    Param::new(
        "db-sqlite-inline",
        Kind::Bool,
        "true",
        "key lookups and single-row writes that need not wait (idle connection, no lock held) run on the worker's thread, microseconds; 0 sends every call to the blocking pool",
    ),
    Param::new(
        "db-sqlite-tables",
        Kind::List,
        "",
        "tables kept in the SQLite pool whatever -db-pool says",
    ),
    Param::new(
        "db-pgsql-pool",
        Kind::String,
        "",
        "PostgreSQL URL, e.g. postgresql://user@host:5432/db",
    ),
    Param::new(
        "db-pgsql-max",
        Kind::Int { min: 1, max: 1024 },
        "8",
        "connections of the PostgreSQL pool per process",
    ),
    Param::new(
        "db-pgsql-schema",
        Kind::String,
        "",
        "PostgreSQL schema (created when missing; default: the server's search_path)",
    ),
    Param::new(
        "db-pgsql-tables",
        Kind::List,
        "",
        "tables kept in the PostgreSQL pool",
    ),
    Param::new(
        "db-mysql-pool",
        Kind::String,
        "",
        "MySQL/MariaDB URL, e.g. mysql://root@host:3306/db",
    ),
    Param::new(
        "db-mysql-max",
        Kind::Int { min: 1, max: 1024 },
        "8",
        "connections of the MySQL pool per process",
    ),
    Param::new(
        "db-mysql-tables",
        Kind::List,
        "",
        "tables kept in the MySQL pool",
    ),
    Param::new(
        "db-sled-pool",
        Kind::Path,
        "",
        "sled database directory (embedded key-value store)",
    ),
    Param::new(
        "db-sled-tables",
        Kind::List,
        "",
        "tables kept in the sled pool",
    ),
    Param::new(
        "db-caching",
        Kind::List,
        "",
        "tables whose gets go through the cache by default",
    ),
];

/// Rewrites rows of one table after they are read (e.g. splits a composite column).
pub type RowHook = Arc<dyn Fn(&Table, &mut Row) + Send + Sync>;

/// Opens the pool of one driver from the configuration.
async fn open_pool(driver: &str, cfg: &Config) -> Result<Arc<dyn Driver>, DbError> {
    match driver {
        "sqlite" => {
            let path = cfg
                .path("db-sqlite-pool")
                .ok_or_else(|| DbError::bad_value("db-sqlite-pool", "a file is required"))?;
            let max = cfg.int("db-sqlite-max") as usize;
            let d = tokio::task::spawn_blocking(move || SqliteDriver::open(path, max))
                .await
                .map_err(|e| DbError::Driver(e.to_string()))??;
            d.set_inline(cfg.bool("db-sqlite-inline"));
            Ok(Arc::new(Blocking(Arc::new(d))))
        }
        "pgsql" => {
            let url = cfg.str("db-pgsql-pool");
            if url.is_empty() {
                return Err(DbError::bad_value(
                    "db-pgsql-pool",
                    "a postgresql:// URL is required",
                ));
            }
            let schema = Some(cfg.str("db-pgsql-schema")).filter(|s| !s.is_empty());
            let d =
                super::pgsql::PgsqlDriver::connect(url, cfg.int("db-pgsql-max") as usize, schema)
                    .await?;
            Ok(Arc::new(d))
        }
        "mysql" => {
            let url = cfg.str("db-mysql-pool");
            if url.is_empty() {
                return Err(DbError::bad_value(
                    "db-mysql-pool",
                    "a mysql:// URL is required",
                ));
            }
            Ok(Arc::new(super::mysql::MysqlDriver::connect(
                url,
                cfg.int("db-mysql-max") as usize,
            )?))
        }
        "sled" => {
            let path = cfg
                .path("db-sled-pool")
                .unwrap_or_else(|| cfg.dir("var").join("bkjs.sled"));
            let d = tokio::task::spawn_blocking(move || super::sled::SledDriver::open(path))
                .await
                .map_err(|e| DbError::Driver(e.to_string()))?
                .map_err(|e| {
                    // sled locks its directory to one process.
                    DbError::Driver(format!("{e} (a sled database is used by one process at a time: run a sled pool with -server-web-workers 1)"))
                })?;
            Ok(Arc::new(Blocking(Arc::new(d))))
        }
        other => Err(DbError::Unsupported(format!("unknown driver {other}"))),
    }
}

/// Every pool, table and hook of one process.
pub struct Db {
    pools: HashMap<String, Arc<dyn Driver>>,
    /// Each described table with its pool, resolved when the Db is built (the pools and the
    /// placement never change afterwards): a read pays one lookup for both.
    tables: HashMap<String, Placed, FastHash>,
    caching: HashSet<String, FastHash>,
    cache: Option<Cache>,
    hooks: HashMap<String, Vec<RowHook>, FastHash>,
    /// Rows parsed from cached JSON, by the text they came from ([`Parsed`]).
    parsed: Parsed,
}

/// The hasher of the maps a request reads: table names come from the application's code, and
/// SipHash was a measurable part of a cached read.
type FastHash = foldhash::fast::RandomState;

/// A described table, the pool that holds it and that pool's cache hit and miss counters.
struct Placed {
    table: Arc<Table>,
    /// The pool's name, for the error when it is not open.
    pool_name: String,
    pool: Option<Arc<dyn Driver>>,
    counters: Option<CacheCounters>,
}

impl Placed {
    fn pool(&self) -> Result<&Arc<dyn Driver>, DbError> {
        self.pool.as_ref().ok_or_else(|| {
            DbError::Driver(format!(
                "pool {} of table {} is not open",
                self.pool_name,
                self.table.name()
            ))
        })
    }
}

/// The last rows [`Db::get_cached`] parsed, each with the JSON text it came from, so that
/// reading the same cached text again costs no parse (every signed request reads its `bk_auth`
/// row this way). An entry is used only when the cached text is the very value it was parsed
/// from (the same shared text the near cache handed out) or byte for byte equal to it, so it
/// can never be stale: a changed row has changed text.
struct Parsed {
    rows: std::sync::Mutex<lru::LruCache<String, ParsedRow>>,
}

/// A cached text and the row parsed from it.
type ParsedRow = (Arc<str>, Arc<Row>);

impl Parsed {
    /// Rows kept; texts longer than [`Parsed::MAX_TEXT`] are parsed every time.
    const ENTRIES: usize = 1024;
    const MAX_TEXT: usize = 4096;

    fn new() -> Parsed {
        let n = std::num::NonZeroUsize::new(Self::ENTRIES).expect("ENTRIES is not zero");
        Parsed {
            rows: std::sync::Mutex::new(lru::LruCache::new(n)),
        }
    }

    /// The row `text` (cached under `key`) holds, or `None` when it is not a JSON object. The
    /// same text read again gives the same `Arc`.
    fn row(&self, key: &str, text: Arc<str>) -> Option<Arc<Row>> {
        if text.len() > Self::MAX_TEXT {
            return Self::parse(&text).map(Arc::new);
        }
        {
            let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((t, row)) = rows.get_mut(key) {
                if Arc::ptr_eq(t, &text) {
                    return Some(row.clone());
                }
                if **t == *text {
                    // The same text in another allocation (the near cache refilled): keep the
                    // new one so that the next read is recognised by its pointer.
                    *t = text;
                    return Some(row.clone());
                }
            }
        }
        let row = Arc::new(Self::parse(&text)?);
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        rows.put(key.to_string(), (text, row.clone()));
        Some(row)
    }

    fn parse(text: &str) -> Option<Row> {
        match serde_json::from_str(text) {
            Ok(Value::Object(row)) => Some(row),
            _ => None,
        }
    }
}

type CacheCounters = (
    Arc<bkjs_base::metrics::Counter>,
    Arc<bkjs_base::metrics::Counter>,
);

/// Each table with its pool (`placement`: table name -> pool name) and the pool's counters.
fn place(
    tables: Vec<Table>,
    placement: &HashMap<String, String>,
    default: &str,
    pools: &HashMap<String, Arc<dyn Driver>>,
) -> HashMap<String, Placed, FastHash> {
    let r = bkjs_base::metrics::Registry::global();
    let counters: HashMap<&str, CacheCounters> = pools
        .values()
        .map(|p| {
            let n = p.name();
            (
                n,
                (
                    r.counter(&format!("pool.{n}.cache_hits")),
                    r.counter(&format!("pool.{n}.cache_misses")),
                ),
            )
        })
        .collect();
    tables
        .into_iter()
        .map(|t| {
            let pool_name = placement
                .get(t.name())
                .map(String::as_str)
                .unwrap_or(default)
                .to_string();
            let pool = pools.get(&pool_name).cloned();
            let counters = pool.as_ref().and_then(|p| counters.get(p.name()).cloned());
            let placed = Placed {
                table: Arc::new(t),
                pool_name,
                pool,
                counters,
            };
            (placed.table.name().to_string(), placed)
        })
        .collect()
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("pools", &self.pools.keys().collect::<Vec<_>>())
            .field("tables", &self.tables.len())
            .finish()
    }
}

impl Db {
    /// Opens the default pool and every pool named by `-db-<driver>-pool` with pinned tables.
    pub async fn open(
        cfg: &Config,
        tables: Vec<Table>,
        cache: Option<Cache>,
    ) -> Result<Db, DbError> {
        let default = cfg.str("db-pool").to_string();
        let mut placement = HashMap::new();
        let mut needed: Vec<String> = vec![default.clone()];
        for t in &tables {
            placement.insert(t.name().to_string(), default.clone());
        }
        for driver in DRIVERS {
            let pinned = cfg.list(&format!("db-{driver}-tables"));
            for name in pinned {
                if !tables.iter().any(|t| t.name() == name) {
                    return Err(DbError::BadName(format!(
                        "-db-{driver}-tables names unknown table {name}"
                    )));
                }
                placement.insert(name.clone(), driver.to_string());
                if !needed.iter().any(|n| n == driver) {
                    needed.push(driver.to_string());
                }
            }
        }
        let mut pools = HashMap::new();
        for driver in needed {
            let pool = open_pool(&driver, cfg).await?;
            pools.insert(driver, super::metered::Metered::wrap(pool));
        }
        Ok(Db {
            tables: place(tables, &placement, &default, &pools),
            pools,
            caching: cfg.list("db-caching").iter().cloned().collect(),
            cache,
            hooks: HashMap::default(),
            parsed: Parsed::new(),
        })
    }

    /// A Db over given pools, for tests and for applications that build their own drivers.
    pub fn with_pools(
        pools: HashMap<String, Arc<dyn Driver>>,
        default: &str,
        tables: Vec<Table>,
        cache: Option<Cache>,
    ) -> Db {
        Db {
            tables: place(tables, &HashMap::new(), default, &pools),
            pools,
            caching: HashSet::default(),
            cache,
            hooks: HashMap::default(),
            parsed: Parsed::new(),
        }
    }

    /// Rows of `table` read through this Db go through `hook`, in registration order.
    pub fn hook(&mut self, table: &str, hook: RowHook) {
        self.hooks.entry(table.to_string()).or_default().push(hook);
    }

    /// Creates missing tables and upgrades existing ones in every pool (server and shell only).
    pub async fn init(&self) -> Result<(), DbError> {
        for (name, pool) in &self.pools {
            let tables: Vec<Table> = self
                .tables
                .values()
                .filter(|p| p.pool_name == *name)
                .map(|p| (*p.table).clone())
                .collect();
            pool.init(&tables).await?;
            tracing::info!(
                "db: pool {name} holds {} tables, all created and up to date",
                tables.len()
            );
        }
        Ok(())
    }

    /// Described tables, sorted by name.
    pub fn tables(&self) -> Vec<Arc<Table>> {
        let mut t: Vec<_> = self.tables.values().map(|p| p.table.clone()).collect();
        t.sort_by(|a, b| a.name().cmp(b.name()));
        t
    }

    /// The description of `name`; an unknown table is the caller's error.
    pub fn table(&self, name: &str) -> Result<Arc<Table>, DbError> {
        self.placed(name).map(|p| p.table.clone())
    }

    fn placed(&self, table: &str) -> Result<&Placed, DbError> {
        self.tables
            .get(table)
            .ok_or_else(|| DbError::BadName(format!("unknown table {table:?}")))
    }

    fn pool(&self, table: &str) -> Result<(&Arc<dyn Driver>, &Arc<Table>), DbError> {
        let p = self.placed(table)?;
        Ok((p.pool()?, &p.table))
    }

    /// The cache key of a row: `TABLE|pk1|pk2...`.
    pub fn cache_key(table: &Table, row: &Row) -> Option<String> {
        let mut key = table.name().to_string();
        for c in table.primary_keys() {
            let v = row.get(&c.name)?;
            key.push('|');
            match v {
                Value::String(s) => key.push_str(s),
                other => key.push_str(&other.to_string()),
            }
        }
        Some(key)
    }

    fn process(&self, table: &Table, rows: &mut [Row]) {
        if let Some(hooks) = self.hooks.get(table.name()) {
            for r in rows.iter_mut() {
                for h in hooks {
                    h(table, r);
                }
            }
        }
    }

    async fn invalidate(&self, table: &Table, row: &Row) {
        if let (Some(cache), Some(key)) = (&self.cache, Self::cache_key(table, row)) {
            if let Err(e) = cache.del(key).await {
                tracing::warn!("db: cache invalidation of {}: {e}", table.name());
            }
        }
    }

    /// One row by primary key; through the cache when the table is in `-db-caching`.
    pub async fn get(
        &self,
        table: &str,
        key: &Row,
        opts: &Options,
    ) -> Result<Option<Row>, DbError> {
        if (opts.cached || self.caching.contains(table)) && opts.select.is_empty() {
            return self.get_cached(table, key, opts).await;
        }
        let p = self.placed(table)?;
        let mut row = p.pool()?.get(&p.table, key, opts).await?;
        if let Some(r) = row.as_mut() {
            self.process(&p.table, std::slice::from_mut(r));
        }
        Ok(row)
    }

    /// One row by primary key, read from the cache when there and stored there when not.
    pub async fn get_cached(
        &self,
        table: &str,
        key: &Row,
        opts: &Options,
    ) -> Result<Option<Row>, DbError> {
        let p = self.placed(table)?;
        let row = match &self.cache {
            Some(cache) => self
                .cached(cache, p, key)
                .await?
                .map(|shared| Arc::try_unwrap(shared).unwrap_or_else(|shared| (*shared).clone())),
            // No cache in this process: a plain read, with the row hooks all reads get.
            None => p.pool()?.get(&p.table, key, opts).await?,
        };
        let Some(mut row) = row else {
            return Ok(None);
        };
        self.process(&p.table, std::slice::from_mut(&mut row));
        Ok(Some(row))
    }

    /// [`Db::get_cached`] for a caller that only reads the row: when the same cached text is
    /// read again it is the same `Arc`, neither parsed nor copied. Tables with row hooks get a
    /// processed copy, as from [`Db::get_cached`].
    pub async fn get_cached_shared(
        &self,
        table: &str,
        key: &Row,
    ) -> Result<Option<Arc<Row>>, DbError> {
        match &self.cache {
            Some(cache) if !self.hooks.contains_key(table) => {
                self.cached(cache, self.placed(table)?, key).await
            }
            _ => Ok(self
                .get_cached(table, key, &Options::default())
                .await?
                .map(Arc::new)),
        }
    }

    /// The row as stored, through the cache; row hooks not applied.
    async fn cached(
        &self,
        cache: &Cache,
        p: &Placed,
        key: &Row,
    ) -> Result<Option<Arc<Row>>, DbError> {
        let pool = p.pool()?;
        let t = &p.table;
        let ckey = Self::cache_key(t, key)
            .ok_or_else(|| DbError::bad_value("key", "primary key value required"))?;
        if let Some(text) = cache.get_one(&ckey).await {
            if let Some(row) = self.parsed.row(&ckey, text) {
                if let Some((hits, _)) = &p.counters {
                    hits.inc();
                }
                return Ok(Some(row));
            }
        }
        if let Some((_, misses)) = &p.counters {
            misses.inc();
        }
        let row = pool.get(t, key, &Options::default()).await?;
        if let Some(r) = &row {
            if let Err(e) = cache.put(ckey, Value::Object(r.clone()).to_string()).await {
                tracing::warn!("db: cache put for {}: {e}", t.name());
            }
        }
        Ok(row.map(Arc::new))
    }

    pub async fn put(&self, table: &str, row: &Row, opts: &Options) -> Result<Res, DbError> {
        let (pool, t) = self.pool(table)?;
        let r = pool.put(t, row, opts).await?;
        self.invalidate(t, row).await;
        Ok(r)
    }

    pub async fn add(&self, table: &str, row: &Row, opts: &Options) -> Result<Res, DbError> {
        let (pool, t) = self.pool(table)?;
        let r = pool.add(t, row, opts).await?;
        self.invalidate(t, row).await;
        Ok(r)
    }

    pub async fn update(&self, table: &str, row: &Row, opts: &Options) -> Result<Res, DbError> {
        let (pool, t) = self.pool(table)?;
        let r = pool.update(t, row, opts).await?;
        self.invalidate(t, row).await;
        Ok(r)
    }

    pub async fn incr(&self, table: &str, row: &Row, opts: &Options) -> Result<Res, DbError> {
        let (pool, t) = self.pool(table)?;
        let r = pool.incr(t, row, opts).await?;
        self.invalidate(t, row).await;
        Ok(r)
    }

    pub async fn del(&self, table: &str, key: &Row, opts: &Options) -> Result<Res, DbError> {
        let (pool, t) = self.pool(table)?;
        let r = pool.del(t, key, opts).await?;
        self.invalidate(t, key).await;
        Ok(r)
    }

    pub async fn select(&self, table: &str, query: &Row, opts: &Options) -> Result<Res, DbError> {
        let (pool, t) = self.pool(table)?;
        let mut r = pool.select(t, query, opts).await?;
        self.process(t, &mut r.rows);
        Ok(r)
    }

    /// Rows whose first primary key is one of `ids` (`/data/list`).
    pub async fn list(&self, table: &str, ids: Vec<Value>, opts: &Options) -> Result<Res, DbError> {
        let t = self.table(table)?;
        let first = t
            .primary_keys()
            .first()
            .map(|c| c.name.clone())
            .ok_or_else(|| DbError::BadName(format!("{table} has no primary key")))?;
        let mut q = Row::new();
        q.insert(first.clone(), Value::Array(ids));
        let opts = opts.clone().op(&first, Op::In);
        self.select(table, &q, &opts).await
    }

    /// Every row of a select, page by page, handed to `each` (a select that may be large).
    pub async fn scan(
        &self,
        table: &str,
        query: &Row,
        opts: &Options,
        mut each: impl FnMut(Vec<Row>) -> Result<(), DbError>,
    ) -> Result<u64, DbError> {
        let mut opts = opts.clone();
        let mut n = 0;
        loop {
            let r = self.select(table, query, &opts).await?;
            n += r.rows.len() as u64;
            each(r.rows)?;
            match r.next_token {
                Some(t) => opts.start = Some(t),
                None => return Ok(n),
            }
        }
    }

    /// Deletes every row a select matches (keys first, then the rows one by one).
    pub async fn del_all(&self, table: &str, query: &Row, opts: &Options) -> Result<Res, DbError> {
        let t = self.table(table)?;
        let keys: Vec<String> = t.primary_keys().iter().map(|c| c.name.clone()).collect();
        let mut sel = opts.clone();
        sel.select = keys;
        sel.count = 500;
        let mut rows = Vec::new();
        self.scan(table, query, &sel, |page| {
            rows.extend(page);
            Ok(())
        })
        .await?;
        let mut affected = 0;
        for r in &rows {
            affected += self.del(table, r, opts).await?.affected;
        }
        Ok(Res {
            affected,
            ..Res::default()
        })
    }

    /// `put` unless the stored row is newer (`check_mtime` names the column compared) or already
    /// holds the same data (`check_data`); affected = 0 when skipped. See [`replace_on`].
    pub async fn replace(&self, table: &str, row: &Row, opts: &Options) -> Result<Res, DbError> {
        let (pool, t) = self.pool(table)?;
        let r = replace_on(pool.as_ref(), t, row, opts).await?;
        if r.affected > 0 {
            self.invalidate(t, row).await;
        }
        Ok(r)
    }

    /// Runs writes in order, stopping at the first error (not a transaction).
    pub async fn batch(
        &self,
        ops: &[(String, String, Row)],
        opts: &Options,
    ) -> Result<Vec<Res>, DbError> {
        let mut out = Vec::with_capacity(ops.len());
        for (op, table, row) in ops {
            out.push(match op.as_str() {
                "add" => self.add(table, row, opts).await?,
                "put" => self.put(table, row, opts).await?,
                "update" => self.update(table, row, opts).await?,
                "incr" => self.incr(table, row, opts).await?,
                "del" => self.del(table, row, opts).await?,
                "replace" => self.replace(table, row, opts).await?,
                other => return Err(DbError::BadOp(other.to_string())),
            });
        }
        Ok(out)
    }

    /// A driver-native statement on a pool (`/data` never exposes it).
    pub async fn query(
        &self,
        pool: &str,
        text: &str,
        params: &[Value],
        opts: &Options,
    ) -> Result<Res, DbError> {
        let p = self
            .pools
            .get(pool)
            .ok_or_else(|| DbError::BadName(format!("pool {pool} is not open")))?;
        p.query(text, params, opts).await
    }
}

/// `replace` on one driver: reads the stored row and writes only when `check_mtime`'s column
/// is older there (or absent) and, with `check_data`, when some given value differs.
pub async fn replace_on(
    d: &dyn Driver,
    t: &Table,
    row: &Row,
    opts: &Options,
) -> Result<Res, DbError> {
    if opts.check_mtime.is_some() || opts.check_data {
        if let Some(old) = d.get(t, row, &Options::default()).await? {
            if let Some(col) = &opts.check_mtime {
                let newer = match (old.get(col).and_then(num), row.get(col).and_then(num)) {
                    (Some(o), Some(n)) => o >= n,
                    _ => false,
                };
                if newer {
                    return Ok(Res::default());
                }
            }
            if opts.check_data
                && row
                    .iter()
                    .all(|(k, v)| old.get(k).is_none_or(|o| same(o, v)))
            {
                return Ok(Res::default());
            }
        }
    }
    d.put(t, row, opts).await
}

/// A number from a JSON number or numeric string.
fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Equal as stored: numbers and numeric strings compare by value, booleans also match their
/// stored forms (`1`/`0`, `true`/`false`), everything else exactly.
fn same(a: &Value, b: &Value) -> bool {
    match (num(a), num(b)) {
        (Some(x), Some(y)) => x == y,
        _ => match (a, b) {
            (Value::String(s), Value::Bool(v)) | (Value::Bool(v), Value::String(s)) => {
                let (word, digit) = if *v { ("true", "1") } else { ("false", "0") };
                s == word || s == digit
            }
            _ => a == b,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::row;
    use crate::{Column, SqliteDriver};
    use serde_json::json;

    #[test]
    fn parsed_rows_are_reused_only_for_the_same_text() {
        let p = Parsed::new();
        let a = r#"{"id":"1","name":"a"}"#;
        let text: Arc<str> = Arc::from(a);
        let row = p.row("t|1", text.clone()).expect("an object");
        assert_eq!(
            Value::Object((*row).clone()),
            json!({"id": "1", "name": "a"})
        );
        assert_eq!(p.rows.lock().expect("lock").len(), 1);
        // The same shared text again: the kept row itself.
        let again = p.row("t|1", text).expect("an object");
        assert!(Arc::ptr_eq(&row, &again));
        // Equal text in another allocation (the near cache refilled): still the kept row, and
        // the kept text is now that allocation.
        let refilled: Arc<str> = Arc::from(a);
        let again = p.row("t|1", refilled.clone()).expect("an object");
        assert!(Arc::ptr_eq(&row, &again));
        let kept = p
            .rows
            .lock()
            .expect("lock")
            .peek("t|1")
            .map(|(t, _)| t.clone());
        assert!(kept.is_some_and(|t| Arc::ptr_eq(&t, &refilled)));
        // The row changed: its new text is parsed, never the old row returned.
        let changed = p
            .row("t|1", Arc::from(r#"{"id":"1","name":"b"}"#))
            .expect("an object");
        assert!(!Arc::ptr_eq(&row, &changed));
        assert_eq!(
            Value::Object((*changed).clone()),
            json!({"id": "1", "name": "b"})
        );
        // Not an object, or not JSON: no row.
        assert!(p.row("t|2", "[1]".into()).is_none());
        assert!(p.row("t|3", "{".into()).is_none());
        // Long texts are parsed every time and not kept.
        let long = format!(r#"{{"id":"4","x":"{}"}}"#, "y".repeat(Parsed::MAX_TEXT));
        assert!(p.row("t|4", Arc::from(long)).is_some());
        assert!(p.rows.lock().expect("lock").peek("t|4").is_none());
    }

    fn db(dir: &std::path::Path) -> Db {
        let t = Table::new(
            "items",
            vec![
                Column::text("id").primary(1),
                Column::text("name"),
                Column::bigint("mtime"),
            ],
        )
        .expect("table");
        let sqlite = SqliteDriver::open(dir.join("front.db"), 2).expect("open");
        let mut pools: HashMap<String, Arc<dyn Driver>> = HashMap::new();
        pools.insert("sqlite".into(), Arc::new(Blocking(Arc::new(sqlite))));
        Db::with_pools(pools, "sqlite", vec![t], None)
    }

    fn tmp() -> std::path::PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "bkjs-front-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&p).expect("dir");
        p
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replace_checks_mtime_and_data() {
        let dir = tmp();
        let db = db(&dir);
        db.init().await.expect("init");
        let o = Options::default();
        db.put(
            "items",
            &row(json!({"id": "a", "name": "new", "mtime": 200})),
            &o,
        )
        .await
        .expect("put");
        let older = Options {
            check_mtime: Some("mtime".into()),
            ..Options::default()
        };
        let r = db
            .replace(
                "items",
                &row(json!({"id": "a", "name": "old", "mtime": 100})),
                &older,
            )
            .await
            .expect("replace");
        assert_eq!(r.affected, 0, "older data does not overwrite newer");
        assert_eq!(
            db.get("items", &row(json!({"id": "a"})), &o)
                .await
                .expect("get")
                .expect("row")["name"],
            json!("new")
        );
        let r = db
            .replace(
                "items",
                &row(json!({"id": "a", "name": "newer", "mtime": 300})),
                &older,
            )
            .await
            .expect("replace");
        assert_eq!(r.affected, 1);
        let same = Options {
            check_data: true,
            ..Options::default()
        };
        let r = db
            .replace(
                "items",
                &row(json!({"id": "a", "name": "newer", "mtime": "300"})),
                &same,
            )
            .await
            .expect("replace");
        assert_eq!(r.affected, 0, "the same data is not written again");
        let r = db
            .replace("items", &row(json!({"id": "b", "name": "x"})), &older)
            .await
            .expect("replace");
        assert_eq!(r.affected, 1, "a missing row is written");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batch_scan_del_all_and_hooks() {
        let dir = tmp();
        let mut db = db(&dir);
        db.init().await.expect("init");
        let o = Options::default();
        let ops: Vec<(String, String, Row)> = (0..7)
            .map(|i| {
                (
                    "add".to_string(),
                    "items".to_string(),
                    row(json!({"id": format!("k{i}"), "name": "n"})),
                )
            })
            .collect();
        assert_eq!(db.batch(&ops, &o).await.expect("batch").len(), 7);
        let bad = vec![("drop".to_string(), "items".to_string(), Row::new())];
        assert!(matches!(db.batch(&bad, &o).await, Err(DbError::BadOp(_))));
        let q = row(json!({"id": "k"}));
        let by_prefix = o.clone().op("id", Op::BeginsWith);
        let small = Options {
            count: 2,
            ..by_prefix.clone()
        };
        let mut seen = 0;
        let n = db
            .scan("items", &q, &small, |rows| {
                seen += 1;
                assert!(rows.len() <= 2);
                Ok(())
            })
            .await
            .expect("scan");
        assert_eq!((n, seen), (7, 4), "7 rows in pages of 2");
        db.hook(
            "items",
            Arc::new(|_t: &Table, r: &mut Row| {
                r.insert("hooked".into(), json!(true));
            }),
        );
        let got = db
            .get("items", &row(json!({"id": "k1"})), &o)
            .await
            .expect("get")
            .expect("row");
        assert_eq!(got["hooked"], json!(true), "row hooks run on reads");
        let got = db
            .get_cached("items", &row(json!({"id": "k1"})), &o)
            .await
            .expect("get_cached")
            .expect("row");
        assert_eq!(
            got["hooked"],
            json!(true),
            "and on cached reads, also in a process without a cache"
        );
        let r = db.del_all("items", &q, &by_prefix).await.expect("del_all");
        assert_eq!(r.affected, 7);
        assert!(db
            .get("items", &row(json!({"id": "k1"})), &o)
            .await
            .expect("get")
            .is_none());
        let _ = std::fs::remove_dir_all(dir);
    }
}
