//! Proxy mode (`-proxy-port N`): the server accepts on the public port and forwards every request,
//! upgrades included, to a ready web worker on 127.0.0.1 ports N, N+1, ...; the worker with the
//! fewest outstanding requests wins. With no ready worker the answer is 503. With HTTPS on, the
//! proxy also terminates TLS (HTTP/1.1 or HTTP/2 by ALPN) on `-ssl-port` and forwards the same way.
//! A WebSocket opened on an HTTP/2 stream (extended CONNECT, RFC 8441) goes to the worker as the
//! HTTP/1.1 upgrade it stands for; the worker's 101 becomes the client's 200, and the stream and
//! the worker's socket are joined.

use bkjs_api::error_full as error;
use bkjs_api::tls::Tls;
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
    /// Serves `listener` (and the HTTPS listener of `secure`) on a new thread.
    pub fn start(
        listener: std::net::TcpListener,
        secure: Option<(std::net::TcpListener, Arc<Tls>)>,
        cfg: &Config,
    ) -> std::io::Result<Proxy> {
        listener.set_nonblocking(true)?;
        if let Some((l, _)) = &secure {
            l.set_nonblocking(true)?;
        }
        let backends = Arc::new(Backends::default());
        let (stop, stop_rx) = watch::channel(false);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("proxy")
            .enable_all()
            .build()?;
        let b = backends.clone();
        let limits = Limits {
            header_timeout: cfg.duration("timeout"),
            handshake_timeout: bkjs_api::handshake_timeout(cfg),
            max_header_size: cfg.int("api-max-header-size") as usize,
            max_headers: bkjs_api::max_headers(cfg),
            h2: bkjs_api::H2Limits::from_config(cfg),
            per_ip: bkjs_api::conn_limit::IpConns::new(cfg.int("api-ip-conn-max") as usize),
        };
        std::thread::Builder::new()
            .name("proxy".into())
            .spawn(move || {
                rt.block_on(async move {
                    let secure = match secure {
                        Some((l, tls)) => match tokio::net::TcpListener::from_std(l) {
                            Ok(l) => {
                                tls.watch(std::time::Duration::from_secs(1));
                                Some((l, tls))
                            }
                            Err(e) => {
                                tracing::error!("proxy HTTPS listener: {e}");
                                None
                            }
                        },
                        None => None,
                    };
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => accept(l, secure, b, stop_rx, limits).await,
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

/// The limits the proxy applies to its clients: the web workers' own (docs/security.md), since
/// behind the proxy the workers see only the proxy's connections.
struct Limits {
    header_timeout: std::time::Duration,
    handshake_timeout: std::time::Duration,
    max_header_size: usize,
    max_headers: Option<usize>,
    h2: bkjs_api::H2Limits,
    per_ip: bkjs_api::conn_limit::IpConns,
}

async fn accept(
    listener: tokio::net::TcpListener,
    secure: Option<(tokio::net::TcpListener, Arc<Tls>)>,
    backends: Arc<Backends>,
    mut stop: watch::Receiver<bool>,
    limits: Limits,
) {
    let client: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new()).build_http();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_size);
    let mut auto = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    auto.http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_size);
    if let Some(n) = limits.max_headers {
        http.max_headers(n);
        auto.http1().max_headers(n);
    }
    auto.http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(limits.h2.max_streams)
        .max_header_list_size(limits.h2.max_header_list)
        .max_pending_accept_reset_streams(limits.h2.max_resets)
        .max_local_error_reset_streams(limits.h2.max_local_resets)
        .enable_connect_protocol();
    let handshake_timeout = limits.handshake_timeout;
    let per_ip = limits.per_ip;
    loop {
        let (stream, is_tls) = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => (s, false),
                Err(e) => {
                    tracing::warn!("proxy accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            r = async { secure.as_ref()?.0.accept().await.ok() }, if secure.is_some() => match r {
                Some((s, _)) => (s, true),
                None => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let Ok(slot) = per_ip.admit(&stream, is_tls, "proxy") else {
            continue;
        };
        let backends = backends.clone();
        let client = client.clone();
        let svc = hyper::service::service_fn(move |req| {
            let backends = backends.clone();
            let client = client.clone();
            async move { Ok::<_, std::convert::Infallible>(forward(req, &backends, &client).await) }
        });
        match secure.as_ref().filter(|_| is_tls) {
            None => {
                let conn = http
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades();
                tokio::spawn(async move {
                    let _slot = slot;
                    if let Err(e) = conn.await {
                        tracing::debug!("proxy connection: {e}");
                    }
                });
            }
            Some((_, tls)) => {
                let accept = tls.acceptor.accept(stream);
                let auto = auto.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(handshake_timeout, accept).await {
                        Ok(Ok(stream)) => {
                            if let Err(e) = auto
                                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                                .await
                            {
                                tracing::debug!("proxy connection: {e}");
                            }
                        }
                        Ok(Err(e)) => tracing::debug!("proxy TLS handshake: {e}"),
                        Err(_) => tracing::debug!("proxy TLS handshake: timed out"),
                    }
                });
            }
        }
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
    // A WebSocket on an HTTP/2 stream: the worker gets the HTTP/1.1 upgrade (a GET).
    let h2_websocket = req.method() == hyper::Method::CONNECT
        && req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
    let client_upgrade = if h2_websocket {
        let on = hyper::upgrade::on(&mut req);
        *req.method_mut() = hyper::Method::GET;
        let h = req.headers_mut();
        h.insert(
            hyper::header::UPGRADE,
            hyper::header::HeaderValue::from_static("websocket"),
        );
        h.insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("Upgrade"),
        );
        // The key only pairs this request with the worker's answer.
        let key: [u8; 16] = rand::random();
        if let Ok(v) = hyper::header::HeaderValue::from_str(&base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            key,
        )) {
            h.insert(hyper::header::SEC_WEBSOCKET_KEY, v);
        }
        Some(on)
    } else {
        None
    };
    // An HTTP/2 request goes on as HTTP/1.1, its :authority as the Host header.
    if req.version() == hyper::Version::HTTP_2 {
        if !req.headers().contains_key(hyper::header::HOST) {
            if let Some(a) = req
                .uri()
                .authority()
                .and_then(|a| hyper::header::HeaderValue::from_str(a.as_str()).ok())
            {
                req.headers_mut().insert(hyper::header::HOST, a);
            }
        }
        *req.version_mut() = hyper::Version::HTTP_11;
    }
    *req.uri_mut() = uri;
    let upgrade = req.headers().contains_key(hyper::header::UPGRADE);
    let client_upgrade = match client_upgrade {
        Some(on) => Some(on),
        None => upgrade.then(|| hyper::upgrade::on(&mut req)),
    };
    let req = req.map(|b| b.boxed());
    match client.request(req).await {
        Ok(mut resp) => {
            if let (Some(client_side), true) = (
                client_upgrade,
                resp.status() == StatusCode::SWITCHING_PROTOCOLS,
            ) {
                if h2_websocket {
                    // RFC 8441: 200 and no upgrade headers on the HTTP/2 side.
                    *resp.status_mut() = StatusCode::OK;
                    let h = resp.headers_mut();
                    for name in [
                        hyper::header::UPGRADE,
                        hyper::header::CONNECTION,
                        hyper::header::SEC_WEBSOCKET_ACCEPT,
                    ] {
                        h.remove(name);
                    }
                }
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
