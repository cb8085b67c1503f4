//! Pool metrics (docs/stats.md `pool`): a driver wrapper that times every call into
//! `pool.NAME.response`, counts failures into `pool.NAME.errors`, keeps the calls in progress
//! in the gauge `pool.NAME.count` and samples how many were in progress (this one included)
//! when each call started into the histogram `pool.NAME.queue`, so each driver stays free of
//! bookkeeping. Cache hits and misses of `get_cached` are counted by the front.

use crate::driver::Driver;
use crate::error::DbError;
use crate::options::Options;
use crate::schema::Table;
use crate::types::{Res, Row};
use bkjs_base::metrics::{Counter, Gauge, Histogram, Registry, Timer};
use serde_json::Value;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// A pool with its metrics.
pub(crate) struct Metered {
    inner: Arc<dyn Driver>,
    response: Arc<Timer>,
    errors: Arc<Counter>,
    /// Calls in progress (`pool.NAME.count`).
    count: Arc<Gauge>,
    /// Calls in progress when a call starts (`pool.NAME.queue`).
    queue: Arc<Histogram>,
    /// The exact number of calls in progress, for the `queue` samples.
    active: AtomicI64,
}

/// One call in progress: counted out when dropped, even when the caller's future is dropped
/// before the driver answers.
struct Call<'a> {
    pool: &'a Metered,
    start: Instant,
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        self.pool.active.fetch_sub(1, Ordering::Relaxed);
        self.pool.count.add(-1.0);
    }
}

impl Metered {
    pub(crate) fn wrap(inner: Arc<dyn Driver>) -> Arc<dyn Driver> {
        let r = Registry::global();
        let name = inner.name();
        Arc::new(Metered {
            response: r.timer(&format!("pool.{name}.response")),
            errors: r.counter(&format!("pool.{name}.errors")),
            count: r.gauge(&format!("pool.{name}.count")),
            queue: r.histogram(&format!("pool.{name}.queue")),
            active: AtomicI64::new(0),
            inner,
        })
    }

    fn enter(&self) -> Call<'_> {
        let n = self.active.fetch_add(1, Ordering::Relaxed) + 1;
        self.count.add(1.0);
        self.queue.update(n as f64);
        Call {
            pool: self,
            start: Instant::now(),
        }
    }

    fn done<T>(&self, call: Call<'_>, r: Result<T, DbError>) -> Result<T, DbError> {
        self.response.since(call.start);
        drop(call);
        if let Err(e) = &r {
            // A missing row or a duplicate key is an answer, not a failure of the pool.
            if !matches!(e, DbError::NotFound | DbError::Exists) {
                self.errors.inc();
            }
        }
        r
    }
}

#[async_trait::async_trait]
impl Driver for Metered {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    async fn init(&self, tables: &[Table]) -> Result<(), DbError> {
        self.inner.init(tables).await
    }
    async fn get(&self, table: &Table, key: &Row, opts: &Options) -> Result<Option<Row>, DbError> {
        let t = self.enter();
        self.done(t, self.inner.get(table, key, opts).await)
    }
    async fn put(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        let t = self.enter();
        self.done(t, self.inner.put(table, row, opts).await)
    }
    async fn add(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        let t = self.enter();
        self.done(t, self.inner.add(table, row, opts).await)
    }
    async fn update(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        let t = self.enter();
        self.done(t, self.inner.update(table, row, opts).await)
    }
    async fn incr(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        let t = self.enter();
        self.done(t, self.inner.incr(table, row, opts).await)
    }
    async fn del(&self, table: &Table, key: &Row, opts: &Options) -> Result<Res, DbError> {
        let t = self.enter();
        self.done(t, self.inner.del(table, key, opts).await)
    }
    async fn select(&self, table: &Table, query: &Row, opts: &Options) -> Result<Res, DbError> {
        let t = self.enter();
        self.done(t, self.inner.select(table, query, opts).await)
    }
    async fn query(&self, text: &str, params: &[Value], opts: &Options) -> Result<Res, DbError> {
        let t = self.enter();
        self.done(t, self.inner.query(text, params, opts).await)
    }
    async fn select_prefixes(
        &self,
        table: &Table,
        column: &str,
        prefixes: &[String],
        opts: &Options,
    ) -> Result<Vec<Row>, DbError> {
        let t = self.enter();
        self.done(
            t,
            self.inner
                .select_prefixes(table, column, prefixes, opts)
                .await,
        )
    }
}
