//! The DB API through the real binary: `/data/*` on the embedded SQLite pool, cached reads with
//! invalidation, durability across `kill -9` of the whole tree, `bksh db` commands, and the
//! PostgreSQL, MySQL and Redis pools.

use crate::harness::*;
use serde_json::{json, Value};
use std::time::Duration;

fn data(t: &Tree, q: &str) -> (u16, Value) {
    let r = t.get(&format!("/data/{q}"));
    (
        r.status,
        serde_json::from_str(&r.body).unwrap_or(Value::Null),
    )
}

const DATA: &[&str] = &[
    "-api-allow-path",
    "^/data/",
    "-api-allow-path",
    "^/system/cache/",
];

#[test]
fn data_endpoints_read_and_write_sqlite() {
    let t = Tree::start("run", DATA);
    t.ready(2);
    assert_eq!(
        data(&t, "put/bk_property?name=a&value=1&junk=x"),
        (200, json!({"affected": 1})),
        "unknown columns are ignored"
    );
    let (s, row) = data(&t, "get/bk_property?name=a");
    assert_eq!((s, row["value"].clone()), (200, json!("1")));
    assert!(
        row["mtime"].as_i64().is_some_and(|m| m > 1_700_000_000_000),
        "mtime is set on write: {row}"
    );
    assert_eq!(data(&t, "get/bk_property?name=missing"), (200, json!({})));
    assert_eq!(
        data(&t, "add/bk_property?name=a&value=2").0,
        409,
        "add of an existing key"
    );
    assert_eq!(
        data(&t, "update/bk_property?name=a&value=3"),
        (200, json!({"affected": 1}))
    );
    assert_eq!(data(&t, "update/bk_property?name=zz&value=3").0, 404);
    for i in 0..9 {
        assert_eq!(
            data(&t, &format!("put/bk_property?name=p{i}&value={i}")).0,
            200
        );
    }
    // Paging: 9 rows by 2 → 5 pages, the last without a token.
    let mut names = Vec::new();
    let mut token = String::new();
    for page in 0..10 {
        let (s, r) = data(
            &t,
            &format!("select/bk_property?name=p&_ops=name,begins_with&_count=2&_start={token}"),
        );
        assert_eq!(s, 200, "{r}");
        names.extend(
            r["data"]
                .as_array()
                .expect("data")
                .iter()
                .map(|x| x["name"].as_str().unwrap_or("").to_string()),
        );
        match r["next_token"].as_str() {
            Some(tok) => token = tok.to_string(),
            None => {
                assert_eq!(page, 4, "five pages");
                break;
            }
        }
    }
    assert_eq!(names, (0..9).map(|i| format!("p{i}")).collect::<Vec<_>>());
    let (_, r) = data(
        &t,
        "select/bk_property?name=p&_ops=name,begins_with&_sort=value&_desc=1&_count=3&_select=name",
    );
    assert_eq!(
        r["data"],
        json!([{"name": "p8"}, {"name": "p7"}, {"name": "p6"}])
    );
    let (_, r) = data(&t, "list/bk_property?name=p1,p3,none");
    assert_eq!(r["count"], json!(2));
    assert_eq!(
        data(&t, "incr/bk_counter?id=u1&ping=2").1["data"][0]["ping"],
        json!(2)
    );
    assert_eq!(
        data(&t, "incr/bk_counter?id=u1&ping=-1").1["data"][0]["ping"],
        json!(1)
    );
    // Refusals with a clear message, nothing changed.
    let (s, e) = data(&t, "select/bk_property");
    assert_eq!(s, 400, "noscan: {e}");
    let (s, e) = data(&t, "get/nope?x=1");
    assert_eq!(s, 400);
    assert!(e["message"].as_str().unwrap_or_default().contains("nope"));
    let (s, _) = data(&t, "select/bk_property?name=a&_ops=name,bogus");
    assert_eq!(s, 400);
    let (s, r) = data(
        &t,
        "select/bk_property?name=%27%20OR%20%271%27%3D%271&_ops=name,begins_with",
    );
    assert_eq!(
        (s, r["count"].clone()),
        (200, json!(0)),
        "an injection attempt is just a value"
    );
    let (s, _) = data(
        &t,
        "select/bk_property%22%3B%20DROP%20TABLE%20bk_property%3B--?name=a",
    );
    assert_eq!(s, 400, "a table name that is not described is refused");
    assert_eq!(
        data(&t, "get/bk_property?name=a").1["value"],
        json!("3"),
        "data intact"
    );
    // JSON bodies.
    let r = agent()
        .post(&t.url("/data/put/bk_property"))
        .set("content-type", "application/json")
        .send_string(r#"{"name":"j","value":"v"}"#)
        .map(|r| r.status());
    assert_eq!(r.ok(), Some(200));
    assert_eq!(data(&t, "get/bk_property?name=j").1["value"], json!("v"));
    let bad = agent()
        .post(&t.url("/data/put/bk_property"))
        .set("content-type", "application/json")
        .send_string("{oops");
    assert!(matches!(bad, Err(ureq::Error::Status(400, _))));
    assert_eq!(
        data(&t, "del/bk_property?name=a"),
        (200, json!({"affected": 1}))
    );
    assert_eq!(data(&t, "get/bk_property?name=a"), (200, json!({})));
    let (s, cols) = data(&t, "columns/bk_account");
    assert_eq!(s, 200);
    assert_eq!(cols["id"]["primary"], json!(1));
    assert_eq!(data(&t, "keys/bk_connection").1, json!(["id", "type"]));
}

#[test]
fn cached_reads_are_invalidated_by_writes() {
    let mut args = DATA.to_vec();
    args.extend(["-db-caching", "bk_property"]);
    let t = Tree::start("run", &args);
    t.ready(2);
    assert_eq!(data(&t, "put/bk_property?name=c&value=1").0, 200);
    assert_eq!(data(&t, "get/bk_property?name=c").1["value"], json!("1"));
    let cached = t.get("/system/cache/get?name=bk_property%7Cc");
    let v: Value = serde_json::from_str(&cached.body).expect("json");
    assert!(
        v["value"]
            .as_str()
            .is_some_and(|s| s.contains("\"value\":\"1\"")),
        "the row is cached under TABLE|pk: {v}"
    );
    assert_eq!(data(&t, "update/bk_property?name=c&value=2").0, 200);
    let after = t.get("/system/cache/get?name=bk_property%7Cc");
    assert_eq!(after.body, "{}", "the write deleted the cached row");
    assert_eq!(data(&t, "get/bk_property?name=c").1["value"], json!("2"));
}

#[test]
fn an_acknowledged_write_survives_kill_9_of_the_whole_tree() {
    let t = Tree::start("run", DATA);
    t.ready(2);
    for i in 0..20 {
        assert_eq!(
            data(&t, &format!("put/bk_property?name=d{i}&value={i}")),
            (200, json!({"affected": 1}))
        );
    }
    let port = t.port;
    let home = t.kill9();
    let t = Tree::spawn_in(home, port, "run", DATA, |_| {});
    t.ready(2);
    for i in 0..20 {
        assert_eq!(
            data(&t, &format!("get/bk_property?name=d{i}")).1["value"],
            json!(i.to_string()),
            "row d{i}"
        );
    }
}

#[test]
fn bksh_runs_db_commands() {
    let home = tempfile::tempdir().expect("home");
    let home_arg = home.path().to_str().expect("utf-8 temp path");
    let out = bksh_script(
        &["-home", home_arg],
        "db put bk_property name=x value=1\ndb get bk_property name=x\ndb select bk_property name=x\ndb del bk_property name=x\ndb get bk_property name=x\ndb get nope a=1\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines[0], json!({"affected": 1}), "{stdout}");
    assert_eq!(lines[1]["value"], json!("1"));
    assert_eq!(lines[2]["count"], json!(1));
    assert_eq!(lines[3], json!({"affected": 1}));
    assert_eq!(lines[4], Value::Null);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the failed command makes the exit code 1"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
    let _ = Duration::ZERO;
}

#[test]
fn a_restart_with_a_new_column_and_index_upgrades_the_table_and_keeps_data() {
    let v1 = Tree::start_with("run", DATA, |c| {
        c.env("BKJS_TEST_FAULTS", "1").env("BKJS_TEST_TABLE", "1");
    });
    v1.ready(2);
    for i in 0..5 {
        assert_eq!(
            data(
                &v1,
                &format!("put/bk_test_upgrade?id=r{i}&a=x{i}&b=ignored")
            )
            .0,
            200
        );
    }
    assert_eq!(
        data(&v1, "get/bk_test_upgrade?id=r1").1,
        json!({"id": "r1", "a": "x1"}),
        "no column b yet"
    );
    let port = v1.port;
    let mut v1 = v1;
    v1.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        v1.wait_exit(Duration::from_secs(20)).is_some(),
        "v1 stopped"
    );
    let home = v1.kill9();
    let v2 = Tree::spawn_in(home, port, "run", DATA, |c| {
        c.env("BKJS_TEST_FAULTS", "1").env("BKJS_TEST_TABLE", "2");
    });
    v2.ready(2);
    for i in 0..5 {
        assert_eq!(
            data(&v2, &format!("get/bk_test_upgrade?id=r{i}")).1["a"],
            json!(format!("x{i}")),
            "row r{i} intact"
        );
    }
    assert_eq!(
        data(&v2, "update/bk_test_upgrade?id=r2&b=new").0,
        200,
        "the new column is writable"
    );
    let (s, r) = data(&v2, "select/bk_test_upgrade?b=new");
    assert_eq!((s, r["count"].clone()), (200, json!(1)), "{r}");
    assert_eq!(r["data"][0]["id"], json!("r2"));
    assert!(v2.log().contains("adding column"), "the upgrade is logged");
}

pub(crate) fn sh(cmd: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .expect("run client");
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn tables_pinned_to_postgresql_and_mysql_live_there() {
    if !service_up(5432, "PostgreSQL") || !service_up(3306, "MariaDB") {
        return;
    }
    let tag = format!("bkjs_it_{}_{}", std::process::id(), free_port());
    // The schema and database are this test's own, dropped at the end even on failure.
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::process::Command::new("psql")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-d",
                    "test",
                    "-c",
                    &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0),
                ])
                .output();
            let _ = std::process::Command::new("mysql")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-u",
                    "root",
                    "-e",
                    &format!("DROP DATABASE IF EXISTS {}", self.0),
                ])
                .output();
        }
    }
    let _cleanup = Cleanup(tag.clone());
    sh(
        "mysql",
        &[
            "-h",
            "127.0.0.1",
            "-u",
            "root",
            "-e",
            &format!("CREATE DATABASE {tag}"),
        ],
    );
    let pg = "postgresql://postgres@127.0.0.1:5432/test".to_string();
    let my = format!("mysql://root@127.0.0.1:3306/{tag}");
    let mut args = DATA.to_vec();
    args.extend([
        "-db-pgsql-pool",
        &pg,
        "-db-pgsql-schema",
        &tag,
        "-db-pgsql-tables",
        "bk_property",
        "-db-mysql-pool",
        &my,
        "-db-mysql-tables",
        "bk_counter",
    ]);
    let t = Tree::start("run", &args);
    t.ready(2);
    assert_eq!(data(&t, "put/bk_property?name=pg1&value=hello").0, 200);
    assert_eq!(
        data(&t, "get/bk_property?name=pg1").1["value"],
        json!("hello")
    );
    assert_eq!(data(&t, "incr/bk_counter?id=my1&ping=3").0, 200);
    assert_eq!(data(&t, "get/bk_counter?id=my1").1["ping"], json!(3));
    assert_eq!(
        data(&t, "put/bk_status?id=lite1&status=ok").0,
        200,
        "unpinned tables stay in SQLite"
    );
    let in_pg = sh(
        "psql",
        &[
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-tAc",
            &format!("SELECT value FROM {tag}.bk_property WHERE name = 'pg1'"),
        ],
    );
    assert_eq!(in_pg, "hello", "bk_property is in PostgreSQL");
    let in_my = sh(
        "mysql",
        &[
            "-h",
            "127.0.0.1",
            "-u",
            "root",
            "-N",
            "-B",
            "-e",
            &format!("SELECT ping FROM {tag}.bk_counter WHERE id = 'my1'"),
        ],
    );
    assert_eq!(in_my, "3", "bk_counter is in MariaDB");
    let in_pg_status = sh("psql", &["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-tAc", &format!("SELECT count(*) FROM information_schema.tables WHERE table_schema = '{tag}' AND table_name = 'bk_status'")]);
    assert_eq!(in_pg_status, "0", "bk_status was not created in PostgreSQL");
}

/// `-db-pool redis`: every table in Redis under this test's own key prefix (deleted at the end,
/// also on failure); the `/data` calls answer as on SQLite and the rows are Redis hashes.
#[test]
fn the_redis_pool_serves_data_endpoints() {
    if !service_up(6379, "Redis") {
        return;
    }
    let prefix = format!("bkit:{}:{}:", std::process::id(), free_port());
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::process::Command::new("redis-cli")
                .args(redis_keys_script(
                    "redis.call('DEL', k)",
                    &format!("{}*", self.0),
                ))
                .output();
        }
    }
    let _cleanup = Cleanup(prefix.clone());
    let mut args = DATA.to_vec();
    args.extend([
        "-db-pool",
        "redis",
        "-db-redis-pool",
        "redis://127.0.0.1:6379/0",
        "-db-redis-prefix",
        &prefix,
    ]);
    let t = Tree::start("run", &args);
    t.ready(2);
    assert_eq!(
        data(&t, "put/bk_property?name=a&value=1"),
        (200, json!({"affected": 1}))
    );
    assert_eq!(data(&t, "get/bk_property?name=a").1["value"], json!("1"));
    assert_eq!(data(&t, "add/bk_property?name=a&value=2").0, 409);
    assert_eq!(data(&t, "update/bk_property?name=zz&value=3").0, 404);
    for i in 0..5 {
        assert_eq!(
            data(&t, &format!("put/bk_property?name=p{i}&value={i}")).0,
            200
        );
    }
    let (s, r) = data(
        &t,
        "select/bk_property?name=p&_ops=name,begins_with&_count=3&_select=name",
    );
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        r["data"],
        json!([{"name": "p0"}, {"name": "p1"}, {"name": "p2"}])
    );
    let token = r["next_token"].as_str().expect("a next page").to_string();
    let (_, r) = data(
        &t,
        &format!(
            "select/bk_property?name=p&_ops=name,begins_with&_count=3&_select=name&_start={token}"
        ),
    );
    assert_eq!(r["data"], json!([{"name": "p3"}, {"name": "p4"}]));
    assert!(r["next_token"].is_null(), "last page: {r}");
    assert_eq!(data(&t, "select/bk_property").0, 400, "noscan");
    assert_eq!(
        data(&t, "incr/bk_counter?id=r1&ping=2").1["data"][0]["ping"],
        json!(2)
    );
    assert_eq!(
        data(&t, "incr/bk_counter?id=r1&ping=3").1["data"][0]["ping"],
        json!(5)
    );
    // The rows are Redis hashes under the prefix (keys hold binary bytes: matched in Lua).
    let count = redis_keys_script("n = n + 1", &format!("{prefix}t:bk_property:*p[0-4]*"));
    let keys = sh(
        "redis-cli",
        &count.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(keys, "5", "one hash per bk_property row p0..p4");
    assert_eq!(
        data(&t, "del/bk_property?name=a"),
        (200, json!({"affected": 1}))
    );
    assert_eq!(data(&t, "get/bk_property?name=a"), (200, json!({})));
}

/// redis-cli arguments running `body` (with `k` the key) on every key matching `pattern` (a
/// SCAN in Lua, since keys hold bytes the shell cannot pass); the reply is the count `n`.
fn redis_keys_script(body: &str, pattern: &str) -> Vec<String> {
    let script = format!(
        "local c, n = '0', 0 repeat local r = redis.call('SCAN', c, 'MATCH', ARGV[1], 'COUNT', 1000) \
         c = r[1] for _, k in ipairs(r[2]) do {body} end until c == '0' return n"
    );
    ["-h", "127.0.0.1", "EVAL", &script, "0", pattern]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// A local DynamoDB of this test's own (moto, through scripts/moto_server.py, from the venv
/// scripts/setup makes) on a free port, killed by pid when dropped.
struct Moto {
    child: std::process::Child,
    port: u16,
}

impl Moto {
    /// None (a recorded skip, a failure under CI=true) when moto is not installed.
    fn start() -> Option<Moto> {
        let python = match std::env::var_os("BKJS_MOTO_PYTHON") {
            Some(p) => std::path::PathBuf::from(p),
            None => std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/bkjs/moto/bin/python"),
        };
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/moto_server.py");
        let port = free_port();
        let child = match std::process::Command::new(&python)
            .args([script, "127.0.0.1", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                bkjs::testing::required(&format!(
                    "moto cannot be started with {} ({e}); scripts/setup-moto installs it",
                    python.display()
                ));
                return None;
            }
        };
        let mut m = Moto { child, port };
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let up = wait_for(Duration::from_secs(60), || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                || !matches!(m.child.try_wait(), Ok(None))
        });
        if !up || !matches!(m.child.try_wait(), Ok(None)) {
            bkjs::testing::required("moto did not start; scripts/setup-moto installs it");
            return None;
        }
        Some(m)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_dynamodb_pool_serves_put_get_select() {
    let Some(moto) = Moto::start() else {
        return;
    };
    let url = format!("http://127.0.0.1:{}", moto.port);
    let prefix = format!("it{}_", std::process::id());
    let mut args = DATA.to_vec();
    args.extend([
        "-db-pool",
        "dynamodb",
        "-db-dynamodb-pool",
        &url,
        "-db-dynamodb-prefix",
        &prefix,
    ]);
    let t = Tree::start_with("run", &args, |c| {
        c.env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing");
    });
    t.ready(2);
    for i in 0..5 {
        assert_eq!(
            data(&t, &format!("put/bk_property?name=d{i}&value=v{i}")),
            (200, json!({"affected": 1}))
        );
    }
    let (s, row) = data(&t, "get/bk_property?name=d3");
    assert_eq!((s, row["value"].clone()), (200, json!("v3")));
    assert_eq!(
        data(&t, "add/bk_property?name=d3&value=x").0,
        409,
        "add of an existing key"
    );
    let (s, r) = data(
        &t,
        "select/bk_property?name=d&_ops=name,begins_with&_sort=value&_desc=1&_count=2&_select=name",
    );
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["data"], json!([{"name": "d4"}, {"name": "d3"}]));
    assert!(r["next_token"].is_string(), "more pages: {r}");
    assert_eq!(
        data(&t, "incr/bk_counter?id=u1&ping=2").0,
        200,
        "incr on DynamoDB"
    );
    assert_eq!(data(&t, "get/bk_counter?id=u1").1["ping"], json!(2));
    // The row is in DynamoDB, in the prefixed table (moto does not check signatures).
    let item = ureq::post(&url)
        .set("content-type", "application/x-amz-json-1.0")
        .set("x-amz-target", "DynamoDB_20120810.GetItem")
        .set(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0",
        )
        .send_string(
            &json!({"TableName": format!("{prefix}bk_property"), "Key": {"name": {"S": "d3"}}})
                .to_string(),
        )
        .expect("GetItem")
        .into_string()
        .expect("body");
    let item: Value = serde_json::from_str(&item).expect("json");
    assert_eq!(item["Item"]["value"], json!({"S": "v3"}), "{item}");
}
