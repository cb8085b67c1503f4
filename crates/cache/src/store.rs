//! The per-machine LRU store held by the server: string keys and values, a fixed number of
//! entries, and the counters `/system/cache/stats` reports.

pub use bkjs_ipc::CacheStats;
use lru::LruCache;
use std::num::NonZeroUsize;

/// A change to the store that copies of its values (workers' near caches) must drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    /// This key was written or deleted.
    Key(&'a str),
    /// Everything was cleared.
    All,
}

/// Told of every write, under the store's lock, so copies drop in the order writes happen.
pub type ChangeListener = Box<dyn Fn(Change<'_>) + Send>;

/// The LRU itself.
pub(crate) struct LruStore {
    lru: LruCache<String, String>,
    stats: CacheStats,
    listener: Option<ChangeListener>,
}

impl std::fmt::Debug for LruStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LruStore")
            .field("stats", &self.stats)
            .finish()
    }
}

impl LruStore {
    /// A store of at most `max` entries (at least one).
    pub fn new(max: usize) -> LruStore {
        let cap = NonZeroUsize::new(max.max(1)).unwrap_or(NonZeroUsize::MIN);
        LruStore {
            lru: LruCache::new(cap),
            stats: CacheStats {
                max: cap.get() as u64,
                ..CacheStats::default()
            },
            listener: None,
        }
    }

    /// Calls `listener` on every put, incr, del and clear from now on (not on evictions: an
    /// evicted value was still right).
    pub fn on_change(&mut self, listener: ChangeListener) {
        self.listener = Some(listener);
    }

    fn changed(&self, c: Change<'_>) {
        if let Some(l) = &self.listener {
            l(c);
        }
    }

    pub fn get(&mut self, key: &str) -> Option<String> {
        match self.lru.get(key) {
            Some(v) => {
                self.stats.hits += 1;
                Some(v.clone())
            }
            None => {
                self.stats.misses += 1;
                None
            }
        }
    }

    pub fn put(&mut self, key: &str, value: &str) {
        let added = (key.len() + value.len()) as u64;
        if let Some((k, v)) = self.lru.push(key.to_string(), value.to_string()) {
            self.stats.bytes -= (k.len() + v.len()) as u64;
            if k != key {
                self.stats.evicted += 1;
            }
        }
        self.stats.bytes += added;
        self.stats.inserted += 1;
        self.changed(Change::Key(key));
    }

    /// Adds `delta` to the number stored under `key` (missing or not a number counts as 0) and
    /// returns the new value.
    pub fn incr(&mut self, key: &str, delta: i64) -> i64 {
        let old = self
            .lru
            .peek(key)
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(0);
        let new = old.saturating_add(delta);
        self.put(key, &new.to_string());
        new
    }

    pub fn del(&mut self, key: &str) -> bool {
        // A copy may outlive the server's own entry (evicted here, still held by a worker).
        self.changed(Change::Key(key));
        match self.lru.pop(key) {
            Some(v) => {
                self.stats.bytes -= (key.len() + v.len()) as u64;
                self.stats.deleted += 1;
                true
            }
            None => false,
        }
    }

    pub fn clear(&mut self) {
        self.stats.deleted += self.lru.len() as u64;
        self.lru.clear();
        self.stats.bytes = 0;
        self.changed(Change::All);
    }

    /// Keys starting with `prefix` (all keys for an empty one), most recently used first.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.lru
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub fn exists(&self, key: &str) -> bool {
        self.lru.contains(key)
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            count: self.lru.len() as u64,
            ..self.stats.clone()
        }
    }

    /// Peer-protocol counters live with the store so that one `stats` answers everything.
    pub(crate) fn stats_mut(&mut self) -> &mut CacheStats {
        &mut self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_operations_and_stats() {
        let mut s = LruStore::new(2);
        assert_eq!(s.get("a"), None);
        s.put("a", "1");
        s.put("b", "22");
        assert_eq!(s.get("a").as_deref(), Some("1"));
        s.put("c", "3"); // evicts b, the least recently used
        assert!(!s.exists("b"));
        assert_eq!(s.keys(""), ["c", "a"]);
        assert_eq!(s.incr("a", 5), 6);
        assert_eq!(s.incr("new", -2), -2);
        assert!(s.exists("new"));
        assert_eq!(s.keys("ne"), ["new"]);
        s.put("txt", "abc");
        assert_eq!(s.incr("txt", 1), 1, "non-numeric counts as 0");
        let st = s.stats();
        assert_eq!((st.hits, st.misses, st.max, st.count), (1, 1, 2, 2));
        assert!(st.evicted >= 2);
        assert_eq!(
            st.bytes,
            ("new".len() + "-2".len() + "txt".len() + "1".len()) as u64
        );
        assert!(s.del("txt"));
        assert!(!s.del("txt"));
        s.clear();
        assert_eq!(s.stats().count, 0);
        assert_eq!(s.stats().bytes, 0);
    }

    #[test]
    fn every_write_is_reported_but_no_eviction() {
        let seen = std::sync::Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
        let mut s = LruStore::new(1);
        let log = seen.clone();
        s.on_change(Box::new(move |c| {
            log.lock().push(match c {
                Change::Key(k) => k.to_string(),
                Change::All => "*".to_string(),
            })
        }));
        s.put("a", "1");
        s.put("b", "2"); // evicts a: not reported as a change of a
        s.incr("b", 1);
        s.del("gone");
        s.get("b");
        s.clear();
        assert_eq!(*seen.lock(), ["a", "b", "b", "gone", "*"]);
    }
}
