//! The cache: one LRU per machine in the server process ([`LruStore`]), reached by web workers
//! over IPC, kept coherent across machines by [`Peers`]; or Redis (`-cache-type redis`), or
//! memcached (`-cache-type memcache`). Web code
//! sees only [`Cache`], whose reads treat any failure as a miss and whose writes report errors.

#![deny(unsafe_op_in_unsafe_fn, rust_2018_idioms)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod error;
mod memcache;
mod peers;
mod redis;
mod store;

pub use error::CacheError;
pub use store::{CacheStats, Change, ChangeListener};

use peers::{PeerOp, Peers};
use store::LruStore;

use bkjs_base::config::{Config, Kind, Param};
use bkjs_ipc::{self as ipc, Reply, Request};
use parking_lot::Mutex;
use std::sync::Arc;

/// Cache parameters.
pub static PARAMS: &[Param] = &[
    Param::new("lru-max", Kind::Int { min: 1, max: 1 << 40 }, "100000", "entries of the server's LRU cache"),
    Param::new("cache-type", Kind::Enum(&["local", "redis", "memcache"]), "local", "where the cache lives: the server's LRU (local), Redis (-redis-host) or memcached (-memcache-host)"),
    Param::new("cache-host", Kind::List, "", "peer servers (host or host:port) whose LRU caches are kept coherent with this one; may include this server itself; needs a cluster secret (-cluster-secret)"),
    Param::new("cache-port", Kind::Int { min: 1, max: 65535 }, "20194", "TCP port of the peer cache bus"),
    Param::new("cache-bind", Kind::String, "", "address the peer cache bus listens on; empty: 127.0.0.1 when every -cache-host entry is a loopback address, else 0.0.0.0"),
    Param::new("cache-peer-heartbeat", Kind::Duration, "1s", "how often a server tells its peers its last sequence number; bounds how long a lost broadcast can go unnoticed"),
    Param::new("cache-near-size", Kind::Size, "4MB", "bytes of values each web worker keeps of what it read from the server's LRU, kept coherent by invalidations the server pushes; 0 = every read crosses IPC"),
    Param::new("cache-prefix", Kind::String, "", "prefix of every key stored in Redis or memcached"),
    Param::new("memcache-host", Kind::String, "127.0.0.1:11211", "memcached server (HOST:PORT) of -cache-type memcache"),
];

/// The cache as a web worker sees it.
#[derive(Clone)]
pub enum Cache {
    /// The server's LRU, over IPC.
    Local(ipc::Client),
    Redis(Arc<redis::RedisCache>),
    Memcache(Arc<memcache::MemcacheCache>),
}

impl Cache {
    /// The cache `-cache-type` selects; `ipc` reaches the server.
    pub fn new(cfg: &Config, ipc: ipc::Client) -> Result<Cache, CacheError> {
        match cfg.str("cache-type") {
            "redis" => Ok(Cache::Redis(Arc::new(redis::RedisCache::new(cfg)?))),
            "memcache" => Ok(Cache::Memcache(Arc::new(memcache::MemcacheCache::new(
                cfg,
            )?))),
            _ => Ok(Cache::Local(ipc)),
        }
    }

    async fn ask(ipc: &ipc::Client, msg: Request) -> Result<Reply, CacheError> {
        Self::answer(ipc.request(msg).await)
    }

    fn answer(r: Result<Reply, ipc::IpcError>) -> Result<Reply, CacheError> {
        match r {
            Ok(Reply::Error { message }) => Err(CacheError::Protocol(message)),
            Ok(m) => Ok(m),
            Err(e) => Err(CacheError::Unavailable(e.to_string())),
        }
    }

    /// The value of one key; a failure is logged and reads as a miss. Shared: a near-cache hit
    /// hands out the value it holds, and the same value read again is the same `Arc`.
    pub async fn get_one(&self, key: &str) -> Option<Arc<str>> {
        let r = match self {
            Cache::Local(ipc) => ipc.cache_get_one(key).await.map_err(|e| match e {
                ipc::IpcError::Decode(m) => CacheError::Protocol(m),
                e => CacheError::Unavailable(e.to_string()),
            }),
            Cache::Redis(r) => r
                .get(std::slice::from_ref(&key.to_string()))
                .await
                .map(|mut v| v.pop().flatten().map(Arc::from)),
            Cache::Memcache(m) => m
                .get(std::slice::from_ref(&key.to_string()))
                .await
                .map(|mut v| v.pop().flatten().map(Arc::from)),
        };
        r.unwrap_or_else(|e| {
            tracing::warn!("cache get: {e}; treated as a miss");
            None
        })
    }

    /// Values of `keys`; a failure is logged and reads as misses.
    pub async fn get(&self, keys: Vec<String>) -> Vec<Option<String>> {
        let n = keys.len();
        let r = match self {
            Cache::Local(ipc) => match Self::answer(ipc.cache_get(keys).await) {
                Ok(Reply::Values { values }) if values.len() == n => Ok(values),
                Ok(other) => Err(CacheError::Protocol(format!("{other:?}"))),
                Err(e) => Err(e),
            },
            Cache::Redis(r) => r.get(&keys).await,
            Cache::Memcache(m) => m.get(&keys).await,
        };
        r.unwrap_or_else(|e| {
            tracing::warn!("cache get: {e}; treated as a miss");
            vec![None; n]
        })
    }

    pub async fn put(&self, key: String, value: String) -> Result<(), CacheError> {
        match self {
            Cache::Local(ipc) => expect_ok(Self::ask(ipc, Request::CachePut { key, value }).await),
            Cache::Redis(r) => r.put(&key, &value).await,
            Cache::Memcache(m) => m.put(&key, &value).await,
        }
    }

    pub async fn incr(&self, key: String, delta: i64) -> Result<i64, CacheError> {
        match self {
            Cache::Local(ipc) => match Self::ask(ipc, Request::CacheIncr { key, delta }).await? {
                Reply::Int { value } => Ok(value),
                other => Err(CacheError::Protocol(format!("{other:?}"))),
            },
            Cache::Redis(r) => r.incr(&key, delta).await,
            Cache::Memcache(m) => m.incr(&key, delta).await,
        }
    }

    pub async fn del(&self, key: String) -> Result<(), CacheError> {
        match self {
            Cache::Local(ipc) => expect_ok(Self::ask(ipc, Request::CacheDel { key }).await),
            Cache::Redis(r) => r.del(&key).await,
            Cache::Memcache(m) => m.del(&key).await,
        }
    }

    pub async fn clear(&self) -> Result<(), CacheError> {
        match self {
            Cache::Local(ipc) => expect_ok(Self::ask(ipc, Request::CacheClear).await),
            Cache::Redis(r) => r.clear().await,
            Cache::Memcache(m) => m.clear().await,
        }
    }

    pub async fn keys(&self, prefix: String) -> Result<Vec<String>, CacheError> {
        match self {
            Cache::Local(ipc) => match Self::ask(ipc, Request::CacheKeys { prefix }).await? {
                Reply::Keys { keys } => Ok(keys),
                other => Err(CacheError::Protocol(format!("{other:?}"))),
            },
            Cache::Redis(r) => r.keys(&prefix).await,
            Cache::Memcache(m) => m.keys(&prefix).await,
        }
    }

    pub async fn exists(&self, key: String) -> Result<bool, CacheError> {
        match self {
            Cache::Local(ipc) => match Self::ask(ipc, Request::CacheExists { key }).await? {
                Reply::Bool { value } => Ok(value),
                other => Err(CacheError::Protocol(format!("{other:?}"))),
            },
            Cache::Redis(r) => r.exists(&key).await,
            Cache::Memcache(m) => m.exists(&key).await,
        }
    }

    /// Starts this worker's cache client over (`/system/cache/init`): forgets what it holds
    /// locally (the near cache) and checks the backend with one round trip. Answers the type.
    pub async fn init(&self) -> Result<&'static str, CacheError> {
        match self {
            Cache::Local(ipc) => {
                ipc.near_reset();
                self.stats().await.map(|_| "local")
            }
            Cache::Redis(r) => r.ping().await.map(|()| "redis"),
            Cache::Memcache(m) => m.ping().await.map(|()| "memcache"),
        }
    }

    pub async fn stats(&self) -> Result<CacheStats, CacheError> {
        match self {
            Cache::Local(ipc) => match Self::ask(ipc, Request::CacheStats).await? {
                Reply::Stats { stats } => Ok(stats),
                other => Err(CacheError::Protocol(format!("{other:?}"))),
            },
            Cache::Redis(r) => r.stats().await,
            Cache::Memcache(m) => m.stats().await,
        }
    }
}

fn expect_ok(r: Result<Reply, CacheError>) -> Result<(), CacheError> {
    match r? {
        Reply::Ok => Ok(()),
        other => Err(CacheError::Protocol(format!("{other:?}"))),
    }
}

/// The server's side: the LRU plus the peer bus that spreads every local write.
#[derive(Clone)]
pub struct Server {
    store: Arc<Mutex<LruStore>>,
    peers: Option<Arc<Peers>>,
}

impl Server {
    /// The LRU of `-lru-max` entries, and the peer bus when `-cache-host` names peers;
    /// `listener` hears of every write (the hub's pushes to the workers' near caches).
    pub fn start(cfg: &Config, listener: Option<ChangeListener>) -> Result<Server, CacheError> {
        let mut lru = LruStore::new(cfg.int("lru-max") as usize);
        if let Some(l) = listener {
            lru.on_change(l);
        }
        let store = Arc::new(Mutex::new(lru));
        let peers = if cfg.list("cache-host").is_empty() || cfg.str("cache-type") != "local" {
            None
        } else {
            Some(Arc::new(Peers::start(cfg, store.clone())?))
        };
        Ok(Server { store, peers })
    }

    /// Closes the peer bus and frees its port (an orphaned server making way for its successor);
    /// the LRU keeps answering this server's own workers.
    pub fn close_peers(&self) {
        if let Some(p) = &self.peers {
            p.close();
        }
    }

    fn broadcast(&self, op: PeerOp) {
        if let Some(p) = &self.peers {
            p.broadcast(op);
        }
    }

    /// Answers a cache message from a worker; `None` when the message is not about the cache.
    pub fn handle(&self, msg: &Request) -> Option<Reply> {
        let mut s = self.store.lock();
        Some(match msg {
            Request::CacheGet { keys } => Reply::Values {
                values: keys.iter().map(|k| s.get(k)).collect(),
            },
            Request::CachePut { key, value } => {
                s.put(key, value);
                drop(s);
                self.broadcast(PeerOp::Put(key.clone(), value.clone()));
                Reply::Ok
            }
            Request::CacheIncr { key, delta } => {
                let value = s.incr(key, *delta);
                drop(s);
                self.broadcast(PeerOp::Incr(key.clone(), *delta));
                Reply::Int { value }
            }
            Request::CacheDel { key } => {
                s.del(key);
                drop(s);
                self.broadcast(PeerOp::Del(key.clone()));
                Reply::Ok
            }
            Request::CacheClear => {
                s.clear();
                drop(s);
                self.broadcast(PeerOp::Clear);
                Reply::Ok
            }
            Request::CacheKeys { prefix } => Reply::Keys {
                keys: s.keys(prefix),
            },
            Request::CacheExists { key } => Reply::Bool {
                value: s.exists(key),
            },
            Request::CacheStats => Reply::Stats { stats: s.stats() },
            Request::FaultDropBroadcast => {
                drop(s);
                match &self.peers {
                    Some(p) if bkjs_base::faults::enabled() => {
                        p.drop_next();
                        Reply::Ok
                    }
                    _ => Reply::Error {
                        message: "fault switches are disabled".into(),
                    },
                }
            }
            _ => return None,
        })
    }
}
