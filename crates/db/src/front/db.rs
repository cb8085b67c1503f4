//! [`Db`]: every pool, table and row hook of one process, and the operations applications call
//! (reads through the cache where asked, writes that invalidate it, and `list`, `scan`,
//! `del_all`, `replace`, `batch` built on the driver primitives).

use super::cache::CachedRows;
use super::placement::{place, FastHash, Placed};
use super::pools::{open_pool, DRIVERS};
use super::replace::replace_on;
use crate::driver::Driver;
use crate::error::DbError;
use crate::metered::Metered;
use crate::options::Options;
use crate::schema::Table;
use crate::seal::{Opened, SealKey};
use crate::types::{Op, Res, Row};
use bkjs_base::config::Config;
use bkjs_cache::Cache;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Rewrites rows of one table after they are read (e.g. splits a composite column).
pub type RowHook = Arc<dyn Fn(&Table, &mut Row) + Send + Sync>;

/// Every pool, table and hook of one process.
pub struct Db {
    pools: HashMap<String, Arc<dyn Driver>>,
    /// Each described table with its pool, resolved when the Db is built (the pools and the
    /// placement never change afterwards): a read pays one lookup for both.
    tables: HashMap<String, Placed, FastHash>,
    caching: HashSet<String, FastHash>,
    hooks: HashMap<String, Vec<RowHook>, FastHash>,
    /// The cache (when this process has one) and the rows parsed from it.
    rows: CachedRows,
    /// The key of sealed columns; `None` only for a Db built with [`Db::with_pools`] that was
    /// given none, which then refuses to write sealed columns.
    seal: Option<SealKey>,
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
        let seal = SealKey::load(cfg)?;
        let mut pools = HashMap::new();
        for driver in needed {
            let pool = open_pool(&driver, cfg).await?;
            pools.insert(driver, Metered::wrap(pool));
        }
        Ok(Db {
            tables: place(tables, &placement, &default, &pools),
            pools,
            caching: cfg.list("db-caching").iter().cloned().collect(),
            hooks: HashMap::default(),
            rows: CachedRows::new(cache),
            seal: Some(seal),
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
            hooks: HashMap::default(),
            rows: CachedRows::new(cache),
            seal: None,
        }
    }

    /// The key sealed columns are written with (a Db from [`Db::with_pools`] has none).
    pub fn set_seal_key(&mut self, key: SealKey) {
        self.seal = Some(key);
    }

    /// The plaintext of sealed column `column` of `row` (a row of `table` as read); `None` when
    /// the row has no text there. A value stored before sealing existed comes back as
    /// [`Opened::Legacy`]: writing it again seals it.
    pub fn unseal(
        &self,
        table: &Table,
        row: &Row,
        column: &str,
    ) -> Result<Option<Opened>, DbError> {
        let Some(stored) = row.get(column).and_then(Value::as_str) else {
            return Ok(None);
        };
        match &self.seal {
            Some(key) => key.open(&seal_aad(table, column, row)?, stored).map(Some),
            None if stored.starts_with(crate::seal::SEALED_PREFIX) => Err(DbError::Driver(
                "a sealed value, and this Db has no seal key".into(),
            )),
            None => Ok(Some(Opened::Legacy(stored.to_string()))),
        }
    }

    /// `row` with its sealed columns sealed (already sealed values are kept as given).
    fn sealed<'r>(&self, table: &Table, row: &'r Row) -> Result<Cow<'r, Row>, DbError> {
        let mut out = Cow::Borrowed(row);
        for c in table.columns().iter().filter(|c| c.sealed) {
            let Some(Value::String(plain)) = row.get(&c.name) else {
                continue;
            };
            if plain.is_empty() || plain.starts_with(crate::seal::SEALED_PREFIX) {
                continue;
            }
            let key = self.seal.as_ref().ok_or_else(|| {
                DbError::Driver(format!(
                    "{}.{} is sealed and this Db has no seal key",
                    table.name(),
                    c.name
                ))
            })?;
            let value = key.seal(&seal_aad(table, &c.name, row)?, plain)?;
            out.to_mut().insert(c.name.clone(), Value::String(value));
        }
        Ok(out)
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

    fn pool(
        &self,
        table: &str,
        opts: &Options,
    ) -> Result<(&Arc<dyn Driver>, &Arc<Table>), DbError> {
        let p = self.placed(table)?;
        Self::check_pool(p, opts)?;
        Ok((p.pool()?, &p.table))
    }

    /// A pool named by the caller (`Options::pool`) must be the table's own.
    fn check_pool(p: &Placed, opts: &Options) -> Result<(), DbError> {
        match opts.pool.as_deref() {
            Some(name) if name != p.pool_name => Err(DbError::bad_value(
                "_pool",
                format!(
                    "table {} is kept in pool {}, not {name}",
                    p.table.name(),
                    p.pool_name
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The cache key of a row: `TABLE|pk1|pk2...`.
    pub fn cache_key(table: &Table, row: &Row) -> Option<String> {
        CachedRows::key(table, row)
    }

    fn process(&self, table: &Table, rows: &mut [Row], opts: &Options) {
        if opts.noprocessrows {
            return;
        }
        if let Some(hooks) = self.hooks.get(table.name()) {
            for r in rows.iter_mut() {
                for h in hooks {
                    h(table, r);
                }
            }
        }
    }

    async fn invalidate(&self, table: &Table, row: &Row) {
        self.rows.invalidate(table, row).await;
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
        Self::check_pool(p, opts)?;
        let mut row = p.pool()?.get(&p.table, key, opts).await?;
        if let Some(r) = row.as_mut() {
            self.process(&p.table, std::slice::from_mut(r), opts);
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
        Self::check_pool(p, opts)?;
        let row =
            match self.rows.cache() {
                Some(cache) => self.rows.read(cache, p, key).await?.map(|shared| {
                    Arc::try_unwrap(shared).unwrap_or_else(|shared| (*shared).clone())
                }),
                // No cache in this process: a plain read, with the row hooks all reads get.
                None => p.pool()?.get(&p.table, key, opts).await?,
            };
        let Some(mut row) = row else {
            return Ok(None);
        };
        self.process(&p.table, std::slice::from_mut(&mut row), opts);
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
        match self.rows.cache() {
            Some(cache) if !self.hooks.contains_key(table) => {
                self.rows.read(cache, self.placed(table)?, key).await
            }
            _ => Ok(self
                .get_cached(table, key, &Options::default())
                .await?
                .map(Arc::new)),
        }
    }

    pub async fn put(&self, table: &str, row: &Row, opts: &Options) -> Result<Res, DbError> {
        let (pool, t) = self.pool(table, opts)?;
        let row = &*self.sealed(t, row)?;
        let r = pool.put(t, row, opts).await?;
        self.invalidate(t, row).await;
        Ok(r)
    }

    pub async fn add(&self, table: &str, row: &Row, opts: &Options) -> Result<Res, DbError> {
        let (pool, t) = self.pool(table, opts)?;
        let row = &*self.sealed(t, row)?;
        let r = pool.add(t, row, opts).await?;
        self.invalidate(t, row).await;
        Ok(r)
    }

    pub async fn update(&self, table: &str, row: &Row, opts: &Options) -> Result<Res, DbError> {
        let (pool, t) = self.pool(table, opts)?;
        let row = &*self.sealed(t, row)?;
        let r = pool.update(t, row, opts).await?;
        self.invalidate(t, row).await;
        Ok(r)
    }

    pub async fn incr(&self, table: &str, row: &Row, opts: &Options) -> Result<Res, DbError> {
        let (pool, t) = self.pool(table, opts)?;
        let row = &*self.sealed(t, row)?;
        let r = pool.incr(t, row, opts).await?;
        self.invalidate(t, row).await;
        Ok(r)
    }

    pub async fn del(&self, table: &str, key: &Row, opts: &Options) -> Result<Res, DbError> {
        let (pool, t) = self.pool(table, opts)?;
        let r = pool.del(t, key, opts).await?;
        self.invalidate(t, key).await;
        Ok(r)
    }

    pub async fn select(&self, table: &str, query: &Row, opts: &Options) -> Result<Res, DbError> {
        let (pool, t) = self.pool(table, opts)?;
        let mut r = pool.select(t, query, opts).await?;
        self.process(t, &mut r.rows, opts);
        Ok(r)
    }

    /// Every row whose text column `column` begins with one of `prefixes`, all of them and in no
    /// particular order, with the columns `opts.select` names ([`Driver::select_prefixes`]: the
    /// same rows as paging through a `begins_with` select, read range by range where the driver
    /// can). Row hooks apply as to a select.
    pub async fn select_prefixes(
        &self,
        table: &str,
        column: &str,
        prefixes: &[String],
        opts: &Options,
    ) -> Result<Vec<Row>, DbError> {
        let (pool, t) = self.pool(table, opts)?;
        let mut rows = pool.select_prefixes(t, column, prefixes, opts).await?;
        self.process(t, &mut rows, opts);
        Ok(rows)
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
        let (pool, t) = self.pool(table, opts)?;
        let row = &*self.sealed(t, row)?;
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

/// The associated data of a sealed value: table, column and the row's primary key, so a sealed
/// value does not open in another row.
fn seal_aad(table: &Table, column: &str, row: &Row) -> Result<String, DbError> {
    let key = CachedRows::key(table, row).ok_or_else(|| {
        DbError::bad_value(
            column,
            "a sealed column is written with the row's primary key",
        )
    })?;
    Ok(format!("{key}|{column}"))
}
