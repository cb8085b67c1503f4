//! The driver conformance suite (issue 4): one set of behaviour checks that every [`Driver`] must
//! pass, so SQLite, PostgreSQL, MySQL and sled answer the DB API (docs/data.md) the same way. A
//! driver's tests call [`run`] with their driver and a table name prefix:
//!
//! ```text
//! conformance::run(&driver, "c").await;
//! ```
//!
//! Every check creates its own tables (`{prefix}_paging`, `{prefix}_join`, ...) with `init`,
//! empties them first (so a run against a server that kept tables from an earlier run still
//! starts clean), and panics with the check and driver name on the first difference. Where docs/data.md
//! leaves a behaviour open (row order without `sort`, whether `incr` returns the row, whether
//! `regexp` is answered), the checks accept every allowed answer. `replace`/`check_mtime` are not
//! implemented yet and not checked.

use super::schema::valid_name;
use super::{BlockingDriver, Column, DbError, Driver, Op, Options, Res, Row, Table};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::fmt::Display;
use std::future::Future;

/// The longest prefix accepted: `{prefix}_{suffix}` and the index names derived from it must stay
/// within PostgreSQL's 63-byte identifiers.
const MAX_PREFIX: usize = 32;

/// Runs every check against `d`, creating tables whose names start with `prefix` (a valid name of
/// at most 32 bytes; use a distinct prefix per concurrent run on a shared server). Panics with the
/// failing check's name.
pub(crate) async fn run(d: &dyn Driver, prefix: &str) {
    assert!(
        valid_name(prefix) && prefix.len() <= MAX_PREFIX,
        "conformance: prefix {prefix:?} must match ^[a-z_][a-z0-9_]*$ and be at most {MAX_PREFIX} bytes"
    );
    macro_rules! checks {
        ($($check:ident),* $(,)?) => {
            $( $check(&Ck { d, prefix, check: stringify!($check) }).await; )*
        };
    }
    checks!(
        add_put_ignore_unknown_columns,
        add_twice_exists_update_missing_not_found,
        keys_are_required,
        update_keeps_other_columns,
        incr_adds_and_creates,
        incr_is_atomic,
        list_by_ids,
        select_gt_begins_with_between_in,
        select_begins_with_any,
        select_prefixes_reads_every_range,
        select_other_operators,
        select_column_lists,
        json_bool_real_round_trip,
        del_then_get_is_none,
        paging_with_next_token,
        sort_and_desc,
        noscan_refuses_unconditioned_select,
        bad_names_are_refused,
        injection_is_refused_or_harmless,
        join_columns,
        column_properties_on_write,
        replace_respects_mtime_and_data,
        schema_upgrade_keeps_data,
    );
}

/// One check in progress: the driver, the table prefix and the check's name for messages.
struct Ck<'a> {
    d: &'a dyn Driver,
    prefix: &'a str,
    check: &'static str,
}

/// Fails the current check unless the condition holds.
macro_rules! ensure {
    ($c:expr, $cond:expr, $($fmt:tt)+) => {
        if !$cond {
            $c.fail(format_args!($($fmt)+));
        }
    };
}

/// Fails the current check unless both sides are equal, showing both.
macro_rules! same {
    ($c:expr, $left:expr, $right:expr, $($fmt:tt)+) => {
        // A match, like assert_eq!, so temporaries in either side live through the comparison.
        match (&$left, &$right) {
            (l, r) => {
                if l != r {
                    $c.fail(format_args!(
                        "{}\n  got:      {l:?}\n  expected: {r:?}",
                        format_args!($($fmt)+)
                    ));
                }
            }
        }
    };
}

/// A row from a JSON object literal (the tests of every driver use it).
pub(crate) fn row(v: Value) -> Row {
    match v {
        Value::Object(m) => m,
        other => panic!("conformance: test row {other} is not a JSON object"),
    }
}

fn o() -> Options {
    Options::default()
}

/// Options that allow a select without conditions.
fn scan() -> Options {
    Options {
        noscan: false,
        ..o()
    }
}

fn sorted(sort: &str, desc: bool, count: usize) -> Options {
    Options {
        sort: Some(sort.into()),
        desc,
        count,
        ..o()
    }
}

/// The values of one column, in row order (Null where a row lacks it).
fn col(res: &Res, name: &str) -> Vec<Value> {
    res.rows
        .iter()
        .map(|r| r.get(name).cloned().unwrap_or(Value::Null))
        .collect()
}

/// The integer values of one column, in row order.
fn ints(res: &Res, name: &str) -> Vec<i64> {
    col(res, name).iter().filter_map(Value::as_i64).collect()
}

/// The integer values of one column as a set (for selects without a sort).
fn int_set(res: &Res, name: &str) -> BTreeSet<i64> {
    ints(res, name).into_iter().collect()
}

/// The text values of one column, in row order.
fn texts(res: &Res, name: &str) -> Vec<String> {
    col(res, name)
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect()
}

fn text_set(res: &Res, name: &str) -> BTreeSet<String> {
    texts(res, name).into_iter().collect()
}

fn set<T: Ord + Clone>(items: &[T]) -> BTreeSet<T> {
    items.iter().cloned().collect()
}

/// A number as f64 (real columns may come back as `2` or `2.0`; JSON does not tell them apart).
fn num(v: Option<&Value>) -> Option<f64> {
    v.and_then(Value::as_f64)
}

/// The drivers' own tests' table `t`: [`items_columns`] and then `extra`.
pub(crate) fn items_table(extra: impl IntoIterator<Item = Column>) -> Table {
    let mut columns = items_columns();
    columns.extend(extra);
    Table::new("t", columns).expect("valid table")
}

/// The two descriptions of table `up` in the blocking drivers' restart tests: v1 has `id` and
/// `a`; v2 indexes `a` and adds `b` with an index of its own.
pub(crate) fn upgrade_tables() -> (Table, Table) {
    let v1 = Table::new("up", vec![Column::text("id").primary(1), Column::int("a")]).expect("v1");
    let v2 = Table::new(
        "up",
        vec![
            Column::text("id").primary(1),
            Column::int("a").index(1),
            Column::text("b").index_n(1, 1),
        ],
    )
    .expect("v2");
    (v1, v2)
}

/// Drives a blocking driver from `writers` threads at once, `rounds` times each: every round
/// increments `cnt` of row (p, 1) of `t` and, when `mixed`, also puts a row of the thread's own
/// and reads row (p, 1) back. Afterwards the counter must be exactly `writers * rounds`.
pub(crate) fn concurrent_incr(
    db: &dyn BlockingDriver,
    t: &Table,
    writers: usize,
    rounds: usize,
    mixed: bool,
) {
    let key = &row(json!({"id": "p", "rk": "1"}));
    std::thread::scope(|s| {
        for i in 0..writers {
            s.spawn(move || {
                for j in 0..rounds {
                    db.incr(t, &row(json!({"id": "p", "rk": "1", "cnt": 1})), &o())
                        .expect("incr");
                    if mixed {
                        let own = row(json!({"id": format!("w{i}"), "rk": format!("{j}")}));
                        db.put(t, &own, &o()).expect("put");
                        db.get(t, key, &o()).expect("get");
                    }
                }
            });
        }
    });
    let g = db.get(t, key, &o()).expect("get").expect("row");
    assert_eq!(
        g["cnt"],
        json!(writers * rounds),
        "{writers} threads x {rounds} increments"
    );
}

/// The rows the key-value drivers' select tests hold in [`items_table`]: id=a, rk=r1..r9,
/// num=1..9, name=n9..n1 (score and data on every third), and one id=b row.
pub(crate) fn select_rows() -> Vec<Row> {
    let mut rows: Vec<Row> = (1..=9)
        .map(|i| {
            let mut r = row(
                json!({"id": "a", "rk": format!("r{i}"), "num": i, "name": format!("n{}", 10 - i)}),
            );
            if i % 3 == 0 {
                r.insert("score".into(), json!(i as f64 / 2.0));
                r.insert("data".into(), json!({"i": i}));
            }
            r
        })
        .collect();
    rows.push(row(
        json!({"id": "b", "rk": "r1", "num": 100, "name": "N%_x"}),
    ));
    rows
}

/// The selects (query, ops as column/operator names) whose answers the key-value drivers' tests
/// compare with SQLite's over [`select_rows`].
pub(crate) fn select_cases() -> Vec<(Value, Vec<(&'static str, &'static str)>)> {
    vec![
        (json!({"id": "a"}), vec![]),
        (json!({"id": "a", "num": 6}), vec![("num", "gt")]),
        (json!({"id": "a", "num": "6"}), vec![("num", "ge")]),
        (json!({"id": "a", "num": 3}), vec![("num", "lt")]),
        (json!({"id": "a", "num": 3}), vec![("num", "<=")]),
        (json!({"id": "a", "num": 3}), vec![("num", "ne")]),
        (json!({"id": "a", "rk": "r"}), vec![("rk", "begins_with")]),
        (json!({"id": "a", "rk": "r3"}), vec![("rk", "begins_with")]),
        (json!({"id": "a", "rk": "R"}), vec![("rk", "begins_with")]),
        (json!({"id": "a", "rk": "r4"}), vec![("rk", "gt")]),
        (json!({"id": "a", "rk": "r4"}), vec![("rk", "le")]),
        (json!({"id": "a", "rk": "r4"}), vec![("rk", "lt")]),
        (
            json!({"id": "a", "rk": ["r2", "r4"]}),
            vec![("rk", "between")],
        ),
        (
            json!({"id": "a", "rk": ["r4", "r2"]}),
            vec![("rk", "between")],
        ),
        (json!({"id": "a", "num": [3, 5]}), vec![("num", "between")]),
        (
            json!({"id": "a", "num": "3,5"}),
            vec![("num", "not between")],
        ),
        (json!({"num": [1, 9, 4, 100]}), vec![("num", "in")]),
        (json!({"id": ["b", "a", "zz"]}), vec![]),
        (json!({"id": ["b", "a"], "rk": ["r2", "r1"]}), vec![]),
        (json!({"id": "a", "rk": "r1,r2"}), vec![("rk", "not in")]),
        (json!({"id": "a", "num": []}), vec![("num", "in")]),
        (json!({"id": "a", "num": []}), vec![("num", "not in")]),
        (json!({"num": [2, 3]}), vec![]),
        (json!({"name": "N1"}), vec![("name", "like")]),
        (json!({"name": "N1%"}), vec![("name", "ilike")]),
        (json!({"name": "n%"}), vec![("name", "like")]),
        (json!({"name": "n_"}), vec![("name", "like")]),
        (json!({"name": "%\\_%"}), vec![("name", "like")]),
        (json!({"name": "5"}), vec![("name", "contains")]),
        (json!({"name": "5"}), vec![("name", "not contains")]),
        (json!({"name": "n5"}), vec![]),
        (json!({"name": ["n5", "n6"]}), vec![]),
        (json!({"name": "n5"}), vec![("name", "gt")]),
        (json!({"name": "n"}), vec![("name", "begins_with")]),
        (json!({"id": "a"}), vec![("data", "null")]),
        (json!({}), vec![("data", "not null")]),
        (json!({"data": {"i": 3}}), vec![]),
        (json!({"data": "{\"i\":"}), vec![("data", "begins_with")]),
        (json!({"score": 1.4}), vec![("score", "gt")]),
        (json!({"score": null}), vec![]),
        (json!({"score": null}), vec![("score", "ne")]),
        (json!({"score": 3}), vec![("score", "ne")]),
        (json!({"score": [1.5, 3]}), vec![("score", "not in")]),
        (json!({"flag": false}), vec![]),
        (json!({"id": "a", "num": 1}), vec![("num", "between")]),
        (json!({"num": 1}), vec![("num", "begins_with")]),
        (json!({"id": "a", "num": "1 OR 1=1"}), vec![]),
        (json!({}), vec![]),
        (json!({"unknown": 1}), vec![]),
    ]
}

/// The sorts each of [`select_cases`] is compared with: (sort column, desc).
pub(crate) const SELECT_SORTS: [(Option<&str>, bool); 6] = [
    (None, false),
    (None, true),
    (Some("name"), false),
    (Some("score"), true),
    (Some("rk"), true),
    (Some("id"), false),
];

/// A select's result without the time columns, for comparing drivers.
pub(crate) fn strip(mut r: Result<Res, DbError>) -> Result<Res, DbError> {
    if let Ok(res) = &mut r {
        for row in &mut res.rows {
            row.remove("mtime");
        }
    }
    r
}

/// Runs the future `cleanup` makes to completion on a fresh thread with its own current-thread
/// runtime: for test guards that drop a database or schema from `Drop`, which cannot await (and
/// may run while the test's runtime unwinds). An error or a panic is reported on stderr after
/// `what`.
pub(crate) fn run_cleanup<F, Fut, E>(what: &str, cleanup: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let done = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(cleanup()).map_err(|e| e.to_string())
    })
    .join();
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("{what}: {e}"),
        Err(_) => eprintln!("{what}: cleanup thread panicked"),
    }
}

/// The general-purpose test table: composite key `id`, `rk` (range key) and one of each type.
fn items_columns() -> Vec<Column> {
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
    ]
}

impl Ck<'_> {
    fn fail(&self, msg: impl Display) -> ! {
        panic!(
            "conformance check `{}` failed on driver {} (prefix {}): {msg}",
            self.check,
            self.d.name(),
            self.prefix
        )
    }

    /// The value of a call that must succeed.
    fn ok<T>(&self, what: impl Display, r: Result<T, DbError>) -> T {
        r.unwrap_or_else(|e| self.fail(format_args!("{what}: unexpected error {e} ({e:?})")))
    }

    /// The error of a call that must fail.
    fn err<T: std::fmt::Debug>(&self, what: impl Display, r: Result<T, DbError>) -> DbError {
        match r {
            Ok(v) => self.fail(format_args!("{what}: expected an error, got Ok({v:?})")),
            Err(e) => e,
        }
    }

    /// A call that must fail because of the caller (a 4xx, not a driver failure).
    fn caller_err<T: std::fmt::Debug>(&self, what: impl Display, r: Result<T, DbError>) -> DbError {
        let e = self.err(&what, r);
        ensure!(
            self,
            e.is_caller_error(),
            "{what}: expected a caller error, got {e} ({e:?})"
        );
        e
    }

    /// A call that must fail with [`DbError::BadValue`]; returns the column.
    fn bad_value<T: std::fmt::Debug>(&self, what: impl Display, r: Result<T, DbError>) -> String {
        match self.err(&what, r) {
            DbError::BadValue { column, .. } => column,
            e => self.fail(format_args!("{what}: expected BadValue, got {e} ({e:?})")),
        }
    }

    /// A call that must fail with [`DbError::BadName`] naming `name` in its message.
    fn bad_name<T: std::fmt::Debug>(&self, what: impl Display, r: Result<T, DbError>, name: &str) {
        match self.err(&what, r) {
            e @ DbError::BadName(_) => ensure!(
                self,
                e.to_string().contains(name),
                "{what}: the error `{e}` does not name {name:?}"
            ),
            e => self.fail(format_args!("{what}: expected BadName, got {e} ({e:?})")),
        }
    }

    /// A table `{prefix}_{suffix}`.
    fn table(&self, suffix: &str, columns: Vec<Column>) -> Table {
        let name = format!("{}_{suffix}", self.prefix);
        self.ok(
            format_args!("describe table {name}"),
            Table::new(&name, columns),
        )
    }

    /// The general-purpose table `{prefix}_{suffix}` (see [`items_columns`]).
    fn items(&self, suffix: &str) -> Table {
        self.table(suffix, items_columns())
    }

    /// Creates (or upgrades) the tables and deletes every row left in them.
    async fn fresh(&self, tables: &[Table]) {
        self.ok("init", self.d.init(tables).await);
        for t in tables {
            self.clear(t).await;
        }
    }

    /// Deletes every row of `t`.
    async fn clear(&self, t: &Table) {
        let keys: Vec<String> = t.primary_keys().iter().map(|c| c.name.clone()).collect();
        for _ in 0..1000 {
            let opts = Options {
                select: keys.clone(),
                count: 1000,
                ..scan()
            };
            let res = self.ok(
                format_args!("clear {}: select", t.name()),
                self.d.select(t, &Row::new(), &opts).await,
            );
            if res.rows.is_empty() {
                return;
            }
            for r in &res.rows {
                self.ok(
                    format_args!("clear {}: del {r:?}", t.name()),
                    self.d.del(t, r, &o()).await,
                );
            }
        }
        self.fail(format_args!("clear {}: rows keep coming back", t.name()))
    }

    async fn add(&self, t: &Table, v: Value) -> Res {
        let r = row(v);
        self.ok(format_args!("add {r:?}"), self.d.add(t, &r, &o()).await)
    }

    async fn put(&self, t: &Table, v: Value) -> Res {
        let r = row(v);
        self.ok(format_args!("put {r:?}"), self.d.put(t, &r, &o()).await)
    }

    async fn update(&self, t: &Table, v: Value) -> Res {
        let r = row(v);
        self.ok(
            format_args!("update {r:?}"),
            self.d.update(t, &r, &o()).await,
        )
    }

    async fn incr(&self, t: &Table, v: Value) -> Res {
        let r = row(v);
        self.ok(format_args!("incr {r:?}"), self.d.incr(t, &r, &o()).await)
    }

    async fn del(&self, t: &Table, v: Value) -> Res {
        let r = row(v);
        self.ok(format_args!("del {r:?}"), self.d.del(t, &r, &o()).await)
    }

    async fn get_with(&self, t: &Table, key: Value, opts: &Options) -> Option<Row> {
        let k = row(key);
        self.ok(format_args!("get {k:?}"), self.d.get(t, &k, opts).await)
    }

    async fn get(&self, t: &Table, key: Value) -> Option<Row> {
        self.get_with(t, key, &o()).await
    }

    /// The row with this key, which must exist.
    async fn found(&self, t: &Table, key: Value) -> Row {
        let shown = key.to_string();
        self.get(t, key)
            .await
            .unwrap_or_else(|| self.fail(format_args!("get {shown}: the row is missing")))
    }

    async fn select(&self, t: &Table, query: Value, opts: &Options) -> Res {
        let q = row(query);
        self.ok(
            format_args!("select {q:?} with {:?}", opts.ops),
            self.d.select(t, &q, opts).await,
        )
    }

    /// Each of `names` must be refused with [`DbError::BadName`] naming it, both as an ops key
    /// and as the sort column (descending when `desc`) of a select on `id = a`.
    async fn bad_ops_and_sort(&self, t: &Table, names: &[&str], desc: bool) {
        let q = row(json!({"id": "a"}));
        for &bad in names {
            self.bad_name(
                format!("ops key {bad:?}"),
                self.d.select(t, &q, &o().op(bad, Op::Eq)).await,
                bad,
            );
            self.bad_name(
                format!("sort {bad:?}"),
                self.d.select(t, &q, &sorted(bad, desc, 50)).await,
                bad,
            );
        }
    }

    /// Adds rows id=a, rk=r1..r9, num=1..9, name=n9..n1, plus one row with id=b that conditions
    /// on id=a must not return.
    async fn nine(&self, t: &Table) {
        for i in 1..=9 {
            self.add(
                t,
                json!({"id": "a", "rk": format!("r{i}"), "num": i, "name": format!("n{}", 10 - i)}),
            )
            .await;
        }
        self.add(t, json!({"id": "b", "rk": "r5", "num": 100, "name": "zz"}))
            .await;
    }
}

async fn add_put_ignore_unknown_columns(c: &Ck<'_>) {
    let t = c.items("addput");
    c.fresh(std::slice::from_ref(&t)).await;
    let r = c
        .add(
            &t,
            json!({"id": "a", "rk": "1", "num": 5, "bogus": "x", "Weird Name": 1, "x;y": [1]}),
        )
        .await;
    same!(c, r.affected, 1, "add affects one row");
    c.put(
        &t,
        json!({"id": "a", "rk": "2", "name": "b", "other": {"k": 1}}),
    )
    .await;
    let g = c.found(&t, json!({"id": "a", "rk": "1"})).await;
    same!(c, g.get("num"), Some(&json!(5)), "added value");
    ensure!(
        c,
        g.keys().all(|k| t.column(k).is_some()),
        "a read returned a column the table does not describe: {g:?}"
    );
    ensure!(
        c,
        g.get("mtime")
            .and_then(Value::as_i64)
            .is_some_and(|m| m > 1_600_000_000_000),
        "the `now` column mtime is set to the current time in ms: {g:?}"
    );
    let g = c.found(&t, json!({"id": "a", "rk": "2"})).await;
    same!(c, g.get("name"), Some(&json!("b")), "put value");
    ensure!(c, !g.contains_key("other"), "unknown column stored: {g:?}");
}

async fn add_twice_exists_update_missing_not_found(c: &Ck<'_>) {
    let t = c.items("exists");
    c.fresh(std::slice::from_ref(&t)).await;
    let r = row(json!({"id": "a", "rk": "1", "num": 1, "name": "x"}));
    c.add(&t, Value::Object(r.clone())).await;
    same!(
        c,
        c.d.add(&t, &r, &o()).await,
        Err(DbError::Exists),
        "a second add of the same key"
    );
    same!(
        c,
        c.found(&t, json!({"id": "a", "rk": "1"})).await.get("num"),
        Some(&json!(1)),
        "the failed add left the row alone"
    );
    c.put(&t, json!({"id": "a", "rk": "1", "num": 2})).await;
    let g = c.found(&t, json!({"id": "a", "rk": "1"})).await;
    same!(c, g.get("num"), Some(&json!(2)), "put replaces");
    ensure!(
        c,
        !g.contains_key("name"),
        "put replaces the whole row, name should be gone: {g:?}"
    );
    same!(
        c,
        c.d.update(&t, &row(json!({"id": "a", "rk": "nope", "num": 1})), &o())
            .await,
        Err(DbError::NotFound),
        "update of a missing row"
    );
    same!(
        c,
        c.get(&t, json!({"id": "a", "rk": "nope"})).await,
        None,
        "update of a missing row must not create it"
    );
}

async fn keys_are_required(c: &Ck<'_>) {
    let t = c.items("keys");
    c.fresh(std::slice::from_ref(&t)).await;
    let col = c.bad_value(
        "add without the range key",
        c.d.add(&t, &row(json!({"id": "a", "num": 1})), &o()).await,
    );
    same!(c, col, "rk", "the missing key column is named");
    c.bad_value(
        "add with an empty key",
        c.d.add(&t, &row(json!({"id": "a", "rk": ""})), &o()).await,
    );
    c.bad_value(
        "get without the hash key",
        c.d.get(&t, &row(json!({"rk": "1"})), &o()).await,
    );
    c.bad_value(
        "del without the range key",
        c.d.del(&t, &row(json!({"id": "a"})), &o()).await,
    );
    let col = c.bad_value(
        "add with text in an int column",
        c.d.add(&t, &row(json!({"id": "a", "rk": "1", "num": "abc"})), &o())
            .await,
    );
    same!(c, col, "num", "the bad column is named");
    same!(
        c,
        c.select(&t, json!({"id": "a"}), &o()).await.rows.len(),
        0,
        "refused writes stored nothing"
    );
}

async fn update_keeps_other_columns(c: &Ck<'_>) {
    let t = c.items("update");
    c.fresh(std::slice::from_ref(&t)).await;
    c.add(
        &t,
        json!({"id": "a", "rk": "1", "num": 1, "name": "x", "flag": true, "data": {"k": [1]}}),
    )
    .await;
    c.add(&t, json!({"id": "a", "rk": "2", "num": 2, "name": "y"}))
        .await;
    c.update(&t, json!({"id": "a", "rk": "1", "num": 7, "junk": 1}))
        .await;
    let g = c.found(&t, json!({"id": "a", "rk": "1"})).await;
    same!(
        c,
        (g.get("num"), g.get("name"), g.get("flag"), g.get("data")),
        (
            Some(&json!(7)),
            Some(&json!("x")),
            Some(&json!(true)),
            Some(&json!({"k": [1]}))
        ),
        "num updated, name/flag/data kept"
    );
    let g = c.found(&t, json!({"id": "a", "rk": "2"})).await;
    same!(
        c,
        (g.get("num"), g.get("name")),
        (Some(&json!(2)), Some(&json!("y"))),
        "another row is untouched"
    );
    c.update(&t, json!({"id": "a", "rk": "1", "name": null}))
        .await;
    let g = c.found(&t, json!({"id": "a", "rk": "1"})).await;
    ensure!(
        c,
        !g.contains_key("name") && g.get("num") == Some(&json!(7)),
        "an explicit null clears only that column: {g:?}"
    );
}

async fn incr_adds_and_creates(c: &Ck<'_>) {
    let t = c.items("incr");
    c.fresh(std::slice::from_ref(&t)).await;
    let mut expect = 0;
    for n in [1, 2, -1] {
        let res = c
            .incr(&t, json!({"id": "c", "rk": "1", "cnt": n, "score": 0.5}))
            .await;
        expect += n;
        // Whether incr returns the row is up to the driver; when it does, it is the new row.
        if let Some(r) = res.rows.first() {
            same!(c, r.get("cnt"), Some(&json!(expect)), "incr {n:+} result");
        }
        let g = c.found(&t, json!({"id": "c", "rk": "1"})).await;
        same!(
            c,
            g.get("cnt"),
            Some(&json!(expect)),
            "counter after incr {n:+}"
        );
    }
    let g = c.found(&t, json!({"id": "c", "rk": "1"})).await;
    same!(c, num(g.get("score")), Some(1.5), "real column incremented");

    c.add(&t, json!({"id": "c", "rk": "2", "name": "keep", "cnt": 10}))
        .await;
    c.incr(&t, json!({"id": "c", "rk": "2", "cnt": 5})).await;
    let g = c.found(&t, json!({"id": "c", "rk": "2"})).await;
    same!(
        c,
        (g.get("cnt"), g.get("name")),
        (Some(&json!(15)), Some(&json!("keep"))),
        "incr of an existing row keeps its other columns"
    );
    same!(
        c,
        c.found(&t, json!({"id": "c", "rk": "1"})).await.get("cnt"),
        Some(&json!(2)),
        "incr touched only its own row"
    );
}

async fn incr_is_atomic(c: &Ck<'_>) {
    let t = c.items("incr_atomic");
    c.fresh(std::slice::from_ref(&t)).await;
    let t = &t;
    let worker = || async move {
        for _ in 0..10 {
            c.incr(t, json!({"id": "p", "rk": "1", "cnt": 1})).await;
        }
    };
    tokio::join!(worker(), worker(), worker(), worker());
    same!(
        c,
        c.found(t, json!({"id": "p", "rk": "1"})).await.get("cnt"),
        Some(&json!(40)),
        "4 concurrent callers x 10 increments"
    );
}

async fn list_by_ids(c: &Ck<'_>) {
    let t = c.table(
        "ids",
        vec![
            Column::text("id").primary(1),
            Column::text("name"),
            Column::int("n"),
        ],
    );
    c.fresh(std::slice::from_ref(&t)).await;
    for i in 1..=6 {
        c.add(
            &t,
            json!({"id": format!("u{i}"), "name": format!("user {i}"), "n": i}),
        )
        .await;
    }
    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let r = c
        .select(&t, json!({"id": ["u2", "u5", "u9"]}), &o().op("id", Op::In))
        .await;
    same!(
        c,
        text_set(&r, "id"),
        ids(&["u2", "u5"]),
        "in on the primary key"
    );
    same!(c, r.rows.len(), 2, "one row per id: {r:?}");
    let r = c.select(&t, json!({"id": ["u6", "u1"]}), &o()).await;
    same!(
        c,
        text_set(&r, "id"),
        ids(&["u1", "u6"]),
        "an array with the default operator lists by ids"
    );
    let r = c
        .select(&t, json!({"id": "u3,u4"}), &o().op("id", Op::In))
        .await;
    same!(
        c,
        text_set(&r, "id"),
        ids(&["u3", "u4"]),
        "in with comma-separated text"
    );
    let sel = Options {
        select: vec!["name".into()],
        ..o().op("id", Op::In)
    };
    let r = c.select(&t, json!({"id": ["u1", "u2"]}), &sel).await;
    same!(
        c,
        text_set(&r, "name"),
        ids(&["user 1", "user 2"]),
        "in with a column list"
    );
    let r = c.select(&t, json!({"id": []}), &o().op("id", Op::In)).await;
    same!(c, r.rows.len(), 0, "in with an empty list");
}

/// Selects `id = a AND col OP value` (only `id = a` and the operator for unary operators) and
/// compares the set of `num` values.
async fn expect_nums(c: &Ck<'_>, t: &Table, col: &str, op: Op, value: Value, expect: &[i64]) {
    let mut q = row(json!({"id": "a"}));
    if !op.is_unary() {
        q.insert(col.to_string(), value);
    }
    let what = format!("select {} with {col} {op:?}", Value::Object(q.clone()));
    let opts = o().op(col, op);
    let r = c.ok(&what, c.d.select(t, &q, &opts).await);
    same!(c, int_set(&r, "num"), set(expect), "{what}");
}

async fn select_gt_begins_with_between_in(c: &Ck<'_>) {
    let t = c.items("select");
    c.fresh(std::slice::from_ref(&t)).await;
    c.nine(&t).await;
    let all: Vec<i64> = (1..=9).collect();
    let cases: Vec<(&str, Op, Value, Vec<i64>)> = vec![
        ("num", Op::Gt, json!(6), vec![7, 8, 9]),
        ("num", Op::Gt, json!(10), vec![]),
        ("num", Op::Ge, json!("6"), vec![6, 7, 8, 9]),
        ("rk", Op::BeginsWith, json!("r"), all.clone()),
        ("rk", Op::BeginsWith, json!("r3"), vec![3]),
        ("rk", Op::BeginsWith, json!("R"), vec![]),
        ("name", Op::BeginsWith, json!("n1"), vec![9]),
        ("num", Op::Between, json!([3, 5]), vec![3, 4, 5]),
        // Numeric, not text, comparison: "2".."10" as text would match nothing.
        ("num", Op::Between, json!([2, 10]), (2..=9).collect()),
        ("num", Op::Between, json!("3,5"), vec![3, 4, 5]),
        ("rk", Op::Between, json!(["r2", "r4"]), vec![2, 3, 4]),
        ("name", Op::Between, json!("n2,n4"), vec![6, 7, 8]),
        ("num", Op::In, json!([1, 9, 4]), vec![1, 4, 9]),
        ("rk", Op::In, json!(["r2", "r7", "zz"]), vec![2, 7]),
        ("num", Op::In, json!([]), vec![]),
    ];
    for (col, op, value, expect) in cases {
        expect_nums(c, &t, col, op, value, &expect).await;
    }
    let r = c.select(&t, json!({"num": 100}), &o()).await;
    same!(
        c,
        ints(&r, "num"),
        [100],
        "select by a column outside the key"
    );
}

/// `begins_with` with a list: rows beginning with any of the prefixes (in any order, repeated,
/// or covering one another), in key order across pages; an empty list matches nothing.
async fn select_begins_with_any(c: &Ck<'_>) {
    let t = c.items("prefixes");
    c.fresh(std::slice::from_ref(&t)).await;
    c.nine(&t).await;
    let all: Vec<i64> = (1..=9).collect();
    let cases: Vec<(&str, Op, Value, Vec<i64>)> = vec![
        ("rk", Op::BeginsWith, json!(["r3", "r7"]), vec![3, 7]),
        (
            "rk",
            Op::BeginsWith,
            json!(["r7", "r3", "r3", "zz"]),
            vec![3, 7],
        ),
        ("rk", Op::BeginsWith, json!(["r3", "r"]), all.clone()),
        ("rk", Op::BeginsWith, json!(["r"]), all),
        (
            "rk",
            Op::BeginsWith,
            json!(["r4", "r5", "r6", "x", "y"]),
            vec![4, 5, 6],
        ),
        ("rk", Op::BeginsWith, json!([]), vec![]),
        ("name", Op::BeginsWith, json!(["n8", "n1"]), vec![2, 9]),
    ];
    for (col, op, value, expect) in cases {
        expect_nums(c, &t, col, op, value, &expect).await;
    }
    // On the first key column, paged: key order, each row once.
    let mut seen = Vec::new();
    let mut start = None;
    for page in 0.. {
        ensure!(c, page < 10, "too many pages");
        let opts = Options {
            count: 3,
            start: start.take(),
            ..o().op("id", Op::BeginsWith).op("rk", Op::BeginsWith)
        };
        let r = c
            .select(
                &t,
                json!({"id": ["b", "a"], "rk": ["r9", "r1", "r5"]}),
                &opts,
            )
            .await;
        seen.extend(
            r.rows
                .iter()
                .map(|x| format!("{}{}", text_of(x, "id"), text_of(x, "rk"))),
        );
        match r.next_token {
            Some(tok) => start = Some(tok),
            None => break,
        }
    }
    same!(
        c,
        seen,
        vec!["ar1", "ar5", "ar9", "br5"],
        "several prefixes on two key columns, paged in key order"
    );
}

/// [`Driver::select_prefixes`]: the rows of a `begins_with` select of the same prefixes paged to
/// the end, whole and each once, in any order; on key and non-key columns, with a column list,
/// adjacent ranges, covered, repeated and empty prefixes; bad columns refused. On a plain and
/// on a [`Table::clustered`] table (SQLite `WITHOUT ROWID`).
async fn select_prefixes_reads_every_range(c: &Ck<'_>) {
    select_prefixes_of(c, c.items("ranges")).await;
    select_prefixes_of(c, c.items("ranges_c").clustered()).await;
}

async fn select_prefixes_of(c: &Ck<'_>, t: Table) {
    c.fresh(std::slice::from_ref(&t)).await;
    let ids = [
        "9q8", "9q8a", "9q8b", "9q8c", "9q9", "9q9z", "9qa", "9r", "a", "a~", "a\u{7f}", "b", "é",
        "ê",
    ];
    for (i, id) in ids.iter().enumerate() {
        c.add(
            &t,
            json!({"id": id, "rk": "1", "num": i, "name": format!("n{id}"), "data": {"i": i},
                   "flag": i % 2 == 0, "score": i as f64 / 4.0}),
        )
        .await;
        if i % 3 == 0 {
            c.add(&t, json!({"id": id, "rk": "2", "num": 100 + i}))
                .await;
        }
    }
    // Whole rows as text: an order for rows whatever columns they have.
    let key = |r: &Row| Value::Object(r.clone()).to_string();
    let cases: Vec<(&str, Vec<&str>, Vec<&str>, usize)> = vec![
        ("id", vec!["9q8"], vec![], 6),
        ("id", vec!["9q8a", "9q8b"], vec![], 2),
        ("id", vec!["9q8b", "9q8a", "9q8c", "9q8a"], vec![], 4),
        ("id", vec!["9q9", "9q8"], vec![], 8),
        ("id", vec!["9q", "9q8", "9qa"], vec![], 10),
        ("id", vec!["9r", "a", "zz"], vec!["id", "num"], 5),
        ("id", vec!["a~", "a\u{7f}", "é"], vec![], 5),
        ("id", vec![""], vec!["rk"], 19),
        ("id", vec![], vec![], 0),
        ("name", vec!["n9q8", "na"], vec![], 7),
    ];
    for (column, prefixes, select, n) in cases {
        let prefixes: Vec<String> = prefixes.into_iter().map(String::from).collect();
        let opts = Options {
            select: select.iter().map(|s| s.to_string()).collect(),
            ..o()
        };
        let what = format!("select_prefixes {column} {prefixes:?} {select:?}");
        let mut got = c.ok(
            &what,
            c.d.select_prefixes(&t, column, &prefixes, &opts).await,
        );
        got.sort_by_key(|r| key(r));
        // The same rows as the paged begins_with select.
        let mut want: Vec<Row> = Vec::new();
        if !prefixes.is_empty() {
            let mut paged = Options {
                count: 4,
                ..opts.clone()
            }
            .op(column, Op::BeginsWith);
            loop {
                let mut q = Row::new();
                q.insert(column.to_string(), json!(prefixes));
                let r = c.select(&t, Value::Object(q), &paged).await;
                want.extend(r.rows);
                match r.next_token {
                    Some(tok) => paged.start = Some(tok),
                    None => break,
                }
            }
        }
        want.sort_by_key(|r| key(r));
        same!(c, got.len(), n, "{what}: row count");
        same!(c, got, want, "{what}: the rows of the paged select");
        if !select.is_empty() {
            ensure!(
                c,
                got.iter()
                    .all(|r| r.keys().all(|k| select.contains(&k.as_str()))),
                "{what}: only the selected columns: {got:?}"
            );
        }
    }
    let p = vec!["a".to_string()];
    c.bad_name(
        "select_prefixes on an unknown column",
        c.d.select_prefixes(&t, "nope", &p, &o()).await,
        "nope",
    );
    c.bad_value(
        "select_prefixes on a number column",
        c.d.select_prefixes(&t, "num", &p, &o()).await,
    );
}

fn text_of<'a>(r: &'a Row, col: &str) -> &'a str {
    r.get(col).and_then(Value::as_str).unwrap_or("")
}

async fn select_other_operators(c: &Ck<'_>) {
    let t = c.items("select_ops");
    c.fresh(std::slice::from_ref(&t)).await;
    c.nine(&t).await;
    c.update(&t, json!({"id": "a", "rk": "r1", "data": {"x": 1}}))
        .await;
    let but = |n: i64| (1..=9).filter(|&x| x != n).collect::<Vec<i64>>();
    let cases: Vec<(&str, Op, Value, Vec<i64>)> = vec![
        ("num", Op::Ne, json!(2), but(2)),
        ("num", Op::Lt, json!(2), vec![1]),
        ("num", Op::Le, json!(2), vec![1, 2]),
        ("rk", Op::NotIn, json!("r1,r2"), (3..=9).collect()),
        ("num", Op::NotBetween, json!([3, 5]), vec![1, 2, 6, 7, 8, 9]),
        ("name", Op::Like, json!("N1"), vec![]),
        ("name", Op::Like, json!("n%"), (1..=9).collect()),
        ("name", Op::Like, json!("n_"), (1..=9).collect()),
        ("name", Op::Ilike, json!("N1%"), vec![9]),
        ("name", Op::Contains, json!("5"), vec![5]),
        ("name", Op::NotContains, json!("5"), but(5)),
        ("data", Op::Null, Value::Null, (2..=9).collect()),
        ("data", Op::NotNull, Value::Null, vec![1]),
    ];
    for (col, op, value, expect) in cases {
        expect_nums(c, &t, col, op, value, &expect).await;
    }
    // regexp: every driver supports it (SQLite through a function registered per connection).
    let q = row(json!({"id": "a", "name": "^n[12]$"}));
    match c.d.select(&t, &q, &o().op("name", Op::Regexp)).await {
        Ok(r) => same!(c, int_set(&r, "num"), set(&[8, 9]), "regexp"),
        Err(e) => c.fail(format_args!("regexp: expected rows, got {e} ({e:?})")),
    }
    c.caller_err(
        "between with one value",
        c.d.select(
            &t,
            &row(json!({"id": "a", "num": 1})),
            &o().op("num", Op::Between),
        )
        .await,
    );
    c.caller_err(
        "begins_with on an int column",
        c.d.select(
            &t,
            &row(json!({"id": "a", "num": 1})),
            &o().op("num", Op::BeginsWith),
        )
        .await,
    );
}

async fn select_column_lists(c: &Ck<'_>) {
    let t = c.items("columns");
    c.fresh(std::slice::from_ref(&t)).await;
    c.nine(&t).await;
    let opts = Options {
        select: vec!["rk".into(), "num".into(), "nosuch".into()],
        ..o()
    };
    let r = c.select(&t, json!({"id": "a", "num": 1}), &opts).await;
    same!(
        c,
        r.rows,
        vec![row(json!({"rk": "r1", "num": 1}))],
        "select with a column list (unknown names ignored)"
    );
    let r = c.select(&t, json!({"id": "a"}), &opts).await;
    ensure!(
        c,
        r.rows.len() == 9
            && r.rows
                .iter()
                .all(|x| x.len() == 2 && x.contains_key("rk") && x.contains_key("num")),
        "every row has exactly the listed columns: {:?}",
        r.rows
    );
    let g = c
        .get_with(
            &t,
            json!({"id": "a", "rk": "r2"}),
            &Options {
                select: vec!["name".into()],
                ..o()
            },
        )
        .await;
    same!(
        c,
        g,
        Some(row(json!({"name": "n8"}))),
        "get with a column list"
    );
}

async fn json_bool_real_round_trip(c: &Ck<'_>) {
    let t = c.items("json");
    c.fresh(std::slice::from_ref(&t)).await;
    let docs = [
        json!({"a": [1, 2, {"b": null}], "s": "x'y\"z\\", "n": 1.5, "u": "é ✓ 😀", "t": true}),
        json!([1, "two", [3], {"four": 4}]),
        json!("just text"),
        json!("{\"looks\": \"like json\"}"),
        json!(42),
        json!(-0.25),
        json!(false),
        json!({}),
        json!([]),
    ];
    for (i, data) in docs.iter().enumerate() {
        c.put(
            &t,
            json!({"id": "j", "rk": format!("{i}"), "data": data, "flag": i % 2 == 0, "score": i}),
        )
        .await;
    }
    for (i, data) in docs.iter().enumerate() {
        let g = c.found(&t, json!({"id": "j", "rk": format!("{i}")})).await;
        same!(c, g.get("data"), Some(data), "json value {i} round-trips");
        same!(
            c,
            g.get("flag"),
            Some(&json!(i % 2 == 0)),
            "bool column {i} comes back as a JSON bool"
        );
        same!(c, num(g.get("score")), Some(i as f64), "real column {i}");
    }
    c.put(
        &t,
        json!({"id": "j", "rk": "s", "flag": "true", "score": "2.5", "num": "12"}),
    )
    .await;
    let g = c.found(&t, json!({"id": "j", "rk": "s"})).await;
    same!(
        c,
        (g.get("flag"), num(g.get("score")), g.get("num")),
        (Some(&json!(true)), Some(2.5), Some(&json!(12))),
        "text values are coerced to the column type"
    );
    let r = c.select(&t, json!({"id": "j"}), &o()).await;
    let by_rk: Vec<(String, Value)> = r
        .rows
        .iter()
        .filter_map(|x| Some((x.get("rk")?.as_str()?.to_string(), x.get("data")?.clone())))
        .collect();
    for (rk, data) in by_rk {
        if let Ok(i) = rk.parse::<usize>() {
            same!(c, Some(&data), docs.get(i), "json value {i} through select");
        }
    }
}

async fn del_then_get_is_none(c: &Ck<'_>) {
    let t = c.items("del");
    c.fresh(std::slice::from_ref(&t)).await;
    c.add(&t, json!({"id": "d", "rk": "1", "num": 1})).await;
    c.add(&t, json!({"id": "d", "rk": "2", "num": 2})).await;
    same!(
        c,
        c.del(&t, json!({"id": "d", "rk": "1"})).await.affected,
        1,
        "del of an existing row"
    );
    same!(
        c,
        c.get(&t, json!({"id": "d", "rk": "1"})).await,
        None,
        "get after del"
    );
    same!(
        c,
        c.select(&t, json!({"id": "d"}), &o()).await.rows.len(),
        1,
        "select after del"
    );
    same!(
        c,
        c.del(&t, json!({"id": "d", "rk": "1"})).await.affected,
        0,
        "del of a missing row"
    );
    same!(
        c,
        c.found(&t, json!({"id": "d", "rk": "2"})).await.get("num"),
        Some(&json!(2)),
        "the other row survives"
    );
    c.add(&t, json!({"id": "d", "rk": "1", "num": 3})).await;
    same!(
        c,
        c.found(&t, json!({"id": "d", "rk": "1"})).await.get("num"),
        Some(&json!(3)),
        "add after del"
    );
}

async fn paging_with_next_token(c: &Ck<'_>) {
    let t = c.items("paging");
    c.fresh(std::slice::from_ref(&t)).await;
    c.nine(&t).await;
    for size in [2usize, 3] {
        for sort in [None, Some(("num", false)), Some(("rk", true))] {
            let mut seen = Vec::new();
            let mut start = None;
            let mut pages = 0;
            loop {
                let opts = Options {
                    count: size,
                    start: start.take(),
                    total: true,
                    sort: sort.map(|(s, _)| s.to_string()),
                    desc: sort.is_some_and(|(_, d)| d),
                    ..o()
                };
                let r = c.select(&t, json!({"id": "a"}), &opts).await;
                pages += 1;
                ensure!(c, pages <= 9, "page size {size} {sort:?}: too many pages");
                same!(c, r.total, Some(9), "page size {size} {sort:?}: total");
                seen.extend(ints(&r, "num"));
                match r.next_token {
                    Some(tok) => {
                        same!(
                            c,
                            r.rows.len(),
                            size,
                            "page size {size} {sort:?}: a page with a next_token is full"
                        );
                        start = Some(tok);
                    }
                    None => break,
                }
            }
            same!(
                c,
                pages,
                9usize.div_ceil(size),
                "page size {size} {sort:?}: pages (the last page has no token)"
            );
            match sort {
                None => {
                    same!(c, seen.len(), 9, "page size {size}: rows seen {seen:?}");
                    same!(
                        c,
                        set(&seen),
                        (1..=9).collect::<BTreeSet<i64>>(),
                        "page size {size}: every row exactly once"
                    );
                }
                Some((_, desc)) => {
                    let mut expect: Vec<i64> = (1..=9).collect();
                    if desc {
                        expect.reverse();
                    }
                    same!(
                        c,
                        seen,
                        expect,
                        "page size {size} {sort:?}: order across pages"
                    );
                }
            }
        }
    }
    let r = c
        .select(&t, json!({"id": "a"}), &Options { count: 9, ..o() })
        .await;
    same!(
        c,
        (r.rows.len(), r.next_token),
        (9, None),
        "a page holding exactly every row has no token"
    );
    c.caller_err(
        "a malformed start token",
        c.d.select(
            &t,
            &row(json!({"id": "a"})),
            &Options {
                start: Some("not a token".into()),
                ..o()
            },
        )
        .await,
    );
}

async fn sort_and_desc(c: &Ck<'_>) {
    let t = c.items("sort");
    c.fresh(std::slice::from_ref(&t)).await;
    c.nine(&t).await;
    let t = &t;
    let rks =
        |opts: Options| async move { texts(&c.select(t, json!({"id": "a"}), &opts).await, "rk") };
    same!(
        c,
        rks(sorted("rk", false, 3)).await,
        ["r1", "r2", "r3"],
        "sort rk"
    );
    same!(
        c,
        rks(sorted("rk", true, 3)).await,
        ["r9", "r8", "r7"],
        "sort rk desc"
    );
    same!(
        c,
        rks(sorted("name", false, 3)).await,
        ["r9", "r8", "r7"],
        "sort name (n9..n1 on r1..r9)"
    );
    same!(
        c,
        rks(sorted("name", true, 3)).await,
        ["r1", "r2", "r3"],
        "sort name desc"
    );
    // Numeric order: 10 sorts after 9 (as text it would sort before 2).
    c.add(t, json!({"id": "a", "rk": "r10", "num": 10, "name": "m"}))
        .await;
    let r = c
        .select(t, json!({"id": "a"}), &sorted("num", true, 3))
        .await;
    same!(c, ints(&r, "num"), [10, 9, 8], "sort num desc is numeric");
    let r = c
        .select(t, json!({"id": "a"}), &sorted("num", false, 3))
        .await;
    same!(c, ints(&r, "num"), [1, 2, 3], "sort num is numeric");
    same!(
        c,
        rks(sorted("rk", false, 3)).await,
        ["r1", "r10", "r2"],
        "sort on a text range key is text order"
    );
    same!(
        c,
        rks(sorted("name", false, 2)).await,
        ["r10", "r9"],
        "sort name after adding m"
    );
    let r = c
        .select(
            t,
            json!({"id": "a", "num": 5}),
            &Options {
                sort: Some("num".into()),
                desc: true,
                ..o().op("num", Op::Gt)
            },
        )
        .await;
    same!(
        c,
        ints(&r, "num"),
        [10, 9, 8, 7, 6],
        "sort desc with a condition"
    );
}

async fn noscan_refuses_unconditioned_select(c: &Ck<'_>) {
    let t = c.items("noscan");
    c.fresh(std::slice::from_ref(&t)).await;
    c.nine(&t).await;
    same!(
        c,
        c.d.select(&t, &Row::new(), &o()).await,
        Err(DbError::NoCondition),
        "empty query with noscan on (the default)"
    );
    same!(
        c,
        c.d.select(&t, &row(json!({"unknown": 1})), &o()).await,
        Err(DbError::NoCondition),
        "a query of unknown columns only is no condition"
    );
    let all = c.select(&t, json!({}), &scan()).await;
    same!(c, all.rows.len(), 10, "scan with noscan off");
    let r = c.select(&t, json!({}), &o().op("data", Op::Null)).await;
    same!(c, r.rows.len(), 10, "a unary operator is a condition");
}

async fn bad_names_are_refused(c: &Ck<'_>) {
    let t = c.items("names");
    c.fresh(std::slice::from_ref(&t)).await;
    c.nine(&t).await;
    let key = || vec![Column::text("id").primary(1)];
    for bad in [
        "Items",
        "1items",
        "items;drop",
        "it\"ems",
        "it`ems",
        "items--",
        "",
        &"a".repeat(65),
    ] {
        let what = format!("table name {bad:?}");
        c.bad_name(&what, Table::new(bad, key()), bad);
    }
    for bad in ["Num", "x;drop", "a b", "n\"um", "num)"] {
        let mut cols = key();
        cols.push(Column::text(bad));
        let what = format!("column name {bad:?}");
        c.bad_name(&what, Table::new(&format!("{}_x", c.prefix), cols), bad);
    }
    c.bad_ops_and_sort(&t, &["nosuch", "Name", "name;"], false)
        .await;
    let e = c.err(
        "ops key with a bad name",
        c.d.select(&t, &row(json!({"id": "a"})), &o().op("nosuch", Op::Eq))
            .await,
    );
    ensure!(
        c,
        e.is_caller_error() && !e.is_retryable(),
        "a bad name is the caller's fault and not retryable: {e:?}"
    );
}

async fn injection_is_refused_or_harmless(c: &Ck<'_>) {
    let t = c.items("inject");
    c.fresh(std::slice::from_ref(&t)).await;
    c.nine(&t).await;
    let tn = t.name().to_string();
    let evil = "x' OR '1'='1";
    let drop = format!("1'); DROP TABLE {tn}; --");
    let drop2 = format!("1\"; DROP TABLE \"{tn}\"; --");
    // Through values: stored and matched literally.
    c.add(
        &t,
        json!({"id": evil, "rk": drop2, "name": evil, "data": {"q": drop}}),
    )
    .await;
    let r = c.select(&t, json!({"id": evil}), &o()).await;
    same!(c, r.rows.len(), 1, "an evil value matches itself only");
    same!(
        c,
        (r.rows[0].get("name"), r.rows[0].get("rk")),
        (Some(&json!(evil)), Some(&json!(drop2))),
        "evil values stored literally"
    );
    for (query, opts) in [
        (json!({"id": "a' OR '1'='1"}), o()),
        (json!({"id": "a' --"}), o()),
        (json!({"id": "a", "rk": "r1' OR 'x'='x"}), o()),
        (
            json!({"id": "a", "rk": ["zz') OR ('1'='1"]}),
            o().op("rk", Op::In),
        ),
        (
            json!({"id": "a", "rk": ["r1' OR '1'='1", "r1"]}),
            o().op("rk", Op::Between),
        ),
        (
            json!({"id": "a", "name": "%' OR '1'='1"}),
            o().op("name", Op::Like),
        ),
        (
            json!({"id": "a", "name": "') OR 1=1 --"}),
            o().op("name", Op::Contains),
        ),
        (
            json!({"id": "a", "rk": "r9' OR '1'='1"}),
            o().op("rk", Op::BeginsWith),
        ),
    ] {
        let what = format!("select {query} with {:?}", opts.ops);
        same!(c, c.select(&t, query, &opts).await.rows.len(), 0, "{what}");
    }
    c.bad_value(
        "text with SQL in an int column",
        c.d.select(&t, &row(json!({"id": "a", "num": "1 OR 1=1"})), &o())
            .await,
    );
    // Through column names in writes: ignored.
    let mut w = row(json!({"id": "a", "rk": "r1"}));
    w.insert(format!("num\" = 0; DROP TABLE {tn}; --"), json!(1));
    w.insert("name = 'pwned' --".into(), json!(1));
    w.insert("num`=0 #".into(), json!(1));
    c.ok(
        "update with evil column names ignores them",
        c.d.update(&t, &w, &o()).await,
    );
    let mut w = row(json!({"id": "a", "rk": "new"}));
    w.insert(format!("name) VALUES ('x'); DROP TABLE {tn}; --"), json!(1));
    c.ok(
        "add with evil column names ignores them",
        c.d.add(&t, &w, &o()).await,
    );
    c.ok(
        "del of the added row",
        c.d.del(&t, &row(json!({"id": "a", "rk": "new"})), &o())
            .await,
    );
    // Through an ops key and sort: refused with the name.
    c.bad_ops_and_sort(&t, &["id) OR (1=1", "num; DROP TABLE x", "name --"], true)
        .await;
    // Through the select list: ignored.
    let sel = Options {
        select: vec![
            "*, version()".into(),
            format!("rk FROM {tn}; DROP TABLE {tn}; --"),
        ],
        ..o()
    };
    let r = c.select(&t, json!({"id": "a"}), &sel).await;
    same!(c, r.rows.len(), 9, "a select list of evil names");
    ensure!(
        c,
        r.rows
            .iter()
            .all(|x| x.keys().all(|k| t.column(k).is_some())),
        "only described columns come back: {:?}",
        r.rows
    );
    // Through a table name: refused before any driver sees it.
    c.bad_name(
        "an evil table name",
        Table::new(&format!("{tn}; DROP TABLE {tn}"), items_columns()),
        "DROP",
    );
    // Data intact.
    let all = c.select(&t, json!({}), &scan()).await;
    same!(c, all.rows.len(), 11, "every row is still there");
    let r1 = c.found(&t, json!({"id": "a", "rk": "r1"})).await;
    same!(
        c,
        (r1.get("num"), r1.get("name")),
        (Some(&json!(1)), Some(&json!("n9"))),
        "row r1 is intact"
    );
    let e = c.found(&t, json!({"id": evil, "rk": drop2})).await;
    same!(
        c,
        e.get("data"),
        Some(&json!({"q": drop})),
        "the evil row reads back by key"
    );
}

async fn join_columns(c: &Ck<'_>) {
    let t = c.table(
        "join",
        vec![
            Column::text("id").primary(1),
            Column::text("kind"),
            Column::text("owner"),
            Column::text("joined").join(&["kind", "owner"]).index(1),
        ],
    );
    c.fresh(std::slice::from_ref(&t)).await;
    c.add(&t, json!({"id": "1", "kind": "a", "owner": "o"}))
        .await;
    c.add(&t, json!({"id": "2", "kind": 5, "owner": "p"})).await;
    c.add(&t, json!({"id": "3", "kind": "a"})).await;
    c.add(
        &t,
        json!({"id": "4", "kind": "a", "owner": "o", "joined": "given"}),
    )
    .await;
    c.put(&t, json!({"id": "5", "kind": "b", "owner": "q"}))
        .await;
    let t = &t;
    let joined = |id: &'static str| async move {
        c.found(t, json!({ "id": id })).await.get("joined").cloned()
    };
    same!(
        c,
        joined("1").await,
        Some(json!("a:o")),
        "joined from both sources"
    );
    same!(
        c,
        joined("2").await,
        Some(json!("5:p")),
        "a number source joins as text"
    );
    same!(
        c,
        joined("3").await,
        None,
        "a missing source leaves it unset"
    );
    same!(
        c,
        joined("4").await,
        Some(json!("given")),
        "an explicit value wins"
    );
    same!(c, joined("5").await, Some(json!("b:q")), "put joins too");
    let r = c.select(t, json!({"joined": "a:o"}), &o()).await;
    same!(c, texts(&r, "id"), ["1"], "select by the joined column");
    let r = c
        .select(
            t,
            json!({"joined": "a:"}),
            &o().op("joined", Op::BeginsWith),
        )
        .await;
    same!(
        c,
        texts(&r, "id"),
        ["1"],
        "begins_with on the joined column"
    );
    c.update(t, json!({"id": "1", "kind": "c", "owner": "z"}))
        .await;
    same!(
        c,
        joined("1").await,
        Some(json!("c:z")),
        "update with both sources rebuilds it"
    );
}

async fn column_properties_on_write(c: &Ck<'_>) {
    let t = c.table(
        "props",
        vec![
            Column::text("id").primary(1),
            Column::text("kind").values(&["a", "b"]).value("a"),
            Column::text("owner").notnull(),
            Column::bigint("ctime").readonly(),
            Column::text("email").unique(),
            Column::int("level").value(3),
        ],
    );
    c.fresh(std::slice::from_ref(&t)).await;
    let col = c.bad_value(
        "add without a notnull column",
        c.d.add(&t, &row(json!({"id": "1"})), &o()).await,
    );
    same!(c, col, "owner", "the notnull column is named");
    let col = c.bad_value(
        "add with a value outside `values`",
        c.d.add(
            &t,
            &row(json!({"id": "1", "owner": "o", "kind": "c"})),
            &o(),
        )
        .await,
    );
    same!(c, col, "kind", "the column with allowed values is named");
    c.add(
        &t,
        json!({"id": "1", "owner": "o", "ctime": 5, "email": "e"}),
    )
    .await;
    let g = c.found(&t, json!({"id": "1"})).await;
    same!(
        c,
        (g.get("kind"), g.get("level"), g.get("ctime")),
        (Some(&json!("a")), Some(&json!(3)), Some(&json!(5))),
        "defaults applied on insert"
    );
    c.update(&t, json!({"id": "1", "ctime": 9, "kind": "b"}))
        .await;
    let g = c.found(&t, json!({"id": "1"})).await;
    same!(
        c,
        (g.get("ctime"), g.get("kind"), g.get("level")),
        (Some(&json!(5)), Some(&json!("b")), Some(&json!(3))),
        "update ignores a readonly column and does not reapply defaults"
    );
    same!(
        c,
        c.d.add(
            &t,
            &row(json!({"id": "2", "owner": "o", "email": "e"})),
            &o()
        )
        .await,
        Err(DbError::Exists),
        "a duplicate unique value"
    );
    same!(
        c,
        c.get(&t, json!({"id": "2"})).await,
        None,
        "the refused row was not stored"
    );
    c.add(&t, json!({"id": "2", "owner": "o", "email": "f"}))
        .await;
    let skip = Options {
        skip_null: true,
        skip_columns: vec!["kind".into()],
        ..o()
    };
    c.ok(
        "update with skip_null and skip_columns",
        c.d.update(
            &t,
            &row(json!({"id": "1", "owner": null, "kind": "a"})),
            &skip,
        )
        .await,
    );
    let g = c.found(&t, json!({"id": "1"})).await;
    same!(
        c,
        (g.get("owner"), g.get("kind")),
        (Some(&json!("o")), Some(&json!("b"))),
        "skip_null kept owner, skip_columns kept kind"
    );
    c.bad_value(
        "update setting a notnull column to null",
        c.d.update(&t, &row(json!({"id": "1", "owner": null})), &o())
            .await,
    );
}

async fn schema_upgrade_keeps_data(c: &Ck<'_>) {
    let v1 = c.table(
        "upgrade",
        vec![Column::text("id").primary(1), Column::int("a")],
    );
    c.fresh(std::slice::from_ref(&v1)).await;
    c.add(&v1, json!({"id": "x", "a": 1, "b": "ignored"})).await;
    c.add(&v1, json!({"id": "y", "a": 2})).await;
    let v2 = c.table(
        "upgrade",
        vec![
            Column::text("id").primary(1),
            Column::int("a").index(1),
            Column::text("b").index_n(1, 1),
            Column::counter("n"),
        ],
    );
    c.ok(
        "init with a new column and index",
        c.d.init(std::slice::from_ref(&v2)).await,
    );
    c.ok(
        "init again (idempotent)",
        c.d.init(std::slice::from_ref(&v2)).await,
    );
    same!(
        c,
        c.get(&v2, json!({"id": "x"})).await,
        Some(row(json!({"id": "x", "a": 1}))),
        "data intact after the upgrade"
    );
    c.update(&v2, json!({"id": "x", "b": "new"})).await;
    c.incr(&v2, json!({"id": "y", "n": 2})).await;
    c.add(&v2, json!({"id": "z", "a": 3, "b": "new", "n": 1}))
        .await;
    let r = c
        .select(&v2, json!({"b": "new"}), &sorted("id", false, 50))
        .await;
    same!(
        c,
        r.rows,
        vec![
            row(json!({"id": "x", "a": 1, "b": "new"})),
            row(json!({"id": "z", "a": 3, "b": "new", "n": 1}))
        ],
        "the new column is writable and selectable"
    );
    let sel = Options {
        select: vec!["b".into(), "n".into()],
        ..o()
    };
    same!(
        c,
        c.get_with(&v2, json!({"id": "y"}), &sel).await,
        Some(row(json!({"n": 2}))),
        "the new counter column in a column list"
    );
    let r = c.select(&v2, json!({"a": 2}), &o().op("a", Op::Ge)).await;
    same!(
        c,
        text_set(&r, "id"),
        set(&["y".to_string(), "z".to_string()]),
        "select on the newly indexed column"
    );
    same!(
        c,
        c.get(&v1, json!({"id": "z"})).await,
        Some(row(json!({"id": "z", "a": 3}))),
        "the old description still reads the upgraded table"
    );
}

/// `replace` with `check_mtime` never overwrites newer data; with `check_data` an identical row
/// is not written again; a missing row is written.
async fn replace_respects_mtime_and_data(c: &Ck<'_>) {
    let t = c.table(
        "replace",
        vec![
            Column::text("id").primary(1),
            Column::text("name"),
            Column::bigint("ver"),
        ],
    );
    c.fresh(std::slice::from_ref(&t)).await;
    let by_ver = Options {
        check_mtime: Some("ver".into()),
        ..Options::default()
    };
    let replace = |v: Value, o: Options| {
        let t = t.clone();
        async move { crate::front::replace_on(c.d, &t, &row(v), &o).await }
    };
    let r = c.ok(
        "replace of a missing row",
        replace(json!({"id": "a", "name": "v2", "ver": 200}), by_ver.clone()).await,
    );
    same!(c, r.affected, 1, "a missing row is written");
    let r = c.ok(
        "replace with older data",
        replace(json!({"id": "a", "name": "v1", "ver": 100}), by_ver.clone()).await,
    );
    same!(c, r.affected, 0, "older data does not overwrite newer");
    same!(
        c,
        c.get(&t, json!({"id": "a"}))
            .await
            .and_then(|r| r.get("name").cloned()),
        Some(json!("v2")),
        "newer data kept"
    );
    let r = c.ok(
        "replace with equal mtime",
        replace(
            json!({"id": "a", "name": "v1b", "ver": 200}),
            by_ver.clone(),
        )
        .await,
    );
    same!(c, r.affected, 0, "same mtime does not overwrite");
    let r = c.ok(
        "replace with newer data",
        replace(json!({"id": "a", "name": "v3", "ver": 300}), by_ver).await,
    );
    same!(c, r.affected, 1, "newer data is written");
    same!(
        c,
        c.get(&t, json!({"id": "a"}))
            .await
            .and_then(|r| r.get("name").cloned()),
        Some(json!("v3")),
        "newer data stored"
    );
    let by_data = Options {
        check_data: true,
        ..Options::default()
    };
    let r = c.ok(
        "replace with the same data",
        replace(
            json!({"id": "a", "name": "v3", "ver": "300"}),
            by_data.clone(),
        )
        .await,
    );
    same!(c, r.affected, 0, "identical data is not written again");
    let r = c.ok(
        "replace with other data",
        replace(json!({"id": "a", "name": "v4"}), by_data).await,
    );
    same!(c, r.affected, 1, "changed data is written");
}
