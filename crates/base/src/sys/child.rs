//! Starting, signalling and reaping child processes.

use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// How to start one child role.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// The executable: the path this process was started from.
    pub exe: PathBuf,
    /// `argv[0]`: the title `ps` shows (`bkjs: web`).
    pub title: String,
    /// Arguments after `argv[0]`: role flag and parameters.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Sockets the child inherits as fd 3, 4, ... (announced in `_BKJS_LISTEN_FDS`).
    pub fds: Vec<RawFd>,
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitInfo {
    Code(i32),
    Signal(i32),
}

impl ExitInfo {
    pub fn is_boot_failure(&self) -> bool {
        matches!(self, ExitInfo::Code(c) if *c == super::EXIT_BOOT || *c == crate::config::EXIT_USAGE)
    }
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitInfo::Code(c) => write!(f, "exit code {c}"),
            ExitInfo::Signal(s) => {
                let name = Signal::try_from(*s).map(|s| s.as_str()).unwrap_or("?");
                write!(f, "signal {s} ({name})")
            }
        }
    }
}

/// Starts a child in its own process group; it gets SIGTERM when this process dies.
pub fn spawn(spec: &ChildSpec) -> std::io::Result<u32> {
    let mut cmd = Command::new(&spec.exe);
    cmd.arg0(&spec.title)
        .args(&spec.args)
        .stdin(Stdio::null())
        .env_remove("_BKJS_TOP")
        .env_remove("_BKJS_LISTEN_FDS")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .process_group(0);
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    if !spec.fds.is_empty() {
        let list: Vec<String> = (0..spec.fds.len()).map(|i| (3 + i).to_string()).collect();
        cmd.env("_BKJS_LISTEN_FDS", list.join(","));
    }
    let fds = spec.fds.clone();
    let first_free = 3 + fds.len() as libc::c_uint;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe functions
    // (prctl, getppid, dup2, fcntl, close_range, getrlimit, _exit) on values prepared before the
    // fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            for (i, fd) in fds.iter().enumerate() {
                let target = 3 + i as RawFd;
                if *fd == target {
                    // dup2 onto itself keeps FD_CLOEXEC: clear it instead.
                    if libc::fcntl(target, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(*fd, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Descriptors that libraries opened without O_CLOEXEC (nng, SQLite, raw sockets)
            // must not leak into the new role: every one after the passed sockets is marked
            // close-on-exec (not closed: the standard library's exec-error pipe is among them).
            mark_cloexec_from(first_free);
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // The child is reaped by `reap` through waitpid(-1); the handle is not needed.
    Ok(child.id())
}

/// Marks every descriptor from `first` on close-on-exec: one `close_range(2)` call, or on a kernel
/// older than 5.11 one `fcntl` per possible descriptor. Async-signal-safe (runs between fork and
/// exec).
fn mark_cloexec_from(first: libc::c_uint) {
    // SAFETY: close_range, getrlimit and fcntl take plain integers and a local struct; they
    // touch no memory of this process beyond it.
    unsafe {
        if libc::close_range(
            first,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
        ) == 0
        {
            return;
        }
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur.min(1 << 20) as libc::c_int
        } else {
            1 << 16
        };
        for fd in first as libc::c_int..max {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
}

/// Reaps every child that has exited, without blocking.
pub fn reap() -> Vec<(u32, ExitInfo)> {
    let mut out = Vec::new();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => {
                out.push((pid.as_raw() as u32, ExitInfo::Code(code)))
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                out.push((pid.as_raw() as u32, ExitInfo::Signal(sig as i32)))
            }
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => continue,
        }
    }
    out
}

/// Sends `sig` to the process group led by `pid` (every child has its own), falling back to the
/// process itself.
pub fn kill_group(pid: u32, sig: Signal) {
    let p = Pid::from_raw(pid as i32);
    if killpg(p, sig).is_err() {
        let _ = kill(p, sig);
    }
}

/// Every descendant of `pid`, children before grandchildren, read from `/proc`.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(pp) = ppid(p) {
                parents.push((p, pp));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (p, pp) in &parents {
            if *pp == parent && !out.contains(p) {
                out.push(*p);
                frontier.push(*p);
            }
        }
    }
    out
}

/// The parent pid of a process from `/proc/PID/stat`.
pub fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Sends `sig` to `pid`'s group and to every descendant (used when a graceful stop ran out of time,
/// so that nothing of the subtree outlives it).
pub fn kill_tree(pid: u32, sig: Signal) {
    let below = descendants(pid);
    kill_group(pid, sig);
    for p in below {
        kill_group(p, sig);
    }
}
