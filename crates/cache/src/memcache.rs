//! `-cache-type memcache`: the same cache operations kept in memcached (`-memcache-host`), every
//! key under `-cache-prefix`. memcached speaks a line protocol small enough to write here on tokio
//! (the async crates for it cover get/set but not `gets`/`cas` or the key dump this needs).
//!
//! How each operation maps onto memcached 1.6:
//! - keys are percent-encoded (space, control characters, `%` and non-ASCII bytes), so any cache
//!   key is a valid memcached key and `keys` gives back the original; an encoded key over
//!   memcached's 250 bytes is refused on write and a miss on read;
//! - `incr` keeps the local cache's rule (a missing or non-numeric value counts as 0, the sum
//!   saturates, negative values allowed) with a `gets`/`cas` loop: memcached's own `incr` refuses
//!   non-numeric values and stops `decr` at 0;
//! - `keys`, `clear` and the `count` of `stats` walk the keys with `lru_crawler metadump all`, so
//!   `clear` deletes only this prefix's keys, never the whole server (no `flush_all`);
//! - hits, misses, inserted and deleted are counters kept in memcached itself next to the data
//!   (`bkjs-cache-stats:PREFIX:NAME`, outside the prefix), bumped with `noreply` commands pipelined
//!   before the request they count, so they cost no round trip. memcached may evict them like any
//!   item: they are statistics, not data.
//!
//! Connections: a small pool of idle TCP connections per process; every call is bounded by
//! `-ipc-timeout` like the local cache, and a connection that failed or timed out is dropped.

use crate::error::CacheError;
use bkjs_base::config::Config;
use bkjs_ipc::CacheStats;
use parking_lot::Mutex;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

/// Bytes escaped in a memcached key: the protocol separates words with spaces and ends lines with
/// CR LF; `%` so the encoding can be undone. Non-ASCII bytes are always escaped.
const KEY_ESCAPES: &AsciiSet = &CONTROLS.add(b' ').add(b'%');

/// memcached's limit on a key's length.
const MAX_KEY: usize = 250;

/// Idle connections kept per process; more may be open at once, the rest are closed after use.
const MAX_IDLE: usize = 16;

/// Key walks a `clear` makes at most (see [`MemcacheCache::clear`]).
const CLEAR_ROUNDS: usize = 5;

/// `gets`/`cas` rounds an `incr` tries before it reports contention.
const MAX_CAS_ROUNDS: usize = 1000;

/// Keys deleted per pipelined batch in `clear`.
const DELETE_BATCH: usize = 500;

type Conn = BufStream<TcpStream>;

pub struct MemcacheCache {
    addr: String,
    /// The cache prefix, already encoded.
    prefix: String,
    /// `bkjs-cache-stats:PREFIX:`, encoded; the counters' names follow.
    stats_key: String,
    timeout: Duration,
    idle: Mutex<Vec<Conn>>,
}

fn unavailable(e: impl std::fmt::Display) -> CacheError {
    CacheError::Unavailable(format!("memcached: {e}"))
}

fn protocol(e: impl std::fmt::Display) -> CacheError {
    CacheError::Protocol(format!("memcached: {e}"))
}

/// A cache key as memcached stores it.
fn encode(key: &str) -> String {
    utf8_percent_encode(key, KEY_ESCAPES).to_string()
}

/// The cache key back from its stored form; `None` for a key this code did not write.
fn decode(stored: &str) -> Option<String> {
    percent_decode_str(stored)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// The local cache's reading of a stored value for `incr`.
fn as_count(v: &[u8]) -> i64 {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or(0)
}

/// One line of a reply, without its CR LF.
async fn line(c: &mut Conn) -> Result<String, CacheError> {
    let mut s = String::new();
    if c.read_line(&mut s).await.map_err(unavailable)? == 0 {
        return Err(unavailable("connection closed"));
    }
    let s = s.trim_end_matches(['\r', '\n']).to_string();
    if s.starts_with("SERVER_ERROR object too large") {
        return Err(CacheError::Refused(format!("memcached: {s}")));
    }
    if s.starts_with("SERVER_ERROR") {
        return Err(unavailable(s));
    }
    if s.starts_with("CLIENT_ERROR") || s == "ERROR" {
        return Err(protocol(s));
    }
    Ok(s)
}

/// One `VALUE key flags bytes [cas]` item of a retrieval reply, or `None` at `END`.
async fn item(c: &mut Conn) -> Result<Option<(String, Vec<u8>, Option<u64>)>, CacheError> {
    let head = line(c).await?;
    if head == "END" {
        return Ok(None);
    }
    let w: Vec<&str> = head.split(' ').collect();
    if w.len() < 4 || w[0] != "VALUE" {
        return Err(protocol(format!("unexpected reply {head:?}")));
    }
    let n: usize = w[3].parse().map_err(|_| protocol(&head))?;
    let cas = match w.get(4) {
        Some(s) => Some(s.parse().map_err(|_| protocol(&head))?),
        None => None,
    };
    let mut data = vec![0u8; n + 2];
    c.read_exact(&mut data).await.map_err(unavailable)?;
    if !data.ends_with(b"\r\n") {
        return Err(protocol("a value not followed by CR LF"));
    }
    data.truncate(n);
    Ok(Some((w[1].to_string(), data, cas)))
}

/// Writes a storage command: `VERB key 0 0 bytes [cas]` and the data.
async fn store(
    c: &mut Conn,
    verb: &str,
    key: &str,
    value: &[u8],
    cas: Option<u64>,
) -> Result<(), CacheError> {
    let head = match cas {
        Some(id) => format!("{verb} {key} 0 0 {} {id}\r\n", value.len()),
        None => format!("{verb} {key} 0 0 {}\r\n", value.len()),
    };
    c.write_all(head.as_bytes()).await.map_err(unavailable)?;
    c.write_all(value).await.map_err(unavailable)?;
    c.write_all(b"\r\n").await.map_err(unavailable)
}

impl MemcacheCache {
    pub fn new(cfg: &Config) -> Result<MemcacheCache, CacheError> {
        let addr = cfg.str("memcache-host").trim().to_string();
        if addr.is_empty() || addr.contains("://") {
            return Err(CacheError::Config(format!(
                "-memcache-host {addr:?}: expected HOST:PORT"
            )));
        }
        let addr = if addr.contains(':') {
            addr
        } else {
            format!("{addr}:11211")
        };
        let raw = cfg.str("cache-prefix");
        let prefix = encode(raw);
        let stats_key = encode(&format!("bkjs-cache-stats:{raw}:"));
        if stats_key.len() + "inserted".len() > MAX_KEY {
            return Err(CacheError::Config(format!(
                "-cache-prefix is too long for memcached keys ({} bytes encoded)",
                prefix.len()
            )));
        }
        Ok(MemcacheCache {
            addr,
            prefix,
            stats_key,
            timeout: cfg.duration("ipc-timeout"),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// The stored form of cache key `k`, or why memcached cannot hold it.
    fn key(&self, k: &str) -> Result<String, CacheError> {
        let full = format!("{}{}", self.prefix, encode(k));
        if full.len() > MAX_KEY {
            return Err(CacheError::Refused(format!(
                "key of {} bytes (encoded, with the prefix) is over memcached's {MAX_KEY}",
                full.len()
            )));
        }
        Ok(full)
    }

    /// Pipelined, unanswered: counter `name` += `n` (created at 0 first when missing).
    async fn count(&self, c: &mut Conn, name: &str, n: u64) -> Result<(), CacheError> {
        if n == 0 {
            return Ok(());
        }
        let k = format!("{}{name}", self.stats_key);
        let cmd = format!("add {k} 0 0 1 noreply\r\n0\r\nincr {k} {n} noreply\r\n");
        c.write_all(cmd.as_bytes()).await.map_err(unavailable)
    }

    /// Runs `f` on a connection (an idle one, or a new one), the whole call bounded by
    /// `-ipc-timeout`. The connection goes back to the idle pool only when `f` succeeded.
    async fn with<T>(
        &self,
        f: impl AsyncFnOnce(&mut Conn) -> Result<T, CacheError>,
    ) -> Result<T, CacheError> {
        let pooled = self.idle.lock().pop();
        let fut = async {
            let mut c = match pooled {
                Some(c) => c,
                None => {
                    let s = TcpStream::connect(&self.addr)
                        .await
                        .map_err(|e| unavailable(format!("{}: {e}", self.addr)))?;
                    // Requests are small and answered one at a time: no Nagle delay.
                    s.set_nodelay(true).map_err(unavailable)?;
                    BufStream::new(s)
                }
            };
            let r = f(&mut c).await;
            Ok::<_, CacheError>((r, c))
        };
        let (r, c) = tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| unavailable(format!("no reply within {:?}", self.timeout)))??;
        // A protocol error leaves the stream in an unknown place in the reply: drop it too.
        if r.is_ok() {
            let mut idle = self.idle.lock();
            if idle.len() < MAX_IDLE {
                idle.push(c);
            }
        }
        r
    }

    pub async fn get(&self, keys: &[String]) -> Result<Vec<Option<String>>, CacheError> {
        // Keys memcached cannot hold are misses.
        let stored: Vec<Option<String>> = keys.iter().map(|k| self.key(k).ok()).collect();
        let wanted: Vec<&str> = stored.iter().flatten().map(String::as_str).collect();
        let mut found = std::collections::HashMap::new();
        if !wanted.is_empty() {
            found = self
                .with(async |c| {
                    c.write_all(format!("get {}\r\n", wanted.join(" ")).as_bytes())
                        .await
                        .map_err(unavailable)?;
                    c.flush().await.map_err(unavailable)?;
                    let mut found = std::collections::HashMap::new();
                    while let Some((k, v, _)) = item(c).await? {
                        let v = String::from_utf8(v)
                            .map_err(|_| protocol(format!("value of {k} is not UTF-8")))?;
                        found.insert(k, v);
                    }
                    let hits = found.len() as u64;
                    self.count(c, "hits", hits).await?;
                    self.count(c, "misses", keys.len() as u64 - hits).await?;
                    c.flush().await.map_err(unavailable)?;
                    Ok(found)
                })
                .await?;
        } else if !keys.is_empty() {
            self.with(async |c| {
                self.count(c, "misses", keys.len() as u64).await?;
                c.flush().await.map_err(unavailable)
            })
            .await?;
        }
        Ok(stored
            .into_iter()
            .map(|k| k.and_then(|k| found.get(&k).cloned()))
            .collect())
    }

    pub async fn put(&self, k: &str, v: &str) -> Result<(), CacheError> {
        let key = self.key(k)?;
        self.with(async |c| {
            self.count(c, "inserted", 1).await?;
            store(c, "set", &key, v.as_bytes(), None).await?;
            c.flush().await.map_err(unavailable)?;
            match line(c).await?.as_str() {
                "STORED" => Ok(()),
                other => Err(protocol(format!("set answered {other:?}"))),
            }
        })
        .await
    }

    /// `delta` added to the value, with the local cache's reading of it.
    pub async fn incr(&self, k: &str, delta: i64) -> Result<i64, CacheError> {
        let key = self.key(k)?;
        self.with(async |c| {
            self.count(c, "inserted", 1).await?;
            for _ in 0..MAX_CAS_ROUNDS {
                c.write_all(format!("gets {key}\r\n").as_bytes())
                    .await
                    .map_err(unavailable)?;
                c.flush().await.map_err(unavailable)?;
                let old = item(c).await?;
                if old.is_some() && item(c).await?.is_some() {
                    return Err(protocol("gets of one key answered two values"));
                }
                let (new, verb, cas) = match &old {
                    Some((_, v, Some(cas))) => {
                        (as_count(v).saturating_add(delta), "cas", Some(*cas))
                    }
                    Some((_, _, None)) => return Err(protocol("gets answered no cas id")),
                    None => (delta, "add", None),
                };
                store(c, verb, &key, new.to_string().as_bytes(), cas).await?;
                c.flush().await.map_err(unavailable)?;
                match line(c).await?.as_str() {
                    "STORED" => return Ok(new),
                    // Another writer came first (changed, added or deleted it): read again.
                    "EXISTS" | "NOT_STORED" | "NOT_FOUND" => continue,
                    other => return Err(protocol(format!("{verb} answered {other:?}"))),
                }
            }
            Err(unavailable(format!(
                "incr of {k} lost {MAX_CAS_ROUNDS} races in a row"
            )))
        })
        .await
    }

    /// Deletes stored keys in pipelined batches; answers how many existed.
    async fn del_stored(&self, keys: &[String]) -> Result<u64, CacheError> {
        let mut deleted = 0;
        for chunk in keys.chunks(DELETE_BATCH) {
            deleted += self
                .with(async |c| {
                    for k in chunk {
                        c.write_all(format!("delete {k}\r\n").as_bytes())
                            .await
                            .map_err(unavailable)?;
                    }
                    c.flush().await.map_err(unavailable)?;
                    let mut n = 0;
                    for _ in chunk {
                        match line(c).await?.as_str() {
                            "DELETED" => n += 1,
                            "NOT_FOUND" => {}
                            other => return Err(protocol(format!("delete answered {other:?}"))),
                        }
                    }
                    self.count(c, "deleted", n).await?;
                    c.flush().await.map_err(unavailable)?;
                    Ok(n)
                })
                .await?;
        }
        Ok(deleted)
    }

    pub async fn del(&self, k: &str) -> Result<(), CacheError> {
        // A key memcached cannot hold was never stored.
        match self.key(k) {
            Ok(key) => self.del_stored(&[key]).await.map(|_| ()),
            Err(_) => Ok(()),
        }
    }

    pub async fn exists(&self, k: &str) -> Result<bool, CacheError> {
        let Ok(key) = self.key(k) else {
            return Ok(false);
        };
        self.with(async |c| {
            // Meta get without flags: HD when the item is there, EN when not; no value sent.
            c.write_all(format!("mg {key}\r\n").as_bytes())
                .await
                .map_err(unavailable)?;
            c.flush().await.map_err(unavailable)?;
            match line(c).await?.as_str() {
                "HD" => Ok(true),
                "EN" => Ok(false),
                other => Err(protocol(format!("mg answered {other:?}"))),
            }
        })
        .await
    }

    /// One `version`: the server answers within `-ipc-timeout`.
    pub async fn ping(&self) -> Result<(), CacheError> {
        self.with(async |c| {
            c.write_all(b"version\r\n").await.map_err(unavailable)?;
            c.flush().await.map_err(unavailable)?;
            let v = line(c).await?;
            if v.starts_with("VERSION ") {
                Ok(())
            } else {
                Err(protocol(format!("version answered {v:?}")))
            }
        })
        .await
    }

    /// Stored keys under the cache prefix that start with `prefix` (stored form), from
    /// memcached's key dump.
    async fn scan(&self, prefix: &str) -> Result<Vec<String>, CacheError> {
        let start = format!("{}{}", self.prefix, encode(prefix));
        self.with(async |c| {
            // memcached refuses a metadump while earlier commands on the connection are still
            // being processed (the pipelined `noreply` counters): a meta no-op first, and its
            // MN once everything before it is done.
            c.write_all(b"mn\r\n").await.map_err(unavailable)?;
            c.flush().await.map_err(unavailable)?;
            loop {
                let mut l = String::new();
                if c.read_line(&mut l).await.map_err(unavailable)? == 0 {
                    return Err(unavailable("connection closed"));
                }
                if l.trim_end() == "MN" {
                    break;
                }
                tracing::debug!("memcached: before metadump: {}", l.trim_end());
            }
            c.write_all(b"lru_crawler metadump all\r\n")
                .await
                .map_err(unavailable)?;
            c.flush().await.map_err(unavailable)?;
            let mut out = Vec::new();
            loop {
                let l = line(c).await?;
                if l == "END" {
                    return Ok(out);
                }
                if l.starts_with("BUSY") {
                    return Err(unavailable(format!(
                        "the key dump is busy ({l}); try again"
                    )));
                }
                // `key=<uri-encoded key> exp=... la=... ...`
                let Some(k) = l.strip_prefix("key=").and_then(|r| r.split(' ').next()) else {
                    return Err(protocol(format!("metadump line {l:?}")));
                };
                if let Some(k) = decode(k).filter(|k| k.starts_with(&start)) {
                    out.push(k);
                }
            }
        })
        .await
    }

    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>, CacheError> {
        let stored = self.scan(prefix).await?;
        Ok(stored
            .iter()
            .filter_map(|k| decode(&k[self.prefix.len()..]))
            .collect())
    }

    /// Deletes every key under the cache prefix (never the rest of the server). The metadump is
    /// not a snapshot: an item memcached's LRU maintainer moves between its lists while the
    /// crawler walks them can be missed, so the walk is repeated until one finds no key (at
    /// most [`CLEAR_ROUNDS`] walks).
    pub async fn clear(&self) -> Result<(), CacheError> {
        for _ in 0..CLEAR_ROUNDS {
            let keys = self.scan("").await?;
            if keys.is_empty() {
                return Ok(());
            }
            self.del_stored(&keys).await?;
        }
        Ok(())
    }

    /// The counters shared by every process using this prefix, and the number of keys under it.
    pub async fn stats(&self) -> Result<CacheStats, CacheError> {
        let count = self.scan("").await?.len() as u64;
        let names = ["inserted", "deleted", "hits", "misses"];
        let counters = self
            .with(async |c| {
                let keys: Vec<String> = names
                    .iter()
                    .map(|n| format!("{}{n}", self.stats_key))
                    .collect();
                c.write_all(format!("get {}\r\n", keys.join(" ")).as_bytes())
                    .await
                    .map_err(unavailable)?;
                c.flush().await.map_err(unavailable)?;
                let mut h = std::collections::HashMap::new();
                while let Some((k, v, _)) = item(c).await? {
                    h.insert(k, as_count(&v).max(0) as u64);
                }
                Ok(names
                    .iter()
                    .map(|n| {
                        h.get(&format!("{}{n}", self.stats_key))
                            .copied()
                            .unwrap_or(0)
                    })
                    .collect::<Vec<u64>>())
            })
            .await?;
        Ok(CacheStats {
            inserted: counters[0],
            deleted: counters[1],
            hits: counters[2],
            misses: counters[3],
            count,
            ..CacheStats::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_the_encoding() {
        for k in ["a", "TABLE|x y|1", "50%", "naïve\r\nkey", ""] {
            let e = encode(k);
            assert!(!e.contains([' ', '\r', '\n']), "{e}");
            assert!(e.is_ascii(), "{e}");
            assert_eq!(decode(&e).as_deref(), Some(k));
        }
        // A prefix of the key encodes to a prefix of the stored key.
        assert!(encode("ab c d").starts_with(&encode("ab c")));
    }

    #[test]
    fn counts_read_like_the_local_cache() {
        assert_eq!(as_count(b"12"), 12);
        assert_eq!(as_count(b" -3 "), -3);
        assert_eq!(as_count(b"x"), 0);
        assert_eq!(as_count(&[0xff]), 0);
    }
}
