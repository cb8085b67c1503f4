//! Processes: the roles a bkjs binary can become and the supervisor machinery they share.
//!
//! Every role is the same executable started again with a role flag (`-master`, `-server`, `-web`),
//! never a `fork()` of a running, threaded process. Children run in their own process group, die
//! with their parent (`PR_SET_PDEATHSIG`), and are reaped by one loop per parent that reads a queue
//! of signals and IPC events, in the manner of gunicorn's arbiter. The role loops are in
//! `monitor.rs` (which also serves `master`), `server.rs` and `web.rs`; job workers are in
//! `bkjs_jobs`. `single.rs` runs the server's part, the master's jobs and one web worker's API in
//! one process (`bkjs run -single`).

#![deny(unsafe_op_in_unsafe_fn, rust_2018_idioms)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod backoff;
mod monitor;
pub mod proxy;
mod server;
mod single;
mod stats;
mod web;

pub(crate) use backoff::{Backoff, BackoffError};
pub use bkjs_base::sys::{
    descendants, drop_privileges, kill_group, kill_tree, reap, rss_bytes, spawn, target_ids,
    ChildSpec, ExitInfo, EXIT_BOOT,
};
pub use monitor::run_supervisor;
pub use server::run_server;
pub use single::run_single;
pub use web::run_web;

use bkjs_base::config::{Config, Kind, Param};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

const COUNT: Kind = Kind::Int { min: 0, max: 1024 };

/// Supervision parameters.
pub static PARAMS: &[Param] = &[
    Param::new(
        "server-web-workers",
        COUNT,
        "0",
        "number of web worker processes, 0 = number of CPUs",
    ),
    Param::new(
        "server-drain-timeout",
        Kind::Duration,
        "30s",
        "how long a draining worker may finish its requests before it is killed",
    ),
    Param::new(
        "server-worker-timeout",
        Kind::Duration,
        "30s",
        "a worker without heartbeat for this long is killed and replaced",
    ),
    Param::new(
        "server-heartbeat-interval",
        Kind::Duration,
        "1s",
        "how often workers report to the server",
    ),
    Param::new(
        "server-ready-timeout",
        Kind::Duration,
        "30s",
        "how long a replacement worker may take to become ready during a rolling restart",
    ),
    Param::new(
        "server-max-requests",
        Kind::Int {
            min: 0,
            max: i64::MAX,
        },
        "0",
        "recycle a worker after about this many requests (plus up to 10% jitter), 0 = never",
    ),
    Param::new(
        "server-max-rss",
        Kind::Int {
            min: 0,
            max: 1 << 20,
        },
        "0",
        "recycle a worker whose resident memory exceeds this many MB, 0 = never",
    ),
    Param::new(
        "server-crash-delay",
        Kind::Duration,
        "30s",
        "delay before restarting a child that failed at boot (bad config, port taken)",
    ),
    Param::new(
        "server-restart-delay",
        Kind::Duration,
        "1s",
        "first delay before restarting a crashed child; doubles per crash in a row",
    ),
    Param::new(
        "server-restart-max-delay",
        Kind::Duration,
        "30s",
        "cap of the restart delay",
    ),
    Param::new(
        "server-restart-reset",
        Kind::Duration,
        "60s",
        "a child up this long is healthy: its restart delay starts again from the first",
    ),
    Param::new(
        "server-bind-retry",
        Kind::Duration,
        "5s",
        "how long the server retries binding a port that is in use before it gives up",
    ),
];

/// What a process of the tree is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Monitor,
    Master,
    Server,
    Web,
    /// A job worker (started by the master for one job).
    Worker,
}

impl Role {
    /// The command-line flag that starts this role.
    pub fn flag(self) -> &'static str {
        match self {
            Role::Monitor => "monitor",
            Role::Master => "master",
            Role::Server => "server",
            Role::Web => "web",
            Role::Worker => "worker",
        }
    }

    /// `NAME: role`, shown by `ps` and in `/proc/PID/comm`; a master started with `-single`
    /// (the whole tree in one process) is `NAME: single`.
    pub fn title(self, cfg: &Config) -> String {
        format!("{}: {}", cfg.str("name"), self.label(cfg))
    }

    /// The role's name in titles and log lines: its flag, or `single` for a one-process master.
    pub fn label(self, cfg: &Config) -> &'static str {
        if self == Role::Master && cfg.args.has_role("single") {
            "single"
        } else {
            self.flag()
        }
    }
}

/// Sets the kernel's name of this process (`/proc/PID/comm`, 15 bytes at most).
pub fn set_comm(title: &str) {
    let mut bytes: Vec<u8> = title.bytes().filter(|b| *b != 0).take(15).collect();
    bytes.push(0);
    if let Ok(name) = std::ffi::CStr::from_bytes_with_nul(&bytes) {
        let _ = nix::sys::prctl::set_name(name);
    }
}

/// Signals a supervisor loop handles.
pub(crate) const SIGNALS: &[i32] = &[
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGQUIT,
    libc::SIGCHLD,
];

/// One thing a supervisor loop reacts to.
#[derive(Debug)]
pub enum Event {
    Signal(i32),
    Ipc(bkjs_ipc::Request),
}

/// The event queue of a supervisor: signals arrive through a signal-hook thread, IPC messages from
/// the hub thread; the loop itself runs on the main thread so that children's `PDEATHSIG` is tied to
/// a thread that lives as long as the process.
pub struct Events {
    pub tx: mpsc::Sender<Event>,
    rx: mpsc::Receiver<Event>,
}

impl Events {
    /// Registers the supervisor signals and starts forwarding them.
    pub fn new() -> std::io::Result<Events> {
        let (tx, rx) = mpsc::channel();
        let mut signals = signal_hook::iterator::Signals::new(SIGNALS)?;
        let stx = tx.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    if stx.send(Event::Signal(sig)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Events { tx, rx })
    }

    /// The next event, or `None` after `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<Event> {
        self.rx.recv_timeout(timeout).ok()
    }
}

/// The pid file of the top process of a tree.
pub fn pid_file(cfg: &Config) -> PathBuf {
    cfg.dir("var").join("bkjs.pid")
}

/// Writes the pid file and removes it when dropped.
pub struct PidFile(PathBuf);

impl PidFile {
    pub fn create(cfg: &Config) -> std::io::Result<PidFile> {
        let path = pid_file(cfg);
        std::fs::write(&path, format!("{}\n", std::process::id()))?;
        Ok(PidFile(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Only remove it if it is still ours (a newer tree may have replaced it).
        if let Ok(text) = std::fs::read_to_string(&self.0) {
            if text.trim() == std::process::id().to_string() {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }
}
