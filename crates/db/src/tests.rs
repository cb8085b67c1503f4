//! Unit tests of the DB module: the driver conformance suite ([`super::conformance`]) run against
//! SQLite in a temporary file, plus SQLite-specific behaviour (restart, index names, native
//! queries, the connection pool) and driver-independent details (names, operators, tokens,
//! built-in tables, SQL dialect text, value coercion).

use super::conformance::{concurrent_incr, items_table, row, upgrade_tables};
use super::*;
use crate::options::{decode_token, encode_token};
use crate::types::Param;
use crate::write::{encode, key_params, prepare_write, WriteMode};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;

/// A temporary directory removed on drop (the library has no tempfile dependency).
struct Tmp(PathBuf);

impl Tmp {
    fn new() -> Tmp {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "bkjs-db-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        Tmp(p)
    }
    fn db(&self) -> PathBuf {
        self.0.join("test.db")
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn test_table() -> Table {
    items_table([])
}

fn setup() -> (Tmp, SqliteDriver, Table) {
    let tmp = Tmp::new();
    let db = SqliteDriver::open(tmp.db(), 4).expect("open");
    let t = test_table();
    db.init(std::slice::from_ref(&t)).expect("init");
    (tmp, db, t)
}

fn o() -> Options {
    Options::default()
}

/// Adds rows id=a, rk=r1..r9, num=1..9, name=n9..n1.
fn nine(db: &SqliteDriver, t: &Table) {
    for i in 1..=9 {
        db.add(
            t,
            &row(
                json!({"id": "a", "rk": format!("r{i}"), "num": i, "name": format!("n{}", 10 - i)}),
            ),
            &o(),
        )
        .expect("add");
    }
}

/// The name in a `BadName` error, or None for any other outcome.
fn bad_name<T>(r: Result<T, DbError>) -> Option<String> {
    match r {
        Err(DbError::BadName(n)) => Some(n),
        _ => None,
    }
}

fn col(res: &Res, name: &str) -> Vec<Value> {
    res.rows
        .iter()
        .map(|r| r.get(name).cloned().unwrap_or(Value::Null))
        .collect()
}

#[test]
fn names_are_validated() {
    assert_eq!(
        bad_name(Table::new("Bad", vec![Column::text("id").primary(1)])).as_deref(),
        Some("Bad")
    );
    assert!(
        matches!(Table::new("t", vec![Column::text("id").primary(1), Column::text("x;drop")]),
        Err(DbError::BadName(n)) if n == "x;drop")
    );
    assert!(Table::new("1t", vec![Column::text("id").primary(1)]).is_err());
    assert!(Table::new(&"a".repeat(65), vec![Column::text("id").primary(1)]).is_err());
    assert!(Table::new(&"a".repeat(64), vec![Column::text("id").primary(1)]).is_ok());
    assert!(
        Table::new("t", vec![Column::text("id")]).is_err(),
        "no primary key"
    );
    assert!(
        Table::new("t", vec![Column::text("id").primary(1), Column::text("id")]).is_err(),
        "duplicate"
    );
    assert!(Table::new(
        "t",
        vec![Column::text("a").primary(1), Column::text("b").primary(1)]
    )
    .is_err());
    assert!(schema::valid_name("_a1_b"));
    assert!(!schema::valid_name("a-b") && !schema::valid_name("") && !schema::valid_name("a\"b"));
}

#[test]
fn builtin_tables_are_described_and_created() {
    let tables = builtin_tables();
    let names: Vec<&str> = tables.iter().map(|t| t.name()).collect();
    for n in [
        "bk_config",
        "bk_property",
        "bk_queue",
        "bk_jobs",
        "bk_auth",
        "bk_account",
        "bk_counter",
        "bk_connection",
        "bk_reference",
        "bk_location",
        "bk_message",
        "bk_archive",
        "bk_sent",
        "bk_icon",
        "bk_status",
    ] {
        assert!(names.contains(&n), "{n} missing");
    }
    let key = |t: &str| -> Vec<String> {
        let t = tables.iter().find(|x| x.name() == t).expect("table");
        t.primary_keys().iter().map(|c| c.name.clone()).collect()
    };
    assert_eq!(key("bk_config"), ["name", "type"]);
    assert_eq!(key("bk_auth"), ["login"]);
    assert_eq!(key("bk_location"), ["geohash", "id"]);
    assert_eq!(key("bk_message"), ["id", "mtime"]);
    let counter = tables
        .iter()
        .find(|t| t.name() == "bk_counter")
        .expect("bk_counter");
    assert!(counter
        .column("ping")
        .is_some_and(|c| c.public && c.kind == ColumnType::Counter));
    assert!(counter.column("msg1").is_some_and(|c| c.autoincr));
    assert!(tables
        .iter()
        .find(|t| t.name() == "bk_auth")
        .and_then(|t| t.column("type"))
        .is_some_and(|c| c.admin));

    let tmp = Tmp::new();
    let db = SqliteDriver::open(tmp.db(), 2).expect("open");
    db.init(&tables).expect("create builtin tables");
    db.init(&tables).expect("init is idempotent");
    let bk_counter = tables
        .iter()
        .find(|t| t.name() == "bk_counter")
        .expect("bk_counter");
    let r = db
        .incr(bk_counter, &row(json!({"id": "u1", "like0": 1})), &o())
        .expect("incr");
    assert_eq!(r.rows[0]["like0"], json!(1));
    // Tables of small rows read by key ranges are stored in key order; the others keep a rowid.
    let ddl = |t: &str| -> String {
        let r = db
            .query(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
                &[json!(t)],
                &o(),
            )
            .expect("sqlite_master");
        r.rows[0]["sql"].as_str().expect("sql").to_string()
    };
    for t in ["bk_location", "bk_connection", "bk_reference"] {
        assert!(ddl(t).ends_with("WITHOUT ROWID"), "{t}: {}", ddl(t));
    }
    for t in ["bk_account", "bk_message", "bk_counter"] {
        assert!(!ddl(t).contains("WITHOUT ROWID"), "{t}: {}", ddl(t));
    }
}

#[test]
fn operators_parse() {
    let cases = [
        ("=", Op::Eq),
        ("!=", Op::Ne),
        ("ne", Op::Ne),
        (">", Op::Gt),
        ("GT", Op::Gt),
        (">=", Op::Ge),
        ("ge", Op::Ge),
        ("<", Op::Lt),
        ("lt", Op::Lt),
        ("<=", Op::Le),
        ("le", Op::Le),
        ("in", Op::In),
        ("not in", Op::NotIn),
        ("not_in", Op::NotIn),
        ("between", Op::Between),
        ("not between", Op::NotBetween),
        ("null", Op::Null),
        ("not null", Op::NotNull),
        ("begins_with", Op::BeginsWith),
        ("like", Op::Like),
        ("ilike", Op::Ilike),
        ("contains", Op::Contains),
        ("not contains", Op::NotContains),
        ("regexp", Op::Regexp),
    ];
    for (s, op) in cases {
        assert_eq!(s.parse::<Op>(), Ok(op), "{s}");
    }
    assert_eq!("=~".parse::<Op>(), Err(DbError::BadOp("=~".into())));
    assert!("or 1=1".parse::<Op>().is_err());
}

#[test]
fn tokens_round_trip() {
    assert_eq!(decode_token(&encode_token(42)), Ok(42));
    assert!(decode_token("zz").is_err());
    assert!(decode_token("7b7d").is_err(), "{{}} has no offset");
    let huge = serde_json::json!({ "o": u64::MAX }).to_string();
    let huge: String = huge.bytes().map(|b| format!("{b:02x}")).collect();
    assert!(decode_token(&huge).is_err(), "an absurd offset is refused");
}

#[test]
fn errors_say_whose_fault() {
    assert!(DbError::Exists.is_caller_error() && !DbError::Exists.is_retryable());
    assert!(
        DbError::Busy("x".into()).is_retryable() && !DbError::Busy("x".into()).is_caller_error()
    );
    assert!(!DbError::Driver("x".into()).is_caller_error());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_conformance() {
    let tmp = Tmp::new();
    let db = SqliteDriver::open(tmp.db(), 4).expect("open");
    let d = Blocking(Arc::new(db));
    conformance::run(&d, "c").await;
    // A second run over the same file starts from the tables the first one left.
    conformance::run(&d, "c").await;
}

/// SQLite-specific part of the schema upgrade (the generic part is in the conformance suite):
/// a restart with a new column and index keeps the data and creates the index under its
/// deterministic name.
#[test]
fn sqlite_upgrade_after_restart_creates_indexes() {
    let tmp = Tmp::new();
    let (v1, v2) = upgrade_tables();
    {
        let db = SqliteDriver::open(tmp.db(), 2).expect("open");
        db.init(std::slice::from_ref(&v1)).expect("init v1");
        db.add(&v1, &row(json!({"id": "x", "a": 1})), &o())
            .expect("add");
    }
    let db = SqliteDriver::open(tmp.db(), 2).expect("reopen");
    db.init(std::slice::from_ref(&v2)).expect("init v2");
    let got = db
        .get(&v2, &row(json!({"id": "x"})), &o())
        .expect("get")
        .expect("row");
    assert_eq!(got, row(json!({"id": "x", "a": 1})));
    let idx = db
        .query(
            "SELECT name FROM sqlite_master \
             WHERE type = 'index' AND tbl_name = ?1 AND sql IS NOT NULL ORDER BY name",
            &[json!("up")],
            &o(),
        )
        .expect("indexes");
    assert_eq!(col(&idx, "name"), [json!("up_a_idx"), json!("up_b_idx")]);
}

#[test]
fn native_query_binds_parameters() {
    let (_tmp, db, t) = setup();
    nine(&db, &t);
    let r = db
        .query(
            "SELECT rk, num FROM t WHERE id = ?1 AND num > ?2 ORDER BY num",
            &[json!("a"), json!(7)],
            &o(),
        )
        .expect("query");
    assert_eq!(
        r.rows,
        vec![
            row(json!({"rk": "r8", "num": 8})),
            row(json!({"rk": "r9", "num": 9}))
        ]
    );
    let r = db
        .query(
            "UPDATE t SET num = num + 100 WHERE id = ?1",
            &[json!("a")],
            &o(),
        )
        .expect("update");
    assert_eq!(r.affected, 9);
    assert!(matches!(
        db.query("SELEKT 1", &[], &o()),
        Err(DbError::Driver(_))
    ));
}

#[test]
fn pool_serves_concurrent_writers() {
    let (_tmp, db, t) = setup();
    concurrent_incr(&db, &t, 8, 25, true);
}

#[test]
fn sql_dialects_quote_and_number_placeholders() {
    let t = test_table();
    let keys = key_params(&t, &row(json!({"id": "a", "rk": "b"}))).expect("keys");
    let s = sql::delete(sql::Dialect::Postgres, &t, keys.clone());
    assert_eq!(
        s.text,
        "DELETE FROM \"t\" WHERE \"id\" = $1 AND \"rk\" = $2"
    );
    let s = sql::delete(sql::Dialect::Mysql, &t, keys);
    assert_eq!(s.text, "DELETE FROM `t` WHERE `id` = ? AND `rk` = ?");
    assert_eq!(sql::Dialect::Sqlite.quote("a\"b"), "\"a\"\"b\"");
    let vals = prepare_write(
        &t,
        &row(json!({"id": "a", "rk": "b", "cnt": 1})),
        &o(),
        WriteMode::Incr,
    )
    .expect("vals");
    let s = sql::insert(sql::Dialect::Mysql, &t, vals, sql::Conflict::Incr);
    assert!(
        s.text
            .contains("ON DUPLICATE KEY UPDATE `cnt` = COALESCE(`t`.`cnt`, 0) + VALUES(`cnt`)"),
        "{}",
        s.text
    );
}

#[test]
fn values_are_coerced_by_column_type() {
    let date = Column::date("d");
    assert_eq!(
        encode(&date, &json!("1970-01-01T00:00:01Z")),
        Ok(Param::Int(1000))
    );
    assert_eq!(encode(&date, &json!("2500")), Ok(Param::Int(2500)));
    assert!(encode(&date, &json!("yesterday")).is_err());
    assert_eq!(encode(&Column::int("i"), &json!(3.0)), Ok(Param::Int(3)));
    assert_eq!(
        encode(&Column::int("i"), &json!(" 12 ")),
        Ok(Param::Int(12))
    );
    assert!(encode(&Column::int("i"), &json!(3.5)).is_err());
    assert_eq!(encode(&Column::bool("b"), &json!("off")), Ok(Param::Int(0)));
    assert_eq!(
        encode(&Column::real("r"), &json!("2.5")),
        Ok(Param::Real(2.5))
    );
    assert_eq!(
        encode(&Column::text("t"), &json!(7)),
        Ok(Param::Text("7".into()))
    );
    assert!(encode(&Column::text("t"), &json!([1])).is_err());
    assert_eq!(
        encode(&Column::json("j"), &json!([1])),
        Ok(Param::Text("[1]".into()))
    );
    assert_eq!(encode(&Column::json("j"), &Value::Null), Ok(Param::Null));
}
