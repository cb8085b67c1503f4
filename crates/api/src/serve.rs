//! The serve loop of a web worker: hyper 1.x on the inherited listening socket (HTTP/1.1) and,
//! when HTTPS is on, on the inherited HTTPS socket (TLS with HTTP/1.1 or HTTP/2 by ALPN), one task
//! per connection, and a graceful drain (stop accepting, finish in-flight requests, close idle
//! keep-alive connections, hard deadline).
//!
//! HTTP/2 is served over TLS only. A cleartext HTTP/2 connection (h2c with prior knowledge) on the
//! plain port is refused with a GOAWAY `HTTP_1_1_REQUIRED` that says so; an HTTP/1.1
//! `Upgrade: h2c` is ignored (the request is answered over HTTP/1.1, as RFC 9113 allows).

use crate::api::Api;
use hyper::header::{HeaderValue, CONNECTION};
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

/// After a drain starts, a connection is closed once it has had no request in flight for this
/// long; until then requests on it are still served, answered with `Connection: close`. Closing an
/// idle connection at once would race a client that is sending its next request (or whose first
/// request is still in the socket buffer of a just-accepted connection).
const DRAIN_IDLE_GRACE: Duration = Duration::from_millis(500);

/// What the idle sweep and the drain need to know about one connection. The connection task
/// reads `closing` only when it is polled anyway; the sweep sets it and wakes the task, so the
/// request path carries no timer and no extra future.
#[derive(Default)]
struct ConnState {
    inflight: AtomicUsize,
    /// Coarse clock reading (ms) of the last request start or end, or of the accept.
    last_ms: AtomicU64,
    /// OPEN, then SHUTDOWN (finish the request in flight, close when idle), then ABORT (drop it).
    closing: std::sync::atomic::AtomicU8,
    /// Clock reading when SHUTDOWN was asked.
    closing_ms: AtomicU64,
    waker: atomic_waker::AtomicWaker,
}

const OPEN: u8 = 0;
const SHUTDOWN: u8 = 1;
const ABORT: u8 = 2;

impl ConnState {
    fn set(&self, to: u8, now: u64) {
        if self.closing.load(Ordering::Acquire) < to {
            self.closing.store(to, Ordering::Release);
            self.closing_ms.store(now, Ordering::Relaxed);
            self.waker.wake();
        }
    }
}

/// An open HTTP/2 WebSocket counts as a request in flight on its connection: the idle sweep does
/// not close a connection under it, and a drain waits for it to close (it closes itself, 1001).
impl crate::websocket::Busy for ConnState {
    fn enter(&self) {
        self.inflight.fetch_add(1, Ordering::SeqCst);
    }
    fn leave(&self) {
        self.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection that asked to shut down but sits idle mid-headers this long is dropped.
const STUCK_GRACE_MS: u64 = 1000;

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How often the coarse clock ticks and idle connections are swept.
const SWEEP: Duration = Duration::from_millis(100);

/// The open connections of one worker and a coarse millisecond clock. One sweep task replaces a
/// timer per request: requests only read an atomic, and idle connections (keep-alive, or headers
/// never completed) are closed by the sweep after `-timeout`.
struct Conns {
    /// Set when the drain starts: replies then carry `Connection: close`.
    draining: AtomicBool,
    clock: AtomicU64,
    next_id: AtomicU64,
    open: parking_lot::Mutex<std::collections::HashMap<u64, Arc<ConnState>>>,
}

impl Conns {
    fn now(&self) -> u64 {
        self.clock.load(Ordering::Relaxed)
    }

    fn add(&self) -> (u64, Arc<ConnState>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState::default());
        state.last_ms.store(self.now(), Ordering::Relaxed);
        self.open.lock().insert(id, state.clone());
        (id, state)
    }

    fn remove(&self, id: u64) {
        self.open.lock().remove(&id);
    }

    /// Advances the clock; asks idle connections to close (after `idle`, or after the short
    /// grace once draining) and drops those that stay stuck.
    fn sweep(&self, epoch: Instant, idle: Duration) {
        let now = epoch.elapsed().as_millis() as u64;
        self.clock.store(now, Ordering::Relaxed);
        let limit = if self.draining.load(Ordering::Relaxed) {
            DRAIN_IDLE_GRACE
        } else {
            idle
        }
        .as_millis() as u64;
        for c in self.open.lock().values() {
            if c.inflight.load(Ordering::SeqCst) > 0 {
                continue;
            }
            match c.closing.load(Ordering::Acquire) {
                OPEN if now.saturating_sub(c.last_ms.load(Ordering::Relaxed)) >= limit => {
                    c.set(SHUTDOWN, now)
                }
                SHUTDOWN
                    if now.saturating_sub(c.closing_ms.load(Ordering::Relaxed))
                        >= STUCK_GRACE_MS =>
                {
                    c.set(ABORT, now)
                }
                _ => {}
            }
        }
    }
}

/// Accepts connections on a thread of its own with blocking `accept(2)`. Every web worker shares
/// one listening socket; the kernel wakes exactly one blocked acceptor per connection, the one
/// waiting longest, so connections spread round-robin over the workers (with readiness polling
/// all workers wake and the first to run takes every connection). The socket's receive timeout lets
/// the thread notice a drain; it then stops accepting, and the channel closes.
fn accept_thread(
    listener: std::net::TcpListener,
    drain: watch::Receiver<bool>,
) -> mpsc::Receiver<std::net::TcpStream> {
    let (tx, rx) = mpsc::channel(256);
    let sock = socket2::SockRef::from(&listener);
    // The socket is shared by all workers: they all accept the same way, blocking.
    if let Err(e) = sock
        .set_nonblocking(false)
        .and_then(|_| sock.set_read_timeout(Some(ACCEPT_WAKEUP)))
    {
        tracing::error!("listening socket: {e}");
    }
    let spawned = std::thread::Builder::new()
        .name("accept".into())
        .spawn(move || {
            while !*drain.borrow() {
                match listener.accept() {
                    Ok((s, _)) => {
                        if tx.blocking_send(s).is_err() {
                            break;
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock
                                | std::io::ErrorKind::TimedOut
                                | std::io::ErrorKind::Interrupted
                        ) => {}
                    Err(e) => {
                        // Out of fds or a connection reset while queued: not fatal.
                        tracing::warn!("accept: {e}");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the accept thread: {e}");
    }
    rx
}

/// How often a blocked accept wakes up to look at the drain flag.
const ACCEPT_WAKEUP: Duration = Duration::from_millis(200);

/// The HTTPS side of a worker: its listening socket and the certificate in use.
pub struct Https {
    pub listener: std::net::TcpListener,
    pub tls: Arc<crate::tls::Tls>,
}

/// A served connection that can be asked to finish its requests and close.
trait Graceful: Future {
    fn graceful(self: std::pin::Pin<&mut Self>);
}

impl<I, S> Graceful for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    Self: Future,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: hyper::body::Body + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown()
    }
}

impl<I, S, B> Graceful for http2::Connection<I, S, TokioExecutor>
where
    Self: Future,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown()
    }
}

/// What the plain port answers a client that opens with the HTTP/2 preface (h2c with prior
/// knowledge): its own empty SETTINGS (the server preface), then GOAWAY with last stream 0,
/// `HTTP_1_1_REQUIRED` (0xd) and a reason an operator can read in a client's error.
const H2C_REFUSAL: &[u8] = {
    const REASON: &[u8] =
        b"cleartext HTTP/2 (h2c) is not served: use HTTP/1.1, or HTTPS with ALPN h2";
    const LEN: usize = 8 + REASON.len();
    const FRAMES: [u8; 9 + 9 + LEN] = {
        let mut f = [0u8; 9 + 9 + LEN];
        // SETTINGS: length 0, type 0x4, no flags, stream 0.
        f[3] = 0x4;
        // GOAWAY: length, type 0x7, no flags, stream 0; last stream 0; error 0xd; reason.
        f[9] = (LEN >> 16) as u8;
        f[10] = (LEN >> 8) as u8;
        f[11] = LEN as u8;
        f[12] = 0x7;
        f[9 + 9 + 7] = 0xd;
        let mut i = 0;
        while i < REASON.len() {
            f[9 + 9 + 8 + i] = REASON[i];
            i += 1;
        }
        f
    };
    &FRAMES
};

/// Runs one connection until it ends, honouring the sweep's SHUTDOWN and ABORT. `plain_fd` is the
/// socket of a cleartext connection, still open while `conn` lives: a client that opened with the
/// HTTP/2 preface gets [`H2C_REFUSAL`] on it before it is closed.
async fn run_conn<C>(conn: C, state: Arc<ConnState>, plain_fd: Option<std::os::fd::RawFd>)
where
    C: Graceful<Output = Result<(), hyper::Error>>,
{
    let mut conn = std::pin::pin!(conn);
    let mut shut = false;
    let r = std::future::poll_fn(|cx| {
        state.waker.register(cx.waker());
        match state.closing.load(Ordering::Acquire) {
            ABORT => return std::task::Poll::Ready(Ok(())),
            SHUTDOWN if !shut => {
                // Finish the request in flight, then close.
                conn.as_mut().graceful();
                shut = true;
            }
            _ => {}
        }
        conn.as_mut().poll(cx)
    })
    .await;
    match (r, plain_fd) {
        (Err(e), Some(fd)) if e.is_parse_version_h2() => {
            // hyper read the preface and wrote nothing; the socket is ours until `conn` drops.
            use nix::sys::socket::{send, shutdown, MsgFlags, Shutdown};
            let sent = send(fd, H2C_REFUSAL, MsgFlags::MSG_NOSIGNAL);
            let _ = shutdown(fd, Shutdown::Write);
            tracing::info!(
                "a cleartext HTTP/2 (h2c) connection refused with GOAWAY HTTP_1_1_REQUIRED ({})",
                match sent {
                    Ok(_) => "sent".to_string(),
                    Err(e) => format!("not sent: {e}"),
                }
            );
        }
        (Err(e), _) => tracing::debug!("connection: {e}"),
        (Ok(()), _) => {}
    }
}

/// How a listener's replies differ: plain, plain redirecting to HTTPS, or HTTPS.
#[derive(Clone)]
enum Side {
    Plain,
    /// `-ssl-redirect`: every plain request is a 301 to this HTTPS port.
    Redirect(u16),
    /// HTTPS, with the `Strict-Transport-Security` value when `-ssl-hsts` is set.
    Secure(Option<HeaderValue>),
}

/// The 301 of `-ssl-redirect`: same host, the HTTPS port, same path and query.
fn redirect(req: &hyper::Request<hyper::body::Incoming>, port: u16) -> crate::reply::Reply {
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| h.to_string())
        .or_else(|| req.uri().host().map(|h| h.to_string()))
        .unwrap_or_else(|| "localhost".into());
    // Strip a port, IPv6 brackets kept.
    let name = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host.as_str(),
    };
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let location = if port == 443 {
        format!("https://{name}{target}")
    } else {
        format!("https://{name}:{port}{target}")
    };
    let mut r = crate::reply::error(hyper::StatusCode::MOVED_PERMANENTLY, "use HTTPS");
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(hyper::header::LOCATION, v);
    }
    r
}

/// `-api-max-headers` for hyper's HTTP/1 builder, None when it is hyper's own default (100):
/// setting it moves hyper's header array from the stack to the heap, an allocation per request.
pub fn max_headers(cfg: &bkjs_base::config::Config) -> Option<usize> {
    let n = cfg.int("api-max-headers") as usize;
    (n != 100).then_some(n)
}

/// The limits of an HTTP/2 connection (docs/security.md), the same for a web worker's HTTPS
/// listener and for the proxy of proxy mode.
pub struct H2Limits {
    /// `-api-h2-max-streams`: SETTINGS_MAX_CONCURRENT_STREAMS.
    pub max_streams: u32,
    /// `-api-max-header-size`: SETTINGS_MAX_HEADER_LIST_SIZE.
    pub max_header_list: u32,
    /// `-api-h2-max-resets`: streams the client resets before they are answered (the
    /// rapid-reset pattern) that close the connection.
    pub max_resets: usize,
    /// `-api-h2-max-local-resets`: streams this side resets for the client's protocol errors
    /// that close the connection.
    pub max_local_resets: usize,
}

impl H2Limits {
    pub fn from_config(cfg: &bkjs_base::config::Config) -> H2Limits {
        H2Limits {
            max_streams: cfg.int("api-h2-max-streams") as u32,
            max_header_list: cfg.int("api-max-header-size") as u32,
            max_resets: cfg.int("api-h2-max-resets") as usize,
            max_local_resets: cfg.int("api-h2-max-local-resets") as usize,
        }
    }
}

/// How long a new HTTPS connection may take over its TLS handshake: `-ssl-handshake-timeout`,
/// at most the idle `-timeout`.
pub fn handshake_timeout(cfg: &bkjs_base::config::Config) -> Duration {
    cfg.duration("ssl-handshake-timeout")
        .min(cfg.duration("timeout"))
}

/// The HTTP/2 side of the HTTPS listener (connections whose ALPN agreed on `h2`): limits from
/// [`H2Limits`], and extended CONNECT (RFC 8441) advertised, so browsers open their WebSockets
/// on a stream of the connection.
fn h2_builder(api: &Api) -> http2::Builder<TokioExecutor> {
    let l = H2Limits::from_config(&api.cfg);
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(l.max_streams)
        .max_header_list_size(l.max_header_list)
        .max_pending_accept_reset_streams(l.max_resets)
        .max_local_error_reset_streams(l.max_local_resets)
        .enable_connect_protocol();
    b
}

/// Serves `listener` (and the HTTPS listener of `https`) until `drain` turns true, then drains:
/// in-flight requests finish, every connection closes once idle, and whatever is left after
/// `drain_timeout` is cut. Each connection task holds a clone of `done`; the drain is over when
/// the last one is dropped.
pub async fn serve(
    listener: std::net::TcpListener,
    https: Option<Https>,
    api: Arc<Api>,
    drain: watch::Receiver<bool>,
    drain_timeout: Duration,
) {
    let mut http = http1::Builder::new();
    http.keep_alive(true)
        .max_buf_size(api.cfg.int("api-max-header-size") as usize);
    if let Some(n) = max_headers(&api.cfg) {
        http.max_headers(n);
    }
    // Over TLS, one flattened buffer per response, not a vectored write of the head and the
    // body: rustls copies both into one record either way, and a vectored write costs it an
    // allocation for the list of slices (docs/performance.md, "TLS").
    let mut https_http = http.clone();
    https_http.writev(false);
    let h2 = h2_builder(&api);
    let (done, mut all_done) = mpsc::channel::<()>(1);
    let epoch = Instant::now();
    let conns = Arc::new(Conns {
        draining: AtomicBool::new(false),
        clock: AtomicU64::new(0),
        next_id: AtomicU64::new(0),
        open: Default::default(),
    });
    let idle = api.cfg.duration("timeout");
    // Behind the proxy of proxy mode every connection comes from the proxy: no per-address cap.
    let per_ip_max = if api.cfg.int("proxy-port") > 0 {
        0
    } else {
        api.cfg.int("api-ip-conn-max") as usize
    };
    let per_ip = crate::conn_limit::IpConns::new(per_ip_max);
    api.watch_lag();
    {
        let (conns, mut drain) = (conns.clone(), drain.clone());
        tokio::spawn(async move {
            if drain.wait_for(|d| *d).await.is_ok() {
                conns.draining.store(true, Ordering::Relaxed);
            }
        });
    }
    let sweeper = {
        let conns = conns.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP);
            loop {
                tick.tick().await;
                conns.sweep(epoch, idle);
            }
        })
    };
    let hsts = api.cfg.duration("ssl-hsts");
    let hsts = (!hsts.is_zero())
        .then(|| HeaderValue::from_str(&format!("max-age={}", hsts.as_secs())).ok())
        .flatten();
    let plain_side = if https.is_some() && api.cfg.bool("ssl-redirect") {
        Side::Redirect(api.cfg.int("ssl-port") as u16)
    } else {
        Side::Plain
    };
    let mut incoming = Some(accept_thread(listener, drain.clone()));
    let (mut secure_incoming, tls) = match https {
        Some(h) => {
            h.tls.watch(TLS_WATCH);
            (Some(accept_thread(h.listener, drain.clone())), Some(h.tls))
        }
        None => (None, None),
    };
    let handshake_timeout = handshake_timeout(&api.cfg);
    loop {
        // Both accept threads stop at the drain; connections they queued before are still served.
        let (stream, secure) = tokio::select! {
            r = async { incoming.as_mut()?.recv().await }, if incoming.is_some() => match r {
                Some(s) => (s, false),
                None => {
                    incoming = None;
                    continue;
                }
            },
            r = async { secure_incoming.as_mut()?.recv().await }, if secure_incoming.is_some() => match r {
                Some(s) => (s, true),
                None => {
                    secure_incoming = None;
                    continue;
                }
            },
            else => break,
        };
        // Registered with this runtime's reactor here, not on the accept thread.
        let stream = match stream
            .set_nonblocking(true)
            .and_then(|_| TcpStream::from_std(stream))
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("accepted socket: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(slot) = per_ip.admit(&stream, secure, "web worker") else {
            continue;
        };
        let (id, state) = conns.add();
        let side = if secure {
            Side::Secure(hsts.clone())
        } else {
            plain_side.clone()
        };
        let svc = {
            // One shared context per connection: a request clones one Arc, not four.
            let ctx = Arc::new((api.clone(), state.clone(), conns.clone(), side));
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                let ctx = ctx.clone();
                async move {
                    let (api, state, conns, side) = &*ctx;
                    if req.method() == hyper::Method::CONNECT {
                        // An HTTP/2 WebSocket holds the connection busy while it is open.
                        let busy: Arc<dyn crate::websocket::Busy> = state.clone();
                        req.extensions_mut().insert(crate::websocket::Carrier(busy));
                    }
                    state.inflight.fetch_add(1, Ordering::SeqCst);
                    state.last_ms.store(conns.now(), Ordering::Relaxed);
                    let mut reply = match side {
                        Side::Redirect(port) => redirect(&req, *port),
                        Side::Plain => api.handle(req).await,
                        Side::Secure(hsts) => {
                            // HTTP/2 carries the host as :authority; signatures and handlers
                            // read the Host header. An HTTP/1 request in origin form has no
                            // authority: no header lookup for it.
                            if req.uri().authority().is_some()
                                && !req.headers().contains_key(hyper::header::HOST)
                            {
                                if let Some(a) = req
                                    .uri()
                                    .authority()
                                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
                                {
                                    req.headers_mut().insert(hyper::header::HOST, a);
                                }
                            }
                            let mut reply = api.handle(req).await;
                            if let Some(v) = hsts {
                                reply
                                    .headers_mut()
                                    .insert(hyper::header::STRICT_TRANSPORT_SECURITY, v.clone());
                            }
                            reply
                        }
                    };
                    if conns.draining.load(Ordering::Relaxed) {
                        reply
                            .headers_mut()
                            .insert(CONNECTION, HeaderValue::from_static("close"));
                    }
                    state.last_ms.store(conns.now(), Ordering::Relaxed);
                    state.inflight.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, std::convert::Infallible>(reply)
                }
            })
        };
        let done = done.clone();
        let conns = conns.clone();
        match tls.as_ref().filter(|_| secure) {
            None => {
                let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
                let conn = http
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades();
                tokio::spawn(async move {
                    run_conn(conn, state, Some(fd)).await;
                    conns.remove(id);
                    drop(slot);
                    drop(done);
                });
            }
            Some(tls) => {
                let accept = tls.acceptor.accept(stream);
                let h2 = h2.clone();
                let http = https_http.clone();
                tokio::spawn(async move {
                    // The handshake counts as a request in flight: the sweep leaves it alone,
                    // the timeout bounds it.
                    state.inflight.fetch_add(1, Ordering::SeqCst);
                    let shaken = tokio::time::timeout(handshake_timeout, accept).await;
                    state.last_ms.store(conns.now(), Ordering::Relaxed);
                    state.inflight.fetch_sub(1, Ordering::SeqCst);
                    match shaken {
                        // ALPN decides, nothing is sniffed: `h2` is HTTP/2, anything else
                        // (http/1.1, or no ALPN) the plain port's HTTP/1.1.
                        Ok(Ok(stream)) if stream.get_ref().1.alpn_protocol() == Some(b"h2") => {
                            let conn = h2.serve_connection(TokioIo::new(stream), svc);
                            run_conn(conn, state, None).await;
                        }
                        Ok(Ok(stream)) => {
                            let conn = http
                                .serve_connection(TokioIo::new(stream), svc)
                                .with_upgrades();
                            run_conn(conn, state, None).await;
                        }
                        Ok(Err(e)) => tracing::debug!("TLS handshake: {e}"),
                        Err(_) => tracing::debug!("TLS handshake: timed out"),
                    }
                    conns.remove(id);
                    drop(slot);
                    drop(done);
                });
            }
        }
    }
    drop(done);
    tracing::info!("draining: no longer accepting connections");
    let _stop_sweeper = AbortOnDrop(sweeper);
    tokio::select! {
        _ = all_done.recv() => tracing::info!("drained: all connections closed"),
        _ = tokio::time::sleep(drain_timeout) => tracing::warn!("drain deadline {drain_timeout:?} reached: closing the remaining connections"),
    }
}

/// How often a worker looks at the certificate and key files for a change.
const TLS_WATCH: Duration = Duration::from_secs(1);
