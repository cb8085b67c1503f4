//! `bkjs run -single`: the whole tree in one process, for development and small deployments — a
//! monolith made of the same components, not a copy of them. The server's part ([`Core`]: the
//! listening sockets, the prepared tables, the LRU cache and its peer bus, the pub/sub forwarder,
//! the stats and the IPC hub), the master's jobs ([`bkjs_jobs::Jobs`]: crontab, durable queue,
//! `server` jobs on its own runtime, `local` jobs in job worker processes as usual) and one web
//! worker's API ([`serve_api`], reaching the cache through [`Client::in_process`]: no IPC hop)
//! all run here with the same configuration.
//!
//! The main thread runs the supervisor loop (signals, reaped job workers, control messages);
//! the API runs on a thread of its own with a runtime of `-api-threads` threads. SIGHUP (a valid
//! configuration), SIGUSR2 and `/system/restart` replace the API in place: a new generation is
//! built with the new configuration on a duplicate of the listening socket, and once it accepts
//! the old one drains, so no connection is refused. SIGTERM/SIGINT drain the API, stop the jobs
//! (running workers get SIGTERM, claimed jobs go back to the queue) and exit with 0 once both
//! are done, or kill what is left after `-server-drain-timeout` + 2 s.
//!
//! What it gives up (docs/processes.md): nothing restarts a crashed process, since there is no
//! parent; a panic in a request is caught by the serve loop, but an abort takes everything down.

use super::monitor::{cluster_config, stop_deadline, JobsSetup, Watchdog};
use super::server::Core;
use super::web::serve_api;
use super::{drop_privileges, reap, Event, Events, Role, EXIT_BOOT};
use bkjs_base::config::Config;
use bkjs_base::sys::Boot;
use bkjs_ipc::{Client, Request};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// What the supervisor loop tells the API thread.
enum ApiCtl {
    /// Serve with this configuration from now on (SIGHUP, SIGUSR2, `/system/restart`).
    Replace(Box<Config>),
    /// Drain and end.
    Stop,
}

/// Runs everything in this process until it is told to stop; returns the exit code.
pub fn run_single(cfg: Config, boot: &Boot, jobs: JobsSetup, routes: bkjs_api::Routes) -> i32 {
    let events = match Events::new() {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("cannot install signal handlers: {e}");
            return EXIT_BOOT;
        }
    };
    if let Err(e) = cluster_config(&cfg) {
        tracing::error!("{e}");
        return bkjs_base::config::EXIT_USAGE;
    }
    if cfg.int("proxy-port") > 0 {
        tracing::error!(
            "invalid value for -proxy-port: proxy mode forwards to web worker processes, and -single has none"
        );
        return bkjs_base::config::EXIT_USAGE;
    }
    if cfg.bool("no-web") {
        tracing::error!("invalid value for -no-web: -single always serves the API");
        return bkjs_base::config::EXIT_USAGE;
    }
    let (registry, tables) = jobs;
    let core = match Core::start(&cfg, boot, tables.clone(), events.tx.clone()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // Started once the tables exist and the hub listens (jobs wait for it, see `Jobs::ready`).
    let jobs = match bkjs_jobs::Jobs::start(&cfg, boot, registry, tables.clone()) {
        Ok(j) => j,
        Err(e) => {
            tracing::error!("{e}");
            return bkjs_base::config::EXIT_USAGE;
        }
    };
    // As a web worker does once it holds the sockets: the seal key file belongs to the user the
    // process started as; then -uid/-gid for everything that follows.
    if let Err(e) = bkjs_db::seal::SealKey::preload(&cfg) {
        tracing::error!("cannot load the seal key: {e}");
        return EXIT_BOOT;
    }
    if let Err(e) = drop_privileges(&cfg) {
        tracing::error!("cannot drop privileges: {e}");
        return EXIT_BOOT;
    }
    let addr = core
        .listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let ipc = Client::in_process(core.handler.clone());
    let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
    let api_thread = {
        let (cfg, listener) = (cfg.clone(), core.listener.try_clone());
        let https = match core.https.as_ref().map(TcpListener::try_clone).transpose() {
            Ok(h) => h,
            Err(e) => {
                tracing::error!("cannot share the HTTPS socket: {e}");
                return EXIT_BOOT;
            }
        };
        let listener = match listener {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("cannot share the listening socket: {e}");
                return EXIT_BOOT;
            }
        };
        let sockets = Sockets { listener, https };
        let spawned = std::thread::Builder::new()
            .name("api".into())
            .spawn(move || api_thread(cfg, sockets, tables, routes, ipc, ctl_rx));
        match spawned {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("cannot start the API thread: {e}");
                return EXIT_BOOT;
            }
        }
    };
    tracing::info!(
        "single process listening on {addr}{}: server, API, master and jobs in pid {}",
        if boot.listen_fds.is_empty() {
            ""
        } else {
            " (inherited socket)"
        },
        std::process::id()
    );
    let mut cfg = cfg;
    let mut stopping: Option<Instant> = None;
    let mut watchdog = Watchdog::new(boot);
    let replace = |cfg: &Config, why: &str| {
        tracing::info!("{why}: replacing the API in place");
        let _ = ctl_tx.send(ApiCtl::Replace(Box::new(cfg.clone())));
    };
    let code = loop {
        match events.next(Duration::from_millis(100)) {
            Some(Event::Signal(libc::SIGCHLD)) => {
                for (pid, info) in reap() {
                    if !jobs.exited(pid, info) {
                        tracing::debug!("reaped pid {pid}: {info}");
                    }
                }
            }
            Some(Event::Signal(sig @ (libc::SIGTERM | libc::SIGINT))) => {
                if stopping.is_none() {
                    tracing::info!("signal {sig}: draining the API and stopping the jobs");
                    stopping = Some(Instant::now() + stop_deadline(&cfg, Role::Server));
                    let _ = ctl_tx.send(ApiCtl::Stop);
                    jobs.stop();
                }
            }
            Some(Event::Signal(libc::SIGQUIT)) => {
                tracing::info!("SIGQUIT: immediate stop");
                jobs.kill();
                break 0;
            }
            Some(Event::Signal(libc::SIGHUP)) if stopping.is_none() => match cfg.reload() {
                Ok(new) => {
                    cfg = new;
                    jobs.reload();
                    replace(&cfg, "SIGHUP: configuration is valid");
                }
                Err(e) => tracing::error!("SIGHUP: configuration not applied: {e}"),
            },
            Some(Event::Signal(libc::SIGUSR1)) => bkjs_base::log::reopen(),
            Some(Event::Signal(libc::SIGUSR2)) if stopping.is_none() => replace(&cfg, "SIGUSR2"),
            Some(Event::Ipc(Request::Restart { .. })) if stopping.is_none() => {
                replace(&cfg, "/system/restart")
            }
            Some(_) | None => {}
        }
        watchdog.tick();
        if let Some(deadline) = stopping {
            let workers = jobs.live();
            if api_thread.is_finished() && workers == 0 {
                break 0;
            }
            if Instant::now() >= deadline {
                if workers > 0 {
                    tracing::warn!("{workers} job workers did not stop in time: killing them");
                    jobs.kill();
                    std::thread::sleep(Duration::from_millis(50));
                    for (pid, info) in reap() {
                        jobs.exited(pid, info);
                    }
                }
                if !api_thread.is_finished() {
                    tracing::warn!("the API did not drain in time: exiting with requests open");
                }
                break 0;
            }
        }
    };
    drop(core);
    tracing::info!("stopped");
    code
}

/// The listening sockets every API generation serves (each takes duplicates of them).
struct Sockets {
    listener: TcpListener,
    https: Option<TcpListener>,
}

/// One API generation: its drain switch and its serving task.
struct Generation {
    drain: watch::Sender<bool>,
    task: tokio::task::JoinHandle<i32>,
}

/// The API thread: a runtime of `-api-threads` threads serving one generation at a time (two
/// while one replaces the other).
fn api_thread(
    cfg: Config,
    sockets: Sockets,
    tables: Vec<bkjs_db::Table>,
    routes: bkjs_api::Routes,
    ipc: Client,
    ctl: mpsc::UnboundedReceiver<ApiCtl>,
) {
    let rt = crate::web::api_runtime(&cfg);
    match rt {
        Ok(rt) => rt.block_on(generations(cfg, sockets, tables, routes, ipc, ctl)),
        Err(e) => tracing::error!("cannot start the API runtime: {e}"),
    }
}

async fn generations(
    cfg: Config,
    sockets: Sockets,
    tables: Vec<bkjs_db::Table>,
    routes: bkjs_api::Routes,
    ipc: Client,
    mut ctl: mpsc::UnboundedReceiver<ApiCtl>,
) {
    let start = |cfg: Config| -> Result<(Generation, oneshot::Receiver<()>), String> {
        let listener = sockets
            .listener
            .try_clone()
            .map_err(|e| format!("cannot share the listening socket: {e}"))?;
        // The certificate is read anew by every generation (a SIGHUP reloads it).
        let https = match (&sockets.https, bkjs_api::tls::Tls::load(&cfg)) {
            (Some(l), Ok(Some(tls))) => Some(bkjs_api::Https {
                listener: l
                    .try_clone()
                    .map_err(|e| format!("cannot share the HTTPS socket: {e}"))?,
                tls: Arc::new(tls),
            }),
            (_, Err(e)) => return Err(e.to_string()),
            _ => None,
        };
        let (drain, drain_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = tokio::spawn(serve_api(
            cfg,
            listener,
            https,
            tables.clone(),
            routes.clone(),
            ipc.clone(),
            drain_rx,
            Some(ready_tx),
        ));
        Ok((Generation { drain, task }, ready_rx))
    };
    let mut current = match start(cfg) {
        Ok((g, ready)) => {
            // Like the server once its workers are ready: systemd (`Type=notify`) hears it.
            tokio::spawn(async move {
                if ready.await.is_ok() && std::env::var_os("NOTIFY_SOCKET").is_some() {
                    let _ = sd_notify::notify(
                        false,
                        &[
                            sd_notify::NotifyState::Ready,
                            sd_notify::NotifyState::Status("serving in one process"),
                        ],
                    );
                }
            });
            g
        }
        Err(e) => {
            tracing::error!("{e}");
            return;
        }
    };
    let mut old: Vec<tokio::task::JoinHandle<i32>> = Vec::new();
    loop {
        let msg = tokio::select! {
            m = ctl.recv() => m,
            code = &mut current.task => {
                // Only a generation that failed to start ends by itself.
                tracing::error!("the API stopped ({code:?}); the process stops");
                // The usual stop: the supervisor loop hears it like an operator's SIGTERM.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::this(),
                    nix::sys::signal::Signal::SIGTERM,
                );
                break;
            }
        };
        match msg {
            Some(ApiCtl::Replace(cfg)) => {
                let timeout = cfg.duration("server-ready-timeout");
                let (next, ready) = match start(*cfg) {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::error!("the API was not replaced: {e}; the old one serves on");
                        continue;
                    }
                };
                match tokio::time::timeout(timeout, ready).await {
                    Ok(Ok(())) => {
                        let _ = current.drain.send(true);
                        old.push(std::mem::replace(&mut current, next).task);
                        tracing::info!("API replaced; the previous one drains");
                    }
                    _ => {
                        tracing::error!(
                            "the API was not replaced: the new one did not start (see above); the old one serves on"
                        );
                        let _ = next.drain.send(true);
                        next.task.abort();
                    }
                }
                old.retain(|t| !t.is_finished());
            }
            Some(ApiCtl::Stop) | None => {
                let _ = current.drain.send(true);
                let _ = (&mut current.task).await;
                break;
            }
        }
    }
    for t in old {
        let _ = t.await;
    }
}
