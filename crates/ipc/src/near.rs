//! A web worker's near cache: the values this worker read from the server's LRU, kept so that a
//! repeated read costs no IPC round trip, and kept coherent by the invalidations the server
//! pushes on the same IPC stream as its replies.
//!
//! # Why it cannot serve a stale value
//! The server pushes `Invalidate` for every key its LRU changes (a worker's write, a peer's
//! broadcast, a resync clear) to every worker's socket *before* it answers the write, and a worker
//! reads everything waiting on its socket before it answers from this cache. So a read that
//! follows a completed write, on any worker of the machine, finds the invalidation already
//! applied. A read reply is kept only when no invalidation arrived while the read was in flight
//! (the server may have read the value before a write it then invalidated), and nothing is kept
//! while the IPC link is down: a worker that lost the server starts again empty. Across machines
//! the bound of the peer bus applies unchanged (README, "Between machines").
//!
//! The cache is bounded by bytes (keys plus values, `-cache-near-size`); 0 turns it off.

use bkjs_base::metrics::{Counter, Registry};
use lru::LruCache;
use std::sync::Arc;

/// The near cache of one web worker.
pub(crate) struct NearCache {
    /// Shared values: a hit hands out the `Arc`, not a copy, and a caller that keeps what it
    /// derived from a value (the DB's parsed rows) knows it by the pointer.
    lru: LruCache<String, Arc<str>>,
    /// Largest sum of key and value lengths held; 0 = disabled.
    budget: usize,
    bytes: usize,
    /// Bumped by every invalidation and by a lost link: a read reply is kept only when the epoch
    /// is the one seen when its request was sent.
    epoch: u64,
    /// The link to the server is up; while it is down nothing is kept or answered.
    live: bool,
    hits: Arc<Counter>,
    misses: Arc<Counter>,
    invalidations: Arc<Counter>,
}

impl std::fmt::Debug for NearCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NearCache")
            .field("entries", &self.lru.len())
            .field("bytes", &self.bytes)
            .field("budget", &self.budget)
            .field("epoch", &self.epoch)
            .field("live", &self.live)
            .finish()
    }
}

impl NearCache {
    /// A near cache of at most `budget` bytes (0: disabled, every read goes to the server).
    pub fn new(budget: usize) -> NearCache {
        let r = Registry::global();
        NearCache {
            lru: LruCache::unbounded(),
            budget,
            bytes: 0,
            epoch: 0,
            live: false,
            hits: r.counter("cache.near_hits"),
            misses: r.counter("cache.near_misses"),
            invalidations: r.counter("cache.near_invalidations"),
        }
    }

    pub fn enabled(&self) -> bool {
        self.budget > 0
    }

    /// The value of `key` when it is held ([`NearCache::lookup`] for one key, without
    /// allocating a list); `None` sends the read to the server.
    pub(crate) fn lookup_one(&mut self, key: &str) -> Option<Arc<str>> {
        if !self.live {
            return None;
        }
        match self.lru.get(key) {
            Some(v) => {
                self.hits.add(1);
                Some(v.clone())
            }
            None => {
                self.misses.add(1);
                None
            }
        }
    }

    /// The values of all `keys` when every one is held; `None` sends the read to the server.
    pub fn lookup(&mut self, keys: &[String]) -> Option<Vec<Option<String>>> {
        if !self.live || keys.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            match self.lru.get(k.as_str()) {
                Some(v) => out.push(Some(v.to_string())),
                None => {
                    self.misses.add(1);
                    return None;
                }
            }
        }
        self.hits.add(1);
        Some(out)
    }

    /// The epoch to hand to [`NearCache::fill`] with the reply of a read sent now.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Keeps what the server answered for `keys`, unless something was invalidated since the
    /// read was sent at `epoch` (or the link is down). Misses are not kept.
    pub(crate) fn fill(&mut self, epoch: u64, keys: &[String], values: &[Option<String>]) {
        if !self.live || epoch != self.epoch || !self.enabled() {
            return;
        }
        for (k, v) in keys.iter().zip(values) {
            let Some(v) = v else { continue };
            let size = k.len() + v.len();
            if size > self.budget / 4 {
                continue; // one value must not push out everything else
            }
            if let Some(old) = self.lru.put(k.clone(), Arc::from(v.as_str())) {
                self.bytes -= k.len() + old.len();
            }
            self.bytes += size;
            while self.bytes > self.budget {
                match self.lru.pop_lru() {
                    Some((k, v)) => self.bytes -= k.len() + v.len(),
                    None => break,
                }
            }
        }
    }

    /// The server changed these keys.
    pub fn invalidate(&mut self, keys: &[String]) {
        self.epoch += 1;
        self.invalidations.add(1);
        for k in keys {
            if let Some(v) = self.lru.pop(k.as_str()) {
                self.bytes -= k.len() + v.len();
            }
        }
    }

    /// The server cleared its cache (or may have changed anything).
    pub(crate) fn invalidate_all(&mut self) {
        self.epoch += 1;
        self.invalidations.add(1);
        self.lru.clear();
        self.bytes = 0;
    }

    /// The link to the server came up (`true`) or went down (`false`); both empty the cache.
    pub(crate) fn set_live(&mut self, live: bool) {
        self.invalidate_all();
        self.live = live;
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lru.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.lru.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn holds_only_what_no_invalidation_overtook() {
        let mut n = NearCache::new(1024);
        let k = keys(&["a", "b"]);
        n.fill(n.epoch(), &k, &[Some("1".into()), Some("2".into())]);
        assert_eq!(n.lookup(&k), None, "nothing is kept while the link is down");
        n.set_live(true);
        let e = n.epoch();
        n.fill(e, &k, &[Some("1".into()), None]);
        assert_eq!(n.lookup(&keys(&["a"])), Some(vec![Some("1".into())]));
        assert_eq!(n.lookup(&k), None, "a miss is not kept");
        // A read in flight while a key changed must not be kept.
        let e = n.epoch();
        n.invalidate(&keys(&["zzz"]));
        n.fill(e, &keys(&["b"]), &[Some("old".into())]);
        assert_eq!(n.lookup(&keys(&["b"])), None);
        n.invalidate(&keys(&["a"]));
        assert_eq!(n.lookup(&keys(&["a"])), None);
        n.fill(n.epoch(), &keys(&["a"]), &[Some("2".into())]);
        n.invalidate_all();
        assert!(n.is_empty());
        n.fill(n.epoch(), &keys(&["a"]), &[Some("3".into())]);
        n.set_live(false);
        assert!(n.is_empty());
        assert_eq!(n.lookup(&keys(&["a"])), None);
    }

    #[test]
    fn bounded_by_bytes_and_disabled_at_zero() {
        let mut n = NearCache::new(48);
        n.set_live(true);
        for i in 0..10 {
            let k = format!("k{i}");
            n.fill(n.epoch(), &[k], &[Some("123456789".into())]);
        }
        assert!(n.bytes <= 48 && n.len() == 4, "{n:?}");
        assert_eq!(
            n.lookup(&keys(&["k9"])),
            Some(vec![Some("123456789".into())])
        );
        assert_eq!(n.lookup(&keys(&["k0"])), None, "the oldest went first");
        n.fill(n.epoch(), &keys(&["big"]), &[Some("x".repeat(12))]);
        assert_eq!(n.lookup(&keys(&["big"])), None, "too large for the budget");
        let mut off = NearCache::new(0);
        off.set_live(true);
        off.fill(off.epoch(), &keys(&["a"]), &[Some("1".into())]);
        assert_eq!(off.lookup(&keys(&["a"])), None);
    }
}
