//! Where each described table lives: its pool, resolved once when the [`super::Db`] is built,
//! with that pool's cache hit and miss counters, so that a read pays one lookup for both.

use crate::driver::Driver;
use crate::error::DbError;
use crate::schema::Table;
use std::collections::HashMap;
use std::sync::Arc;

/// The hasher of the maps a request reads: table names come from the application's code, and
/// SipHash was a measurable part of a cached read.
pub(super) type FastHash = foldhash::fast::RandomState;

/// A described table, the pool that holds it and that pool's cache hit and miss counters.
pub(super) struct Placed {
    pub(super) table: Arc<Table>,
    /// The pool's name, for the error when it is not open.
    pub(super) pool_name: String,
    pub(super) pool: Option<Arc<dyn Driver>>,
    pub(super) counters: Option<CacheCounters>,
}

impl Placed {
    pub(super) fn pool(&self) -> Result<&Arc<dyn Driver>, DbError> {
        self.pool.as_ref().ok_or_else(|| {
            DbError::Driver(format!(
                "pool {} of table {} is not open",
                self.pool_name,
                self.table.name()
            ))
        })
    }
}

pub(super) type CacheCounters = (
    Arc<bkjs_base::metrics::Counter>,
    Arc<bkjs_base::metrics::Counter>,
);

/// Each table with its pool (`placement`: table name -> pool name) and the pool's counters.
pub(super) fn place(
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
