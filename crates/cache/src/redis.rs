//! `-cache-type redis`: the same cache operations kept in Redis, every key under `-cache-prefix`.
//! One multiplexed, self-reconnecting connection per worker; every call is bounded by
//! `-ipc-timeout` like the local cache.

use crate::error::CacheError;
use bkjs_base::config::Config;
use bkjs_ipc::CacheStats;
use redis::aio::ConnectionManager;
use std::time::Duration;
use tokio::sync::OnceCell;

/// incr with the local cache's rules: a missing or non-numeric value counts as 0.
/// KEYS[1] is the key, KEYS[2] the stats hash.
const INCR: &str = r#"
local v = tonumber(redis.call('GET', KEYS[1])) or 0
v = math.floor(v) + tonumber(ARGV[1])
redis.call('SET', KEYS[1], v)
redis.call('HINCRBY', KEYS[2], 'inserted', 1)
return v
"#;

/// MGET counting hits and misses in the stats hash (the last key), shared by every worker.
const GET: &str = r#"
local stats = table.remove(KEYS)
local vals = redis.call('MGET', unpack(KEYS))
local hits = 0
for i = 1, #KEYS do
  if vals[i] then hits = hits + 1 end
end
if hits > 0 then redis.call('HINCRBY', stats, 'hits', hits) end
if #KEYS > hits then redis.call('HINCRBY', stats, 'misses', #KEYS - hits) end
return vals
"#;

/// DEL counting deletions; KEYS[#KEYS] is the stats hash.
const DEL: &str = r#"
local stats = table.remove(KEYS)
local n = redis.call('DEL', unpack(KEYS))
if n > 0 then redis.call('HINCRBY', stats, 'deleted', n) end
return n
"#;

pub struct RedisCache {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    prefix: String,
    /// Hash of the counters, outside the prefix so `keys` and `clear` never touch it.
    stats_key: String,
    timeout: Duration,
    get: redis::Script,
    del: redis::Script,
    incr: redis::Script,
}

fn unavailable(e: impl std::fmt::Display) -> CacheError {
    CacheError::Unavailable(format!("redis: {e}"))
}

/// Escapes glob characters so a prefix matches only itself in SCAN MATCH.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl RedisCache {
    pub fn new(cfg: &Config) -> Result<RedisCache, CacheError> {
        let host = cfg.str("redis-host");
        let url = if host.contains("://") {
            host.to_string()
        } else {
            format!("redis://{host}")
        };
        let prefix = cfg.str("cache-prefix").to_string();
        Ok(RedisCache {
            client: redis::Client::open(url.as_str())
                .map_err(|e| CacheError::Unavailable(format!("-redis-host {host}: {e}")))?,
            conn: OnceCell::new(),
            stats_key: format!("bkjs-cache-stats:{prefix}"),
            prefix,
            timeout: cfg.duration("ipc-timeout"),
            get: redis::Script::new(GET),
            del: redis::Script::new(DEL),
            incr: redis::Script::new(INCR),
        })
    }

    async fn conn(&self) -> Result<ConnectionManager, CacheError> {
        let c = self
            .conn
            .get_or_try_init(|| async {
                tokio::time::timeout(
                    self.timeout * 4,
                    ConnectionManager::new(self.client.clone()),
                )
                .await
                .map_err(|_| unavailable("connect timed out"))?
                .map_err(unavailable)
            })
            .await?;
        Ok(c.clone())
    }

    async fn bounded<T>(
        &self,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, CacheError> {
        tokio::time::timeout(self.timeout, f)
            .await
            .map_err(|_| unavailable(format!("no reply within {:?}", self.timeout)))?
            .map_err(unavailable)
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, CacheError> {
        let mut c = self.conn().await?;
        self.bounded(cmd.query_async(&mut c)).await
    }

    fn key(&self, k: &str) -> String {
        format!("{}{k}", self.prefix)
    }

    pub async fn get(&self, keys: &[String]) -> Result<Vec<Option<String>>, CacheError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.get.prepare_invoke();
        for k in keys {
            inv.key(self.key(k));
        }
        inv.key(&self.stats_key);
        let mut c = self.conn().await?;
        self.bounded(inv.invoke_async(&mut c)).await
    }

    pub async fn put(&self, k: &str, v: &str) -> Result<(), CacheError> {
        let mut c = self.conn().await?;
        let mut p = redis::pipe();
        p.atomic()
            .cmd("SET")
            .arg(self.key(k))
            .arg(v)
            .ignore()
            .cmd("HINCRBY")
            .arg(&self.stats_key)
            .arg("inserted")
            .arg(1)
            .ignore();
        self.bounded(p.query_async::<()>(&mut c)).await
    }

    pub async fn incr(&self, k: &str, delta: i64) -> Result<i64, CacheError> {
        let mut c = self.conn().await?;
        let mut inv = self.incr.key(self.key(k));
        inv.key(&self.stats_key).arg(delta);
        self.bounded(inv.invoke_async(&mut c)).await
    }

    async fn del_keys(&self, keys: &[String]) -> Result<u64, CacheError> {
        let mut inv = self.del.prepare_invoke();
        for k in keys {
            inv.key(k);
        }
        inv.key(&self.stats_key);
        let mut c = self.conn().await?;
        self.bounded(inv.invoke_async(&mut c)).await
    }

    /// One PING: the server answers within `-ipc-timeout`.
    pub async fn ping(&self) -> Result<(), CacheError> {
        let pong: String = self.run(&redis::cmd("PING")).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(unavailable(format!("PING answered {pong:?}")))
        }
    }

    pub async fn del(&self, k: &str) -> Result<(), CacheError> {
        self.del_keys(&[self.key(k)]).await.map(|_| ())
    }

    pub async fn exists(&self, k: &str) -> Result<bool, CacheError> {
        let n: u64 = self.run(redis::cmd("EXISTS").arg(self.key(k))).await?;
        Ok(n > 0)
    }

    /// Full keys under the cache prefix that start with `prefix`.
    async fn scan(&self, prefix: &str) -> Result<Vec<String>, CacheError> {
        let pattern = format!("{}*", glob_escape(&self.key(prefix)));
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .run(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(500),
                )
                .await?;
            out.extend(batch);
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
    }

    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>, CacheError> {
        let keys = self.scan(prefix).await?;
        Ok(keys
            .into_iter()
            .map(|k| {
                k.strip_prefix(&self.prefix)
                    .map(str::to_string)
                    .unwrap_or(k)
            })
            .collect())
    }

    /// Deletes every key under the cache prefix (never the whole database of others).
    pub async fn clear(&self) -> Result<(), CacheError> {
        let keys = self.scan("").await?;
        for chunk in keys.chunks(500) {
            self.del_keys(chunk).await?;
        }
        Ok(())
    }

    /// Counters shared by every worker using this prefix, and the number of keys under it.
    pub async fn stats(&self) -> Result<CacheStats, CacheError> {
        let count = self.scan("").await?.len() as u64;
        let h: std::collections::HashMap<String, u64> =
            self.run(redis::cmd("HGETALL").arg(&self.stats_key)).await?;
        let f = |n: &str| h.get(n).copied().unwrap_or(0);
        Ok(CacheStats {
            inserted: f("inserted"),
            deleted: f("deleted"),
            hits: f("hits"),
            misses: f("misses"),
            count,
            ..CacheStats::default()
        })
    }
}
