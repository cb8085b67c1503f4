//! The HTTP API served by every web worker: hyper 1.x on the inherited listening socket, with a
//! graceful drain (stop accepting, finish in-flight requests, close idle keep-alive connections,
//! hard deadline), path access rules and JSON replies.

pub mod proxy;
mod router;

pub use router::{Api, Reply};

/// True once the test-only hang fault was triggered in this worker.
pub fn router_hang() -> bool {
    router::HANG.load(std::sync::atomic::Ordering::SeqCst)
}

use crate::config::{Kind, Param};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// Paths that need no authentication by default (SPEC §5).
const DEFAULT_ALLOW: &str =
    r"^/$ \.(html|ico|gif|png|jpg|svg|ttf|woff|js|css)$ ^/public ^/account/add$";

/// API parameters.
pub static PARAMS: &[Param] = &[
    Param::new(
        "api-allow",
        Kind::Regexp,
        DEFAULT_ALLOW,
        "paths that need no authentication; a value replaces the default list",
    ),
    Param::accumulating(
        "api-allow-path",
        Kind::Regexp,
        "",
        "adds a path pattern that needs no authentication (repeatable)",
    ),
    Param::accumulating(
        "api-deny-path",
        Kind::Regexp,
        "",
        "adds a path pattern that is always refused with 403 (repeatable)",
    ),
    Param::accumulating(
        "api-disallow-path",
        Kind::Regexp,
        "",
        "adds a path pattern answered 404 as if it did not exist (repeatable)",
    ),
    Param::new(
        "api-upload-limit",
        Kind::Size,
        "10MB",
        "largest request body accepted",
    ),
    Param::new(
        "api-threads",
        Kind::Int { min: 1, max: 256 },
        "1",
        "threads of each web worker's runtime",
    ),
];

/// Serves `listener` until `drain` turns true, then drains: in-flight requests finish, idle
/// keep-alive connections close, and whatever is left after `drain_timeout` is cut. Each
/// connection task holds a clone of `done`; the drain is over when the last one is dropped.
pub async fn serve(
    listener: TcpListener,
    api: Arc<Api>,
    drain: watch::Receiver<bool>,
    drain_timeout: Duration,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(api.cfg.duration("timeout"))
        .keep_alive(true);
    let (done, mut all_done) = mpsc::channel::<()>(1);
    let mut stop = drain.clone();
    loop {
        tokio::select! {
            r = listener.accept() => {
                let stream = match r {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // Out of fds or a connection reset while queued: not fatal.
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let api = api.clone();
                let svc = hyper::service::service_fn(move |req| {
                    let api = api.clone();
                    async move { Ok::<_, std::convert::Infallible>(api.handle(req).await) }
                });
                let conn = http.serve_connection(TokioIo::new(stream), svc).with_upgrades();
                let mut drain = drain.clone();
                let done = done.clone();
                tokio::spawn(async move {
                    let mut conn = std::pin::pin!(conn);
                    let r = tokio::select! {
                        r = conn.as_mut() => r,
                        _ = async { drain.wait_for(|d| *d).await.map(|_| ()) } => {
                            // Finish the request in flight, close when idle.
                            conn.as_mut().graceful_shutdown();
                            conn.await
                        }
                    };
                    if let Err(e) = r {
                        tracing::debug!("connection: {e}");
                    }
                    drop(done);
                });
            }
            _ = async { stop.wait_for(|d| *d).await.map(|_| ()) } => break,
        }
    }
    drop(listener);
    drop(done);
    tracing::info!("draining: no longer accepting connections");
    tokio::select! {
        _ = all_done.recv() => tracing::info!("drained: all connections closed"),
        _ = tokio::time::sleep(drain_timeout) => tracing::warn!("drain deadline {drain_timeout:?} reached: closing the remaining connections"),
    }
}
