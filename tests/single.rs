//! `bkjs run -single` (docs/processes.md, "One process"): the server's part, one web worker's
//! API, the master and its jobs in one process. `ps` shows that one process and no child for
//! the web or the server; the cache answers the same verbs from the in-process LRU and a reload
//! (SIGHUP) replaces the API in place while the LRU keeps its data; /system/stats shows this
//! process's own figures; jobs queued through /system/jobs run (a `server` job in the process
//! itself, a `local` one in a job worker that exits after it) and so does a crontab tick;
//! SIGTERM drains an in-flight request, stops a running job worker and exits with 0 leaving no
//! child. The main API scenario runs against it in tests/api.rs.

use crate::harness::*;
use crate::jobs::{idle, run_job, wait_row, workers, write_crontab};
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use std::time::Duration;

fn start(extra: &[&str]) -> Tree {
    let mut args = vec![
        "-single",
        "-api-allow-path",
        "^/system/",
        "-api-allow-path",
        "^/data/",
        "-api-allow-path",
        "^/_test/",
    ];
    args.extend(extra);
    let t = Tree::start_with("run", &args, |cmd| {
        cmd.env("BKJS_TEST_FAULTS", "1");
    });
    t.ready_at("/ping");
    t
}

fn json_of(r: &Reply) -> Value {
    serde_json::from_str(&r.body).unwrap_or(Value::Null)
}

/// Only the top process, titled `bkjs: single`, and no job worker.
fn alone(t: &Tree) -> bool {
    t.all_pids() == [t.pid] && t.titles() == ["bkjs: single"]
}

#[test]
fn one_process_serves_the_cache_stats_and_reloads_in_place() {
    let t = start(&[]);
    assert!(alone(&t), "one process: {:?}", t.titles());
    assert!(t.pids("web").is_empty() && t.pids("server").is_empty());
    crate::cache::conformance(&t);

    // Put, get, invalidate, get: one LRU, no stale copy anywhere.
    assert_eq!(t.get("/system/cache/put?name=k&value=v1").status, 200);
    assert_eq!(
        json_of(&t.get("/system/cache/get?name=k")),
        json!({"value": "v1"})
    );
    assert_eq!(t.get("/system/cache/put?name=k&value=v2").status, 200);
    assert_eq!(
        json_of(&t.get("/system/cache/get?name=k")),
        json!({"value": "v2"})
    );
    assert_eq!(t.get("/system/cache/del?name=k").status, 200);
    assert_eq!(json_of(&t.get("/system/cache/get?name=k")), json!({}));
    assert_eq!(t.get("/system/cache/put?name=kept&value=1").status, 200);

    // A DB write through the API invalidates what the DB front cached (bk_counter is cached).
    let r = t.get("/data/incr/bk_counter?id=c1&ping=1");
    assert_eq!(r.status, 200, "{}", r.body);
    let first = json_of(&t.get("/data/get/bk_counter?id=c1"));
    assert_eq!(first["ping"], json!(1), "{first}");
    assert_eq!(t.get("/data/incr/bk_counter?id=c1&ping=1").status, 200);
    let second = json_of(&t.get("/data/get/bk_counter?id=c1"));
    assert_eq!(second["ping"], json!(2), "no stale cached row: {second}");

    // This process's own figures.
    for _ in 0..5 {
        assert_eq!(t.get("/ping").status, 200);
    }
    let stats = json_of(&t.get("/system/stats"));
    assert_eq!(stats["pid"], json!(t.pid), "{stats}");
    assert!(
        stats["api"]["response"]["count"].as_u64().unwrap_or(0) >= 5,
        "{stats}"
    );
    assert!(stats["rss"].as_u64().unwrap_or(0) > 0, "{stats}");
    assert!(stats["cache"]["count"].as_u64().is_some(), "{stats}");

    // SIGHUP with a changed config file: the new API refuses /ping, the same process serves
    // it, and the LRU kept its data.
    std::fs::write(
        t.home.path().join("etc").join("config"),
        "api-deny-path=^/ping$\n",
    )
    .expect("config");
    t.signal(Signal::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(20), || t.get("/ping").status == 403),
        "reloaded API\n{}",
        t.log()
    );
    assert!(
        t.log().contains("SIGHUP: configuration is valid"),
        "{}",
        t.log()
    );
    assert_eq!(
        json_of(&t.get("/system/cache/get?name=kept")),
        json!({"value": "1"})
    );
    // An invalid configuration is refused; the API in place serves on.
    std::fs::write(
        t.home.path().join("etc").join("config"),
        "api-threads=lots\n",
    )
    .expect("config");
    t.signal(Signal::SIGHUP);
    assert!(
        t.wait_log("SIGHUP: configuration not applied", Duration::from_secs(10)),
        "{}",
        t.log()
    );
    assert_eq!(t.get("/ping").status, 403);
    assert_eq!(t.get("/system/cache/get?name=kept").status, 200);
    // /system/restart replaces the API the same way.
    let r = t.get("/system/restart");
    assert_eq!((r.status, r.body.as_str()), (200, "{}"));
    assert!(t.wait_log(
        "/system/restart: replacing the API",
        Duration::from_secs(10)
    ));
    assert!(alone(&t), "still one process: {:?}", t.titles());
}

#[test]
fn jobs_and_crontab_ticks_run_in_a_single_process() {
    let t = start(&[]);
    write_crontab(
        t.home.path(),
        r#"[{"type": "server", "cron": "* * * * * *", "job": {"test.write": {"name": "tick"}}}]"#,
    );
    // The crontab (re-read while running) fires in the process itself.
    let tick = wait_row(&t, "tick", Duration::from_secs(20));
    assert_eq!(tick["pid"], json!(t.pid), "{tick}");
    write_crontab(t.home.path(), "[]");

    // A server job queued through /system/jobs runs in this process.
    let v = run_job_typed(&t, "server", &json!({"test.write": {"name": "srv"}}));
    assert!(v["id"].as_i64().is_some(), "{v}");
    let srv = wait_row(&t, "srv", Duration::from_secs(20));
    assert_eq!(srv["pid"], json!(t.pid), "{srv}");
    assert_eq!(srv["title"], json!("bkjs: single"), "{srv}");

    // A local job runs in a job worker that exits after it.
    let v = run_job(&t, &json!({"test.write": {"name": "loc"}}));
    assert!(v["id"].as_i64().is_some(), "{v}");
    let loc = wait_row(&t, "loc", Duration::from_secs(20));
    assert_eq!(loc["title"], json!("bkjs: worker test.write"), "{loc}");
    assert_ne!(loc["pid"], json!(t.pid));
    assert!(
        wait_for(Duration::from_secs(20), || idle(&t) && alone(&t)),
        "the job worker exited: {:?}\n{}",
        t.titles(),
        t.log()
    );
}

fn run_job_typed(t: &Tree, kind: &str, spec: &Value) -> Value {
    let q = format!(
        "/system/jobs?type={kind}&job={}",
        crate::realtime::form(&spec.to_string())
    );
    let r = t.get(&q);
    assert_eq!(r.status, 200, "{spec}: {}", r.body);
    serde_json::from_str(&r.body).expect("json")
}

#[test]
fn sigterm_drains_stops_the_jobs_and_exits_0_leaving_no_child() {
    // Two API threads: one is busy with the slow request while the other answers the stats.
    let mut t = start(&["-api-threads", "2"]);
    // A job worker that would run for a minute.
    run_job(&t, &json!({"test.write": {"name": "long", "sleep": 60000}}));
    assert!(
        wait_for(Duration::from_secs(20), || !workers(&t).is_empty()),
        "a job worker runs\n{}",
        t.log()
    );
    let worker = workers(&t)[0].0;
    // A slow request in flight when SIGTERM comes.
    let url = t.url("/_test/block?ms=3000");
    let slow = std::thread::spawn(move || http_get(&agent(), &url));
    assert!(
        wait_for(Duration::from_secs(10), || {
            let s = json_of(&t.get("/system/stats"));
            // In progress: the slow request and this one.
            s["api"]["count"].as_f64().unwrap_or(0.0) >= 2.0
        }),
        "the slow request is in flight"
    );
    t.signal(Signal::SIGTERM);
    let reply = slow.join().expect("slow request");
    assert_eq!(reply.status, 200, "drained, not cut: {}", reply.body);
    let code = t.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(Some(0)), "exit code\n{}", t.log());
    assert!(!alive(worker), "the job worker is gone");
    assert!(descendants(t.pid).is_empty());
    let log = t.log();
    assert!(log.contains("signal 15: draining the API"), "{log}");
    assert!(log.contains("stopped"), "{log}");
    assert!(
        !t.home.path().join("var").join("bkjs.pid").exists(),
        "the pid file is removed"
    );
}

#[test]
fn run_backend_single_is_a_monitor_over_one_process() {
    let t = Tree::start("run-backend", &["-single", "-api-allow-path", "^/system/"]);
    t.ready_at("/ping");
    let single = t.pids("single");
    assert_eq!(single.len(), 1, "{:?}", t.titles());
    let mut titles = t.titles();
    titles.sort();
    assert_eq!(titles, ["bkjs: monitor", "bkjs: single"]);
    // The monitor restarts it when it dies, as it would a master.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(single[0] as i32),
        Signal::SIGKILL,
    )
    .expect("kill");
    assert!(
        wait_for(Duration::from_secs(20), || {
            let now = t.pids("single");
            now.len() == 1 && now != single && t.get("/ping").status == 200
        }),
        "restarted: {:?}\n{}",
        t.titles(),
        t.log()
    );
}
