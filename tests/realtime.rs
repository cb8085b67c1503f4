//! Pub/sub, the `/account/subscribe` long poll and WebSockets as a client sees them: events
//! published over HTTP reach long polls and sockets, on the same node and from another node
//! (nng forwarders, Redis, RabbitMQ, NATS), requests over a real WebSocket client (tungstenite) with signature
//! or session authentication, error frames for malformed frames, and the same through proxy mode.

use crate::api::{add_account, host, py_sign, send, signed, Call};
use crate::harness::*;
use serde_json::{json, Value};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::Message;

/// Two consecutive free ports (an nng forwarder's publisher and subscriber sides).
fn port_pair() -> u16 {
    free_ports(2)
}

/// The subscribers of this node's only web worker, from `/system/msg/stats`.
fn subscribers(t: &Tree) -> u64 {
    let r = t.get("/system/msg/stats");
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).expect("json");
    v["subscribers"].as_u64().unwrap_or(0)
}

fn publish(t: &Tree, key: &str, data: &Value) {
    let q = format!(
        "/system/msg/publish?key={key}&data={}",
        form(&data.to_string())
    );
    let r = t.get(&q);
    assert_eq!(r.status, 200, "{q}: {}", r.body);
}

pub(crate) fn form(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A long poll on its own thread: its status, body, how long it took and when it was answered.
fn poll(
    t: &Tree,
    login: &'static str,
    secret: &'static str,
    target: &str,
) -> std::thread::JoinHandle<(u16, Value, Duration, Instant)> {
    let sig = py_sign(&Call::get(3, login, secret, target), &host(t));
    let url = t.url(target);
    std::thread::spawn(move || {
        let start = Instant::now();
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .build();
        let (status, text) = match agent.get(&url).set("bk-signature", &sig).call() {
            Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        };
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v, start.elapsed(), Instant::now())
    })
}

const ONE_WORKER: &[&str] = &[
    "-server-web-workers",
    "1",
    "-api-allow-path",
    "^/system/msg/",
    "-api-subscribe-interval",
    "300ms",
    "-api-subscribe-timeout",
    "2s",
];

#[test]
fn long_poll_batches_events_filters_and_times_out() {
    // A batching interval long enough that three quick publishes fit in it on a loaded machine.
    let interval = Duration::from_millis(1500);
    let mut args = ONE_WORKER.to_vec();
    args.extend(["-api-subscribe-interval", "1500ms"]);
    let t = Tree::start("run", &args);
    t.ready(1);
    let id = add_account(&t, "lp", "s", "Long");
    // Three events within the batching interval come back in one reply, in order, and that
    // reply waited the interval after the first event rather than answering it alone.
    let h = poll(&t, "lp", "s", "/account/subscribe");
    assert!(
        wait_for(Duration::from_secs(10), || subscribers(&t) == 1),
        "{}",
        t.log()
    );
    let first = Instant::now();
    for n in 0..3 {
        publish(&t, &id, &json!({"path": "/test", "n": n}));
    }
    let published = first.elapsed();
    assert!(
        published < interval,
        "the three publishes took {published:?}, longer than the interval"
    );
    let (s, v, _, answered) = h.join().expect("poll");
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        json!([{"path": "/test", "n": 0}, {"path": "/test", "n": 1}, {"path": "/test", "n": 2}])
    );
    let replied = answered.saturating_duration_since(first);
    assert!(
        replied >= interval,
        "answered {replied:?} after the first publish, before -api-subscribe-interval"
    );
    assert!(
        wait_for(Duration::from_secs(5), || subscribers(&t) == 0),
        "the poll unsubscribed"
    );
    // match= keeps only matching events; events to another key never arrive.
    let h = poll(&t, "lp", "s", "/account/subscribe?match=keep");
    assert!(wait_for(Duration::from_secs(10), || subscribers(&t) == 1));
    publish(&t, "someone-else", &json!({"x": "keep"}));
    publish(&t, &id, &json!({"x": "drop"}));
    publish(&t, &id, &json!({"x": "keep"}));
    let (s, v, _, _) = h.join().expect("poll");
    assert_eq!((s, v), (200, json!([{"x": "keep"}])));
    // Nothing published: [] after -api-subscribe-timeout.
    let h = poll(&t, "lp", "s", "/account/subscribe");
    let (s, v, took, _) = h.join().expect("poll");
    assert_eq!((s, v), (200, json!([])));
    assert!(
        took >= Duration::from_millis(1900),
        "answered after {took:?}"
    );
    // Bad input.
    let (s, v) = signed(&t, &Call::get(3, "lp", "s", "/account/subscribe?match=%28"));
    assert_eq!(s, 400, "{v}");
    let r = t.get("/system/msg/publish?key=a%20b&data=x");
    assert_eq!(r.status, 400, "{}", r.body);
    let r = t.get("/system/msg/publish?data=x");
    assert_eq!(r.status, 400, "{}", r.body);
    // Unauthenticated polls are refused.
    assert_eq!(t.get("/account/subscribe").status, 401);
}

/// Node A publishes, a long poll on node B gets it. `extra_a`/`extra_b` choose the backend;
/// both nodes must report `backend` (the start of `/system/msg/stats`' description).
fn across_nodes(extra_a: &[&str], extra_b: &[&str], backend: &str) {
    let mut args_a: Vec<&str> = ONE_WORKER.to_vec();
    let mut args_b = args_a.clone();
    args_a.extend(extra_a);
    args_b.extend(extra_b);
    let a = Tree::start("run", &args_a);
    let b = Tree::start("run", &args_b);
    a.ready(1);
    b.ready(1);
    for t in [&a, &b] {
        let r = t.get("/system/msg/stats");
        let v: Value = serde_json::from_str(&r.body).expect("json");
        assert!(
            v["backend"]
                .as_str()
                .is_some_and(|d| d.starts_with(backend)),
            "not on {backend}: {v}"
        );
    }
    let id = add_account(&b, "bnode", "s", "B");
    let h = poll(&b, "bnode", "s", "/account/subscribe");
    assert!(
        wait_for(Duration::from_secs(10), || subscribers(&b) == 1),
        "{}",
        b.log()
    );
    // The links between the nodes come up on their own: publish until the poll answers.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    while !h.is_finished() {
        assert!(
            Instant::now() < deadline,
            "nothing from node A reached node B\nA:\n{}\nB:\n{}",
            a.log(),
            b.log()
        );
        publish(&a, &id, &json!({"from": "a", "n": n}));
        n += 1;
        wait_for(Duration::from_millis(300), || h.is_finished());
    }
    let (s, v, _, _) = h.join().expect("poll");
    assert_eq!(s, 200, "{v}");
    let events = v.as_array().expect("array");
    assert!(
        !events.is_empty() && events.iter().all(|e| e["from"] == json!("a")),
        "{v}"
    );
}

/// nng: each node's server forwards on TCP and both name both forwarders in `-msg-host`.
#[test]
fn events_published_on_node_a_reach_a_subscriber_on_node_b_over_nng() {
    let (pa, pb) = (port_pair(), port_pair());
    let hosts = format!("127.0.0.1:{pa},127.0.0.1:{pb}");
    let (spa, spb) = (pa.to_string(), pb.to_string());
    let node = |port: &str| -> Vec<String> {
        [
            "-msg-host",
            &hosts,
            "-msg-port",
            port,
            "-msg-bind",
            "127.0.0.1",
            "-cluster-secret",
            "realtime-test-cluster-secret",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let (na, nb) = (node(&spa), node(&spb));
    across_nodes(
        &na.iter().map(String::as_str).collect::<Vec<_>>(),
        &nb.iter().map(String::as_str).collect::<Vec<_>>(),
        "nng",
    );
}

#[test]
fn events_published_on_node_a_reach_a_subscriber_on_node_b_over_redis() {
    if !service_up(6379, "Redis") {
        return;
    }
    // No nng forwarders named: only Redis can carry the event across.
    let args = ["-msg-type", "redis", "-redis-host", "127.0.0.1:6379"];
    across_nodes(&args, &args, "redis redis://127.0.0.1:6379");
}

/// RabbitMQ: both nodes on a direct exchange of their own (a parallel test or run uses
/// another), no nng forwarders named, so only the broker can carry the event across. The
/// exchange is not durable; RabbitMQ drops it when it restarts.
#[test]
fn events_published_on_node_a_reach_a_subscriber_on_node_b_over_amqp() {
    if !service_up(5672, "RabbitMQ") {
        return;
    }
    let exchange = unique("bkjs-it");
    let args = [
        "-msg-type",
        "amqp",
        "-amqp-host",
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        "-msg-amqp-exchange",
        &exchange,
    ];
    let backend = format!("amqp amqp://guest:***@127.0.0.1:5672/%2f exchange {exchange}");
    across_nodes(&args, &args, &backend);
}

/// NATS: subjects are the subscriber's account id (32 random hex digits), unique per test; no
/// nng forwarders named, so only the NATS server can carry the event across.
#[test]
fn events_published_on_node_a_reach_a_subscriber_on_node_b_over_nats() {
    if !service_up(4222, "NATS") {
        return;
    }
    let args = ["-msg-type", "nats", "-nats-host", "nats://127.0.0.1:4222"];
    across_nodes(&args, &args, "nats nats://127.0.0.1:4222");
}

pub(crate) type Socket = tungstenite::WebSocket<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket on `path` of `port` with extra headers; the HTTP status when refused.
pub(crate) fn ws_connect(port: u16, path: &str, headers: &[(&str, &str)]) -> Result<Socket, u16> {
    let mut req = format!("ws://127.0.0.1:{port}{path}")
        .into_client_request()
        .expect("request");
    for (k, v) in headers {
        req.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            v.parse().expect("value"),
        );
    }
    match tungstenite::connect(req) {
        Ok((ws, resp)) => {
            assert_eq!(resp.status(), 101);
            if let MaybeTlsStream::Plain(s) = ws.get_ref() {
                s.set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("timeout");
            }
            Ok(ws)
        }
        Err(tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("websocket connect: {e}"),
    }
}

fn signed_ws(t: &Tree, port: u16, login: &str, secret: &str, path: &str) -> Socket {
    let sig = py_sign(
        &Call::get(3, login, secret, path),
        &format!("127.0.0.1:{port}"),
    );
    let _ = t;
    ws_connect(port, path, &[("bk-signature", &sig)]).expect("upgrade")
}

/// The next text frame as JSON.
fn recv(ws: &mut Socket) -> Value {
    loop {
        match ws.read().expect("a frame") {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("json frame"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

fn ask(ws: &mut Socket, url: &str) -> Value {
    ws.send(Message::text(url)).expect("send");
    recv(ws)
}

/// Requests, errors and pushed events on one socket whose port is `port` (the node's or the
/// proxy's).
fn socket_scenario(t: &Tree, port: u16) {
    let me = add_account(t, "wsa", "s1", "Web");
    let other = add_account(t, "wsb", "s2", "Other");
    let mut ws = signed_ws(t, port, "wsa", "s1", "/ws");
    let v = ask(&mut ws, "/account/get");
    assert_eq!(
        (v["id"].clone(), v["login"].clone()),
        (json!(me), json!("wsa")),
        "{v}"
    );
    let v = ask(&mut ws, &format!("/account/get?id={other}"));
    assert_eq!(v["data"][0]["id"], json!(other), "{v}");
    assert!(
        v["data"][0].get("login").is_none(),
        "public columns only: {v}"
    );
    // Malformed frames get an error frame; the connection stays usable.
    let v = ask(&mut ws, "hello");
    assert_eq!(v["status"], json!(400), "{v}");
    ws.send(Message::binary(vec![1u8, 2, 3])).expect("send");
    assert_eq!(recv(&mut ws)["status"], json!(400));
    let v = ask(&mut ws, "/nope/nope");
    assert_eq!(v["status"], json!(404), "{v}");
    let v = ask(&mut ws, "/system/stats");
    assert_eq!(v["status"], json!(403), "admins only: {v}");
    assert_eq!(ask(&mut ws, "/ping"), json!({}));
    // Subscribed, the socket gets the events published to its account, pushed as arrays.
    let v = ask(&mut ws, "/account/subscribe");
    assert_eq!(v, json!({"subscribed": me}));
    let deadline = Instant::now() + Duration::from_secs(10);
    let pushed = loop {
        publish(t, &me, &json!({"path": "/test/push", "n": 1}));
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .expect("timeout");
        }
        match ws.read() {
            Ok(Message::Text(text)) => {
                break serde_json::from_str::<Value>(text.as_str()).expect("json")
            }
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                assert!(Instant::now() < deadline, "no event pushed within 10 s");
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(pushed[0], json!({"path": "/test/push", "n": 1}), "{pushed}");
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
    }
    // Requests still work while subscribed (pushed arrays may come before the reply).
    ws.send(Message::text("/account/get")).expect("send");
    let reply = loop {
        let v = recv(&mut ws);
        if v.is_object() {
            break v;
        }
    };
    assert_eq!(reply["id"], json!(me));
    ws.close(None).expect("close");
    // Unauthenticated and wrongly signed upgrades are refused before the upgrade.
    assert_eq!(ws_connect(port, "/ws", &[]).err(), Some(401));
    let bad = py_sign(
        &Call::get(3, "wsa", "wrong", "/ws"),
        &format!("127.0.0.1:{port}"),
    );
    assert_eq!(
        ws_connect(port, "/ws", &[("bk-signature", &bad)]).err(),
        Some(401)
    );
    // A session cookie authenticates the upgrade too.
    let c = Call::get(3, "wsb", "s2", "/account/get?_session=1");
    let sig = py_sign(&c, &format!("127.0.0.1:{port}"));
    let (s, _, cookies) = {
        let url = format!("http://127.0.0.1:{port}{}", c.target);
        match agent().get(&url).set("bk-signature", &sig).call() {
            Ok(r) => {
                let cookies: Vec<String> =
                    r.all("set-cookie").iter().map(|s| s.to_string()).collect();
                (r.status(), (), cookies)
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(s, 200);
    let cookie = cookies
        .iter()
        .find(|c| c.starts_with("bk_sid="))
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_string();
    // A cookie upgrade from another site's page is refused (cross-site WebSocket hijacking);
    // from the server's own origin it opens.
    assert_eq!(
        ws_connect(
            port,
            "/ws",
            &[("cookie", &cookie), ("origin", "https://evil.example")]
        )
        .err(),
        Some(403)
    );
    let own = format!("http://127.0.0.1:{port}");
    let mut ws =
        ws_connect(port, "/ws", &[("cookie", &cookie), ("origin", &own)]).expect("session upgrade");
    assert_eq!(ask(&mut ws, "/account/get")["id"], json!(other));
    let _ = send; // the HTTP helpers of tests/api.rs
}

#[test]
fn websocket_requests_events_and_error_frames() {
    let t = Tree::start("run", ONE_WORKER);
    t.ready(1);
    socket_scenario(&t, t.port);
}

#[test]
fn websocket_through_proxy_mode() {
    let base = free_ports(2).to_string();
    let mut args = ONE_WORKER.to_vec();
    args.extend(["-proxy-port", &base]);
    let t = Tree::start("run", &args);
    t.ready(1);
    socket_scenario(&t, t.port);
}

#[test]
fn publish_flag_on_connection_message_and_counter_sends_events() {
    let t = Tree::start("run", ONE_WORKER);
    t.ready(1);
    let alice = add_account(&t, "pa", "s1", "Alice");
    let bob = add_account(&t, "pb", "s2", "Bob");
    let mut ws = signed_ws(&t, t.port, "pb", "s2", "/ws");
    assert_eq!(
        ask(&mut ws, "/account/subscribe"),
        json!({"subscribed": bob})
    );
    // Without _publish nothing is sent; with it, one event each, in order.
    let calls = [
        (format!("/counter/incr?id={bob}&ping=1"), false),
        (
            format!("/connection/add?id={bob}&type=like&_publish=1"),
            true,
        ),
        (format!("/message/add?id={bob}&msg=hello&_publish=1"), true),
        (format!("/counter/incr?id={bob}&ping=1&_publish=1"), true),
    ];
    for (target, _) in &calls {
        let (s, v) = signed(&t, &Call::get(3, "pa", "s1", target));
        assert_eq!(s, 200, "{target}: {v}");
    }
    let mut got = Vec::new();
    while got.len() < 3 {
        match recv(&mut ws) {
            Value::Array(evs) => got.extend(evs),
            other => panic!("a reply where events were expected: {other}"),
        }
    }
    let paths: Vec<&str> = got
        .iter()
        .map(|e| e["path"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        paths,
        ["/connection/add", "/message/add", "/counter/incr"],
        "{got:?}"
    );
    for e in &got {
        assert_eq!(
            (e["id"].clone(), e["alias"].clone()),
            (json!(alice), json!("Alice")),
            "{e}"
        );
        assert!(e["mtime"].as_i64().is_some(), "{e}");
    }
    assert_eq!(got[0]["type"], json!("like"));
    assert_eq!(got[1]["msg"], json!("hello"));
    assert_eq!(got[2]["ping"], json!(1));
}
