//! Starting and stopping in every command mode: titles, worker count, pid file, SIGTERM, daemon,
//! systemd notify and socket activation, privilege drop, proxy mode, run-backend's file watch.

use crate::harness::*;
use nix::sys::signal::Signal;
use std::time::Duration;

/// Every process of the tree is gone within the stop deadline, the pid file too.
fn stop_tree(t: &mut Tree) {
    let pids = t.all_pids();
    assert!(pids.len() >= 4, "tree too small: {:?}", t.titles());
    t.signal(Signal::SIGTERM);
    let code = t.wait_exit(Duration::from_secs(20));
    assert_eq!(
        code,
        Some(Some(0)),
        "top process did not exit cleanly\n{}",
        t.log()
    );
    assert!(
        wait_for(Duration::from_secs(5), || pids.iter().all(|p| !alive(*p))),
        "processes survived SIGTERM: {:?}",
        pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
    );
    assert!(
        !t.home.path().join("var/bkjs.pid").exists(),
        "pid file left behind"
    );
}

fn check_titles(t: &Tree, top: &str) {
    let top_title = cmdline(t.pid);
    assert_eq!(
        top_title.first().map(String::as_str),
        Some(top),
        "top title"
    );
    for role in ["master", "server", "web"] {
        for pid in t.pids(role) {
            // A process names itself right after it starts: give a just-started one that moment.
            let comm = || std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let want = format!("bkjs: {role}");
            wait_for(Duration::from_secs(5), || comm().trim() == want);
            assert_eq!(comm().trim(), want, "comm of {role} pid {pid}");
        }
    }
    assert_eq!(t.pids("master").len(), 1, "{:?}", t.titles());
    assert_eq!(t.pids("server").len(), 1, "{:?}", t.titles());
    assert_eq!(t.pids("web").len(), 2, "{:?}", t.titles());
}

#[test]
fn run_starts_master_server_and_workers_and_stops_on_sigterm() {
    let mut t = Tree::start("run", &[]);
    t.ready(2);
    check_titles(&t, "bkjs: master");
    let pid_file = std::fs::read_to_string(t.home.path().join("var/bkjs.pid")).expect("pid file");
    assert_eq!(pid_file.trim(), t.pid.to_string());
    // Every child runs in its own process group.
    for pid in t.all_pids() {
        assert_eq!(
            nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid as i32)))
                .map(|p| p.as_raw() as u32)
                .ok(),
            Some(pid)
        );
    }
    let r = t.get("/ping");
    assert_eq!((r.status, r.body.as_str()), (200, "{}"));
    let r = t.get("/account/get");
    assert_eq!(r.status, 401, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("json error body");
    assert_eq!(v["status"], 401);
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    stop_tree(&mut t);
}

#[test]
fn run_server_has_a_monitor_and_stops_on_sigint() {
    let mut t = Tree::start("run-server", &["-syslog", "0"]);
    t.ready(2);
    check_titles(&t, "bkjs: monitor");
    let pids = t.all_pids();
    t.signal(Signal::SIGINT);
    assert_eq!(
        t.wait_exit(Duration::from_secs(20)),
        Some(Some(0)),
        "{}",
        t.log()
    );
    assert!(wait_for(Duration::from_secs(5), || pids
        .iter()
        .all(|p| !alive(*p))));
}

#[test]
fn run_backend_restarts_children_when_etc_changes() {
    let mut t = Tree::start("run-backend", &[]);
    t.ready(2);
    check_titles(&t, "bkjs: monitor");
    assert!(t.log().contains("DEBUG"), "run-backend logs at debug level");
    let master = t.pids("master");
    std::fs::write(
        t.home.path().join("etc/config"),
        "api-allow-path=^/other$\n",
    )
    .expect("write config");
    assert!(
        wait_for(Duration::from_secs(20), || {
            let m = t.pids("master");
            m.len() == 1 && m != master && t.pids("web").len() == 2
        }),
        "master not restarted after etc/config changed: {:?}\n{}",
        t.titles(),
        t.log()
    );
    t.ready(2);
    stop_tree(&mut t);
}

#[test]
fn daemon_detaches_and_stop_uses_the_pid_file() {
    let home = tempfile::Builder::new()
        .prefix("bkjs-t")
        .tempdir()
        .expect("home");
    let port = free_port();
    let h = home.path().display().to_string();
    let p = port.to_string();
    let mut args: Vec<&str> = vec![
        "run-server",
        "-daemon",
        "-home",
        &h,
        "-port",
        &p,
        "-syslog",
        "0",
    ];
    args.extend(FAST);
    let out = std::process::Command::new(BIN)
        .args(&args)
        .output()
        .expect("run daemon");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid_path = home.path().join("var/bkjs.pid");
    assert!(
        wait_for(Duration::from_secs(10), || pid_path.exists()),
        "no pid file"
    );
    let pid: u32 = std::fs::read_to_string(&pid_path)
        .expect("pid")
        .trim()
        .parse()
        .expect("pid number");
    // Make sure the tree is killed if the test fails from here on.
    struct Guard(u32);
    impl Drop for Guard {
        fn drop(&mut self) {
            for p in descendants(self.0).into_iter().chain([self.0]) {
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(p as i32), Signal::SIGKILL);
            }
        }
    }
    let _guard = Guard(pid);
    assert_eq!(
        cmdline(pid).first().map(String::as_str),
        Some("bkjs: monitor")
    );
    // Detached: a new session, not our child.
    let sid = nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(pid as i32))).expect("sid");
    assert_eq!(sid.as_raw() as u32, pid, "daemon leads its own session");
    let url = format!("http://127.0.0.1:{port}/ping");
    assert!(
        wait_for(Duration::from_secs(20), || http_get(&agent(), &url).status
            == 200),
        "daemon not serving"
    );
    let log = home.path().join("log/error.log");
    assert!(
        wait_for(Duration::from_secs(10), || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("ready")),
        "log/error.log has the daemon's output"
    );
    let tree = descendants(pid);
    let out = std::process::Command::new(BIN)
        .args(["stop", "-home", &h])
        .output()
        .expect("stop");
    assert!(
        out.status.success(),
        "stop: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!alive(pid));
    assert!(
        wait_for(Duration::from_secs(5), || tree.iter().all(|p| !alive(*p))),
        "tree survived stop"
    );
    assert!(!pid_path.exists());
    // A second stop says it is not running.
    let out = std::process::Command::new(BIN)
        .args(["stop", "-home", &h])
        .output()
        .expect("stop");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not running"));
}

#[test]
fn systemd_notify_ready_and_watchdog() {
    let dir = tempfile::tempdir().expect("dir");
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let sp = sock_path.clone();
    let t = Tree::start_with("run-server", &["-syslog", "0"], move |cmd| {
        cmd.env("NOTIFY_SOCKET", &sp).env("WATCHDOG_USEC", "400000");
    });
    let mut got = String::new();
    let ok = wait_for(Duration::from_secs(20), || {
        let mut buf = [0u8; 512];
        if let Ok(n) = sock.recv(&mut buf) {
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
            got.push('\n');
        }
        got.contains("READY=1") && got.contains("WATCHDOG=1")
    });
    assert!(ok, "notifications received: {got:?}\n{}", t.log());
    assert!(got.contains("STATUS="), "{got}");
    assert_eq!(t.get("/ping").status, 200);
}

#[test]
fn systemd_watchdog_pings_at_half_the_interval() {
    // WATCHDOG_USEC = 2 s: one WATCHDOG=1 per second (sd_watchdog_enabled(3) asks for half).
    let dir = tempfile::tempdir().expect("dir");
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let sp = sock_path.clone();
    let started = std::time::Instant::now();
    let t = Tree::start_with("run-server", &["-syslog", "0"], move |cmd| {
        cmd.env("NOTIFY_SOCKET", &sp)
            .env("WATCHDOG_USEC", "2000000");
    });
    let mut pings = 0u32;
    let mut others = Vec::new();
    // Full-interval pings (every 2 s) could not make 4 by 7 s; half-interval ones make 4 by 4 s.
    let ok = wait_for(Duration::from_secs(7), || {
        let mut buf = [0u8; 512];
        while let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).trim().to_string();
            if msg == "WATCHDOG=1" {
                pings += 1;
            } else {
                others.push(msg);
            }
        }
        pings >= 4
    });
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        ok,
        "{pings} WATCHDOG=1 in {elapsed:.1} s; other messages {others:?}\n{}",
        t.log()
    );
    // Never more often than every second: at most one per whole second since the start.
    assert!(
        f64::from(pings) <= elapsed.floor(),
        "{pings} pings in {elapsed:.1} s"
    );
    assert!(
        others.iter().any(|m| m.contains("READY=1")),
        "the server's READY=1 reached the same socket: {others:?}"
    );
    assert_eq!(t.get("/ping").status, 200);
}

#[test]
fn socket_activation_uses_the_passed_socket() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let fd = listener.as_raw_fd();
    // -port points elsewhere: only the inherited socket can make /ping answer on `port`.
    let t = Tree::start_with("run", &[], move |cmd| {
        let original: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let home = original
            .iter()
            .skip_while(|a| *a != "-home")
            .nth(1)
            .map(std::path::PathBuf::from)
            .expect("-home");
        let mut sh = std::process::Command::new("/bin/sh");
        sh.arg("-c")
            .arg(format!("LISTEN_PID=$$ LISTEN_FDS=1 exec {BIN} \"$@\""))
            .arg("sh")
            .args(original);
        let out = std::fs::OpenOptions::new()
            .append(true)
            .open(home.join("out.log"))
            .expect("log");
        sh.stdout(out.try_clone().expect("clone"))
            .stderr(out)
            .process_group(0);
        // SAFETY: dup2 is async-signal-safe; fd stays open in the parent until spawn returns.
        unsafe {
            sh.pre_exec(move || {
                // dup2 onto itself would keep close-on-exec: clear it instead.
                let r = if fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, 3)
                };
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        *cmd = sh;
    });
    let url = format!("http://127.0.0.1:{port}/ping");
    assert!(
        wait_for(Duration::from_secs(20), || http_get(&agent(), &url).status
            == 200),
        "no answer on the activated socket\n{}",
        t.log()
    );
    assert_eq!(t.get("/ping").status, 0, "nothing listens on -port");
    drop(listener);
}

#[test]
fn web_workers_drop_privileges_after_bind() {
    if !nix::unistd::Uid::effective().is_root() {
        bkjs::testing::required("dropping privileges needs root");
        return;
    }
    // Workers running as nobody must be able to reach the home to connect to the server's socket.
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::Builder::new()
        .prefix("bkjs-t")
        .tempdir()
        .expect("home");
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod home");
    let t = Tree::spawn_in(
        home,
        free_port(),
        "run",
        &[
            "-uid",
            "nobody",
            "-gid",
            "nogroup",
            "-api-allow-path",
            "^/data/",
        ],
        |_| {},
    );
    t.ready(2);
    let uid_of = |pid: u32| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .unwrap_or_default()
            .to_string()
    };
    for pid in t.pids("web") {
        // A worker drops privileges right after it starts; give it that moment.
        let ok = wait_for(Duration::from_secs(5), || {
            uid_of(pid).split_whitespace().skip(1).all(|u| u == "65534")
        });
        assert!(ok, "web pid {pid}: {}", uid_of(pid));
    }
    // The workers can still write the embedded database the server created.
    let put = t.get("/data/put/bk_property?name=x&value=1");
    assert_eq!(put.status, 200, "{put:?}\n{}", t.log());
    assert!(t
        .get("/data/get/bk_property?name=x")
        .body
        .contains("\"value\":\"1\""));
    assert!(
        !t.log().contains("sent no heartbeat"),
        "workers reach the server after dropping privileges\n{}",
        t.log()
    );
    for pid in t.pids("server") {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let uid = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .expect("Uid line");
        assert!(
            uid.split_whitespace().nth(1) == Some("0"),
            "server keeps root: {uid}"
        );
    }
}

#[test]
fn proxy_mode_forwards_to_workers() {
    let base = free_ports(4);
    let b = base.to_string();
    let t = Tree::start("run", &["-proxy-port", &b]);
    t.ready(2);
    for _ in 0..20 {
        let r = t.get("/ping");
        assert_eq!((r.status, r.body.as_str()), (200, "{}"));
    }
    assert_eq!(t.get("/nope").status, 401);
    // The workers listen on the proxy ports themselves.
    let direct = http_get(&agent(), &format!("http://127.0.0.1:{base}/ping"));
    let direct2 = http_get(&agent(), &format!("http://127.0.0.1:{}/ping", base + 1));
    assert!(
        direct.status == 200 || direct2.status == 200,
        "{direct:?} {direct2:?}"
    );
}
