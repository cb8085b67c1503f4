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
//! prove wire compatibility. Callers see only the typed messages
//! ([`Request`], [`Reply`], [`Push`]) and [`IpcError`]; every request carries a
//! deadline (`-ipc-timeout`), so a missing reply is an error the caller handles, never a hang.

#![deny(unsafe_op_in_unsafe_fn, rust_2018_idioms)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod client;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod hub;
mod message;
mod near;
mod pushcount;
pub mod sp;

pub use client::Client;
pub use error::IpcError;
pub use hub::{Handler, Hub, Pushes};
pub use message::{CacheStats, Push, Reply, Request};

use bkjs_base::config::{Config, Kind, Param};

/// IPC parameters.
pub static PARAMS: &[Param] = &[Param::new(
    "ipc-timeout",
    Kind::Duration,
    "500ms",
    "how long a worker waits for the server's reply before it gives up on a request",
)];

/// The URL of the server's hub socket for this home.
pub fn hub_url(cfg: &Config) -> String {
    format!("ipc://{}", hub_path(cfg).display())
}

/// The file of the server's hub socket (in the private `var/ipc/`).
pub fn hub_path(cfg: &Config) -> std::path::PathBuf {
    bkjs_base::sys::socket_dir(cfg).join(format!("{}-server.sock", cfg.str("name")))
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
                let got: Request = serde_json::from_slice(&m).expect("decode");
                assert_eq!(got, Request::CacheExists { key: "k".into() });
                let reply = serde_json::to_vec(&Reply::Bool { value: true }).expect("encode");
                rep.send(&reply[..]).expect("send");
            }
        });
        let c = Client::connect(&url, std::time::Duration::from_secs(5)).expect("client");
        for _ in 0..3 {
            let r = c
                .request(Request::CacheExists { key: "k".into() })
                .await
                .expect("reply");
            assert_eq!(r, Reply::Bool { value: true });
        }
        server.join().expect("server thread");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_libnng_req_socket_talks_to_the_native_hub() {
        let (path, url) = sock("hub");
        let hub = Hub::start(
            path.clone(),
            std::sync::Arc::new(|m: Request| match m {
                Request::CacheIncr { delta, .. } => Reply::Int { value: delta * 2 },
                _ => Reply::Ok,
            }),
            Pushes::new(),
        )
        .expect("hub");
        let req = nng::Socket::new(nng::Protocol::Req0).expect("req");
        req.dial(&url).expect("dial");
        for d in 1..4 {
            let msg = serde_json::to_vec(&Request::CacheIncr {
                key: "n".into(),
                delta: d,
            })
            .expect("encode");
            req.send(&msg[..]).expect("send");
            let reply = req.recv().expect("recv");
            assert_eq!(
                serde_json::from_slice::<Reply>(&reply).expect("decode"),
                Reply::Int { value: d * 2 }
            );
        }
        let counter = hub.counter_path();
        drop(hub);
        assert!(!path.exists(), "the socket file is removed");
        assert!(
            counter.exists(),
            "the push counter stays (it must never count again from 0)"
        );
        let _ = std::fs::remove_file(counter);
    }

    #[tokio::test]
    async fn many_requests_in_flight_and_timeouts() {
        let (path, url) = sock("many");
        let hub = Hub::start(
            path,
            std::sync::Arc::new(|m: Request| match m {
                Request::CacheIncr { delta, .. } => Reply::Int { value: delta },
                _ => Reply::Ok,
            }),
            Pushes::new(),
        )
        .expect("hub");
        let c = Client::connect(&url, std::time::Duration::from_secs(5)).expect("client");
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let c = c.clone();
                tokio::spawn(async move {
                    c.request(Request::CacheIncr {
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
                Reply::Int { value: i as i64 }
            );
        }
        // Nothing listens here: the request fails within the timeout instead of hanging.
        let (_, nowhere) = sock("nowhere");
        let lost =
            Client::connect(&nowhere, std::time::Duration::from_millis(200)).expect("client");
        let start = std::time::Instant::now();
        assert!(matches!(
            lost.request(Request::CacheStats).await,
            Err(IpcError::Timeout(_))
        ));
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
        let _ = std::fs::remove_file(hub.counter_path());
    }

    /// A hub over a map whose writes are pushed to every client, counting the reads it
    /// answers.
    fn cache_hub(name: &str) -> (Hub, String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
        use std::collections::HashMap;
        use std::sync::atomic::{AtomicU64, Ordering};
        let (path, url) = sock(name);
        let pushes = Pushes::new();
        let p = pushes.clone();
        let store = parking_lot::Mutex::new(HashMap::<String, String>::new());
        let reads = std::sync::Arc::new(AtomicU64::new(0));
        let r = reads.clone();
        let hub = Hub::start(
            path,
            std::sync::Arc::new(move |m: Request| {
                let mut s = store.lock();
                let changed = |key: &str| {
                    p.push(&Push::Invalidate {
                        keys: vec![key.to_string()],
                    })
                };
                match m {
                    Request::CacheGet { keys } => {
                        r.fetch_add(1, Ordering::SeqCst);
                        Reply::Values {
                            values: keys.iter().map(|k| s.get(k).cloned()).collect(),
                        }
                    }
                    Request::CachePut { key, value } => {
                        s.insert(key.clone(), value);
                        changed(&key);
                        Reply::Ok
                    }
                    Request::CacheIncr { key, delta } => {
                        let n =
                            s.get(&key).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0) + delta;
                        s.insert(key.clone(), n.to_string());
                        changed(&key);
                        Reply::Int { value: n }
                    }
                    Request::CacheClear => {
                        s.clear();
                        p.push(&Push::InvalidateAll);
                        Reply::Ok
                    }
                    _ => Reply::Ok,
                }
            }),
            pushes,
        )
        .expect("hub");
        (hub, url, reads)
    }

    async fn get(c: &Client, k: &str) -> Option<String> {
        match c.cache_get(vec![k.to_string()]).await.expect("get") {
            Reply::Values { mut values } => values.pop().flatten(),
            other => panic!("{other:?}"),
        }
    }

    /// A client on a runtime of its own that runs only while the test waits on it, like a
    /// worker process whose background reader has not run yet when a request comes in.
    struct Worker {
        rt: tokio::runtime::Runtime,
        c: Client,
    }

    impl Worker {
        fn new(url: &str, near: usize) -> Worker {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let c = rt
                .block_on(async {
                    Client::connect_near(url, std::time::Duration::from_secs(5), near)
                })
                .expect("client");
            Worker { rt, c }
        }
        fn get(&self, k: &str) -> Option<String> {
            self.rt.block_on(get(&self.c, k))
        }
        fn ask(&self, m: Request) -> Reply {
            self.rt.block_on(self.c.request(m)).expect("request")
        }
        fn put(&self, k: &str, v: &str) {
            let put = Request::CachePut {
                key: k.into(),
                value: v.into(),
            };
            assert_eq!(self.ask(put), Reply::Ok);
        }
    }

    /// Writes on one worker, each followed by reads on the other: every read sees the write.
    fn alternate(a: &Worker, b: &Worker, rounds: usize) {
        for i in 1..rounds {
            let (writer, reader) = if i % 2 == 0 { (a, b) } else { (b, a) };
            assert_eq!(reader.get("k"), Some((i - 1).to_string()), "before {i}");
            writer.put("k", &i.to_string());
            assert_eq!(reader.get("k"), Some(i.to_string()), "round {i}");
            assert_eq!(reader.get("k"), Some(i.to_string()), "again {i}");
        }
    }

    #[test]
    fn near_cache_answers_repeated_reads_and_never_serves_a_stale_value() {
        use std::sync::atomic::Ordering;
        let (hub, url, reads) = cache_hub("near");
        let a = Worker::new(&url, 1 << 20);
        let b = Worker::new(&url, 1 << 20);
        a.put("k", "0");
        assert_eq!(a.get("k").as_deref(), Some("0"));
        let before = reads.load(Ordering::SeqCst);
        for _ in 0..10 {
            assert_eq!(a.get("k").as_deref(), Some("0"));
        }
        assert_eq!(
            reads.load(Ordering::SeqCst),
            before,
            "answered from the near cache"
        );
        // A write through another worker is seen by the very next read, every time.
        alternate(&a, &b, 300);
        // incr and clear invalidate too; misses are not kept.
        let n = b.ask(Request::CacheIncr {
            key: "k".into(),
            delta: 1,
        });
        assert_eq!(n, Reply::Int { value: 300 });
        assert_eq!(a.get("k").as_deref(), Some("300"));
        b.ask(Request::CacheClear);
        assert_eq!(a.get("k"), None);
        b.put("k", "new");
        assert_eq!(a.get("k").as_deref(), Some("new"));
        // Without a near cache every read reaches the server.
        let plain = Worker::new(&url, 0);
        let before = reads.load(Ordering::SeqCst);
        for _ in 0..3 {
            assert_eq!(plain.get("k").as_deref(), Some("new"));
        }
        assert_eq!(reads.load(Ordering::SeqCst), before + 3);
        let _ = std::fs::remove_file(hub.counter_path());
    }

    #[test]
    fn near_cache_without_a_push_counter_reads_its_socket_every_time() {
        let (hub, url, _) = cache_hub("nocounter");
        std::fs::remove_file(hub.counter_path()).expect("remove the counter file");
        let a = Worker::new(&url, 1 << 20);
        let b = Worker::new(&url, 1 << 20);
        a.put("k", "0");
        alternate(&a, &b, 100);
    }

    #[tokio::test]
    async fn near_cache_forgets_everything_when_the_server_goes_away() {
        let (hub, url, _) = cache_hub("gone");
        let t = std::time::Duration::from_millis(300);
        let a = Client::connect_near(&url, t, 1 << 20).expect("a");
        assert_eq!(
            a.request(Request::CachePut {
                key: "k".into(),
                value: "1".into()
            })
            .await
            .expect("put"),
            Reply::Ok
        );
        assert_eq!(get(&a, "k").await.as_deref(), Some("1"));
        drop(hub);
        // A new server (empty) at the same address: the old value must not be served, even
        // before the client noticed anything.
        let (_hub2, _, _) = cache_hub("gone");
        let mut seen = None;
        for _ in 0..50 {
            match a.cache_get(vec!["k".into()]).await {
                Ok(Reply::Values { values }) => {
                    seen = Some(values);
                    break;
                }
                _ => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
        assert_eq!(seen, Some(vec![None]), "the new server knows nothing of k");
        let _ = std::fs::remove_file(_hub2.counter_path());
    }

    #[test]
    fn messages_round_trip_as_json() {
        let m = Request::Heartbeat {
            pid: 7,
            requests: 3,
            rss: 1024,
        };
        let text = serde_json::to_string(&m).expect("encode");
        assert_eq!(
            text,
            r#"{"op":"heartbeat","pid":7,"requests":3,"rss":1024}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&text).expect("decode"), m);
    }

    #[tokio::test]
    async fn an_in_process_client_asks_the_handler_directly() {
        let seen = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let log = seen.clone();
        let handler: Handler = std::sync::Arc::new(move |msg: Request| {
            log.lock().push(msg.clone());
            match msg {
                Request::CacheGet { keys } => Reply::Values {
                    values: keys.iter().map(|k| Some(format!("v-{k}"))).collect(),
                },
                _ => Reply::Ok,
            }
        });
        let c = Client::in_process(handler);
        assert_eq!(
            c.cache_get_one("a").await.expect("get").as_deref(),
            Some("v-a")
        );
        assert_eq!(
            c.request(Request::CacheDel { key: "a".into() })
                .await
                .expect("del"),
            Reply::Ok
        );
        c.send(Request::Ready { pid: 7 });
        // Every request reached the handler, in order, with no socket in between.
        assert_eq!(
            *seen.lock(),
            [
                Request::CacheGet {
                    keys: vec!["a".into()]
                },
                Request::CacheDel { key: "a".into() },
                Request::Ready { pid: 7 },
            ]
        );
    }
}
