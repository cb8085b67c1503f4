//! Tests of the PostgreSQL driver against a local server (a fresh schema per test, dropped after):
//! the conformance suite, types, operators, paging, native queries and upgrades.

use super::PgsqlDriver;
use crate::sql::Dialect;
use crate::{DbError, Driver, Options, Res, Table};
use serde_json::Value;
use std::time::Duration;
use tokio_postgres::NoTls;

const D: Dialect = Dialect::Postgres;
use crate::conformance::{items_table, row};
use crate::{Column, Op};
use serde_json::json;

const ADDR: &str = "127.0.0.1:5432";
const URLS: [&str; 2] = [
    "postgresql://postgres@127.0.0.1:5432/test",
    "postgresql://root@127.0.0.1:5432/test",
];

/// Drops the test schema when the test ends, also when it fails: from a thread of its own
/// with its own runtime and connection, since `Drop` cannot await.
struct DropSchema {
    url: String,
    schema: String,
}

impl Drop for DropSchema {
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        let what = format!("dropping schema {schema}");
        crate::conformance::run_cleanup(&what, move || async move {
            let (client, conn) = tokio_postgres::connect(&url, NoTls).await?;
            tokio::spawn(conn);
            let ddl = format!("DROP SCHEMA IF EXISTS {} CASCADE", D.quote(&schema));
            client.batch_execute(&ddl).await
        });
    }
}

/// A driver in a fresh schema plus the guard that drops it; None (test skipped) when no
/// server listens and CI is not set.
async fn setup(max: usize) -> Option<(DropSchema, PgsqlDriver)> {
    let reachable = matches!(
        tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(ADDR)).await,
        Ok(Ok(_))
    );
    if !reachable {
        bkjs_base::testing::required(&format!("PostgreSQL is not reachable on {ADDR}"));
        return None;
    }
    let schema = format!(
        "bkjs_t_{}_{:08x}",
        std::process::id(),
        rand::random::<u32>()
    );
    let mut errors = Vec::new();
    for url in URLS {
        let guard = DropSchema {
            url: url.to_string(),
            schema: schema.clone(),
        };
        match PgsqlDriver::connect(url, max, Some(&schema)).await {
            Ok(d) => return Some((guard, d)),
            Err(e) => {
                std::mem::forget(guard);
                errors.push(format!("{url}: {e}"));
            }
        }
    }
    panic!("PostgreSQL on {ADDR} refused every test URL: {errors:?}");
}

fn table() -> Table {
    items_table([Column::date("day"), Column::text("email").unique()])
}

fn o() -> Options {
    Options::default()
}

/// The driver conformance suite of issue 4, in a schema of its own dropped afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgsql_conformance() {
    let Some((_guard, d)) = setup(8).await else {
        return;
    };
    crate::conformance::run(&d, "c").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgsql_driver_basics() {
    let Some((_guard, d)) = setup(4).await else {
        return;
    };
    let t = table();
    d.init(std::slice::from_ref(&t)).await.expect("init");
    d.init(std::slice::from_ref(&t)).await.expect("init twice");

    // Types round-trip: int, json, bool, real, date (RFC 3339 in, ms out); unknown ignored.
    let r = row(
        json!({"id": "a", "rk": "1", "num": "42", "data": {"x": [1, 2]},
        "flag": "yes", "score": 2.5, "day": "1970-01-01T00:00:01Z", "email": "a@x",
        "nope": 1}),
    );
    d.add(&t, &r, &o()).await.expect("add");
    let g = d
        .get(&t, &row(json!({"id": "a", "rk": "1"})), &o())
        .await
        .expect("get")
        .expect("row");
    assert_eq!(g["num"], json!(42));
    assert_eq!(g["data"], json!({"x": [1, 2]}));
    assert_eq!(g["flag"], json!(true));
    assert_eq!(g["score"], json!(2.5));
    assert_eq!(g["day"], json!(1000));
    assert!(g["mtime"].as_i64().expect("mtime") > 0);
    assert!(!g.contains_key("cnt"), "NULL columns are omitted: {g:?}");

    // add twice, or a duplicate unique value: Exists.
    assert_eq!(d.add(&t, &r, &o()).await, Err(DbError::Exists));
    let dup = row(json!({"id": "b", "rk": "1", "email": "a@x"}));
    assert_eq!(d.add(&t, &dup, &o()).await, Err(DbError::Exists));
    // An int column takes 64 bits, like in SQLite.
    let big = row(json!({"id": "b", "rk": "2", "num": 1u64 << 40}));
    d.put(&t, &big, &o()).await.expect("64-bit int");
    let got = d
        .get(&t, &row(json!({"id": "b", "rk": "2"})), &o())
        .await
        .expect("get")
        .expect("row");
    assert_eq!(got["num"], json!(1u64 << 40));
    d.del(&t, &big, &o()).await.expect("del");

    // update keeps other columns; a missing row is NotFound.
    d.update(&t, &row(json!({"id": "a", "rk": "1", "name": "n1"})), &o())
        .await
        .expect("update");
    let g = d
        .get(&t, &row(json!({"id": "a", "rk": "1"})), &o())
        .await
        .expect("get")
        .expect("row");
    assert_eq!(
        (g["name"].clone(), g["num"].clone()),
        (json!("n1"), json!(42))
    );
    assert_eq!(
        d.update(&t, &row(json!({"id": "zz", "rk": "1", "name": "x"})), &o())
            .await,
        Err(DbError::NotFound)
    );

    // put replaces the whole row.
    d.put(&t, &row(json!({"id": "a", "rk": "1", "score": 1})), &o())
        .await
        .expect("put");
    let g = d
        .get(&t, &row(json!({"id": "a", "rk": "1"})), &o())
        .await
        .expect("get")
        .expect("row");
    assert!(!g.contains_key("name") && g["score"] == json!(1.0), "{g:?}");

    // incr creates, then adds; returns the row.
    let k = json!({"id": "c", "rk": "1"});
    for (n, want) in [(1, 1), (2, 3), (-1, 2)] {
        let mut r = row(k.clone());
        r.insert("cnt".into(), json!(n));
        r.insert("score".into(), json!(0.5));
        let res = d.incr(&t, &r, &o()).await.expect("incr");
        assert_eq!(res.rows[0]["cnt"], json!(want));
    }

    // Operators and paging over 9 rows.
    for i in 0..9 {
        d.put(
            &t,
            &row(json!({"id": "p", "rk": format!("r{i}"), "num": i,
                "name": format!("Name{i}"), "flag": i % 2 == 0})),
            &o(),
        )
        .await
        .expect("put page row");
    }
    let sel = |q: Value, opts: Options| {
        let (t, q) = (t.clone(), row(q));
        let d = &d;
        async move { d.select(&t, &q, &opts).await }
    };
    let n = |res: &Res| res.rows.len();
    let r = sel(json!({"id": "p", "num": 5}), o().op("num", Op::Gt))
        .await
        .expect("gt");
    assert_eq!(n(&r), 3);
    let r = sel(json!({"id": "p", "rk": "r"}), o().op("rk", Op::BeginsWith))
        .await
        .expect("begins_with");
    assert_eq!(n(&r), 9);
    let r = sel(
        json!({"id": "p", "name": "name%"}),
        o().op("name", Op::Ilike),
    )
    .await
    .expect("ilike");
    assert_eq!(n(&r), 9);
    let r = sel(
        json!({"id": "p", "name": "name%"}),
        o().op("name", Op::Like),
    )
    .await
    .expect("like");
    assert_eq!(n(&r), 0);
    let r = sel(
        json!({"id": "p", "name": "^Name[1-3]$"}),
        o().op("name", Op::Regexp),
    )
    .await
    .expect("regexp");
    assert_eq!(n(&r), 3);
    let r = sel(json!({"id": "p", "flag": true}), o())
        .await
        .expect("bool");
    assert_eq!(n(&r), 5);
    let r = sel(
        json!({"id": "p", "num": [2, 4]}),
        o().op("num", Op::Between),
    )
    .await
    .expect("between");
    assert_eq!(n(&r), 3);
    let r = sel(json!({"id": "p", "rk": ["r1", "r8"]}), o().op("rk", Op::In))
        .await
        .expect("in");
    assert_eq!(n(&r), 2);
    let mut opts = o();
    opts.count = 2;
    opts.desc = true;
    opts.total = true;
    let mut seen = Vec::new();
    loop {
        let r = sel(json!({"id": "p"}), opts.clone()).await.expect("page");
        assert_eq!(r.total, Some(9));
        seen.extend(r.rows.iter().map(|x| x["rk"].clone()));
        match r.next_token {
            Some(tok) => opts.start = Some(tok),
            None => break,
        }
    }
    let want: Vec<Value> = (0..9).rev().map(|i| json!(format!("r{i}"))).collect();
    assert_eq!(seen, want);
    assert_eq!(sel(json!({}), o()).await, Err(DbError::NoCondition));

    // Injection through values stays a value; through names is refused.
    let evil = "x'); DROP TABLE \"t\"; --";
    d.put(&t, &row(json!({"id": evil, "rk": "1"})), &o())
        .await
        .expect("put evil");
    assert!(d
        .get(&t, &row(json!({"id": evil, "rk": "1"})), &o())
        .await
        .expect("get evil")
        .is_some());
    let bad_op = o().op("id\"; DROP TABLE t; --", Op::Eq);
    assert!(matches!(
        sel(json!({"id": "p"}), bad_op).await,
        Err(DbError::BadName(_))
    ));

    // del, then nothing.
    let k = row(json!({"id": "a", "rk": "1"}));
    assert_eq!(d.del(&t, &k, &o()).await.expect("del").affected, 1);
    assert_eq!(d.get(&t, &k, &o()).await.expect("get"), None);

    // Native query with bound parameters; numeric and count results as numbers.
    let q = d
        .query(
            "SELECT count(*) AS n, sum(num) AS s, avg(num)::numeric(10,3) AS a \
             FROM t WHERE id = $1",
            &[json!("p")],
            &o(),
        )
        .await
        .expect("query");
    assert_eq!(q.rows[0]["n"], json!(9));
    assert_eq!(q.rows[0]["s"], json!(36));
    assert_eq!(q.rows[0]["a"], json!(4.0));
    let q = d
        .query(
            "SELECT (-12345.0678)::numeric AS a, 0.00012::numeric AS b, \
             123456789012::numeric AS c, 'NaN'::numeric AS d, $1::int4 AS e, $2::bool AS f",
            &[json!("7"), json!(true)],
            &o(),
        )
        .await
        .expect("numeric");
    let want =
        json!({"a": -12345.0678, "b": 0.00012, "c": 123456789012i64, "d": null, "e": 7, "f": true});
    assert_eq!(Value::Object(q.rows[0].clone()), want);
    let q = d
        .query(
            "UPDATE t SET num = $1 WHERE id = $2",
            &[json!(7), json!("p")],
            &o(),
        )
        .await
        .expect("native update");
    assert_eq!(q.affected, 9);
    assert!(matches!(
        d.query("SELECT * FROM no_such_table", &[], &o()).await,
        Err(DbError::Driver(_))
    ));

    // Upgrade: a new column and index, data intact.
    let mut cols = t.columns().to_vec();
    cols.push(Column::text("extra").index_n(2, 1));
    let t2 = Table::new("t", cols).expect("t2");
    d.init(std::slice::from_ref(&t2)).await.expect("upgrade");
    d.update(
        &t2,
        &row(json!({"id": "p", "rk": "r1", "extra": "e"})),
        &o(),
    )
    .await
    .expect("update new column");
    let g = d
        .get(&t2, &row(json!({"id": "p", "rk": "r1"})), &o())
        .await
        .expect("get")
        .expect("row");
    assert_eq!(
        (g["extra"].clone(), g["name"].clone()),
        (json!("e"), json!("Name1"))
    );
    let idx = d
        .query(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() \
             AND indexname = 't_extra_idx'",
            &[],
            &o(),
        )
        .await
        .expect("indexes");
    assert_eq!(idx.rows.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgsql_busy_and_bad_urls() {
    // Nothing listens on port 1: a retryable Busy, not a driver failure.
    let e = PgsqlDriver::connect("postgresql://postgres@127.0.0.1:1/test", 1, None)
        .await
        .expect_err("no server on port 1");
    assert!(e.is_retryable(), "{e:?}");
    assert!(matches!(
        PgsqlDriver::connect("postgresql://x@127.0.0.1/test", 1, Some("a; DROP")).await,
        Err(DbError::BadName(_))
    ));
}
