//! Supervision: killed children come back with bounded backoff, nothing is left a zombie, a child
//! that cannot start is not respawned in a storm, and a hung worker is killed by the heartbeat
//! timeout.

use crate::harness::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

fn kill9(pid: u32) {
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill -9");
}

#[test]
fn killed_web_server_and_master_are_replaced() {
    let t = Tree::start("run-server", &["-syslog", "0"]);
    t.ready(2);
    for role in ["web", "server", "master"] {
        let old = t.pids(role);
        kill9(old[0]);
        let replaced = wait_for(Duration::from_secs(30), || {
            let now = t.pids(role);
            !now.contains(&old[0])
                && now.len() == old.len()
                && t.pids("web").len() == 2
                && t.get("/ping").status == 200
        });
        assert!(
            replaced,
            "{role} not replaced after kill -9: {:?}\n{}",
            t.titles(),
            t.log()
        );
    }
    assert!(
        t.log().contains("exited: signal 9 (SIGKILL)"),
        "exit logged with the signal"
    );
    assert!(
        wait_for(Duration::from_secs(10), || t.zombies().is_empty()),
        "zombies: {:?}",
        t.zombies()
    );
}

#[test]
fn thirty_kills_leave_no_zombies_and_backoff_stays_bounded() {
    let t = Tree::start("run", &[]);
    t.ready(2);
    let started = Instant::now();
    for i in 0..30 {
        let mut victim = None;
        assert!(
            wait_for(Duration::from_secs(10), || {
                victim = t.pids("web").first().copied();
                victim.is_some()
            }),
            "no web worker to kill at round {i}: {:?}\n{}",
            t.titles(),
            t.log()
        );
        if let Some(v) = victim {
            let _ = kill(Pid::from_raw(v as i32), Signal::SIGKILL);
            wait_for(Duration::from_secs(2), || !alive(v));
        }
    }
    // With the cap at 1 s the pool is whole again well within a few caps.
    t.ready(2);
    assert!(
        wait_for(Duration::from_secs(10), || t.zombies().is_empty()),
        "zombies: {:?}",
        t.zombies()
    );
    let log = t.log();
    let delays: Vec<f64> = log
        .lines()
        .filter_map(|l| l.split("replacing in ").nth(1))
        .filter_map(|s| s.trim_end_matches('s').parse().ok())
        .collect();
    assert!(
        delays.len() >= 30,
        "every kill is logged with its delay: {}",
        delays.len()
    );
    assert!(
        delays.iter().all(|d| *d <= 1.0),
        "delays above the 1 s cap: {delays:?}"
    );
    assert!(
        delays.iter().any(|d| *d >= 0.25),
        "backoff grows: {delays:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(90));
}

#[test]
fn port_taken_is_a_clear_error_without_restart_storm() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let home = tempfile::Builder::new()
        .prefix("bkjs-t")
        .tempdir()
        .expect("home");
    let t = Tree::spawn_in(
        home,
        port,
        "run",
        &["-server-bind-retry", "200ms", "-server-crash-delay", "2s"],
        |_| {},
    );
    assert!(
        t.wait_log("failed at boot", Duration::from_secs(15)),
        "{}",
        t.log()
    );
    // Watch for 4 more seconds: at most 2-3 attempts at a 2 s crash delay, not a storm.
    let until = Instant::now() + Duration::from_secs(4);
    wait_for(Duration::from_secs(5), || Instant::now() >= until);
    let log = t.log();
    let attempts = log.matches("cannot listen on 127.0.0.1").count();
    assert!((2..=4).contains(&attempts), "attempts: {attempts}\n{log}");
    assert!(
        log.contains("Address in use") || log.contains("address in use") || log.contains("in use"),
        "{log}"
    );
    assert!(log.contains("exit code 78"), "exit code logged: {log}");
    drop(taken);
    // Once the port is free the server comes up by itself.
    assert!(
        wait_for(Duration::from_secs(15), || t.get("/ping").status == 200),
        "server did not recover once the port was free\n{}",
        t.log()
    );
}

#[test]
fn hung_worker_is_killed_by_heartbeat_timeout() {
    let t = Tree::start_with(
        "run",
        &[
            "-api-allow-path",
            "^/_test/",
            "-server-worker-timeout",
            "2s",
        ],
        |cmd| {
            cmd.env("BKJS_TEST_FAULTS", "1");
        },
    );
    t.ready(2);
    let before = t.pids("web");
    // The hanging request never gets an answer from that worker.
    let url = t.url("/_test/hang");
    std::thread::spawn(move || {
        let a = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(30))
            .build();
        let _ = a.get(&url).call();
    });
    assert!(
        wait_for(Duration::from_secs(30), || t
            .log()
            .contains("sent no heartbeat")),
        "hung worker not detected\n{}",
        t.log()
    );
    assert!(
        wait_for(Duration::from_secs(20), || {
            let now = t.pids("web");
            now.len() == 2 && before.iter().filter(|p| now.contains(p)).count() == 1
        }),
        "hung worker not replaced: {before:?} -> {:?}\n{}",
        t.pids("web"),
        t.log()
    );
    t.ready(2);
}

#[test]
fn fault_switch_is_off_without_the_test_flag() {
    let t = Tree::start("run", &["-api-allow-path", "^/_test/"]);
    t.ready(2);
    assert_eq!(t.get("/_test/hang").status, 404);
}

#[test]
fn max_requests_recycles_workers_gracefully() {
    let t = Tree::start("run", &["-server-max-requests", "40"]);
    t.ready(2);
    let before = t.pids("web");
    let url = t.url("/ping");
    let mut failures = Vec::new();
    let mut sent = 0;
    // A new connection per request, so both workers get traffic; keep going until both recycled.
    let recycled = wait_for(Duration::from_secs(60), || {
        for _ in 0..20 {
            let r = http_get(&agent(), &url);
            sent += 1;
            if r.status != 200 {
                failures.push(format!("{} {}", r.status, r.body));
            }
        }
        let now = t.pids("web");
        now.len() == 2 && now.iter().all(|p| !before.contains(p))
    });
    assert!(
        recycled,
        "workers not recycled after {sent} requests: {before:?} -> {:?}\n{}",
        t.pids("web"),
        t.log()
    );
    assert!(t.log().contains("recycling"));
    assert!(
        failures.is_empty(),
        "recycling must not fail requests: {failures:?}"
    );
}
