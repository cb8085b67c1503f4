//! The server: binds the HTTP socket once, keeps `-server-web-workers` web workers alive on it,
//! hears their `ready` and `heartbeat` over IPC, replaces silent ones, recycles tired ones and
//! performs rolling restarts one worker at a time. With `-proxy-port` it also serves the public
//! socket itself and forwards each request to the least busy ready worker.

use super::monitor::{backoff, child_spec, stop_deadline};
use super::{
    kill_group, kill_tree, reap, spawn, Backoff, Event, Events, ExitInfo, Role, EXIT_BOOT,
};
use crate::proxy::Proxy;
use bkjs_base::config::Config;
use bkjs_base::sys::Boot;
use bkjs_ipc::{Hub, Push, Reply, Request};
use nix::sys::signal::Signal;
use rand::Rng;
use std::collections::{BTreeMap, VecDeque};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The youngest a worker can be to be recycled for its request count or memory.
const MIN_AGE_TO_RECYCLE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Starting,
    Ready,
    Draining { deadline: Instant },
}

#[derive(Debug)]
struct Worker {
    /// The worker slot it fills (see [`Slot`]).
    slot: usize,
    port: u16,
    started: Instant,
    last_seen: Instant,
    state: State,
    requests: u64,
    rss: u64,
    /// Requests after which this worker is recycled (with jitter), 0 = never.
    max_requests: u64,
    /// When it was sent SIGABRT or SIGKILL for being silent or late.
    killed_at: Option<Instant>,
    recycling: bool,
}

/// One of the `-server-web-workers` places a worker fills, with its own restart backoff: a worker
/// that keeps crashing delays only its own replacement, never the other slots'.
#[derive(Debug)]
struct Slot {
    backoff: Backoff,
    next_spawn: Instant,
}

/// A rolling restart in progress: the workers still to replace, one at a time.
#[derive(Debug, Default)]
struct Roll {
    queue: VecDeque<u32>,
    /// The replacement being started and the worker it replaces.
    waiting: Option<(u32, u32, Instant)>,
}

struct Server<'a> {
    cfg: Config,
    boot: &'a Boot,
    listener: Option<TcpListener>,
    /// The HTTPS socket the workers inherit next to `listener` (not in proxy mode).
    https: Option<TcpListener>,
    /// In proxy mode, the certificate the proxy serves (reloaded on SIGHUP).
    proxy_tls: Option<Arc<bkjs_api::tls::Tls>>,
    proxy: Option<Proxy>,
    workers: BTreeMap<u32, Worker>,
    roll: Option<Roll>,
    /// Fresh backoff for a new slot (from the restart parameters).
    backoff: Backoff,
    slots: Vec<Slot>,
    stopping: Option<Instant>,
    notified_ready: bool,
    conf_mtimes: Vec<Option<SystemTime>>,
    last_conf_check: Instant,
    stats: std::sync::Arc<super::stats::Stats>,
    /// The master that started this server; another parent means it died (see
    /// [`Server::check_orphaned`]).
    parent: u32,
    orphaned: bool,
    /// Released at once when this server is orphaned, so that its successor can bind the ports.
    forwarder: Option<bkjs_msg::Forwarder>,
    cache: bkjs_cache::Server,
}

/// The server's part of a process, shared by the server role and `bkjs run -single`: the
/// listening sockets, the prepared database, the LRU cache (with its peer bus), the pub/sub
/// forwarder, the machine-wide stats and the IPC hub answering workers (and job workers) with
/// [`Core::handler`].
pub(crate) struct Core {
    pub(crate) listener: TcpListener,
    /// The HTTPS socket, with `-ssl-cert` and `-ssl-key`.
    pub(crate) https: Option<TcpListener>,
    pub(crate) cache: bkjs_cache::Server,
    /// None when `-msg-type` needs no forwarder here.
    pub(crate) forwarder: Option<bkjs_msg::Forwarder>,
    pub(crate) stats: Arc<super::stats::Stats>,
    /// What the hub answers a request with: cache and stats in place, anything else handed to
    /// the supervisor loop as an [`Event::Ipc`].
    pub(crate) handler: bkjs_ipc::Handler,
    pub(crate) hub: Hub,
    /// The test fault's descriptor opened without O_CLOEXEC (see [`fd_probe`]).
    _probe: Option<std::os::fd::OwnedFd>,
}

impl Core {
    /// Binds (or takes) the sockets, prepares the tables, starts the cache, the forwarder and
    /// the hub; on failure the exit code the process ends with (the reason is logged).
    pub(crate) fn start(
        cfg: &Config,
        boot: &Boot,
        tables: Vec<bkjs_db::Table>,
        events: std::sync::mpsc::Sender<Event>,
    ) -> Result<Core, i32> {
        if let Err(e) = bkjs_api::tls::check(cfg) {
            tracing::error!("{e}");
            return Err(bkjs_base::config::EXIT_USAGE);
        }
        let (listener, https) = listen(cfg, boot).map_err(|e| {
            tracing::error!("{e}");
            EXIT_BOOT
        })?;
        // Tables are created and upgraded here, once, before any worker opens the pools.
        if let Err(e) = init_db(cfg, tables) {
            tracing::error!("cannot prepare the database: {e}");
            return Err(EXIT_BOOT);
        }
        // Test fault: a descriptor opened without O_CLOEXEC, as a library might; no worker may
        // inherit it (see `bkjs_base::sys::spawn`).
        let probe = bkjs_base::faults::enabled()
            .then(|| fd_probe(cfg))
            .flatten();
        // Every write to the LRU (from a worker, a peer or a resync) is pushed to the workers'
        // near caches before it is answered.
        let pushes = bkjs_ipc::Pushes::new();
        let on_change = || -> bkjs_cache::ChangeListener {
            let pushes = pushes.clone();
            Box::new(move |c| match c {
                bkjs_cache::Change::Key(k) => pushes.push(&Push::Invalidate {
                    keys: vec![k.to_string()],
                }),
                bkjs_cache::Change::All => pushes.push(&Push::InvalidateAll),
            })
        };
        // The peer and forwarder ports may still be held for a moment by an orphaned
        // predecessor that is releasing them: retried like the HTTP port.
        let bind_deadline = Instant::now() + cfg.duration("server-bind-retry");
        let cache = retry_until(bind_deadline, || {
            bkjs_cache::Server::start(cfg, Some(on_change()))
        })
        .map_err(|e| {
            tracing::error!("cannot start the cache: {e}");
            match e {
                bkjs_cache::CacheError::Config(_) => bkjs_base::config::EXIT_USAGE,
                _ => EXIT_BOOT,
            }
        })?;
        // The nng pub/sub forwarder (docs/ipc.md) lives as long as this server.
        let forwarder =
            retry_until(bind_deadline, || bkjs_msg::Forwarder::start(cfg)).map_err(|e| {
                tracing::error!("cannot start the pub/sub forwarder: {e}");
                match e {
                    bkjs_msg::MsgError::Config(_) => bkjs_base::config::EXIT_USAGE,
                    _ => EXIT_BOOT,
                }
            })?;
        let hub_cache = cache.clone();
        // Cache requests are answered on the hub's threads; control messages go to the loop.
        let tx = parking_lot::Mutex::new(events);
        let stats = Arc::new(super::stats::Stats::new());
        let hub_stats = stats.clone();
        let handler: bkjs_ipc::Handler = Arc::new(move |msg: Request| {
            if let Some(reply) = hub_stats.handle(&msg, &hub_cache) {
                return reply;
            }
            if let Some(reply) = hub_cache.handle(&msg) {
                return reply;
            }
            let tx = tx.lock();
            match tx.send(Event::Ipc(msg)) {
                Ok(()) => Reply::Ok,
                Err(_) => Reply::Error {
                    message: "the server is stopping".into(),
                },
            }
        });
        // The socket directory is private (0700) and every socket in it 0600.
        let socket_dir = bkjs_base::sys::socket_dir(cfg);
        if let Err(e) = bkjs_base::sys::private_dir(&socket_dir) {
            tracing::error!("cannot prepare {}: {e}", socket_dir.display());
            return Err(EXIT_BOOT);
        }
        let hub = Hub::start(bkjs_ipc::hub_path(cfg), handler.clone(), pushes).map_err(|e| {
            tracing::error!("cannot start IPC hub: {e}");
            EXIT_BOOT
        })?;
        let (uid, gid) = super::target_ids(cfg);
        if uid.is_some() || gid.is_some() {
            // Workers run as -uid/-gid: they must reach the IPC socket and write the embedded
            // databases (SQLite creates its -wal/-shm files next to the database file).
            let mut paths = vec![
                hub.path().to_path_buf(),
                hub.counter_path(),
                cfg.dir("var"),
                socket_dir.clone(),
            ];
            if let Some(db) = cfg.path("db-sqlite-pool") {
                for suffix in ["", "-wal", "-shm"] {
                    paths.push(std::path::PathBuf::from(format!(
                        "{}{suffix}",
                        db.display()
                    )));
                }
                if let Some(dir) = db.parent() {
                    paths.push(dir.to_path_buf());
                }
            }
            for p in paths.iter().filter(|p| p.exists()) {
                if let Err(e) = std::os::unix::fs::chown(p, uid, gid) {
                    tracing::error!("cannot hand {} to -uid/-gid: {e}", p.display());
                    return Err(EXIT_BOOT);
                }
            }
        }
        Ok(Core {
            listener,
            https,
            cache,
            forwarder,
            stats,
            handler,
            hub,
            _probe: probe,
        })
    }
}

/// Runs the server role until it is told to stop; returns the exit code.
pub fn run_server(cfg: Config, boot: &Boot, tables: Vec<bkjs_db::Table>) -> i32 {
    let events = match Events::new() {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("cannot install signal handlers: {e}");
            return EXIT_BOOT;
        }
    };
    // Checked before anything else: the master may have died between spawn and now.
    let parent = nix::unistd::getppid().as_raw() as u32;
    let core = match Core::start(&cfg, boot, tables, events.tx.clone()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Core {
        listener,
        https,
        cache,
        forwarder,
        stats,
        hub,
        _probe,
        ..
    } = core;
    let backoff = match backoff(&cfg) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("{e}");
            return bkjs_base::config::EXIT_USAGE;
        }
    };
    let proxy_port = cfg.int("proxy-port") as u16;
    let (listener, https, proxy, proxy_tls) = if proxy_port > 0 {
        // Proxy mode terminates TLS here; the workers speak plain HTTP on 127.0.0.1.
        let tls = match bkjs_api::tls::Tls::load(&cfg) {
            Ok(t) => t.map(Arc::new),
            Err(e) => {
                tracing::error!("{e}");
                return bkjs_base::config::EXIT_USAGE;
            }
        };
        let secure = https.zip(tls.clone());
        match Proxy::start(listener, secure, &cfg) {
            Ok(p) => (None, None, Some(p), tls),
            Err(e) => {
                tracing::error!("cannot start the proxy: {e}");
                return EXIT_BOOT;
            }
        }
    } else {
        (Some(listener), https, None, None)
    };
    let conf_mtimes = mtimes(&cfg);
    let mut server = Server {
        cfg,
        boot,
        listener,
        https,
        proxy_tls,
        proxy,
        workers: BTreeMap::new(),
        roll: None,
        backoff,
        slots: Vec::new(),
        stopping: None,
        notified_ready: false,
        conf_mtimes,
        last_conf_check: Instant::now(),
        stats,
        parent,
        orphaned: false,
        forwarder,
        cache,
    };
    let addr = server
        .listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.to_string())
        .unwrap_or_else(|| format!("{}:{}", server.cfg.str("bind"), server.cfg.int("port")));
    tracing::info!(
        "server listening on {addr}{}, {} web workers{}",
        if boot.listen_fds.is_empty() {
            ""
        } else {
            " (inherited socket)"
        },
        server.desired(),
        if proxy_port > 0 {
            format!(", proxying to ports from {proxy_port}")
        } else {
            String::new()
        }
    );
    let code = server.run(&events);
    drop(hub);
    code
}

/// Opens `var/fd-probe` without `O_CLOEXEC` (the test fault above).
fn fd_probe(cfg: &Config) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    let path =
        std::ffi::CString::new(cfg.dir("var").join("fd-probe").as_os_str().as_bytes()).ok()?;
    // SAFETY: open gets a NUL-terminated path that outlives the call.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_CREAT | libc::O_RDWR, 0o600) };
    // SAFETY: a descriptor open just returned, owned by nothing else.
    (fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Calls `start` until it succeeds or `deadline` passes (a port still held by a predecessor).
fn retry_until<T, E: std::fmt::Display>(
    deadline: Instant,
    mut start: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let mut logged = false;
    loop {
        match start() {
            Err(e) if Instant::now() < deadline => {
                if !logged {
                    tracing::warn!("{e}; retrying");
                    logged = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            r => return r,
        }
    }
}

/// Opens the pools and creates or upgrades every described table.
fn init_db(cfg: &Config, tables: Vec<bkjs_db::Table>) -> Result<(), bkjs_db::DbError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| bkjs_db::DbError::Driver(e.to_string()))?;
    rt.block_on(async {
        let db = bkjs_db::Db::open(cfg, tables, None).await?;
        db.init().await
    })
}

/// The listening sockets, HTTP and (with `-ssl-cert` and `-ssl-key`) HTTPS: inherited (systemd or
/// parent: fd 3 HTTP, fd 4 HTTPS) or bound here, retrying while a port is still held by a previous
/// server for up to `-server-bind-retry`.
fn listen(cfg: &Config, boot: &Boot) -> Result<(TcpListener, Option<TcpListener>), String> {
    use std::os::fd::FromRawFd;
    let http = match boot.listen_fds.first() {
        // SAFETY: the fd was handed to this process as a listening socket (LISTEN_FDS protocol)
        // and nothing else in this process owns it.
        Some(fd) => unsafe { TcpListener::from_raw_fd(*fd) },
        None => bind(cfg, cfg.int("port"))?,
    };
    if !bkjs_api::tls::enabled(cfg) {
        return Ok((http, None));
    }
    let https = match boot.listen_fds.get(1) {
        // SAFETY: as above, the second inherited socket.
        Some(fd) => unsafe { TcpListener::from_raw_fd(*fd) },
        None => bind(cfg, cfg.int("ssl-port"))?,
    };
    Ok((http, Some(https)))
}

/// Binds `-bind:PORT`, retrying while the port is in use for up to `-server-bind-retry`.
fn bind(cfg: &Config, port: i64) -> Result<TcpListener, String> {
    let addr = format!("{}:{}", cfg.str("bind"), port);
    let sa: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| format!("invalid -bind/-port {addr}: {e}"))?;
    let deadline = Instant::now() + cfg.duration("server-bind-retry");
    let mut logged = false;
    loop {
        match bkjs_base::sys::tcp_listener(sa, cfg.int("backlog") as i32) {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                if !logged {
                    tracing::warn!("cannot listen on {addr}: {e}; retrying");
                    logged = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(format!("cannot listen on {addr}: {e}")),
        }
    }
}

fn mtimes(cfg: &Config) -> Vec<Option<SystemTime>> {
    cfg.files()
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

impl Server<'_> {
    fn desired(&self) -> usize {
        match self.cfg.int("server-web-workers") {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            n => n as usize,
        }
    }

    fn run(&mut self, events: &Events) -> i32 {
        loop {
            match events.next(Duration::from_millis(100)) {
                Some(Event::Signal(libc::SIGCHLD)) => {
                    for (pid, info) in reap() {
                        self.exited(pid, info);
                    }
                }
                Some(Event::Signal(sig @ (libc::SIGTERM | libc::SIGINT))) => {
                    if self.stopping.is_none() {
                        tracing::info!("signal {sig}: stopping {} web workers", self.workers.len());
                        self.stop();
                    }
                }
                Some(Event::Signal(libc::SIGQUIT)) => {
                    for pid in self.workers.keys() {
                        kill_group(*pid, Signal::SIGKILL);
                    }
                    return 0;
                }
                Some(Event::Signal(libc::SIGHUP)) => match self.cfg.reload() {
                    Ok(new) => {
                        // The certificate first, at once, in every worker and in the proxy; the
                        // rolling restart follows.
                        if let Some(tls) = &self.proxy_tls {
                            tls.reload();
                        }
                        if self.https.is_some() {
                            for pid in self.workers.keys() {
                                kill_group(*pid, Signal::SIGHUP);
                            }
                        }
                        tracing::info!("SIGHUP: configuration reloaded, rolling restart");
                        self.apply(new);
                    }
                    Err(e) => tracing::error!(
                        "SIGHUP: configuration not applied, keeping the old one: {e}"
                    ),
                },
                Some(Event::Signal(libc::SIGUSR2)) => {
                    tracing::info!("SIGUSR2: rolling restart");
                    self.roll_all();
                }
                Some(Event::Signal(libc::SIGUSR1)) => {
                    bkjs_base::log::reopen();
                    for pid in self.workers.keys() {
                        kill_group(*pid, Signal::SIGUSR1);
                    }
                }
                Some(Event::Ipc(msg)) => self.ipc(msg),
                Some(Event::Signal(_)) | None => {}
            }
            self.check_orphaned();
            if let Some(deadline) = self.stopping {
                if self.workers.is_empty() {
                    tracing::info!("stopped");
                    return 0;
                }
                if Instant::now() >= deadline {
                    for (pid, w) in &self.workers {
                        tracing::warn!(
                            "web pid {pid} did not stop in time ({:?}): killing it",
                            w.state
                        );
                        kill_tree(*pid, Signal::SIGKILL);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                    for (pid, info) in reap() {
                        tracing::info!("web pid {pid} exited: {info}");
                    }
                    return 0;
                }
                continue;
            }
            self.check_health();
            self.check_config();
            self.step_roll();
            self.manage_count();
        }
    }

    fn ipc(&mut self, msg: Request) {
        match msg {
            Request::Ready { pid } => {
                if let Some(w) = self.workers.get_mut(&pid) {
                    w.last_seen = Instant::now();
                    if w.state == State::Starting {
                        w.state = State::Ready;
                        tracing::info!(
                            "web pid {pid} ready in {:.0} ms",
                            w.started.elapsed().as_secs_f64() * 1000.0
                        );
                        if let Some(p) = &self.proxy {
                            p.backends().add(pid, w.port);
                        }
                    }
                }
                self.notify_ready();
            }
            Request::Heartbeat { pid, requests, rss } => {
                let max_rss = self.cfg.int("server-max-rss") as u64 * 1024 * 1024;
                let mut recycle = None;
                if let Some(w) = self.workers.get_mut(&pid) {
                    w.last_seen = Instant::now();
                    w.requests = requests;
                    w.rss = rss;
                    // A worker gets at least a second before it is recycled, so a limit below a
                    // fresh worker's size cannot turn into a restart loop.
                    if !w.recycling
                        && w.state == State::Ready
                        && w.started.elapsed() >= MIN_AGE_TO_RECYCLE
                    {
                        if w.max_requests > 0 && requests >= w.max_requests {
                            recycle = Some(format!("served {requests} requests"));
                        } else if max_rss > 0 && rss > max_rss {
                            recycle = Some(format!("uses {} MB", rss / 1024 / 1024));
                        }
                    }
                    if recycle.is_some() {
                        w.recycling = true;
                    }
                }
                if let Some(why) = recycle {
                    tracing::info!("web pid {pid} {why}: recycling it");
                    self.roll
                        .get_or_insert_with(Roll::default)
                        .queue
                        .push_back(pid);
                }
            }
            Request::Restart { pid } => {
                tracing::info!("rolling restart requested by web pid {pid}");
                self.roll_all();
            }
            _ => {}
        }
    }

    /// Tells systemd (when it started us with `Type=notify`) that the first workers are ready.
    fn notify_ready(&mut self) {
        if self.notified_ready {
            return;
        }
        let ready = self
            .workers
            .values()
            .filter(|w| w.state == State::Ready)
            .count();
        if ready >= self.desired() {
            self.notified_ready = true;
            tracing::info!("all {ready} web workers ready");
            if std::env::var_os("NOTIFY_SOCKET").is_some() {
                let status = format!("{ready} web workers ready");
                let _ = sd_notify::notify(
                    false,
                    &[
                        sd_notify::NotifyState::Ready,
                        sd_notify::NotifyState::Status(&status),
                    ],
                );
            }
        }
    }

    /// The slot `i`, created with a fresh backoff when the pool grew.
    fn slot(&mut self, i: usize) -> &mut Slot {
        while self.slots.len() <= i {
            self.slots.push(Slot {
                backoff: self.backoff.clone(),
                next_spawn: Instant::now(),
            });
        }
        &mut self.slots[i]
    }

    fn spawn_worker(&mut self, slot: usize) -> Option<u32> {
        let mut spec = child_spec(self.boot, &self.cfg, Role::Web);
        let mut port = 0u16;
        if let Some(l) = &self.listener {
            spec.fds = vec![l.as_raw_fd()];
            if let Some(l) = &self.https {
                spec.fds.push(l.as_raw_fd());
            }
        } else {
            let base = self.cfg.int("proxy-port") as u16;
            let used: Vec<u16> = self.workers.values().map(|w| w.port).collect();
            port = (0..u16::MAX - base)
                .map(|i| base + i)
                .find(|p| !used.contains(p))
                .unwrap_or(base);
            spec.fds = Vec::new();
            spec.env
                .push(("_BKJS_WORKER_PORT".into(), port.to_string()));
        }
        match spawn(&spec) {
            Ok(pid) => {
                let max = self.cfg.int("server-max-requests") as u64;
                let jitter = if max > 0 {
                    rand::thread_rng().gen_range(0..=max / 10)
                } else {
                    0
                };
                let now = Instant::now();
                tracing::debug!("started web pid {pid}");
                self.workers.insert(
                    pid,
                    Worker {
                        slot,
                        port,
                        started: now,
                        last_seen: now,
                        state: State::Starting,
                        requests: 0,
                        rss: 0,
                        max_requests: if max > 0 { max + jitter } else { 0 },
                        killed_at: None,
                        recycling: false,
                    },
                );
                Some(pid)
            }
            Err(e) => {
                let s = self.slot(slot);
                let delay = s.backoff.next_delay(Duration::ZERO);
                s.next_spawn = Instant::now() + delay;
                tracing::error!("cannot start web worker {slot}: {e}; retrying in {delay:?}");
                None
            }
        }
    }

    fn exited(&mut self, pid: u32, info: ExitInfo) {
        self.stats.retire(pid);
        let Some(w) = self.workers.remove(&pid) else {
            tracing::debug!("reaped pid {pid}: {info}");
            return;
        };
        if let Some(p) = &self.proxy {
            p.backends().remove(pid);
        }
        let uptime = w.started.elapsed().as_secs_f64();
        if matches!(w.state, State::Draining { .. }) || self.stopping.is_some() {
            tracing::info!(
                "web pid {pid} exited: {info}, uptime {uptime:.1}s, {} requests",
                w.requests
            );
            return;
        }
        let delay = if info.is_boot_failure() {
            let d = self.cfg.duration("server-crash-delay");
            tracing::error!(
                "web pid {pid} (slot {}) failed at boot ({info}), uptime {uptime:.1}s; retrying in {d:?}",
                w.slot
            );
            d
        } else {
            let d = self.slot(w.slot).backoff.next_delay(w.started.elapsed());
            let why = match w.killed_at {
                Some(_) => format!(
                    "killed after no heartbeat for {:?}",
                    self.cfg.duration("server-worker-timeout")
                ),
                None => info.to_string(),
            };
            tracing::warn!(
                "web pid {pid} (slot {}) exited: {why}, uptime {uptime:.1}s, {} requests, rss {} KB; replacing in {:.2}s",
                w.slot,
                w.requests,
                w.rss / 1024,
                d.as_secs_f64()
            );
            d
        };
        let s = self.slot(w.slot);
        s.next_spawn = s.next_spawn.max(Instant::now() + delay);
    }

    /// Kills workers that stopped sending heartbeats and drains that overran their deadline.
    fn check_health(&mut self) {
        let timeout = self.cfg.duration("server-worker-timeout");
        let now = Instant::now();
        for (pid, w) in self.workers.iter_mut() {
            if let Some(at) = w.killed_at {
                if now.duration_since(at) > Duration::from_secs(2) {
                    tracing::warn!("web pid {pid} still alive after SIGABRT: SIGKILL");
                    kill_tree(*pid, Signal::SIGKILL);
                    w.killed_at = Some(now);
                }
                continue;
            }
            match w.state {
                State::Draining { deadline } => {
                    if now > deadline + Duration::from_secs(2) {
                        tracing::warn!("web pid {pid} overran its drain deadline: SIGKILL");
                        kill_tree(*pid, Signal::SIGKILL);
                        w.killed_at = Some(now);
                    }
                }
                State::Starting | State::Ready => {
                    let silent = now.duration_since(w.last_seen);
                    if silent > timeout {
                        tracing::error!(
                            "web pid {pid} sent no heartbeat for {:.1}s ({:?}): killing it with SIGABRT",
                            silent.as_secs_f64(),
                            w.state
                        );
                        if let Some(p) = &self.proxy {
                            p.backends().remove(*pid);
                        }
                        kill_group(*pid, Signal::SIGABRT);
                        w.killed_at = Some(now);
                    }
                }
            }
        }
    }

    /// Applies a changed `etc/config` after validating it (unless run-backend restarts us anyway).
    fn check_config(&mut self) {
        if self.boot.watched || self.last_conf_check.elapsed() < self.cfg.duration("watch-interval")
        {
            return;
        }
        self.last_conf_check = Instant::now();
        let now = mtimes(&self.cfg);
        if now == self.conf_mtimes {
            return;
        }
        self.conf_mtimes = now;
        match self.cfg.reload() {
            Ok(new) => {
                tracing::info!("configuration file changed and is valid: rolling restart");
                self.apply(new);
            }
            Err(e) => tracing::error!(
                "configuration file changed but is invalid, keeping the old one: {e}"
            ),
        }
    }

    fn apply(&mut self, new: Config) {
        match backoff(&new) {
            Ok(b) => {
                for s in &mut self.slots {
                    s.backoff = b.clone();
                }
                self.backoff = b;
            }
            Err(e) => {
                tracing::error!("configuration not applied: {e}");
                return;
            }
        }
        self.cfg = new;
        self.roll_all();
    }

    fn roll_all(&mut self) {
        let pids: Vec<u32> = self
            .workers
            .iter()
            .filter(|(_, w)| !matches!(w.state, State::Draining { .. }))
            .map(|(p, _)| *p)
            .collect();
        let roll = self.roll.get_or_insert_with(Roll::default);
        for pid in pids {
            if !roll.queue.contains(&pid) && roll.waiting.map(|(n, _, _)| n) != Some(pid) {
                roll.queue.push_back(pid);
            }
        }
    }

    /// Tells a worker to finish its requests and exit, after taking it out of the proxy.
    fn drain(&mut self, pid: u32) {
        let deadline = Instant::now() + self.cfg.duration("server-drain-timeout");
        if let Some(w) = self.workers.get_mut(&pid) {
            if let Some(p) = &self.proxy {
                p.backends().remove(pid);
            }
            w.state = State::Draining { deadline };
            tracing::info!("draining web pid {pid}");
            kill_group(pid, Signal::SIGTERM);
        }
    }

    /// One step of a rolling restart: start a replacement, wait for its READY, drain the old one,
    /// wait for it to exit; never more than one drain at a time.
    fn step_roll(&mut self) {
        let Some(mut roll) = self.roll.take() else {
            return;
        };
        if let Some((new, old, deadline)) = roll.waiting {
            match self.workers.get(&new).map(|w| w.state) {
                None => {
                    tracing::error!("rolling restart aborted: replacement web pid {new} exited before it was ready; keeping web pid {old}");
                    return;
                }
                Some(State::Ready) => {
                    roll.waiting = None;
                    if self.workers.contains_key(&old) {
                        self.drain(old);
                    }
                }
                Some(_) if Instant::now() > deadline => {
                    tracing::error!("rolling restart aborted: replacement web pid {new} not ready in time; keeping web pid {old}");
                    kill_tree(new, Signal::SIGKILL);
                    if let Some(w) = self.workers.get_mut(&new) {
                        w.state = State::Draining {
                            deadline: Instant::now(),
                        };
                    }
                    return;
                }
                Some(_) => {}
            }
            self.roll = Some(roll);
            return;
        }
        if self
            .workers
            .values()
            .any(|w| matches!(w.state, State::Draining { .. }))
        {
            self.roll = Some(roll);
            return;
        }
        while let Some(old) = roll.queue.pop_front() {
            let Some(w) = self.workers.get(&old) else {
                continue;
            };
            if matches!(w.state, State::Draining { .. }) {
                continue;
            }
            // The replacement takes over the slot of the worker it replaces.
            match self.spawn_worker(w.slot) {
                Some(new) => {
                    let deadline = Instant::now() + self.cfg.duration("server-ready-timeout");
                    roll.waiting = Some((new, old, deadline));
                }
                None => roll.queue.push_front(old),
            }
            self.roll = Some(roll);
            return;
        }
        tracing::info!("rolling restart complete");
    }

    /// Keeps one serving worker in each of the desired slots; each slot restarts on its own
    /// backoff. Workers of slots beyond the desired count are drained one at a time.
    fn manage_count(&mut self) {
        let serving =
            |w: &Worker| !matches!(w.state, State::Draining { .. }) && w.killed_at.is_none();
        let desired = self.desired();
        let now = Instant::now();
        for i in 0..desired {
            let filled = self.workers.values().any(|w| w.slot == i && serving(w));
            if !filled && now >= self.slot(i).next_spawn && self.spawn_worker(i).is_none() {
                break;
            }
        }
        if self.roll.is_some()
            || self
                .workers
                .values()
                .any(|w| matches!(w.state, State::Draining { .. }))
        {
            return;
        }
        let extra = self
            .workers
            .iter()
            .find(|(_, w)| w.slot >= desired && serving(w))
            .map(|(pid, _)| *pid);
        if let Some(pid) = extra {
            tracing::info!("more web workers than the {desired} wanted: removing one");
            self.drain(pid);
        }
    }

    /// Checked on every turn of the loop: when the master is gone (its `PR_SET_PDEATHSIG` SIGTERM
    /// may come while it is still dying, before this process is handed to a new parent), a new
    /// master is about to start a new server. The pub/sub forwarder and the cache peer bus close at
    /// once so that the new server can bind their ports; the HTTP socket (the monitor's) is closed
    /// here and by each worker as it starts to drain; the in-flight requests still finish.
    fn check_orphaned(&mut self) {
        if self.orphaned || nix::unistd::getppid().as_raw() as u32 == self.parent {
            return;
        }
        self.orphaned = true;
        tracing::warn!(
            "the master (pid {}) is gone: releasing the ports for its successor and draining",
            self.parent
        );
        self.forwarder = None;
        self.cache.close_peers();
        if self.stopping.is_none() {
            self.stop();
        }
    }

    fn stop(&mut self) {
        self.stopping = Some(Instant::now() + stop_deadline(&self.cfg, Role::Server));
        // Close our copy of the socket; the workers close theirs as they drain.
        self.listener = None;
        self.https = None;
        if let Some(p) = self.proxy.take() {
            p.stop();
        }
        for pid in self.workers.keys() {
            kill_group(*pid, Signal::SIGTERM);
        }
        let deadline = Instant::now() + self.cfg.duration("server-drain-timeout");
        for w in self.workers.values_mut() {
            w.state = State::Draining { deadline };
        }
    }
}
