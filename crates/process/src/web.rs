//! A web worker: takes the listening socket (and the HTTPS one) from its parent (or, in proxy
//! mode, binds its own 127.0.0.1 port), loads the certificate, drops privileges, serves the API, reports `ready` and heartbeats to the server,
//! and drains on SIGTERM.

use super::{drop_privileges, rss_bytes, EXIT_BOOT};
use bkjs_api::{self as api, Api};
use bkjs_base::config::Config;
use bkjs_base::sys::Boot;
use bkjs_ipc::{Client, Request};
use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

fn listener(boot: &Boot) -> Result<TcpListener, String> {
    if let Ok(port) = std::env::var("_BKJS_WORKER_PORT") {
        let addr = format!("127.0.0.1:{port}");
        // The previous worker on this port may still be closing it.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match TcpListener::bind(&addr) {
                Ok(l) => return Ok(l),
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrInUse
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(format!("cannot listen on {addr}: {e}")),
            }
        }
    }
    let fd = *boot
        .listen_fds
        .first()
        .ok_or("no listening socket was passed to this web worker")?;
    use std::os::fd::FromRawFd;
    // SAFETY: the parent passed this fd as the listening socket (see process::spawn) and nothing
    // else in this process owns it.
    Ok(unsafe { TcpListener::from_raw_fd(fd) })
}

/// The inherited HTTPS socket (fd 4) and the certificate, read before privileges are dropped; None
/// when HTTPS is off or in proxy mode (the proxy terminates TLS).
fn https(cfg: &Config, boot: &Boot) -> Result<Option<api::Https>, String> {
    if std::env::var("_BKJS_WORKER_PORT").is_ok() {
        return Ok(None);
    }
    let Some(tls) = api::tls::Tls::load(cfg).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let fd = *boot
        .listen_fds
        .get(1)
        .ok_or("HTTPS is on but no HTTPS socket was passed to this web worker")?;
    use std::os::fd::FromRawFd;
    // SAFETY: the parent passed this fd as the HTTPS listening socket (see server::listen) and
    // nothing else in this process owns it.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    Ok(Some(api::Https {
        listener,
        tls: Arc::new(tls),
    }))
}

/// Runs a web worker until it has drained; returns the exit code.
pub fn run_web(
    cfg: Config,
    boot: &Boot,
    tables: Vec<bkjs_db::Table>,
    routes: bkjs_api::Routes,
) -> i32 {
    let std_listener = match listener(boot) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e}");
            return EXIT_BOOT;
        }
    };
    let https = match https(&cfg, boot) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!("{e}");
            return EXIT_BOOT;
        }
    };
    // The seal key file belongs to the user the tree started as.
    if let Err(e) = bkjs_db::seal::SealKey::preload(&cfg) {
        tracing::error!("cannot load the seal key: {e}");
        return EXIT_BOOT;
    }
    if let Err(e) = drop_privileges(&cfg) {
        tracing::error!("cannot drop privileges: {e}");
        return EXIT_BOOT;
    }
    let rt = api_runtime(&cfg);
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return EXIT_BOOT;
        }
    };
    rt.block_on(serve(cfg, std_listener, https, tables, routes))
}

async fn serve(
    cfg: Config,
    std_listener: TcpListener,
    https: Option<api::Https>,
    tables: Vec<bkjs_db::Table>,
    routes: bkjs_api::Routes,
) -> i32 {
    // The near cache only mirrors the server's LRU; with Redis every read goes to Redis.
    let near = if cfg.str("cache-type") == "local" {
        cfg.int("cache-near-size") as usize
    } else {
        0
    };
    let ipc =
        match Client::connect_near(&bkjs_ipc::hub_url(&cfg), cfg.duration("ipc-timeout"), near) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("cannot connect to the server: {e}");
                return EXIT_BOOT;
            }
        };

    let mut signals = match (
        signal(SignalKind::quit()),
        signal(SignalKind::user_defined1()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        _ => {
            tracing::error!("cannot install signal handlers");
            return EXIT_BOOT;
        }
    };
    // SIGTERM/SIGINT start the drain from a thread of their own, not from the serving runtime:
    // a worker whose runtime is busy with a long request must still stop accepting (and close
    // its copy of the listening socket) at once, or it would keep taking connections it cannot
    // serve while its successor waits.
    let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
    let mut stop_signals = match signal_hook::iterator::Signals::new([libc::SIGTERM, libc::SIGINT])
    {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot install signal handlers: {e}");
            return EXIT_BOOT;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("drain-signal".into())
        .spawn(move || {
            if stop_signals.forever().next().is_some() {
                let _ = drain_tx.send(true);
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the signal thread: {e}");
        return EXIT_BOOT;
    }
    let tls = https.as_ref().map(|h| h.tls.clone());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = signals.0.recv() => {
                    tracing::info!("SIGQUIT: exiting now");
                    std::process::exit(0);
                }
                _ = signals.1.recv() => bkjs_base::log::reopen(),
                // The server rolls the workers next; the certificate is reloaded at once.
                _ = signals.2.recv() => {
                    if let Some(tls) = &tls {
                        tls.reload();
                    }
                }
            }
        }
    });
    serve_api(
        cfg,
        std_listener,
        https,
        tables,
        routes,
        ipc,
        drain_rx,
        None,
    )
    .await
}

/// Serves the API on `std_listener` (and `https`) until `drain` turns true and the requests in
/// flight are done: the web worker's serving part, shared by the web role and `bkjs run
/// -single`. `ipc` reaches the server (over IPC, or in this process). A web worker reports
/// READY, heartbeats and its metrics to the server (`in_process` None); in one process the
/// server's part reads this process's figures itself, and `in_process` hears when it accepts.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve_api(
    cfg: Config,
    std_listener: TcpListener,
    https: Option<api::Https>,
    tables: Vec<bkjs_db::Table>,
    routes: bkjs_api::Routes,
    ipc: Client,
    drain_rx: tokio::sync::watch::Receiver<bool>,
    in_process: Option<tokio::sync::oneshot::Sender<()>>,
) -> i32 {
    let drain_timeout = cfg.duration("server-drain-timeout");
    let interval = cfg.duration("server-heartbeat-interval");
    let cache = match bkjs_cache::Cache::new(&cfg, ipc.clone()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("cannot set up the cache: {e}");
            return EXIT_BOOT;
        }
    };
    let db = match bkjs_db::Db::open(&cfg, tables, Some(cache.clone())).await {
        Ok(db) => Arc::new(db),
        Err(e) => {
            tracing::error!("cannot open the database: {e}");
            return EXIT_BOOT;
        }
    };
    let session_key = match api::access::session_key(&cfg, &db).await {
        Ok(k) => Some(k),
        Err(e) => {
            tracing::error!("sessions are off: cannot read or create the session key: {e}");
            None
        }
    };
    let msg = match bkjs_msg::PubSub::start(&cfg).await {
        Ok(m) => m,
        Err(e) => {
            tracing::error!("cannot set up pub/sub: {e}");
            return EXIT_BOOT;
        }
    };
    let mut api = Api::new(
        cfg,
        Some(ipc.clone()),
        Some(cache),
        Some(db),
        routes,
        session_key,
    );
    api.msg = Some(msg);
    api.drain = Some(drain_rx.clone());
    let api = Arc::new(api);
    let pid = std::process::id();
    if let Some(ready) = in_process {
        install_metrics();
        let _ = ready.send(());
        api::serve(std_listener, https, api, drain_rx, drain_timeout).await;
        return 0;
    }
    // Heartbeats run on the serving runtime, so a worker whose runtime hangs falls silent.
    let hb_api = api.clone();
    let hb_ipc = ipc.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            if api::router_hang() {
                continue;
            }
            hb_ipc.send(Request::Heartbeat {
                pid,
                requests: hb_api.requests.load(Ordering::Relaxed),
                rss: rss_bytes(pid).unwrap_or(0),
            });
        }
    });
    // Metrics go to the server every tick; it merges every worker's into one machine view.
    let metrics_ipc = ipc.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(bkjs_base::metrics::TICK);
        loop {
            tick.tick().await;
            metrics_ipc.send(Request::Metrics {
                pid,
                snapshot: bkjs_base::metrics::Registry::global().snapshot(),
            });
        }
    });
    install_metrics();
    ipc.send(Request::Ready { pid });
    api::serve(std_listener, https, api, drain_rx, drain_timeout).await;
    0
}

/// Routes the `metrics` facade (used by libraries) to this process's registry.
fn install_metrics() {
    if let Err(e) =
        bkjs_base::metrics::FacadeRecorder::new(bkjs_base::metrics::Registry::global().clone())
            .install()
    {
        tracing::debug!("metrics facade: {e}");
    }
}

/// The tokio runtime of a web worker's API (and of `-single`'s): one thread unless
/// `-api-threads` asks for more.
pub(crate) fn api_runtime(cfg: &Config) -> std::io::Result<tokio::runtime::Runtime> {
    let threads = cfg.int("api-threads") as usize;
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}
