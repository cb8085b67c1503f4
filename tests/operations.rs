//! Operations: log files reopened on SIGUSR1, `bkjs restart`, memory recycling, request limits and
//! timeouts, and run-backend re-executing itself when its binary changes.

use crate::harness::*;
use nix::sys::signal::Signal;
use std::io::{Read, Write};
use std::time::Duration;

#[test]
fn log_file_is_reopened_on_sigusr1() {
    let t = Tree::start("run", &["-log-file", "log/bkjs.log"]);
    t.ready(2);
    let log = t.home.path().join("log/bkjs.log");
    assert!(wait_for(Duration::from_secs(5), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("ready")
    }));
    let moved = t.home.path().join("log/bkjs.log.1");
    std::fs::rename(&log, &moved).expect("rotate");
    t.signal(Signal::SIGUSR1);
    assert!(
        wait_for(Duration::from_secs(10), || log.exists()),
        "log file not reopened"
    );
    // New lines go to the new file: a rolling restart logs from every level of the tree.
    t.signal(Signal::SIGUSR2);
    assert!(
        wait_for(Duration::from_secs(30), || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("rolling restart complete")),
        "new file: {:?}",
        std::fs::read_to_string(&log)
    );
    let web_lines = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        web_lines.contains("web["),
        "web workers write to the reopened file too: {web_lines}"
    );
}

#[test]
fn restart_command_rolls_the_workers() {
    let t = Tree::start("run-server", &["-syslog", "0"]);
    t.ready(2);
    let before = t.pids("web");
    let home = t.home.path().display().to_string();
    let out = std::process::Command::new(BIN)
        .args(["restart", "-web", "-home", &home])
        .output()
        .expect("restart");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        wait_for(Duration::from_secs(30), || {
            let now = t.pids("web");
            now.len() == 2 && now.iter().all(|p| !before.contains(p))
        }),
        "{}",
        t.log()
    );
    let masters = t.pids("master");
    let out = std::process::Command::new(BIN)
        .args(["restart", "-home", &home])
        .output()
        .expect("restart");
    assert!(out.status.success());
    assert!(
        t.wait_log("SIGHUP: configuration reloaded", Duration::from_secs(10)),
        "{}",
        t.log()
    );
    assert_eq!(
        t.pids("master"),
        masters,
        "a reload does not restart the master"
    );
}

#[test]
fn max_rss_recycles_workers() {
    // Every worker uses more than 1 MB, so each is recycled in turn, gracefully.
    let t = Tree::start("run", &["-server-max-rss", "1"]);
    assert!(
        t.wait_log("MB: recycling it", Duration::from_secs(30)),
        "{}",
        t.log()
    );
    assert!(
        t.wait_log("rolling restart complete", Duration::from_secs(30)),
        "{}",
        t.log()
    );
    assert!(wait_for(Duration::from_secs(10), || t.get("/ping").status == 200));
}

#[test]
fn oversize_body_is_refused_with_413() {
    let t = Tree::start("run", &["-api-upload-limit", "1K"]);
    t.ready(2);
    let big = "x".repeat(4096);
    let r = agent().post(&t.url("/ping")).send_string(&big);
    match r {
        Err(ureq::Error::Status(413, resp)) => {
            let v: serde_json::Value =
                serde_json::from_str(&resp.into_string().unwrap_or_default()).expect("json");
            assert_eq!(v["status"], 413);
            assert!(v["message"]
                .as_str()
                .unwrap_or_default()
                .contains("upload-limit"));
        }
        other => panic!("expected 413, got {other:?}"),
    }
    let ok = agent().post(&t.url("/ping")).send_string("small");
    assert_eq!(ok.map(|r| r.status()).ok(), Some(200));
}

#[test]
fn idle_and_slow_header_connections_are_closed_after_the_timeout() {
    let t = Tree::start("run", &["-timeout", "1s"]);
    t.ready(2);
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", t.port)).expect("connect");
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", t.port)).expect("connect");
    slow.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n")
        .expect("partial headers");
    let start = std::time::Instant::now();
    assert!(
        reads_eof(&mut idle, Duration::from_secs(10)),
        "idle connection kept open"
    );
    assert!(
        reads_eof(&mut slow, Duration::from_secs(10)),
        "slow headers kept open"
    );
    assert!(start.elapsed() < Duration::from_secs(8));
    let mut buf = [0u8; 16];
    let _ = idle.read(&mut buf);
}

#[test]
fn run_backend_reexecutes_itself_when_the_binary_changes() {
    let home = tempfile::Builder::new()
        .prefix("bkjs-t")
        .tempdir()
        .expect("home");
    let exe = home.path().join("bkjs-copy");
    std::fs::copy(BIN, &exe).expect("copy binary");
    let port = free_port();
    let exe2 = exe.clone();
    let t = Tree::spawn_in(home, port, "run-backend", &[], move |cmd| {
        let args: Vec<std::ffi::OsString> = cmd.get_args().map(|a| a.to_owned()).collect();
        let mut new = std::process::Command::new(&exe2);
        new.args(args);
        let home = new
            .get_args()
            .skip_while(|a| *a != "-home")
            .nth(1)
            .map(std::path::PathBuf::from)
            .expect("-home");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(home.join("out.log"))
            .expect("log");
        use std::os::unix::process::CommandExt;
        new.stdout(out.try_clone().expect("clone"))
            .stderr(out)
            .process_group(0);
        *cmd = new;
    });
    t.ready(2);
    let master = t.pids("master");
    // "Rebuild": replace the file with a new copy (new inode, new mtime).
    std::thread::sleep(Duration::from_millis(1100));
    let tmp = t.home.path().join("bkjs-copy.new");
    std::fs::copy(BIN, &tmp).expect("copy");
    std::fs::rename(&tmp, &exe).expect("replace binary");
    assert!(
        wait_for(Duration::from_secs(30), || {
            let m = t.pids("master");
            m.len() == 1 && m != master && t.get("/ping").status == 200
        }),
        "not restarted after the binary changed\n{}",
        t.log()
    );
    assert!(t.log().contains("executable changed"));
    assert_eq!(
        cmdline(t.pid).first().map(String::as_str),
        Some("bkjs: monitor"),
        "same pid, re-executed"
    );
}
