//! The durable job queue (docs/jobs.md, issue 19) against the real binary, on SQLite and on a
//! real PostgreSQL (each test its own schema): acknowledged jobs survive a kill -9 of the whole
//! tree; two nodes drain one queue, each job once; failures back off, die after their attempts
//! and can be retried by id; a crontab tick runs once across two nodes; a worker stopped past
//! its lease is replaced and cannot mark the job done when it resumes; bad input is refused
//! with nothing queued. `etc/crontab.local` is read after `etc/crontab` and reloaded the same way.
//!
//! Every wait is a deadline on a condition; the test jobs are those of debug builds
//! (`BKJS_TEST_FAULTS=1`, see tests/jobs.rs).

use crate::harness::*;
use crate::realtime::form;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use std::time::Duration;

const PG: &str = "postgresql://postgres@127.0.0.1:5432/test";

/// The shared server a test's nodes queue on: PostgreSQL (a schema of its own) or MariaDB (a
/// database of its own), dropped at the end even on failure.
struct Schema {
    name: String,
    mysql: bool,
}

impl Schema {
    fn new() -> Schema {
        Schema {
            name: format!("bkjs_jq_{}_{}", std::process::id(), free_port()),
            mysql: false,
        }
    }

    /// A MariaDB database of the test's own.
    fn mysql() -> Schema {
        let s = Schema {
            name: format!("bkjs_jqm_{}_{}", std::process::id(), free_port()),
            mysql: true,
        };
        crate::db::sh(
            "mysql",
            &[
                "-h127.0.0.1",
                "-uroot",
                "-e",
                &format!("CREATE DATABASE {}", s.name),
            ],
        );
        s
    }

    /// The answer of one statement, rows on lines and columns separated by `|`.
    fn psql(&self, sql: &str) -> String {
        let out = if self.mysql {
            crate::db::sh(
                "mysql",
                &["-h127.0.0.1", "-uroot", "-N", "-B", &self.name, "-e", sql],
            )
            .replace('\t', "|")
        } else {
            crate::db::sh(
                "psql",
                &[
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-d",
                    "test",
                    "-tA",
                    "-c",
                    &format!("SET search_path = {}; {sql}", self.name),
                ],
            )
        };
        out.lines()
            .filter(|l| !l.is_empty() && *l != "SET")
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn args(&self) -> Vec<String> {
        let a = if self.mysql {
            [
                "-db-pool".to_string(),
                "mysql".into(),
                "-db-mysql-pool".into(),
                format!("mysql://root@127.0.0.1:3306/{}", self.name),
            ]
        } else {
            [
                "-db-pool".to_string(),
                "pgsql".into(),
                "-db-pgsql-pool".into(),
                PG.into(),
            ]
        };
        let mut a = a.to_vec();
        if !self.mysql {
            a.extend(["-db-pgsql-schema".to_string(), self.name.clone()]);
        }
        a
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = if self.mysql {
            std::process::Command::new("mysql")
                .args(["-h127.0.0.1", "-uroot", "-e"])
                .arg(format!("DROP DATABASE IF EXISTS {}", self.name))
                .output()
        } else {
            std::process::Command::new("psql")
                .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-c"])
                .arg(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
                .output()
        };
    }
}

/// The shared servers of the multi-node tests: PostgreSQL and MariaDB, those that run (both
/// are required under CI).
fn shared() -> Vec<Schema> {
    let mut out = Vec::new();
    if service_up(5432, "PostgreSQL") {
        out.push(Schema::new());
    }
    if service_up(3306, "MariaDB") {
        out.push(Schema::mysql());
    }
    out
}

/// The backends a test runs on: SQLite always, then PostgreSQL and MariaDB when they run.
fn backends() -> Vec<Option<Schema>> {
    let mut out = vec![None];
    out.extend(shared().into_iter().map(Some));
    out
}

fn args(schema: Option<&Schema>, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "-server-web-workers",
        "1",
        "-api-allow-path",
        "^/data/",
        "-api-allow-path",
        "^/system/jobs$",
        "-jobs-poll-interval",
        "50ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(s) = schema {
        a.extend(s.args());
    }
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn start(args: &[String]) -> Tree {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let t = Tree::start_with("run", &refs, |cmd| {
        cmd.env("BKJS_TEST_FAULTS", "1");
    });
    t.ready(1);
    t
}

fn json_of(r: &Reply) -> Value {
    serde_json::from_str(&r.body).unwrap_or(Value::Null)
}

/// Queues a spec; answers the reply, asserting 200.
fn enqueue(t: &Tree, spec: &Value, extra: &str) -> Value {
    let r = t.get(&format!(
        "/system/jobs?job={}{extra}",
        form(&spec.to_string())
    ));
    assert_eq!(r.status, 200, "{spec}: {}", r.body);
    json_of(&r)
}

fn job(t: &Tree, id: i64) -> Value {
    let r = t.get(&format!("/system/jobs?id={id}"));
    assert_eq!(r.status, 200, "{}", r.body);
    json_of(&r)
}

fn counts(t: &Tree) -> Value {
    let r = t.get("/system/jobs");
    json_of(&r)["counts"].clone()
}

fn count(t: &Tree, state: &str) -> i64 {
    counts(t)[state].as_i64().unwrap_or(-1)
}

/// The value `test.write` or `test.fail` stored under `name`, parsed.
fn row(t: &Tree, name: &str) -> Option<Value> {
    let r = t.get(&format!("/data/get/bk_property?name={name}"));
    let v: Value = serde_json::from_str(&r.body).ok()?;
    serde_json::from_str(v.get("value")?.as_str()?).ok()
}

fn wait_state(t: &Tree, id: i64, state: &str, limit: Duration) -> Value {
    let mut last = Value::Null;
    let ok = wait_for(limit, || {
        last = job(t, id);
        last["state"] == json!(state)
    });
    assert!(
        ok,
        "job {id} not {state} within {limit:?}: {last}\n{}",
        t.log()
    );
    last
}

/// Test 6: bad input is refused with 400 and a clear message, and nothing is queued.
#[test]
fn bad_jobs_are_refused_and_nothing_is_queued() {
    for schema in backends() {
        let t = start(&args(schema.as_ref(), &[]));
        for (q, want) in [
            ("job=nope.nope".to_string(), "unknown job nope.nope"),
            ("job=%7Boops".to_string(), "not a job name nor JSON"),
            (
                "job=test.write&delay=-5".to_string(),
                "delay must be 0 or more",
            ),
            (
                "job=test.write&delay=soon".to_string(),
                "delay must be an integer",
            ),
            (
                format!(
                    "job={}",
                    form(&json!([{"test.write": {}}, {"test.fail": {"delay": -1}}]).to_string())
                ),
                "delay must be 0 or more",
            ),
            (
                format!(
                    "job={}",
                    form(&json!({"test.write": {"max_attempts": 0}}).to_string())
                ),
                "max_attempts",
            ),
            ("id=abc".to_string(), "not a job id"),
            ("retry=-3".to_string(), "not a job id"),
        ] {
            let r = t.get(&format!("/system/jobs?{q}"));
            assert_eq!(r.status, 400, "{q}: {}", r.body);
            let msg = json_of(&r)["message"].as_str().unwrap_or("").to_string();
            assert!(msg.contains(want), "{q}: {}", r.body);
        }
        assert_eq!(t.get("/system/jobs?id=987654").status, 404);
        let c = counts(&t);
        let total: i64 = c
            .as_object()
            .expect("counts")
            .values()
            .filter_map(Value::as_i64)
            .sum();
        assert_eq!(total, 0, "nothing queued: {c}");
        // A valid job is queued and runs (the good half of the refused batch did not).
        let r = enqueue(&t, &json!({"test.write": {"name": "ok6"}}), "");
        let id = r["id"].as_i64().expect("id");
        wait_state(&t, id, "done", Duration::from_secs(30));
        assert_eq!(count(&t, "done"), 1);
    }
}

/// Test 3: a failing job is retried with growing delays, dead after its max attempts, and
/// runs again when retried by id; cancel stops a delayed job.
#[test]
fn failing_jobs_back_off_then_die_and_retry_by_id_runs_them_again() {
    for schema in backends() {
        let t = start(&args(schema.as_ref(), &["-jobs-backoff", "500ms"]));
        let r = enqueue(
            &t,
            &json!({"test.fail": {"name": "f3", "max_attempts": 4}}),
            "",
        );
        let id = r["id"].as_i64().expect("id");
        let dead = wait_state(&t, id, "dead", Duration::from_secs(60));
        assert_eq!(dead["attempts"], json!(4), "{dead}");
        assert!(
            dead["error"]
                .as_str()
                .is_some_and(|e| e.contains("failing on purpose")),
            "{dead}"
        );
        let starts: Vec<i64> = (1..=4)
            .map(|a| {
                row(&t, &format!("f3.{a}")).expect("attempt row")["start"]
                    .as_i64()
                    .expect("start")
            })
            .collect();
        let gaps: Vec<i64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
        for (i, g) in gaps.iter().enumerate() {
            assert!(
                *g >= 500 << i,
                "attempt {} waited its backoff: {gaps:?}",
                i + 2
            );
        }
        // Each gap is at least its doubled backoff (above); under load a gap can also carry a
        // slow start, so growth is asserted where the margin is wide (2000 ms vs 625 ms).
        assert!(gaps[2] > gaps[0], "growing delays: {gaps:?}");
        assert!(row(&t, "f3.5").is_none(), "no fifth attempt by itself");
        let status = json_of(&t.get("/system/jobs"));
        assert!(
            status["failures"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x["id"] == json!(id))),
            "the last failures list it: {status}"
        );
        // Retry by id: one more attempt, then dead again.
        let r = t.get(&format!("/system/jobs?retry={id}"));
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            wait_for(Duration::from_secs(30), || row(&t, "f3.5").is_some()),
            "the retried job ran\n{}",
            t.log()
        );
        let dead = wait_state(&t, id, "dead", Duration::from_secs(30));
        assert_eq!(dead["attempts"], json!(5), "{dead}");
        // A job that is not dead cannot be retried; a delayed job can be cancelled.
        let r = enqueue(
            &t,
            &json!({"test.write": {"name": "later"}}),
            "&delay=60000",
        );
        let later = r["id"].as_i64().expect("id");
        assert_eq!(job(&t, later)["state"], json!("queued"));
        assert_eq!(t.get(&format!("/system/jobs?retry={later}")).status, 409);
        assert_eq!(t.get(&format!("/system/jobs?cancel={later}")).status, 200);
        assert_eq!(job(&t, later)["state"], json!("cancelled"));
        assert!(row(&t, "later").is_none());
    }
}

/// Test 5: a job worker stopped (SIGSTOP) past its lease: the job runs again in another worker;
/// the stopped one, resumed, finishes its handler but cannot mark the job done.
#[test]
fn a_stopped_worker_loses_its_lease_and_cannot_mark_the_job_done() {
    for schema in backends() {
        let t = start(&args(
            schema.as_ref(),
            &["-jobs-lease", "3s", "-server-job-workers", "2"],
        ));
        // Attempt 2 fails on purpose and is the last one: the job ends dead, so a stale
        // "done" from attempt 1 would show.
        let r = enqueue(
            &t,
            &json!({"test.write": {"name": "s5", "sleep": 4000, "fail_attempt": 2, "max_attempts": 2}}),
            "",
        );
        let id = r["id"].as_i64().expect("id");
        let mut first = 0u32;
        // Stopped once its handler runs: a worker stopped while it connects would fail on its
        // connect timeout when resumed, which is not what this test is about.
        let ok = wait_for(Duration::from_secs(20), || {
            t.log().contains("test job s5: attempt 1 sleeps")
        });
        assert!(ok, "no handler\n{}", t.log());
        let ok = wait_for(Duration::from_secs(20), || {
            first = t
                .all_pids()
                .into_iter()
                .find(|p| {
                    cmdline(*p).first().map(String::as_str) == Some("bkjs: worker test.write")
                })
                .unwrap_or(0);
            first != 0
        });
        assert!(ok, "no worker\n{}", t.log());
        kill(Pid::from_raw(first as i32), Signal::SIGSTOP).expect("stop");
        struct Resume(u32);
        impl Drop for Resume {
            fn drop(&mut self) {
                let _ = kill(Pid::from_raw(self.0 as i32), Signal::SIGCONT);
            }
        }
        let resume = Resume(first);
        let dead = wait_state(&t, id, "dead", Duration::from_secs(40));
        assert_eq!(dead["attempts"], json!(2), "{dead}");
        assert_ne!(
            dead["pid"].as_u64(),
            Some(u64::from(first)),
            "attempt 2 ran in another worker: {dead}"
        );
        assert!(
            dead["error"]
                .as_str()
                .is_some_and(|e| e.contains("attempt 2 fails")),
            "{dead}"
        );
        drop(resume);
        // The resumed worker completes its handler (its row, attempt 1) and exits, and the job
        // stays as attempt 2 left it.
        let ok = wait_for(Duration::from_secs(30), || {
            row(&t, "s5").is_some_and(|v| v["attempt"] == json!(1)) && stat(first).is_none()
        });
        assert!(ok, "the stale worker finished\n{}", t.log());
        let after = job(&t, id);
        assert_eq!(
            (after["state"].clone(), after["attempts"].clone()),
            (json!("dead"), json!(2)),
            "the stale attempt did not overwrite the newer one: {after}"
        );
        assert!(
            t.log().contains("a newer attempt owns the job"),
            "{}",
            t.log()
        );
    }
}

/// Test 1: 300 acknowledged jobs, kill -9 of the whole tree while they run, start again: every
/// acknowledged job completed at least once, none is lost, none is left running.
#[test]
fn acknowledged_jobs_survive_a_kill_9_of_the_whole_tree() {
    for schema in backends() {
        let a = args(
            schema.as_ref(),
            &[
                "-jobs-lease",
                "2s",
                "-server-job-workers",
                "2",
                "-jobs-server-concurrency",
                "4",
            ],
        );
        let t = start(&a);
        let mut ids = Vec::new();
        for batch in 0..30 {
            let spec: Vec<Value> = (0..10)
                .map(|i| json!({"test.write": {"name": format!("k{}", batch * 10 + i), "sleep": 50, "runalways": 1}}))
                .collect();
            let kind = if batch % 10 == 0 { "local" } else { "server" };
            let r = enqueue(&t, &json!(spec), &format!("&type={kind}"));
            let got = r["ids"].as_array().expect("ids").len();
            assert_eq!(got, 10, "{r}");
            ids.extend(
                r["ids"]
                    .as_array()
                    .expect("ids")
                    .iter()
                    .filter_map(Value::as_i64),
            );
        }
        assert_eq!(ids.len(), 300);
        assert!(
            wait_for(Duration::from_secs(60), || count(&t, "done") >= 20),
            "some jobs ran\n{}",
            t.log()
        );
        let before = counts(&t);
        let port = t.port;
        let home = t.kill9();
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        let t = Tree::spawn_in(home, port, "run", &refs, |cmd| {
            cmd.env("BKJS_TEST_FAULTS", "1");
        });
        t.ready(1);
        let mut last = Value::Null;
        let ok = wait_for(Duration::from_secs(120), || {
            last = counts(&t);
            last["done"].as_i64() == Some(300)
                && last["queued"].as_i64() == Some(0)
                && last["running"].as_i64() == Some(0)
        });
        assert!(ok, "before the kill {before}, now {last}\n{}", t.log());
        for id in &ids {
            assert_eq!(job(&t, *id)["state"], json!("done"), "job {id}");
        }
        for i in 0..300 {
            assert!(row(&t, &format!("k{i}")).is_some(), "k{i} ran");
        }
    }
}

fn node(schema: &Schema, name: &str, extra: &[&str]) -> Tree {
    let mut a = args(Some(schema), &["-server-jobs-host", name]);
    a.extend(extra.iter().map(|s| s.to_string()));
    start(&a)
}

/// Test 2: two nodes on one PostgreSQL drain 1,000 jobs: each ran exactly once, both did some.
#[test]
fn two_nodes_drain_one_queue_each_job_once() {
    for schema in shared() {
        two_nodes_drain(&schema);
    }
}

fn two_nodes_drain(schema: &Schema) {
    let conc = ["-jobs-server-concurrency", "4"];
    let a = node(schema, "node-a", &conc);
    let b = node(schema, "node-b", &conc);
    let mut ids = 0;
    for batch in 0..20 {
        let spec: Vec<Value> = (0..50)
            .map(|i| {
                json!({"test.write": {"name": format!("d{}", batch * 50 + i), "sleep": 20,
                        "count": true, "runalways": 1}})
            })
            .collect();
        let r = enqueue(&a, &json!(spec), "&type=server");
        ids += r["ids"].as_array().expect("ids").len();
    }
    assert_eq!(ids, 1000);
    let mut last = Value::Null;
    let ok = wait_for(Duration::from_secs(120), || {
        last = counts(&a);
        last["done"].as_i64() == Some(1000)
    });
    assert!(ok, "{last}\nA:\n{}\nB:\n{}", a.log(), b.log());
    assert_eq!(
        schema.psql("SELECT count(*), max(attempts) FROM bk_job_queue"),
        "1000|1"
    );
    assert_eq!(
        schema.psql("SELECT count(*), min(ping), max(ping) FROM bk_counter WHERE id LIKE 'd%'"),
        "1000|1|1",
        "each job ran exactly once"
    );
    let per_node =
        schema.psql("SELECT node, count(*) FROM bk_job_queue GROUP BY node ORDER BY node");
    let nodes: Vec<&str> = per_node.lines().collect();
    assert_eq!(nodes.len(), 2, "both nodes ran jobs: {per_node}");
    assert!(
        nodes[0].starts_with("node-a|") && nodes[1].starts_with("node-b|"),
        "{per_node}"
    );
}

/// Test 4: a crontab entry every second on two nodes runs once per tick across both (a
/// `per_node` entry runs on each); `etc/crontab.local` adds entries and is reloaded on change.
#[test]
fn a_crontab_tick_runs_once_across_two_nodes() {
    for schema in shared() {
        crontab_ticks_once(&schema);
    }
}

fn crontab_ticks_once(schema: &Schema) {
    let a = node(schema, "node-a", &[]);
    let b = node(schema, "node-b", &[]);
    for t in [&a, &b] {
        crate::jobs::write_crontab(
            t.home.path(),
            &json!([{"type": "server", "cron": "* * * * * *",
                     "job": {"test.write": {"name": "c4", "count": true, "runalways": 1}}}])
            .to_string(),
        );
        // crontab.local: read after etc/crontab, picked up without a restart.
        let tmp = t.home.path().join("crontab.local.tmp");
        std::fs::write(
            &tmp,
            json!([{"type": "server", "cron": "* * * * * *", "per_node": true,
                    "job": {"test.write": {"name": "c4n", "count": true, "runalways": 1}}}])
            .to_string(),
        )
        .expect("crontab.local");
        std::fs::rename(&tmp, t.home.path().join("etc/crontab.local")).expect("rename");
    }
    let ticks = |name: &str| -> i64 {
        let r = a.get(&format!("/data/get/bk_counter?id={name}"));
        json_of(&r)["ping"].as_i64().unwrap_or(0)
    };
    assert!(
        wait_for(Duration::from_secs(40), || ticks("c4") >= 6),
        "A:\n{}\nB:\n{}",
        a.log(),
        b.log()
    );
    for t in [&a, &b] {
        let status = json_of(&t.get("/system/jobs"));
        assert_eq!(
            status["crontab"].as_array().map(Vec::len),
            Some(2),
            "both files loaded: {status}"
        );
    }
    drop(a);
    drop(b);
    // Once per tick: the c4 counter matches its done rows (one per tick, whichever node won
    // it), while the per_node entry ran on both nodes, about twice as often.
    let counter = |name: &str| -> i64 {
        schema
            .psql(&format!("SELECT ping FROM bk_counter WHERE id = '{name}'"))
            .parse()
            .expect("ping")
    };
    let rows = |name: &str| -> i64 {
        schema
            .psql(&format!(
                "SELECT count(*) FROM bk_job_queue WHERE args LIKE '%\"{name}\"%' AND state = 'done'"
            ))
            .parse()
            .expect("rows")
    };
    let (c4, c4_rows) = (counter("c4"), rows("c4"));
    assert!(
        c4 >= c4_rows && c4 <= c4_rows + 1,
        "c4 ran once per tick: counter {c4}, done rows {c4_rows}"
    );
    let c4n = counter("c4n");
    assert!(
        c4n * 2 >= c4 * 3,
        "per_node ran on both nodes at each tick: c4n {c4n}, c4 {c4}"
    );
    let nodes =
        schema.psql("SELECT count(DISTINCT node) FROM bk_job_queue WHERE args LIKE '%\"c4n\"%'");
    assert_eq!(nodes, "2", "per_node entries ran on both nodes");
    // Each node's per_node tick is pinned to that node: no other node's worker ran it.
    let strays = schema
        .psql("SELECT count(*) FROM bk_job_queue WHERE args LIKE '%\"c4n\"%' AND target <> node");
    assert_eq!(strays, "0", "per_node ticks run where they were scheduled");
}

fn write_local(home: &std::path::Path, text: &str) {
    std::fs::create_dir_all(home.join("etc")).expect("etc");
    let tmp = home.join("crontab.local.tmp");
    std::fs::write(&tmp, text).expect("crontab.local");
    std::fs::rename(&tmp, home.join("etc/crontab.local")).expect("rename");
}

fn tick(name: &str) -> String {
    json!([{"type": "server", "cron": "* * * * * *",
            "job": {"test.write": {"name": name, "runalways": 1}}}])
    .to_string()
}

fn crontab_len(t: &Tree) -> Option<usize> {
    json_of(&t.get("/system/jobs"))["crontab"]
        .as_array()
        .map(Vec::len)
}

/// etc/crontab.local is read after etc/crontab, both are reloaded when either changes, and a
/// broken one keeps the running schedule.
#[test]
fn crontab_local_is_read_after_crontab_and_reloaded() {
    let t = start(&args(None, &[]));
    let master = t.pid;
    write_local(t.home.path(), &tick("cl1"));
    assert!(
        wait_for(Duration::from_secs(20), || row(&t, "cl1").is_some()),
        "crontab.local alone runs\n{}",
        t.log()
    );
    crate::jobs::write_crontab(t.home.path(), &tick("cl2"));
    assert!(
        wait_for(Duration::from_secs(20), || row(&t, "cl2").is_some()),
        "{}",
        t.log()
    );
    assert_eq!(
        crontab_len(&t),
        Some(2),
        "etc/crontab and etc/crontab.local"
    );
    write_local(t.home.path(), &tick("cl3"));
    assert!(
        wait_for(Duration::from_secs(20), || row(&t, "cl3").is_some()),
        "{}",
        t.log()
    );
    assert_eq!(crontab_len(&t), Some(2), "crontab.local's entry replaced");
    write_local(t.home.path(), "[{oops");
    assert!(
        t.wait_log("crontab not applied", Duration::from_secs(10)),
        "{}",
        t.log()
    );
    assert!(t.log().contains("crontab.local"), "the bad file is named");
    assert_eq!(crontab_len(&t), Some(2), "the running schedule stays");
    assert_eq!(t.pids("master"), vec![master], "no restart");
}

/// The queue's metrics reach `/system/stats` and `/metrics` (docs/stats.md): the master sends
/// its `jobs.*` figures to the server, which merges them with the web workers'.
#[test]
fn queue_metrics_show_in_system_stats_and_prometheus() {
    let t = start(&args(
        None,
        &[
            "-jobs-backoff",
            "100ms",
            "-api-allow-path",
            "^/system/stats$",
            "-api-allow-path",
            "^/metrics$",
        ],
    ));
    let spec: Vec<Value> = (0..5)
        .map(|i| json!({"test.write": {"name": format!("m{i}"), "runalways": 1}}))
        .collect();
    let r = enqueue(&t, &json!(spec), "&type=server");
    let ids: Vec<i64> = r["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    assert_eq!(ids.len(), 5, "{r}");
    let r = enqueue(
        &t,
        &json!({"test.fail": {"name": "mf", "max_attempts": 2}}),
        "",
    );
    let failing = r["id"].as_i64().expect("id");
    for id in &ids {
        wait_state(&t, *id, "done", Duration::from_secs(60));
    }
    wait_state(&t, failing, "dead", Duration::from_secs(60));
    let mut last = Value::Null;
    let ok = wait_for(Duration::from_secs(30), || {
        let r = t.get("/system/stats");
        last = json_of(&r);
        let j = &last["jobs"];
        j["enqueued"].as_i64() == Some(6)
            && j["started"].as_i64() == Some(7)
            && j["done"].as_i64() == Some(5)
            && j["failed"].as_i64() == Some(2)
            && j["dead"].as_i64() == Some(1)
            && j["lag_ms"]["count"].as_i64() == Some(7)
    });
    assert!(ok, "jobs metrics in /system/stats: {last}\n{}", t.log());
    assert!(
        last["jobs"]["lag_ms"]["p99"].as_f64().is_some(),
        "a lag histogram: {last}"
    );
    assert_eq!(
        last["workers"],
        json!(1),
        "the master is not a web worker: {last}"
    );
    let r = t.get("/metrics");
    assert_eq!(r.status, 200, "{}", r.body);
    for series in [
        "bkjs_jobs_enqueued_total 6",
        "bkjs_jobs_started_total 7",
        "bkjs_jobs_done_total 5",
        "bkjs_jobs_failed_total 2",
        "bkjs_jobs_dead_total 1",
        "bkjs_jobs_lag_ms_count 7",
        "bkjs_jobs_lag_ms{quantile=\"0.99\"}",
    ] {
        assert!(
            r.body.lines().any(|l| l.starts_with(series)),
            "{series} in /metrics:\n{}",
            r.body
        );
    }
}

/// Issue 19, wake-up on PostgreSQL: an idle master is woken by LISTEN/NOTIFY, not by its poll.
/// Node A runs no local jobs (0 workers); node B polls only every minute, so a job queued on A
/// starts on B well before that only through the notification (a delayed one at its time, from
/// the payload). B's LISTEN connection, terminated by the server, is made again (logged) and the
/// wake-up works again.
#[test]
fn a_job_queued_on_one_node_wakes_an_idle_node_through_listen_notify() {
    if !service_up(5432, "PostgreSQL") {
        return;
    }
    let schema = Schema::new();
    let slow = ["-jobs-poll-interval", "60s", "-jobs-poll-fallback", "60s"];
    let mut a_args = slow.to_vec();
    a_args.extend(["-server-job-workers", "0"]);
    // Node names unique to this test: other tests' listeners are in pg_stat_activity too.
    let (na, nb) = (format!("a-{}", schema.name), format!("b-{}", schema.name));
    let a = node(&schema, &na, &a_args);
    let b = node(&schema, &nb, &slow);
    let listening = |t: &Tree, n: usize| {
        wait_for(Duration::from_secs(30), || {
            t.log().matches("jobs: listening for queued jobs").count() >= n
        })
    };
    assert!(listening(&b, 1), "B listens\n{}", b.log());
    let limit = Duration::from_secs(30);
    let r = enqueue(&a, &json!({"test.write": {"name": "w1"}}), "");
    let id = r["id"].as_i64().expect("id");
    let done = wait_state(&a, id, "done", limit);
    assert_eq!(done["node"], json!(nb), "{done}");
    // A delayed job: B learns its time from the notification and claims it then.
    let r = enqueue(&a, &json!({"test.write": {"name": "w2"}}), "&delay=1500");
    let id = r["id"].as_i64().expect("id");
    assert_eq!(job(&a, id)["state"], json!("queued"));
    let done = wait_state(&a, id, "done", limit);
    assert_eq!(done["node"], json!(nb), "{done}");
    // The server drops B's listening connection: B logs it, connects again, and is woken again.
    let killed = schema.psql(&format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE application_name = 'bkjs jobs listen {nb}'"
    ));
    assert_eq!(killed, "1", "one listening connection of B");
    assert!(
        wait_for(limit, || b
            .log()
            .contains("the LISTEN connection to PostgreSQL dropped")),
        "B logs the drop\n{}",
        b.log()
    );
    assert!(listening(&b, 2), "B listens again\n{}", b.log());
    let r = enqueue(&a, &json!({"test.write": {"name": "w3"}}), "");
    let id = r["id"].as_i64().expect("id");
    let done = wait_state(&a, id, "done", limit);
    assert_eq!(done["node"], json!(nb), "{done}");
}

/// The most handler runs that overlapped in time among the `test.write` rows `names`, and the
/// hosts that ran them.
fn max_overlap(t: &Tree, names: &[String]) -> (usize, Vec<String>) {
    let mut edges = Vec::new();
    let mut hosts = Vec::new();
    for n in names {
        let v = row(t, n).unwrap_or_else(|| panic!("no row {n}"));
        let (s, e) = (
            v["start"].as_i64().expect("start"),
            v["end"].as_i64().expect("end"),
        );
        edges.push((s, 1i32));
        edges.push((e, -1i32));
        hosts.push(v["host"].as_str().unwrap_or_default().to_string());
    }
    // Ends before starts at the same instant: touching runs do not overlap.
    edges.sort();
    let (mut now, mut max) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        max = max.max(now);
    }
    hosts.sort();
    hosts.dedup();
    (max as usize, hosts)
}

/// Per-queue limits (`-jobs-queue-limits`) and `runone` hold across the nodes sharing the queue
/// (two nodes on PostgreSQL, one on SQLite): never more running jobs of a limited queue than its
/// limit, never two `runone` jobs of one name at once, even where the master's own `runone`
/// pattern matches nothing (the rule is the queue's, not the node's).
#[test]
fn queue_limits_and_runone_hold_across_nodes() {
    for schema in backends() {
        let extra = [
            "-jobs-queue-limits",
            "lim:2",
            "-jobs-server-concurrency",
            "4",
        ];
        let (a, b) = match &schema {
            Some(s) => {
                let (na, nb) = (format!("a-{}", s.name), format!("b-{}", s.name));
                (node(s, &na, &extra), Some(node(s, &nb, &extra)))
            }
            None => (start(&args(None, &extra)), None),
        };
        let lim: Vec<String> = (0..10).map(|i| format!("ql{i}")).collect();
        let one: Vec<String> = (0..6).map(|i| format!("ro{i}")).collect();
        let mut spec: Vec<Value> = lim
            .iter()
            .map(|n| json!({"test.write": {"name": n, "sleep": 300, "queue": "lim", "runalways": 1}}))
            .collect();
        spec.extend(one.iter().map(|n| {
            json!({"test.write": {"name": n, "sleep": 300, "runone": "^matches-nothing$",
                "runalways": 1}})
        }));
        let r = enqueue(&a, &json!(spec), "&type=server");
        let ids: Vec<i64> = r["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .filter_map(Value::as_i64)
            .collect();
        assert_eq!(ids.len(), 16, "{r}");
        for id in &ids {
            wait_state(&a, *id, "done", Duration::from_secs(90));
        }
        let (max, hosts) = max_overlap(&a, &lim);
        assert!(max <= 2, "queue lim ran {max} jobs at once (limit 2)");
        let (max, _) = max_overlap(&a, &one);
        assert_eq!(max, 1, "runone jobs of one name ran {max} at once");
        if b.is_some() {
            eprintln!("queue lim ran on {hosts:?}");
        }
    }
}

/// A bad `-jobs-queue-limits` item stops the start (exit 64) with an error naming the
/// parameter and the item, for each way an item can be wrong.
#[test]
fn a_bad_queue_limit_stops_the_start_naming_the_parameter() {
    for bad in ["lim:0", "lim:-2", "lim:many", ":3"] {
        // A tree (killed with its group on drop) rather than a bare wait: a start that wrongly
        // succeeds fails the test instead of hanging it.
        let mut t = Tree::start("run", &["-jobs-queue-limits", bad]);
        let code = t.wait_exit(Duration::from_secs(30));
        let log = t.log();
        assert_eq!(code, Some(Some(64)), "{bad}: {log}");
        assert!(
            log.contains("-jobs-queue-limits") && log.contains(bad),
            "{bad}: {log}"
        );
    }
}

/// The master's control socket in `home` (`var/ipc/NAME-jobs.sock`).
fn control_socket(home: &std::path::Path) -> Option<std::path::PathBuf> {
    std::fs::read_dir(home.join("var/ipc"))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("-jobs.sock"))
}

/// Sends each request line on ONE connection to the control socket at `path`; answers the
/// reply lines (fewer when the master closes the connection early).
fn control_lines(path: &std::path::Path, requests: &[Value]) -> std::io::Result<Vec<Value>> {
    use std::io::{BufRead, Write};
    let s = std::os::unix::net::UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut w = s.try_clone()?;
    let mut r = std::io::BufReader::new(s);
    let mut out = Vec::new();
    for req in requests {
        writeln!(w, "{req}")?;
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            break;
        }
        out.push(serde_json::from_str(&line).unwrap_or(Value::Null));
    }
    Ok(out)
}

/// Issue 19: web workers keep their control connection to the master between requests; the
/// master answers many requests on one connection, and after a kill -9 of the master (the
/// monitor of `run-server` starts a new one) the first enqueue once the tree serves again
/// succeeds, with no error for the client. Acknowledged jobs of before and after are all in
/// the queue. (A kept-alive connection to a dead master is found closed before use and
/// replaced: crates/jobs/src/control_conn.rs and its unit tests.)
#[test]
fn enqueues_go_on_after_the_master_is_killed_and_replaced() {
    let mut a = args(None, &[]);
    a.extend(["-syslog".to_string(), "0".to_string()]);
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    let t = Tree::start_with("run-server", &refs, |cmd| {
        cmd.env("BKJS_TEST_FAULTS", "1");
    });
    t.ready(1);
    let spec = json!([{"jobs.noop": {"runalways": 1}}, {"jobs.noop": {"runalways": 1}}]);
    let far = "&delay=3600000";
    let mut ids: Vec<i64> = Vec::new();
    let mut take = |r: &Value| {
        let got: Vec<i64> = r["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .filter_map(Value::as_i64)
            .collect();
        assert_eq!(got.len(), 2, "{r}");
        ids.extend(got);
    };
    for _ in 0..3 {
        take(&enqueue(&t, &spec, far));
    }
    let path = control_socket(t.home.path()).expect("the control socket");
    let answers = control_lines(&path, &[json!({"op": "status"}), json!({"op": "status"})])
        .expect("the control socket answers");
    assert_eq!(
        answers.len(),
        2,
        "two answers on one connection: {answers:?}"
    );
    assert!(answers.iter().all(|a| a["host"].is_string()), "{answers:?}");

    let master = t.pids("master");
    assert_eq!(master.len(), 1, "{:?}", t.titles());
    kill(Pid::from_raw(master[0] as i32), Signal::SIGKILL).expect("kill -9 the master");
    // The new master is up when its control socket answers (a connection of the test's own:
    // the web worker's kept-alive one is left as the kill left it).
    let back = wait_for(Duration::from_secs(30), || {
        let now = t.pids("master");
        now.len() == 1
            && now[0] != master[0]
            && control_socket(t.home.path())
                .and_then(|p| control_lines(&p, &[json!({"op": "status"})]).ok())
                .is_some_and(|a| a.len() == 1)
    });
    assert!(back, "no new master: {:?}\n{}", t.titles(), t.log());
    // The first request once the tree serves again must not fail.
    t.ready(1);
    for _ in 0..3 {
        take(&enqueue(&t, &spec, far));
    }
    assert_eq!(ids.len(), 12);
    for id in &ids {
        assert_eq!(job(&t, *id)["state"], json!("queued"), "job {id}");
    }
}
