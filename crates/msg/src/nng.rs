//! The nng pub/sub backend, with no service of its own: every server runs a [`Forwarder`] that
//! takes what publishers PUSH to it and re-publishes it on a PUB socket that subscribers dial
//! (the original's design: PUSH to a forwarder that publishes on port+1).
//!
//! Both sides speak nng's wire protocol (SP) natively on tokio, like the worker IPC does
//! (`bkjs_ipc::sp`), and stay compatible with libnng PUSH/PULL/PUB/SUB sockets (tested
//! against the `nng` crate). On one machine (`-msg-host` empty) they meet on `ipc://` sockets
//! under `var/`; across machines every node names the same forwarders in `-msg-host`: a
//! publisher sends to one forwarder at a time (the next one when it fails, so one publisher's
//! messages stay in order) and every subscriber dials every forwarder, so each message reaches
//! each subscriber once. A server
//! that finds itself in `-msg-host` forwards on TCP `-msg-bind:-msg-port` (publishers) and
//! `-msg-port`+1 (subscribers).
//!
//! A frame is `KEY DATA` (the key, one space, the data): SUB sockets filter by prefix, so a libnng
//! subscriber subscribes to `"KEY "`. nng pub/sub is lossy by design: a subscriber whose queue
//! at the forwarder is full loses messages (counted and logged), a publisher whose forwarders
//! are all unreachable has its messages queued up to a bound and then refused.
//!
//! Across machines (`-msg-host` set) a cluster secret is required: every publisher seals each
//! frame with the `msg` key of the cluster secret ([`bkjs_base::cluster::frame`], a random
//! origin per process and a counter per frame), the forwarder opens it and drops (and counts as
//! `cluster.forwarder.*`) what is unsigned, forged, stale or replayed, and forwards the sealed
//! frame unchanged; subscribers check it again (`cluster.subscriber.*`). On one machine
//! (`-msg-host` empty) frames stay plain.

use crate::backend::{retry_delay, Backend, BoxFuture, MsgError, Shared};
use bkjs_base::cluster::{self, Opener, Sealer, Secret};
use bkjs_base::config::Config;
use bkjs_ipc::sp;
use bytes::Bytes;
use parking_lot::Mutex;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc};

/// Protocol numbers of the SP sockets involved.
pub(crate) const PUB0: u16 = 0x20;
pub(crate) const SUB0: u16 = 0x21;
pub(crate) const PUSH0: u16 = 0x50;
pub(crate) const PULL0: u16 = 0x51;

/// Messages a publisher queues while no forwarder takes them.
const PUBLISH_QUEUE: usize = 10_000;
/// Messages a forwarder keeps for a subscriber connection that is behind.
const FORWARD_QUEUE: usize = 8192;

/// Where one socket of the forwarder is: a unix socket (`ipc://`) or TCP.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Endpoint {
    Ipc(PathBuf),
    Tcp(String),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Ipc(p) => write!(f, "ipc://{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// The ipc:// sockets of this home's forwarder: (publishers push here, subscribers dial here).
pub(crate) fn ipc_paths(cfg: &Config) -> (PathBuf, PathBuf) {
    let dir = bkjs_base::sys::socket_dir(cfg);
    let name = cfg.str("name");
    (
        dir.join(format!("{name}-msg.sock")),
        dir.join(format!("{name}-msg-sub.sock")),
    )
}

/// The `msg` key of the cluster secret when `-msg-host` names forwarders (required then), `None`
/// on one machine.
fn cluster_key(cfg: &Config) -> Result<Option<cluster::Key>, MsgError> {
    if cfg.list("msg-host").is_empty() {
        return Ok(None);
    }
    let secret = Secret::require(cfg, "msg-host").map_err(|e| MsgError::Config(e.to_string()))?;
    Ok(Some(secret.key("msg")))
}

/// Checks a frame a forwarder or subscriber received: `Some(payload)` when it may pass (always,
/// without a key), `None` when it was dropped and counted under `channel`.
fn check<'a>(opener: Option<&Mutex<Opener>>, channel: &str, frame: &'a [u8]) -> Option<&'a [u8]> {
    let Some(opener) = opener else {
        return Some(frame);
    };
    match opener.lock().open(frame) {
        Ok(f) => Some(f.payload),
        Err(why) => {
            cluster::count_drop(channel, why);
            None
        }
    }
}

/// `(host, port)` of every `-msg-host` entry (`host` or `host:port`).
fn hosts(cfg: &Config) -> Result<Vec<(String, u16)>, MsgError> {
    let default = cfg.int("msg-port") as u16;
    cfg.list("msg-host")
        .iter()
        .map(|h| match h.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') || host.starts_with('[') => port
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0 && *p < u16::MAX)
                .map(|p| (host.trim_matches(['[', ']']).to_string(), p))
                .ok_or_else(|| MsgError::Config(format!("-msg-host {h}: bad port"))),
            _ => Ok((h.clone(), default)),
        })
        .collect()
}

/// Where publishers push and subscribers dial: this home's ipc:// sockets, or every forwarder
/// of `-msg-host` over TCP.
pub(crate) fn endpoints(cfg: &Config) -> Result<(Vec<Endpoint>, Vec<Endpoint>), MsgError> {
    let hosts = hosts(cfg)?;
    if hosts.is_empty() {
        let (push, sub) = ipc_paths(cfg);
        return Ok((vec![Endpoint::Ipc(push)], vec![Endpoint::Ipc(sub)]));
    }
    let fmt = |h: &str, p: u16| {
        if h.contains(':') {
            format!("[{h}]:{p}")
        } else {
            format!("{h}:{p}")
        }
    };
    Ok((
        hosts
            .iter()
            .map(|(h, p)| Endpoint::Tcp(fmt(h, *p)))
            .collect(),
        hosts
            .iter()
            .map(|(h, p)| Endpoint::Tcp(fmt(h, p + 1)))
            .collect(),
    ))
}

/// Reads one message: ipc:// frames carry a type byte before the length, TCP frames do not.
async fn read_msg<R: AsyncRead + Unpin>(r: &mut R, ipc: bool, buf: &mut Vec<u8>) -> io::Result<()> {
    if ipc {
        return sp::read_frame(r, buf).await;
    }
    let mut len = [0u8; 8];
    r.read_exact(&mut len).await?;
    let len = u64::from_be_bytes(len);
    if len > sp::MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is too large"),
        ));
    }
    buf.clear();
    buf.resize(len as usize, 0);
    r.read_exact(buf).await.map(|_| ())
}

/// Appends one message in the framing of its transport.
fn put_msg(out: &mut Vec<u8>, ipc: bool, body: &[u8]) {
    if ipc {
        sp::frame(out, &[], body);
    } else {
        out.extend_from_slice(&(body.len() as u64).to_be_bytes());
        out.extend_from_slice(body);
    }
}

/// A connected stream of either transport.
enum Conn {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

async fn dial(ep: &Endpoint) -> io::Result<Conn> {
    Ok(match ep {
        Endpoint::Ipc(p) => Conn::Unix(tokio::net::UnixStream::connect(p).await?),
        Endpoint::Tcp(a) => {
            let s = tokio::net::TcpStream::connect(a).await?;
            let _ = s.set_nodelay(true);
            Conn::Tcp(s)
        }
    })
}

/// Logs the first failure of a streak and the recovery, not every retry.
struct Streak {
    what: String,
    failing: AtomicBool,
}

impl Streak {
    fn new(what: String) -> Streak {
        Streak {
            what,
            failing: AtomicBool::new(false),
        }
    }
    fn failed(&self, e: &dyn std::fmt::Display) {
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!("pub/sub: {}: {e}; retrying", self.what);
        }
    }
    fn ok(&self) {
        if self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!("pub/sub: {} works again", self.what);
        }
    }
}

/// The nng backend of one process: PUSH connections to the forwarders for publishing, SUB
/// connections from every forwarder for receiving.
pub(crate) struct NngBackend {
    queue: mpsc::Sender<Bytes>,
    describe: String,
    connected: Arc<AtomicU64>,
}

impl NngBackend {
    pub(crate) fn start(cfg: &Config, shared: Arc<Shared>) -> Result<NngBackend, MsgError> {
        let (push, sub) = endpoints(cfg)?;
        let key = cluster_key(cfg)?;
        let sealer = key.clone().map(|k| Arc::new(Sealer::new(k)));
        let opener = key.map(|k| {
            cluster::register_drops("subscriber");
            Arc::new(Mutex::new(Opener::new(k, None, cluster::frame_age(cfg))))
        });
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| MsgError::Config("pub/sub needs a tokio runtime".into()))?;
        let (tx, rx) = mpsc::channel::<Bytes>(PUBLISH_QUEUE);
        let connected = Arc::new(AtomicU64::new(0));
        handle.spawn(pusher(push.clone(), rx, connected.clone(), sealer));
        for ep in &sub {
            handle.spawn(subscriber(
                ep.clone(),
                Arc::downgrade(&shared),
                opener.clone(),
            ));
        }
        let list = |v: &[Endpoint]| {
            v.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        Ok(NngBackend {
            queue: tx,
            describe: format!("nng push {} sub {}", list(&push), list(&sub)),
            connected,
        })
    }
}

impl Backend for NngBackend {
    // nng subscriptions filter at the subscriber: every message reaches every process, and the
    // front hands it only to the keys that have local subscribers.
    fn subscribe(&self, _key: &str) {}
    fn unsubscribe(&self, _key: &str) {}

    fn publish(&self, key: &str, data: &str) -> BoxFuture<Result<(), MsgError>> {
        let mut frame = Vec::with_capacity(key.len() + 1 + data.len());
        frame.extend_from_slice(key.as_bytes());
        frame.push(b' ');
        frame.extend_from_slice(data.as_bytes());
        let r = match self.queue.try_send(Bytes::from(frame)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(MsgError::Unavailable(format!(
                "{} messages are waiting for a forwarder ({} connected)",
                PUBLISH_QUEUE,
                self.connected.load(Ordering::Relaxed)
            ))),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Err(MsgError::Unavailable("the publisher stopped".into()))
            }
        };
        Box::pin(async move { r })
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

/// Keeps one PUSH connection, to the first forwarder that answers (starting at a place that
/// depends on the process, to spread publishers), and writes the queued messages to it in order;
/// when it fails the next forwarder takes over. One connection at a time keeps one publisher's
/// messages in order.
/// Frames are sealed here, by the one task that writes them, so they leave in counter order.
async fn pusher(
    eps: Vec<Endpoint>,
    mut queue: mpsc::Receiver<Bytes>,
    connected: Arc<AtomicU64>,
    sealer: Option<Arc<Sealer>>,
) {
    let sealer = sealer.as_deref();
    let streaks: Vec<Streak> = eps
        .iter()
        .map(|ep| Streak::new(format!("publishing to {ep}")))
        .collect();
    let mut i = std::process::id() as usize % eps.len().max(1);
    let mut failed_in_a_row = 0usize;
    let mut round = 0;
    loop {
        let Some(ep) = eps.get(i) else { return };
        let ipc = matches!(ep, Endpoint::Ipc(_));
        let r = async {
            match dial(ep).await? {
                Conn::Unix(s) => push_on(s, ipc, &mut queue, &connected, &streaks[i], sealer).await,
                Conn::Tcp(s) => push_on(s, ipc, &mut queue, &connected, &streaks[i], sealer).await,
            }
        }
        .await;
        match r {
            Ok(true) => return, // the process's pub/sub is gone
            Ok(false) => {
                failed_in_a_row = 0;
                round = 0;
            }
            Err(e) => {
                streaks[i].failed(&e);
                failed_in_a_row += 1;
            }
        }
        i = (i + 1) % eps.len();
        if failed_in_a_row >= eps.len() {
            failed_in_a_row = 0;
            round += 1;
            tokio::time::sleep(retry_delay(round)).await;
        }
    }
}

/// Pushes until the connection fails (`Ok(false)` once it had worked) or the queue closes
/// (`Ok(true)`).
async fn push_on<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    ipc: bool,
    queue: &mut mpsc::Receiver<Bytes>,
    connected: &AtomicU64,
    streak: &Streak,
    sealer: Option<&Sealer>,
) -> io::Result<bool> {
    sp::handshake(&mut s, PUSH0, PULL0).await?;
    let put = |out: &mut Vec<u8>, m: &[u8]| match sealer {
        Some(s) => put_msg(out, ipc, &s.seal(m)),
        None => put_msg(out, ipc, m),
    };
    streak.ok();
    connected.fetch_add(1, Ordering::Relaxed);
    struct Down<'a>(&'a AtomicU64);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let _down = Down(connected);
    let (mut r, mut w) = tokio::io::split(s);
    let mut out = Vec::with_capacity(256);
    let mut probe = [0u8; 64];
    loop {
        tokio::select! {
            n = r.read(&mut probe) => {
                // A PULL peer never sends: data or EOF both mean the connection is done.
                let _ = n;
                return Ok(false);
            }
            m = queue.recv() => {
                let Some(m) = m else { return Ok(true) };
                out.clear();
                put(&mut out, &m);
                // What else is waiting goes in the same write.
                while out.len() < 64 * 1024 {
                    match queue.try_recv() {
                        Ok(m) => put(&mut out, &m),
                        Err(_) => break,
                    }
                }
                if let Err(e) = sp::write_all(&mut w, &out).await {
                    tracing::debug!("pub/sub: messages to a forwarder were lost: {e}");
                    return Ok(false);
                }
            }
        }
    }
}

/// Keeps one SUB connection from a forwarder and delivers what it publishes.
async fn subscriber(
    ep: Endpoint,
    shared: std::sync::Weak<Shared>,
    opener: Option<Arc<Mutex<Opener>>>,
) {
    let streak = Streak::new(format!("subscribing from {ep}"));
    let ipc = matches!(ep, Endpoint::Ipc(_));
    let mut attempt = 0;
    loop {
        if shared.strong_count() == 0 {
            return;
        }
        let r = async {
            match dial(&ep).await? {
                Conn::Unix(s) => sub_on(s, ipc, &shared, &streak, opener.as_deref()).await,
                Conn::Tcp(s) => sub_on(s, ipc, &shared, &streak, opener.as_deref()).await,
            }
        }
        .await;
        match r {
            Ok(true) => return,
            Ok(false) => attempt = 0,
            Err(e) => {
                streak.failed(&e);
                attempt += 1;
            }
        }
        tokio::time::sleep(retry_delay(attempt)).await;
    }
}

async fn sub_on<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    ipc: bool,
    shared: &std::sync::Weak<Shared>,
    streak: &Streak,
    opener: Option<&Mutex<Opener>>,
) -> io::Result<bool> {
    sp::handshake(&mut s, SUB0, PUB0).await?;
    streak.ok();
    let mut r = tokio::io::BufReader::new(s);
    let mut buf = Vec::with_capacity(256);
    loop {
        if read_msg(&mut r, ipc, &mut buf).await.is_err() {
            return Ok(false);
        }
        let Some(shared) = shared.upgrade() else {
            return Ok(true);
        };
        let Some(frame) = check(opener, "subscriber", &buf) else {
            continue;
        };
        let Some(sp) = frame.iter().position(|b| *b == b' ') else {
            continue;
        };
        let (Ok(key), Ok(data)) = (
            std::str::from_utf8(&frame[..sp]),
            std::str::from_utf8(&frame[sp + 1..]),
        ) else {
            continue;
        };
        shared.deliver(key, data);
    }
}

/// The server's forwarder: listens for publishers (PULL) and subscribers (PUB) on this home's
/// ipc:// sockets, and on TCP when this server is one of `-msg-host`; stops when dropped.
pub struct Forwarder {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// Removed on drop only while they are still this forwarder's (not a successor's).
    files: Vec<bkjs_base::sys::SocketFile>,
    stats: Arc<ForwarderStats>,
}

/// What a forwarder has done.
#[derive(Debug, Default)]
pub struct ForwarderStats {
    pub received: AtomicU64,
    /// Publishers' messages dropped: unsigned, forged, stale or replayed (with a cluster key).
    pub refused: AtomicU64,
    /// Messages a subscriber connection was too far behind to get.
    pub lost: AtomicU64,
    pub subscribers: AtomicU64,
}

/// Whether `-msg-host` names this server (an address of this machine with `-msg-port`).
fn listed(cfg: &Config) -> Result<bool, MsgError> {
    let port = cfg.int("msg-port") as u16;
    let me = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bind = cluster::bind_address(cfg.str("msg-bind"), cfg.list("msg-host"));
    let local = [
        "127.0.0.1",
        "localhost",
        "0.0.0.0",
        "::1",
        bind.as_str(),
        &me,
    ];
    Ok(hosts(cfg)?
        .iter()
        .any(|(h, p)| *p == port && local.contains(&h.as_str())))
}

fn tcp_listener(addr: &str) -> io::Result<std::net::TcpListener> {
    let sa: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
    let l = bkjs_base::sys::tcp_listener(sa, 1024)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

enum Listener {
    Unix(std::os::unix::net::UnixListener),
    Tcp(std::net::TcpListener),
}

impl Forwarder {
    /// Starts the forwarder when `-msg-type` is nng (`None` otherwise) on a thread of its own.
    pub fn start(cfg: &Config) -> Result<Option<Forwarder>, MsgError> {
        if cfg.str("msg-type") != "nng" {
            return Ok(None);
        }
        let fail = |what: &str, e: io::Error| {
            MsgError::Unavailable(format!("forwarder cannot listen on {what}: {e}"))
        };
        let (push_path, sub_path) = ipc_paths(cfg);
        let mut pulls = Vec::new();
        let mut pubs = Vec::new();
        let mut files = Vec::new();
        let dir = bkjs_base::sys::socket_dir(cfg);
        bkjs_base::sys::private_dir(&dir).map_err(|e| fail(&dir.display().to_string(), e))?;
        for (path, list) in [(&push_path, &mut pulls), (&sub_path, &mut pubs)] {
            // Renamed over a socket left by a killed (or a still draining) server; mode 0600.
            let (l, file) = bkjs_base::sys::bind_unix(path)
                .map_err(|e| fail(&format!("ipc://{}", path.display()), e))?;
            files.push(file);
            l.set_nonblocking(true)
                .map_err(|e| fail(&path.display().to_string(), e))?;
            list.push(Listener::Unix(l));
        }
        let (uid, gid) = bkjs_base::sys::target_ids(cfg);
        if uid.is_some() || gid.is_some() {
            for p in [&push_path, &sub_path] {
                std::os::unix::fs::chown(p, uid, gid).map_err(|e| {
                    MsgError::Unavailable(format!("cannot hand {} to -uid/-gid: {e}", p.display()))
                })?;
            }
        }
        let key = cluster_key(cfg)?;
        let mut tcp = Vec::new();
        if listed(cfg)? {
            let port = cfg.int("msg-port") as u16;
            let bind = cluster::bind_address(cfg.str("msg-bind"), cfg.list("msg-host"));
            let host = if bind.contains(':') {
                format!("[{bind}]")
            } else {
                bind.to_string()
            };
            for (p, list) in [(port, &mut pulls), (port + 1, &mut pubs)] {
                let addr = format!("{host}:{p}");
                let l = tcp_listener(&addr).map_err(|e| fail(&format!("tcp://{addr}"), e))?;
                list.push(Listener::Tcp(l));
                tcp.push(addr);
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| MsgError::Unavailable(e.to_string()))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let stats = Arc::new(ForwarderStats::default());
        let st = stats.clone();
        let opener = key.map(|k| {
            cluster::register_drops("forwarder");
            Arc::new(Mutex::new(Opener::new(k, None, cluster::frame_age(cfg))))
        });
        std::thread::Builder::new()
            .name("msg-forwarder".into())
            .spawn(move || rt.block_on(forward(pulls, pubs, st, opener, stopped)))
            .map_err(|e| MsgError::Unavailable(e.to_string()))?;
        tracing::info!(
            "pub/sub forwarder on ipc://{} and ipc://{}{}",
            push_path.display(),
            sub_path.display(),
            if tcp.is_empty() {
                String::new()
            } else {
                format!(", tcp://{}", tcp.join(" and tcp://"))
            }
        );
        Ok(Some(Forwarder {
            stop: Some(stop),
            files,
            stats,
        }))
    }

    pub fn stats(&self) -> &ForwarderStats {
        &self.stats
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.files.clear();
    }
}

async fn forward(
    pulls: Vec<Listener>,
    pubs: Vec<Listener>,
    stats: Arc<ForwarderStats>,
    opener: Option<Arc<Mutex<Opener>>>,
    stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let (tx, _) = broadcast::channel::<Bytes>(FORWARD_QUEUE);
    let mut tasks = tokio::task::JoinSet::new();
    for (l, publisher_side) in pulls
        .into_iter()
        .map(|l| (l, true))
        .chain(pubs.into_iter().map(|l| (l, false)))
    {
        let (tx, stats, opener) = (tx.clone(), stats.clone(), opener.clone());
        let spawned = match l {
            Listener::Unix(l) => tokio::net::UnixListener::from_std(l)
                .map(|l| tasks.spawn(accept_loop(l, publisher_side, tx, stats, opener))),
            Listener::Tcp(l) => tokio::net::TcpListener::from_std(l)
                .map(|l| tasks.spawn(accept_loop(l, publisher_side, tx, stats, opener))),
        };
        if let Err(e) = spawned {
            tracing::error!("pub/sub forwarder: {e}");
        }
    }
    let _ = stopped.await;
    tasks.abort_all();
}

/// What [`accept_loop`] needs of a listener: its next connection, and whether it is the ipc://
/// (unix socket) kind.
trait Accept: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    const IPC: bool;
    fn next_conn(&self) -> impl std::future::Future<Output = std::io::Result<Self::Stream>> + Send;
}

impl Accept for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;
    const IPC: bool = true;
    async fn next_conn(&self) -> std::io::Result<Self::Stream> {
        self.accept().await.map(|(s, _)| s)
    }
}

impl Accept for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    const IPC: bool = false;
    async fn next_conn(&self) -> std::io::Result<Self::Stream> {
        let (s, _) = self.accept().await?;
        let _ = s.set_nodelay(true);
        Ok(s)
    }
}

/// Serves every connection `l` accepts, until the task is aborted; a failed accept (out of file
/// descriptors, say) is logged and retried shortly after.
async fn accept_loop<L: Accept>(
    l: L,
    publisher_side: bool,
    tx: broadcast::Sender<Bytes>,
    stats: Arc<ForwarderStats>,
    opener: Option<Arc<Mutex<Opener>>>,
) {
    loop {
        match l.next_conn().await {
            Ok(s) => {
                tokio::spawn(serve(
                    s,
                    L::IPC,
                    publisher_side,
                    tx.clone(),
                    stats.clone(),
                    opener.clone(),
                ));
            }
            Err(e) => {
                tracing::warn!("pub/sub forwarder accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

/// One connection to the forwarder: a publisher whose messages are broadcast (when they pass
/// [`check`] with the cluster key, if there is one), or a subscriber that gets every broadcast
/// message.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    ipc: bool,
    publisher_side: bool,
    tx: broadcast::Sender<Bytes>,
    stats: Arc<ForwarderStats>,
    opener: Option<Arc<Mutex<Opener>>>,
) {
    let (me, peer) = if publisher_side {
        (PULL0, PUSH0)
    } else {
        (PUB0, SUB0)
    };
    if let Err(e) = sp::handshake(&mut s, me, peer).await {
        tracing::debug!("pub/sub forwarder: a peer failed the handshake: {e}");
        return;
    }
    if publisher_side {
        let mut r = tokio::io::BufReader::new(s);
        let mut buf = Vec::with_capacity(256);
        while read_msg(&mut r, ipc, &mut buf).await.is_ok() {
            if check(opener.as_deref(), "forwarder", &buf).is_none() {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            stats.received.fetch_add(1, Ordering::Relaxed);
            let _ = tx.send(Bytes::copy_from_slice(&buf));
        }
        return;
    }
    stats.subscribers.fetch_add(1, Ordering::Relaxed);
    let mut rx = tx.subscribe();
    let (mut r, w) = tokio::io::split(s);
    let mut w = tokio::io::BufWriter::new(w);
    let mut out = Vec::with_capacity(256);
    let mut probe = [0u8; 64];
    loop {
        tokio::select! {
            n = r.read(&mut probe) => {
                // SUB peers send nothing; EOF or an error ends the connection.
                if !matches!(n, Ok(n) if n > 0) { break; }
            }
            m = rx.recv() => match m {
                Ok(m) => {
                    out.clear();
                    put_msg(&mut out, ipc, &m);
                    // Batch what is already waiting into one write.
                    while let Ok(more) = rx.try_recv() {
                        put_msg(&mut out, ipc, &more);
                        if out.len() > 64 * 1024 { break; }
                    }
                    if w.write_all(&out).await.is_err() || w.flush().await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    if stats.lost.fetch_add(n, Ordering::Relaxed) == 0 {
                        tracing::warn!("pub/sub forwarder: a subscriber fell {n} messages behind and lost them");
                    }
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    }
    stats.subscribers.fetch_sub(1, Ordering::Relaxed);
}
