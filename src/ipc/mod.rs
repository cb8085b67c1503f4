//! IPC between the server and its web workers: the nng REQ/REP protocol over `ipc://` unix
//! sockets under `var/`.
//!
//! The server owns a [`Hub`] (the REP side); each worker owns a [`Client`] (the REQ side) and
//! reports `ready` once it accepts connections, then a `heartbeat` every
//! `-server-heartbeat-interval` with its request count and memory; cache requests go the same
//! way. Both sides speak the nng wire protocol natively on tokio ([`sp`]): libnng's own REQ/REP
//! sockets hand every message through several internal threads, which tripled the round trip
//! of a cache read, and one connection multiplexed by request id keeps any number of requests in
//! flight. The `nng` library itself is used for the peer bus between servers and, in tests, to
//! prove wire compatibility. Callers see only [`Msg`] and [`IpcError`]; every request carries a
//! deadline (`-ipc-timeout`), so a missing reply is an error the caller handles, never a hang.

mod client;
mod hub;
pub mod sp;

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

    fn sock(name: &str) -> (std::path::PathBuf, String) {
        let p = std::env::temp_dir().join(format!("bkjs-ipc-{}-{name}.sock", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let url = format!("ipc://{}", p.display());
        (p, url)
    }

    #[tokio::test]
    async fn native_client_talks_to_a_libnng_rep_socket() {
        let (path, url) = sock("rep");
        let rep = nng::Socket::new(nng::Protocol::Rep0).expect("rep");
        rep.listen(&url).expect("listen");
        let server = std::thread::spawn(move || {
            for _ in 0..3 {
                let m = rep.recv().expect("recv");
                let got: Msg = serde_json::from_slice(&m).expect("decode");
                assert_eq!(got, Msg::CacheExists { key: "k".into() });
                let reply = serde_json::to_vec(&Msg::Bool { value: true }).expect("encode");
                rep.send(&reply[..]).expect("send");
            }
        });
        let c = Client::connect(&url, std::time::Duration::from_secs(5)).expect("client");
        for _ in 0..3 {
            let r = c
                .request(Msg::CacheExists { key: "k".into() })
                .await
                .expect("reply");
            assert_eq!(r, Msg::Bool { value: true });
        }
        server.join().expect("server thread");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_libnng_req_socket_talks_to_the_native_hub() {
        let (path, url) = sock("hub");
        let hub = Hub::start(
            path.clone(),
            std::sync::Arc::new(|m: Msg| match m {
                Msg::CacheIncr { delta, .. } => Msg::Int { value: delta * 2 },
                _ => Msg::Ok,
            }),
        )
        .expect("hub");
        let req = nng::Socket::new(nng::Protocol::Req0).expect("req");
        req.dial(&url).expect("dial");
        for d in 1..4 {
            let msg = serde_json::to_vec(&Msg::CacheIncr {
                key: "n".into(),
                delta: d,
            })
            .expect("encode");
            req.send(&msg[..]).expect("send");
            let reply = req.recv().expect("recv");
            assert_eq!(
                serde_json::from_slice::<Msg>(&reply).expect("decode"),
                Msg::Int { value: d * 2 }
            );
        }
        drop(hub);
        assert!(!path.exists(), "the socket file is removed");
    }

    #[tokio::test]
    async fn many_requests_in_flight_and_timeouts() {
        let (path, url) = sock("many");
        let _hub = Hub::start(
            path,
            std::sync::Arc::new(|m: Msg| match m {
                Msg::CacheIncr { delta, .. } => Msg::Int { value: delta },
                _ => Msg::Ok,
            }),
        )
        .expect("hub");
        let c = Client::connect(&url, std::time::Duration::from_secs(5)).expect("client");
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let c = c.clone();
                tokio::spawn(async move {
                    c.request(Msg::CacheIncr {
                        key: "n".into(),
                        delta: i,
                    })
                    .await
                })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(
                t.await.expect("task").expect("reply"),
                Msg::Int { value: i as i64 }
            );
        }
        // Nothing listens here: the request fails within the timeout instead of hanging.
        let (_, nowhere) = sock("nowhere");
        let lost =
            Client::connect(&nowhere, std::time::Duration::from_millis(200)).expect("client");
        let start = std::time::Instant::now();
        assert!(matches!(
            lost.request(Msg::CacheStats).await,
            Err(IpcError::Timeout(_))
        ));
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }

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
