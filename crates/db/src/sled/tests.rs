//! Tests of the sled driver: key encoding, `like`, core operations, index consistency and
//! upgrades, concurrency, and selects compared with SQLite's answers.

use super::SledDriver;
use crate::conformance::{
    concurrent_incr, items_table, row, select_cases, select_rows, strip, upgrade_tables,
    SELECT_SORTS,
};
use crate::kv::codec::{enc_params, successor};
use crate::kv::filter::like;
use crate::types::Param;
use crate::SqliteDriver;
use crate::{BlockingDriver, Column, DbError, Op, Options, Res, Row, Table};
use serde_json::json;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;

/// A temporary directory removed on drop.
struct Tmp(PathBuf);

impl Tmp {
    fn new() -> Tmp {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "bkjs-sled-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        Tmp(p)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn o() -> Options {
    Options::default()
}

fn test_table() -> Table {
    items_table([Column::text("email").unique()])
}

fn setup(tmp: &Tmp) -> (SledDriver, Table) {
    let db = SledDriver::open(tmp.path("sled"))
        .expect("open")
        .sync_writes(false);
    let t = test_table();
    db.init(std::slice::from_ref(&t)).expect("init");
    (db, t)
}

fn nine(db: &dyn BlockingDriver, t: &Table) {
    for r in select_rows() {
        db.add(t, &r, &o()).expect("add");
    }
}

fn nums(r: &Res) -> Vec<i64> {
    r.rows
        .iter()
        .filter_map(|r| r.get("num").and_then(Value::as_i64))
        .collect()
}

#[test]
fn key_encoding_preserves_order() {
    let ints = [i64::MIN, -5, -1, 0, 1, 7, 300, i64::MAX];
    for w in ints.windows(2) {
        assert!(enc_params([&Param::Int(w[0])]) < enc_params([&Param::Int(w[1])]));
    }
    let reals = [
        f64::NEG_INFINITY,
        -2.5,
        -0.1,
        0.0,
        1e-9,
        0.5,
        3.0,
        f64::INFINITY,
    ];
    for w in reals.windows(2) {
        assert!(enc_params([&Param::Real(w[0])]) < enc_params([&Param::Real(w[1])]));
    }
    assert_eq!(
        enc_params([&Param::Real(-0.0)]),
        enc_params([&Param::Real(0.0)])
    );
    let texts = ["", "\0", "\0a", "a", "a\0", "a\0b", "aa", "ab", "b", "é"];
    for w in texts.windows(2) {
        let t = |s: &str| enc_params([&Param::Text(s.into()), &Param::Text("z".into())]);
        assert!(t(w[0]) < t(w[1]), "{:?} < {:?}", w[0], w[1]);
    }
    assert_eq!(successor(&[1, 0xFF]), Some(vec![2]));
    assert_eq!(successor(&[0xFF]), None);
}

#[test]
fn like_matches_sql() {
    let m = |p: &str, s: &str| {
        like(
            &p.chars().collect::<Vec<_>>(),
            &s.chars().collect::<Vec<_>>(),
        )
    };
    assert!(m("a%", "abc") && m("%c", "abc") && m("a_c", "abc") && m("%", ""));
    assert!(m("%b%", "abc") && m("a%%c", "ac") && m("_é_", "aéb"));
    assert!(!m("a_", "abc") && !m("A%", "abc") && !m("_", "") && !m("a%d", "abc"));
}

#[test]
fn core_operations() {
    let tmp = Tmp::new();
    let (db, t) = setup(&tmp);
    let k = row(json!({"id": "a", "rk": "1"}));
    db.add(&t, &row(json!({"id": "a", "rk": "1", "num": 5, "bogus": 1, "flag": "yes", "score": 2, "data": [1, {"x": null}]})), &o())
        .expect("add");
    let g = db.get(&t, &k, &o()).expect("get").expect("row");
    assert_eq!(g["num"], json!(5));
    assert_eq!(g["flag"], json!(true));
    assert_eq!(g["score"], json!(2.0));
    assert_eq!(g["data"], json!([1, {"x": null}]));
    assert!(!g.contains_key("bogus"));
    assert!(g["mtime"].as_i64().is_some_and(|m| m > 1_600_000_000_000));
    assert_eq!(db.add(&t, &k, &o()), Err(DbError::Exists));
    db.update(&t, &row(json!({"id": "a", "rk": "1", "num": 6})), &o())
        .expect("update");
    let g = db.get(&t, &k, &o()).expect("get").expect("row");
    assert_eq!(
        (g["num"].clone(), g["flag"].clone()),
        (json!(6), json!(true))
    );
    assert_eq!(
        db.update(&t, &row(json!({"id": "a", "rk": "2", "num": 1})), &o()),
        Err(DbError::NotFound)
    );
    db.put(&t, &row(json!({"id": "a", "rk": "1", "name": "x"})), &o())
        .expect("put");
    let g = db.get(&t, &k, &o()).expect("get").expect("row");
    assert!(!g.contains_key("num"), "put replaces the row: {g:?}");
    let mut expect = 0;
    for n in [1, 2, -1] {
        let r = db
            .incr(
                &t,
                &row(json!({"id": "c", "rk": "1", "cnt": n, "score": 0.5})),
                &o(),
            )
            .expect("incr");
        expect += n;
        assert_eq!(r.rows[0]["cnt"], json!(expect));
    }
    let g = db
        .get(&t, &row(json!({"id": "c", "rk": "1"})), &o())
        .expect("get")
        .expect("row");
    assert_eq!(
        (g["cnt"].clone(), g["score"].clone()),
        (json!(2), json!(1.5))
    );
    assert_eq!(db.del(&t, &k, &o()).expect("del").affected, 1);
    assert_eq!(db.get(&t, &k, &o()).expect("get"), None);
    assert_eq!(db.del(&t, &k, &o()).expect("del").affected, 0);
    assert!(matches!(
        db.query("SELECT 1", &[], &o()),
        Err(DbError::Unsupported(_))
    ));
    let other = Table::new("nope", vec![Column::text("id").primary(1)]).expect("table");
    assert!(matches!(
        db.get(&other, &row(json!({"id": "x"})), &o()),
        Err(DbError::Driver(_))
    ));
}

#[test]
fn unique_columns_refuse_duplicates() {
    let tmp = Tmp::new();
    let (db, t) = setup(&tmp);
    db.add(&t, &row(json!({"id": "a", "rk": "1", "email": "e"})), &o())
        .expect("add");
    db.add(&t, &row(json!({"id": "a", "rk": "2"})), &o())
        .expect("null is not a duplicate");
    db.add(&t, &row(json!({"id": "a", "rk": "3"})), &o())
        .expect("null is not a duplicate");
    assert_eq!(
        db.add(&t, &row(json!({"id": "a", "rk": "2", "email": "e"})), &o()),
        Err(DbError::Exists)
    );
    assert_eq!(
        db.update(&t, &row(json!({"id": "a", "rk": "2", "email": "e"})), &o()),
        Err(DbError::Exists)
    );
    db.update(&t, &row(json!({"id": "a", "rk": "1", "email": "e"})), &o())
        .expect("same row keeps its value");
    db.update(&t, &row(json!({"id": "a", "rk": "1", "email": "f"})), &o())
        .expect("change");
    db.update(&t, &row(json!({"id": "a", "rk": "2", "email": "e"})), &o())
        .expect("the old value is free again");
    let r = db
        .select(&t, &row(json!({"email": "e"})), &o())
        .expect("select by unique");
    assert_eq!(r.rows.len(), 1);
    assert_eq!(r.rows[0]["rk"], json!("2"));
}

/// The index tree follows every write: selecting through it after changing or deleting the
/// indexed column finds exactly the current rows.
#[test]
fn index_stays_consistent() {
    let tmp = Tmp::new();
    let (db, t) = setup(&tmp);
    let by_name = |name: &str| -> Vec<String> {
        db.select(&t, &row(json!({"name": name})), &o())
            .expect("select by index")
            .rows
            .iter()
            .map(|r| {
                format!(
                    "{}/{}",
                    r["id"].as_str().unwrap_or(""),
                    r["rk"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    for i in 0..5 {
        db.put(
            &t,
            &row(json!({"id": format!("u{i}"), "rk": "1", "name": "x"})),
            &o(),
        )
        .expect("put");
    }
    assert_eq!(by_name("x").len(), 5);
    db.update(&t, &row(json!({"id": "u1", "rk": "1", "name": "y"})), &o())
        .expect("update");
    db.put(&t, &row(json!({"id": "u2", "rk": "1"})), &o())
        .expect("put without name");
    db.incr(
        &t,
        &row(json!({"id": "u3", "rk": "1", "name": "y", "cnt": 1})),
        &o(),
    )
    .expect("incr sets name");
    db.incr(
        &t,
        &row(json!({"id": "u9", "rk": "1", "name": "y", "cnt": 1})),
        &o(),
    )
    .expect("incr creates");
    db.del(&t, &row(json!({"id": "u4", "rk": "1"})), &o())
        .expect("del");
    assert_eq!(by_name("x"), ["u0/1"]);
    assert_eq!(by_name("y"), ["u1/1", "u3/1", "u9/1"]);
    assert!(by_name("z").is_empty());
    // The index tree holds one entry per row, no stale ones.
    let tables = db.tables();
    let st = tables.get("t").expect("state");
    let idx = st
        .indexes
        .iter()
        .find(|i| !i.def.unique)
        .expect("name index");
    assert_eq!(idx.tree.len(), st.tree.len());
    // The null entry serves `name` null selects like the others.
    drop(tables);
    let r = db
        .select(&t, &row(json!({"name": null})), &o())
        .expect("select null");
    assert_eq!(r.rows.len(), 1);
    assert_eq!(r.rows[0]["id"], json!("u2"));
}

#[test]
fn upgrade_backfills_new_indexes() {
    let tmp = Tmp::new();
    let (v1, v2) = upgrade_tables();
    {
        let db = SledDriver::open(tmp.path("sled")).expect("open");
        db.init(std::slice::from_ref(&v1)).expect("init v1");
        db.add(&v1, &row(json!({"id": "x", "a": 1})), &o())
            .expect("add");
        db.add(&v1, &row(json!({"id": "y", "a": 2})), &o())
            .expect("add");
    }
    let db = SledDriver::open(tmp.path("sled")).expect("reopen");
    db.init(std::slice::from_ref(&v2)).expect("init v2");
    db.init(std::slice::from_ref(&v2)).expect("init v2 again");
    assert_eq!(
        db.get(&v2, &row(json!({"id": "x"})), &o()).expect("get"),
        Some(row(json!({"id": "x", "a": 1})))
    );
    let r = db.select(&v2, &row(json!({"a": 2})), &o()).expect("by a");
    assert_eq!(r.rows, vec![row(json!({"id": "y", "a": 2}))]);
    db.update(&v2, &row(json!({"id": "x", "b": "new"})), &o())
        .expect("update");
    let r = db
        .select(&v2, &row(json!({"b": "new"})), &o())
        .expect("by b");
    assert_eq!(r.rows, vec![row(json!({"id": "x", "a": 1, "b": "new"}))]);
    // Dropping an index from the description drops its tree; re-adding rebuilds it.
    db.init(std::slice::from_ref(&v1)).expect("back to v1");
    db.update(&v1, &row(json!({"id": "x", "a": 5})), &o())
        .expect("update");
    db.init(std::slice::from_ref(&v2)).expect("v2 again");
    let r = db.select(&v2, &row(json!({"a": 5})), &o()).expect("by a");
    assert_eq!(nums(&r), Vec::<i64>::new());
    assert_eq!(r.rows.len(), 1);
    assert!(db
        .select(&v2, &row(json!({"a": 1})), &o())
        .expect("by a")
        .rows
        .is_empty());
}

#[test]
fn unique_index_over_duplicates_is_refused() {
    let tmp = Tmp::new();
    let db = SledDriver::open(tmp.path("sled")).expect("open");
    let v1 = Table::new("uq", vec![Column::text("id").primary(1), Column::text("e")]).expect("v1");
    db.init(std::slice::from_ref(&v1)).expect("init v1");
    for id in ["1", "2"] {
        db.add(&v1, &row(json!({"id": id, "e": "same"})), &o())
            .expect("add");
    }
    let v2 = Table::new(
        "uq",
        vec![Column::text("id").primary(1), Column::text("e").unique()],
    )
    .expect("v2");
    assert_eq!(db.init(std::slice::from_ref(&v2)), Err(DbError::Exists));
    db.put(&v2, &row(json!({"id": "3", "e": "other"})), &o())
        .expect("writes go on");
    let r = db
        .select(&v2, &row(json!({"e": "same"})), &o())
        .expect("select without the index");
    assert_eq!(r.rows.len(), 2);
    db.del(&v2, &row(json!({"id": "2"})), &o()).expect("del");
    db.init(std::slice::from_ref(&v2))
        .expect("init once unique");
    assert_eq!(
        db.add(&v2, &row(json!({"id": "4", "e": "other"})), &o()),
        Err(DbError::Exists)
    );
    let r = db
        .select(&v2, &row(json!({"e": "other"})), &o())
        .expect("select by the unique index");
    assert_eq!(r.rows, vec![row(json!({"id": "3", "e": "other"}))]);
}

#[test]
fn concurrent_incr_is_atomic() {
    let tmp = Tmp::new();
    let (db, t) = setup(&tmp);
    concurrent_incr(&db, &t, 8, 25, false);
}

/// The same selects against SQLite and sled give the same answers (rows, order, paging,
/// totals and errors).
#[test]
fn selects_match_sqlite() {
    let tmp = Tmp::new();
    let (sled, t) = setup(&tmp);
    let lite = SqliteDriver::open(tmp.path("lite.db"), 2).expect("sqlite");
    lite.init(std::slice::from_ref(&t)).expect("init");
    nine(&sled, &t);
    nine(&lite, &t);
    let cases = select_cases();
    let sorts = SELECT_SORTS;
    for (query, ops) in &cases {
        for (sort, desc) in sorts {
            for count in [2usize, 3, 50] {
                let mut opts = Options {
                    count,
                    sort: sort.map(String::from),
                    desc,
                    total: count == 3,
                    ..o()
                };
                for (c, op) in ops {
                    opts.ops.insert(c.to_string(), op.parse().expect("op"));
                }
                let q = row(query.clone());
                loop {
                    let a = strip(sled.select(&t, &q, &opts));
                    let b = strip(lite.select(&t, &q, &opts));
                    assert_eq!(
                        a, b,
                        "{query} {ops:?} sort {sort:?} desc {desc} count {count}"
                    );
                    match a.ok().and_then(|r| r.next_token) {
                        Some(tok) => opts.start = Some(tok),
                        None => break,
                    }
                }
            }
        }
    }
    let mut bad = o();
    bad.ops.insert("id) OR (1=1".into(), Op::Eq);
    assert_eq!(
        sled.select(&t, &row(json!({"id": "a"})), &bad),
        lite.select(&t, &row(json!({"id": "a"})), &bad)
    );
    let bad = Options {
        sort: Some("name; DROP TABLE t".into()),
        ..o()
    };
    assert!(matches!(
        sled.select(&t, &row(json!({"id": "a"})), &bad),
        Err(DbError::BadName(_))
    ));
    let scan = Options {
        noscan: false,
        select: vec!["rk".into(), "num".into()],
        ..o()
    };
    assert_eq!(
        sled.select(&t, &Row::new(), &scan),
        lite.select(&t, &Row::new(), &scan)
    );
    let re = sled
        .select(
            &t,
            &row(json!({"name": "^n[1-3]$"})),
            &o().op("name", Op::Regexp),
        )
        .expect("regexp");
    assert_eq!(nums(&re), [7, 8, 9]);
    assert!(matches!(
        sled.select(&t, &row(json!({"name": "("})), &o().op("name", Op::Regexp)),
        Err(DbError::BadValue { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_conformance() {
    let tmp = Tmp::new();
    let driver = SledDriver::open(tmp.path("sled")).expect("open");
    let d = crate::Blocking(Arc::new(driver));
    crate::conformance::run(&d, "c").await;
}
