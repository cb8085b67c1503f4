//! The messages of worker IPC, typed by purpose: what a worker asks ([`Request`]), what the
//! server answers ([`Reply`]) and what the server pushes unasked ([`Push`]). All three are
//! JSON objects tagged by `op`, and no two share an `op`, so a frame decodes as the one type its
//! direction allows (see docs/ipc.md).

use serde::{Deserialize, Serialize};

/// A worker's request to the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// The worker accepts connections.
    Ready {
        pid: u32,
    },
    /// The worker is alive: requests served so far and resident memory in bytes.
    Heartbeat {
        pid: u32,
        requests: u64,
        rss: u64,
    },
    /// The worker asks for a rolling restart of all web workers (`/system/restart`).
    Restart {
        pid: u32,
    },
    /// A worker's metrics, cumulative since it started (sent every few seconds).
    Metrics {
        pid: u32,
        snapshot: bkjs_base::metrics::Snapshot,
    },
    /// The master's metrics (the job queue's `jobs.*`), cumulative since it started (sent every
    /// few seconds); merged into the machine view without counting the master as a worker.
    MasterMetrics {
        pid: u32,
        snapshot: bkjs_base::metrics::Snapshot,
    },
    /// The machine-wide figures of `/system/stats` (JSON) or `/metrics` (Prometheus text);
    /// answered with [`Reply::Text`].
    SystemStats {
        prometheus: bool,
    },
    /// Cache: values of one or more keys (`None` for a miss); answered with [`Reply::Values`].
    CacheGet {
        keys: Vec<String>,
    },
    CachePut {
        key: String,
        value: String,
    },
    /// Adds `delta` (missing or non-numeric = 0); answered with [`Reply::Int`].
    CacheIncr {
        key: String,
        delta: i64,
    },
    CacheDel {
        key: String,
    },
    CacheClear,
    /// Keys starting with `prefix`; answered with [`Reply::Keys`].
    CacheKeys {
        prefix: String,
    },
    /// Answered with [`Reply::Bool`].
    CacheExists {
        key: String,
    },
    /// Answered with [`Reply::Stats`].
    CacheStats,
    /// Test-only fault: the server skips sending its next peer broadcast (debug builds with
    /// `BKJS_TEST_FAULTS=1` only).
    FaultDropBroadcast,
}

/// The server's answer to one [`Request`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Reply {
    /// Done; nothing to return.
    Ok,
    Values {
        values: Vec<Option<String>>,
    },
    Int {
        value: i64,
    },
    Bool {
        value: bool,
    },
    Keys {
        keys: Vec<String>,
    },
    Stats {
        stats: CacheStats,
    },
    Text {
        text: String,
    },
    /// The server could not do what was asked.
    Error {
        message: String,
    },
}

/// What the server pushes to every worker, never as a reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Push {
    /// These keys changed; drop them from near caches.
    Invalidate { keys: Vec<String> },
    /// The server's whole cache was cleared (or may have changed).
    InvalidateAll,
}

/// Counters of a cache, local or remote.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheStats {
    pub inserted: u64,
    pub deleted: u64,
    pub evicted: u64,
    pub hits: u64,
    pub misses: u64,
    pub max: u64,
    pub count: u64,
    /// Sum of the lengths of keys and values held.
    pub bytes: u64,
    /// Whole-cache clears after a lost broadcast (sequence gap) was detected.
    #[serde(default)]
    pub resyncs: u64,
    /// Whole-cache clears because a peer connection was lost, came back or was silent too long.
    #[serde(default)]
    pub reconnects: u64,
    /// Broadcasts dropped as duplicates (already applied via another path).
    #[serde(default)]
    pub duplicates: u64,
    /// Broadcasts applied from peers.
    #[serde(default)]
    pub applied: u64,
    /// Peer bus connections up now (two per peer once both sides have dialled).
    #[serde(default)]
    pub peers: u64,
}
