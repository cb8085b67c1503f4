//! IPC between the server and its web workers over nng `ipc://` sockets under `var/`.
//!
//! The server owns a [`Hub`] (a REP socket); each worker owns a [`Client`] (a REQ socket) and reports
//! `ready` once it accepts connections, then a `heartbeat` every `-server-heartbeat-interval` with
//! its request count and memory. Callers see only [`Msg`] and [`IpcError`], so the transport can
//! change without touching them. Every request carries a deadline (`-ipc-timeout`): a missing reply
//! is an error the caller handles, never a hang.

mod client;
mod hub;

pub use client::Client;
pub use hub::{Handler, Hub};

use crate::config::{Config, Kind, Param};
use serde::{Deserialize, Serialize};

/// IPC parameters.
pub static PARAMS: &[Param] = &[Param::new(
    "ipc-timeout",
    Kind::Duration,
    "500ms",
    "how long a worker waits for the server's reply before it gives up on a request",
)];

/// A message between a worker and the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Msg {
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
    /// Cache: values of one or more keys (`None` for a miss).
    CacheGet {
        keys: Vec<String>,
    },
    CachePut {
        key: String,
        value: String,
    },
    /// Adds `delta` (missing or non-numeric = 0); answered with `Int`.
    CacheIncr {
        key: String,
        delta: i64,
    },
    CacheDel {
        key: String,
    },
    CacheClear,
    /// Keys starting with `prefix`; answered with `Keys`.
    CacheKeys {
        prefix: String,
    },
    /// Answered with `Bool`.
    CacheExists {
        key: String,
    },
    /// Answered with `Stats`.
    CacheStats,
    /// Test-only fault: the server skips sending its next peer broadcast (debug builds with
    /// `BKJS_TEST_FAULTS=1` only).
    FaultDropBroadcast,
    /// The server's answer to a request that needs no data.
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
        stats: crate::cache::CacheStats,
    },
    /// The server could not do what was asked.
    Error {
        message: String,
    },
}

/// Why an IPC request failed, and whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    /// No reply within `-ipc-timeout`: the server is busy or restarting; a retry may succeed.
    #[error("no reply from the server within {0:?} (it may be busy or restarting)")]
    Timeout(std::time::Duration),
    /// The transport failed; the socket reconnects by itself, so a later retry may succeed.
    #[error("IPC transport error: {0}")]
    Transport(String),
    /// A message that does not decode: a bug or a version mismatch; retrying will not help.
    #[error("undecodable IPC message: {0}")]
    Decode(String),
    /// The client was shut down.
    #[error("IPC client is closed")]
    Closed,
}

/// The URL of the server's hub socket for this home.
pub fn hub_url(cfg: &Config) -> String {
    format!("ipc://{}", hub_path(cfg).display())
}

/// The file of the server's hub socket.
pub fn hub_path(cfg: &Config) -> std::path::PathBuf {
    cfg.dir("var")
        .join(format!("{}-server.sock", cfg.str("name")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_json() {
        let m = Msg::Heartbeat {
            pid: 7,
            requests: 3,
            rss: 1024,
        };
        let text = serde_json::to_string(&m).expect("encode");
        assert_eq!(
            text,
            r#"{"op":"heartbeat","pid":7,"requests":3,"rss":1024}"#
        );
        assert_eq!(serde_json::from_str::<Msg>(&text).expect("decode"), m);
    }
}
