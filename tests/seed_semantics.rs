//! Behaviour a user of the reference platform relies on (SPEC §6-§8), pinned against the real
//! binary: machine statistics with the allocator's figures and per-route latency percentiles.

use crate::harness::*;
use serde_json::Value;

fn stats(t: &Tree) -> Value {
    let r = t.get("/system/stats");
    assert_eq!(r.status, 200, "{r:?}");
    serde_json::from_str(&r.body).expect("stats JSON")
}

#[test]
fn system_stats_has_heap_figures_and_per_route_percentiles() {
    let t = Tree::start("run", &["-api-allow-path", "^/(system/stats|account/add)$"]);
    t.ready(2);
    for i in 0..20 {
        let r = t.get(&format!(
            "/account/add?login=stats{i}&secret=s3cret-{i}&name=S{i}"
        ));
        assert_eq!(r.status, 200, "{r:?}");
    }
    // The answering worker sends its figures first; the other one's arrive with its next
    // periodic report.
    let mut s = Value::Null;
    let all = wait_for(std::time::Duration::from_secs(20), || {
        s = stats(&t);
        s["urls"]["/account/add"]["response"]["count"].as_u64() == Some(20)
    });
    assert!(all, "both workers' requests counted: {s}");
    let heap = &s["heap"];
    let committed = heap["committed"].as_f64().unwrap_or(0.0);
    let peak = heap["peak_committed"].as_f64().unwrap_or(0.0);
    assert!(
        committed > 1e6,
        "the allocator holds at least a megabyte: {heap}"
    );
    assert!(peak >= committed, "{heap}");
    let route = &s["urls"]["/account/add"]["response"];
    for q in ["median", "p75", "p95", "p99", "p999"] {
        assert!(
            route[q].as_f64().is_some_and(|v| v > 0.0),
            "urls./account/add.response.{q}: {route}"
        );
    }
    assert!(route["p99"].as_f64() >= route["median"].as_f64(), "{route}");
}

/// The cache keys of `bk_counter` rows (`bk_counter|ID`) the server's LRU holds.
fn counter_keys(t: &Tree) -> Vec<Value> {
    let r = t.get("/system/cache/keys?name=bk_counter%7C");
    assert_eq!(r.status, 200, "{r:?}");
    let v: Value = serde_json::from_str(&r.body).expect("keys JSON");
    v["data"].as_array().cloned().unwrap_or_default()
}

const OPEN: &[&str] = &["-api-allow-path", "^/system/(stats|cache/keys)$"];

/// SPEC §8: `bk_counter` is read through the cache by default (`-db-caching bk_counter`), and
/// every write invalidates it, so a read after an increment sees it on any worker.
#[test]
fn counters_are_cached_by_default_and_stay_coherent() {
    use crate::api::{add_account, signed, Call};
    let t = Tree::start("run", OPEN);
    t.ready(2);
    let id = add_account(&t, "counted", "s3cret", "C");
    for i in 1..=3 {
        let incr = format!("/counter/incr?ping=1&n={i}");
        let (s, v) = signed(&t, &Call::get(3, "counted", "s3cret", &incr));
        assert_eq!(s, 200, "{v}");
        // Several reads land on both workers: each sees the increment.
        for _ in 0..4 {
            let (s, v) = signed(&t, &Call::get(3, "counted", "s3cret", "/counter/get"));
            assert_eq!(s, 200, "{v}");
            assert_eq!(
                v["ping"].as_i64(),
                Some(i),
                "read after {i} increments: {v}"
            );
        }
        assert_eq!(
            counter_keys(&t),
            vec![Value::from(format!("bk_counter|{id}"))],
            "the row read is cached"
        );
    }
}

#[test]
fn db_caching_without_bk_counter_reads_counters_from_the_database() {
    use crate::api::{add_account, signed, Call};
    let mut args = OPEN.to_vec();
    args.extend(["-db-caching", "bk_account"]);
    let t = Tree::start("run", &args);
    t.ready(2);
    add_account(&t, "plain", "s3cret", "P");
    for _ in 0..4 {
        let (s, v) = signed(&t, &Call::get(3, "plain", "s3cret", "/counter/get"));
        assert_eq!(s, 200, "{v}");
    }
    assert!(
        counter_keys(&t).is_empty(),
        "nothing of bk_counter is cached"
    );
}

/// `/account/get` shows `icon0`..`iconN`, the URL of each account icon, to the owner and to
/// others; deleting an icon removes its URL; the list cannot be written by `/account/update`.
#[test]
fn account_get_lists_icon_urls() {
    use crate::api::{add_account, signed, Call};
    use base64::Engine;
    let t = Tree::start("run", &[]);
    t.ready(2);
    let me = add_account(&t, "iconic", "s3cret", "I");
    add_account(&t, "viewer", "s3cret", "V");
    let get = |login: &str, target: &str| {
        let (s, v) = signed(&t, &Call::get(3, login, "s3cret", target));
        assert_eq!(s, 200, "{target}: {v}");
        v
    };
    let none = get("iconic", "/account/get");
    assert!(
        none.get("icon0").is_none() && none.get("icons").is_none(),
        "{none}"
    );
    let png = crate::social::q(
        &base64::engine::general_purpose::STANDARD.encode(crate::social::png(8, 8)),
    );
    for kind in ["0", "3"] {
        get(
            "iconic",
            &format!("/account/put/icon?type={kind}&acl_allow=auth&icon={png}"),
        );
    }
    let own = get("iconic", "/account/get");
    assert_eq!(own["icon0"], "/account/get/icon?type=0", "{own}");
    assert_eq!(own["icon3"], "/account/get/icon?type=3", "{own}");
    assert!(
        own.get("icon1").is_none() && own.get("icons").is_none(),
        "{own}"
    );
    let theirs = get("viewer", &format!("/account/get?id={me}"));
    let row = &theirs["data"][0];
    let url = format!("/account/get/icon?type=3&id={me}");
    assert_eq!(row["icon3"], url.as_str(), "{theirs}");
    // The URL works for the viewer (acl_allow=auth).
    let (s, _) = signed(&t, &Call::get(3, "viewer", "s3cret", &url));
    assert_eq!(s, 200);
    // Clients cannot forge the list.
    get("iconic", "/account/update?icons=7&name=Renamed");
    assert!(get("iconic", "/account/get").get("icon7").is_none());
    get("iconic", "/account/del/icon?type=0");
    let own = get("iconic", "/account/get");
    assert!(own.get("icon0").is_none(), "{own}");
    assert_eq!(own["icon3"], "/account/get/icon?type=3", "{own}");
}

/// `/file/put` names the stored file like the reference platform (`name`, `_name`, the
/// uploaded file's own name; `_ext`, `_tm`) and answers with that name; `/icon/upload` answers
/// with its stored file name too.
#[test]
fn file_put_and_icon_upload_answer_the_stored_name() {
    use crate::api::{add_account, signed, Call};
    use base64::Engine;
    let t = Tree::start("run", &[]);
    t.ready(2);
    add_account(&t, "filer", "s3cret", "F");
    let call = |method: &'static str, target: &str, ct: Option<&str>, body: &[u8]| {
        signed(
            &t,
            &Call {
                version: 3,
                login: "filer",
                secret: "s3cret",
                method,
                target,
                content_type: ct,
                body,
                expires: None,
            },
        )
    };
    let data = base64::engine::general_purpose::STANDARD.encode(b"hello");
    // The uploaded file's own name (a client path is cut to its last part).
    let boundary = "XbkjsX";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"data\"; filename=\"C:\\\\docs\\\\report.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--{boundary}--\r\n"
    );
    let ct = format!("multipart/form-data; boundary={boundary}");
    let (s, v) = call("POST", "/file/put?prefix=docs", Some(&ct), body.as_bytes());
    assert_eq!((s, v["name"].as_str()), (200, Some("report.txt")), "{v}");
    let (s, v) = call("GET", "/file/get?prefix=docs&name=report.txt", None, b"");
    assert_eq!((s, v.as_str()), (200, Some("hello")), "{v}");
    // _name, then _ext added once.
    let (s, v) = call(
        "GET",
        &format!("/file/put?prefix=docs&_name=notes&_ext=md&data={data}"),
        None,
        b"",
    );
    assert_eq!((s, v["name"].as_str()), (200, Some("notes.md")), "{v}");
    let (s, v) = call(
        "GET",
        &format!("/file/put?prefix=docs&name=a.md&_ext=MD&data={data}"),
        None,
        b"",
    );
    assert_eq!((s, v["name"].as_str()), (200, Some("a.md")), "{v}");
    // _tm: a timestamp before the extension; the stored name reads back.
    let (s, v) = call(
        "GET",
        &format!("/file/put?prefix=docs&name=sub/pic.png&_tm=1&data={data}"),
        None,
        b"",
    );
    assert_eq!(s, 200, "{v}");
    let stored = v["name"].as_str().expect("name").to_string();
    let stamp = stored
        .strip_prefix("sub/pic-")
        .and_then(|r| r.strip_suffix(".png"))
        .expect("sub/pic-MS.png");
    assert!(
        stamp.len() >= 13 && stamp.bytes().all(|b| b.is_ascii_digit()),
        "{stored}"
    );
    let (s, _) = call(
        "GET",
        &format!("/file/get?prefix=docs&name={stored}"),
        None,
        b"",
    );
    assert_eq!(s, 200);
    // Bad input names the parameter and stores nothing.
    for (target, word) in [
        (
            format!("/file/put?prefix=docs&name=x&_ext=../sh&data={data}"),
            "_ext",
        ),
        (format!("/file/put?prefix=docs&data={data}"), "name"),
        (
            format!("/file/put?prefix=docs&_name=../up&data={data}"),
            "name",
        ),
    ] {
        let (s, v) = call("GET", &target, None, b"");
        assert_eq!(s, 400, "{target}: {v}");
        assert!(v["message"].as_str().unwrap_or("").contains(word), "{v}");
    }
    // /icon/upload with type and prefix answers the stored file name.
    let png = crate::social::q(
        &base64::engine::general_purpose::STANDARD.encode(crate::social::png(8, 8)),
    );
    let (s, v) = call(
        "GET",
        &format!("/icon/upload?prefix=album&type=cover&_ext=png&icon={png}"),
        None,
        b"",
    );
    assert_eq!(s, 200, "{v}");
    let name = v["name"].as_str().expect("name");
    assert!(name.starts_with("album/") && name.ends_with(".png"), "{v}");
    assert!(t.home.path().join("images").join(name).is_file(), "{name}");
}

/// Message listings page by time both ways (`mtime` with `_ops=mtime,gt|ge|lt|le|between`) and
/// filter on the other message columns with `_ops`; a condition the listing does not have is
/// a 400.
#[test]
fn message_listings_honour_ops_and_page_before_and_after() {
    use crate::api::{add_account, signed, Call};
    let t = Tree::start("run", &[]);
    t.ready(2);
    let alice = add_account(&t, "malice", "s3cret", "A");
    let bob = add_account(&t, "mbob", "s3cret", "B");
    let get = |login: &str, target: &str| {
        let (s, v) = signed(&t, &Call::get(3, login, "s3cret", target));
        (s, v)
    };
    let mut times = Vec::new();
    for i in 0..5 {
        let text = if i % 2 == 0 {
            format!("even {i}")
        } else {
            format!("odd {i}")
        };
        let (s, v) = get(
            "mbob",
            &format!("/message/add?id={alice}&msg={}", crate::social::q(&text)),
        );
        assert_eq!(s, 200, "{v}");
        let ms = v["mtime"].as_i64().expect("mtime");
        assert!(
            times.last().is_none_or(|l| *l < ms),
            "distinct times: {times:?} {ms}"
        );
        times.push(ms);
    }
    let msgs = |target: &str| -> Vec<String> {
        let (s, v) = get("malice", target);
        assert_eq!(s, 200, "{target}: {v}");
        v["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|r| r["msg"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let m = times[2];
    assert_eq!(
        msgs(&format!("/message/get?mtime={m}")),
        ["odd 3", "even 4"]
    );
    assert_eq!(
        msgs(&format!("/message/get?mtime={m}&_ops=mtime,ge")),
        ["even 2", "odd 3", "even 4"]
    );
    assert_eq!(
        msgs(&format!("/message/get?mtime={m}&_ops=mtime,lt")),
        ["even 0", "odd 1"]
    );
    assert_eq!(
        msgs(&format!("/message/get?mtime={m}&_ops=mtime,le&_desc=1")),
        ["even 2", "odd 1", "even 0"]
    );
    assert_eq!(
        msgs(&format!(
            "/message/get?mtime={},{}&_ops=mtime,between",
            times[1], times[3]
        )),
        ["odd 1", "even 2", "odd 3"]
    );
    // Filters on other columns, with paging.
    let (s, v) = get(
        "malice",
        "/message/get?msg=even&_ops=msg,begins_with&_count=2",
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["count"], 2, "{v}");
    let token = v["next_token"].as_str().expect("a second page").to_string();
    assert_eq!(
        msgs(&format!(
            "/message/get?msg=even&_ops=msg,begins_with&_count=2&_start={}",
            crate::social::q(&token)
        )),
        ["even 4"]
    );
    assert_eq!(
        msgs("/message/get?icon=&_ops=icon,not%20null"),
        Vec::<String>::new()
    );
    assert_eq!(
        msgs(&format!("/message/get?sender={bob}&msg=odd%201")),
        ["odd 1"]
    );
    // Refused: an unknown condition, a bad range, a time op that makes no sense.
    for target in [
        "/message/get?_ops=secret,eq&secret=x".to_string(),
        "/message/get?mtime=5&_ops=mtime,between".to_string(),
        format!("/message/get?mtime={m}&_ops=mtime,contains"),
    ] {
        let (s, v) = get("malice", &target);
        assert_eq!(s, 400, "{target}: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    assert_eq!(msgs("/message/get").len(), 5, "nothing was lost");
}

/// SPEC §6: `_pool`, `_noscan` and `_noprocessrows` are parsed for the endpoint groups in
/// `-api-unsecure` and refused with a 400 everywhere else (not silently ignored).
#[test]
fn unsecure_options_only_for_unsecure_groups() {
    use crate::api::{add_account, add_admin, signed, Call};
    let t = Tree::start("run", &["-api-unsecure", "data"]);
    t.ready(2);
    add_admin(&t, "root", "rs");
    add_account(&t, "plainer", "s3cret", "P");
    let admin = |target: &str| signed(&t, &Call::get(3, "root", "rs", target));
    let (s, v) = admin("/data/get/bk_account?id=x&_pool=sqlite&_noprocessrows=1");
    assert_eq!(s, 200, "the table's own pool: {v}");
    let (s, v) = admin("/data/get/bk_account?id=x&_pool=pgsql");
    assert_eq!(s, 400, "{v}");
    assert!(
        v["message"].as_str().unwrap_or("").contains("sqlite"),
        "{v}"
    );
    let (s, v) = admin("/data/select/bk_counter");
    assert_eq!(s, 400, "a scan is refused by default: {v}");
    let (s, v) = admin("/data/select/bk_counter?_noscan=0");
    assert_eq!(
        s, 200,
        "and allowed with _noscan=0 for an unsecure group: {v}"
    );
    for target in [
        "/account/get?_pool=sqlite",
        "/account/select?name=P&_noscan=0",
        "/counter/get?_noprocessrows=1",
    ] {
        let (s, v) = signed(&t, &Call::get(3, "plainer", "s3cret", target));
        assert_eq!(s, 400, "{target}: {v}");
        assert!(
            v["message"]
                .as_str()
                .unwrap_or("")
                .contains("-api-unsecure"),
            "{target}: {v}"
        );
    }
    // Without -api-unsecure, /data refuses them too.
    drop(t);
    let t = Tree::start("run", &[]);
    t.ready(2);
    add_admin(&t, "root", "rs");
    let (s, v) = signed(
        &t,
        &Call::get(3, "root", "rs", "/data/select/bk_counter?_noscan=0"),
    );
    assert_eq!(s, 400, "{v}");
}
