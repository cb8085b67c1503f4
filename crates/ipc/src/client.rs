//! The worker side of IPC: one unix-socket connection to the server's hub, speaking the nng REQ
//! wire protocol natively on the worker's runtime. Requests are multiplexed by request id, so
//! any number are in flight at once; a connection task writes requests, and replies are routed to
//! their waiters by whoever reads the socket first. A request that gets no reply within
//! `-ipc-timeout` fails with [`IpcError::Timeout`]; a lost connection fails the requests in
//! flight and is re-dialled.
//!
//! Besides replies, the server pushes cache invalidations on the same stream (frames whose id
//! lacks the high bit). They keep the worker's [`NearCache`] coherent: before a cache read is
//! answered from it, everything already waiting on the socket is read with a non-blocking
//! `recv(2)` (not tokio's cached readiness, which may lag), so an invalidation the server sent
//! before it acknowledged a write is always applied first. That read is skipped when the
//! server's [`PushCounter`] shows that nothing was pushed since the socket was last read.
//!
//! In one process that is both server and worker (`bkjs run -single`), [`Client::in_process`]
//! answers every request with the server's own handler, directly.

use super::near::NearCache;
use super::pushcount::{counter_path, PushCounter};
use super::sp;
use super::{IpcError, Push, Reply, Request};
use parking_lot::{Mutex, MutexGuard};
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::Interest;
use tokio::net::unix::OwnedReadHalf;
use tokio::sync::{mpsc, oneshot};

/// Someone waiting for the reply to request `id`.
struct Waiter {
    tx: oneshot::Sender<Result<Reply, IpcError>>,
    /// A cache read: its keys and the near cache's epoch when it was sent.
    fill: Option<(u64, Vec<String>)>,
}

/// The read side of the current connection, the requests in flight and the near cache: one
/// lock, because the order in which frames are read is the order in which they take effect.
struct State {
    waiters: HashMap<u32, Waiter>,
    near: NearCache,
    /// The live connection's read half; `None` while disconnected.
    link: Option<Arc<OwnedReadHalf>>,
    /// Bytes read but not yet a whole frame.
    rbuf: Vec<u8>,
    /// What `recv` reads into, allocated (and zeroed) once.
    scratch: Box<[u8]>,
    /// The server's push counter, mapped when the connection was made; `None` (unreadable):
    /// the socket is read before every near-cache read.
    pushes: Option<PushCounter>,
    /// The counter's value just before the socket was last read to the end.
    seen: u64,
}

struct Inner {
    timeout: Duration,
    next_id: AtomicU32,
    state: Mutex<State>,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    /// Log the first failure of a streak and the recovery, not every heartbeat.
    failing: AtomicBool,
}

/// What reading the socket found.
enum Drained {
    /// Nothing more to read now.
    Empty,
    /// The server closed the connection, or reading failed.
    Lost(String),
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Reads whatever the socket holds right now and applies it: replies to their waiters,
    /// pushed invalidations to the near cache. On a lost connection everything in flight fails.
    fn drain(&self, st: &mut State) -> Drained {
        let Some(link) = st.link.clone() else {
            return Drained::Empty;
        };
        let half: &OwnedReadHalf = &link;
        let stream: &tokio::net::UnixStream = half.as_ref();
        let fd = stream.as_raw_fd();
        if let Some(c) = &st.pushes {
            st.seen = c.load();
        }
        let outcome = loop {
            let State { rbuf, scratch, .. } = &mut *st;
            match nix::sys::socket::recv(fd, scratch, nix::sys::socket::MsgFlags::MSG_DONTWAIT) {
                Ok(0) => break Drained::Lost("the server closed the connection".into()),
                Ok(n) => {
                    rbuf.extend_from_slice(&scratch[..n]);
                    if n < scratch.len() {
                        break Drained::Empty;
                    }
                }
                Err(nix::errno::Errno::EAGAIN) => break Drained::Empty,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => break Drained::Lost(format!("read: {e}")),
            }
        };
        if let Err(why) = dispatch(st) {
            return self.lose(st, &why);
        }
        match outcome {
            Drained::Lost(why) => self.lose(st, &why),
            empty => empty,
        }
    }

    /// Applies whatever the server pushed since the socket was last read, before the near cache
    /// answers: reads the socket unless the push counter shows nothing new.
    fn catch_up(&self, st: &mut State) {
        if st.pushes.as_ref().is_none_or(|c| c.load() != st.seen) {
            self.drain(st);
        }
    }

    /// The connection is gone: nothing cached may be trusted, nothing in flight will be answered.
    fn lose(&self, st: &mut State, why: &str) -> Drained {
        if st.link.take().is_some() {
            st.near.set_live(false);
            st.rbuf.clear();
            for (_, w) in st.waiters.drain() {
                let _ = w.tx.send(Err(IpcError::Transport(format!(
                    "connection to the server lost: {why}"
                ))));
            }
        }
        Drained::Lost(why.to_string())
    }
}

/// Applies every whole frame in `st.rbuf`.
fn dispatch(st: &mut State) -> Result<(), String> {
    let mut at = 0;
    while let Some((msg, used)) = sp::next_frame(&st.rbuf[at..]) {
        at += used;
        if msg.len() < 4 {
            return Err("a frame without a request id".into());
        }
        let id = u32::from_be_bytes([msg[0], msg[1], msg[2], msg[3]]);
        if id & 0x8000_0000 == 0 {
            match serde_json::from_slice::<Push>(&msg[4..]) {
                Ok(Push::Invalidate { keys }) => st.near.invalidate(&keys),
                Ok(Push::InvalidateAll) => st.near.invalidate_all(),
                // A push this worker cannot read may have been an invalidation: forget it all.
                Err(e) => {
                    tracing::warn!("ipc: undecodable push from the server: {e}");
                    st.near.invalidate_all();
                }
            }
            continue;
        }
        let decoded =
            serde_json::from_slice::<Reply>(&msg[4..]).map_err(|e| IpcError::Decode(e.to_string()));
        let Some(w) = st.waiters.remove(&id) else {
            continue; // timed out already
        };
        if let (Some((epoch, keys)), Ok(Reply::Values { values })) = (&w.fill, &decoded) {
            st.near.fill(*epoch, keys, values);
        }
        let _ = w.tx.send(decoded);
    }
    st.rbuf.drain(..at);
    Ok(())
}

/// A handle to the worker's IPC connection; cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// In-process ([`Client::in_process`], `bkjs run -single`): every request is answered by
    /// the server's own handler in this process, with no socket and no near cache.
    direct: Option<super::Handler>,
}

impl Client {
    /// Starts dialling `url` (`ipc:///path`) on the current tokio runtime; requests wait for the
    /// connection within their timeout. No near cache: every read crosses IPC.
    pub fn connect(url: &str, timeout: Duration) -> Result<Client, IpcError> {
        Client::connect_near(url, timeout, 0)
    }

    /// [`Client::connect`] with a near cache of `near_bytes` (0: none) for [`Client::cache_get`].
    pub fn connect_near(
        url: &str,
        timeout: Duration,
        near_bytes: usize,
    ) -> Result<Client, IpcError> {
        let path = PathBuf::from(
            url.strip_prefix("ipc://")
                .ok_or_else(|| IpcError::Transport(format!("{url} is not an ipc:// URL")))?,
        );
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| IpcError::Transport("the IPC client needs a tokio runtime".into()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            timeout,
            next_id: AtomicU32::new(rand::random::<u32>() & 0x7fff_ffff),
            state: Mutex::new(State {
                waiters: HashMap::new(),
                near: NearCache::new(near_bytes),
                link: None,
                rbuf: Vec::with_capacity(4096),
                scratch: vec![0u8; 16 * 1024].into_boxed_slice(),
                pushes: None,
                seen: 0,
            }),
            tx,
            failing: AtomicBool::new(false),
        });
        handle.spawn(connection(path, rx, Arc::downgrade(&inner)));
        Ok(Client {
            inner,
            direct: None,
        })
    }

    /// A client whose requests `handler` answers in this process (the same handler the hub
    /// serves workers with): one process holding both the server's part and a worker's API
    /// (`bkjs run -single`) makes no IPC hop. It has no connection and no near cache: the LRU
    /// it reads is in this process.
    pub fn in_process(handler: super::Handler) -> Client {
        let (tx, _rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            timeout: Duration::ZERO,
            next_id: AtomicU32::new(0),
            state: Mutex::new(State {
                waiters: HashMap::new(),
                near: NearCache::new(0),
                link: None,
                rbuf: Vec::new(),
                scratch: Box::default(),
                pushes: None,
                seen: 0,
            }),
            tx,
            failing: AtomicBool::new(false),
        });
        Client {
            inner,
            direct: Some(handler),
        }
    }

    /// Empties this worker's near cache: the next reads come from the server's LRU.
    pub fn near_reset(&self) {
        self.inner.lock().near.invalidate_all();
    }

    /// Sends a message whose reply nobody waits for (heartbeats).
    pub fn send(&self, msg: Request) {
        if let Some(h) = &self.direct {
            h(msg);
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let _ = me.request(msg).await;
        });
    }

    /// Sends a message and waits for the server's reply, at most `-ipc-timeout`.
    pub async fn request(&self, msg: Request) -> Result<Reply, IpcError> {
        if let Some(h) = &self.direct {
            return Ok(h(msg));
        }
        self.logged(self.round_trip(msg, None).await)
    }

    /// The values of `keys` in the server's cache: from the near cache when it holds them all,
    /// otherwise from the server (and then kept in the near cache).
    pub async fn cache_get(&self, keys: Vec<String>) -> Result<Reply, IpcError> {
        if let Some(h) = &self.direct {
            return Ok(h(Request::CacheGet { keys }));
        }
        let epoch = {
            let mut st = self.inner.lock();
            if !st.near.enabled() {
                None
            } else {
                self.inner.catch_up(&mut st);
                if let Some(values) = st.near.lookup(&keys) {
                    return Ok(Reply::Values { values });
                }
                Some(st.near.epoch())
            }
        };
        let fill = epoch.map(|e| (e, keys.clone()));
        self.logged(self.round_trip(Request::CacheGet { keys }, fill).await)
    }

    /// The value of one key, from the near cache when it holds it: [`Client::cache_get`]
    /// without building a key list on a near-cache hit.
    pub async fn cache_get_one(&self, key: &str) -> Result<Option<Arc<str>>, IpcError> {
        {
            let mut st = self.inner.lock();
            if st.near.enabled() {
                self.inner.catch_up(&mut st);
                if let Some(v) = st.near.lookup_one(key) {
                    return Ok(Some(v));
                }
            }
        }
        match self.cache_get(vec![key.to_string()]).await? {
            Reply::Values { mut values } if values.len() == 1 => {
                Ok(values.pop().flatten().map(Arc::from))
            }
            other => Err(IpcError::Decode(format!("{other:?}"))),
        }
    }

    fn logged(&self, result: Result<Reply, IpcError>) -> Result<Reply, IpcError> {
        match &result {
            Err(e) if !self.inner.failing.swap(true, Ordering::Relaxed) => {
                tracing::warn!("ipc to the server failed: {e}");
            }
            Ok(_) if self.inner.failing.swap(false, Ordering::Relaxed) => {
                tracing::info!("ipc to the server works again");
            }
            _ => {}
        }
        result
    }

    async fn round_trip(
        &self,
        msg: Request,
        fill: Option<(u64, Vec<String>)>,
    ) -> Result<Reply, IpcError> {
        let body = serde_json::to_vec(&msg).map_err(|e| IpcError::Decode(e.to_string()))?;
        let id = (self.inner.next_id.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff) | 0x8000_0000;
        let (tx, rx) = oneshot::channel();
        self.inner.lock().waiters.insert(id, Waiter { tx, fill });
        let mut frame = Vec::with_capacity(body.len() + 13);
        sp::frame(&mut frame, &id.to_be_bytes(), &body);
        if self.inner.tx.send(frame).is_err() {
            self.forget(id);
            return Err(IpcError::Closed);
        }
        match tokio::time::timeout(self.inner.timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(IpcError::Closed),
            Err(_) => {
                self.forget(id);
                Err(IpcError::Timeout(self.inner.timeout))
            }
        }
    }

    fn forget(&self, id: u32) {
        self.inner.lock().waiters.remove(&id);
    }
}

/// Dials, shakes hands, then writes queued requests and reads replies until the connection
/// breaks; then dials again. Ends when the client is dropped.
async fn connection(
    path: PathBuf,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    inner: std::sync::Weak<Inner>,
) {
    let mut delay = Duration::from_millis(10);
    loop {
        let stream = match tokio::net::UnixStream::connect(&path).await {
            Ok(mut s) => match sp::handshake(&mut s, sp::REQ0, sp::REP0).await {
                Ok(()) => s,
                Err(e) => {
                    tracing::warn!("ipc handshake with {}: {e}", path.display());
                    tokio::time::sleep(delay).await;
                    continue;
                }
            },
            Err(_) => {
                if inner.strong_count() == 0 {
                    return;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(500));
                continue;
            }
        };
        delay = Duration::from_millis(10);
        let (r, w) = stream.into_split();
        let r = Arc::new(r);
        // Mapped anew on every connection: the counter belongs to the server now listening.
        let counter = match PushCounter::open(&counter_path(&path)) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(
                    "ipc: no push counter ({e}); every near-cache read checks the socket"
                );
                None
            }
        };
        {
            let Some(i) = inner.upgrade() else { return };
            let mut st = i.lock();
            st.rbuf.clear();
            st.link = Some(r.clone());
            st.pushes = counter;
            // Nothing was read from this connection yet: the first cached read reads it.
            st.seen = st.pushes.as_ref().map_or(0, |c| c.load().wrapping_sub(1));
            st.near.set_live(true);
        }
        let mut reader = tokio::spawn(read_replies(r, inner.clone()));
        let mut w = tokio::io::BufWriter::new(w);
        let why = loop {
            tokio::select! {
                frame = rx.recv() => {
                    let Some(frame) = frame else {
                        reader.abort();
                        return;
                    };
                    if let Err(e) = write_batch(&mut w, frame, &mut rx).await {
                        reader.abort();
                        break e.to_string();
                    }
                }
                why = &mut reader => break why.unwrap_or_else(|e| e.to_string()),
            }
        };
        match inner.upgrade() {
            Some(i) => {
                let mut st = i.lock();
                i.lose(&mut st, &why);
            }
            None => return,
        }
    }
}

/// Writes `first` and whatever else is queued, then flushes once.
async fn write_batch<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    first: Vec<u8>,
    rx: &mut mpsc::UnboundedReceiver<Vec<u8>>,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    w.write_all(&first).await?;
    // Let the runtime look at its sockets once more: requests that are ready now join this
    // batch, so the server wakes once for all of them.
    tokio::task::yield_now().await;
    while let Ok(more) = rx.try_recv() {
        w.write_all(&more).await?;
    }
    w.flush().await
}

/// Waits for the socket to become readable and drains it, until the connection fails (or is
/// replaced); returns why it ended.
async fn read_replies(r: Arc<OwnedReadHalf>, inner: std::sync::Weak<Inner>) -> String {
    loop {
        if let Err(e) = r.readable().await {
            return e.to_string();
        }
        let Some(i) = inner.upgrade() else {
            return "client dropped".into();
        };
        // `try_io` clears tokio's readiness when the closure reports WouldBlock, so the next
        // `readable()` waits for new data instead of spinning.
        let half: &OwnedReadHalf = &r;
        let stream: &tokio::net::UnixStream = half.as_ref();
        let outcome = stream.try_io(Interest::READABLE, || {
            let mut st = i.lock();
            if !st.link.as_ref().is_some_and(|l| Arc::ptr_eq(l, &r)) {
                return Ok(Some("connection replaced".to_string()));
            }
            match i.drain(&mut st) {
                Drained::Empty => Err(std::io::ErrorKind::WouldBlock.into()),
                Drained::Lost(why) => Ok(Some(why)),
            }
        });
        match outcome {
            Ok(Some(why)) => return why,
            Ok(None) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return e.to_string(),
        }
    }
}
