//! Tests of SQLite group commit ([`super::writer`]): writes of one caller apply in order, one
//! failing write in a batch fails only its own request, an answered write is committed (visible to
//! any other connection), the sync level, and the conformance suite with group commit off.

use super::{Batching, Commit, SqliteDriver};
use crate::conformance::{self, row};
use crate::driver::{Blocking, BlockingDriver, Driver, WriteKind};
use crate::schema::{Column, Table};
use crate::{DbError, Options};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A temporary directory removed on drop.
struct Tmp(PathBuf);

impl Tmp {
    fn new() -> Tmp {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "bkjs-group-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        Tmp(p)
    }
    fn db(&self) -> PathBuf {
        self.0.join("group.db")
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn table() -> Table {
    Table::new(
        "g",
        vec![
            Column::text("id").primary(1),
            Column::int("n"),
            Column::text("v"),
        ],
    )
    .expect("table")
}

fn open(tmp: &Tmp, commit: Commit) -> SqliteDriver {
    let db = SqliteDriver::open_with(tmp.db(), 4, commit).expect("open");
    db.init(&[table()]).expect("init");
    db
}

fn o() -> Options {
    Options::default()
}

fn n_of(db: &SqliteDriver, t: &Table, id: &str) -> Option<Value> {
    db.get(t, &row(json!({ "id": id })), &o())
        .expect("get")
        .and_then(|r| r.get("n").cloned())
}

/// Waits (with a deadline) until `cond` holds.
fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Writes one caller queues back to back, without waiting in between, apply in the order given:
/// put n=1, incr +2, update n=100, incr +3 leaves 103 (any other order gives another number);
/// both when each commits at once and when all of them wait in the queue for one batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_of_one_caller_apply_in_order() {
    let tmp = Tmp::new();
    let db = open(&tmp, Commit::default());
    let t = table();
    let other = rusqlite::Connection::open(tmp.db()).expect("raw");
    for queued in [false, true] {
        let mut first = None;
        if queued {
            // Another connection holds the write lock: the writer's first flush waits for it,
            // and everything below queues behind it, then goes into one batch.
            other.execute_batch("BEGIN IMMEDIATE").expect("lock");
            let p = db.queue(WriteKind::Put, &t, &row(json!({"id": "x"})), &o());
            first = Some(p.expect("writer").expect("op"));
            until("the first flush to start", || db.group_stats().queued == 0);
        }
        let before = db.group_stats();
        let mut pending = Vec::new();
        for i in 0..20 {
            let id = format!("{queued}{i}");
            let ops = [
                (WriteKind::Put, json!({"id": id, "n": 1})),
                (WriteKind::Incr, json!({"id": id, "n": 2})),
                (WriteKind::Update, json!({"id": id, "n": 100})),
                (WriteKind::Incr, json!({"id": id, "n": 3})),
            ];
            for (k, r) in ops {
                let p = db.queue(k, &t, &row(r), &o());
                pending.push((id.clone(), p.expect("writer").expect("op")));
            }
        }
        if let Some(first) = first {
            assert_eq!(db.group_stats().queued, 80);
            other.execute_batch("COMMIT").expect("unlock");
            first.wait().await.expect("first put");
        }
        for (n, (id, p)) in pending.into_iter().enumerate() {
            let r = p.wait().await.expect("write");
            if n % 4 == 3 {
                // The last incr answers with the row as its own transaction left it.
                assert_eq!(r.rows[0].get("n"), Some(&json!(103)), "{id}");
                assert_eq!(n_of(&db, &t, &id), Some(json!(103)));
            }
        }
        let flushes = db.group_stats().flushes - before.flushes;
        if queued {
            assert_eq!(flushes, 2, "the first put, then all 80 in one batch");
        } else {
            assert_eq!(flushes, 80, "each write committed at once, alone");
        }
    }
}

/// Concurrent tasks, each a put then increments of its own key, plus increments of one shared
/// key by all of them: every sum is exact, and the writes were grouped into fewer transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_put_then_incr_sums_are_exact() {
    let tmp = Tmp::new();
    let db = Arc::new(open(&tmp, Commit::default()));
    let d = Arc::new(Blocking(db.clone()));
    let t = Arc::new(table());
    let (tasks, rounds) = (16, 25);
    let mut handles = Vec::new();
    for i in 0..tasks {
        let (d, t) = (d.clone(), t.clone());
        handles.push(tokio::spawn(async move {
            let id = format!("own{i}");
            d.put(&t, &row(json!({"id": id, "n": 10})), &o())
                .await
                .expect("put");
            for _ in 0..rounds {
                d.incr(&t, &row(json!({"id": id, "n": 1})), &o())
                    .await
                    .expect("incr own");
                d.incr(&t, &row(json!({"id": "shared", "n": 1})), &o())
                    .await
                    .expect("incr shared");
            }
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
    for i in 0..tasks {
        assert_eq!(
            n_of(&db, &t, &format!("own{i}")),
            Some(json!(10 + rounds)),
            "own{i}"
        );
    }
    assert_eq!(n_of(&db, &t, "shared"), Some(json!(tasks * rounds)));
    let s = db.group_stats();
    assert_eq!(s.writes, (tasks * (1 + 2 * rounds)) as u64);
    assert!(s.flushes <= s.writes, "{s:?}");
}

/// A batch holding a duplicate `add` and an update of a missing row: those two fail with their
/// own errors, every other write of the batch commits, and the batch was one transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_fails_only_its_own_request() {
    let tmp = Tmp::new();
    let db = open(&tmp, Commit::default());
    let t = table();
    // Another connection holds the write lock: the writer's first flush waits for it, and the
    // writes queued meanwhile all go into the second flush.
    let other = rusqlite::Connection::open(tmp.db()).expect("raw");
    other.execute_batch("BEGIN IMMEDIATE").expect("lock");
    let before = db.group_stats();
    let first = db
        .queue(WriteKind::Put, &t, &row(json!({"id": "x", "n": 0})), &o())
        .expect("writer")
        .expect("op");
    until("the first flush to start", || db.group_stats().queued == 0);
    let ops = [
        (WriteKind::Add, json!({"id": "a", "v": "first"})),
        (WriteKind::Add, json!({"id": "a", "v": "second"})),
        (WriteKind::Add, json!({"id": "b", "v": "b"})),
        (WriteKind::Update, json!({"id": "missing", "v": "m"})),
        (WriteKind::Put, json!({"id": "c", "v": "c"})),
    ];
    let pending: Vec<_> = ops
        .into_iter()
        .map(|(k, r)| db.queue(k, &t, &row(r), &o()).expect("writer").expect("op"))
        .collect();
    until("five queued writes", || db.group_stats().queued == 5);
    other.execute_batch("COMMIT").expect("unlock");
    first.wait().await.expect("first put");
    let mut results = Vec::new();
    for p in pending {
        results.push(p.wait().await);
    }
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert_eq!(results[1], Err(DbError::Exists));
    assert!(results[2].is_ok(), "{:?}", results[2]);
    assert_eq!(results[3], Err(DbError::NotFound));
    assert!(results[4].is_ok(), "{:?}", results[4]);
    let after = db.group_stats();
    assert_eq!(after.flushes - before.flushes, 2, "{after:?}");
    assert_eq!(after.writes - before.writes, 6, "{after:?}");
    let v = |id: &str| {
        db.get(&t, &row(json!({ "id": id })), &o())
            .expect("get")
            .and_then(|r| r.get("v").cloned())
    };
    assert_eq!(v("a"), Some(json!("first")));
    assert_eq!(v("b"), Some(json!("b")));
    assert_eq!(v("c"), Some(json!("c")));
    assert_eq!(v("missing"), None);
}

/// An answered write is committed: another connection (another process would see the same file)
/// reads it at once. The sync level is NORMAL by default and FULL on request.
#[test]
fn an_answered_write_is_committed() {
    for (full, level) in [(false, 1), (true, 2)] {
        let tmp = Tmp::new();
        let db = open(
            &tmp,
            Commit {
                sync_full: full,
                ..Commit::default()
            },
        );
        let t = table();
        let raw = rusqlite::Connection::open(tmp.db()).expect("raw");
        for i in 0..50 {
            db.put(&t, &row(json!({"id": format!("k{i}"), "n": i})), &o())
                .expect("put");
            let n: i64 = raw
                .query_row("SELECT n FROM g WHERE id = ?1", [format!("k{i}")], |r| {
                    r.get(0)
                })
                .expect("committed row");
            assert_eq!(n, i);
        }
        let sync = db.query("PRAGMA synchronous", &[], &o()).expect("pragma");
        assert_eq!(sync.rows[0].get("synchronous"), Some(&json!(level)));
        assert_eq!(db.group_stats().writes, 50);
    }
}

/// The conformance suite with group commit off (every write commits alone on a pool connection,
/// the path `-db-sqlite-batch-max 0` selects); tests.rs runs it with group commit on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_conformance_without_group_commit() {
    let tmp = Tmp::new();
    let off = Commit {
        batching: Batching {
            max: 0,
            ..Batching::default()
        },
        ..Commit::default()
    };
    let db = SqliteDriver::open_with(tmp.db(), 4, off).expect("open");
    assert_eq!(db.group_stats(), Default::default());
    conformance::run(&Blocking(Arc::new(db)), "c").await;
}
