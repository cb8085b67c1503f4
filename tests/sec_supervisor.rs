//! Supervisor faults (issue 17, items 6 and 17): a master killed with a request in flight leaves
//! HTTP down for less than 2 s, its orphaned server drains and exits without touching its
//! successor's sockets (workers stay up, signed requests stay fast); the unix sockets are 0600 in a
//! 0700 directory; a web worker inherits no descriptor but its listening socket; and each worker
//! slot restarts on its own backoff.

use crate::api::{add_account, host, py_sign, send, Call};
use crate::harness::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::time::{Duration, Instant};

fn kill9(pid: u32) {
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill -9");
}

/// `(fd, link)` of every open descriptor of `pid`.
fn fds(pid: u32) -> Vec<(i32, String)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            let link = std::fs::read_link(e.path()).ok()?;
            Some((fd, link.display().to_string()))
        })
        .collect()
}

/// Socket inodes of `/proc/net/tcp` entries with local port `port`, in state `state` (hex: 0A
/// listening, 01 established), optionally with remote port `remote`.
fn tcp_inodes(port: u16, state: &str, remote: Option<u16>) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port_of = |a: &str| {
        a.rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let ok = f.len() > 9
                && port_of(f[1]) == Some(port)
                && f[3] == state
                && remote.is_none_or(|r| port_of(f[2]) == Some(r));
            ok.then(|| format!("socket:[{}]", f[9]))
        })
        .collect()
}

/// Whether `a`'s descriptor `fa` and `b`'s `fb` are the same open file (kcmp(2)); `None` when the
/// kernel does not say.
fn same_file(a: u32, fa: i32, b: u32, fb: i32) -> Option<bool> {
    const KCMP_FILE: libc::c_long = 0;
    // SAFETY: kcmp takes plain integers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            a as libc::c_long,
            b as libc::c_long,
            KCMP_FILE,
            fa as libc::c_long,
            fb as libc::c_long,
        )
    };
    (r >= 0).then_some(r == 0)
}

/// Descriptors `child` shares with `parent` (the same open file), other than stdio and `allowed`.
fn inherited(parent: u32, child: u32, allowed: &[String]) -> Vec<String> {
    let theirs = fds(parent);
    fds(child)
        .into_iter()
        .filter(|(fd, link)| *fd > 2 && !allowed.contains(link))
        .filter(|(fd, link)| {
            theirs.iter().any(|(pfd, plink)| {
                same_file(parent, *pfd, child, *fd).unwrap_or_else(|| {
                    // Without kcmp: sockets and pipes are identified by their inode.
                    (link.starts_with("socket:") || link.starts_with("pipe:")) && plink == link
                })
            })
        })
        .map(|(fd, link)| format!("{fd} -> {link}"))
        .collect()
}

#[test]
fn master_killed_mid_request_http_is_back_within_two_seconds() {
    // The cache peer bus and the forwarder listen on TCP too: the successor must get those ports.
    let base = free_ports(3);
    let (cache_port, msg_port) = (base.to_string(), (base + 1).to_string());
    let cache_host = format!("127.0.0.1:{base}");
    let msg_host = format!("127.0.0.1:{}", base + 1);
    let t = Tree::start_with(
        "run-server",
        &[
            "-syslog",
            "0",
            "-api-allow-path",
            "^/_test/",
            "-cache-port",
            &cache_port,
            "-cache-bind",
            "127.0.0.1",
            "-cache-host",
            &cache_host,
            "-msg-port",
            &msg_port,
            "-msg-bind",
            "127.0.0.1",
            "-msg-host",
            &msg_host,
            "-cluster-secret",
            "supervisor-test-cluster-secret",
        ],
        |cmd| {
            cmd.env("BKJS_TEST_FAULTS", "1");
        },
    );
    t.ready(2);
    add_account(&t, "sup", "sup-secret", "Sup");
    let master = t.pids("master")[0];
    let server = t.pids("server")[0];
    let webs = t.pids("web");
    // A request that is still running when the master dies (longer than -server-bind-retry, so
    // a successor that had to wait for the port would give up).
    let mut inflight = std::net::TcpStream::connect(("127.0.0.1", t.port)).expect("connect");
    let local = inflight.local_addr().expect("addr").port();
    inflight
        .write_all(b"GET /_test/block?ms=4000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("send");
    let accepted = wait_for(Duration::from_secs(10), || {
        let conn = tcp_inodes(t.port, "01", Some(local));
        webs.iter()
            .any(|w| fds(*w).iter().any(|(_, l)| conn.contains(l)))
    });
    assert!(accepted, "no web worker took the request\n{}", t.log());
    // Short per-request timeouts: a connection that lands in a queue nobody serves is retried.
    let quick = ureq::AgentBuilder::new()
        .timeout(Duration::from_millis(700))
        .build();
    kill9(master);
    let killed = Instant::now();
    let back = wait_for(Duration::from_secs(20), || {
        t.pids("server").iter().any(|p| *p != server)
            && http_get(&quick, &t.url("/ping")).status == 200
    });
    let down = killed.elapsed();
    eprintln!("HTTP back {down:?} after kill -9 of the master");
    assert!(back, "HTTP not back after the master died\n{}", t.log());
    assert!(
        down < Duration::from_secs(2),
        "HTTP was down {down:?} after kill -9 of the master\n{}",
        t.log()
    );
    // The orphaned worker finished the request it had.
    let mut answer = String::new();
    inflight
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let _ = inflight.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "in-flight request: {answer:?}\n{}",
        t.log()
    );
    // The orphan noticed, drained and exited; nothing of the old server is left.
    let gone = wait_for(Duration::from_secs(15), || {
        !alive(server) && webs.iter().all(|w| !alive(*w))
    });
    assert!(
        gone,
        "orphaned server {server} or its workers {webs:?} still run\n{}",
        t.log()
    );
    assert!(
        t.log()
            .contains(&format!("the master (pid {master}) is gone")),
        "{}",
        t.log()
    );
    // The successor listens on the peer bus and forwarder ports the orphan held.
    let successor = t.pids("server");
    for port in [base, base + 1, base + 2] {
        let listening = tcp_inodes(port, "0A", None);
        let held = successor
            .iter()
            .any(|s| fds(*s).iter().any(|(_, l)| listening.contains(l)));
        assert!(
            held,
            "port {port} not taken over by {successor:?}\n{}",
            t.log()
        );
    }
    // It left its successor's sockets alone: the new workers keep their heartbeats (3 s timeout)
    // and nothing is killed or restarted for a few timeouts' worth.
    for name in [
        "bkjs-server.sock",
        "bkjs-msg.sock",
        "bkjs-msg-sub.sock",
        "bkjs-jobs.sock",
    ] {
        let path = t.home.path().join("var/ipc").join(name);
        assert!(
            path.exists(),
            "the successor's {name} was removed\n{}",
            t.log()
        );
    }
    t.ready(2);
    let stable = t.pids("web");
    let restarted = wait_for(Duration::from_secs(5), || {
        t.pids("web") != stable || t.log().contains("sent no heartbeat")
    });
    assert!(
        !restarted,
        "workers killed after recovery: {stable:?} -> {:?}\n{}",
        t.pids("web"),
        t.log()
    );
    // Signed requests (account lookup through the cache over IPC) answer at once.
    let call = Call::get(3, "sup", "sup-secret", "/account/get");
    for _ in 0..3 {
        let sig = py_sign(&call, &host(&t));
        let started = Instant::now();
        let (status, body, _) = send(&t, "GET", call.target, &[("bk-signature", &sig)], None, b"");
        let took = started.elapsed();
        assert_eq!(status, 200, "{body}");
        assert!(
            took < Duration::from_secs(1),
            "signed request took {took:?}"
        );
    }
}

#[test]
fn unix_sockets_are_0600_in_a_0700_directory() {
    let t = Tree::start("run", &[]);
    t.ready(2);
    let dir = t.home.path().join("var/ipc");
    let mode = |p: &std::path::Path| std::fs::metadata(p).expect("stat").mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    let mut sockets = Vec::new();
    for e in std::fs::read_dir(&dir).expect("ls var/ipc").flatten() {
        let meta = e.metadata().expect("stat");
        if meta.file_type().is_socket() {
            assert_eq!(
                meta.mode() & 0o777,
                0o600,
                "{} is {:o}",
                e.path().display(),
                meta.mode() & 0o777
            );
            sockets.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    sockets.sort();
    for name in [
        "bkjs-jobs.sock",
        "bkjs-msg-sub.sock",
        "bkjs-msg.sock",
        "bkjs-server.sock",
    ] {
        assert!(
            sockets.iter().any(|s| s == name),
            "{name} missing: {sockets:?}"
        );
    }
    // No socket is left directly in var/ any more, where its mode followed the umask.
    let stray: Vec<_> = std::fs::read_dir(t.home.path().join("var"))
        .expect("ls var")
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|f| f.is_socket()))
        .map(|e| e.path())
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

#[test]
fn spawned_roles_inherit_only_the_listening_socket() {
    let t = Tree::start_with("run-server", &["-syslog", "0"], |cmd| {
        cmd.env("BKJS_TEST_FAULTS", "1");
    });
    t.ready(2);
    let listening = tcp_inodes(t.port, "0A", None);
    assert_eq!(listening.len(), 1, "one listening socket: {listening:?}");
    let server = t.pids("server")[0];
    let master = t.pids("master")[0];
    // The server opened var/fd-probe without O_CLOEXEC (test fault): it must hold it, and no
    // worker may.
    let probe = t.home.path().join("var/fd-probe").display().to_string();
    assert!(
        fds(server).iter().any(|(_, l)| *l == probe),
        "the probe is open in the server: {:?}",
        fds(server)
    );
    for web in t.pids("web") {
        let links = fds(web);
        assert!(
            !links.iter().any(|(_, l)| *l == probe),
            "web {web} inherited the server's probe: {links:?}"
        );
        let leaked = inherited(server, web, &listening);
        assert!(
            leaked.is_empty(),
            "web {web} shares with the server: {leaked:?}"
        );
        let leaked = inherited(master, web, &listening);
        assert!(
            leaked.is_empty(),
            "web {web} shares with the master: {leaked:?}"
        );
        // Its one listening socket is the tree's HTTP socket.
        let tcp_listen: Vec<_> = links
            .iter()
            .filter(|(_, l)| l.starts_with("socket:"))
            .filter(|(_, l)| {
                std::fs::read_to_string("/proc/net/tcp")
                    .unwrap_or_default()
                    .lines()
                    .any(|row| {
                        let f: Vec<&str> = row.split_whitespace().collect();
                        f.len() > 9 && f[3] == "0A" && l == &format!("socket:[{}]", f[9])
                    })
            })
            .collect();
        assert_eq!(
            tcp_listen
                .iter()
                .map(|(_, l)| l.clone())
                .collect::<Vec<_>>(),
            listening,
            "web {web} listens on: {tcp_listen:?}"
        );
    }
    let leaked = inherited(master, server, &listening);
    assert!(
        leaked.is_empty(),
        "the server shares with the master: {leaked:?}"
    );
}

#[test]
fn each_worker_slot_restarts_on_its_own_backoff() {
    let t = Tree::start(
        "run",
        &[
            "-server-restart-delay",
            "200ms",
            "-server-restart-max-delay",
            "3s",
            "-server-restart-reset",
            "60s",
        ],
    );
    t.ready(2);
    let webs = t.pids("web");
    let (mut a, b) = (webs[0], webs[1]);
    // Worker A crashes again and again: its slot's delay grows (0.2, 0.4, 0.8, 1.6 s at most).
    for round in 0..4 {
        kill9(a);
        let mut next = None;
        let replaced = wait_for(Duration::from_secs(15), || {
            next = t.pids("web").into_iter().find(|p| *p != a && *p != b);
            next.is_some()
        });
        assert!(replaced, "A not replaced at round {round}\n{}", t.log());
        a = next.expect("replacement");
    }
    assert!(alive(b) && t.pids("web").contains(&b), "B kept its pid");
    // B's first crash restarts it at the base delay, whatever A went through.
    kill9(b);
    let needle = format!("web pid {b} (slot");
    assert!(t.wait_log(&needle, Duration::from_secs(10)), "{}", t.log());
    let log = t.log();
    let line = log
        .lines()
        .find(|l| l.contains(&needle))
        .expect("B's exit line");
    let delay: f64 = line
        .split("replacing in ")
        .nth(1)
        .and_then(|s| s.trim().trim_end_matches('s').parse().ok())
        .unwrap_or_else(|| panic!("no delay in {line}"));
    assert!(
        delay <= 0.2,
        "B waited {delay}s, not its own base delay: {line}"
    );
    let a_delays: Vec<f64> = log
        .lines()
        .filter(|l| !l.contains(&needle))
        .filter_map(|l| l.split("replacing in ").nth(1))
        .filter_map(|s| s.trim().trim_end_matches('s').parse().ok())
        .collect();
    assert!(
        a_delays.iter().any(|d| *d > 0.4),
        "A's delays grew: {a_delays:?}"
    );
    t.ready(2);
}
