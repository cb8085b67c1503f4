//! Issue 17 on the HTTP and WebSocket side, against the real binary: WebSocket frames meet the
//! account's ACLs and sockets close when their account changes; bodies are refused before they
//! are read, cut after `-api-body-timeout`, and one address holds at most `-api-ip-conn-max`
//! connections; `/file/*` belongs to its owner; WebSocket origin, anonymous, ping and idle
//! limits; a large upload does not hold small requests. See docs/security.md.

use crate::api::{add_account, add_admin, host, py_sign, signed, Call};
use crate::harness::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::Message;

use crate::realtime::{ws_connect, Socket};

fn set_timeout(ws: &Socket, d: Duration) {
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(d)).expect("timeout");
    }
}

/// The `bk-signature` of a GET of `path` by `login`.
fn sig(t: &Tree, login: &str, secret: &str, path: &str) -> String {
    py_sign(&Call::get(3, login, secret, path), &host(t))
}

fn signed_ws(t: &Tree, login: &str, secret: &str) -> Socket {
    let s = sig(t, login, secret, "/ws");
    ws_connect(t.port, "/ws", &[("bk-signature", &s)]).expect("upgrade")
}

/// Sends a request frame; the next text frame as JSON.
fn ask(ws: &mut Socket, url: &str) -> Value {
    ws.send(Message::text(url)).expect("send");
    loop {
        match ws.read().expect("a frame") {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("json frame"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Reads until the server closes the socket or `limit` passes: the close frame's code and
/// reason (`Some((0, ""))` when the connection ended without one), `None` when still open.
fn closed_within(ws: &mut Socket, limit: Duration) -> Option<(u16, String)> {
    let deadline = Instant::now() + limit;
    set_timeout(ws, Duration::from_millis(50));
    loop {
        match ws.read() {
            Ok(Message::Close(Some(f))) => return Some((u16::from(f.code), f.reason.to_string())),
            Ok(Message::Close(None)) => return Some((0, String::new())),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some((0, String::new())),
        }
        if Instant::now() >= deadline {
            return None;
        }
    }
}

/// `GET target` signed by `login`: status and JSON.
fn call(t: &Tree, login: &str, secret: &str, target: &str) -> (u16, Value) {
    signed(t, &Call::get(3, login, secret, target))
}

#[test]
fn websocket_frames_meet_account_acls_and_sockets_close_on_account_changes() {
    // Two workers: the change is made through one, the socket may sit on the other.
    let t = Tree::start("run", &[]);
    t.ready(2);
    add_admin(&t, "root", "rs");
    let user = add_account(&t, "wsu", "s1", "User");
    let mut ws = signed_ws(&t, "wsu", "s1");
    assert_eq!(ask(&mut ws, "/account/get")["id"], json!(user));

    // An acl_deny set by an admin refuses the path over HTTP and in a frame alike.
    let (s, v) = call(
        &t,
        "root",
        "rs",
        &format!("/account/update?id={user}&acl_deny=%5E%2Faccount%2Fget%24"),
    );
    assert_eq!(s, 200, "{v}");
    let mut http = (0, Value::Null);
    let refused = wait_for(Duration::from_secs(5), || {
        http = call(&t, "wsu", "s1", "/account/get");
        http.0 == 403
    });
    assert!(refused, "HTTP still served: {http:?}");
    let frame = ask(&mut ws, "/account/get");
    assert_eq!(
        (frame["status"].clone(), frame["message"].clone()),
        (json!(403), http.1["message"].clone()),
        "the frame gets the HTTP answer: {frame}"
    );
    assert_eq!(ask(&mut ws, "/ping"), json!({}), "other paths stay open");
    // An acl_allow that does not match the path refuses it too.
    let (s, v) = call(
        &t,
        "root",
        "rs",
        &format!("/account/update?id={user}&acl_deny=&acl_allow=%5E%2Fping%24"),
    );
    assert_eq!(s, 200, "{v}");
    let frame_refused = wait_for(Duration::from_secs(5), || {
        ask(&mut ws, "/counter/get")["status"] == json!(403)
    });
    assert!(frame_refused, "acl_allow not applied to frames");

    // Deleting the account closes its socket within a second.
    let (s, v) = call(&t, "root", "rs", &format!("/account/del?id={user}"));
    assert_eq!(s, 200, "{v}");
    let closed = closed_within(&mut ws, Duration::from_secs(1));
    let (code, reason) = closed.expect("the socket of a deleted account is still open after 1 s");
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("deleted"), "{reason}");

    // So does a new secret, also when the account changes it itself.
    add_account(&t, "wsv", "s2", "Other");
    let mut ws = signed_ws(&t, "wsv", "s2");
    assert_eq!(ask(&mut ws, "/ping"), json!({}));
    let (s, v) = call(&t, "wsv", "s2", "/account/put/secret?secret=s3");
    assert_eq!(s, 200, "{v}");
    let (code, reason) = closed_within(&mut ws, Duration::from_secs(1))
        .expect("the socket of a changed secret is still open after 1 s");
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("secret"), "{reason}");

    // And a demotion: an admin's socket closes when it is made an ordinary account.
    add_admin(&t, "boss", "bs");
    let mut ws = signed_ws(&t, "boss", "bs");
    let v = ask(&mut ws, "/system/stats");
    assert_ne!(v["status"], json!(403), "admins may: {v}");
    let boss = ask(&mut ws, "/account/get")["id"].clone();
    let boss = boss.as_str().expect("id").to_string();
    let (s, v) = call(
        &t,
        "root",
        "rs",
        &format!("/account/update?id={boss}&type=user"),
    );
    assert_eq!(s, 200, "{v}");
    let (code, reason) = closed_within(&mut ws, Duration::from_secs(1))
        .expect("the socket of a demoted admin is still open after 1 s");
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("type"), "{reason}");
}

/// Writes `head` and the first `sent` bytes of a body on a fresh connection; the stream.
fn partial_upload(t: &Tree, head: &str, sent: usize) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", t.port)).expect("connect");
    s.write_all(head.as_bytes()).expect("head");
    s.write_all(&vec![b'x'; sent]).expect("part of the body");
    s
}

/// What the server sends on `s` within `limit`, until it closes the connection (or `limit`).
fn answer(s: &mut TcpStream, limit: Duration) -> (String, bool) {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), true),
        }
        if Instant::now() >= deadline {
            return (String::from_utf8_lossy(&got).into_owned(), false);
        }
    }
}

#[test]
fn bodies_are_refused_before_they_are_read_and_cut_after_the_body_timeout() {
    let t = Tree::start(
        "run",
        &["-server-web-workers", "1", "-api-body-timeout", "1s"],
    );
    t.ready(1);
    add_account(&t, "up", "s1", "Up");
    // 5 MB announced, 64 KB sent: without credentials, or with a wrong signature, the answer is a
    // 401 while the rest of the body is still to come, and the connection is closed.
    let bad = py_sign(
        &Call {
            version: 3,
            login: "up",
            secret: "wrong",
            method: "POST",
            target: "/file/put?prefix=p&name=n",
            content_type: Some("application/octet-stream"),
            body: b"a body signed with the wrong secret",
            expires: None,
        },
        &host(&t),
    );
    for extra in [String::new(), format!("bk-signature: {bad}\r\n")] {
        let head = format!(
            "POST /file/put?prefix=p&name=n HTTP/1.1\r\nhost: {}\r\ncontent-type: application/octet-stream\r\ncontent-length: 5000000\r\n{extra}\r\n",
            host(&t)
        );
        let mut s = partial_upload(&t, &head, 64 * 1024);
        let (text, closed) = answer(&mut s, Duration::from_secs(5));
        assert!(text.starts_with("HTTP/1.1 401"), "{extra:?}: {text}");
        assert!(
            closed,
            "the connection is closed, the body not read: {text}"
        );
    }
    // A body that stalls is answered 408 after -api-body-timeout, and its connection closed; a
    // few at once, and the worker still answers.
    let head = format!(
        "POST /account/add HTTP/1.1\r\nhost: {}\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 1000\r\n\r\n",
        host(&t)
    );
    let start = Instant::now();
    let mut stalled: Vec<TcpStream> = (0..5).map(|_| partial_upload(&t, &head, 10)).collect();
    for s in &mut stalled {
        let (text, closed) = answer(s, Duration::from_secs(6));
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("-api-body-timeout"), "{text}");
        assert!(closed, "{text}");
    }
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "not before the timeout: {:?}",
        start.elapsed()
    );
    assert_eq!(t.get("/ping").status, 200);
    // A signed body that arrives in time is served (authenticated from the headers first, the
    // body checked against the signed checksum once read).
    let c = Call {
        version: 3,
        login: "up",
        secret: "s1",
        method: "POST",
        target: "/file/put?prefix=p&name=n.txt",
        content_type: Some("text/plain"),
        body: b"in time",
        expires: None,
    };
    let (s, v) = signed(&t, &c);
    assert_eq!((s, v["size"].clone()), (200, json!(7)), "{v}");
}

#[test]
fn one_address_holds_at_most_the_connection_cap() {
    connection_cap(&[]);
}

/// The same cap in proxy mode, where the server's proxy holds the clients' connections.
#[test]
fn one_address_holds_at_most_the_connection_cap_through_the_proxy() {
    let base = free_ports(1).to_string();
    connection_cap(&["-proxy-port", &base]);
}

fn connection_cap(extra: &[&str]) {
    let mut args = vec!["-server-web-workers", "1", "-api-ip-conn-max", "3"];
    args.extend_from_slice(extra);
    let t = Tree::start("run", &args);
    t.ready(1);
    // The connections of the readiness checks may still be closing: retry until three at once
    // are served.
    let mut held: Vec<TcpStream> = Vec::new();
    let three = wait_for(Duration::from_secs(10), || {
        held = (0..3)
            .map(|_| TcpStream::connect(("127.0.0.1", t.port)).expect("connect"))
            .collect();
        held.iter_mut()
            .all(|s| ping_on(s).starts_with("HTTP/1.1 200"))
    });
    assert!(three, "three connections were never served at once");
    // Over the cap: a 429 (when the client reads it in time) and the connection closed.
    let mut extra = TcpStream::connect(("127.0.0.1", t.port)).expect("connect");
    let (text, closed) = answer(&mut extra, Duration::from_secs(5));
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 429"),
        "{text}"
    );
    assert!(closed, "the connection over the cap is closed: {text}");
    // The held ones still work; once one closes, a new one is served.
    assert!(ping_on(&mut held[0]).starts_with("HTTP/1.1 200"));
    drop(held.pop());
    let served = wait_for(Duration::from_secs(5), || {
        let mut s = TcpStream::connect(("127.0.0.1", t.port)).expect("connect");
        ping_on(&mut s).starts_with("HTTP/1.1 200")
    });
    assert!(served, "a closed connection gives its slot back");
    assert!(
        t.log().contains("-api-ip-conn-max"),
        "the refusal is logged"
    );
}

/// Asks `/ping` on a kept-alive connection: the first bytes of the answer (its status line and
/// headers, the small body with them), or the error.
fn ping_on(s: &mut TcpStream) -> String {
    if let Err(e) = s.write_all(b"GET /ping HTTP/1.1\r\nhost: x\r\n\r\n") {
        return e.to_string();
    }
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    match s.read(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn files_belong_to_their_owner() {
    let t = Tree::start("run", &[]);
    t.ready(2);
    add_admin(&t, "root", "rs");
    let a = add_account(&t, "fa", "s1", "A");
    add_account(&t, "fb", "s2", "B");
    let put = Call {
        version: 3,
        login: "fa",
        secret: "s1",
        method: "POST",
        target: "/file/put?prefix=docs&name=private.txt",
        content_type: Some("text/plain"),
        body: b"mine",
        expires: None,
    };
    let (s, v) = signed(&t, &put);
    assert_eq!(s, 200, "{v}");
    assert!(
        t.home
            .path()
            .join(format!("files/{a}/docs/private.txt"))
            .is_file(),
        "stored under the owner's id"
    );
    let get = format!("/file/get?prefix=docs&name=private.txt&id={a}");
    let del = format!("/file/del?prefix=docs&name=private.txt&id={a}");
    // Another account can neither read nor delete it, nor overwrite it.
    let (s, v) = call(&t, "fb", "s2", &get);
    assert_eq!((s, v["status"].clone()), (403, json!(403)), "{v}");
    let (s, v) = call(&t, "fb", "s2", &del);
    assert_eq!(s, 403, "{v}");
    let (s, v) = call(
        &t,
        "fb",
        "s2",
        &format!("/file/put?prefix=docs&name=private.txt&id={a}&data=eA"),
    );
    assert_eq!(s, 403, "{v}");
    // Without an id, a name is looked up among the caller's own files.
    let (s, _) = call(&t, "fb", "s2", "/file/get?prefix=docs&name=private.txt");
    assert_eq!(s, 404);
    let (s, _) = call(&t, "fb", "s2", "/file/del?prefix=docs&name=private.txt");
    assert_eq!(s, 404);
    // The owner reads it, with or without its own id; an admin reads and deletes it.
    let url = t.url("/file/get?prefix=docs&name=private.txt");
    let owner_sig = sig(&t, "fa", "s1", "/file/get?prefix=docs&name=private.txt");
    let body = agent()
        .get(&url)
        .set("bk-signature", &owner_sig)
        .call()
        .expect("the owner reads")
        .into_string()
        .expect("text");
    assert_eq!(body, "mine");
    let admin_sig = sig(&t, "root", "rs", &get);
    let body = agent()
        .get(&t.url(&get))
        .set("bk-signature", &admin_sig)
        .call()
        .expect("an admin reads")
        .into_string()
        .expect("text");
    assert_eq!(body, "mine");
    let (s, v) = call(&t, "root", "rs", &del);
    assert_eq!(s, 200, "{v}");
    let (s, _) = call(&t, "fa", "s1", "/file/get?prefix=docs&name=private.txt");
    assert_eq!(s, 404, "deleted by the admin");
    // A deleted account's files go with it.
    let (s, v) = signed(&t, &put);
    assert_eq!(s, 200, "{v}");
    let dir = t.home.path().join(format!("files/{a}"));
    assert!(dir.is_dir());
    let (s, v) = call(&t, "fa", "s1", "/account/del");
    assert_eq!(s, 200, "{v}");
    assert!(!dir.exists(), "files of a deleted account are left");
}

#[test]
fn websocket_origin_anonymous_ping_and_idle_limits() {
    let t = Tree::start(
        "run",
        &[
            "-server-web-workers",
            "1",
            "-api-allow-path",
            "^/ws$",
            "-api-ws-origins",
            "https://app.example",
            "-api-ws-ping-interval",
            "300ms",
            "-api-ws-pong-timeout",
            "1s",
            "-api-ws-idle-timeout",
            "3s",
        ],
    );
    t.ready(1);
    add_account(&t, "wo", "s1", "O");
    // An open path does not open anonymous sockets.
    assert_eq!(ws_connect(t.port, "/ws", &[]).err(), Some(401));
    // A browser's Origin must be the host itself or listed.
    let own = format!("http://{}", host(&t));
    for (origin, ok) in [
        ("http://evil.example", false),
        ("null", false),
        (own.as_str(), true),
        ("https://app.example", true),
    ] {
        // A fresh signature each time: the replay cache takes a used one for a replay.
        let s = sig(&t, "wo", "s1", "/ws");
        let r = ws_connect(t.port, "/ws", &[("bk-signature", &s), ("origin", origin)]);
        assert_eq!(r.is_ok(), ok, "{origin}: {:?}", r.err());
        if !ok {
            assert_eq!(r.err(), Some(403), "{origin}");
        }
    }
    // A peer that never answers the pings is closed after the pong timeout: read the raw
    // stream, so that tungstenite does not answer them.
    let ws = signed_ws(&t, "wo", "s1");
    let MaybeTlsStream::Plain(mut raw) = ws.into_inner() else {
        panic!("a plain socket")
    };
    let start = Instant::now();
    let (text, closed) = answer(&mut raw, Duration::from_secs(5));
    assert!(closed, "still open without pongs after 5 s");
    assert!(text.contains("no pong"), "{text:?}");
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    // A peer that answers pings but sends no request is closed after the idle timeout; one that
    // sends requests is not.
    let start = Instant::now();
    let mut idle = signed_ws(&t, "wo", "s1");
    let mut busy = signed_ws(&t, "wo", "s1");
    let (code, reason) = loop {
        assert_eq!(ask(&mut busy, "/ping"), json!({}));
        if let Some(closed) = closed_within(&mut idle, Duration::from_millis(200)) {
            break closed;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "an idle socket stays open"
        );
    };
    assert!(
        start.elapsed() >= Duration::from_millis(2900),
        "closed before the idle timeout: {:?}",
        start.elapsed()
    );
    assert_eq!(code, 1000, "{reason}");
    assert!(reason.contains("idle"), "{reason}");
    assert_eq!(
        ask(&mut busy, "/ping"),
        json!({}),
        "a busy socket stays open"
    );
}

#[test]
fn a_large_upload_does_not_hold_small_requests() {
    let t = Tree::start("run", &["-server-web-workers", "1"]);
    t.ready(1);
    add_account(&t, "big", "s1", "Big");
    // 8 MB of base64 in a JSON body (which carries every parameter): parsed and decoded off the
    // request task.
    let data: Vec<u8> = (0..6_000_000u32).map(|i| (i % 251) as u8).collect();
    let body = serde_json::to_vec(&json!({
        "prefix": "big",
        "name": "blob.bin",
        "data": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &data)
    }))
    .expect("json");
    assert!(body.len() > 7_900_000);
    let target = "/file/put";
    let c = Call {
        version: 3,
        login: "big",
        secret: "s1",
        method: "POST",
        target,
        content_type: Some("application/json"),
        body: &body,
        expires: None,
    };
    let signature = py_sign(&c, &host(&t));
    let head = format!(
        "POST {target} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nbk-signature: {signature}\r\nconnection: close\r\n\r\n",
        host(&t),
        body.len()
    );
    let port = t.port;
    let upload = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.write_all(head.as_bytes()).expect("head");
        // Sent in pieces, paced, so that the upload is in flight while /ping is asked.
        for chunk in body.chunks(512 * 1024) {
            s.write_all(chunk).expect("body");
            std::thread::sleep(Duration::from_millis(20));
        }
        answer(&mut s, Duration::from_secs(30)).0
    });
    let agent = agent();
    let mut worst = Duration::ZERO;
    while !upload.is_finished() {
        let start = Instant::now();
        let r = http_get(&agent, &t.url("/ping"));
        assert_eq!(r.status, 200, "{}", r.body);
        worst = worst.max(start.elapsed());
    }
    let answer = upload.join().expect("upload thread");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"size\":6000000"), "{answer}");
    // About 10 ms here in a debug build; about 1 s when the body is parsed, decoded and checked
    // on the request task.
    assert!(worst < Duration::from_millis(400), "/ping waited {worst:?}");
}

#[test]
fn per_account_quotas_answer_429() {
    let t = Tree::start(
        "run",
        &[
            "-api-quota-rate",
            "limited:5",
            "-api-quota-window",
            "10m",
            "-api-quota-storage",
            "*:1K,admin:0",
        ],
    );
    t.ready(2);
    add_admin(&t, "root", "rs");
    let q = add_account(&t, "qa", "s1", "Q");
    let qb = add_account(&t, "qb", "s2", "Q2");
    let qc = add_account(&t, "qc", "s3", "Q3");
    for id in [&q, &qc] {
        let (s, v) = call(
            &t,
            "root",
            "rs",
            &format!("/account/update?id={id}&type=limited"),
        );
        assert_eq!(s, 200, "{v}");
    }
    // Twelve requests against a rate of five: refused with 429 and a message, counted across
    // both workers (a window boundary in between still leaves one side over five).
    let answers: Vec<(u16, Value)> = (0..12)
        .map(|_| call(&t, "qa", "s1", "/account/get"))
        .collect();
    let refused: Vec<&(u16, Value)> = answers.iter().filter(|(s, _)| *s == 429).collect();
    assert!(!refused.is_empty(), "never refused: {answers:?}");
    assert!(
        refused[0].1["message"]
            .as_str()
            .is_some_and(|m| m.contains("-api-quota-rate")),
        "{:?}",
        refused[0]
    );
    assert!(
        answers.iter().all(|(s, _)| *s == 200 || *s == 429),
        "{answers:?}"
    );
    // WebSocket frames count like requests.
    let mut ws = signed_ws(&t, "qc", "s3");
    let frames: Vec<Value> = (0..12).map(|_| ask(&mut ws, "/ping")).collect();
    assert!(
        frames.iter().any(|v| v["status"] == json!(429)),
        "no frame refused: {frames:?}"
    );
    // Other types have no rate quota here: another account and the admin are served.
    for _ in 0..8 {
        assert_eq!(call(&t, "qb", "s2", "/account/get").0, 200);
        assert_eq!(call(&t, "root", "rs", "/account/get").0, 200);
    }

    // Storage: 1K per account; a replaced file counts once; admins have none.
    let put = |login: &str, secret: &str, name: &str, size: usize| {
        let target = format!("/file/put?prefix=q&name={name}");
        let body = vec![b'z'; size];
        let c = Call {
            version: 3,
            login,
            secret,
            method: "POST",
            target: &target,
            content_type: Some("application/octet-stream"),
            body: &body,
            expires: None,
        };
        signed(&t, &c)
    };
    assert_eq!(put("qb", "s2", "a", 600).0, 200);
    let (s, v) = put("qb", "s2", "b", 600);
    assert_eq!(s, 429, "{v}");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("-api-quota-storage")),
        "{v}"
    );
    assert!(
        !t.home.path().join("files").join(&qb).join("q/b").exists(),
        "nothing stored over the quota"
    );
    assert_eq!(put("qb", "s2", "a", 900).0, 200, "replacing counts once");
    assert_eq!(put("qb", "s2", "b", 200).0, 429);
    assert_eq!(put("root", "rs", "big", 4000).0, 200, "admins have none");
}
