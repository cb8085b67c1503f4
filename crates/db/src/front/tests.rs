//! Tests of the front: parsed-row reuse of cached reads, `replace`, `batch`, `scan`, `del_all`
//! and row hooks over a SQLite pool.

use super::cache::Parsed;
use crate::conformance::row;
use crate::driver::{Blocking, Driver};
use crate::{Column, SqliteDriver};
use crate::{Db, DbError, Op, Options, Row, Table};
use serde_json::json;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

#[test]
fn parsed_rows_are_reused_only_for_the_same_text() {
    let p = Parsed::new();
    let a = r#"{"id":"1","name":"a"}"#;
    let text: Arc<str> = Arc::from(a);
    let row = p.row("t|1", text.clone()).expect("an object");
    assert_eq!(
        Value::Object((*row).clone()),
        json!({"id": "1", "name": "a"})
    );
    assert_eq!(p.rows.lock().len(), 1);
    // The same shared text again: the kept row itself.
    let again = p.row("t|1", text).expect("an object");
    assert!(Arc::ptr_eq(&row, &again));
    // Equal text in another allocation (the near cache refilled): still the kept row, and
    // the kept text is now that allocation.
    let refilled: Arc<str> = Arc::from(a);
    let again = p.row("t|1", refilled.clone()).expect("an object");
    assert!(Arc::ptr_eq(&row, &again));
    let kept = p.rows.lock().peek("t|1").map(|(t, _)| t.clone());
    assert!(kept.is_some_and(|t| Arc::ptr_eq(&t, &refilled)));
    // The row changed: its new text is parsed, never the old row returned.
    let changed = p
        .row("t|1", Arc::from(r#"{"id":"1","name":"b"}"#))
        .expect("an object");
    assert!(!Arc::ptr_eq(&row, &changed));
    assert_eq!(
        Value::Object((*changed).clone()),
        json!({"id": "1", "name": "b"})
    );
    // Not an object, or not JSON: no row.
    assert!(p.row("t|2", "[1]".into()).is_none());
    assert!(p.row("t|3", "{".into()).is_none());
    // Long texts are parsed every time and not kept.
    let long = format!(r#"{{"id":"4","x":"{}"}}"#, "y".repeat(Parsed::MAX_TEXT));
    assert!(p.row("t|4", Arc::from(long)).is_some());
    assert!(p.rows.lock().peek("t|4").is_none());
}

fn db(dir: &std::path::Path) -> Db {
    let t = Table::new(
        "items",
        vec![
            Column::text("id").primary(1),
            Column::text("name"),
            Column::bigint("mtime"),
        ],
    )
    .expect("table");
    let sqlite = SqliteDriver::open(dir.join("front.db"), 2).expect("open");
    let mut pools: HashMap<String, Arc<dyn Driver>> = HashMap::new();
    pools.insert("sqlite".into(), Arc::new(Blocking(Arc::new(sqlite))));
    Db::with_pools(pools, "sqlite", vec![t], None)
}

fn tmp() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let p = std::env::temp_dir().join(format!(
        "bkjs-front-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&p).expect("dir");
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_checks_mtime_and_data() {
    let dir = tmp();
    let db = db(&dir);
    db.init().await.expect("init");
    let o = Options::default();
    db.put(
        "items",
        &row(json!({"id": "a", "name": "new", "mtime": 200})),
        &o,
    )
    .await
    .expect("put");
    let older = Options {
        check_mtime: Some("mtime".into()),
        ..Options::default()
    };
    let r = db
        .replace(
            "items",
            &row(json!({"id": "a", "name": "old", "mtime": 100})),
            &older,
        )
        .await
        .expect("replace");
    assert_eq!(r.affected, 0, "older data does not overwrite newer");
    assert_eq!(
        db.get("items", &row(json!({"id": "a"})), &o)
            .await
            .expect("get")
            .expect("row")["name"],
        json!("new")
    );
    let r = db
        .replace(
            "items",
            &row(json!({"id": "a", "name": "newer", "mtime": 300})),
            &older,
        )
        .await
        .expect("replace");
    assert_eq!(r.affected, 1);
    let same = Options {
        check_data: true,
        ..Options::default()
    };
    let r = db
        .replace(
            "items",
            &row(json!({"id": "a", "name": "newer", "mtime": "300"})),
            &same,
        )
        .await
        .expect("replace");
    assert_eq!(r.affected, 0, "the same data is not written again");
    let r = db
        .replace("items", &row(json!({"id": "b", "name": "x"})), &older)
        .await
        .expect("replace");
    assert_eq!(r.affected, 1, "a missing row is written");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_scan_del_all_and_hooks() {
    let dir = tmp();
    let mut db = db(&dir);
    db.init().await.expect("init");
    let o = Options::default();
    let ops: Vec<(String, String, Row)> = (0..7)
        .map(|i| {
            (
                "add".to_string(),
                "items".to_string(),
                row(json!({"id": format!("k{i}"), "name": "n"})),
            )
        })
        .collect();
    assert_eq!(db.batch(&ops, &o).await.expect("batch").len(), 7);
    let bad = vec![("drop".to_string(), "items".to_string(), Row::new())];
    assert!(matches!(db.batch(&bad, &o).await, Err(DbError::BadOp(_))));
    let q = row(json!({"id": "k"}));
    let by_prefix = o.clone().op("id", Op::BeginsWith);
    let small = Options {
        count: 2,
        ..by_prefix.clone()
    };
    let mut seen = 0;
    let n = db
        .scan("items", &q, &small, |rows| {
            seen += 1;
            assert!(rows.len() <= 2);
            Ok(())
        })
        .await
        .expect("scan");
    assert_eq!((n, seen), (7, 4), "7 rows in pages of 2");
    db.hook(
        "items",
        Arc::new(|_t: &Table, r: &mut Row| {
            r.insert("hooked".into(), json!(true));
        }),
    );
    let got = db
        .get("items", &row(json!({"id": "k1"})), &o)
        .await
        .expect("get")
        .expect("row");
    assert_eq!(got["hooked"], json!(true), "row hooks run on reads");
    let got = db
        .get_cached("items", &row(json!({"id": "k1"})), &o)
        .await
        .expect("get_cached")
        .expect("row");
    assert_eq!(
        got["hooked"],
        json!(true),
        "and on cached reads, also in a process without a cache"
    );
    let raw = Options {
        noprocessrows: true,
        ..o.clone()
    };
    for got in [
        db.get("items", &row(json!({"id": "k1"})), &raw).await,
        db.get_cached("items", &row(json!({"id": "k1"})), &raw)
            .await,
    ] {
        let got = got.expect("get").expect("row");
        assert!(
            got.get("hooked").is_none(),
            "noprocessrows skips hooks: {got:?}"
        );
    }
    let raw_page = Options {
        noprocessrows: true,
        ..by_prefix.clone()
    };
    let listed = db.select("items", &q, &raw_page).await.expect("select");
    assert!(listed.rows.iter().all(|r| r.get("hooked").is_none()));
    // A pool named by the caller must be the table's own.
    let own = Options {
        pool: Some("sqlite".into()),
        ..o.clone()
    };
    assert!(db
        .get("items", &row(json!({"id": "k1"})), &own)
        .await
        .is_ok());
    let other = Options {
        pool: Some("pgsql".into()),
        ..o.clone()
    };
    for e in [
        db.get("items", &row(json!({"id": "k1"})), &other)
            .await
            .err(),
        db.put("items", &row(json!({"id": "k9"})), &other)
            .await
            .err(),
        db.select(
            "items",
            &q,
            &Options {
                pool: Some("x".into()),
                ..by_prefix.clone()
            },
        )
        .await
        .err(),
    ] {
        let e = e.expect("refused");
        assert!(
            matches!(e, DbError::BadValue { .. }) && e.to_string().contains("_pool"),
            "{e}"
        );
    }
    assert!(
        db.get("items", &row(json!({"id": "k9"})), &o)
            .await
            .expect("get")
            .is_none(),
        "nothing written"
    );
    let r = db.del_all("items", &q, &by_prefix).await.expect("del_all");
    assert_eq!(r.affected, 7);
    assert!(db
        .get("items", &row(json!({"id": "k1"})), &o)
        .await
        .expect("get")
        .is_none());
    let _ = std::fs::remove_dir_all(dir);
}
