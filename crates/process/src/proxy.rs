//! Proxy mode (`-proxy-port N`): the server accepts on the public port and forwards every request,
//! upgrades included, to a ready web worker on 127.0.0.1 ports N, N+1, ...; the worker with the
//! fewest outstanding requests wins. With no ready worker the answer is 503.

use bkjs_api::error_full as error;
use bkjs_base::config::Config;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

type Body = BoxBody<Bytes, hyper::Error>;

#[derive(Debug)]
struct Backend {
    pid: u32,
    port: u16,
    outstanding: Arc<AtomicUsize>,
}

/// The ready workers the proxy may use; the server adds and removes them.
#[derive(Debug, Default)]
pub struct Backends {
    list: Mutex<Vec<Backend>>,
}

impl Backends {
    /// A worker became ready on `port`.
    pub fn add(&self, pid: u32, port: u16) {
        let mut l = self.list.lock();
        l.retain(|b| b.pid != pid);
        l.push(Backend {
            pid,
            port,
            outstanding: Arc::new(AtomicUsize::new(0)),
        });
    }

    /// A worker is draining or gone: no new requests for it.
    pub fn remove(&self, pid: u32) {
        self.list.lock().retain(|b| b.pid != pid);
    }

    fn pick(&self) -> Option<(u16, Arc<AtomicUsize>)> {
        let l = self.list.lock();
        l.iter()
            .min_by_key(|b| b.outstanding.load(Ordering::Relaxed))
            .map(|b| (b.port, b.outstanding.clone()))
    }
}

/// The running proxy: its own thread and runtime, stopped by [`Proxy::stop`].
pub(crate) struct Proxy {
    backends: Arc<Backends>,
    stop: watch::Sender<bool>,
}

impl Proxy {
    /// Serves `listener` on a new thread.
    pub fn start(listener: std::net::TcpListener, cfg: &Config) -> std::io::Result<Proxy> {
        listener.set_nonblocking(true)?;
        let backends = Arc::new(Backends::default());
        let (stop, stop_rx) = watch::channel(false);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("proxy")
            .enable_all()
            .build()?;
        let b = backends.clone();
        let header_timeout = cfg.duration("timeout");
        std::thread::Builder::new()
            .name("proxy".into())
            .spawn(move || {
                rt.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => accept(l, b, stop_rx, header_timeout).await,
                        Err(e) => tracing::error!("proxy listener: {e}"),
                    }
                });
            })?;
        Ok(Proxy { backends, stop })
    }

    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// Stops accepting; connections in progress finish on their own.
    pub fn stop(self) {
        let _ = self.stop.send(true);
    }
}

async fn accept(
    listener: tokio::net::TcpListener,
    backends: Arc<Backends>,
    mut stop: watch::Receiver<bool>,
    header_timeout: std::time::Duration,
) {
    let client: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new()).build_http();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("proxy accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let backends = backends.clone();
        let client = client.clone();
        let svc = hyper::service::service_fn(move |req| {
            let backends = backends.clone();
            let client = client.clone();
            async move { Ok::<_, std::convert::Infallible>(forward(req, &backends, &client).await) }
        });
        let conn = http
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("proxy connection: {e}");
            }
        });
    }
}

async fn forward(
    mut req: Request<Incoming>,
    backends: &Backends,
    client: &Client<HttpConnector, Body>,
) -> Response<Body> {
    let Some((port, outstanding)) = backends.pick() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no web worker is ready")
            .map(|b| b.map_err(|e| match e {}).boxed());
    };
    outstanding.fetch_add(1, Ordering::Relaxed);
    struct Done(Arc<AtomicUsize>);
    impl Drop for Done {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let _done = Done(outstanding);
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    let uri = match format!("http://127.0.0.1:{port}{pq}").parse() {
        Ok(u) => u,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, &format!("bad request URI: {e}"))
                .map(|b| b.map_err(|e| match e {}).boxed())
        }
    };
    *req.uri_mut() = uri;
    let upgrade = req.headers().contains_key(hyper::header::UPGRADE);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let req = req.map(|b| b.boxed());
    match client.request(req).await {
        Ok(mut resp) => {
            if let (Some(client_side), true) = (
                client_upgrade,
                resp.status() == StatusCode::SWITCHING_PROTOCOLS,
            ) {
                let worker_side = hyper::upgrade::on(&mut resp);
                tokio::spawn(async move {
                    if let (Ok(a), Ok(b)) = (client_side.await, worker_side.await) {
                        let mut a = TokioIo::new(a);
                        let mut b = TokioIo::new(b);
                        let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                    }
                });
            }
            resp.map(|b| b.boxed())
        }
        Err(e) => {
            tracing::warn!("proxy to 127.0.0.1:{port}: {e}");
            error(StatusCode::BAD_GATEWAY, "the web worker did not answer")
                .map(|b| b.map_err(|e| match e {}).boxed())
        }
    }
}
