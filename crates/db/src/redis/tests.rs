//! Tests of the Redis driver against the local server (127.0.0.1:6379), each under a key prefix
//! of its own whose keys are deleted afterwards: the conformance suite, the key layout, writers
//! racing from separate connections, and selects compared with SQLite's answers.

use super::keys::Keys;
use super::RedisDriver;
use crate::conformance::{items_table, row, select_cases, select_rows, strip, SELECT_SORTS};
use crate::kv::codec::{add_params, enc_params};
use crate::types::Param;
use crate::{BlockingDriver, Column, DbError, Driver, Options, SqliteDriver, Table};
use serde_json::json;

const URL: &str = "redis://127.0.0.1:6379/0";

/// Deletes every key under the test's prefix when the test ends, also when it fails.
struct DropKeys(String);

impl Drop for DropKeys {
    fn drop(&mut self) {
        let prefix = self.0.clone();
        crate::conformance::run_cleanup(&format!("deleting {prefix}*"), move || async move {
            let client = redis::Client::open(URL)?;
            let mut c = client.get_multiplexed_async_connection().await?;
            let keys = scan_keys(&mut c, &prefix).await?;
            for chunk in keys.chunks(500) {
                redis::cmd("DEL")
                    .arg(chunk)
                    .query_async::<()>(&mut c)
                    .await?;
            }
            Ok::<_, redis::RedisError>(())
        });
    }
}

/// Every key starting with `prefix` (made of letters, digits and `:` only: no glob characters).
async fn scan_keys(
    c: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
) -> redis::RedisResult<Vec<Vec<u8>>> {
    let mut cursor = 0u64;
    let mut out = Vec::new();
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(c)
            .await?;
        out.extend(keys);
        if next == 0 {
            return Ok(out);
        }
        cursor = next;
    }
}

/// A driver under a fresh prefix with the guard deleting its keys; None (skipped) without a
/// Redis, unless CI=true.
async fn setup(max: usize) -> Option<(DropKeys, RedisDriver, String)> {
    if !bkjs_base::testing::service_up(6379, "Redis") {
        return None;
    }
    let prefix = format!("bkt:{}:{:08x}:", std::process::id(), rand::random::<u32>());
    let guard = DropKeys(prefix.clone());
    let d = RedisDriver::connect(URL, &prefix, max)
        .await
        .expect("connect");
    Some((guard, d, prefix))
}

async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(URL)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

fn o() -> Options {
    Options::default()
}

fn table() -> Table {
    items_table([Column::text("email").unique()])
}

/// The driver conformance suite of issue 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_conformance() {
    let Some((_guard, d, _)) = setup(2).await else {
        return;
    };
    crate::conformance::run(&d, "c").await;
}

/// Rows, the key set and unique entries are where docs/data.md says, and del removes them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_key_layout() {
    let Some((_guard, d, prefix)) = setup(1).await else {
        return;
    };
    let t = table();
    d.init(std::slice::from_ref(&t)).await.expect("init");
    let r = row(json!({"id": "a", "rk": "1", "num": 5, "email": "x@y", "flag": true}));
    d.add(&t, &r, &o()).await.expect("add");
    let pk = enc_params(&[Param::Text("a".into()), Param::Text("1".into())]);
    let keys = Keys {
        prefix: prefix.clone(),
    };
    let rk = keys.row(&t, &pk);
    assert!(rk.starts_with(format!("{prefix}t:t:").as_bytes()));
    let mut c = raw().await;
    let num: String = redis::cmd("HGET")
        .arg(&rk)
        .arg("num")
        .query_async(&mut c)
        .await
        .expect("hget");
    assert_eq!(
        num, "5",
        "an integer is plain decimal (HINCRBY works on it)"
    );
    let flag: String = redis::cmd("HGET")
        .arg(&rk)
        .arg("flag")
        .query_async(&mut c)
        .await
        .expect("hget");
    assert_eq!(flag, "true");
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg(keys.set(&t))
        .arg(&pk)
        .query_async(&mut c)
        .await
        .expect("zscore");
    assert_eq!(score, Some(0.0), "the key set holds the encoded key");
    let owner: Option<Vec<u8>> = redis::cmd("HGET")
        .arg(keys.unique(&t, "email"))
        .arg(enc_params(&[Param::Text("x@y".into())]))
        .query_async(&mut c)
        .await
        .expect("hget");
    assert_eq!(owner, Some(pk.clone()), "the unique index names the row");

    // Changing the unique value moves the entry.
    d.update(
        &t,
        &row(json!({"id": "a", "rk": "1", "email": "z@y"})),
        &o(),
    )
    .await
    .expect("update");
    let n: usize = redis::cmd("HLEN")
        .arg(keys.unique(&t, "email"))
        .query_async(&mut c)
        .await
        .expect("hlen");
    assert_eq!(n, 1, "the old unique entry is gone");

    let res = d
        .del(&t, &row(json!({"id": "a", "rk": "1"})), &o())
        .await
        .expect("del");
    assert_eq!(res.affected, 1);
    let left = scan_keys(&mut c, &format!("{prefix}t:"))
        .await
        .expect("scan");
    assert!(left.is_empty(), "row hash deleted: {left:?}");
    for k in [keys.set(&t), keys.unique(&t, "email")] {
        let n: usize = redis::cmd("EXISTS")
            .arg(&k)
            .query_async(&mut c)
            .await
            .expect("exists");
        assert_eq!(n, 0, "{} emptied", String::from_utf8_lossy(&k));
    }
    assert!(matches!(
        d.query("KEYS *", &[], &o()).await,
        Err(DbError::Unsupported(_))
    ));
    let other = Table::new("never_init", vec![Column::text("id").primary(1)]).expect("t");
    let e = d.get(&other, &row(json!({"id": "a"})), &o()).await;
    assert!(
        matches!(&e, Err(DbError::Driver(m)) if m.contains("no such table")),
        "{e:?}"
    );
}

/// Increments from two drivers (separate connections, as two machines) all count, with
/// SQLite's arithmetic on overflow and reals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_incr_from_two_connections() {
    let Some((_guard, d1, prefix)) = setup(1).await else {
        return;
    };
    let d2 = RedisDriver::connect(URL, &prefix, 1)
        .await
        .expect("connect");
    let t = table();
    d1.init(std::slice::from_ref(&t)).await.expect("init");
    async fn run(d: &RedisDriver, t: &Table) {
        for _ in 0..100 {
            let r = row(json!({"id": "p", "rk": "1", "cnt": 1, "score": 0.25}));
            d.incr(t, &r, &o()).await.expect("incr");
        }
    }
    tokio::join!(run(&d1, &t), run(&d2, &t));
    let g = d2
        .get(&t, &row(json!({"id": "p", "rk": "1"})), &o())
        .await
        .expect("get")
        .expect("row");
    assert_eq!(g["cnt"], json!(200));
    assert_eq!(g["score"], json!(50.0));

    // Overflow turns into a real, as kv::codec::add_params (SQLite) does.
    let key = json!({"id": "o", "rk": "1"});
    d1.put(
        &t,
        &row(json!({"id": "o", "rk": "1", "cnt": i64::MAX})),
        &o(),
    )
    .await
    .expect("put");
    let res = d1
        .incr(&t, &row(json!({"id": "o", "rk": "1", "cnt": 1})), &o())
        .await
        .expect("incr");
    let expect = match add_params(Param::Int(i64::MAX), &Param::Int(1)) {
        Param::Real(f) => json!(f),
        other => panic!("add_params gave {other:?}"),
    };
    assert_eq!(res.rows[0]["cnt"], expect);
    let g = d1
        .get(&t, &row(key), &o())
        .await
        .expect("get")
        .expect("row");
    assert_eq!(g["cnt"], expect);
}

/// Two drivers adding the same keys (and the same unique value under other keys) at once:
/// exactly one add of each wins, the other gets Exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_add_racing_add() {
    let Some((_guard, d1, prefix)) = setup(1).await else {
        return;
    };
    let d2 = RedisDriver::connect(URL, &prefix, 1)
        .await
        .expect("connect");
    let t = table();
    d1.init(std::slice::from_ref(&t)).await.expect("init");
    async fn run(d: &RedisDriver, t: &Table, who: &str) -> usize {
        let mut won = 0;
        for i in 0..50 {
            let same_key = row(json!({"id": format!("k{i}"), "rk": "1", "name": who}));
            let same_email =
                row(json!({"id": format!("e{i}"), "rk": who, "email": format!("m{i}")}));
            for r in [same_key, same_email] {
                match d.add(t, &r, &o()).await {
                    Ok(_) => won += 1,
                    Err(DbError::Exists) => {}
                    Err(e) => panic!("add: {e}"),
                }
            }
        }
        won
    }
    let (a, b) = tokio::join!(run(&d1, &t, "one"), run(&d2, &t, "two"));
    assert_eq!(a + b, 100, "one add of each pair won ({a} + {b})");
    let all = d1
        .select(
            &t,
            &crate::Row::new(),
            &Options {
                count: 1000,
                noscan: false,
                ..o()
            },
        )
        .await
        .expect("select");
    assert_eq!(all.rows.len(), 100);
}

/// The same selects against SQLite and Redis give the same answers (rows, order, paging, totals
/// and errors), through key ranges, in lists and full scans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_selects_match_sqlite() {
    let Some((_guard, d, _)) = setup(1).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let lite = SqliteDriver::open(dir.path().join("lite.db"), 2).expect("sqlite");
    let t = table();
    lite.init(std::slice::from_ref(&t)).expect("init");
    d.init(std::slice::from_ref(&t)).await.expect("init");
    for r in select_rows() {
        lite.add(&t, &r, &o()).expect("add");
        d.add(&t, &r, &o()).await.expect("add");
    }
    let mut compared = 0;
    for (query, ops) in &select_cases() {
        for (sort, desc) in SELECT_SORTS {
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
                    let a = strip(d.select(&t, &q, &opts).await);
                    let b = strip(lite.select(&t, &q, &opts));
                    assert_eq!(
                        a, b,
                        "{query} {ops:?} sort {sort:?} desc {desc} count {count}"
                    );
                    compared += 1;
                    match a.ok().and_then(|r| r.next_token) {
                        Some(tok) => opts.start = Some(tok),
                        None => break,
                    }
                }
            }
        }
    }
    assert!(compared > 900, "{compared} pages compared");
    let scan = Options {
        noscan: false,
        select: vec!["rk".into(), "num".into()],
        ..o()
    };
    assert_eq!(
        d.select(&t, &crate::Row::new(), &scan).await,
        lite.select(&t, &crate::Row::new(), &scan)
    );
}

/// A column made unique by a new description gets its index built from the rows by `init`,
/// which refuses (Exists) while two rows hold the same value; writes go on meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unique_index_is_built_by_init() {
    let Some((_guard, d, _)) = setup(1).await else {
        return;
    };
    let v1 = Table::new("uq", vec![Column::text("id").primary(1), Column::text("e")]).expect("v1");
    d.init(std::slice::from_ref(&v1)).await.expect("init v1");
    for id in ["1", "2"] {
        d.add(&v1, &row(json!({"id": id, "e": "same"})), &o())
            .await
            .expect("add");
    }
    let v2 = Table::new(
        "uq",
        vec![Column::text("id").primary(1), Column::text("e").unique()],
    )
    .expect("v2");
    assert_eq!(
        d.init(std::slice::from_ref(&v2)).await,
        Err(DbError::Exists)
    );
    d.put(&v2, &row(json!({"id": "3", "e": "other"})), &o())
        .await
        .expect("writes go on");
    d.del(&v2, &row(json!({"id": "2"})), &o())
        .await
        .expect("del");
    d.init(std::slice::from_ref(&v2))
        .await
        .expect("init once unique");
    assert_eq!(
        d.add(&v2, &row(json!({"id": "4", "e": "other"})), &o())
            .await,
        Err(DbError::Exists)
    );
    assert_eq!(
        d.update(&v2, &row(json!({"id": "1", "e": "other"})), &o())
            .await,
        Err(DbError::Exists),
        "update to a value another row holds"
    );
    d.update(&v2, &row(json!({"id": "3", "e": "free"})), &o())
        .await
        .expect("the row's own value moves");
    d.add(&v2, &row(json!({"id": "4", "e": "other"})), &o())
        .await
        .expect("a freed value is free");
    let num = Table::new(
        "uqn",
        vec![Column::text("id").primary(1), Column::int("n").unique()],
    )
    .expect("uqn");
    d.init(std::slice::from_ref(&num)).await.expect("init");
    assert!(matches!(
        d.incr(&num, &row(json!({"id": "1", "n": 1})), &o()).await,
        Err(DbError::Unsupported(_))
    ));
}
