//! The test harness: starts the real `bkjs` binary in a temporary home on a free 127.0.0.1 port,
//! speaks HTTP to it, finds the processes of its tree through /proc, and kills the whole tree
//! (by pid, never by name) when the test ends, even when it fails.

#![allow(dead_code)]

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_bkjs");
pub const BKSH: &str = env!("CARGO_BIN_EXE_bksh");

/// Parameters that make supervision fast enough for tests.
pub const FAST: &[&str] = &[
    "-bind",
    "127.0.0.1",
    "-server-web-workers",
    "2",
    "-api-allow-path",
    "^/ping$",
    "-server-restart-delay",
    "100ms",
    "-server-restart-max-delay",
    "1s",
    "-server-restart-reset",
    "5s",
    "-server-crash-delay",
    "3s",
    "-server-heartbeat-interval",
    "200ms",
    "-server-worker-timeout",
    "3s",
    "-server-drain-timeout",
    "5s",
    "-server-bind-retry",
    "3s",
    "-watch-interval",
    "200ms",
];

/// Polls `cond` until it holds or `limit` passes; returns whether it held.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; the kernel does not hand it out again soon).
/// Ports are picked below the kernel's ephemeral range (32768-60999 by default): a port handed
/// out by `bind(0)` and released could be taken at once by any outgoing connection's local end
/// before the server under test binds it. Each test process starts at its own offset, and a
/// port is only handed out once per process.
pub fn free_port() -> u16 {
    free_ports(1)
}

/// `n` consecutive free ports (proxy mode, several nodes); the first is returned.
pub fn free_ports(n: u16) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 10_000;
    const SPAN: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    let free = |port: u16| {
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
    };
    for _ in 0..SPAN {
        let base = NEXT.fetch_add(u32::from(n), Ordering::SeqCst) % SPAN;
        if base + u32::from(n) > SPAN {
            continue;
        }
        let base = (LOW + base) as u16;
        if (0..n).all(|i| free(base + i)) {
            return base;
        }
    }
    panic!(
        "no {n} consecutive free ports between {LOW} and {}",
        LOW + SPAN
    );
}

/// The argv of a process, from /proc.
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// `/proc/PID/stat` fields after the command: (state, ppid).
pub fn stat(pid: u32) -> Option<(char, u32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let mut it = rest.split_whitespace();
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    Some((state, ppid))
}

pub fn alive(pid: u32) -> bool {
    matches!(stat(pid), Some((s, _)) if s != 'Z')
}

/// Every descendant of `pid`.
pub fn descendants(pid: u32) -> Vec<u32> {
    let all: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .expect("read /proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| stat(p).map(|(_, pp)| (p, pp)))
        .collect();
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (p, pp) in &all {
            if *pp == parent && !out.contains(p) {
                out.push(*p);
                frontier.push(*p);
            }
        }
    }
    out
}

/// An HTTP reply: status and body; status 0 for a transport error (the message is the body).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .build()
}

pub fn http_get(agent: &ureq::Agent, url: &str) -> Reply {
    match agent.get(url).call() {
        Ok(r) => Reply {
            status: r.status(),
            body: r.into_string().unwrap_or_default(),
        },
        Err(ureq::Error::Status(code, r)) => Reply {
            status: code,
            body: r.into_string().unwrap_or_default(),
        },
        Err(e) => Reply {
            status: 0,
            body: e.to_string(),
        },
    }
}

/// One running bkjs tree in its own temporary home.
pub struct Tree {
    pub home: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    pub pid: u32,
    log: PathBuf,
}

/// Builds the command for `bkjs ARGS` in `home`, output to `home/out.log`.
pub fn command(home: &Path, args: &[String]) -> (Command, PathBuf) {
    command_of(Path::new(BIN), home, args)
}

/// [`command`] for another program built on bkjs (an application made by `init-app`).
pub fn command_of(program: &Path, home: &Path, args: &[String]) -> (Command, PathBuf) {
    let log = home.join("out.log");
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .expect("open log");
    let err = out.try_clone().expect("clone log");
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .env_remove("BKJS_HOME")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .process_group(0);
    // If the test process dies without running Drop (killed by a timeout), the tree stops too.
    // SAFETY: prctl is async-signal-safe and touches no memory.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    (cmd, log)
}

impl Tree {
    /// `bkjs COMMAND -home TMP -port FREE FAST... EXTRA...`; does not wait for readiness.
    pub fn start(command_name: &str, extra: &[&str]) -> Tree {
        Tree::start_with(command_name, extra, |_| {})
    }

    /// Like [`Tree::start`], letting the caller adjust the home or the command first.
    pub fn start_with(
        command_name: &str,
        extra: &[&str],
        setup: impl FnOnce(&mut Command),
    ) -> Tree {
        let home = tempfile::Builder::new()
            .prefix("bkjs-t")
            .tempdir()
            .expect("temp home");
        let port = free_port();
        Tree::spawn_in(home, port, command_name, extra, setup)
    }

    /// `bkjs COMMAND -home TMP -port FREE -bind 127.0.0.1 EXTRA...` without [`FAST`]: the
    /// defaults a new user gets (`/ping` closed, two web workers, normal restart delays).
    /// Does not wait for readiness; see [`Tree::ready_at`].
    pub fn start_plain(command_name: &str, extra: &[&str]) -> Tree {
        let home = tempfile::Builder::new()
            .prefix("bkjs-t")
            .tempdir()
            .expect("temp home");
        let port = free_port();
        let mut args: Vec<String> = vec![command_name.to_string()];
        args.extend(["-home".to_string(), home.path().display().to_string()]);
        args.extend(["-port".to_string(), port.to_string()]);
        args.extend(["-bind".to_string(), "127.0.0.1".to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let (mut cmd, log) = command(home.path(), &args);
        let child = cmd.spawn().expect("spawn bkjs");
        let pid = child.id();
        Tree {
            home,
            port,
            child: Some(child),
            pid,
            log,
        }
    }

    pub fn spawn_in(
        home: tempfile::TempDir,
        port: u16,
        command_name: &str,
        extra: &[&str],
        setup: impl FnOnce(&mut Command),
    ) -> Tree {
        let mut args: Vec<String> = vec![command_name.to_string()];
        args.extend(["-home".to_string(), home.path().display().to_string()]);
        args.extend(["-port".to_string(), port.to_string()]);
        args.extend(FAST.iter().map(|s| s.to_string()));
        args.extend(extra.iter().map(|s| s.to_string()));
        let (mut cmd, log) = command(home.path(), &args);
        setup(&mut cmd);
        let child = cmd.spawn().expect("spawn bkjs");
        let pid = child.id();
        Tree {
            home,
            port,
            child: Some(child),
            pid,
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn get(&self, path: &str) -> Reply {
        http_get(&agent(), &self.url(path))
    }

    /// Waits until `/ping` answers 200 and `n` web workers run; panics with the log otherwise.
    pub fn ready(&self, n: usize) {
        let ok = wait_for(Duration::from_secs(30), || {
            self.pids("web").len() == n && self.get("/ping").status == 200
        });
        assert!(
            ok,
            "tree not ready with {n} web workers: {:?}\nlog:\n{}",
            self.titles(),
            self.log()
        );
    }

    /// Waits until GET `path` answers 200; panics with the log otherwise.
    pub fn ready_at(&self, path: &str) {
        let ok = wait_for(Duration::from_secs(30), || self.get(path).status == 200);
        assert!(ok, "{path} never answered 200\nlog:\n{}", self.log());
    }

    /// Pids of the tree whose title is `bkjs: ROLE` (argv[0]).
    pub fn pids(&self, role: &str) -> Vec<u32> {
        let title = format!("bkjs: {role}");
        let mut all = vec![self.pid];
        all.extend(descendants(self.pid));
        all.into_iter()
            .filter(|p| alive(*p) && cmdline(*p).first() == Some(&title))
            .collect()
    }

    /// The top pid plus every live descendant.
    pub fn all_pids(&self) -> Vec<u32> {
        let mut all = vec![self.pid];
        all.extend(descendants(self.pid));
        all.into_iter().filter(|p| alive(*p)).collect()
    }

    pub fn titles(&self) -> Vec<String> {
        self.all_pids()
            .into_iter()
            .filter_map(|p| cmdline(p).first().cloned())
            .collect()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, limit: Duration) -> bool {
        wait_for(limit, || self.log().contains(needle))
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid as i32), sig).expect("signal top");
    }

    /// Waits for the top process to exit; returns its exit code (None when killed by a signal or
    /// still running at `limit`).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<Option<i32>> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status.code());
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Zombie processes whose parent belongs to this tree.
    pub fn zombies(&self) -> Vec<u32> {
        let tree = self.all_pids();
        std::fs::read_dir("/proc")
            .expect("read /proc")
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|p| matches!(stat(*p), Some(('Z', pp)) if tree.contains(&pp)))
            .collect()
    }
}

impl Tree {
    /// Kills the whole tree with SIGKILL (no graceful anything) and hands back its home.
    pub fn kill9(mut self) -> tempfile::TempDir {
        self.kill_all();
        let home = tempfile::Builder::new()
            .prefix("bkjs-t")
            .tempdir()
            .expect("placeholder");
        std::mem::replace(&mut self.home, home)
    }

    fn kill_all(&mut self) {
        let mut pids = descendants(self.pid);
        pids.push(self.pid);
        for p in &pids {
            let _ = killpg(Pid::from_raw(*p as i32), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(*p as i32), Signal::SIGKILL);
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        wait_for(Duration::from_secs(5), || pids.iter().all(|p| !alive(*p)));
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        self.kill_all();
        if std::thread::panicking() {
            eprintln!(
                "---- bkjs log ({}) ----\n{}",
                self.log.display(),
                self.log()
            );
        }
    }
}

/// Reads whatever a socket sends until EOF or `limit`; returns whether EOF came.
pub fn reads_eof(stream: &mut std::net::TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).expect("timeout");
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Whether a service the test needs listens on 127.0.0.1 (see `bkjs::testing`).
pub use bkjs::testing::service_up;

/// A name no other test (of this run or a parallel one) uses: prefix, process id and a counter.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Runs `bksh ARGS` as a script (`bksh < input`, no terminal) and returns what it printed.
pub fn bksh_script(args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(BKSH)
        .args(args)
        .env_remove("BKJS_HOME")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("bksh");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    child.wait_with_output().expect("bksh output")
}
