//! Cached reads of single rows (keys `TABLE|pk1|pk2...`): read through the shared cache, count
//! hits and misses per pool, reuse the row parsed from the same cached text, and invalidate on
//! writes. The [`super::Db`] read methods and row hooks are built on [`CachedRows`].

use super::placement::Placed;
use crate::error::DbError;
use crate::options::Options;
use crate::schema::Table;
use crate::types::Row;
use bkjs_cache::Cache;
use parking_lot::Mutex;
use serde_json::Value;
use std::sync::Arc;

/// What the cache holds for a row that does not exist (no row is the JSON `null`).
const ABSENT: &str = "null";

/// The last rows [`super::Db::get_cached`] parsed, each with the JSON text it came from, so that
/// reading the same cached text again costs no parse (every signed request reads its `bk_auth`
/// row this way). An entry is used only when the cached text is the very value it was parsed
/// from (the same shared text the near cache handed out) or byte for byte equal to it, so it
/// can never be stale: a changed row has changed text.
pub(super) struct Parsed {
    pub(super) rows: Mutex<lru::LruCache<String, ParsedRow>>,
}

/// A cached text and the row parsed from it.
pub(super) type ParsedRow = (Arc<str>, Arc<Row>);

impl Parsed {
    /// Rows kept; texts longer than [`Parsed::MAX_TEXT`] are parsed every time.
    const ENTRIES: usize = 1024;
    pub(super) const MAX_TEXT: usize = 4096;

    pub(super) fn new() -> Parsed {
        let n = std::num::NonZeroUsize::new(Self::ENTRIES).expect("ENTRIES is not zero");
        Parsed {
            rows: Mutex::new(lru::LruCache::new(n)),
        }
    }

    /// The row `text` (cached under `key`) holds, or `None` when it is not a JSON object. The
    /// same text read again gives the same `Arc`.
    pub(super) fn row(&self, key: &str, text: Arc<str>) -> Option<Arc<Row>> {
        if text.len() > Self::MAX_TEXT {
            return Self::parse(&text).map(Arc::new);
        }
        {
            let mut rows = self.rows.lock();
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
        let mut rows = self.rows.lock();
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

/// The cache of cached reads, when this process has one, with the rows parsed from it.
pub(super) struct CachedRows {
    cache: Option<Cache>,
    /// Rows parsed from cached JSON, by the text they came from ([`Parsed`]).
    parsed: Parsed,
}

impl CachedRows {
    pub(super) fn new(cache: Option<Cache>) -> CachedRows {
        CachedRows {
            cache,
            parsed: Parsed::new(),
        }
    }

    pub(super) fn cache(&self) -> Option<&Cache> {
        self.cache.as_ref()
    }

    /// The cache key of a row: `TABLE|pk1|pk2...`.
    pub(super) fn key(table: &Table, row: &Row) -> Option<String> {
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

    /// Drops the cached copy of `row` after a write.
    pub(super) async fn invalidate(&self, table: &Table, row: &Row) {
        if let (Some(cache), Some(key)) = (&self.cache, Self::key(table, row)) {
            if let Err(e) = cache.del(key).await {
                tracing::warn!("db: cache invalidation of {}: {e}", table.name());
            }
        }
    }

    /// The row as stored, through the cache; row hooks not applied.
    pub(super) async fn read(
        &self,
        cache: &Cache,
        p: &Placed,
        key: &Row,
    ) -> Result<Option<Arc<Row>>, DbError> {
        let pool = p.pool()?;
        let t = &p.table;
        let ckey = Self::key(t, key)
            .ok_or_else(|| DbError::bad_value("key", "primary key value required"))?;
        if let Some(text) = cache.get_one(&ckey).await {
            if &*text == ABSENT {
                if let Some((hits, _)) = &p.counters {
                    hits.inc();
                }
                return Ok(None);
            }
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
        // A missing row is cached too (every write invalidates its key, present or not): a key
        // that does not exist costs no more than one that does, so the time of a lookup (of a
        // login, say) does not tell whether it exists, and probing unknown keys does not reach
        // the database each time.
        let text = match &row {
            Some(r) => Value::Object(r.clone()).to_string(),
            None => ABSENT.to_string(),
        };
        if let Err(e) = cache.put(ckey, text).await {
            tracing::warn!("db: cache put for {}: {e}", t.name());
        }
        Ok(row.map(Arc::new))
    }
}
