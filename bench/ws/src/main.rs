//! `bench-realtime`, the probe of bench/realtime:
//!
//! - `latency NODES SUBS N`: creates SUBS accounts spread over the nodes (`host:port,...`), opens
//!   one signed WebSocket per account subscribed to its events, then N times publishes an event
//!   to a random subscriber through `/system/msg/publish` on a random node and waits for it to
//!   arrive on that subscriber's socket: publish→deliver p50/p99 in µs (after 100 warm-up
//!   events), plus the events that never came within 2 s.
//! - `reqs PORT CONNS SECS ID`: request/reply on the same route (`/account/get?id=ID`) over CONNS
//!   WebSockets (one frame, one reply, in turn) and over CONNS HTTP/1.1 keep-alive connections,
//!   alternating 2 rounds of SECS seconds each: req/s of both and their ratio.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn http_conn(addr: &str) -> Sender {
    let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let (tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    tx
}

async fn get(tx: &mut Sender, addr: &str, target: &str) -> (u16, Bytes) {
    tx.ready().await.expect("ready");
    let req = hyper::Request::get(target)
        .header("host", addr)
        .body(Empty::new())
        .expect("request");
    let resp = tx.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, body)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn latency(nodes: Vec<String>, subs: usize, n: usize) {
    let tag = format!("rt{}x{}", std::process::id(), rand::random::<u16>());
    // Accounts, 16 at a time per node.
    let mut ids = vec![String::new(); subs];
    let mut tasks = Vec::new();
    for (k, node) in nodes.iter().enumerate() {
        for lane in 0..16 {
            let node = node.clone();
            let tag = tag.clone();
            let mine: Vec<usize> = (0..subs)
                .filter(|i| i % nodes.len() == k && (i / nodes.len()) % 16 == lane)
                .collect();
            tasks.push(tokio::spawn(async move {
                let mut tx = http_conn(&node).await;
                let mut out = Vec::new();
                for i in mine {
                    let (s, body) = get(
                        &mut tx,
                        &node,
                        &format!("/account/add?login={tag}{i}&secret=s&name=n"),
                    )
                    .await;
                    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
                    let v: Value = serde_json::from_slice(&body).expect("json");
                    out.push((i, v["id"].as_str().expect("id").to_string()));
                }
                out
            }));
        }
    }
    for t in tasks {
        for (i, id) in t.await.expect("accounts") {
            ids[i] = id;
        }
    }
    // One subscribed socket per account; every pushed event goes to one channel.
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<(u64, Instant)>();
    let mut opened = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let node = nodes[i % nodes.len()].clone();
        let login = format!("{tag}{i}");
        let ev_tx = ev_tx.clone();
        let id = id.clone();
        opened.push(tokio::spawn(async move {
            // A 503 (the server could not check the signature in time: thousands of upgrades
            // at once) is retried with a new signature, as a client should.
            let mut tries = 0;
            let mut ws = loop {
                let sig = bkjs::api::auth::sign_request(
                    bkjs::api::auth::Version::V3,
                    &login,
                    b"s",
                    &bkjs::api::auth::ClientRequest {
                        method: "GET",
                        host: &node,
                        target: "/ws",
                        content_type: None,
                        body: b"",
                        // Within -api-max-expire (10 minutes by default).
                        expires: now_ms() + 300_000,
                    },
                )
                .expect("sign");
                let mut req = format!("ws://{node}/ws")
                    .into_client_request()
                    .expect("req");
                req.headers_mut()
                    .insert("bk-signature", sig.parse().expect("header"));
                match tokio_tungstenite::connect_async(req).await {
                    Ok((ws, _)) => break ws,
                    Err(tokio_tungstenite::tungstenite::Error::Http(r))
                        if r.status() == 503 && tries < 50 =>
                    {
                        tries += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(20 * tries)).await;
                    }
                    Err(e) => panic!("ws: {e}"),
                }
            };
            ws.send(Message::text("/account/subscribe"))
                .await
                .expect("send");
            let first = ws.next().await.expect("reply").expect("frame");
            let v: Value = serde_json::from_str(first.to_text().expect("text")).expect("json");
            assert_eq!(v["subscribed"].as_str(), Some(id.as_str()), "{v}");
            tokio::spawn(async move {
                while let Some(Ok(m)) = ws.next().await {
                    let at = Instant::now();
                    if let Ok(Value::Array(evs)) =
                        serde_json::from_str::<Value>(m.to_text().unwrap_or(""))
                    {
                        for e in evs {
                            if let Some(seq) = e["seq"].as_u64() {
                                let _ = ev_tx.send((seq, at));
                            }
                        }
                    }
                }
            });
        }));
    }
    for o in opened {
        o.await.expect("socket");
    }
    let mut pubs = Vec::new();
    for node in &nodes {
        pubs.push(http_conn(node).await);
    }
    let mut lat = Vec::with_capacity(n);
    let mut timeouts = 0;
    let warm = 100;
    for seq in 0..(n + warm) as u64 {
        let s = rand::random::<usize>() % subs;
        let p = rand::random::<usize>() % nodes.len();
        let target = format!(
            "/system/msg/publish?key={}&data=%7B%22seq%22%3A{seq}%7D",
            ids[s]
        );
        let t0 = Instant::now();
        let (status, body) = get(&mut pubs[p], &nodes[p], &target).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        let got = loop {
            match tokio::time::timeout_at(deadline, ev_rx.recv()).await {
                Ok(Some((q, at))) if q == seq => break Some(at),
                Ok(Some(_)) => continue, // a late one
                _ => break None,
            }
        };
        match got {
            Some(at) if seq >= warm as u64 => lat.push(at.duration_since(t0).as_micros() as u64),
            Some(_) => {}
            None if seq >= warm as u64 => timeouts += 1,
            None => {}
        }
    }
    lat.sort_unstable();
    println!(
        "latency p50_us={} p99_us={} samples={} timeouts={timeouts}",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.len()
    );
}

async fn reqs(port: u16, conns: usize, secs: u64, id: String) {
    let addr = format!("127.0.0.1:{port}");
    let target = format!("/account/get?id={id}");
    let run_ws = |d: Duration| {
        let (addr, target) = (addr.clone(), target.clone());
        async move {
            let count = Arc::new(AtomicU64::new(0));
            let mut socks = Vec::new();
            for _ in 0..conns {
                let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
                    .await
                    .expect("ws");
                socks.push(ws);
            }
            let end = Instant::now() + d;
            let mut tasks = Vec::new();
            for mut ws in socks {
                let (count, target) = (count.clone(), target.clone());
                tasks.push(tokio::spawn(async move {
                    while Instant::now() < end {
                        ws.send(Message::text(target.as_str())).await.expect("send");
                        let m = ws.next().await.expect("reply").expect("frame");
                        assert!(m.to_text().expect("text").contains("\"count\""), "{m:?}");
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            for t in tasks {
                t.await.expect("ws task");
            }
            count.load(Ordering::Relaxed) as f64 / d.as_secs_f64()
        }
    };
    let run_http = |d: Duration| {
        let (addr, target) = (addr.clone(), target.clone());
        async move {
            let count = Arc::new(AtomicU64::new(0));
            let mut senders = Vec::new();
            for _ in 0..conns {
                senders.push(http_conn(&addr).await);
            }
            let end = Instant::now() + d;
            let mut tasks = Vec::new();
            for mut tx in senders {
                let (count, target, addr) = (count.clone(), target.clone(), addr.clone());
                tasks.push(tokio::spawn(async move {
                    while Instant::now() < end {
                        let (s, _) = get(&mut tx, &addr, &target).await;
                        assert_eq!(s, 200);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            for t in tasks {
                t.await.expect("http task");
            }
            count.load(Ordering::Relaxed) as f64 / d.as_secs_f64()
        }
    };
    run_ws(Duration::from_secs(1)).await;
    run_http(Duration::from_secs(1)).await;
    let d = Duration::from_secs(secs);
    let (mut ws, mut http) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        ws.push(run_ws(d).await);
        http.push(run_http(d).await);
    }
    let w = ws.iter().sum::<f64>() / ws.len() as f64;
    let h = http.iter().sum::<f64>() / http.len() as f64;
    println!("reqs ws_rps={w:.0} http_rps={h:.0} ratio={:.2}", w / h);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    match args.get(1).map(String::as_str) {
        Some("latency") if args.len() == 5 => rt.block_on(latency(
            args[2].split(',').map(str::to_string).collect(),
            args[3].parse().expect("SUBS"),
            args[4].parse().expect("N"),
        )),
        Some("reqs") if args.len() == 6 => rt.block_on(reqs(
            args[2].parse().expect("PORT"),
            args[3].parse().expect("CONNS"),
            args[4].parse().expect("SECS"),
            args[5].clone(),
        )),
        _ => {
            eprintln!(
                "usage: bench-realtime latency HOST:PORT,... SUBS N | reqs PORT CONNS SECS ID"
            );
            std::process::exit(64);
        }
    }
}
