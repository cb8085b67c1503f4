//! Unit tests of the DB API against SQLite in a temporary file: the conformance cases of issue 4
//! that later drivers must also pass, plus schema, operator and token details.

use super::*;
use serde_json::json;
use std::path::PathBuf;

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

fn row(v: Value) -> Row {
    v.as_object().expect("a JSON object").clone()
}

fn test_table() -> Table {
    Table::new(
        "t",
        vec![
            Column::text("id").primary(1),
            Column::text("rk").primary(2),
            Column::int("num"),
            Column::text("name").index(1),
            Column::json("data"),
            Column::bool("flag"),
            Column::counter("cnt"),
            Column::real("score"),
            Column::bigint("mtime").now(),
        ],
    )
    .expect("valid table")
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

/// The column of a `BadValue` error, or None for any other outcome.
fn bad_value<T>(r: Result<T, DbError>) -> Option<String> {
    match r {
        Err(DbError::BadValue { column, .. }) => Some(column),
        _ => None,
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

#[test]
fn add_put_ignore_unknown_columns() {
    let (_tmp, db, t) = setup();
    db.add(
        &t,
        &row(json!({"id": "a", "rk": "1", "num": 5, "bogus": "x", "Weird Name": 1})),
        &o(),
    )
    .expect("add with unknown columns");
    db.put(
        &t,
        &row(json!({"id": "a", "rk": "2", "name": "b", "other": [1]})),
        &o(),
    )
    .expect("put");
    let r = db
        .get(&t, &row(json!({"id": "a", "rk": "1"})), &o())
        .expect("get")
        .expect("row");
    assert_eq!(r["num"], json!(5));
    assert!(!r.contains_key("bogus"));
    assert!(
        r["mtime"].as_i64().is_some_and(|m| m > 1_600_000_000_000),
        "now column set: {r:?}"
    );
    let r = db
        .get(&t, &row(json!({"id": "a", "rk": "2"})), &o())
        .expect("get")
        .expect("row");
    assert_eq!(r["name"], json!("b"));
}

#[test]
fn add_twice_is_exists_put_replaces() {
    let (_tmp, db, t) = setup();
    let r = row(json!({"id": "a", "rk": "1", "num": 1, "name": "x"}));
    assert_eq!(db.add(&t, &r, &o()).expect("first add").affected, 1);
    assert_eq!(db.add(&t, &r, &o()), Err(DbError::Exists));
    db.put(&t, &row(json!({"id": "a", "rk": "1", "num": 2})), &o())
        .expect("put replaces");
    let got = db.get(&t, &r, &o()).expect("get").expect("row");
    assert_eq!(got["num"], json!(2));
    assert!(
        !got.contains_key("name"),
        "put replaces the whole row: {got:?}"
    );
}

#[test]
fn missing_key_is_refused() {
    let (_tmp, db, t) = setup();
    assert_eq!(
        bad_value(db.add(&t, &row(json!({"id": "a"})), &o())).as_deref(),
        Some("rk")
    );
    assert!(matches!(
        db.get(&t, &row(json!({"rk": "1"})), &o()),
        Err(DbError::BadValue { .. })
    ));
    assert!(
        matches!(db.add(&t, &row(json!({"id": "a", "rk": "1", "num": "abc"})), &o()),
        Err(DbError::BadValue { column, .. }) if column == "num")
    );
}

#[test]
fn update_keeps_other_columns() {
    let (_tmp, db, t) = setup();
    db.add(
        &t,
        &row(json!({"id": "a", "rk": "1", "num": 1, "name": "x", "flag": true})),
        &o(),
    )
    .expect("add");
    db.update(
        &t,
        &row(json!({"id": "a", "rk": "1", "num": 7, "junk": 1})),
        &o(),
    )
    .expect("update");
    let got = db
        .get(&t, &row(json!({"id": "a", "rk": "1"})), &o())
        .expect("get")
        .expect("row");
    assert_eq!(
        (got["num"].clone(), got["name"].clone(), got["flag"].clone()),
        (json!(7), json!("x"), json!(true))
    );
    assert_eq!(
        db.update(&t, &row(json!({"id": "a", "rk": "nope", "num": 1})), &o()),
        Err(DbError::NotFound)
    );
}

#[test]
fn incr_adds_and_creates() {
    let (_tmp, db, t) = setup();
    let k = json!({"id": "c", "rk": "1"});
    let mut expect = 0;
    for n in [1, 2, -1] {
        let mut r = row(k.clone());
        r.insert("cnt".into(), json!(n));
        r.insert("score".into(), json!(0.5));
        let res = db.incr(&t, &r, &o()).expect("incr");
        expect += n;
        assert_eq!(res.rows[0]["cnt"], json!(expect));
    }
    let got = db.get(&t, &row(k), &o()).expect("get").expect("row");
    assert_eq!(got["cnt"], json!(2));
    assert_eq!(got["score"], json!(1.5));
}

#[test]
fn select_with_operators() {
    let (_tmp, db, t) = setup();
    nine(&db, &t);
    let q = |query: Value, opts: Options| db.select(&t, &row(query), &opts).expect("select");
    let nums = |r: &Res| {
        col(r, "num")
            .iter()
            .filter_map(Value::as_i64)
            .collect::<Vec<_>>()
    };

    assert_eq!(
        nums(&q(json!({"id": "a", "num": 6}), o().op("num", Op::Gt))),
        [7, 8, 9]
    );
    assert_eq!(
        nums(&q(
            json!({"id": "a", "num": "6"}),
            o().op("num", "ge".parse().expect("op"))
        )),
        [6, 7, 8, 9]
    );
    assert_eq!(
        nums(&q(
            json!({"id": "a", "rk": "r"}),
            o().op("rk", Op::BeginsWith)
        ))
        .len(),
        9
    );
    assert_eq!(
        nums(&q(
            json!({"id": "a", "rk": "r3"}),
            o().op("rk", Op::BeginsWith)
        )),
        [3]
    );
    assert_eq!(
        nums(&q(
            json!({"id": "a", "rk": "R"}),
            o().op("rk", Op::BeginsWith)
        ))
        .len(),
        0,
        "case-sensitive"
    );
    assert_eq!(
        nums(&q(
            json!({"id": "a", "num": [3, 5]}),
            o().op("num", Op::Between)
        )),
        [3, 4, 5]
    );
    assert_eq!(
        nums(&q(
            json!({"id": "a", "num": "3,5"}),
            o().op("num", Op::NotBetween)
        )),
        [1, 2, 6, 7, 8, 9]
    );
    assert_eq!(
        nums(&q(
            json!({"id": "a", "rk": ["r2", "r4"]}),
            o().op("rk", Op::Between)
        )),
        [2, 3, 4]
    );
    assert_eq!(
        nums(&q(
            json!({"id": "a", "num": [1, 9, 4]}),
            o().op("num", Op::In)
        )),
        [1, 4, 9]
    );
    assert_eq!(
        nums(&q(
            json!({"id": "a", "rk": "r1,r2"}),
            o().op("rk", Op::NotIn)
        ))
        .len(),
        7
    );
    assert_eq!(
        nums(&q(json!({"id": "a", "num": []}), o().op("num", Op::In))).len(),
        0
    );
    assert_eq!(
        nums(&q(json!({"id": "a", "num": [2, 3]}), o())),
        [2, 3],
        "an array with = is in"
    );
    assert_eq!(
        nums(&q(json!({"id": "a", "num": 2}), o().op("num", Op::Ne))).len(),
        8
    );
    assert_eq!(
        nums(&q(json!({"id": "a", "num": 2}), o().op("num", Op::Le))),
        [1, 2]
    );
    assert_eq!(
        nums(&q(json!({"id": "a", "num": 2}), o().op("num", Op::Lt))),
        [1]
    );
    assert_eq!(
        nums(&q(
            json!({"id": "a", "name": "N1"}),
            o().op("name", Op::Like)
        ))
        .len(),
        0
    );
    assert_eq!(
        nums(&q(
            json!({"id": "a", "name": "N1%"}),
            o().op("name", Op::Ilike)
        )),
        [9]
    );
    assert_eq!(
        nums(&q(
            json!({"id": "a", "name": "n%"}),
            o().op("name", Op::Like)
        ))
        .len(),
        9
    );
    assert_eq!(
        nums(&q(
            json!({"id": "a", "name": "5"}),
            o().op("name", Op::Contains)
        )),
        [5]
    );
    assert_eq!(
        nums(&q(
            json!({"id": "a", "name": "5"}),
            o().op("name", Op::NotContains)
        ))
        .len(),
        8
    );
    assert_eq!(
        nums(&q(json!({"id": "a"}), o().op("data", Op::Null))).len(),
        9
    );
    assert_eq!(
        nums(&q(json!({"id": "a"}), o().op("num", Op::NotNull))).len(),
        9
    );
    assert!(matches!(
        db.select(
            &t,
            &row(json!({"id": "a", "name": "x"})),
            &o().op("name", Op::Regexp)
        ),
        Err(DbError::Unsupported(_))
    ));
    assert!(matches!(
        db.select(
            &t,
            &row(json!({"id": "a", "num": 1})),
            &o().op("num", Op::Between)
        ),
        Err(DbError::BadValue { .. })
    ));
    assert!(matches!(
        db.select(&t, &row(json!({"num": 1})), &o().op("num", Op::BeginsWith)),
        Err(DbError::BadValue { .. })
    ));
}

#[test]
fn select_column_lists() {
    let (_tmp, db, t) = setup();
    nine(&db, &t);
    let opts = Options {
        select: vec!["rk".into(), "num".into(), "nosuch".into()],
        ..o()
    };
    let r = db
        .select(&t, &row(json!({"id": "a", "num": 1})), &opts)
        .expect("select");
    assert_eq!(r.rows, vec![row(json!({"rk": "r1", "num": 1}))]);
    let g = db.get(
        &t,
        &row(json!({"id": "a", "rk": "r2"})),
        &Options {
            select: vec!["name".into()],
            ..o()
        },
    );
    assert_eq!(g.expect("get"), Some(row(json!({"name": "n8"}))));
}

#[test]
fn json_and_bool_round_trip() {
    let (_tmp, db, t) = setup();
    let data = json!({"a": [1, 2, {"b": null}], "s": "x'y\"z", "n": 1.5});
    db.put(
        &t,
        &row(json!({"id": "j", "rk": "1", "data": data, "flag": false, "score": 2})),
        &o(),
    )
    .expect("put");
    db.put(
        &t,
        &row(json!({"id": "j", "rk": "2", "data": "just text", "flag": "true"})),
        &o(),
    )
    .expect("put");
    let g = db
        .get(&t, &row(json!({"id": "j", "rk": "1"})), &o())
        .expect("get")
        .expect("row");
    assert_eq!(g["data"], data);
    assert_eq!(g["flag"], json!(false));
    assert_eq!(g["score"], json!(2.0));
    let g = db
        .get(&t, &row(json!({"id": "j", "rk": "2"})), &o())
        .expect("get")
        .expect("row");
    assert_eq!(
        (g["data"].clone(), g["flag"].clone()),
        (json!("just text"), json!(true))
    );
}

#[test]
fn del_then_get_is_none() {
    let (_tmp, db, t) = setup();
    let k = row(json!({"id": "d", "rk": "1"}));
    db.add(&t, &k, &o()).expect("add");
    assert_eq!(db.del(&t, &k, &o()).expect("del").affected, 1);
    assert_eq!(db.get(&t, &k, &o()).expect("get"), None);
    assert_eq!(db.del(&t, &k, &o()).expect("del again").affected, 0);
}

#[test]
fn paging() {
    let (_tmp, db, t) = setup();
    nine(&db, &t);
    for size in [2usize, 3] {
        let mut seen = Vec::new();
        let mut start = None;
        let mut pages = 0;
        loop {
            let opts = Options {
                count: size,
                start: start.take(),
                total: true,
                ..o()
            };
            let r = db
                .select(&t, &row(json!({"id": "a"})), &opts)
                .expect("page");
            assert_eq!(r.total, Some(9));
            pages += 1;
            seen.extend(col(&r, "num").into_iter().filter_map(|v| v.as_i64()));
            match r.next_token {
                Some(tok) => {
                    assert_eq!(r.rows.len(), size);
                    start = Some(tok);
                }
                None => break,
            }
        }
        assert_eq!(seen, (1..=9).collect::<Vec<_>>(), "page size {size}");
        assert_eq!(pages, 9usize.div_ceil(size));
    }
    let bad = Options {
        start: Some("not a token".into()),
        ..o()
    };
    assert!(matches!(
        db.select(&t, &row(json!({"id": "a"})), &bad),
        Err(DbError::BadValue { .. })
    ));
}

#[test]
fn sort_and_desc() {
    let (_tmp, db, t) = setup();
    nine(&db, &t);
    let q = row(json!({"id": "a"}));
    let rks = |r: Res| {
        col(&r, "rk")
            .into_iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect::<Vec<_>>()
    };
    let asc = rks(db
        .select(&t, &q, &Options { count: 3, ..o() })
        .expect("asc"));
    assert_eq!(asc, ["r1", "r2", "r3"]);
    let desc = rks(db
        .select(
            &t,
            &q,
            &Options {
                count: 3,
                desc: true,
                ..o()
            },
        )
        .expect("desc"));
    assert_eq!(desc, ["r9", "r8", "r7"]);
    let by_name = rks(db
        .select(
            &t,
            &q,
            &Options {
                count: 3,
                sort: Some("name".into()),
                ..o()
            },
        )
        .expect("sort"));
    assert_eq!(by_name, ["r9", "r8", "r7"], "name runs n9..n1");
    let by_name_desc = rks(db
        .select(
            &t,
            &q,
            &Options {
                count: 3,
                sort: Some("name".into()),
                desc: true,
                ..o()
            },
        )
        .expect("sort"));
    assert_eq!(by_name_desc, ["r1", "r2", "r3"]);
    let bad = Options {
        sort: Some("name; DROP TABLE t".into()),
        ..o()
    };
    assert!(matches!(db.select(&t, &q, &bad), Err(DbError::BadName(_))));
}

#[test]
fn noscan_refuses_unconditioned_select() {
    let (_tmp, db, t) = setup();
    nine(&db, &t);
    assert_eq!(db.select(&t, &Row::new(), &o()), Err(DbError::NoCondition));
    assert_eq!(
        db.select(&t, &row(json!({"unknown": 1})), &o()),
        Err(DbError::NoCondition)
    );
    let all = db
        .select(
            &t,
            &Row::new(),
            &Options {
                noscan: false,
                ..o()
            },
        )
        .expect("scan allowed");
    assert_eq!(all.rows.len(), 9);
    let r = db
        .select(&t, &Row::new(), &o().op("data", Op::Null))
        .expect("a unary op is a condition");
    assert_eq!(r.rows.len(), 9);
}

#[test]
fn injection_is_harmless() {
    let (_tmp, db, t) = setup();
    nine(&db, &t);
    let evil = "x' OR '1'='1";
    // Through values: stored and matched literally.
    db.add(
        &t,
        &row(json!({"id": evil, "rk": "1\"; DROP TABLE t; --", "name": evil})),
        &o(),
    )
    .expect("add");
    let r = db
        .select(&t, &row(json!({"id": evil})), &o())
        .expect("select");
    assert_eq!(r.rows.len(), 1);
    assert_eq!(r.rows[0]["name"], json!(evil));
    assert_eq!(
        db.select(&t, &row(json!({"id": "a' OR '1'='1"})), &o())
            .expect("select")
            .rows
            .len(),
        0
    );
    let r = db.select(&t, &row(json!({"id": "a", "num": "1 OR 1=1"})), &o());
    assert!(matches!(r, Err(DbError::BadValue { .. })), "{r:?}");
    // Through column names in writes: ignored.
    let mut w = row(json!({"id": "a", "rk": "r1"}));
    w.insert("num\" = 0; DROP TABLE t; --".into(), json!(1));
    w.insert("name = 'pwned' --".into(), json!(1));
    db.update(&t, &w, &o())
        .expect("update ignores unknown names");
    // Through an ops key: refused with the name.
    let mut ops = o();
    ops.ops.insert("id) OR (1=1".into(), Op::Eq);
    let refused = bad_name(db.select(&t, &row(json!({"id": "a"})), &ops));
    assert!(refused.is_some_and(|n| n.contains("OR")));
    // Through the select list: ignored.
    let sel = Options {
        select: vec!["*, sqlite_version()".into()],
        ..o()
    };
    assert_eq!(
        db.select(&t, &row(json!({"id": "a"})), &sel)
            .expect("select")
            .rows
            .len(),
        9
    );
    // Data intact.
    let all = db
        .select(
            &t,
            &Row::new(),
            &Options {
                noscan: false,
                ..o()
            },
        )
        .expect("scan");
    assert_eq!(all.rows.len(), 10);
    let r1 = db
        .get(&t, &row(json!({"id": "a", "rk": "r1"})), &o())
        .expect("get")
        .expect("row");
    assert_eq!(
        (r1["num"].clone(), r1["name"].clone()),
        (json!(1), json!("n9"))
    );
}

#[test]
fn schema_upgrade_keeps_data() {
    let tmp = Tmp::new();
    let v1 = Table::new("up", vec![Column::text("id").primary(1), Column::int("a")]).expect("v1");
    {
        let db = SqliteDriver::open(tmp.db(), 2).expect("open");
        db.init(std::slice::from_ref(&v1)).expect("init v1");
        db.add(&v1, &row(json!({"id": "x", "a": 1, "b": "ignored"})), &o())
            .expect("add");
    }
    let v2 = Table::new(
        "up",
        vec![
            Column::text("id").primary(1),
            Column::int("a").index(1),
            Column::text("b").index_n(1, 1),
        ],
    )
    .expect("v2");
    let db = SqliteDriver::open(tmp.db(), 2).expect("reopen");
    db.init(std::slice::from_ref(&v2)).expect("init v2");
    db.init(std::slice::from_ref(&v2)).expect("init v2 again");
    let got = db
        .get(&v2, &row(json!({"id": "x"})), &o())
        .expect("get")
        .expect("row");
    assert_eq!(got, row(json!({"id": "x", "a": 1})));
    db.update(&v2, &row(json!({"id": "x", "b": "new"})), &o())
        .expect("update new column");
    let r = db
        .select(&v2, &row(json!({"b": "new"})), &o())
        .expect("select by new column");
    assert_eq!(r.rows, vec![row(json!({"id": "x", "a": 1, "b": "new"}))]);
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
fn column_properties_on_write() {
    let tmp = Tmp::new();
    let t = Table::new(
        "p",
        vec![
            Column::text("id").primary(1),
            Column::text("kind").values(&["a", "b"]).value("a"),
            Column::text("owner").notnull(),
            Column::text("joined").join(&["kind", "owner"]),
            Column::bigint("ctime").readonly(),
            Column::text("email").unique(),
        ],
    )
    .expect("table");
    let db = SqliteDriver::open(tmp.db(), 2).expect("open");
    db.init(std::slice::from_ref(&t)).expect("init");
    assert_eq!(
        bad_value(db.add(&t, &row(json!({"id": "1"})), &o())).as_deref(),
        Some("owner")
    );
    assert!(
        matches!(db.add(&t, &row(json!({"id": "1", "owner": "o", "kind": "c"})), &o()),
        Err(DbError::BadValue { column, .. }) if column == "kind")
    );
    db.add(
        &t,
        &row(json!({"id": "1", "owner": "o", "ctime": 5, "email": "e"})),
        &o(),
    )
    .expect("add");
    let g = db
        .get(&t, &row(json!({"id": "1"})), &o())
        .expect("get")
        .expect("row");
    assert_eq!(
        (g["kind"].clone(), g["joined"].clone()),
        (json!("a"), json!("a:o")),
        "default, then join"
    );
    db.update(&t, &row(json!({"id": "1", "ctime": 9, "kind": "b"})), &o())
        .expect("update");
    let g = db
        .get(&t, &row(json!({"id": "1"})), &o())
        .expect("get")
        .expect("row");
    assert_eq!(
        (g["ctime"].clone(), g["kind"].clone()),
        (json!(5), json!("b")),
        "readonly kept"
    );
    assert_eq!(
        db.add(
            &t,
            &row(json!({"id": "2", "owner": "o", "email": "e"})),
            &o()
        ),
        Err(DbError::Exists)
    );
    let skip = Options {
        skip_null: true,
        skip_columns: vec!["kind".into()],
        ..o()
    };
    db.update(
        &t,
        &row(json!({"id": "1", "owner": null, "kind": "a"})),
        &skip,
    )
    .expect("update skipping");
    let g = db
        .get(&t, &row(json!({"id": "1"})), &o())
        .expect("get")
        .expect("row");
    assert_eq!(
        (g["owner"].clone(), g["kind"].clone()),
        (json!("o"), json!("b"))
    );
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
    let db = std::sync::Arc::new(db);
    let t = std::sync::Arc::new(t);
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (db, t) = (db.clone(), t.clone());
            std::thread::spawn(move || {
                for j in 0..25 {
                    db.incr(&t, &row(json!({"id": "p", "rk": "1", "cnt": 1})), &o())
                        .expect("incr");
                    db.put(
                        &t,
                        &row(json!({"id": format!("w{i}"), "rk": format!("{j}")})),
                        &o(),
                    )
                    .expect("put");
                    db.get(&t, &row(json!({"id": "p", "rk": "1"})), &o())
                        .expect("get");
                }
            })
        })
        .collect();
    for th in threads {
        th.join().expect("thread");
    }
    let g = db
        .get(&t, &row(json!({"id": "p", "rk": "1"})), &o())
        .expect("get")
        .expect("row");
    assert_eq!(g["cnt"], json!(200));
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
