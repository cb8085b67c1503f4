//! How this process was started: its executable, argv, inherited listening sockets and whether
//! it is the top of its tree; and how to start itself again.

use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

/// What a process knows about how it was started, beyond its configuration.
#[derive(Debug, Clone)]
pub struct Boot {
    /// The executable to start children from (recorded at start: a rebuilt binary replaces it).
    pub exe: PathBuf,
    /// This process is the top of its tree: it owns the pid file and talks to systemd.
    pub top: bool,
    /// `-watch` (run-backend): restart the children when files change.
    pub watch: bool,
    /// An ancestor watches files, so this process need not apply config changes itself.
    pub watched: bool,
    /// Listening sockets handed in by systemd or by the parent, from fd 3 on.
    pub listen_fds: Vec<RawFd>,
    /// argv as this process got it, to re-execute itself.
    pub argv: Vec<String>,
}

impl Boot {
    /// Reads the start-up environment (and removes what must not leak to children).
    pub fn detect(watch: bool) -> Boot {
        let mut argv: Vec<String> = std::env::args().collect();
        if argv.is_empty() {
            argv.push("bkjs".into());
        }
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from(&argv[0]));
        let var = |k: &str| std::env::var(k).ok();
        let mut listen_fds: Vec<RawFd> = var("_BKJS_LISTEN_FDS")
            .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
            .unwrap_or_default();
        if listen_fds.is_empty() {
            // Systemd socket activation; the fds are set close-on-exec and passed on explicitly.
            if let Ok(fds) = sd_notify::listen_fds() {
                listen_fds = fds.collect();
            }
        } else {
            for fd in &listen_fds {
                // SAFETY: fcntl on an fd number has no memory-safety preconditions.
                unsafe { libc::fcntl(*fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            }
        }
        Boot {
            exe,
            top: var("_BKJS_TOP").as_deref() == Some("1"),
            watch,
            watched: var("_BKJS_WATCHED").as_deref() == Some("1"),
            listen_fds,
            argv,
        }
    }

    /// Replaces this process with a fresh start of the same command line (same pid). Returns only
    /// on failure.
    pub fn reexec(&self) -> std::io::Error {
        let mut cmd = std::process::Command::new(&self.exe);
        cmd.arg0(&self.argv[0]).args(&self.argv[1..]);
        if self.top {
            cmd.env("_BKJS_TOP", "1");
        }
        cmd.exec()
    }
}
