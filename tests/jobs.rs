//! Jobs as an operator sees them, with the test jobs of debug builds (`BKJS_TEST_FAULTS=1`):
//! `test.write` puts a `bk_property` row recording the process that ran it and when,
//! `test.crash` aborts, `test.fail` fails. A crontab entry every second runs in a job worker and
//! the master picks up crontab edits without a restart; runone/runafter order real processes;
//! crashing, failing and overlong jobs leave the master running; `-server-job` queues at start;
//! `bksh -run-job`; a job sent through `bk_jobs` on a shared PostgreSQL runs on its host only;
//! job worker processes exit after their job and after a max-time kill; one job worker means the
//! second job waits for the first; run-backend reloads etc/crontab without restarting the master.
//!
//! The test jobs are put in the job registry by `bkjs::jobs::test_jobs` (`Registry::add`), the
//! same registry and the same call `App::job` uses; a job registered through `App::job` itself
//! is run by a master in tests/init_app.rs (the generated app's `test.cleanup`).

use crate::harness::*;
use crate::realtime::form;
use serde_json::{json, Value};
use std::time::Duration;

const JOBS: &[&str] = &[
    "-server-web-workers",
    "1",
    "-api-allow-path",
    "^/data/",
    "-api-allow-path",
    "^/system/jobs$",
];

fn start(extra: &[&str]) -> Tree {
    let mut args = JOBS.to_vec();
    args.extend(extra);
    Tree::start_with("run", &args, |cmd| {
        cmd.env("BKJS_TEST_FAULTS", "1");
    })
}

pub(crate) fn write_crontab(home: &std::path::Path, text: &str) {
    let etc = home.join("etc");
    std::fs::create_dir_all(&etc).expect("etc");
    // Written beside etc/ and renamed, so the master never reads half a file (and run-backend's
    // watcher of etc/ never sees a temporary file there).
    let tmp = home.join("crontab.tmp");
    std::fs::write(&tmp, text).expect("crontab");
    std::fs::rename(&tmp, etc.join("crontab")).expect("rename");
}

/// The value `test.write` stored under `name`, parsed.
pub(crate) fn row(t: &Tree, name: &str) -> Option<Value> {
    let r = t.get(&format!("/data/get/bk_property?name={name}"));
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).ok()?;
    serde_json::from_str(v.get("value")?.as_str()?).ok()
}

pub(crate) fn wait_row(t: &Tree, name: &str, limit: Duration) -> Value {
    let mut got = None;
    let ok = wait_for(limit, || {
        got = row(t, name);
        got.is_some()
    });
    assert!(ok, "no row {name} within {limit:?}\n{}", t.log());
    got.expect("row")
}

pub(crate) fn run_job(t: &Tree, spec: &Value) -> Value {
    let r = t.get(&format!("/system/jobs?job={}", form(&spec.to_string())));
    assert_eq!(r.status, 200, "{spec}: {}", r.body);
    serde_json::from_str(&r.body).expect("json")
}

/// The job workers of the tree: (pid, title) of every live process titled `bkjs: worker ...`.
pub(crate) fn workers(t: &Tree) -> Vec<(u32, String)> {
    t.all_pids()
        .into_iter()
        .filter_map(|p| Some((p, cmdline(p).first()?.clone())))
        .filter(|(_, title)| title.starts_with("bkjs: worker"))
        .collect()
}

/// `/system/jobs` status: (names running, names waiting).
fn status(t: &Tree) -> (Vec<String>, Vec<String>) {
    let r = t.get("/system/jobs");
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).expect("json");
    let names = |k: &str| -> Vec<String> {
        v[k].as_array()
            .map(|a| {
                a.iter()
                    .map(|j| j["args"]["name"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    (names("running"), names("waiting"))
}

pub(crate) fn idle(t: &Tree) -> bool {
    let r = t.get("/system/jobs");
    let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    v["running"].as_array().is_some_and(|a| a.is_empty())
        && v["waiting"].as_array().is_some_and(|a| a.is_empty())
}

#[test]
fn crontab_every_second_runs_in_a_worker_and_edits_apply_without_restart() {
    let t = start(&[]);
    write_crontab(
        t.home.path(),
        r#"[{"type": "local", "cron": "* * * * * *", "job": {"test.write": {"name": "tick1"}}}]"#,
    );
    t.ready(1);
    let master = t.pid;
    let first = wait_row(&t, "tick1", Duration::from_secs(20));
    assert!(
        first["title"]
            .as_str()
            .is_some_and(|s| s == "bkjs: worker test.write"),
        "ran in a job worker: {first}"
    );
    let pid = first["pid"].as_u64().expect("pid") as u32;
    assert!(
        !t.pids("master").contains(&pid)
            && !t.pids("server").contains(&pid)
            && !t.pids("web").contains(&pid),
        "not the master, server or a web worker"
    );
    // Every second: the row is written again by another worker.
    let mut second = Value::Null;
    assert!(wait_for(Duration::from_secs(10), || {
        second = row(&t, "tick1").unwrap_or(Value::Null);
        second["pid"] != first["pid"]
    }));
    assert!(second["start"].as_i64() > first["start"].as_i64());
    // A new schedule replaces the old one while the master runs on.
    write_crontab(
        t.home.path(),
        r#"[{"type": "local", "cron": "* * * * * *", "job": {"test.write": {"name": "tick2"}}}]"#,
    );
    let t2 = wait_row(&t, "tick2", Duration::from_secs(20));
    let old = row(&t, "tick1").expect("tick1");
    let mut runs = 0;
    let mut last = t2["pid"].clone();
    assert!(wait_for(Duration::from_secs(15), || {
        let now = row(&t, "tick2").unwrap_or(Value::Null);
        if now["pid"] != last {
            runs += 1;
            last = now["pid"].clone();
        }
        runs >= 2
    }));
    assert_eq!(
        row(&t, "tick1").expect("tick1"),
        old,
        "the old entry no longer runs"
    );
    assert!(
        alive(master) && t.pids("master") == vec![master],
        "no restart"
    );
    assert!(t.log().contains("crontab reloaded"), "{}", t.log());
    // A broken crontab is refused and the running schedule stays.
    write_crontab(t.home.path(), "[{oops");
    assert!(
        t.wait_log("crontab not applied", Duration::from_secs(10)),
        "{}",
        t.log()
    );
    let before = row(&t, "tick2").expect("tick2");
    assert!(wait_for(Duration::from_secs(10), || row(&t, "tick2")
        .is_some_and(|v| v["pid"] != before["pid"])));
}

#[test]
fn runone_and_runafter_order_job_workers() {
    let t = start(&["-server-job-workers", "2"]);
    t.ready(1);
    // slow runs; one waits for it (runone); free starts at once in the second worker.
    let r = run_job(&t, &json!({"test.write": {"name": "slow", "sleep": 1500}}));
    assert_eq!(r["queued"], json!(["test.write"]), "{r}");
    let r = run_job(
        &t,
        &json!({"test.write": {"name": "one", "runone": "^test\\.write$", "runalways": 1}}),
    );
    assert_eq!(r["queued"], json!(["test.write"]), "{r}");
    let r = run_job(&t, &json!({"test.write": {"name": "free", "runalways": 1}}));
    assert_eq!(r["queued"], json!(["test.write"]), "{r}");
    // Without runalways a second test.write is refused while one runs or waits.
    let r = run_job(&t, &json!({"test.write": {"name": "dup"}}));
    assert_eq!(r["skipped"][0]["name"], json!("test.write"), "{r}");
    let slow = wait_row(&t, "slow", Duration::from_secs(20));
    let one = wait_row(&t, "one", Duration::from_secs(20));
    let free = wait_row(&t, "free", Duration::from_secs(20));
    assert!(
        one["start"].as_i64() >= slow["end"].as_i64(),
        "runone waited: {slow} {one}"
    );
    assert!(
        free["start"].as_i64() < slow["end"].as_i64(),
        "free did not wait: {slow} {free}"
    );
    assert!(wait_for(Duration::from_secs(10), || idle(&t)));
    // runafter: a2 waits for s2 although a worker is free.
    run_job(&t, &json!({"test.write": {"name": "s2", "sleep": 1000}}));
    let r = run_job(
        &t,
        &json!({"test.write": {"name": "a2", "runafter": "^test\\.write$", "runalways": 1}}),
    );
    assert_eq!(r["queued"], json!(["test.write"]), "{r}");
    let s2 = wait_row(&t, "s2", Duration::from_secs(20));
    let a2 = wait_row(&t, "a2", Duration::from_secs(20));
    assert!(
        a2["start"].as_i64() >= s2["end"].as_i64(),
        "runafter waited: {s2} {a2}"
    );
    // Bad requests are refused with the reason.
    for (q, want) in [
        ("job=nope.nope", "unknown job"),
        ("job=%7Boops", "not a job name nor JSON"),
        ("job=test.write&type=remote", "local or server"),
        (
            "job=%7B%22test.write%22%3A%7B%22runone%22%3A%22(%22%7D%7D",
            "runone",
        ),
    ] {
        let r = t.get(&format!("/system/jobs?{q}"));
        assert_eq!(r.status, 400, "{q}: {}", r.body);
        assert!(r.body.contains(want), "{q}: {}", r.body);
    }
}

#[test]
fn crashing_failing_and_overlong_jobs_leave_the_master_running() {
    use base64::Engine;
    let boot = base64::engine::general_purpose::STANDARD
        .encode(json!({"test.write": {"name": "boot"}}).to_string());
    let t = start(&["-server-job-max-time", "1s", "-server-job", &boot]);
    t.ready(1);
    let master = t.pid;
    wait_row(&t, "boot", Duration::from_secs(20));
    run_job(&t, &json!("test.crash"));
    assert!(
        t.wait_log("job test.crash (worker pid", Duration::from_secs(20)),
        "{}",
        t.log()
    );
    assert!(
        t.wait_log("crashed: signal 6", Duration::from_secs(10)),
        "{}",
        t.log()
    );
    run_job(&t, &json!("test.fail"));
    assert!(
        t.wait_log("failing on purpose", Duration::from_secs(20)),
        "{}",
        t.log()
    );
    assert!(t.wait_log("job test.fail (worker pid", Duration::from_secs(10)));
    run_job(&t, &json!({"test.write": {"name": "long", "sleep": 60000}}));
    assert!(
        t.wait_log(
            "ran longer than -server-job-max-time",
            Duration::from_secs(20)
        ),
        "{}",
        t.log()
    );
    assert!(
        wait_for(Duration::from_secs(10), || idle(&t)),
        "the killed worker is gone"
    );
    assert!(row(&t, "long").is_none(), "the killed job never finished");
    // A server job runs inside the master.
    let r = t.get(&format!(
        "/system/jobs?type=server&job={}",
        form(&json!({"test.write": {"name": "inmaster"}}).to_string())
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = wait_row(&t, "inmaster", Duration::from_secs(20));
    assert_eq!(v["pid"].as_u64(), Some(master as u64), "{v}");
    // The master is the same process all along, and still runs jobs.
    assert!(alive(master) && t.pids("master") == vec![master]);
    run_job(&t, &json!({"test.write": {"name": "after"}}));
    wait_row(&t, "after", Duration::from_secs(20));
    // A worker that just wrote its row may still be exiting: a zombie for a moment is normal,
    // one that stays means the master never reaped it.
    assert!(
        wait_for(Duration::from_secs(10), || t.zombies().is_empty()),
        "every worker was reaped: {:?}",
        t.zombies()
    );
}

#[test]
fn bad_server_job_stops_the_start_and_bksh_runs_jobs() {
    let mut t = start(&["-server-job", "!!notbase64"]);
    let code = t.wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(Some(64)), "{}", t.log());
    assert!(t.log().contains("-server-job"), "{}", t.log());
    drop(t);
    let t = start(&[]);
    t.ready(1);
    let out = std::process::Command::new(BKSH)
        .arg("-home")
        .arg(t.home.path())
        .args(["-run-job", "job", r#"{"test.write":{"name":"fromsh"}}"#])
        .env("BKJS_TEST_FAULTS", "1")
        .output()
        .expect("bksh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        serde_json::from_str::<Value>(stdout.trim()).expect("json"),
        json!({"ran": ["test.write"]})
    );
    let v = wait_row(&t, "fromsh", Duration::from_secs(5));
    assert_ne!(v["pid"].as_u64(), Some(t.pid as u64));
    let out = std::process::Command::new(BKSH)
        .arg("-home")
        .arg(t.home.path())
        .args(["-run-job", "job", "nope.nope"])
        .env("BKJS_TEST_FAULTS", "1")
        .output()
        .expect("bksh");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown job"));
}

#[test]
fn a_bk_jobs_job_for_host_b_runs_on_node_b_only() {
    if !crate::harness::service_up(5432, "PostgreSQL") {
        return;
    }
    let schema = format!("bkjs_jobs_{}_{}", std::process::id(), free_port());
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::process::Command::new("psql")
                .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-c"])
                .arg(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0))
                .output();
        }
    }
    let _cleanup = Cleanup(schema.clone());
    let pg = "postgresql://postgres@127.0.0.1:5432/test";
    let shared = [
        "-db-pool",
        "pgsql",
        "-db-pgsql-pool",
        pg,
        "-db-pgsql-schema",
        &schema,
        "-server-jobs-interval",
        "200ms",
    ];
    let mut a_args = shared.to_vec();
    a_args.extend(["-server-jobs-host", "node-a"]);
    let mut b_args = shared.to_vec();
    b_args.extend(["-server-jobs-host", "node-b"]);
    let a = start(&a_args);
    a.ready(1);
    let b = start(&b_args);
    b.ready(1);
    let spec = form(&json!({"test.write": {"name": "remote"}}).to_string());
    let r = a.get(&format!("/system/jobs?host=node-b&job={spec}"));
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(
        (v["host"].clone(), v["queued"].clone()),
        (json!("node-b"), json!(["test.write"]))
    );
    let done = wait_row(&a, "remote", Duration::from_secs(30));
    assert_eq!(done["host"], json!("node-b"), "{done}");
    assert!(
        b.log().contains("job test.write started in worker pid"),
        "{}",
        b.log()
    );
    assert!(
        !a.log().contains("job test.write started"),
        "node A ran it:\n{}",
        a.log()
    );
    // A job for a third host stays in bk_jobs while node B keeps polling.
    let spec_c = form(&json!({"test.write": {"name": "for-c"}}).to_string());
    assert_eq!(
        a.get(&format!("/system/jobs?host=node-c&job={spec_c}"))
            .status,
        200
    );
    let spec2 = form(&json!({"test.write": {"name": "remote2"}}).to_string());
    assert_eq!(
        a.get(&format!("/system/jobs?host=node-b&job={spec2}"))
            .status,
        200
    );
    wait_row(&b, "remote2", Duration::from_secs(30));
    let r = a.get("/data/select/bk_jobs?host=node-c");
    let v: Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(v["count"], json!(1), "{v}");
    assert!(row(&a, "for-c").is_none());
    let r = a.get("/data/select/bk_jobs?host=node-b");
    let v: Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(v["count"], json!(0), "node B claimed its rows: {v}");
}

/// Waits until a job worker titled `bkjs: worker NAME` runs; its pid.
fn wait_worker(t: &Tree, name: &str) -> u32 {
    let title = format!("bkjs: worker {name}");
    let mut pid = None;
    let ok = wait_for(Duration::from_secs(20), || {
        pid = workers(t)
            .into_iter()
            .find(|(_, s)| *s == title)
            .map(|w| w.0);
        pid.is_some()
    });
    assert!(ok, "no process {title:?}: {:?}\n{}", t.titles(), t.log());
    pid.expect("pid")
}

/// Waits until `pid` is gone from /proc (exited and reaped) and no job worker of the tree is
/// left.
fn wait_no_workers(t: &Tree, pid: u32, what: &str) {
    let ok = wait_for(Duration::from_secs(15), || {
        stat(pid).is_none() && workers(t).is_empty()
    });
    assert!(
        ok,
        "{what}: worker pid {pid} state {:?}, workers {:?}\n{}",
        stat(pid),
        workers(t),
        t.log()
    );
}

#[test]
fn job_workers_exit_after_their_job_and_after_a_max_time_kill() {
    let t = start(&["-server-job-max-time", "2s"]);
    t.ready(1);
    assert!(workers(&t).is_empty(), "no worker before a job");
    // A job that ends by itself: its worker is the one that wrote the row, and it exits.
    run_job(&t, &json!({"test.write": {"name": "done", "sleep": 1000}}));
    let pid = wait_worker(&t, "test.write");
    let done = wait_row(&t, "done", Duration::from_secs(20));
    assert_eq!(done["pid"].as_u64(), Some(u64::from(pid)), "{done}");
    wait_no_workers(&t, pid, "after the job ended");
    // A job killed after -server-job-max-time: its worker is gone too, the row never written.
    run_job(&t, &json!({"test.write": {"name": "long", "sleep": 60000}}));
    let pid = wait_worker(&t, "test.write");
    assert!(
        t.wait_log(
            "ran longer than -server-job-max-time",
            Duration::from_secs(20)
        ),
        "{}",
        t.log()
    );
    wait_no_workers(&t, pid, "after the max-time kill");
    assert!(row(&t, "long").is_none(), "the killed job never finished");
    assert!(
        wait_for(Duration::from_secs(10), || t.zombies().is_empty()),
        "every worker was reaped: {:?}",
        t.zombies()
    );
}

#[test]
fn one_job_worker_runs_the_second_job_after_the_first() {
    let t = start(&["-server-job-workers", "1"]);
    t.ready(1);
    let r = run_job(&t, &json!({"test.write": {"name": "first", "sleep": 3000}}));
    assert_eq!(r["queued"], json!(["test.write"]), "{r}");
    let r = run_job(
        &t,
        &json!({"test.write": {"name": "second", "runalways": 1}}),
    );
    assert_eq!(r["queued"], json!(["test.write"]), "{r}");
    // While the first runs, the second waits in the master's queue and one worker process runs.
    let first_pid = wait_worker(&t, "test.write");
    let (running, waiting) = status(&t);
    assert_eq!(
        (running, waiting),
        (vec!["first".to_string()], vec!["second".to_string()]),
        "{}",
        t.log()
    );
    // Sampled until both rows exist: never two job workers at once.
    let mut most = 0;
    let ok = wait_for(Duration::from_secs(30), || {
        most = most.max(workers(&t).len());
        row(&t, "first").is_some() && row(&t, "second").is_some()
    });
    assert!(ok, "both jobs ran\n{}", t.log());
    assert_eq!(most, 1, "one job worker at a time");
    let first = row(&t, "first").expect("first");
    let second = row(&t, "second").expect("second");
    assert_eq!(first["pid"].as_u64(), Some(u64::from(first_pid)));
    assert_ne!(first["pid"], second["pid"], "each job in its own worker");
    assert!(
        second["start"].as_i64() >= first["end"].as_i64(),
        "the second started after the first ended: {first} {second}"
    );
    assert!(wait_for(Duration::from_secs(10), || idle(&t)));
}

#[test]
fn run_backend_reloads_the_crontab_without_restarting_the_master() {
    let t = Tree::start_with("run-backend", JOBS, |cmd| {
        cmd.env("BKJS_TEST_FAULTS", "1");
    });
    t.ready(1);
    let master = t.pids("master");
    assert_eq!(master.len(), 1, "{:?}", t.titles());
    for name in ["rb1", "rb2"] {
        write_crontab(
            t.home.path(),
            &json!([{"type": "local", "cron": "* * * * * *", "job": {"test.write": {"name": name}}}])
                .to_string(),
        );
        // Tolerates refused connections, so that a restart (the bug) fails on the pid check.
        let mut v = Value::Null;
        let ok = wait_for(Duration::from_secs(20), || {
            let r = t.get(&format!("/data/get/bk_property?name={name}"));
            v = serde_json::from_str::<Value>(&r.body)
                .ok()
                .and_then(|v| serde_json::from_str(v.get("value")?.as_str()?).ok())
                .unwrap_or(Value::Null);
            r.status == 200 && !v.is_null()
        });
        assert_eq!(
            t.pids("master"),
            master,
            "the master was not restarted\n{}",
            t.log()
        );
        assert!(ok, "no row {name}\n{}", t.log());
        assert_eq!(v["title"], json!("bkjs: worker test.write"), "{v}");
    }
    let log = t.log();
    assert!(log.contains("crontab changed: crontab"), "{log}");
    assert!(!log.contains("restarting the master"), "{log}");
}
