//! The social endpoints through the real binary, on SQLite and on PostgreSQL: the account
//! scenario continued with icons (query, JSON with resize, multipart), connections with their
//! counters and reverse rows, counters, messages with images, status, and account deletion
//! cleaning all of it; the location search paged nearest first across cells, and moves within
//! min-distance; icon ACLs, formats, quality, deletes and limits; path traversal attempts on
//! files and icons; and the connection, counter, status and message options and endpoints the
//! scenario does not reach. Each runs on SQLite and on PostgreSQL. Requests are signed by
//! tests/sign.py.

use crate::api::{add_account, host, py_sign, signed, Call};
use crate::harness::*;
use base64::Engine;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// An account the test signs requests as.
struct User {
    login: String,
    secret: String,
    id: String,
}

fn user(t: &Tree, login: &str) -> User {
    let secret = format!("{login}-secret");
    let id = add_account(t, login, &secret, &format!("{login}%20Name"));
    User {
        login: login.into(),
        secret,
        id,
    }
}

/// A signed GET.
fn get(t: &Tree, u: &User, target: &str) -> (u16, Value) {
    signed(t, &Call::get(3, &u.login, &u.secret, target))
}

/// A signed POST with a JSON body.
fn post_json(t: &Tree, u: &User, path: &str, body: &Value) -> (u16, Value) {
    let text = body.to_string();
    let c = Call {
        version: 3,
        login: &u.login,
        secret: &u.secret,
        method: "POST",
        target: path,
        content_type: Some("application/json"),
        body: text.as_bytes(),
        expires: None,
    };
    signed(t, &c)
}

/// A GET for binary content, signed as `u` when given: status, body, content type.
fn fetch(t: &Tree, u: Option<&User>, target: &str) -> (u16, Vec<u8>, String) {
    let mut req = agent().get(&t.url(target));
    if let Some(u) = u {
        let sig = py_sign(&Call::get(3, &u.login, &u.secret, target), &host(t));
        req = req.set("bk-signature", &sig);
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {target}: {e}"),
    };
    let status = resp.status();
    let ct = resp.content_type().to_string();
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut body).expect("body");
    (status, body, ct)
}

/// A GET of `target` exactly as written (no client normalizes its dot segments): status, body.
fn raw_get(t: &Tree, target: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", t.port)).expect("connect");
    conn.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    write!(
        conn,
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut reply = String::new();
    conn.read_to_string(&mut reply).expect("reply");
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {reply}"));
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Query-string encoding.
pub(crate) fn q(s: &str) -> String {
    form_urlencoded_encode(s)
}

fn form_urlencoded_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A PNG of the given size with a gradient.
pub(crate) fn png(w: u32, h: u32) -> Vec<u8> {
    let img =
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 3) as u8, (y * 5) as u8, 120]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("png");
    out.into_inner()
}

fn dims(data: &[u8]) -> (u32, u32) {
    let img = image::load_from_memory(data).expect("an image");
    (img.width(), img.height())
}

/// The file of an icon: `images/PREFIX/XX/YY/TYPE-ID.EXT`, XX/YY the id's last four digits.
fn icon_file(home: &Path, prefix: &str, id: &str, kind: &str, ext: &str) -> PathBuf {
    let digits: String = id.chars().filter(|c| c.is_ascii_digit()).collect();
    let digits = format!("{digits:0>4}");
    let n = digits.len();
    home.join("images")
        .join(prefix)
        .join(&digits[n - 2..])
        .join(&digits[n - 4..n - 2])
        .join(format!("{kind}-{id}.{ext}"))
}

/// Where a tree keeps its tables: SQLite in its home, or a PostgreSQL schema of its own that is
/// dropped when the test ends.
pub(crate) struct Store {
    args: Vec<String>,
    schema: Option<String>,
}

impl Store {
    pub(crate) fn sqlite() -> Store {
        Store {
            args: Vec::new(),
            schema: None,
        }
    }

    /// `None` (the test is skipped) when PostgreSQL is not running outside CI.
    pub(crate) fn pgsql() -> Option<Store> {
        if !crate::harness::service_up(5432, "PostgreSQL") {
            return None;
        }
        let schema = format!("bkjs_social_{}_{}", std::process::id(), free_port());
        Some(Store {
            args: [
                "-db-pool",
                "pgsql",
                "-db-pgsql-pool",
                "postgresql://postgres@127.0.0.1:5432/test",
                "-db-pgsql-schema",
                &schema,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            schema: Some(schema),
        })
    }

    pub(crate) fn args(&self) -> Vec<&str> {
        self.args.iter().map(String::as_str).collect()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(s) = &self.schema {
            let _ = std::process::Command::new("psql")
                .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-c"])
                .arg(format!("DROP SCHEMA IF EXISTS {s} CASCADE"))
                .output();
        }
    }
}

fn start(store: &Store, extra: &[&str]) -> Tree {
    let mut args = vec!["-api-allow-path", "^/image/"];
    args.extend(store.args());
    args.extend(extra);
    let t = Tree::start("run", &args);
    t.ready(2);
    t
}

fn counters(t: &Tree, u: &User) -> Value {
    let (s, v) = get(t, u, "/counter/get");
    assert_eq!(s, 200, "{v}");
    v
}

fn count(v: &Value) -> usize {
    v["count"].as_u64().unwrap_or(u64::MAX) as usize
}

fn scenario(store: Store) {
    let t = start(&store, &["-api-status-interval", "1h"]);
    let home = t.home.path().to_path_buf();
    let a = user(&t, "alice");
    let b = user(&t, "bob");

    // Icons: by query (type 98, acl all, stored as it came), by JSON with a resize (type 99,
    // 128x128, acl auth), by multipart (an account icon as png).
    let small = png(40, 30);
    let (s, v) = get(
        &t,
        &a,
        &format!(
            "/icon/put?prefix=test&type=98&acl_allow=all&icon={}",
            q(&b64(&small))
        ),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["width"].clone(), v["height"].clone()),
        (json!(40), json!(30)),
        "{v}"
    );
    let f98 = icon_file(&home, "test", &a.id, "98", "jpg");
    assert_eq!(
        dims(&std::fs::read(&f98).expect("icon 98 stored")),
        (40, 30)
    );
    let big = png(300, 200);
    let (s, v) = post_json(
        &t,
        &a,
        "/icon/put",
        &json!({"prefix": "test", "type": "99", "acl_allow": "auth", "icon": b64(&big),
                "_width": 128, "_height": 128}),
    );
    assert_eq!(s, 200, "{v}");
    let f99 = icon_file(&home, "test", &a.id, "99", "jpg");
    let stored = std::fs::read(&f99).expect("icon 99 stored");
    assert_eq!(
        dims(&stored),
        (128, 128),
        "the stored image really is 128x128"
    );
    assert_eq!(&stored[..2], &[0xff, 0xd8], "re-encoded as JPEG");
    let boundary = "XbkjsX";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"icon\"; filename=\"me.png\"\r\nContent-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    body.extend(png(64, 64));
    body.extend(format!("\r\n--{boundary}--\r\n").as_bytes());
    let ct = format!("multipart/form-data; boundary={boundary}");
    let c = Call {
        version: 3,
        login: &a.login,
        secret: &a.secret,
        method: "POST",
        target: "/account/put/icon?type=1&_ext=png&_width=-100",
        content_type: Some(&ct),
        body: &body,
        expires: None,
    };
    let (s, v) = signed(&t, &c);
    assert_eq!(s, 200, "multipart: {v}");
    let (s, img, ct) = fetch(&t, Some(&a), "/account/get/icon?type=1");
    assert_eq!((s, ct.as_str()), (200, "image/png"));
    assert_eq!(dims(&img), (64, 64), "negative size: never upscaled");
    let (s, v) = get(&t, &a, "/icon/select?prefix=test");
    assert_eq!((s, count(&v)), (200, 2), "{v}");
    let by_type = |k: &str| {
        v["data"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["type"] == json!(k)).cloned())
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        by_type("98")["url"],
        json!(format!("/image/test/{}/98", a.id))
    );
    assert_eq!(by_type("98")["prefix"], json!("test"));
    assert_eq!(by_type("99")["acl_allow"], json!("auth"));
    assert!(by_type("99")["url"]
        .as_str()
        .is_some_and(|u| u.starts_with("/icon/get?prefix=test&type=99")));
    let (s, v) = get(&t, &a, "/account/select/icon");
    assert_eq!((s, count(&v)), (200, 1), "{v}");
    // Not an image: refused, nothing stored.
    let (s, v) = get(
        &t,
        &a,
        &format!(
            "/icon/put?prefix=test&type=97&icon={}",
            q(&b64(b"not an image"))
        ),
    );
    assert_eq!(s, 400, "{v}");
    assert!(!icon_file(&home, "test", &a.id, "97", "jpg").exists());

    // Connections: like and follow, counters on both sides, reverse rows.
    let (s, v) = get(&t, &a, &format!("/connection/add?id={}&type=like", b.id));
    assert_eq!(s, 200, "{v}");
    let (s, v) = get(&t, &a, &format!("/connection/put?id={}&type=follow", b.id));
    assert_eq!(s, 200, "{v}");
    let (s, v) = get(&t, &a, &format!("/connection/add?id={}&type=like", b.id));
    assert_eq!(s, 409, "twice: {v}");
    let (s, v) = get(&t, &a, &format!("/connection/put?id={}&type=follow", b.id));
    assert_eq!(s, 200, "a put again changes nothing: {v}");
    let (s, v) = get(&t, &a, &format!("/connection/add?id={}&type=like", a.id));
    assert_eq!(s, 400, "not to itself: {v}");
    let (s, v) = get(&t, &a, "/connection/add?id=nobody&type=like");
    assert_eq!(s, 404, "{v}");
    let (s, v) = get(&t, &a, &format!("/connection/add?id={}&type=li:ke", b.id));
    assert_eq!(s, 400, "{v}");
    let (s, v) = get(&t, &a, "/connection/select");
    assert_eq!((s, count(&v)), (200, 2), "{v}");
    let types: HashSet<String> = v["data"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            assert_eq!(r["id"], json!(b.id), "the other account: {r}");
            assert_eq!(r["alias"], json!("bob Name"));
            r["type"].as_str().unwrap_or("").to_string()
        })
        .collect();
    assert_eq!(
        types,
        HashSet::from(["like".to_string(), "follow".to_string()])
    );
    let (s, v) = get(&t, &a, "/connection/select?type=like&_details=1");
    assert_eq!((s, count(&v)), (200, 1), "{v}");
    let (s, v) = get(&t, &a, "/connection/select?_count=1");
    assert_eq!((s, count(&v)), (200, 1), "{v}");
    let next = v["next_token"].as_str().expect("a second page").to_string();
    let (s, v2) = get(
        &t,
        &a,
        &format!("/connection/select?_count=1&_start={next}"),
    );
    assert_eq!((s, count(&v2)), (200, 1), "{v2}");
    assert_ne!(v["data"][0]["type"], v2["data"][0]["type"]);
    assert!(v2.get("next_token").is_none(), "the last page: {v2}");
    let (s, v) = get(&t, &a, &format!("/connection/get?id={}&type=follow", b.id));
    assert_eq!(
        (s, v["type"].clone(), v["id"].clone()),
        (200, json!("follow"), json!(b.id)),
        "{v}"
    );
    let (s, v) = get(&t, &b, &format!("/reference/get?id={}&type=follow", a.id));
    assert_eq!((s, v["alias"].clone()), (200, json!("alice Name")), "{v}");
    let (s, _) = get(&t, &a, &format!("/connection/get?id={}&type=hug", b.id));
    assert_eq!(s, 404);
    let (ca, cb) = (counters(&t, &a), counters(&t, &b));
    assert_eq!(
        (ca["like0"].clone(), ca["follow0"].clone()),
        (json!(1), json!(1)),
        "{ca}"
    );
    assert_eq!(
        (cb["like1"].clone(), cb["follow1"].clone()),
        (json!(1), json!(1)),
        "{cb}"
    );
    let (s, v) = get(&t, &b, "/reference/select");
    assert_eq!((s, count(&v)), (200, 2), "{v}");
    assert_eq!(v["data"][0]["id"], json!(a.id));
    let (s, v) = get(
        &t,
        &b,
        &format!("/connection/add?id={}&type=like&_connected=1", a.id),
    );
    assert_eq!(
        (s, v["id"].clone()),
        (200, json!(b.id)),
        "a liked b back: {v}"
    );
    let (s, v) = get(&t, &b, &format!("/connection/del?id={}&type=like", a.id));
    assert_eq!((s, v["count"].clone()), (200, json!(1)), "{v}");
    // Delete one, then all.
    let (s, v) = get(&t, &a, &format!("/connection/del?id={}&type=like", b.id));
    assert_eq!((s, v["count"].clone()), (200, json!(1)), "{v}");
    let (ca, cb) = (counters(&t, &a), counters(&t, &b));
    assert_eq!(
        (ca["like0"].clone(), ca["follow0"].clone()),
        (json!(0), json!(1)),
        "{ca}"
    );
    assert_eq!(
        (cb["like1"].clone(), cb["follow1"].clone()),
        (json!(0), json!(1)),
        "{cb}"
    );
    let (s, v) = get(&t, &a, "/connection/select");
    assert_eq!((s, count(&v)), (200, 1), "{v}");
    let (s, v) = get(&t, &a, "/connection/del");
    assert_eq!((s, v["count"].clone()), (200, json!(1)), "{v}");
    let (s, v) = get(&t, &a, "/connection/select");
    assert_eq!((s, count(&v)), (200, 0), "none left: {v}");
    let (s, v) = get(&t, &b, "/reference/select");
    assert_eq!((s, count(&v)), (200, 0), "no reverse rows left: {v}");
    let (ca, cb) = (counters(&t, &a), counters(&t, &b));
    assert_eq!(ca["follow0"], json!(0), "{ca}");
    assert_eq!(cb["follow1"], json!(0), "{cb}");

    // Counters: ping the other account; only public columns there.
    let (s, v) = get(&t, &a, &format!("/counter/incr?id={}&ping=1", b.id));
    assert_eq!((s, v["ping"].clone()), (200, json!(1)), "{v}");
    assert!(
        v.get("like1").is_none(),
        "only public columns of others: {v}"
    );
    let (s, v) = get(&t, &a, &format!("/counter/incr?id={}&like1=5", b.id));
    assert_eq!(s, 403, "{v}");
    let (s, v) = get(&t, &a, &format!("/counter/incr?id={}&ping=many", b.id));
    assert_eq!(s, 400, "{v}");
    let (s, v) = get(&t, &a, &format!("/counter/get?id={}", b.id));
    assert_eq!((s, v["ping"].clone()), (200, json!(1)), "{v}");
    assert!(v.get("follow1").is_none(), "{v}");
    assert_eq!(
        counters(&t, &b)["like1"],
        json!(0),
        "nothing changed by the refusals"
    );

    // Messages: bob to alice, alice to herself with an image.
    let (s, v) = get(
        &t,
        &b,
        &format!("/message/add?id={}&msg=hello%20alice", a.id),
    );
    assert_eq!((s, v["recipient"].clone()), (200, json!(a.id)), "{v}");
    let bob_ms = v["mtime"].as_i64().expect("mtime");
    let (s, v) = get(
        &t,
        &a,
        &format!(
            "/message/add?id={}&msg=note&icon={}",
            a.id,
            q(&b64(&png(20, 20)))
        ),
    );
    assert_eq!(s, 200, "{v}");
    let self_ms = v["mtime"].as_i64().expect("mtime");
    let (s, v) = get(&t, &a, "/message/add?msg=x");
    assert_eq!(s, 400, "no recipient: {v}");
    let (s, v) = get(&t, &a, &format!("/message/add?id={}", b.id));
    assert_eq!(s, 400, "neither msg nor icon: {v}");
    let (s, v) = get(&t, &a, "/message/get");
    assert_eq!((s, count(&v)), (200, 2), "inbox: {v}");
    let from_bob = v["data"]
        .as_array()
        .and_then(|r| r.iter().find(|m| m["sender"] == json!(b.id)).cloned())
        .expect("bob's message");
    assert_eq!(from_bob["msg"], json!("hello alice"));
    assert_eq!(from_bob["mtime"], json!(bob_ms));
    assert_eq!(counters(&t, &a)["msg1"], json!(2), "two received");
    assert_eq!(counters(&t, &b)["msg0"], json!(1), "one sent");
    let (s, img, _) = fetch(
        &t,
        Some(&a),
        &format!("/message/image?sender={}&mtime={self_ms}", a.id),
    );
    assert_eq!(s, 200);
    assert_eq!(dims(&img), (20, 20));
    let (s, v) = get(
        &t,
        &a,
        &format!("/message/archive?sender={}&mtime={bob_ms}", b.id),
    );
    assert_eq!(s, 200, "{v}");
    let (s, v) = get(&t, &a, "/message/get");
    assert_eq!((s, count(&v)), (200, 1), "{v}");
    let (s, v) = get(&t, &a, "/message/get?_archive=1");
    assert_eq!((s, count(&v)), (200, 1), "read and archived: {v}");
    assert_eq!(v["data"][0]["mtime"], json!(self_ms));
    let (s, v) = get(&t, &a, "/message/get");
    assert_eq!((s, count(&v)), (200, 0), "{v}");
    let (s, v) = get(&t, &b, "/message/get/sent");
    assert_eq!((s, count(&v)), (200, 1), "{v}");
    assert_eq!(v["data"][0]["recipient"], json!(a.id));
    let (s, v) = get(&t, &a, "/message/get/archive");
    assert_eq!((s, count(&v)), (200, 2), "{v}");
    let (s, v) = get(
        &t,
        &a,
        &format!("/message/get/archive?sender={}&_details=1", b.id),
    );
    assert_eq!((s, count(&v)), (200, 1), "{v}");
    assert_eq!(v["data"][0]["alias"], json!("bob Name"));
    let (s, v) = get(&t, &a, &format!("/message/del/archive?sender={}", b.id));
    assert_eq!((s, v["count"].clone()), (200, json!(1)), "{v}");
    let (s, v) = get(&t, &a, &format!("/message/get/archive?sender={}", b.id));
    assert_eq!((s, count(&v)), (200, 0), "{v}");
    let (s, _, _) = fetch(
        &t,
        Some(&a),
        &format!("/message/image?sender={}&mtime={self_ms}", a.id),
    );
    assert_eq!(s, 200, "the image stays with its archived message");
    // _trash deletes what it reads; _nosent keeps no copy for the sender.
    let (s, v) = get(
        &t,
        &b,
        &format!("/message/add?id={}&msg=once&_nosent=1", a.id),
    );
    assert_eq!((s, v["sender"].clone()), (200, json!(b.id)), "{v}");
    let (s, v) = get(&t, &b, "/message/get/sent");
    assert_eq!((s, count(&v)), (200, 1), "no second sent row: {v}");
    let (s, v) = get(&t, &a, "/message/get?_trash=1");
    assert_eq!((s, count(&v)), (200, 1), "{v}");
    assert_eq!(v["data"][0]["msg"], json!("once"));
    let (s, v) = get(&t, &a, "/message/get");
    assert_eq!((s, count(&v)), (200, 0), "{v}");
    let (s, v) = get(&t, &a, "/message/get/archive");
    assert_eq!((s, count(&v)), (200, 1), "trash does not archive: {v}");

    // Status.
    let (s, v) = get(&t, &a, "/status/put");
    assert_eq!((s, v["online"].clone()), (200, json!(true)), "{v}");
    let (s, v) = get(&t, &b, &format!("/status/get?id={},{}", a.id, b.id));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"][0]["online"], json!(true), "{v}");
    assert_eq!(
        v["data"][1]["online"],
        json!(false),
        "bob never put a status: {v}"
    );
    let (_, before) = get(&t, &a, "/status/get");
    assert!(wait_for(std::time::Duration::from_secs(5), || now_ms()
        > before["atime"].as_i64().unwrap_or(0) + 5));
    let (s, v) = get(&t, &a, "/status/put?_check=1");
    assert_eq!(s, 200, "{v}");
    assert!(
        v["atime"].as_i64() > before["atime"].as_i64(),
        "refreshed: {v}"
    );
    assert_eq!(
        v["mtime"], before["mtime"],
        "the database row was not written: {v}"
    );
    let (_, seen) = get(&t, &b, &format!("/status/get?id={}", a.id));
    assert_eq!(
        seen["data"][0]["atime"], v["atime"],
        "readers see the refreshed time: {seen}"
    );
    let (s, v) = get(&t, &a, "/status/put?status=offline&_check=1");
    assert_eq!(
        (s, v["online"].clone()),
        (200, json!(false)),
        "a new status is written: {v}"
    );
    let (_, seen) = get(&t, &b, &format!("/status/get?id={}", a.id));
    assert_eq!(seen["data"][0]["online"], json!(false), "{seen}");

    // Files.
    let c = Call {
        version: 3,
        login: &a.login,
        secret: &a.secret,
        method: "POST",
        target: "/file/put?prefix=docs&name=notes/a.txt",
        content_type: Some("text/plain"),
        body: b"file body",
        expires: None,
    };
    let (s, v) = signed(&t, &c);
    assert_eq!((s, v["size"].clone()), (200, json!(9)), "{v}");
    let (s, body, ct) = fetch(&t, Some(&a), "/file/get?prefix=docs&name=notes/a.txt");
    assert_eq!((s, body.as_slice()), (200, &b"file body"[..]));
    assert!(ct.starts_with("text/plain"), "{ct}");
    assert_eq!(
        std::fs::read(home.join(format!("files/{}/docs/notes/a.txt", a.id))).expect("stored"),
        b"file body"
    );
    let (s, v) = get(&t, &a, "/file/del?prefix=docs&name=notes/a.txt");
    assert_eq!(s, 200, "{v}");
    let (s, _, _) = fetch(&t, Some(&a), "/file/get?prefix=docs&name=notes/a.txt");
    assert_eq!(s, 404);

    // Alice gets a location and a follower relation, then deletes her account: her rows, files
    // and the other side's rows and counters go.
    let (s, v) = get(&t, &a, "/location/put?latitude=40.7&longitude=-74.0");
    assert_eq!(s, 200, "{v}");
    let (s, v) = get(&t, &a, &format!("/connection/add?id={}&type=follow", b.id));
    assert_eq!(s, 200, "{v}");
    let (s, v) = get(&t, &b, &format!("/connection/add?id={}&type=like", a.id));
    assert_eq!(s, 200, "{v}");
    assert_eq!(counters(&t, &b)["follow1"], json!(1));
    let (s, v) = get(&t, &a, "/account/del");
    assert_eq!(s, 200, "{v}");
    let (s, v) = get(&t, &b, "/reference/select");
    assert_eq!(
        (s, count(&v)),
        (200, 0),
        "alice's connection to bob is gone: {v}"
    );
    let (s, v) = get(&t, &b, "/connection/select");
    assert_eq!(
        (s, count(&v)),
        (200, 0),
        "bob's connection to alice is gone: {v}"
    );
    let cb = counters(&t, &b);
    assert_eq!(
        (cb["follow1"].clone(), cb["like0"].clone()),
        (json!(0), json!(0)),
        "{cb}"
    );
    assert!(!f98.exists() && !f99.exists(), "icon files removed");
    let (s, v) = get(&t, &b, &format!("/status/get?id={}", a.id));
    assert_eq!(s, 200);
    assert!(v["data"][0].get("status").is_none(), "status removed: {v}");
    let (s, v) = get(
        &t,
        &b,
        "/location/get?latitude=40.7&longitude=-74.0&distance=10",
    );
    assert_eq!((s, count(&v)), (200, 0), "location removed: {v}");
    let (s, _, _) = fetch(&t, Some(&b), &format!("/image/test/{}/98", a.id));
    assert_eq!(s, 404);
    let images: Vec<PathBuf> = walk(&home.join("images"));
    assert!(
        images.iter().all(|p| !p.to_string_lossy().contains(&a.id)),
        "no file of alice left: {images:?}"
    );
}

/// Every file under `dir` (symbolic links are listed, never followed).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn social_scenario_on_sqlite() {
    scenario(Store::sqlite());
}

#[test]
fn social_scenario_on_postgresql() {
    if let Some(store) = Store::pgsql() {
        scenario(store);
    }
}

/// A pseudo-random sequence for the test's points (seeded and printed, so a failure can be
/// replayed with BKJS_TEST_SEED).
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("BKJS_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| now_ms() as u64);
        eprintln!("location test seed: {seed} (BKJS_TEST_SEED={seed} replays it)");
        Rng(seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407))
    }
    /// Uniform in [lo, hi).
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lo + (hi - lo) * ((self.0 >> 11) as f64 / (1u64 << 53) as f64)
    }
}

const R: f64 = 6378.1;

fn haversine(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let a = ((p2 - p1) / 2.0).sin().powi(2)
        + p1.cos() * p2.cos() * ((lon2 - lon1).to_radians() / 2.0).sin().powi(2);
    2.0 * R * a.sqrt().asin()
}

/// The point `km` from (lat, lon) on bearing `deg`.
fn destination(lat: f64, lon: f64, km: f64, deg: f64) -> (f64, f64) {
    let (p1, l1, d, b) = (lat.to_radians(), lon.to_radians(), km / R, deg.to_radians());
    let p2 = (p1.sin() * d.cos() + p1.cos() * d.sin() * b.cos()).asin();
    let l2 = l1 + (b.sin() * d.sin() * p1.cos()).atan2(d.cos() - p1.sin() * p2.sin());
    (
        p2.to_degrees(),
        (l2.to_degrees() + 540.0).rem_euclid(360.0) - 180.0,
    )
}

fn location_search(store: Store) {
    let t = start(&store, &[]);
    let mut rng = Rng::new();
    let (clat, clon) = (rng.range(-60.0, 60.0), rng.range(-170.0, 170.0));
    let radius = 30.0;
    let n = 7;
    // (user, distance from the centre) of every point; inside ones first.
    let mut points: Vec<(User, f64)> = Vec::new();
    let mut cells = HashSet::new();
    for i in 0..2 * n {
        // Two inside points lie due north and due south of the centre, 54 km apart:
        // more than the height of a 4-character geohash cell (about 20 km), so the search has to
        // span several cells whatever the random centre; the others fall anywhere.
        let (km, bearing) = match i {
            1 => (radius * 0.9, 0.0),
            2 => (radius * 0.9, 180.0),
            _ if i < n => (rng.range(0.5, radius * 0.95), rng.range(0.0, 360.0)),
            _ => (
                rng.range(radius * 1.05, radius * 2.0),
                rng.range(0.0, 360.0),
            ),
        };
        let (lat, lon) = destination(clat, clon, km, bearing);
        let u = user(&t, &format!("p{i}"));
        let (s, v) = get(
            &t,
            &u,
            &format!("/location/put?latitude={lat}&longitude={lon}"),
        );
        assert_eq!(s, 200, "{v}");
        if i < n {
            cells.insert(v["geohash"].as_str().expect("own geohash")[..4].to_string());
        }
        points.push((u, haversine(clat, clon, lat, lon)));
    }
    assert!(
        cells.len() >= 2,
        "the inside points are in several cells: {cells:?}"
    );
    // A move within min-distance is ignored.
    let (s, v) = get(
        &t,
        &points[0].0,
        &format!("/location/put?latitude={clat}&longitude={clon}"),
    );
    if points[0].1 <= 5.0 {
        assert_eq!((s, v["status"].clone()), (305, json!(305)), "{v}");
    } else {
        assert_eq!(s, 200, "{v}");
    }
    let me = user(&t, "searcher");
    let mut inside: Vec<(&str, f64)> = points
        .iter()
        .filter(|(_, d)| *d <= radius)
        .map(|(u, d)| (u.id.as_str(), *d))
        .collect();
    // The first point may have moved to the centre.
    if s == 200 {
        inside.retain(|(id, _)| *id != points[0].0.id);
        inside.push((points[0].0.id.as_str(), 0.0));
    }
    // Nearest first, equal distances by id, as the server pages them (points 1 and 2 are at the
    // same distance by construction: their computed distances are often bit-equal).
    inside.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(b.0)));
    for path in ["/location/get", "/account/select/location"] {
        let mut seen = Vec::new();
        let mut token = String::new();
        for page in 0.. {
            assert!(page < 20, "too many pages");
            let target = if token.is_empty() {
                format!("{path}?latitude={clat}&longitude={clon}&distance={radius}&_count=3")
            } else {
                format!("{path}?_count=3&_start={token}")
            };
            let (s, v) = get(&t, &me, &target);
            assert_eq!(s, 200, "{v}");
            assert!(count(&v) <= 3, "{v}");
            for r in v["data"].as_array().expect("rows") {
                assert!(r.get("latitude").is_none(), "no coordinates of others: {r}");
                let d = r["distance"].as_f64().expect("distance");
                assert_eq!(d % 5.0, 0.0, "rounded down to min-distance: {r}");
                seen.push(r["id"].as_str().expect("id").to_string());
            }
            match v["next_token"].as_str() {
                Some(next) => token = next.to_string(),
                None => break,
            }
        }
        let want: Vec<String> = inside.iter().map(|(id, _)| id.to_string()).collect();
        assert_eq!(
            seen, want,
            "{path}: exactly the inside points, each once, nearest first"
        );
    }
    // The radius is clamped to max-distance (50 km).
    let (s, v) = get(
        &t,
        &me,
        &format!(
            "/location/get?latitude={clat}&longitude={clon}&distance=1000&_count=100&_round=0"
        ),
    );
    assert_eq!(s, 200, "{v}");
    let within_50 = points.iter().filter(|(_, d)| *d <= 50.0).count();
    assert_eq!(count(&v), within_50, "every point within 50 km: {v}");
    // bksh -location-put moves an account like /location/put does.
    let (lat, lon) = destination(clat, clon, 40.0, 90.0);
    let mut args = store.args();
    let (lat_s, lon_s) = (lat.to_string(), lon.to_string());
    args.extend([
        "-location-put",
        "login",
        "p1",
        "latitude",
        &lat_s,
        "longitude",
        &lon_s,
    ]);
    let (code, out, err) = crate::api::bksh(t.home.path(), &args);
    assert_eq!(code, Some(0), "{out}{err}");
    let moved: Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(moved["id"], json!(points[1].0.id), "{moved}");
    let (s, v) = get(
        &t,
        &me,
        &format!("/location/get?latitude={lat}&longitude={lon}&distance=5&_round=0"),
    );
    assert_eq!(s, 200, "{v}");
    assert!(
        v["data"]
            .as_array()
            .expect("rows")
            .iter()
            .any(|r| r["id"] == moved["id"]),
        "found at its new place: {v}"
    );
    let (code, _, err) = crate::api::bksh(
        t.home.path(),
        &["-location-put", "login", "p1", "latitude", "x"],
    );
    assert_ne!(code, Some(0), "a bad latitude: {err}");
    assert!(v["data"]
        .as_array()
        .expect("rows")
        .iter()
        .all(|r| r["distance"].as_f64() <= Some(50.0)));
    // Bad input.
    for bad in [
        "/location/get?latitude=abc&longitude=1",
        "/location/get?latitude=95&longitude=1",
        "/location/get?longitude=1",
        "/location/get?_start=zz",
        "/location/put?latitude=1&longitude=200",
    ] {
        let (s, v) = get(&t, &me, bad);
        assert_eq!((s, v["status"].clone()), (400, json!(400)), "{bad}: {v}");
    }
}

#[test]
fn location_search_pages_nearest_first_on_sqlite() {
    location_search(Store::sqlite());
}

#[test]
fn location_search_pages_nearest_first_on_postgresql() {
    if let Some(store) = Store::pgsql() {
        location_search(store);
    }
}

#[test]
fn icon_acls_are_enforced_on_read_on_sqlite() {
    icon_acls(Store::sqlite());
}

#[test]
fn icon_acls_are_enforced_on_read_on_postgresql() {
    if let Some(store) = Store::pgsql() {
        icon_acls(store);
    }
}

fn icon_acls(store: Store) {
    let t = start(&store, &[]);
    let a = user(&t, "owner");
    let b = user(&t, "other");
    let c = user(&t, "third");
    let put = |kind: &str, acl: &str| {
        let target = format!(
            "/icon/put?prefix=pics&type={kind}&acl_allow={}&icon={}",
            q(acl),
            q(&b64(&png(8, 8)))
        );
        let (s, v) = get(&t, &a, &target);
        assert_eq!(s, 200, "{v}");
    };
    put("private", "");
    put("public", "all");
    put("members", "auth");
    put("friends", &format!("{},somebody", b.id));
    let read =
        |u: Option<&User>, kind: &str| fetch(&t, u, &format!("/image/pics/{}/{kind}", a.id)).0;
    // "": the owner only.
    assert_eq!(read(Some(&a), "private"), 200);
    assert_eq!(read(Some(&b), "private"), 404);
    assert_eq!(read(None, "private"), 404);
    let (s, _, _) = fetch(
        &t,
        Some(&b),
        &format!("/icon/get?prefix=pics&type=private&id={}", a.id),
    );
    assert_eq!(s, 404, "not through /icon/get either");
    // all: anyone, even unsigned where the path is open.
    assert_eq!(read(Some(&b), "public"), 200);
    assert_eq!(read(None, "public"), 200);
    // auth: a signature is needed.
    assert_eq!(read(None, "members"), 404);
    assert_eq!(read(Some(&c), "members"), 200);
    // A list of ids.
    assert_eq!(read(Some(&b), "friends"), 200);
    assert_eq!(read(Some(&c), "friends"), 404);
    // Listings show only what the caller may read.
    let (s, v) = get(&t, &b, &format!("/icon/select?prefix=pics&id={}", a.id));
    assert_eq!(s, 200, "{v}");
    let kinds: HashSet<&str> = v["data"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["type"].as_str())
        .collect();
    assert_eq!(kinds, HashSet::from(["public", "members", "friends"]));
    // Others cannot write or delete the owner's icons.
    let (s, _) = get(
        &t,
        &b,
        &format!("/icon/del?prefix=pics&type=public&id={}", a.id),
    );
    assert_eq!(s, 403);
    assert_eq!(read(None, "public"), 200, "still there");
}

#[test]
fn path_traversal_on_files_and_icons_is_refused_on_sqlite() {
    path_traversal(Store::sqlite());
}

#[test]
fn path_traversal_on_files_and_icons_is_refused_on_postgresql() {
    if let Some(store) = Store::pgsql() {
        path_traversal(store);
    }
}

fn path_traversal(store: Store) {
    let t = start(&store, &["-api-icon-limit", "*:2"]);
    let home = t.home.path().to_path_buf();
    let outside = home.parent().expect("parent").to_path_buf();
    let a = user(&t, "mallory");
    let body = b"evil";
    let attempts = [
        "prefix=docs&name=../../escaped.txt",
        "prefix=docs&name=..%2F..%2Fescaped.txt",
        "prefix=..&name=escaped.txt",
        "prefix=../..&name=escaped.txt",
        "prefix=docs&name=/tmp/escaped.txt",
        "prefix=docs&name=a/../../escaped.txt",
        "prefix=docs&name=a%00b",
        "prefix=docs&name=a%5C..%5Cb",
        "prefix=%2Ftmp&name=escaped.txt",
        "prefix=docs&name=",
    ];
    for q in attempts {
        for op in ["put", "get", "del"] {
            let target = format!("/file/{op}?{q}");
            let c = Call {
                version: 3,
                login: &a.login,
                secret: &a.secret,
                method: "POST",
                target: &target,
                content_type: Some("application/octet-stream"),
                body,
                expires: None,
            };
            let (s, v) = signed(&t, &c);
            assert_eq!((s, v["status"].clone()), (400, json!(400)), "{target}: {v}");
        }
    }
    let name = format!("{}/x", "y".repeat(300));
    let (s, _) = get(
        &t,
        &a,
        &format!("/file/put?prefix=docs&name={name}&data={}", b64(body)),
    );
    assert_eq!(s, 400, "a part too long");
    // A symbolic link inside files/ that points outside is not followed.
    let docs = home.join(format!("files/{}/docs", a.id));
    std::fs::create_dir_all(&docs).expect("files dir");
    std::os::unix::fs::symlink(&outside, docs.join("out")).expect("symlink");
    let (s, v) = get(
        &t,
        &a,
        &format!(
            "/file/put?prefix=docs&name=out/escaped.txt&data={}",
            b64(body)
        ),
    );
    assert_eq!(s, 400, "through a symlink: {v}");
    let png = q(&b64(&png(4, 4)));
    for bad in [
        format!("/icon/put?prefix=../../x&type=1&icon={png}"),
        format!("/icon/put?prefix=pics&type=../../x&icon={png}"),
        format!("/icon/put?prefix=pics&type=a/b&icon={png}"),
        format!("/icon/put?prefix=pics&id=..%2F..&type=1&icon={png}"),
        format!("/icon/put?prefix=pics&type=1&_ext=..%2Fsh&icon={png}"),
        format!("/account/put/icon?type=..&icon={png}"),
        format!("/icon/put?prefix=pics&type=4&latitude=north&longitude=1&icon={png}"),
        "/icon/get?prefix=..&type=1".to_string(),
    ] {
        let (s, v) = get(&t, &a, &bad);
        assert_eq!(s, 400, "{bad}: {v}");
    }
    // /image/PREFIX/ID/TYPE: every segment is validated, signed or not.
    for bad in [
        format!("/image/..%2F..%2Fetc/{}/passwd", a.id),
        format!("/image/..%2F..%2Fetc/{}/1", a.id),
        format!("/image/%2Ftmp/{}/1", a.id),
        "/image/pics/..%2F..%2Fetc/passwd".to_string(),
        format!("/image/pics/{}/..%2F..%2Fpasswd", a.id),
        format!("/image/pics/{}/a%00b", a.id),
        format!("/image/pics/{}/a%5C..%5Cb", a.id),
    ] {
        for who in [Some(&a), None] {
            let (s, body, _) = fetch(&t, who, &bad);
            assert_eq!(s, 400, "{bad}: {}", String::from_utf8_lossy(&body));
        }
    }
    // Dot segments as sent, not normalized away by a client: refused before routing.
    for raw in [
        "/image/../../etc/passwd".to_string(),
        format!("/image/pics/{}/../../../../etc/passwd", a.id),
        format!("/image/pics/%2e%2e/{}/1", a.id),
        "/file/../../escaped.txt".to_string(),
    ] {
        let (s, body) = raw_get(&t, &raw);
        assert_eq!(s, 400, "{raw}: {body}");
    }
    let after: HashSet<PathBuf> = std::fs::read_dir(&outside)
        .expect("tmp")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains("escaped"))
        })
        .collect();
    assert!(after.is_empty(), "written outside the home: {after:?}");
    assert!(!outside.join("escaped.txt").exists());
    assert!(walk(&home)
        .iter()
        .all(|p| !p.to_string_lossy().contains("escaped")));
    // The icon limit: two icons per prefix, a third refused, a replacement allowed.
    for kind in ["1", "2"] {
        let (s, v) = get(
            &t,
            &a,
            &format!("/icon/put?prefix=pics&type={kind}&icon={png}"),
        );
        assert_eq!(s, 200, "{v}");
    }
    let (s, v) = get(&t, &a, &format!("/icon/put?prefix=pics&type=3&icon={png}"));
    assert_eq!(s, 400, "over -api-icon-limit: {v}");
    let (s, v) = get(
        &t,
        &a,
        &format!("/icon/put?prefix=pics&type=2&_ext=png&icon={png}"),
    );
    assert_eq!(s, 200, "a replacement: {v}");
    assert!(
        !icon_file(&home, "pics", &a.id, "2", "jpg").exists(),
        "the old format's file went"
    );
    assert!(icon_file(&home, "pics", &a.id, "2", "png").exists());
}

/// A counter column of a `/counter/get` reply: a column never written counts as 0.
fn counter(v: &Value, col: &str) -> i64 {
    match &v[col] {
        Value::Null => 0,
        n => n
            .as_i64()
            .unwrap_or_else(|| panic!("{col} is not a number: {v}")),
    }
}

/// The rows of a list reply.
fn rows(v: &Value) -> Vec<Value> {
    v["data"]
        .as_array()
        .unwrap_or_else(|| panic!("a list: {v}"))
        .clone()
}

/// `_noreference`, `_nocounter`, `_connected` without a reverse connection, `/connection/update`
/// and `/connection/incr`, `_details`, a type filter with paging, and deleting all connections
/// of a type.
fn connection_options(store: Store) {
    let t = start(&store, &[]);
    let a = user(&t, "ann");
    let b = user(&t, "ben");
    let c = user(&t, "cat");
    let d = user(&t, "dan");

    // _noreference: the connection and its counters, but no reverse row.
    let (s, v) = get(
        &t,
        &a,
        &format!("/connection/add?id={}&type=like&_noreference=1", b.id),
    );
    assert_eq!(s, 200, "{v}");
    let (s, v) = get(&t, &a, &format!("/connection/get?id={}&type=like", b.id));
    assert_eq!((s, v["id"].clone()), (200, json!(b.id)), "{v}");
    let (s, v) = get(&t, &b, &format!("/reference/get?id={}&type=like", a.id));
    assert_eq!(s, 404, "no reverse row: {v}");
    let (s, v) = get(&t, &b, "/reference/select");
    assert_eq!((s, count(&v)), (200, 0), "{v}");
    assert_eq!(counter(&counters(&t, &a), "like0"), 1);
    assert_eq!(counter(&counters(&t, &b), "like1"), 1);

    // _nocounter: both rows, no counter changes (on add and on del).
    let (before_a, before_b) = (counters(&t, &a), counters(&t, &b));
    let (s, v) = get(
        &t,
        &a,
        &format!("/connection/add?id={}&type=follow&_nocounter=1", b.id),
    );
    assert_eq!(s, 200, "{v}");
    let (s, v) = get(&t, &b, &format!("/reference/get?id={}&type=follow", a.id));
    assert_eq!(
        (s, v["alias"].clone()),
        (200, json!("ann Name")),
        "the reverse row: {v}"
    );
    assert_eq!(counters(&t, &a), before_a, "no counter of the caller");
    assert_eq!(counters(&t, &b), before_b, "no counter of the other");
    let (s, v) = get(
        &t,
        &a,
        &format!("/connection/del?id={}&type=follow&_nocounter=1", b.id),
    );
    assert_eq!((s, v["count"].clone()), (200, json!(1)), "{v}");
    assert_eq!(counters(&t, &a), before_a);
    assert_eq!(counters(&t, &b), before_b);
    let (s, v) = get(&t, &b, "/reference/select");
    assert_eq!((s, count(&v)), (200, 0), "the reverse row went: {v}");

    // _connected when the other side has no connection back: an empty object.
    let (s, v) = get(
        &t,
        &c,
        &format!("/connection/add?id={}&type=like&_connected=1", d.id),
    );
    assert_eq!((s, v.clone()), (200, json!({})), "{v}");

    // /connection/update changes an existing connection and its reverse row, counts nothing.
    let before_c = counters(&t, &c);
    let (s, v) = get(
        &t,
        &c,
        &format!("/connection/update?id={}&type=like&status=close", d.id),
    );
    assert_eq!(s, 200, "{v}");
    let (s, v) = get(&t, &c, &format!("/connection/get?id={}&type=like", d.id));
    assert_eq!(
        (s, v["status"].clone(), v["alias"].clone()),
        (200, json!("close"), json!("dan Name")),
        "only the given column changed: {v}"
    );
    let (s, v) = get(&t, &d, &format!("/reference/get?id={}&type=like", c.id));
    assert_eq!((s, v["status"].clone()), (200, json!("close")), "{v}");
    assert_eq!(counters(&t, &c), before_c, "an update counts nothing");
    let (s, v) = get(
        &t,
        &c,
        &format!("/connection/update?id={}&type=hug&status=x", d.id),
    );
    assert_eq!(s, 404, "no such connection to update: {v}");
    let (s, v) = get(&t, &c, &format!("/connection/get?id={}&type=hug", d.id));
    assert_eq!(s, 404, "an update creates nothing: {v}");

    // /connection/incr creates a connection without an alias; _details merges
    // the other account's public bk_account columns (id, alias), so the alias comes only from
    // the account.
    let (s, v) = get(&t, &a, &format!("/connection/incr?id={}&type=visit", c.id));
    assert_eq!(s, 200, "{v}");
    let (s, v) = get(&t, &a, &format!("/connection/incr?id={}&type=visit", c.id));
    assert_eq!(s, 200, "again: {v}");
    let (s, v) = get(&t, &a, &format!("/connection/get?id={}&type=visit", c.id));
    assert_eq!((s, v["id"].clone()), (200, json!(c.id)), "{v}");
    assert!(v["alias"].is_null(), "no alias stored: {v}");
    let (s, v) = get(
        &t,
        &a,
        &format!("/connection/get?id={}&type=visit&_details=1", c.id),
    );
    assert_eq!(
        (s, v["alias"].clone()),
        (200, json!("cat Name")),
        "from the account: {v}"
    );
    let (s, v) = get(&t, &a, "/connection/select?type=visit");
    assert_eq!((s, count(&v)), (200, 1), "{v}");
    assert!(v["data"][0]["alias"].is_null(), "{v}");
    let (s, v) = get(&t, &a, "/connection/select?type=visit&_details=1");
    assert_eq!((s, count(&v)), (200, 1), "{v}");
    assert_eq!(v["data"][0]["alias"], json!("cat Name"), "{v}");
    assert_eq!(v["data"][0]["id"], json!(c.id), "the row's id stays: {v}");
    let (s, v) = get(&t, &c, "/reference/select?type=visit&_details=1");
    assert_eq!((s, count(&v)), (200, 1), "{v}");
    assert_eq!(v["data"][0]["alias"], json!("ann Name"), "{v}");

    // A type filter with paging: like b (above), c and d, and a follow of d that is not listed.
    for (other, kind) in [(&c, "like"), (&d, "like"), (&d, "follow")] {
        let (s, v) = get(
            &t,
            &a,
            &format!("/connection/add?id={}&type={kind}", other.id),
        );
        assert_eq!(s, 200, "{v}");
    }
    let mut seen = Vec::new();
    let mut target = "/connection/select?type=like&_count=2".to_string();
    for page in 0.. {
        assert!(page < 5, "too many pages");
        let (s, v) = get(&t, &a, &target);
        assert_eq!(s, 200, "{v}");
        let page_rows = rows(&v);
        assert!(!page_rows.is_empty() && page_rows.len() <= 2, "{v}");
        for r in page_rows {
            assert_eq!(r["type"], json!("like"), "{r}");
            seen.push(r["id"].as_str().expect("id").to_string());
        }
        match v["next_token"].as_str() {
            Some(next) => {
                target = format!("/connection/select?type=like&_count=2&_start={}", q(next))
            }
            None => break,
        }
    }
    seen.sort();
    let mut want = vec![b.id.clone(), c.id.clone(), d.id.clone()];
    want.sort();
    assert_eq!(seen, want, "every like once, nothing else");

    // Deleting all of a type (no id): those rows, their reverse rows and counters; others stay.
    assert_eq!(counter(&counters(&t, &a), "like0"), 3);
    let (s, v) = get(&t, &a, "/connection/del?type=like");
    assert_eq!((s, v["count"].clone()), (200, json!(3)), "{v}");
    let (s, v) = get(&t, &a, "/connection/select?type=like");
    assert_eq!((s, count(&v)), (200, 0), "{v}");
    let (s, v) = get(&t, &a, "/connection/select");
    let left: HashSet<String> = rows(&v)
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r["type"].as_str().unwrap_or(""),
                r["id"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(s, 200);
    assert_eq!(
        left,
        HashSet::from([format!("visit:{}", c.id), format!("follow:{}", d.id)]),
        "{v}"
    );
    assert_eq!(counter(&counters(&t, &a), "like0"), 0);
    for other in [&b, &c] {
        assert_eq!(counter(&counters(&t, other), "like1"), 0, "{}", other.login);
        let (s, v) = get(&t, other, "/reference/select?type=like");
        assert_eq!((s, count(&v)), (200, 0), "{}: {v}", other.login);
    }
    // d keeps the like of c.
    assert_eq!(counter(&counters(&t, &d), "like1"), 1);
    let (s, v) = get(&t, &d, "/reference/select?type=like");
    assert_eq!((s, count(&v)), (200, 1), "{v}");
    assert_eq!(v["data"][0]["id"], json!(c.id), "{v}");
    let (s, v) = get(&t, &d, "/reference/select?type=follow");
    assert_eq!((s, count(&v)), (200, 1), "another type stays: {v}");
    assert_eq!(counter(&counters(&t, &a), "follow0"), 1);
    // c's like to d is c's own, untouched.
    let (s, v) = get(&t, &c, &format!("/connection/get?id={}&type=like", d.id));
    assert_eq!(s, 200, "{v}");
}

#[test]
fn connection_options_on_sqlite() {
    connection_options(Store::sqlite());
}

#[test]
fn connection_options_on_postgresql() {
    if let Some(store) = Store::pgsql() {
        connection_options(store);
    }
}

/// `/counter/put`, `/status/del`, `online` going false after `-api-status-interval`,
/// `/message/del` and `/message/del/sent`.
fn counters_status_messages(store: Store) {
    let t = start(&store, &["-api-status-interval", "1s"]);
    let home = t.home.path().to_path_buf();
    let a = user(&t, "eve");
    let b = user(&t, "fay");
    let c = user(&t, "gus");

    // /counter/put sets the given columns and keeps the others.
    let (s, v) = get(&t, &a, &format!("/connection/add?id={}&type=like", b.id));
    assert_eq!(s, 200, "{v}");
    let (s, v) = get(&t, &b, &format!("/counter/incr?id={}&ping=2", a.id));
    assert_eq!((s, v["ping"].clone()), (200, json!(2)), "{v}");
    let (s, v) = get(&t, &a, "/counter/put?ping=7");
    assert_eq!((s, v["ping"].clone()), (200, json!(7)), "{v}");
    let ca = counters(&t, &a);
    assert_eq!(
        (counter(&ca, "ping"), counter(&ca, "like0")),
        (7, 1),
        "like0 kept: {ca}"
    );
    let (s, v) = get(&t, &a, "/counter/put?ping=0");
    assert_eq!((s, v["ping"].clone()), (200, json!(0)), "{v}");
    for (bad, code) in [
        ("/counter/put?like0=9".to_string(), 403),
        (format!("/counter/put?id={}&ping=9", b.id), 403),
        ("/counter/put?ping=lots".to_string(), 400),
        ("/counter/put".to_string(), 400),
    ] {
        let (s, v) = get(&t, &a, &bad);
        assert_eq!(s, code, "{bad}: {v}");
    }
    let ca = counters(&t, &a);
    assert_eq!(
        (counter(&ca, "ping"), counter(&ca, "like0")),
        (0, 1),
        "refusals change nothing: {ca}"
    );
    assert_eq!(counter(&counters(&t, &b), "ping"), 0, "not b's");

    // Status: online right after a put, offline once -api-status-interval (1s) has passed.
    let put_at = std::time::Instant::now();
    let (s, v) = get(&t, &a, "/status/put");
    assert_eq!((s, v["online"].clone()), (200, json!(true)), "{v}");
    let mut last = Value::Null;
    let offline = wait_for(std::time::Duration::from_secs(30), || {
        let (_, v) = get(&t, &b, &format!("/status/get?id={}", a.id));
        last = v;
        last["data"][0]["online"] == json!(false)
    });
    assert!(offline, "still online: {last}");
    assert!(
        put_at.elapsed() >= std::time::Duration::from_secs(1),
        "not before the interval"
    );
    assert_eq!(
        last["data"][0]["status"],
        json!("online"),
        "the status stays, only unseen: {last}"
    );
    let (s, v) = get(&t, &a, "/status/put");
    assert_eq!(
        (s, v["online"].clone()),
        (200, json!(true)),
        "seen again: {v}"
    );
    // /status/del.
    let (s, v) = get(&t, &a, "/status/del");
    assert_eq!(s, 200, "{v}");
    let (s, v) = get(&t, &a, "/status/get");
    assert_eq!(s, 200, "{v}");
    assert!(v.get("status").is_none() && v.get("atime").is_none(), "{v}");
    assert_eq!(v["online"], json!(false), "{v}");
    let (s, v) = get(&t, &b, &format!("/status/get?id={}", a.id));
    assert_eq!(s, 200, "{v}");
    assert!(v["data"][0].get("status").is_none(), "{v}");
    assert_eq!(v["data"][0]["online"], json!(false), "{v}");

    // Messages: b sends three (one with an image), c sends one.
    let mut sent = Vec::new();
    for (i, extra) in ["", "", &format!("&icon={}", q(&b64(&png(10, 10))))]
        .iter()
        .enumerate()
    {
        let (s, v) = get(&t, &b, &format!("/message/add?id={}&msg=m{i}{extra}", a.id));
        assert_eq!(s, 200, "{v}");
        sent.push(v["mtime"].as_i64().expect("mtime"));
    }
    let (s, v) = get(&t, &c, &format!("/message/add?id={}&msg=from%20gus", a.id));
    assert_eq!(s, 200, "{v}");
    let message_images = || walk(&home.join("images/message")).len();
    assert_eq!(message_images(), 1);
    let (s, v) = get(&t, &a, "/message/get");
    assert_eq!((s, count(&v)), (200, 4), "{v}");
    // One by sender and mtime; its image goes with it.
    let (s, v) = get(
        &t,
        &a,
        &format!("/message/del?sender={}&mtime={}", b.id, sent[2]),
    );
    assert_eq!((s, v["count"].clone()), (200, json!(1)), "{v}");
    assert_eq!(message_images(), 0, "the image went with the message");
    let (s, _, _) = fetch(
        &t,
        Some(&a),
        &format!("/message/image?sender={}&mtime={}", b.id, sent[2]),
    );
    assert_eq!(s, 404);
    let (s, v) = get(
        &t,
        &a,
        &format!("/message/del?sender={}&mtime={}", b.id, sent[2]),
    );
    assert_eq!(
        (s, v["count"].clone()),
        (200, json!(0)),
        "gone already: {v}"
    );
    // All of one sender.
    let (s, v) = get(&t, &a, &format!("/message/del?sender={}", b.id));
    assert_eq!((s, v["count"].clone()), (200, json!(2)), "{v}");
    let (s, v) = get(&t, &a, "/message/get");
    assert_eq!((s, count(&v)), (200, 1), "{v}");
    assert_eq!(v["data"][0]["sender"], json!(c.id), "{v}");
    // The sender's copies are its own.
    let (s, v) = get(&t, &b, "/message/get/sent");
    assert_eq!((s, count(&v)), (200, 3), "{v}");
    let (s, v) = get(
        &t,
        &b,
        &format!("/message/del/sent?recipient={}&mtime={}", a.id, sent[0]),
    );
    assert_eq!((s, v["count"].clone()), (200, json!(1)), "{v}");
    let (s, v) = get(&t, &b, "/message/get/sent");
    assert_eq!((s, count(&v)), (200, 2), "{v}");
    assert!(
        rows(&v).iter().all(|r| r["mtime"] != json!(sent[0])),
        "that one went: {v}"
    );
    let (s, v) = get(&t, &b, "/message/del/sent");
    assert_eq!((s, v["count"].clone()), (200, json!(2)), "{v}");
    let (s, v) = get(&t, &b, "/message/get/sent");
    assert_eq!((s, count(&v)), (200, 0), "{v}");
    let (s, v) = get(&t, &c, "/message/get/sent");
    assert_eq!((s, count(&v)), (200, 1), "another sender's copy stays: {v}");
    // Everything left in the inbox.
    let (s, v) = get(&t, &a, "/message/del");
    assert_eq!((s, v["count"].clone()), (200, json!(1)), "{v}");
    let (s, v) = get(&t, &a, "/message/get");
    assert_eq!((s, count(&v)), (200, 0), "{v}");
}

#[test]
fn counters_status_messages_on_sqlite() {
    counters_status_messages(Store::sqlite());
}

#[test]
fn counters_status_messages_on_postgresql() {
    if let Some(store) = Store::pgsql() {
        counters_status_messages(store);
    }
}

/// Coordinates of an account's own row (`/account/get`).
fn own_place(t: &Tree, u: &User) -> (f64, f64) {
    let (s, v) = get(t, u, "/account/get");
    assert_eq!(s, 200, "{v}");
    let num = |k: &str| {
        v[k].as_f64()
            .or_else(|| v[k].as_str().and_then(|s| s.parse().ok()))
            .unwrap_or_else(|| panic!("{k}: {v}"))
    };
    (num("latitude"), num("longitude"))
}

/// The ids `/location/get` finds within min-distance of a point, with their exact distances.
fn near(t: &Tree, u: &User, lat: f64, lon: f64) -> Vec<(String, f64)> {
    let (s, v) = get(
        t,
        u,
        &format!("/location/get?latitude={lat}&longitude={lon}&distance=5&_round=0"),
    );
    assert_eq!(s, 200, "{v}");
    rows(&v)
        .iter()
        .map(|r| {
            (
                r["id"].as_str().expect("id").to_string(),
                r["distance"].as_f64().expect("distance"),
            )
        })
        .collect()
}

/// `/location/put` within min-distance of the stored point answers 305 and keeps it; a move
/// beyond it is stored (and the old point is no longer found).
fn location_min_distance(store: Store) {
    let t = start(&store, &["-min-distance", "5"]);
    let a = user(&t, "walker");
    let me = user(&t, "watcher");
    let (lat0, lon0) = (48.8566, 2.3522);
    let (s, v) = get(
        &t,
        &a,
        &format!("/location/put?latitude={lat0}&longitude={lon0}"),
    );
    assert_eq!(s, 200, "{v}");
    let close = |p: (f64, f64), q: (f64, f64)| (p.0 - q.0).abs() < 1e-9 && (p.1 - q.1).abs() < 1e-9;
    for km in [1.0, 4.9] {
        let (lat, lon) = destination(lat0, lon0, km, 30.0);
        let (s, v) = get(
            &t,
            &a,
            &format!("/location/put?latitude={lat}&longitude={lon}"),
        );
        assert_eq!((s, v["status"].clone()), (305, json!(305)), "{km} km: {v}");
        assert!(close(own_place(&t, &a), (lat0, lon0)), "{km} km: unchanged");
        let found = near(&t, &me, lat0, lon0);
        assert!(
            found.iter().any(|(id, d)| *id == a.id && *d < 1e-6),
            "{km} km: still at the first point: {found:?}"
        );
    }
    let (lat1, lon1) = destination(lat0, lon0, 12.0, 30.0);
    let (s, v) = get(
        &t,
        &a,
        &format!("/location/put?latitude={lat1}&longitude={lon1}"),
    );
    assert_eq!(s, 200, "beyond min-distance: {v}");
    assert!(close(own_place(&t, &a), (lat1, lon1)), "moved");
    let found = near(&t, &me, lat1, lon1);
    assert!(
        found.iter().any(|(id, d)| *id == a.id && *d < 1e-6),
        "found at the new point: {found:?}"
    );
    let found = near(&t, &me, lat0, lon0);
    assert!(
        found.iter().all(|(id, _)| *id != a.id),
        "not at the old one: {found:?}"
    );
    // The next move is measured from the new point.
    let (lat2, lon2) = destination(lat1, lon1, 2.0, 200.0);
    let (s, v) = get(
        &t,
        &a,
        &format!("/location/put?latitude={lat2}&longitude={lon2}"),
    );
    assert_eq!(s, 305, "{v}");
}

#[test]
fn location_put_within_min_distance_is_ignored_on_sqlite() {
    location_min_distance(Store::sqlite());
}

#[test]
fn location_put_within_min_distance_is_ignored_on_postgresql() {
    if let Some(store) = Store::pgsql() {
        location_min_distance(store);
    }
}

/// An image with detail everywhere (JPEG quality shows in its size).
fn busy_picture(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let n = (x.wrapping_mul(2654435761) ^ y.wrapping_mul(40503)).wrapping_mul(2246822519);
        image::Rgb([(n >> 24) as u8, (n >> 16) as u8, ((x + y) * 2) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("png");
    out.into_inner()
}

/// `_ext` gif and webp, `_quality`, `/icon/upload`, `/icon/del` and `/account/del/icon` by the
/// owner, and an `-api-icon-limit` entry for one type.
fn icon_formats(store: Store) {
    let t = start(&store, &["-api-icon-limit", "special:1,*:4"]);
    let home = t.home.path().to_path_buf();
    let a = user(&t, "ivy");
    let src = q(&b64(&png(64, 48)));
    for (ext, format, ct) in [
        ("gif", image::ImageFormat::Gif, "image/gif"),
        ("webp", image::ImageFormat::WebP, "image/webp"),
        ("png", image::ImageFormat::Png, "image/png"),
        ("jpg", image::ImageFormat::Jpeg, "image/jpeg"),
    ] {
        let (s, v) = get(
            &t,
            &a,
            &format!("/icon/put?prefix=fmt&type={ext}&_ext={ext}&icon={src}"),
        );
        assert_eq!((s, v["ext"].clone()), (200, json!(ext)), "{v}");
        let stored = std::fs::read(icon_file(&home, "fmt", &a.id, ext, ext))
            .unwrap_or_else(|e| panic!("{ext} stored: {e}"));
        assert_eq!(
            image::guess_format(&stored).expect("a known format"),
            format,
            "{ext}: magic bytes"
        );
        let decoded = image::load_from_memory_with_format(&stored, format)
            .unwrap_or_else(|e| panic!("{ext} decodes: {e}"));
        assert_eq!((decoded.width(), decoded.height()), (64, 48), "{ext}");
        let (s, body, got) = fetch(&t, Some(&a), &format!("/icon/get?prefix=fmt&type={ext}"));
        assert_eq!((s, got.as_str()), (200, ct), "{ext}");
        assert_eq!(body, stored, "{ext}: served as stored");
    }

    // _quality: a lower quality makes a smaller JPEG of the same picture.
    // (A JSON body: the picture is too large for a query string.)
    let picture = b64(&busy_picture(160, 120));
    let mut sizes = Vec::new();
    for quality in [95, 30] {
        let kind = format!("q{quality}");
        let (s, v) = post_json(
            &t,
            &a,
            "/icon/put",
            &json!({"prefix": "qual", "type": kind, "_quality": quality, "icon": picture}),
        );
        assert_eq!(s, 200, "{v}");
        let stored = std::fs::read(icon_file(&home, "qual", &a.id, &kind, "jpg")).expect("stored");
        assert_eq!(
            image::guess_format(&stored).ok(),
            Some(image::ImageFormat::Jpeg)
        );
        assert_eq!(dims(&stored), (160, 120));
        sizes.push(stored.len());
    }
    assert!(
        sizes[1] < sizes[0],
        "quality 30 is smaller than 95: {sizes:?}"
    );
    for bad in [json!(0), json!(101), json!(-5), json!("high")] {
        let (s, v) = post_json(
            &t,
            &a,
            "/icon/put",
            &json!({"prefix": "qual", "type": "bad", "_quality": bad, "icon": picture}),
        );
        assert_eq!(
            (s, v["status"].clone()),
            (400, json!(400)),
            "_quality={bad}: {v}"
        );
    }
    for bad in ["0", "101"] {
        let (s, v) = get(
            &t,
            &a,
            &format!("/icon/put?prefix=qual&type=bad&_quality={bad}&icon={src}"),
        );
        assert_eq!(s, 400, "_quality={bad} in a query: {v}");
    }
    let (s, v) = get(
        &t,
        &a,
        &format!("/icon/put?prefix=qual&type=bad&_ext=bmp&icon={src}"),
    );
    assert_eq!(s, 400, "_ext=bmp: {v}");
    assert!(!icon_file(&home, "qual", &a.id, "bad", "jpg").exists());
    let (s, v) = get(&t, &a, "/icon/select?prefix=qual");
    assert_eq!(
        (s, count(&v)),
        (200, 2),
        "nothing stored by the refusals: {v}"
    );

    // /icon/upload stores like /icon/put; /icon/del by the owner removes row and file.
    let (s, v) = get(
        &t,
        &a,
        &format!("/icon/upload?prefix=up&type=1&_width=32&_height=24&icon={src}"),
    );
    assert_eq!(s, 200, "{v}");
    let file = icon_file(&home, "up", &a.id, "1", "jpg");
    assert_eq!(dims(&std::fs::read(&file).expect("uploaded")), (32, 24));
    let (s, body, _) = fetch(&t, Some(&a), "/icon/get?prefix=up&type=1");
    assert_eq!((s, dims(&body)), (200, (32, 24)));
    let (s, v) = get(&t, &a, "/icon/del?prefix=up&type=1");
    assert_eq!(s, 200, "{v}");
    assert!(!file.exists(), "the file went");
    let (s, _, _) = fetch(&t, Some(&a), "/icon/get?prefix=up&type=1");
    assert_eq!(s, 404);
    let (s, v) = get(&t, &a, "/icon/select?prefix=up");
    assert_eq!((s, count(&v)), (200, 0), "{v}");
    let (s, v) = get(&t, &a, "/icon/del?prefix=up&type=1");
    assert_eq!(s, 404, "twice: {v}");

    // /account/del/icon.
    let (s, v) = get(&t, &a, &format!("/account/put/icon?type=2&icon={src}"));
    assert_eq!(s, 200, "{v}");
    let file = icon_file(&home, "account", &a.id, "2", "jpg");
    assert!(file.exists());
    let (s, v) = get(&t, &a, "/account/del/icon?type=2");
    assert_eq!(s, 200, "{v}");
    assert!(!file.exists(), "the file went");
    let (s, _, _) = fetch(&t, Some(&a), "/account/get/icon?type=2");
    assert_eq!(s, 404);
    let (s, v) = get(&t, &a, "/account/select/icon");
    assert_eq!((s, count(&v)), (200, 0), "{v}");

    // -api-icon-limit special:1,*:4: adding `special` needs fewer than 1 icon of the prefix,
    // any other type fewer than 4.
    let put = |prefix: &str, kind: &str| {
        get(
            &t,
            &a,
            &format!("/icon/put?prefix={prefix}&type={kind}&icon={src}"),
        )
    };
    assert_eq!(put("lim", "a").0, 200);
    let (s, v) = put("lim", "special");
    assert_eq!(s, 400, "one icon already: {v}");
    for kind in ["b", "c", "d"] {
        assert_eq!(put("lim", kind).0, 200, "{kind}");
    }
    let (s, v) = put("lim", "e");
    assert_eq!(s, 400, "the fifth: {v}");
    assert_eq!(put("lim", "d").0, 200, "a replacement");
    assert_eq!(put("lim2", "special").0, 200, "the first of its prefix");
    assert_eq!(put("lim2", "special").0, 200, "a replacement");
    assert_eq!(put("lim2", "a").0, 200, "the * limit for other types");
    let (s, v) = get(&t, &a, "/icon/select?prefix=lim");
    assert_eq!((s, count(&v)), (200, 4), "{v}");
    assert!(!icon_file(&home, "lim", &a.id, "special", "jpg").exists());
    assert!(!icon_file(&home, "lim", &a.id, "e", "jpg").exists());
}

#[test]
fn icon_formats_quality_and_deletes_on_sqlite() {
    icon_formats(Store::sqlite());
}

#[test]
fn icon_formats_quality_and_deletes_on_postgresql() {
    if let Some(store) = Store::pgsql() {
        icon_formats(store);
    }
}
