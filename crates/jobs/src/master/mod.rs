//! The master's side of jobs: the crontab and its schedule, the queue, the job worker processes,
//! `server` jobs, the control socket, `-server-job` at start and the `bk_jobs` poll. It runs on a
//! thread of its own (a tokio runtime for the socket, the timers and the database); the
//! supervisor loop of the master (process/monitor.rs) only hands it the exits it reaps and its
//! signals through [`Jobs`]. Job workers are spawned from that thread, which lives as long as
//! the master, so their `PDEATHSIG` holds. Its side of the durable queue is in `durable.rs`, its
//! answers to control requests in `requests.rs`.

mod durable;
mod requests;

use super::control::{socket_path, MAX_LINE};
use super::crontab::{self, Entry};
use super::queue::Queue;
use super::store::{self, Store};
use super::{host_name, parse_spec, Job, JobContext, JobError, JobType, QueueRef, Registry};
use bkjs_base::config::Config;
use bkjs_base::sys::Boot;
use bkjs_base::sys::{kill_group, spawn, ChildSpec, ExitInfo};
use chrono::{DateTime, Local};
use durable::{Metrics, Pending};
use nix::sys::signal::Signal;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

/// The environment variable a job worker finds its job in (JSON of [`Job`]).
pub(crate) const JOB_ENV: &str = "_BKJS_JOB";

enum Ctl {
    Exited(u32, ExitInfo),
    Reload,
    Stop,
    Kill,
    Request(Value, oneshot::Sender<Value>),
    Polled(Vec<Job>),
    ServerDone(u64, Result<(), String>),
    /// Jobs were queued: look for due jobs now.
    Wake,
    /// A claim round ended with these jobs (their rows are running on this node).
    Claimed(Vec<Job>),
    /// A lease check ended.
    Reaped,
    /// The LISTEN connection (PostgreSQL) is up or down, or jobs were queued due at a time.
    Heard(store::listen::Heard),
}

/// The master's handle on its jobs thread.
pub struct Jobs {
    tx: mpsc::UnboundedSender<Ctl>,
    /// Pids of running job workers, to tell the supervisor loop which exits are ours.
    pids: Arc<Mutex<HashSet<u32>>>,
    live: Arc<AtomicUsize>,
    /// The control socket, removed on drop only while it is still this master's.
    _socket: bkjs_base::sys::SocketFile,
}

impl Jobs {
    /// Reads `-server-job` (a bad value is an error naming it), loads the crontab (a bad one is
    /// logged and waits to be fixed), opens the control socket and starts the jobs thread.
    pub fn start(
        cfg: &Config,
        boot: &Boot,
        registry: Arc<Registry>,
        tables: Vec<bkjs_db::Table>,
    ) -> Result<Jobs, String> {
        use base64::Engine;
        let mut initial = Vec::new();
        for b64 in cfg.list("server-job") {
            let bad = |why: String| format!("invalid value for -server-job ({b64}): {why}");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| bad(format!("not base64: {e}")))?;
            let text = String::from_utf8(bytes).map_err(|e| bad(e.to_string()))?;
            let jobs = super::parse_text(&text, JobType::Local).map_err(|e| bad(e.to_string()))?;
            registry.check(&jobs).map_err(|e| bad(e.to_string()))?;
            initial.extend(jobs);
        }
        store::queue_limits(cfg)?;
        let paths = crontab::paths(&cfg.dir("etc"));
        let entries = match crontab::load_all(&paths) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("crontab not loaded: {e}");
                Vec::new()
            }
        };
        let socket = socket_path(cfg);
        let dir = bkjs_base::sys::socket_dir(cfg);
        bkjs_base::sys::private_dir(&dir)
            .map_err(|e| format!("cannot prepare {}: {e}", dir.display()))?;
        // Renamed over a socket left by a killed master (or one still stopping); mode 0600.
        let (listener, socket_file) = bkjs_base::sys::bind_unix(&socket)
            .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let (uid, gid) = bkjs_base::sys::target_ids(cfg);
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::chown(&socket, uid, gid)
                .map_err(|e| format!("cannot hand {} to -uid/-gid: {e}", socket.display()))?;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let pids = Arc::new(Mutex::new(HashSet::new()));
        let live = Arc::new(AtomicUsize::new(0));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let server_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("server-jobs")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let mut state = State {
            cfg: cfg.clone(),
            exe: boot.exe.clone(),
            registry,
            tables,
            queue: Queue::new(),
            crontab: Vec::new(),
            crontab_seen: paths.iter().map(|p| file_stamp(p)).collect(),
            crontab_paths: paths.to_vec(),
            crontab_checked: Instant::now(),
            runs: HashMap::new(),
            by_pid: HashMap::new(),
            pids: pids.clone(),
            live: live.clone(),
            stopping: false,
            tx: tx.clone(),
            db: Arc::new(tokio::sync::OnceCell::new()),
            server_rt,
            last_poll: Instant::now(),
            polling: false,
            poll_failing: false,
            store: Arc::new(tokio::sync::OnceCell::new()),
            node: host_name(cfg),
            claiming: false,
            claim_again: false,
            last_claim: Instant::now(),
            reaping: false,
            last_reap: Instant::now(),
            last_heartbeat: Instant::now(),
            last_prune: Instant::now(),
            metrics: Arc::new(Metrics::new()),
            finished: None,
            listening: false,
            listener: false,
            next_due: None,
        };
        state.set_crontab(entries);
        if !initial.is_empty() {
            state.submit(initial.into_iter().map(Pending::of).collect(), None);
        }
        std::thread::Builder::new()
            .name("jobs".into())
            .spawn(move || {
                rt.block_on(async move {
                    match tokio::net::UnixListener::from_std(listener) {
                        Ok(l) => state.run(rx, l).await,
                        Err(e) => tracing::error!("jobs: control socket: {e}"),
                    }
                })
            })
            .map_err(|e| e.to_string())?;
        Ok(Jobs {
            tx,
            pids,
            live,
            _socket: socket_file,
        })
    }

    /// Hands the jobs thread a reaped exit; false when `pid` is not a job worker.
    pub fn exited(&self, pid: u32, info: ExitInfo) -> bool {
        let ours = self.pids.lock().remove(&pid);
        if ours {
            let _ = self.tx.send(Ctl::Exited(pid, info));
        }
        ours
    }

    /// Reads the crontab again (SIGHUP).
    pub fn reload(&self) {
        let _ = self.tx.send(Ctl::Reload);
    }

    /// Starts no more jobs and asks the running workers to stop (SIGTERM).
    pub fn stop(&self) {
        let _ = self.tx.send(Ctl::Stop);
    }

    /// Kills every job worker now (the stop deadline passed, or SIGQUIT).
    pub fn kill(&self) {
        for pid in self.pids.lock().iter() {
            kill_group(*pid, Signal::SIGKILL);
        }
        let _ = self.tx.send(Ctl::Kill);
    }

    /// Job workers still running.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }
}

/// A job that runs: in a worker process (`pid`) or inside the master (`task`).
struct Run {
    job: Job,
    pid: Option<u32>,
    task: Option<tokio::task::AbortHandle>,
    started: Instant,
    started_ms: i64,
    killed: bool,
}

/// FNV-1a: a hash that is the same on every node and every build (a tick's unique key).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn file_stamp(p: &std::path::Path) -> Option<(SystemTime, u64)> {
    std::fs::metadata(p)
        .ok()
        .and_then(|m| Some((m.modified().ok()?, m.len())))
}

struct State {
    cfg: Config,
    exe: PathBuf,
    registry: Arc<Registry>,
    tables: Vec<bkjs_db::Table>,
    queue: Queue,
    crontab: Vec<(Entry, Option<DateTime<Local>>)>,
    crontab_paths: Vec<PathBuf>,
    crontab_seen: Vec<Option<(SystemTime, u64)>>,
    crontab_checked: Instant,
    runs: HashMap<u64, Run>,
    by_pid: HashMap<u32, u64>,
    pids: Arc<Mutex<HashSet<u32>>>,
    live: Arc<AtomicUsize>,
    stopping: bool,
    tx: mpsc::UnboundedSender<Ctl>,
    db: Arc<tokio::sync::OnceCell<Arc<bkjs_db::Db>>>,
    server_rt: tokio::runtime::Runtime,
    last_poll: Instant,
    polling: bool,
    poll_failing: bool,
    /// The durable queue (opened on first use, on the server-jobs runtime).
    store: Arc<tokio::sync::OnceCell<Store>>,
    /// This node's name in the queue (the host name of `-server-jobs-host`).
    node: String,
    claiming: bool,
    claim_again: bool,
    last_claim: Instant,
    reaping: bool,
    last_reap: Instant,
    last_heartbeat: Instant,
    last_prune: Instant,
    metrics: Arc<Metrics>,
    /// See [`State::finisher`].
    finished: Option<mpsc::UnboundedSender<QueueRef>>,
    /// The LISTEN connection is up: the poll slows down to `-jobs-poll-fallback`.
    listening: bool,
    /// The listener task was started.
    listener: bool,
    /// The earliest known due time of a queued job that is not due yet (ms): a delay, a backoff.
    next_due: Option<i64>,
}

impl State {
    async fn run(
        &mut self,
        mut rx: mpsc::UnboundedReceiver<Ctl>,
        listener: tokio::net::UnixListener,
    ) {
        tracing::info!(
            "jobs: {} crontab entries, up to {} job workers, registered: {}",
            self.crontab.len(),
            self.cfg.int("server-job-workers"),
            self.registry.names().join(", ")
        );
        self.report_metrics();
        loop {
            self.housekeeping();
            let wake = self.next_wake();
            tokio::select! {
                ctl = rx.recv() => match ctl {
                    Some(c) => self.handle(c),
                    None => return,
                },
                conn = listener.accept() => match conn {
                    Ok((s, _)) => { tokio::spawn(serve_conn(s, self.tx.clone())); }
                    Err(e) => tracing::warn!("jobs: control socket accept: {e}"),
                },
                _ = tokio::time::sleep(wake) => {}
            }
        }
    }

    /// Sends the master's metrics (the queue's `jobs.*`) to the server every metrics tick, so
    /// that `/system/stats` and `/metrics` show them with the web workers' (docs/stats.md).
    fn report_metrics(&self) {
        if self.cfg.bool("no-web") {
            return;
        }
        let url = bkjs_ipc::hub_url(&self.cfg);
        let ipc = match bkjs_ipc::Client::connect(&url, self.cfg.duration("ipc-timeout")) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("jobs: no metrics for the server: {e}");
                return;
            }
        };
        let pid = std::process::id();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(bkjs_base::metrics::TICK);
            loop {
                tick.tick().await;
                ipc.send(bkjs_ipc::Request::MasterMetrics {
                    pid,
                    snapshot: bkjs_base::metrics::Registry::global().snapshot(),
                });
            }
        });
    }

    /// How often the queue is polled for due jobs: `-jobs-poll-interval`, or
    /// `-jobs-poll-fallback` while notifications wake this master (PostgreSQL LISTEN).
    fn poll_every(&self) -> Duration {
        if self.listening {
            self.cfg.duration("jobs-poll-fallback")
        } else {
            self.cfg.duration("jobs-poll-interval")
        }
    }

    /// How long the loop may sleep: until the next cron time or known due job, at most 250 ms
    /// (for the max-time checks, the crontab and bk_jobs polls).
    fn next_wake(&self) -> Duration {
        let now = Local::now();
        let cap = Duration::from_millis(250).min(self.poll_every().max(Duration::from_millis(5)));
        let due = self
            .next_due
            .map(|t| Duration::from_millis((t - bkjs_base::time::now_ms()).max(0) as u64));
        self.crontab
            .iter()
            .filter_map(|(_, next)| *next)
            .map(|t| (t - now).to_std().unwrap_or(Duration::ZERO))
            .chain(due)
            .min()
            .map_or(cap, |d| d.min(cap))
    }

    /// A job is due at `at` (ms): claimed now, or when its time comes.
    fn due(&mut self, at: i64) {
        if at <= bkjs_base::time::now_ms() {
            self.claim();
        } else {
            self.next_due = Some(self.next_due.map_or(at, |d| d.min(at)));
        }
    }

    fn housekeeping(&mut self) {
        self.fire_cron();
        self.check_crontab();
        self.poll_bk_jobs();
        self.check_max_time();
        self.dispatch();
        self.start_listener();
        let due = self
            .next_due
            .is_some_and(|t| t <= bkjs_base::time::now_ms());
        if due {
            self.next_due = None;
        }
        if due || self.last_claim.elapsed() >= self.poll_every() {
            self.claim();
        }
        self.leases();
    }

    /// Starts, once the server is ready, the task that LISTENs for queued jobs when the queue is
    /// on PostgreSQL and `-jobs-listen` is on (store/listen.rs).
    fn start_listener(&mut self) {
        if self.listener || !self.ready() || !self.cfg.bool("jobs-listen") {
            return;
        }
        self.listener = true;
        let (store, tx, cfg, node) = (
            self.store.clone(),
            self.tx.clone(),
            self.cfg.clone(),
            self.node.clone(),
        );
        self.server_rt.spawn(async move {
            // The queue's pool decides; an unreachable database is tried again.
            let store = loop {
                match store.get_or_try_init(|| Store::open(&cfg)).await {
                    Ok(s) => break s.clone(),
                    Err(_) if tx.is_closed() => return,
                    Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                }
            };
            if store.can_listen() {
                store::listen::run(cfg, node, move |h| tx.send(Ctl::Heard(h)).is_ok()).await;
            }
        });
    }

    fn handle(&mut self, ctl: Ctl) {
        match ctl {
            Ctl::Exited(pid, info) => self.exited(pid, info),
            Ctl::Reload => self.reload_crontab("SIGHUP"),
            Ctl::Stop => {
                self.stopping = true;
                // Claimed jobs that never started go back to the queue at once (not counted as
                // an attempt), rather than when their lease expires.
                let claimed: Vec<QueueRef> =
                    self.queue.waiting().filter_map(|j| j.queued).collect();
                let dropped = self.queue.clear_waiting();
                if dropped > 0 {
                    tracing::info!(
                        "jobs: stopping; {dropped} waiting jobs dropped ({} back in the queue)",
                        claimed.len()
                    );
                }
                if !claimed.is_empty() {
                    let store = self.store_task();
                    self.server_rt.spawn(async move {
                        if let Ok(store) = store.await {
                            for q in claimed {
                                let _ = store.release(q).await;
                            }
                        }
                    });
                }
                for run in self.runs.values() {
                    if let Some(pid) = run.pid {
                        kill_group(pid, Signal::SIGTERM);
                    }
                    if let Some(t) = &run.task {
                        t.abort();
                    }
                }
            }
            Ctl::Kill => self.stopping = true,
            Ctl::Request(req, reply) => self.request(&req, reply),
            Ctl::Polled(jobs) => {
                self.polling = false;
                if !jobs.is_empty() {
                    tracing::info!("bk_jobs for {}: {} jobs claimed", self.node, jobs.len());
                    let target = self.node.clone();
                    let items = jobs
                        .into_iter()
                        .map(|job| Pending {
                            job,
                            key: None,
                            target: target.clone(),
                        })
                        .collect();
                    self.submit(items, None);
                }
            }
            Ctl::Wake => self.claim(),
            Ctl::Claimed(jobs) => {
                self.claiming = false;
                let more = !jobs.is_empty() || self.claim_again;
                self.claim_again = false;
                for job in jobs {
                    self.queue.push(job);
                }
                self.dispatch();
                if more {
                    self.claim();
                }
            }
            Ctl::Reaped => self.reaping = false,
            Ctl::Heard(store::listen::Heard::Up) => {
                self.listening = true;
                // Whatever was queued while nobody listened.
                self.claim();
            }
            Ctl::Heard(store::listen::Heard::Down) => self.listening = false,
            Ctl::Heard(store::listen::Heard::Due(at)) => self.due(at),
            Ctl::ServerDone(id, r) => {
                self.claim();
                if let Some(run) = self.runs.remove(&id) {
                    self.queue.finish(id);
                    let took = run.started.elapsed().as_secs_f64();
                    match r {
                        Ok(()) => tracing::info!(
                            "job {} (in the master) finished in {took:.3}s",
                            run.job.name
                        ),
                        Err(e) if run.killed => {
                            tracing::info!("job {} (in the master) ended: {e}", run.job.name)
                        }
                        Err(e) => tracing::error!(
                            "job {} (in the master) failed after {took:.3}s: {e}",
                            run.job.name
                        ),
                    }
                }
            }
        }
    }

    fn exited(&mut self, pid: u32, info: ExitInfo) {
        let Some(id) = self.by_pid.remove(&pid) else {
            return;
        };
        self.live.fetch_sub(1, Ordering::SeqCst);
        self.queue.finish(id);
        let Some(run) = self.runs.remove(&id) else {
            return;
        };
        let took = run.started.elapsed().as_secs_f64();
        let name = &run.job.name;
        if info == ExitInfo::Code(0) {
            self.metrics.done.inc();
        } else if let Some(q) = run.job.queued {
            // The worker records its own failure (exit 1); a crash, a kill or a worker that
            // could not record it is recorded here. Fenced: a no-op when already recorded.
            let why = if run.killed {
                "killed after -server-job-max-time".to_string()
            } else {
                format!("the job worker {info}")
            };
            self.record_failure(name.clone(), q, why);
        }
        self.claim();
        match info {
            ExitInfo::Code(0) => {
                tracing::info!("job {name} (worker pid {pid}) finished in {took:.3}s")
            }
            _ if run.killed => tracing::info!("job {name} (worker pid {pid}) ended: {info}"),
            ExitInfo::Code(_) => tracing::warn!(
                "job {name} (worker pid {pid}) failed: {info} after {took:.3}s (its reason is logged above)"
            ),
            ExitInfo::Signal(_) => tracing::error!(
                "job {name} (worker pid {pid}) crashed: {info} after {took:.3}s; the master goes on"
            ),
        }
    }

    fn free_slots(&self) -> usize {
        let max = self.cfg.int("server-job-workers").max(0) as usize;
        max.saturating_sub(self.live.load(Ordering::SeqCst))
    }

    /// Whether jobs may run: the server has created the tables (its IPC socket exists once it
    /// has), or there is no server (`-no-web`: the master prepares the database itself).
    fn ready(&self) -> bool {
        self.cfg.bool("no-web") || bkjs_ipc::hub_path(&self.cfg).exists()
    }

    /// Starts every waiting job that may start now.
    fn dispatch(&mut self) {
        if self.stopping || !self.ready() {
            return;
        }
        while let Some((id, job)) = self.queue.next(self.free_slots()) {
            match job.kind {
                JobType::Local => self.start_worker(id, job),
                JobType::Server => self.start_server_job(id, job),
            }
        }
    }

    fn start_worker(&mut self, id: u64, job: Job) {
        let text = match serde_json::to_string(&job) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("job {}: {e}", job.name);
                self.queue.finish(id);
                return;
            }
        };
        let mut args = vec!["-worker".to_string()];
        args.extend(self.cfg.args.to_words());
        let spec = ChildSpec {
            exe: self.exe.clone(),
            title: format!("{}: worker {}", self.cfg.str("name"), job.name),
            args,
            env: vec![(JOB_ENV.to_string(), text)],
            fds: Vec::new(),
        };
        // Held across the spawn, so the supervisor cannot reap the pid before it is known here.
        let mut pids = self.pids.lock();
        match spawn(&spec) {
            Ok(pid) => {
                pids.insert(pid);
                drop(pids);
                self.live.fetch_add(1, Ordering::SeqCst);
                self.by_pid.insert(pid, id);
                self.metrics.started.inc();
                tracing::info!("job {} started in worker pid {pid}", job.name);
                if let Some(q) = job.queued {
                    let store = self.store_task();
                    self.server_rt.spawn(async move {
                        if let Ok(s) = store.await {
                            let _ = s.set_pid(q.id, q.attempt, pid).await;
                        }
                    });
                }
                self.runs.insert(
                    id,
                    Run {
                        job,
                        pid: Some(pid),
                        task: None,
                        started: Instant::now(),
                        started_ms: bkjs_base::time::now_ms(),
                        killed: false,
                    },
                );
            }
            Err(e) => {
                drop(pids);
                tracing::error!("job {}: cannot start a job worker: {e}", job.name);
                self.queue.finish(id);
            }
        }
    }

    /// The database of the master (opened on first use, on the server-jobs runtime).
    fn db_task(&self) -> impl std::future::Future<Output = Result<Arc<bkjs_db::Db>, String>> {
        let (cell, cfg, tables) = (self.db.clone(), self.cfg.clone(), self.tables.clone());
        async move {
            cell.get_or_try_init(|| async {
                // A server runs unless -no-web: writes invalidate its cache.
                let with_cache = cfg.str("cache-type") != "local" || !cfg.bool("no-web");
                let db = super::open_db(&cfg, tables, with_cache)
                    .await
                    .map_err(|e| format!("cannot open the database: {e}"))?;
                if cfg.bool("no-web") {
                    // No server creates the tables then.
                    db.init()
                        .await
                        .map_err(|e| format!("cannot prepare the database: {e}"))?;
                }
                Ok::<_, String>(Arc::new(db))
            })
            .await
            .cloned()
        }
    }

    fn start_server_job(&mut self, id: u64, job: Job) {
        let Some(handler) = self.registry.get(&job.name) else {
            self.queue.finish(id);
            return;
        };
        let (tx, cfg, name, args) = (
            self.tx.clone(),
            self.cfg.clone(),
            job.name.clone(),
            job.args.clone(),
        );
        let q = job.queued;
        let db = self.db_task();
        let inner = self.server_rt.spawn(async move {
            let db = db.await?;
            handler(JobContext {
                name,
                args,
                cfg,
                db,
                id: q.map_or(0, |q| q.id),
                attempt: q.map_or(0, |q| q.attempt),
            })
            .await
            .map_err(|e| e.to_string())
        });
        let abort = inner.abort_handle();
        let (store, metrics) = (self.store_task(), self.metrics.clone());
        let backoff = (
            self.cfg.duration("jobs-backoff"),
            self.cfg.duration("jobs-backoff-max"),
        );
        let job_name = job.name.clone();
        let finished = self.finisher();
        self.metrics.started.inc();
        self.server_rt.spawn(async move {
            let r = match inner.await {
                Ok(r) => r,
                Err(e) if e.is_panic() => Err(format!("panicked: {e}")),
                Err(_) => Err("stopped (killed after -server-job-max-time)".to_string()),
            };
            if let (Some(q), Ok(())) = (q, &r) {
                // Recorded in batches by the finisher.
                let _ = finished.send(q);
            } else if let (Some(q), Err(e)) = (q, &r) {
                let rec: Result<Option<String>, JobError> = async {
                    let store = store.await?;
                    let d = store::backoff(q.attempt, backoff.0, backoff.1);
                    let state = store.failed(q.id, q.attempt, e, d).await?;
                    metrics.failure(state.as_ref().map(|s| s.0.as_str()));
                    if let Some((s, at)) = &state {
                        if s == "queued" {
                            let _ = tx.send(Ctl::Heard(store::listen::Heard::Due(*at)));
                        }
                    }
                    Ok(state.map(|s| format!("now {}", s.0)))
                }
                .await;
                match rec {
                    Ok(None) => {}
                    Ok(Some(note)) => {
                        tracing::info!("job {job_name} ({}) attempt {}: {note}", q.id, q.attempt)
                    }
                    Err(e) => {
                        tracing::error!("job {job_name} ({}): cannot record its result: {e}", q.id)
                    }
                }
            } else if r.is_ok() {
                metrics.done.inc();
            }
            let _ = tx.send(Ctl::ServerDone(id, r));
        });
        tracing::info!("job {} started in the master", job.name);
        self.runs.insert(
            id,
            Run {
                job,
                pid: None,
                task: Some(abort),
                started: Instant::now(),
                started_ms: bkjs_base::time::now_ms(),
                killed: false,
            },
        );
    }

    fn check_max_time(&mut self) {
        let max = self.cfg.duration("server-job-max-time");
        if max.is_zero() {
            return;
        }
        for run in self.runs.values_mut() {
            if run.killed || run.started.elapsed() <= max {
                continue;
            }
            run.killed = true;
            tracing::error!(
                "job {} ran longer than -server-job-max-time ({}): killing it",
                run.job.name,
                humantime::format_duration(max)
            );
            if let Some(pid) = run.pid {
                kill_group(pid, Signal::SIGKILL);
            }
            if let Some(t) = &run.task {
                t.abort();
            }
        }
    }

    fn set_crontab(&mut self, entries: Vec<Entry>) {
        let now = Local::now();
        self.crontab = entries
            .into_iter()
            .map(|e| {
                let next = e.next_after(&now);
                (e, next)
            })
            .collect();
    }

    /// Queues the jobs of the entries whose time came. A tick's unique key is the entry (its id
    /// or cron spec), the job (position, arguments, name) and the tick's time, so nodes sharing
    /// the queue run it once; a `per_node` entry runs once on each node, on that node.
    fn fire_cron(&mut self) {
        let now = Local::now();
        let mut due = Vec::new();
        for (entry, next) in self.crontab.iter_mut() {
            let Some(tick) = next.filter(|t| *t <= now) else {
                continue;
            };
            let label = entry.id.clone().unwrap_or_else(|| entry.cron.clone());
            // A per_node entry is pinned to this node: its job (cleaning local files, say)
            // is about this machine, so another node's worker must not claim it.
            let target = if entry.per_node {
                self.node.clone()
            } else {
                String::new()
            };
            for (i, job) in entry.jobs.iter().enumerate() {
                let node = if entry.per_node {
                    format!("{}:", self.node)
                } else {
                    String::new()
                };
                due.push(Pending {
                    job: job.clone(),
                    key: Some(format!(
                        "{}{node}{label}:{i}:{:016x}:{}:{}",
                        store::TICK,
                        fnv1a(job.args.to_string().as_bytes()),
                        job.name,
                        tick.timestamp()
                    )),
                    target: target.clone(),
                });
            }
            *next = entry.next_after(&now);
        }
        if !due.is_empty() && !self.stopping {
            self.submit(due, None);
        }
    }

    fn reload_crontab(&mut self, why: &str) {
        match crontab::load_all(&self.crontab_paths) {
            Ok(entries) => {
                tracing::info!(
                    "{why}: crontab reloaded from {}, {} entries",
                    self.crontab_paths
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(" + "),
                    entries.len()
                );
                self.set_crontab(entries);
            }
            Err(e) => {
                tracing::error!("{why}: crontab not applied, the previous schedule stays: {e}")
            }
        }
    }

    fn check_crontab(&mut self) {
        // Also under run-backend: its watcher leaves etc/crontab to us rather than restarting.
        if self.crontab_checked.elapsed() < self.cfg.duration("watch-interval") {
            return;
        }
        self.crontab_checked = Instant::now();
        let stamp: Vec<_> = self.crontab_paths.iter().map(|p| file_stamp(p)).collect();
        if stamp != self.crontab_seen {
            self.crontab_seen = stamp;
            self.reload_crontab("crontab changed");
        }
    }

    /// Claims the rows of `bk_jobs` for this host (a row is ours once we deleted it) and queues
    /// their jobs; at most one poll at a time.
    fn poll_bk_jobs(&mut self) {
        let every = self.cfg.duration("server-jobs-interval");
        if every.is_zero()
            || self.polling
            || self.stopping
            || self.last_poll.elapsed() < every
            || !self.ready()
        {
            return;
        }
        self.last_poll = Instant::now();
        self.polling = true;
        let (tx, host, db) = (self.tx.clone(), host_name(&self.cfg), self.db_task());
        let first_failure = !self.poll_failing;
        self.poll_failing = false;
        self.server_rt.spawn(async move {
            let r: Result<Vec<Job>, String> = async {
                let db = db.await?;
                let mut q = bkjs_db::Row::new();
                q.insert("host".into(), json!(host));
                let opts = bkjs_db::Options {
                    count: 100,
                    ..Default::default()
                };
                let rows = db
                    .select("bk_jobs", &q, &opts)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut jobs = Vec::new();
                for row in rows.rows {
                    let mut key = bkjs_db::Row::new();
                    for k in ["id", "tag"] {
                        key.insert(k.into(), row.get(k).cloned().unwrap_or(Value::Null));
                    }
                    let claimed = db
                        .del("bk_jobs", &key, &bkjs_db::Options::default())
                        .await
                        .map_err(|e| e.to_string())?;
                    if claimed.affected != 1 {
                        continue;
                    }
                    let kind =
                        JobType::parse(row.get("type").and_then(Value::as_str).unwrap_or(""))
                            .unwrap_or_default();
                    let spec = match row.get("job") {
                        Some(Value::String(s)) => {
                            serde_json::from_str(s).unwrap_or(Value::String(s.clone()))
                        }
                        Some(v) => v.clone(),
                        None => Value::Null,
                    };
                    match parse_spec(&spec, kind) {
                        Ok(j) => jobs.extend(j),
                        Err(e) => tracing::error!("bk_jobs row {:?}: {e}; dropped", row.get("id")),
                    }
                }
                Ok(jobs)
            }
            .await;
            match r {
                Ok(jobs) => {
                    let _ = tx.send(Ctl::Polled(jobs));
                }
                Err(e) => {
                    if first_failure {
                        tracing::warn!("bk_jobs poll: {e}");
                    }
                    let _ = tx.send(Ctl::Polled(Vec::new()));
                }
            }
        });
    }
}

/// One control connection: request lines in, each answered by its reply line in order, until
/// the client closes it (a web worker keeps it for its next requests) or sends a line longer
/// than [`MAX_LINE`] (answered 400, then closed).
async fn serve_conn(s: tokio::net::UnixStream, tx: mpsc::UnboundedSender<Ctl>) {
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    loop {
        line.clear();
        let (reply, last) = match (&mut r).take(MAX_LINE as u64).read_line(&mut line).await {
            Ok(0) => return,
            Ok(_) if !line.ends_with('\n') && line.len() >= MAX_LINE => (
                json!({"status": 400, "message": format!("the request is longer than {MAX_LINE} bytes")}),
                true,
            ),
            Ok(_) => match serde_json::from_str::<Value>(&line) {
                Ok(req) => {
                    let (otx, orx) = oneshot::channel();
                    if tx.send(Ctl::Request(req, otx)).is_err() {
                        return;
                    }
                    match orx.await {
                        Ok(v) => (v, false),
                        Err(_) => return,
                    }
                }
                Err(e) => (
                    json!({"status": 400, "message": format!("the request is not JSON: {e}")}),
                    false,
                ),
            },
            Err(e) => {
                tracing::debug!("jobs: control read: {e}");
                return;
            }
        };
        let mut out = reply.to_string();
        out.push('\n');
        if w.write_all(out.as_bytes()).await.is_err() || last {
            return;
        }
    }
}
