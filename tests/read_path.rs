//! The read path of the social endpoints through the real binary, on SQLite and on PostgreSQL,
//! after it was made to read in few statements (issue 18): `/location/get` pages give exactly
//! the rows of a brute-force search (every point within the radius, nearest first, each once,
//! exact distances), whether the points crowd the centre or lie far out, never with the caller's
//! own row (issue 21), also from `/account/select/location`, and an account with two rows
//! (one left by a move) once; and `/connection/select` honours
//! conditions on `mtime` with their `_ops` (`gt`, `le`, `between`, equality).

use crate::api::{add_account, now_ms, signed, Call};
use crate::harness::*;
use crate::social::{q, Store};
use serde_json::Value;
use std::time::Duration;

/// An account the test signs requests as.
struct User {
    login: String,
    secret: String,
    id: String,
}

fn user(t: &Tree, login: &str) -> User {
    let secret = format!("{login}-secret");
    let id = add_account(t, login, &secret, login);
    User {
        login: login.into(),
        secret,
        id,
    }
}

/// A signed GET answered 200.
fn get(t: &Tree, u: &User, target: &str) -> Value {
    let (s, v) = signed(t, &Call::get(3, &u.login, &u.secret, target));
    assert_eq!(s, 200, "{target}: {v}");
    v
}

fn start(store: &Store) -> Tree {
    let t = Tree::start("run", &store.args());
    t.ready(2);
    t
}

/// Great-circle distance with the server's Earth radius (docs/data.md).
fn haversine(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let (dp, dl) = (p2 - p1, (lon2 - lon1).to_radians());
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6378.1 * a.sqrt().min(1.0).asin()
}

/// The point `km` from (lat, lon) towards bearing `deg`.
fn destination(lat: f64, lon: f64, km: f64, deg: f64) -> (f64, f64) {
    let (p, l, b, d) = (
        lat.to_radians(),
        lon.to_radians(),
        deg.to_radians(),
        km / 6378.1,
    );
    let p2 = (p.sin() * d.cos() + p.cos() * d.sin() * b.cos()).asin();
    let l2 = l + (b.sin() * d.sin() * p.cos()).atan2(d.cos() - p.sin() * p2.sin());
    (p2.to_degrees(), l2.to_degrees())
}

/// Every page of `first` (a search with `_count`), following `next_token`: (id, distance) in
/// the order returned.
fn pages(t: &Tree, u: &User, path: &str, first: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let mut target = format!("{path}?{first}");
    for page in 0.. {
        assert!(page < 50, "too many pages");
        let v = get(t, u, &target);
        for r in v["data"].as_array().expect("rows") {
            out.push((
                r["id"].as_str().expect("id").to_string(),
                r["distance"].as_f64().expect("distance"),
            ));
        }
        match v["next_token"].as_str() {
            Some(next) => target = format!("{path}?_count=4&_round=0&_start={}", q(next)),
            None => break,
        }
    }
    out
}

fn location_pages_match_a_brute_force_search(store: Store) {
    let t = start(&store);
    let (clat, clon) = (48.85, 2.35);
    let radius = 30.0;
    // A crowd near the centre, a ring further out, a few beyond the radius; one point on the
    // searcher itself.
    let mut km: Vec<f64> = (0..12).map(|i| 0.05 + 0.07 * i as f64).collect();
    km.extend((0..8).map(|i| 6.0 + 3.0 * i as f64));
    km.extend([31.0, 38.0, 45.0]);
    let me = user(&t, "searcher");
    get(
        &t,
        &me,
        &format!("/location/put?latitude={clat}&longitude={clon}"),
    );
    let mut points = Vec::new();
    for (i, d) in km.iter().enumerate() {
        let (lat, lon) = destination(clat, clon, *d, 37.0 * i as f64);
        let u = user(&t, &format!("near{i}"));
        get(
            &t,
            &u,
            &format!("/location/put?latitude={lat}&longitude={lon}"),
        );
        points.push((u.id.clone(), haversine(clat, clon, lat, lon)));
    }
    let mut want: Vec<(String, f64)> = points.into_iter().filter(|(_, d)| *d <= radius).collect();
    want.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    for path in ["/location/get", "/account/select/location"] {
        let got = pages(
            &t,
            &me,
            path,
            &format!("latitude={clat}&longitude={clon}&distance={radius}&_count=4&_round=0"),
        );
        let ids: Vec<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
        let want_ids: Vec<&str> = want.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(
            ids, want_ids,
            "{path}: every point within the radius, nearest first, each once, not mine"
        );
        for ((id, d), (_, w)) in got.iter().zip(&want) {
            assert!((d - w).abs() < 1e-6, "{path}: distance of {id}: {d} vs {w}");
        }
    }
}

#[test]
fn location_pages_match_a_brute_force_search_on_sqlite() {
    location_pages_match_a_brute_force_search(Store::sqlite());
}

#[test]
fn location_pages_match_a_brute_force_search_on_postgresql() {
    if let Some(store) = Store::pgsql() {
        location_pages_match_a_brute_force_search(store);
    }
}

fn own_row_is_never_returned(store: Store) {
    let t = start(&store);
    let (lat, lon) = (-33.86, 151.2);
    let a = user(&t, "alice");
    let b = user(&t, "bob");
    get(
        &t,
        &a,
        &format!("/location/put?latitude={lat}&longitude={lon}"),
    );
    let (blat, blon) = destination(lat, lon, 1.0, 90.0);
    get(
        &t,
        &b,
        &format!("/location/put?latitude={blat}&longitude={blon}"),
    );
    for path in ["/location/get", "/account/select/location"] {
        let v = get(
            &t,
            &a,
            &format!("{path}?latitude={lat}&longitude={lon}&distance=10"),
        );
        let ids: Vec<&str> = v["data"]
            .as_array()
            .expect("rows")
            .iter()
            .filter_map(|r| r["id"].as_str())
            .collect();
        assert_eq!(
            ids,
            [b.id.as_str()],
            "{path}: bob, never alice herself: {v}"
        );
        // Bob sees alice (and not himself).
        let v = get(
            &t,
            &b,
            &format!("{path}?latitude={lat}&longitude={lon}&distance=10"),
        );
        let ids: Vec<&str> = v["data"]
            .as_array()
            .expect("rows")
            .iter()
            .filter_map(|r| r["id"].as_str())
            .collect();
        assert_eq!(ids, [a.id.as_str()], "{path}: as bob: {v}");
    }
    // Alone in the area: an empty page, no token.
    let v = get(
        &t,
        &a,
        &format!("/location/get?latitude={blat}&longitude={blon}&distance=5&_count=1"),
    );
    assert_eq!(v["count"], 1, "bob only: {v}");
    assert!(
        v.get("next_token").is_none(),
        "alice does not make a page: {v}"
    );
}

#[test]
fn own_row_is_never_returned_on_sqlite() {
    own_row_is_never_returned(Store::sqlite());
}

#[test]
fn own_row_is_never_returned_on_postgresql() {
    if let Some(store) = Store::pgsql() {
        own_row_is_never_returned(store);
    }
}

/// An account with two `bk_location` rows (its old row left behind by a move, as when the
/// delete of the old row failed, or read between the new row's put and the old one's delete)
/// is answered once, at its nearest row.
fn a_moved_account_is_answered_once(store: Store) {
    let t = start(&store);
    let (lat, lon) = (35.68, 139.76);
    let a = user(&t, "alice");
    let b = user(&t, "bob");
    get(
        &t,
        &a,
        &format!("/location/put?latitude={lat}&longitude={lon}"),
    );
    let bksh = |input: &str| -> Vec<Value> {
        let home = t.home.path().to_str().expect("utf-8 home");
        let mut args = vec!["-home", home];
        args.extend(store.args());
        let out = bksh_script(&args, input);
        assert!(
            out.status.success(),
            "bksh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    };
    let (lat1, lon1) = destination(lat, lon, 1.0, 90.0);
    get(
        &t,
        &b,
        &format!("/location/put?latitude={lat1}&longitude={lon1}"),
    );
    let first = bksh(&format!("db select bk_location id={}\n", b.id));
    let old = first[0]["data"][0].clone();
    let geohash = old["geohash"].as_str().expect("geohash").to_string();
    // Further than -location-min-distance (5 km), or the move would be ignored.
    let (lat2, lon2) = destination(lat, lon, 8.0, 90.0);
    get(
        &t,
        &b,
        &format!("/location/put?latitude={lat2}&longitude={lon2}"),
    );
    // The old row back, next to the new one.
    let put = bksh(&format!(
        "db put bk_location geohash={geohash} id={} alias=bob latitude={lat1} longitude={lon1}\n",
        b.id
    ));
    assert_eq!(put[0]["affected"], 1, "{put:?}");
    let rows = bksh(&format!("db select bk_location id={}\n", b.id));
    assert_eq!(rows[0]["count"], 2, "both rows of bob stored: {rows:?}");
    let v = get(
        &t,
        &a,
        &format!("/location/get?latitude={lat}&longitude={lon}&distance=20&_round=0"),
    );
    let data = v["data"].as_array().expect("rows");
    let ids: Vec<&str> = data.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids, [b.id.as_str()], "bob once: {v}");
    let d = data[0]["distance"].as_f64().expect("distance");
    assert!((d - 1.0).abs() < 0.01, "at his nearest row: {v}");
}

#[test]
fn a_moved_account_is_answered_once_on_sqlite() {
    a_moved_account_is_answered_once(Store::sqlite());
}

#[test]
fn a_moved_account_is_answered_once_on_postgresql() {
    if let Some(store) = Store::pgsql() {
        a_moved_account_is_answered_once(store);
    }
}

/// The ids of a connection select, in the order returned.
fn ids(v: &Value) -> Vec<String> {
    v["data"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect()
}

fn connection_select_honours_mtime(store: Store) {
    let t = start(&store);
    let a = user(&t, "alice");
    let others: Vec<User> = (0..4).map(|i| user(&t, &format!("friend{i}"))).collect();
    for o in &others {
        // A distinct mtime each: the clock moves on between two connections.
        let before = now_ms();
        get(&t, &a, &format!("/connection/add?id={}&type=like", o.id));
        assert!(
            wait_for(Duration::from_secs(2), || now_ms() > before + 1),
            "the clock moves"
        );
    }
    let all = get(&t, &a, "/connection/select?type=like");
    let mut rows: Vec<(i64, String)> = all["data"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["mtime"].as_i64().expect("mtime"),
                r["id"].as_str().expect("id").to_string(),
            )
        })
        .collect();
    assert_eq!(rows.len(), 4, "{all}");
    rows.sort();
    let mtimes: Vec<i64> = rows.iter().map(|r| r.0).collect();
    assert!(
        mtimes.windows(2).all(|w| w[0] < w[1]),
        "distinct mtimes: {mtimes:?}"
    );
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let of =
        |range: std::ops::Range<usize>| sorted(rows[range].iter().map(|r| r.1.clone()).collect());
    let m = mtimes[1];
    let cases = [
        (format!("mtime={m}&_ops=mtime,gt"), of(2..4)),
        (format!("mtime={m}&_ops=mtime,le"), of(0..2)),
        (format!("mtime={m}"), of(1..2)),
        (
            format!("mtime={},{}&_ops=mtime,between", mtimes[1], mtimes[2]),
            of(1..3),
        ),
        (format!("mtime={}&_ops=mtime,gt", mtimes[3]), Vec::new()),
    ];
    for (cond, want) in cases {
        for path in ["/connection/select?type=like&", "/connection/select?"] {
            let v = get(&t, &a, &format!("{path}{cond}"));
            assert_eq!(sorted(ids(&v)), want, "{path}{cond}: {v}");
        }
    }
    // The reverse rows carry the same condition.
    let f = &others[3];
    let v = get(
        &t,
        f,
        &format!(
            "/reference/select?type=like&mtime={}&_ops=mtime,ge",
            mtimes[0]
        ),
    );
    assert_eq!(ids(&v), [a.id.as_str()], "{v}");
    let v = get(
        &t,
        f,
        &format!(
            "/reference/select?type=like&mtime={}&_ops=mtime,gt",
            now_ms() + 60_000
        ),
    );
    assert_eq!(v["count"], 0, "{v}");
}

#[test]
fn connection_select_honours_mtime_on_sqlite() {
    connection_select_honours_mtime(Store::sqlite());
}

#[test]
fn connection_select_honours_mtime_on_postgresql() {
    if let Some(store) = Store::pgsql() {
        connection_select_honours_mtime(store);
    }
}
