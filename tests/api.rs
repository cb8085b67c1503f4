//! The API as a client sees it: accounts over signed requests (v1 and v3, signed by the
//! independent Python signer in tests/sign.py, not by the server's code), the session cookie,
//! refusals of bad and tampered requests with nothing stored changing, admin-only paths, the
//! framework's headers, static files, `-api-disable`, machine-wide metrics and `bksh` account
//! commands.

use crate::harness::*;
use serde_json::{json, Value};
use std::io::Write;
use std::time::Duration;

const SIGNER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/sign.py");

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// What one signed request is made of.
pub(crate) struct Call<'a> {
    pub version: u8,
    pub login: &'a str,
    pub secret: &'a str,
    pub method: &'a str,
    /// Path and query as sent.
    pub target: &'a str,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
    pub expires: Option<i64>,
}

impl<'a> Call<'a> {
    pub(crate) fn get(version: u8, login: &'a str, secret: &'a str, target: &'a str) -> Call<'a> {
        Call {
            version,
            login,
            secret,
            method: "GET",
            target,
            content_type: None,
            body: b"",
            expires: None,
        }
    }
}

/// The `bk-signature` value the Python signer makes for `c` sent to `host`.
pub(crate) fn py_sign(c: &Call<'_>, host: &str) -> String {
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(SIGNER);
    if let Some(e) = c.expires {
        cmd.args(["--expires", &e.to_string()]);
    }
    cmd.args([
        &c.version.to_string(),
        c.login,
        c.secret,
        c.method,
        host,
        c.target,
    ]);
    if c.content_type.is_some() || !c.body.is_empty() {
        cmd.arg(c.content_type.unwrap_or(""));
        cmd.arg("-");
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 tests/sign.py");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(c.body)
        .expect("body to the signer");
    let out = child.wait_with_output().expect("signer output");
    assert!(
        out.status.success(),
        "sign.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

pub(crate) fn host(t: &Tree) -> String {
    format!("127.0.0.1:{}", t.port)
}

/// Sends `method target` with the given headers and body; status and JSON body.
pub(crate) fn send(
    t: &Tree,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    content_type: Option<&str>,
    body: &[u8],
) -> (u16, Value, Vec<String>) {
    let mut req = agent().request(method, &t.url(target));
    for (k, v) in headers {
        req = req.set(k, v);
    }
    if let Some(ct) = content_type {
        req = req.set("content-type", ct);
    }
    let resp = if body.is_empty() && content_type.is_none() {
        req.call()
    } else {
        req.send_bytes(body)
    };
    let resp = match resp {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {target}: {e}"),
    };
    let status = resp.status();
    let cookies = resp
        .all("set-cookie")
        .iter()
        .map(|s| s.to_string())
        .collect();
    let text = resp.into_string().unwrap_or_default();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v, cookies)
}

/// A request signed by the Python signer.
pub(crate) fn signed(t: &Tree, c: &Call<'_>) -> (u16, Value) {
    let sig = py_sign(c, &host(t));
    let (s, v, _) = send(
        t,
        c.method,
        c.target,
        &[("bk-signature", &sig)],
        c.content_type,
        c.body,
    );
    (s, v)
}

pub(crate) fn add_account(t: &Tree, login: &str, secret: &str, name: &str) -> String {
    let (s, v, _) = send(
        t,
        "GET",
        &format!("/account/add?login={login}&secret={secret}&name={name}"),
        &[],
        None,
        b"",
    );
    assert_eq!(s, 200, "/account/add {login}: {v}");
    let id = v["id"].as_str().expect("id").to_string();
    assert_eq!(id.len(), 32, "32 hex digits: {id}");
    assert!(v.get("secret").is_none(), "the secret is never returned");
    id
}

/// The main API scenario; `single`: against `bkjs run -single` (server, API, master and jobs in
/// one process) instead of the normal tree.
pub(crate) fn scenario(version: u8, single: bool) {
    let t = if single {
        let t = Tree::start("run", &["-single"]);
        t.ready_at("/ping");
        assert_eq!(t.titles(), ["bkjs: single"], "one process, no children");
        t
    } else {
        let t = Tree::start("run", &[]);
        t.ready(2);
        t
    };
    let a = add_account(&t, "alice", "s1", "Alice%20A");
    let b = add_account(&t, "bob", "s2", "Bob%20B");
    let (s, v, _) = send(
        &t,
        "GET",
        "/account/add?login=alice&secret=x&name=y",
        &[],
        None,
        b"",
    );
    assert_eq!((s, v["status"].clone()), (409, json!(409)), "{v}");

    // Update alias.
    let (s, v) = signed(
        &t,
        &Call::get(version, "alice", "s1", "/account/update?alias=Ally"),
    );
    assert_eq!(s, 200, "{v}");

    // Change the secret, then continue with the new one; the old one is refused.
    let (s, v) = signed(
        &t,
        &Call::get(version, "alice", "s1", "/account/put/secret?secret=s1b"),
    );
    assert_eq!(s, 200, "{v}");
    let (s, v) = signed(&t, &Call::get(version, "alice", "s1", "/account/get"));
    assert_eq!((s, v["message"].clone()), (401, json!("Not authenticated")));

    // Self: every column.
    let (s, me) = signed(&t, &Call::get(version, "alice", "s1b", "/account/get"));
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["id"], json!(a));
    assert_eq!(me["alias"], json!("Ally"));
    assert_eq!(me["name"], json!("Alice A"));
    assert_eq!(me["login"], json!("alice"));
    assert!(me.get("secret").is_none());

    // The other account: public columns only.
    let target = format!("/account/get?id={b}");
    let (s, v) = signed(&t, &Call::get(version, "alice", "s1b", &target));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["count"], json!(1), "{v}");
    let other = &v["data"][0];
    assert_eq!(other["id"], json!(b));
    assert_eq!(other["alias"], json!("Bob B"));
    assert!(other.get("name").is_none(), "no name for others: {other}");
    assert!(other.get("login").is_none(), "no login for others: {other}");

    // Select.
    let (s, v) = signed(
        &t,
        &Call::get(version, "alice", "s1b", "/account/select?alias=Bob%20B"),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["count"], json!(1), "{v}");
    assert_eq!(v["data"][0]["id"], json!(b));
    assert!(v["data"][0].get("name").is_none());

    // Session: a signed login sets the cookie; then requests need no signature.
    let c = Call::get(version, "alice", "s1b", "/account/get?_session=1");
    let sig = py_sign(&c, &host(&t));
    let (s, _, cookies) = send(&t, "GET", c.target, &[("bk-signature", &sig)], None, b"");
    assert_eq!(s, 200);
    let cookie = cookies
        .iter()
        .find(|c| c.starts_with("bk_sid="))
        .expect("bk_sid cookie")
        .clone();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    let pair = cookie.split(';').next().expect("cookie pair").to_string();
    let (s, v, _) = send(&t, "GET", "/account/get", &[("cookie", &pair)], None, b"");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["id"], json!(a));
    // A forged cookie (another login, a made-up signature) is refused.
    let forged = pair.replace("alice", "bob");
    let (s, _, _) = send(&t, "GET", "/account/get", &[("cookie", &forged)], None, b"");
    assert_eq!(s, 401);
    // _session=0 clears the cookie in the client.
    let (s, _, cookies) = send(
        &t,
        "GET",
        "/account/get?_session=0",
        &[("cookie", &pair)],
        None,
        b"",
    );
    assert_eq!(s, 200);
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("bk_sid=;") && c.contains("Max-Age=0")),
        "{cookies:?}"
    );

    // Delete: the old credentials and the session are refused, the rows are gone.
    let (s, v) = signed(&t, &Call::get(version, "alice", "s1b", "/account/del"));
    assert_eq!(s, 200, "{v}");
    let (s, _) = signed(&t, &Call::get(version, "alice", "s1b", "/account/get"));
    assert_eq!(s, 401);
    let (s, _, _) = send(&t, "GET", "/account/get", &[("cookie", &pair)], None, b"");
    assert_eq!(s, 401);
    let target = format!("/account/get?id={a}");
    let (s, v) = signed(&t, &Call::get(version, "bob", "s2", &target));
    assert_eq!((s, v["count"].clone()), (200, json!(0)), "{v}");
}

#[test]
fn account_scenario_with_v1_signatures() {
    scenario(1, false);
}

#[test]
fn account_scenario_with_v3_signatures() {
    scenario(3, false);
}

#[test]
fn account_scenario_in_a_single_process() {
    scenario(3, true);
}

/// A secret no other text in a test can contain by chance.
fn distinctive_secret() -> String {
    use std::hash::BuildHasher;
    // RandomState is seeded randomly per process.
    let r = std::collections::hash_map::RandomState::new().hash_one(now_ms());
    format!("Zq{r:016x}{:08x}", std::process::id())
}

/// Every log file of a tree's home (`out.log`, anything under `log/`, any `*.log`) with its text.
fn log_files(home: &std::path::Path) -> Vec<(std::path::PathBuf, String)> {
    let mut out = Vec::new();
    let mut dirs = vec![home.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let in_log_dir = path
                .parent()
                .and_then(|d| d.file_name())
                .is_some_and(|n| n == "log");
            let is_log = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".log") || n.contains(".log."));
            if in_log_dir || is_log {
                let text =
                    String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default()).into_owned();
                out.push((path, text));
            }
        }
    }
    out
}

/// Adds an admin account with `bksh` (the API cannot make admins without one).
pub(crate) fn add_admin(t: &Tree, login: &str, secret: &str) {
    let (code, out, err) = bksh(
        t.home.path(),
        &[
            "-account-add",
            "login",
            login,
            "secret",
            secret,
            "name",
            "Admin",
            "type",
            "admin",
        ],
    );
    assert_eq!(code, Some(0), "{out}{err}");
}

/// `GET /data/get/TABLE?QUERY` as admin `root`/`rs`: the stored row, `{}` when there is none.
pub(crate) fn stored(t: &Tree, table: &str, query: &str) -> Value {
    let target = format!("/data/get/{table}?{query}");
    let (s, v) = signed(t, &Call::get(3, "root", "rs", &target));
    assert_eq!(s, 200, "{target}: {v}");
    v
}

#[test]
fn bad_and_tampered_requests_are_refused_and_change_nothing() {
    let t = Tree::start("run", &["-api-upload-limit", "2K"]);
    t.ready(2);
    add_admin(&t, "root", "rs");
    let secret = distinctive_secret();
    let s3 = secret.as_str();
    let id = add_account(&t, "carol", s3, "Carol");
    // What is stored about carol: her account as she sees it (which also proves the secret
    // still works), her bk_auth row (type, ACLs, expiry, mtime) and her bk_counter row.
    let state = || {
        let (s, me) = signed(&t, &Call::get(3, "carol", s3, "/account/get"));
        assert_eq!(s, 200, "{me}");
        let auth = stored(&t, "bk_auth", "login=carol");
        assert_eq!(auth["id"], json!(id), "{auth}");
        let counter = stored(&t, "bk_counter", &format!("id={id}"));
        assert_eq!(counter["id"], json!(id), "{counter}");
        json!({"account": me, "auth": auth, "counter": counter})
    };
    let before = state();
    let unchanged = |what: &str| assert_eq!(state(), before, "{what}: stored rows changed");
    let h = host(&t);
    let refuse = |sig: &str, want: u16, what: &str| {
        let (s, v, _) = send(
            &t,
            "GET",
            "/account/update?alias=Changed",
            &[("bk-signature", sig)],
            None,
            b"",
        );
        assert_eq!(s, want, "{what}: {v}");
        assert_eq!(v["status"], json!(want), "{what}: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        unchanged(what);
    };
    let exp = now_ms() + 60_000;
    // Malformed headers.
    refuse("3||carol|abc=|", 400, "wrong field count");
    refuse(&format!("3||carol|abc=|{exp}|"), 400, "six fields");
    refuse("3||carol|YWJj|soon||", 400, "non-numeric expiry");
    refuse(
        "3||carol|YWJj|99999999999999999999999||",
        400,
        "expiry overflow",
    );
    refuse(
        &format!("3||{}|YWJj|{exp}||", "x".repeat(5000)),
        400,
        "huge login",
    );
    refuse(&format!("9||carol|YWJj|{exp}||"), 400, "unknown version");
    refuse(
        &format!("2||carol|YWJj|{exp}||"),
        400,
        "v2 outside the cookie",
    );
    // Unknown login: the same answer as a bad signature.
    let ghost = Call::get(3, "ghost", "x", "/account/update?alias=Changed");
    refuse(&py_sign(&ghost, &h), 401, "unknown login");
    // Expired, and too far ahead.
    let mut c = Call::get(3, "carol", s3, "/account/update?alias=Changed");
    c.expires = Some(now_ms() - 1000);
    refuse(&py_sign(&c, &h), 406, "expired");
    c.expires = Some(now_ms() + 3 * 86_400_000);
    refuse(&py_sign(&c, &h), 406, "beyond -api-max-expire");
    // Replay after expiry: accepted while valid, refused once expired.
    let mut c = Call::get(3, "carol", s3, "/account/get");
    // Room for signing (a Python process) and one request on a loaded machine.
    let expires = now_ms() + 4000;
    c.expires = Some(expires);
    let sig = py_sign(&c, &h);
    let (s, _, _) = send(
        &t,
        "GET",
        "/account/get",
        &[("bk-signature", &sig)],
        None,
        b"",
    );
    assert_eq!(s, 200, "valid before expiry");
    assert!(wait_for(Duration::from_secs(10), || now_ms() > expires + 50));
    let (s, v, _) = send(
        &t,
        "GET",
        "/account/get",
        &[("bk-signature", &sig)],
        None,
        b"",
    );
    assert_eq!((s, v["message"].clone()), (406, json!("Expired request")));

    // Tampering with each signed part.
    let good = Call::get(1, "carol", s3, "/account/update?alias=Changed&b=1");
    let sig = py_sign(&good, &h);
    let tamper = |method: &str, target: &str, headers: &[(&str, &str)], what: &str| {
        let mut all = vec![("bk-signature", sig.as_str())];
        all.extend_from_slice(headers);
        let (s, v, _) = send(&t, method, target, &all, None, b"");
        assert_eq!(s, 401, "{what}: {v}");
        unchanged(what);
    };
    tamper("POST", "/account/update?alias=Changed&b=1", &[], "method");
    tamper("GET", "/account/get?alias=Changed&b=1", &[], "path");
    tamper(
        "GET",
        "/account/update?alias=Changed&b=2",
        &[],
        "query value",
    );
    tamper(
        "GET",
        "/account/update?alias=Changed&b=1&c=3",
        &[],
        "added query item",
    );
    tamper(
        "GET",
        "/account/update?alias=Chan%67ed&b=1",
        &[],
        "query encoding",
    );
    tamper(
        "GET",
        "/account/update?alias=Changed&b=1",
        &[("host", "evil.example.com")],
        "host",
    );
    tamper(
        "GET",
        "/account/update?alias=Changed&b=1",
        &[("content-type", "text/plain")],
        "content type",
    );
    let moved = sig.replace(
        &sig.split('|').nth(4).expect("expires").to_string(),
        &(now_ms() + 50_000).to_string(),
    );
    let (s, _, _) = send(
        &t,
        "GET",
        "/account/update?alias=Changed&b=1",
        &[("bk-signature", &moved)],
        None,
        b"",
    );
    assert_eq!(s, 401, "expiry changed in the header");
    unchanged("expiry changed in the header");
    // docs/auth.md sorts the query before signing, so the order of items is not covered: the
    // reordered request means the same (docs/decisions.md).
    let (s, v, _) = send(
        &t,
        "GET",
        "/account/get?b=1&alias=Changed",
        &[(
            "bk-signature",
            &py_sign(
                &Call::get(1, "carol", s3, "/account/get?alias=Changed&b=1"),
                &h,
            ),
        )],
        None,
        b"",
    );
    assert_eq!(s, 200, "reordered query: {v}");

    // JSON bodies: wrong checksum, tampered body, invalid JSON, oversize, unsigned checksum.
    let body = br#"{"alias":"Changed"}"#;
    let c = Call {
        version: 3,
        login: "carol",
        secret: s3,
        method: "POST",
        target: "/account/update",
        content_type: Some("application/json"),
        body,
        expires: None,
    };
    let sig = py_sign(&c, &h);
    let json = Some("application/json");
    let (s, v, _) = send(
        &t,
        "POST",
        "/account/update",
        &[("bk-signature", &sig)],
        json,
        br#"{"alias":"Changes"}"#,
    );
    assert_eq!(s, 401, "tampered body: {v}");
    unchanged("tampered body");
    let fields: Vec<&str> = sig.split('|').collect();
    let wrong = format!(
        "{}|{}|{}|{}|{}|{}|",
        fields[0], fields[1], fields[2], fields[3], fields[4], "AAAAAAAAAAAAAAAAAAAAAAAAAAA="
    );
    let (s, v, _) = send(
        &t,
        "POST",
        "/account/update",
        &[("bk-signature", &wrong)],
        json,
        body,
    );
    assert_eq!(s, 401, "wrong checksum: {v}");
    unchanged("wrong checksum");
    let unsigned_body = format!(
        "{}|{}|{}|{}|{}||",
        fields[0], fields[1], fields[2], fields[3], fields[4]
    );
    let (s, v, _) = send(
        &t,
        "POST",
        "/account/update",
        &[("bk-signature", &unsigned_body)],
        json,
        body,
    );
    assert_eq!(s, 400, "a body without a signed checksum: {v}");
    unchanged("a body without a signed checksum");
    let invalid = br#"{"alias": "#;
    let c_bad = Call { body: invalid, ..c };
    let (s, v) = signed(&t, &c_bad);
    assert_eq!(s, 400, "invalid JSON: {v}");
    assert!(v["message"].as_str().unwrap_or("").contains("JSON"), "{v}");
    unchanged("invalid JSON");
    let big = format!(r#"{{"alias":"{}"}}"#, "x".repeat(4096));
    let c_big = Call {
        body: big.as_bytes(),
        ..c_bad
    };
    let (s, v) = signed(&t, &c_big);
    assert_eq!(s, 413, "oversize: {v}");
    unchanged("oversize");
    // The genuine JSON request works (so the refusals above were about what they changed).
    let c_ok = Call { body, ..c_big };
    let (s, v) = signed(&t, &c_ok);
    assert_eq!(s, 200, "{v}");
    let after = state();
    assert_eq!(after["account"]["alias"], json!("Changed"));
    assert_eq!(after["auth"]["alias"], json!("Changed"), "{after}");
    // The secret (sent in /account/add's query and used to sign every request above) is in
    // no log file of the home.
    let logs = log_files(t.home.path());
    assert!(
        logs.iter().any(|(p, _)| p.ends_with("out.log")),
        "the tree's log is looked at: {logs:?}"
    );
    for (path, text) in &logs {
        assert!(
            !text.contains(s3),
            "the secret is in {}:\n{text}",
            path.display()
        );
    }
}

/// Account expiry and ACLs (after the signature), `-api-deny-path`, `-api-disallow-path` and a
/// non-default `-api-allow-admin`, over signed HTTP requests.
#[test]
fn account_expiry_acls_and_path_rules_are_refused() {
    let t = Tree::start(
        "run",
        &[
            "-api-deny-path",
            "^/counter/put",
            "-api-disallow-path",
            "^/status/",
            "-api-allow-admin",
            "^/counter/get",
        ],
    );
    t.ready(2);
    add_admin(&t, "root", "rs");
    let past = (now_ms() - 60_000).to_string();
    let future = (now_ms() + 3_600_000).to_string();
    for (login, extra) in [
        ("old", ["expires", past.as_str()]),
        ("later", ["expires", future.as_str()]),
        ("denied", ["acl_deny", "^/account/select"]),
        ("limited", ["acl_allow", "^/account/get$"]),
    ] {
        let mut args = vec![
            "-account-add",
            "login",
            login,
            "secret",
            "pw",
            "name",
            login,
        ];
        args.extend(extra);
        let (code, out, err) = bksh(t.home.path(), &args);
        assert_eq!(code, Some(0), "{out}{err}");
    }
    let call =
        |login: &str, secret: &str, target: &str| signed(&t, &Call::get(3, login, secret, target));

    // Expired account: 412 with a good signature; a bad one learns nothing (401).
    let (s, v) = call("old", "pw", "/account/get");
    assert_eq!(
        (s, v["message"].clone()),
        (412, json!("This account has expired")),
        "{v}"
    );
    let (s, v) = call("old", "wrong", "/account/get");
    assert_eq!(s, 401, "signature before expiry: {v}");
    let (s, v) = call("later", "pw", "/account/get");
    assert_eq!(s, 200, "expires in the future: {v}");

    // acl_deny matches → 403; other paths work.
    let (s, v) = call("denied", "pw", "/account/get");
    assert_eq!(s, 200, "{v}");
    let (s, v) = call("denied", "pw", "/account/select?alias=later");
    assert_eq!((s, v["status"].clone()), (403, json!(403)), "{v}");
    let (s, v) = call("denied", "wrong", "/account/select?alias=later");
    assert_eq!(s, 401, "signature before the ACL: {v}");
    // acl_allow set and not matching → 403.
    let (s, v) = call("limited", "pw", "/account/get");
    assert_eq!(s, 200, "{v}");
    let (s, v) = call("limited", "pw", "/account/select?alias=later");
    assert_eq!((s, v["status"].clone()), (403, json!(403)), "{v}");
    let (s, v) = call("later", "pw", "/account/select?alias=later");
    assert_eq!((s, v["count"].clone()), (200, json!(1)), "{v}");

    // -api-deny-path: 403 before authentication, for anyone.
    let (s, v) = call("later", "pw", "/counter/put?ping=5");
    assert_eq!((s, v["status"].clone()), (403, json!(403)), "{v}");
    let (s, v) = call("root", "rs", "/counter/put?ping=5");
    assert_eq!(s, 403, "admins too: {v}");
    let r = t.get("/counter/put?ping=5");
    assert_eq!(r.status, 403, "unsigned: {}", r.body);
    // -api-disallow-path: 404 as if it did not exist.
    let (s, v) = call("later", "pw", "/status/get");
    assert_eq!((s, v["status"].clone()), (404, json!(404)), "{v}");
    let (s, v) = call("root", "rs", "/status/get");
    assert_eq!(s, 404, "admins too: {v}");
    let r = t.get("/status/get");
    assert_eq!(r.status, 404, "unsigned: {}", r.body);

    // -api-allow-admin ^/counter/get: admins only there, and the value replaces the default
    // list, so /system/ is no longer admin-only.
    let (s, v) = call("later", "pw", "/counter/get");
    assert_eq!(
        (s, v["message"].clone()),
        (403, json!("Access denied: admins only")),
        "{v}"
    );
    let (s, v) = call("root", "rs", "/counter/get");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["id"].as_str().map(str::len), Some(32), "{v}");
    assert_eq!(v["ping"].as_i64().unwrap_or(0), 0, "nothing was put: {v}");
    let (s, v) = call("later", "pw", "/system/stats");
    assert_eq!(s, 200, "the default admin list is replaced: {v}");
}

/// The signature in the `bk-signature` query parameter, a signed form POST, `/account/get` of
/// two ids, and `/account/del` removing the account's bk_auth, bk_account and bk_counter rows.
#[test]
fn query_signatures_form_posts_two_ids_and_deleted_rows() {
    let t = Tree::start("run", &[]);
    t.ready(2);
    add_admin(&t, "root", "rs");
    let a = add_account(&t, "ann", "as", "Ann");
    let b = add_account(&t, "ben", "bs", "Ben");
    let c = add_account(&t, "cid", "cs", "Cid");
    let h = host(&t);
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };

    // bk-signature as a query parameter (first or last), v1 and v3; a changed query is refused.
    for version in [1, 3] {
        let sig = py_sign(&Call::get(version, "ann", "as", "/account/get?x=1"), &h);
        for target in [
            format!("/account/get?x=1&bk-signature={}", enc(&sig)),
            format!("/account/get?bk-signature={}&x=1", enc(&sig)),
        ] {
            let (s, v, _) = send(&t, "GET", &target, &[], None, b"");
            assert_eq!((s, v["id"].clone()), (200, json!(a)), "{target}: {v}");
        }
        let target = format!("/account/get?x=2&bk-signature={}", enc(&sig));
        let (s, v, _) = send(&t, "GET", &target, &[], None, b"");
        assert_eq!(s, 401, "changed query: {v}");
    }

    // A signed form POST: the body is signed in the query's place.
    let form = b"alias=Form%20Ann&first_name=F%C3%A9";
    let call = Call {
        version: 3,
        login: "ann",
        secret: "as",
        method: "POST",
        target: "/account/update",
        content_type: Some("application/x-www-form-urlencoded"),
        body: form,
        expires: None,
    };
    let sig = py_sign(&call, &h);
    let (s, v, _) = send(
        &t,
        "POST",
        "/account/update",
        &[("bk-signature", &sig)],
        call.content_type,
        b"alias=Evil",
    );
    assert_eq!(s, 401, "tampered form body: {v}");
    let (s, v) = signed(&t, &call);
    assert_eq!(s, 200, "{v}");
    let (s, me) = signed(&t, &Call::get(3, "ann", "as", "/account/get"));
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["alias"], json!("Form Ann"), "{me}");
    assert_eq!(me["first_name"], json!("Fé"), "{me}");

    // id=b,c: both rows, public columns only.
    let target = format!("/account/get?id={b},{c}");
    let (s, v) = signed(&t, &Call::get(3, "ann", "as", &target));
    assert_eq!((s, v["count"].clone()), (200, json!(2)), "{v}");
    let rows = v["data"].as_array().expect("data");
    let mut ids: Vec<&str> = rows.iter().filter_map(|r| r["id"].as_str()).collect();
    ids.sort();
    let mut want = vec![b.as_str(), c.as_str()];
    want.sort();
    assert_eq!(ids, want, "{v}");
    for (row, alias) in rows.iter().map(|r| (r, r["alias"].as_str())) {
        assert!(matches!(alias, Some("Ben" | "Cid")), "{row}");
        for private in ["name", "login", "ctime", "first_name"] {
            assert!(row.get(private).is_none(), "no {private} for others: {row}");
        }
    }

    // /account/del removes every row of the account, and only those.
    assert_eq!(stored(&t, "bk_auth", "login=ann")["id"], json!(a));
    assert_eq!(stored(&t, "bk_counter", &format!("id={a}"))["id"], json!(a));
    let (s, v) = signed(&t, &Call::get(3, "ann", "as", "/account/del"));
    assert_eq!(s, 200, "{v}");
    assert_eq!(stored(&t, "bk_auth", "login=ann"), json!({}));
    assert_eq!(stored(&t, "bk_account", &format!("id={a}")), json!({}));
    assert_eq!(stored(&t, "bk_counter", &format!("id={a}")), json!({}));
    assert_eq!(stored(&t, "bk_auth", "login=ben")["id"], json!(b));
    assert_eq!(stored(&t, "bk_counter", &format!("id={b}"))["id"], json!(b));
}

/// The independent signer itself agrees with the test vectors of docs/auth.md.
#[test]
fn python_signer_matches_the_spec_vectors() {
    let out = std::process::Command::new("python3")
        .arg(SIGNER)
        .arg("--vectors")
        .output()
        .expect("python3 tests/sign.py --vectors");
    assert!(
        out.status.success(),
        "sign.py --vectors: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `bksh -home HOME ARGS...`; exit code and stdout.
pub(crate) fn bksh(home: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(BKSH)
        .arg("-home")
        .arg(home)
        .args(args)
        .output()
        .expect("bksh");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn admin_paths_metrics_and_bksh_account_commands() {
    let t = Tree::start("run", &[]);
    t.ready(2);
    let home = t.home.path();
    let port = t.port.to_string();
    let (code, out, err) = bksh(
        home,
        &[
            "-account-add",
            "login",
            "root",
            "secret",
            "rs",
            "name",
            "Root",
            "type",
            "admin",
        ],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let root: Value = serde_json::from_str(out.trim()).expect("json");
    let (code, out, err) = bksh(
        home,
        &["-add-user", "login", "dave", "secret", "ds", "name", "Dave"],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, _, err) = bksh(home, &["-account-add", "login", "x", "secret"]);
    assert_eq!(code, Some(64), "odd arguments are a usage error: {err}");
    assert!(err.contains("secret"), "{err}");

    // Admin-only paths (the default -api-allow-admin).
    let (s, v) = signed(&t, &Call::get(3, "dave", "ds", "/system/stats"));
    assert_eq!(s, 403, "{v}");
    let (s, v) = signed(&t, &Call::get(3, "dave", "ds", "/metrics"));
    assert_eq!(
        (s, v["message"].clone()),
        (403, json!("Access denied: admins only")),
        "{v}"
    );
    let (s, v) = signed(
        &t,
        &Call::get(3, "dave", "ds", "/data/get/bk_auth?login=root"),
    );
    assert_eq!(s, 403, "{v}");
    let (s, v) = signed(
        &t,
        &Call::get(3, "root", "rs", "/data/get/bk_auth?login=dave"),
    );
    assert_eq!(
        (s, v["login"].clone()),
        (200, json!("dave")),
        "admin reaches /data: {v}"
    );
    let (s, v) = signed(&t, &Call::get(1, "root", "rs", "/account/get"));
    assert_eq!(
        (s, v["type"].clone(), v["id"].clone()),
        (200, json!("admin"), root["id"].clone())
    );

    // Requests spread over both workers; the stats count all of them.
    for _ in 0..40 {
        assert_eq!(t.get("/ping").status, 200);
    }
    let mut last = Value::Null;
    let counted = wait_for(Duration::from_secs(15), || {
        let (s, v) = signed(&t, &Call::get(3, "root", "rs", "/system/stats"));
        assert_eq!(s, 200, "{v}");
        last = v;
        last["api"]["response"]["count"].as_u64().unwrap_or(0) >= 40 && last["workers"] == json!(2)
    });
    assert!(counted, "stats of both workers: {last}");
    for field in [
        "mean",
        "count",
        "currentRate",
        "1MinuteRate",
        "5MinuteRate",
        "15MinuteRate",
        "min",
        "max",
        "sum",
        "variance",
        "stddev",
        "median",
        "p75",
        "p95",
        "p99",
        "p999",
    ] {
        assert!(
            last["api"]["response"].get(field).is_some(),
            "api.response.{field}: {last}"
        );
    }
    assert!(
        last["urls"].get("/account/get").is_some() || last["urls"].get("/ping").is_some(),
        "{last}"
    );
    assert!(
        last["pool"]["sqlite"]["response"]["count"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{last}"
    );
    // Pool calls in progress (a gauge) and how many were in progress as each started.
    assert!(
        last["pool"]["sqlite"]["count"]
            .as_f64()
            .is_some_and(|n| n >= 0.0),
        "{last}"
    );
    assert!(
        last["pool"]["sqlite"]["queue"]["count"]
            .as_u64()
            .unwrap_or(0)
            > 0
            && last["pool"]["sqlite"]["queue"]["min"].as_f64() >= Some(1.0),
        "{last}"
    );
    // Requests in progress: at least this /system/stats request.
    assert!(
        last["api"]["count"].as_f64().is_some_and(|n| n >= 1.0),
        "{last}"
    );
    assert!(last["api"]["queue"].get("p99").is_some(), "{last}");
    assert!(last["cache"].get("count").is_some(), "{last}");
    assert!(last["rss"].as_u64().unwrap_or(0) > 0);
    assert!(last["util"].as_f64().is_some_and(|u| u >= 0.0), "{last}");
    let sig = py_sign(&Call::get(3, "root", "rs", "/metrics"), &host(&t));
    let resp = agent()
        .get(&t.url("/metrics"))
        .set("bk-signature", &sig)
        .call()
        .expect("/metrics");
    assert!(resp.content_type().starts_with("text/plain"));
    let text = resp.into_string().expect("text");
    assert!(text.contains("bkjs_api_response_ms"), "{text}");
    for gauge in ["bkjs_api_count ", "bkjs_util_percent ", "bkjs_pool_count{"] {
        assert!(
            text.lines().any(|l| l.starts_with(gauge)),
            "{gauge}in:\n{text}"
        );
    }
    assert!(text.contains("# TYPE"), "{text}");

    // bksh: update, a signed request, delete.
    let (code, out, err) = bksh(home, &["-account-update", "login", "dave", "alias", "D2"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, err) = bksh(
        home,
        &[
            "-port",
            &port,
            "-send-request",
            "-url",
            "/account/get",
            "-login",
            "dave",
        ],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let me: Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(
        me["alias"],
        json!("D2"),
        "the server's cache saw the bksh update: {me}"
    );
    let (code, out, err) = bksh(home, &["-account-del", "login", "dave"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (s, _) = signed(&t, &Call::get(3, "dave", "ds", "/account/get"));
    assert_eq!(s, 401, "deleted by bksh");
    let (code, _, err) = bksh(home, &["-account-del", "login", "nobody"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("nobody"), "{err}");
}

#[test]
fn framework_headers_static_files_and_disabled_groups() {
    let t = Tree::start_with("run", &["-api-disable", "account"], |_| {});
    std::fs::create_dir_all(t.home.path().join("web")).expect("web dir");
    std::fs::write(t.home.path().join("web/index.html"), "<h1>hi</h1>").expect("index");
    std::fs::write(t.home.path().join("web/app.js"), "let x = 1;").expect("js");
    t.ready(2);
    let resp = agent().get(&t.url("/ping")).call().expect("ping");
    assert!(resp
        .header("server")
        .is_some_and(|s| s.starts_with("bkjs/")));
    assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        resp.header("access-control-allow-headers"),
        Some("bk-signature, content-type")
    );
    let r = t.get("/");
    assert_eq!((r.status, r.body.as_str()), (200, "<h1>hi</h1>"));
    let r = t.get("/app.js");
    assert_eq!((r.status, r.body.as_str()), (200, "let x = 1;"));
    let r = t.get("/../etc/passwd.js");
    assert_ne!(r.status, 200, "no way out of web/");
    let r = t.get("/nothing.js");
    assert_eq!(r.status, 404);
    // The account group is off: /account/add is open by default but answers 404.
    let r = t.get("/account/add?login=a&secret=b&name=c");
    assert_eq!(r.status, 404, "{}", r.body);
    // Unknown signed-less paths are refused before routing.
    let r = t.get("/account/get");
    assert_eq!(r.status, 401);
    let v: Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(v, json!({"status": 401, "message": "Not authenticated"}));

    // A CORS preflight is answered before authentication, on any path.
    for path in ["/account/get", "/ping", "/nothing/here"] {
        let resp = agent()
            .request("OPTIONS", &t.url(path))
            .set("origin", "http://app.example")
            .set("access-control-request-method", "POST")
            .set(
                "access-control-request-headers",
                "bk-signature, content-type",
            )
            .call()
            .unwrap_or_else(|e| panic!("preflight {path}: {e}"));
        assert_eq!(resp.status(), 204, "{path}");
        assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
        assert_eq!(
            resp.header("access-control-allow-headers"),
            Some("bk-signature, content-type")
        );
        let methods = resp
            .header("access-control-allow-methods")
            .unwrap_or_default()
            .to_string();
        for m in ["GET", "POST", "PUT", "DELETE"] {
            assert!(methods.contains(m), "{path}: {methods}");
        }
        assert_eq!(resp.header("access-control-max-age"), Some("86400"));
        assert!(resp.header("server").is_some());
    }
    // OPTIONS that is not a preflight is an ordinary request: authentication first.
    let (s, v, _) = send(&t, "OPTIONS", "/account/get", &[], None, b"");
    assert_eq!(s, 401, "{v}");
    let (s, v, _) = send(
        &t,
        "OPTIONS",
        "/account/get",
        &[("origin", "http://app.example")],
        None,
        b"",
    );
    assert_eq!(s, 401, "an Origin alone is no preflight: {v}");
}

#[test]
fn a_stalled_worker_answers_503_busy_then_recovers() {
    let t = Tree::start_with(
        "run",
        &[
            "-server-web-workers",
            "1",
            "-api-busy-latency",
            "100ms",
            "-api-allow-path",
            "^/_test/",
            "-server-worker-timeout",
            "30s",
        ],
        |cmd| {
            cmd.env("BKJS_TEST_FAULTS", "1");
        },
    );
    t.ready(1);
    assert_eq!(t.get("/ping").status, 200);
    // Block the only worker's runtime for 2 s: its timers run 2 s late, and for a few ticks
    // after that every request is shed with 503.
    let url = t.url("/_test/block?ms=2000");
    let blocker = std::thread::spawn(move || http_get(&agent(), &url).status);
    let mut busy = None;
    assert!(
        wait_for(Duration::from_secs(20), || {
            let r = t.get("/ping");
            if r.status == 503 {
                busy = Some(r.body);
                true
            } else {
                false
            }
        }),
        "no 503 while the worker was stalled\n{}",
        t.log()
    );
    let v: Value = serde_json::from_str(&busy.expect("busy reply")).expect("json");
    assert_eq!(v["status"], json!(503), "{v}");
    assert!(v["message"].as_str().unwrap_or("").contains("busy"), "{v}");
    assert_eq!(blocker.join().expect("blocker"), 200);
    // Once the timers run on time again, requests are served.
    assert!(wait_for(Duration::from_secs(10), || t.get("/ping").status == 200));
}
