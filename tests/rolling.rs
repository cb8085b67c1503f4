//! Rolling restarts under load lose no request; a bad configuration is refused and the old one
//! kept; idle connections cannot hold a drain past its deadline.

use crate::harness::*;
use nix::sys::signal::Signal;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Several client threads with keep-alive connections hitting `/ping` until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(url: String, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|_| {
                let (stop, ok, failed, url) =
                    (stop.clone(), ok.clone(), failed.clone(), url.clone());
                std::thread::spawn(move || {
                    let a = agent();
                    while !stop.load(Ordering::Relaxed) {
                        let r = http_get(&a, &url);
                        if r.status == 200 {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.lock().push(format!("{} {}", r.status, r.body));
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            threads,
        }
    }

    fn count(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    /// Waits until `n` more requests succeeded.
    fn advance(&self, n: usize) {
        let target = self.count() + n;
        assert!(
            wait_for(Duration::from_secs(30), || self.count() >= target),
            "load stalled at {}",
            self.count()
        );
    }

    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let failed = self.failed.lock().clone();
        (self.count(), failed)
    }
}

/// Waits until the web workers are all different from `old` and there are `n` of them.
fn all_new(t: &Tree, old: &[u32], n: usize, why: &str) -> Vec<u32> {
    let mut now = Vec::new();
    assert!(
        wait_for(Duration::from_secs(60), || {
            now = t.pids("web");
            now.len() == n
                && now.iter().all(|p| !old.contains(p))
                && t.log().matches("rolling restart complete").count() > 0
        }),
        "{why}: workers not all replaced: {old:?} -> {now:?}\n{}",
        t.log()
    );
    now
}

/// Between "draining web pid X" and "web pid X exited" no other worker starts draining, and every
/// drained worker was preceded by a replacement that reported ready.
fn at_most_one_drain_at_a_time(log: &str) {
    let mut draining: Option<String> = None;
    let mut drains = 0;
    for line in log.lines() {
        if let Some(pid) = line.split("draining web pid ").nth(1) {
            assert!(
                draining.is_none(),
                "two drains at once: {draining:?} and {pid}\n{log}"
            );
            draining = Some(pid.trim().to_string());
            drains += 1;
        } else if let Some(pid) = &draining {
            if line.contains(&format!("web pid {pid} exited")) {
                draining = None;
            }
        }
    }
    assert!(
        drains >= 6,
        "three rolls of two workers drain six: {drains}"
    );
}

fn roll_under_load(t: &Tree) {
    t.ready(2);
    let load = Load::start(t.url("/ping"), 4);
    load.advance(300);
    let w0 = t.pids("web");
    t.signal(Signal::SIGUSR2);
    let w1 = all_new(t, &w0, 2, "SIGUSR2");
    load.advance(300);
    let rolls = t.log().matches("rolling restart complete").count();
    t.signal(Signal::SIGHUP);
    assert!(wait_for(Duration::from_secs(60), || t
        .log()
        .matches("rolling restart complete")
        .count()
        > rolls));
    let w2 = all_new(t, &w1, 2, "SIGHUP");
    load.advance(300);
    let r = t.get("/system/restart");
    assert_eq!((r.status, r.body.as_str()), (200, "{}"), "/system/restart");
    let rolls = t.log().matches("rolling restart complete").count();
    assert!(wait_for(Duration::from_secs(60), || t
        .log()
        .matches("rolling restart complete")
        .count()
        > rolls));
    all_new(t, &w2, 2, "/system/restart");
    load.advance(300);
    let (ok, failed) = load.finish();
    at_most_one_drain_at_a_time(&t.log());
    assert!(
        failed.is_empty(),
        "{} failed requests of {}: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(10)]
    );
    assert!(ok >= 1200, "only {ok} requests");
    eprintln!("rolling restarts under load: {ok} requests, 0 failed");
}

#[test]
fn rolling_restart_under_load_loses_no_request() {
    let t = Tree::start("run", &["-api-allow-path", "^/system/restart$"]);
    roll_under_load(&t);
}

#[test]
fn rolling_restart_through_the_proxy_loses_no_request() {
    let base = free_ports(4).to_string();
    let t = Tree::start(
        "run",
        &["-api-allow-path", "^/system/restart$", "-proxy-port", &base],
    );
    roll_under_load(&t);
}

#[test]
fn bad_config_on_sighup_is_refused_and_a_good_change_is_applied() {
    let t = Tree::start("run-server", &["-syslog", "0"]);
    t.ready(2);
    let before = t.pids("web");
    let conf = t.home.path().join("etc/config");
    std::fs::write(&conf, "server-web-workers=many\n").expect("write config");
    t.signal(Signal::SIGHUP);
    assert!(
        t.wait_log("configuration not applied", Duration::from_secs(10)),
        "bad config not reported\n{}",
        t.log()
    );
    assert!(
        t.wait_log(
            "invalid value for -server-web-workers",
            Duration::from_secs(10)
        ),
        "{}",
        t.log()
    );
    // Nothing restarted and the server keeps answering.
    assert!(wait_for(Duration::from_secs(2), || t.get("/ping").status == 200));
    assert_eq!(t.pids("web"), before);
    // A valid change to etc/config is picked up without a signal: workers roll with it.
    std::fs::write(&conf, "api-allow-path=^/hello$\n").expect("write config");
    all_new(&t, &before, 2, "etc/config change");
    assert_eq!(
        t.get("/hello").status,
        404,
        "the new allow pattern is in force (404, not 401)"
    );
    assert_eq!(
        t.get("/ping").status,
        200,
        "command-line patterns still apply"
    );
}

#[test]
fn idle_connections_do_not_hold_a_drain_past_its_deadline() {
    let t = Tree::start(
        "run",
        &["-server-drain-timeout", "2s", "-server-web-workers", "1"],
    );
    t.ready(1);
    let old = t.pids("web");
    // One connection that never sends a request, one idle keep-alive connection after a request.
    let mut silent = std::net::TcpStream::connect(("127.0.0.1", t.port)).expect("connect");
    let mut kept = std::net::TcpStream::connect(("127.0.0.1", t.port)).expect("connect");
    use std::io::{Read, Write};
    kept.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut buf = [0u8; 512];
    let n = kept.read(&mut buf).expect("read reply");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let start = std::time::Instant::now();
    t.signal(Signal::SIGUSR2);
    all_new(&t, &old, 1, "SIGUSR2 with idle connections");
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(12),
        "drain took {took:?} with a 2 s deadline"
    );
    assert!(
        reads_eof(&mut kept, Duration::from_secs(5)),
        "idle keep-alive connection not closed"
    );
    assert!(
        reads_eof(&mut silent, Duration::from_secs(5)),
        "silent connection not closed"
    );
}
