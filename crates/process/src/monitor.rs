//! The monitor and the master: each keeps one child alive. The monitor (production and
//! `run-backend`) supervises the master; the master supervises the server and runs the jobs
//! (`bkjs_jobs::Jobs`: crontab, queue, job workers), whose workers' exits it hands over.
//! With `-watch` (run-backend) the monitor restarts the master when the executable or `etc/` files
//! change (except `etc/crontab`, which the master reloads itself), re-executing itself when its
//! own binary was rebuilt.
//!
//! The monitor binds the HTTP socket itself and hands it down (master, server, web workers, as
//! systemd socket activation would): a master that dies takes its server with it
//! (`PR_SET_PDEATHSIG`), and the next server serves the very same socket at once, with no port to
//! wait for while the orphaned server drains; connections made in between wait in its backlog.

use super::{
    kill_group, kill_tree, reap, spawn, Backoff, ChildSpec, Event, Events, ExitInfo, Role,
};
use bkjs_base::config::Config;
use bkjs_base::sys::Boot;
use nix::sys::signal::Signal;
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

/// One supervised child slot: its spec, its current pid and when to start it again.
struct Supervised {
    role: Role,
    spec: ChildSpec,
    pid: Option<u32>,
    started: Instant,
    backoff: Backoff,
    restart_at: Option<Instant>,
}

impl Supervised {
    fn start(&mut self) {
        self.restart_at = None;
        match spawn(&self.spec) {
            Ok(pid) => {
                tracing::info!("started {} pid {pid}", self.role.flag());
                self.pid = Some(pid);
                self.started = Instant::now();
            }
            Err(e) => {
                let delay = self.backoff.next_delay(Duration::ZERO);
                tracing::error!(
                    "cannot start {}: {e}; retrying in {delay:?}",
                    self.role.flag()
                );
                self.restart_at = Some(Instant::now() + delay);
            }
        }
    }

    /// Logs why the child ended and decides when it comes back.
    fn exited(&mut self, pid: u32, info: ExitInfo, cfg: &Config, stopping: bool, immediate: bool) {
        let uptime = self.started.elapsed();
        self.pid = None;
        let role = self.role.flag();
        if stopping {
            tracing::info!(
                "{role} pid {pid} exited: {info}, uptime {:.1}s",
                uptime.as_secs_f64()
            );
            return;
        }
        if immediate {
            tracing::info!(
                "{role} pid {pid} exited: {info}, uptime {:.1}s; restarting now",
                uptime.as_secs_f64()
            );
            self.restart_at = Some(Instant::now());
            return;
        }
        let delay = if info.is_boot_failure() {
            let d = cfg.duration("server-crash-delay");
            tracing::error!(
                "{role} pid {pid} failed at boot ({info}), uptime {:.1}s; see its log above; retrying in {:.1}s",
                uptime.as_secs_f64(),
                d.as_secs_f64()
            );
            d
        } else {
            let d = self.backoff.next_delay(uptime);
            tracing::warn!(
                "{role} pid {pid} exited: {info}, uptime {:.1}s; restarting in {:.1}s (attempt {})",
                uptime.as_secs_f64(),
                d.as_secs_f64(),
                self.backoff.attempts()
            );
            d
        };
        self.restart_at = Some(Instant::now() + delay);
    }
}

/// How long a parent waits for a stopping child before it kills the child's whole subtree.
pub(super) fn stop_deadline(cfg: &Config, role: Role) -> Duration {
    let drain = cfg.duration("server-drain-timeout");
    match role {
        Role::Monitor => drain + Duration::from_secs(6),
        Role::Master => drain + Duration::from_secs(4),
        Role::Server | Role::Web | Role::Worker => drain + Duration::from_secs(2),
    }
}

/// Builds the backoff from the restart parameters; they were validated at start-up.
pub(super) fn backoff(cfg: &Config) -> Result<Backoff, super::BackoffError> {
    Backoff::new(
        cfg.duration("server-restart-delay"),
        cfg.duration("server-restart-max-delay"),
        cfg.duration("server-restart-reset"),
    )
}

/// The spec of a child role: same executable, same parameters, the role flag first.
pub(super) fn child_spec(boot: &Boot, cfg: &Config, role: Role) -> ChildSpec {
    let mut args = vec![format!("-{}", role.flag())];
    // A monitor over a one-process tree (`run-backend -single`) starts its master as one.
    if role == Role::Master && cfg.args.has_role("single") {
        args.push("-single".into());
    }
    args.extend(cfg.args.to_words());
    let mut env = Vec::new();
    if boot.watch || boot.watched {
        env.push(("_BKJS_WATCHED".to_string(), "1".to_string()));
    }
    ChildSpec {
        exe: boot.exe.clone(),
        title: role.title(cfg),
        args,
        env,
        fds: boot.listen_fds.clone(),
    }
}

/// What a master needs to run jobs: the application's registered jobs and its tables.
pub type JobsSetup = (std::sync::Arc<bkjs_jobs::Registry>, Vec<bkjs_db::Table>);

/// Refuses, before any child starts, a configuration that names cache peers or pub/sub
/// forwarders on other machines without a usable cluster secret (docs/security.md).
pub(super) fn cluster_config(cfg: &Config) -> Result<(), bkjs_base::cluster::ClusterError> {
    use bkjs_base::cluster::Secret;
    if cfg.str("cache-type") == "local" && !cfg.list("cache-host").is_empty() {
        Secret::require(cfg, "cache-host")?;
    }
    if cfg.str("msg-type") == "nng" && !cfg.list("msg-host").is_empty() {
        Secret::require(cfg, "msg-host")?;
    }
    Ok(())
}

/// Runs a monitor or a master until it is told to stop; returns the exit code. A master runs
/// the jobs of `jobs`.
pub fn run_supervisor(mut cfg: Config, role: Role, boot: &Boot, jobs: Option<JobsSetup>) -> i32 {
    let events = match Events::new() {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("cannot install signal handlers: {e}");
            return super::EXIT_BOOT;
        }
    };
    if let Err(e) = cluster_config(&cfg) {
        tracing::error!("{e}");
        return bkjs_base::config::EXIT_USAGE;
    }
    if let Err(e) = bkjs_api::tls::check(&cfg) {
        tracing::error!("{e}");
        return bkjs_base::config::EXIT_USAGE;
    }
    let jobs = match jobs.filter(|_| role == Role::Master) {
        Some((registry, tables)) => match bkjs_jobs::Jobs::start(&cfg, boot, registry, tables) {
            Ok(j) => Some(j),
            Err(e) => {
                tracing::error!("{e}");
                return bkjs_base::config::EXIT_USAGE;
            }
        },
        None => None,
    };
    let child_role = if role == Role::Monitor {
        Role::Master
    } else {
        Role::Server
    };
    let backoff = match backoff(&cfg) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("{e}");
            return bkjs_base::config::EXIT_USAGE;
        }
    };
    let mut http = (role == Role::Monitor && boot.listen_fds.is_empty())
        .then(|| HttpSocket::bind(&cfg))
        .flatten();
    let mut child = Supervised {
        role: child_role,
        spec: spec_with(child_spec(boot, &cfg, child_role), &http),
        pid: None,
        started: Instant::now(),
        backoff,
        restart_at: None,
    };
    let runs_child = !(role == Role::Master && cfg.bool("no-web"));
    if runs_child {
        child.start();
    } else {
        tracing::info!("-no-web: the master does not start the web server");
    }
    let mut watcher = boot.watch.then(|| Watcher::new(&cfg, boot));
    let mut watchdog = Watchdog::new(boot);
    let mut stopping: Option<Instant> = None;
    let mut restart_now = false;
    let mut exec_self = false;
    loop {
        if stopping.is_none() && child.pid.is_none() {
            if let Some(at) = child.restart_at {
                if Instant::now() >= at {
                    child.start();
                }
            }
        }
        match events.next(Duration::from_millis(200)) {
            Some(Event::Signal(libc::SIGCHLD)) => {
                for (pid, info) in reap() {
                    if Some(pid) == child.pid {
                        child.exited(pid, info, &cfg, stopping.is_some(), restart_now);
                        restart_now = false;
                    } else if !jobs.as_ref().is_some_and(|j| j.exited(pid, info)) {
                        tracing::debug!("reaped pid {pid}: {info}");
                    }
                }
            }
            Some(Event::Signal(sig @ (libc::SIGTERM | libc::SIGINT))) => {
                tracing::info!("signal {sig}: stopping");
                stopping.get_or_insert(Instant::now() + stop_deadline(&cfg, role));
                // New connections are refused from now on instead of waiting in the backlog.
                http = None;
                close_inherited(boot, role);
                if let Some(pid) = child.pid {
                    kill_group(pid, Signal::SIGTERM);
                }
                if let Some(j) = &jobs {
                    j.stop();
                }
            }
            Some(Event::Signal(libc::SIGQUIT)) => {
                tracing::info!("SIGQUIT: immediate stop");
                if let Some(pid) = child.pid {
                    kill_tree(pid, Signal::SIGKILL);
                }
                if let Some(j) = &jobs {
                    j.kill();
                }
                return 0;
            }
            Some(Event::Signal(libc::SIGHUP)) => match cfg.reload() {
                Ok(new) => {
                    tracing::info!("SIGHUP: configuration is valid, passing it on");
                    cfg = new;
                    if let Some(j) = &jobs {
                        j.reload();
                    }
                    HttpSocket::refresh(&mut http, &cfg);
                    child.spec = spec_with(child_spec(boot, &cfg, child_role), &http);
                    if let Some(pid) = child.pid {
                        kill_group(pid, Signal::SIGHUP);
                    }
                }
                Err(e) => tracing::error!("SIGHUP: configuration not applied: {e}"),
            },
            Some(Event::Signal(sig @ (libc::SIGUSR1 | libc::SIGUSR2))) => {
                if sig == libc::SIGUSR1 {
                    bkjs_base::log::reopen();
                }
                if let Some(pid) = child.pid {
                    let s = Signal::try_from(sig).unwrap_or(Signal::SIGUSR2);
                    kill_group(pid, s);
                }
            }
            Some(_) | None => {}
        }
        if let Some(deadline) = stopping {
            let workers = jobs.as_ref().map_or(0, |j| j.live());
            if child.pid.is_none() && workers == 0 {
                break;
            }
            if Instant::now() >= deadline {
                if let Some(j) = jobs.as_ref().filter(|_| workers > 0) {
                    tracing::warn!("{workers} job workers did not stop in time: killing them");
                    j.kill();
                }
                if let Some(pid) = child.pid {
                    tracing::warn!(
                        "{} pid {pid} did not stop in time: killing its tree",
                        child_role.flag()
                    );
                    kill_tree(pid, Signal::SIGKILL);
                    std::thread::sleep(Duration::from_millis(50));
                    for (p, info) in reap() {
                        tracing::info!("reaped pid {p}: {info}");
                    }
                }
                break;
            }
        }
        if let Some(w) = watcher.as_mut() {
            if stopping.is_none() {
                match w.check() {
                    Change::None => {}
                    Change::Files(what) => {
                        tracing::info!("{what} changed: restarting the {}", child_role.flag());
                        if let Ok(new) = cfg.reload() {
                            cfg = new;
                            HttpSocket::refresh(&mut http, &cfg);
                            child.spec = spec_with(child_spec(boot, &cfg, child_role), &http);
                        }
                        if let Some(pid) = child.pid {
                            restart_now = true;
                            kill_group(pid, Signal::SIGTERM);
                        } else {
                            child.restart_at = Some(Instant::now());
                        }
                    }
                    Change::Executable => {
                        tracing::info!("the executable changed: stopping and starting it again");
                        exec_self = true;
                        stopping = Some(Instant::now() + stop_deadline(&cfg, role));
                        http = None;
                        if let Some(pid) = child.pid {
                            kill_group(pid, Signal::SIGTERM);
                        }
                    }
                }
            }
        }
        watchdog.tick();
    }
    if exec_self {
        let err = boot.reexec();
        tracing::error!("cannot re-execute {}: {err}", boot.exe.display());
        return 1;
    }
    tracing::info!("stopped");
    0
}

/// Adds the monitor's HTTP socket (and HTTPS socket) to a child's spec as its inherited listening
/// sockets: fd 3 is HTTP, fd 4 HTTPS.
fn spec_with(mut spec: ChildSpec, http: &Option<HttpSocket>) -> ChildSpec {
    if let Some(h) = http {
        spec.fds = vec![h.listener.as_raw_fd()];
        if let Some(l) = &h.https {
            spec.fds.push(l.as_raw_fd());
        }
    }
    spec
}

/// A master stopping closes its copy of an inherited listening socket, so that once the server and
/// its workers have closed theirs new connections are refused rather than left in the backlog.
fn close_inherited(boot: &Boot, role: Role) {
    if role == Role::Master {
        for fd in &boot.listen_fds {
            // SAFETY: the fd was inherited as a listening socket and is not used by this process
            // (only passed on to children, and no child is started any more).
            unsafe { libc::close(*fd) };
        }
    }
}

/// The HTTP listening socket the monitor owns for the whole tree (`-bind`, `-port`), and the
/// HTTPS one (`-ssl-port`) when `-ssl-cert` and `-ssl-key` are set.
struct HttpSocket {
    addr: std::net::SocketAddr,
    listener: std::net::TcpListener,
    https: Option<std::net::TcpListener>,
}

impl HttpSocket {
    /// Binds `-bind:-port`; on failure the server binds it itself later (and reports the error
    /// with its retries and crash delay).
    fn bind(cfg: &Config) -> Option<HttpSocket> {
        let text = format!("{}:{}", cfg.str("bind"), cfg.int("port"));
        let addr: std::net::SocketAddr = text.parse().ok()?;
        match bkjs_base::sys::tcp_listener(addr, cfg.int("backlog") as i32) {
            Ok(listener) => {
                tracing::info!("monitor listening on {addr} for the web workers");
                let https = if bkjs_api::tls::enabled(cfg) {
                    let text = format!("{}:{}", cfg.str("bind"), cfg.int("ssl-port"));
                    let addr: std::net::SocketAddr = text.parse().ok()?;
                    match bkjs_base::sys::tcp_listener(addr, cfg.int("backlog") as i32) {
                        Ok(l) => {
                            tracing::info!(
                                "monitor listening on {addr} (HTTPS) for the web workers"
                            );
                            Some(l)
                        }
                        Err(e) => {
                            tracing::warn!(
                                "monitor cannot listen on {addr}: {e}; the server will bind it"
                            );
                            return None;
                        }
                    }
                } else {
                    None
                };
                Some(HttpSocket {
                    addr,
                    listener,
                    https,
                })
            }
            Err(e) => {
                tracing::warn!("monitor cannot listen on {addr}: {e}; the server will bind it");
                None
            }
        }
    }

    /// Binds again when `-bind`/`-port` changed (a reloaded configuration).
    fn refresh(http: &mut Option<HttpSocket>, cfg: &Config) {
        let Some(h) = http.as_ref() else {
            return;
        };
        let text = format!("{}:{}", cfg.str("bind"), cfg.int("port"));
        if text.parse::<std::net::SocketAddr>().ok() != Some(h.addr)
            || h.https.is_some() != bkjs_api::tls::enabled(cfg)
            || h.https
                .as_ref()
                .and_then(|l| l.local_addr().ok())
                .is_some_and(|a| a.port() as i64 != cfg.int("ssl-port"))
        {
            *http = None;
            *http = HttpSocket::bind(cfg);
        }
    }
}

enum Change {
    None,
    Files(String),
    Executable,
}

/// Polls modification times of the executable, `etc/` and `-watch-dirs`; a change is reported once
/// it has been stable for one interval (the debounce). `etc/crontab` is not watched: the master
/// reloads it by itself without a restart (so running jobs are not interrupted by a schedule edit).
struct Watcher {
    exe: PathBuf,
    dirs: Vec<PathBuf>,
    /// Files whose changes do not restart anything.
    ignored: Vec<PathBuf>,
    interval: Duration,
    last_check: Instant,
    exe_mtime: Option<SystemTime>,
    seen: HashMap<PathBuf, SystemTime>,
    pending: Option<(bool, String)>,
}

impl Watcher {
    fn new(cfg: &Config, boot: &Boot) -> Watcher {
        let mut dirs = vec![cfg.dir("etc")];
        dirs.extend(cfg.list("watch-dirs").iter().map(|d| cfg.home.join(d)));
        let mut w = Watcher {
            exe: boot.exe.clone(),
            // The crontab is reloaded by the master itself; the seal key is made once by the
            // first process that opens the database and never changes a running tree.
            ignored: vec![
                cfg.dir("etc").join("crontab"),
                cfg.dir("etc").join("seal.key"),
            ],
            dirs,
            interval: cfg.duration("watch-interval"),
            last_check: Instant::now(),
            exe_mtime: mtime(&boot.exe),
            seen: HashMap::new(),
            pending: None,
        };
        w.seen = w.scan();
        w
    }

    fn scan(&self) -> HashMap<PathBuf, SystemTime> {
        let mut out = HashMap::new();
        for dir in &self.dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                // Hidden files are temporary (an editor's swap file, a key being written).
                let hidden = p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'));
                if hidden || self.ignored.contains(&p) {
                    continue;
                }
                if let Some(t) = mtime(&p) {
                    out.insert(p, t);
                }
            }
        }
        out
    }

    fn check(&mut self) -> Change {
        if self.last_check.elapsed() < self.interval {
            return Change::None;
        }
        self.last_check = Instant::now();
        let exe_mtime = mtime(&self.exe);
        let exe_changed = exe_mtime.is_some() && exe_mtime != self.exe_mtime;
        let now = self.scan();
        let mut changed: Vec<String> = Vec::new();
        for (p, t) in &now {
            if self.seen.get(p) != Some(t) {
                changed.push(p.display().to_string());
            }
        }
        for p in self.seen.keys() {
            if !now.contains_key(p) {
                changed.push(p.display().to_string());
            }
        }
        self.seen = now;
        self.exe_mtime = exe_mtime;
        if exe_changed || !changed.is_empty() {
            // Something is still changing: wait until it settles.
            let (exe, what) = self.pending.take().unwrap_or((false, String::new()));
            let what = if changed.is_empty() {
                what
            } else {
                changed.join(", ")
            };
            self.pending = Some((exe || exe_changed, what));
            return Change::None;
        }
        match self.pending.take() {
            Some((true, _)) => Change::Executable,
            Some((false, what)) => Change::Files(what),
            None => Change::None,
        }
    }
}

fn mtime(p: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Sends `WATCHDOG=1` to systemd at half the `WATCHDOG_USEC` interval when this is the top process.
pub(super) struct Watchdog {
    every: Option<Duration>,
    last: Instant,
}

impl Watchdog {
    pub(super) fn new(boot: &Boot) -> Watchdog {
        // sd_watchdog_enabled(3): on when WATCHDOG_USEC is set and WATCHDOG_PID, if set, is us.
        let usec = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|s| s.parse::<u64>().ok());
        let pid_ok = std::env::var("WATCHDOG_PID")
            .map(|p| p == std::process::id().to_string())
            .unwrap_or(true);
        let every = usec
            .filter(|u| boot.top && pid_ok && *u > 0)
            .map(|u| Duration::from_micros(u / 2));
        Watchdog {
            every,
            last: Instant::now(),
        }
    }

    pub(super) fn tick(&mut self) {
        if let Some(every) = self.every {
            if self.last.elapsed() >= every {
                self.last = Instant::now();
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            }
        }
    }
}
