//! The worker side of IPC: one unix-socket connection to the server's hub, speaking the nng REQ
//! wire protocol natively on the worker's runtime. Requests are multiplexed by request id, so
//! any number are in flight at once; a connection task writes requests and routes replies to
//! their waiters. A request that gets no reply within `-ipc-timeout` fails with
//! [`IpcError::Timeout`]; a lost connection fails the requests in flight and is re-dialled.

use super::sp;
use super::{IpcError, Msg};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

type Waiters = Mutex<HashMap<u32, oneshot::Sender<Result<Msg, IpcError>>>>;

struct Inner {
    timeout: Duration,
    next_id: AtomicU32,
    waiters: Waiters,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    /// Log the first failure of a streak and the recovery, not every heartbeat.
    failing: AtomicBool,
}

/// A handle to the worker's IPC connection; cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// Starts dialling `url` (`ipc:///path`) on the current tokio runtime; requests wait for the
    /// connection within their timeout.
    pub fn connect(url: &str, timeout: Duration) -> Result<Client, IpcError> {
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
            waiters: Mutex::new(HashMap::new()),
            tx,
            failing: AtomicBool::new(false),
        });
        handle.spawn(connection(path, rx, Arc::downgrade(&inner)));
        Ok(Client { inner })
    }

    /// Sends a message whose reply nobody waits for (heartbeats).
    pub fn send(&self, msg: Msg) {
        let me = self.clone();
        tokio::spawn(async move {
            let _ = me.request(msg).await;
        });
    }

    /// Sends a message and waits for the server's reply, at most `-ipc-timeout`.
    pub async fn request(&self, msg: Msg) -> Result<Msg, IpcError> {
        let result = self.round_trip(msg).await;
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

    async fn round_trip(&self, msg: Msg) -> Result<Msg, IpcError> {
        let body = serde_json::to_vec(&msg).map_err(|e| IpcError::Decode(e.to_string()))?;
        let id = (self.inner.next_id.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff) | 0x8000_0000;
        let (tx, rx) = oneshot::channel();
        self.inner
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
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
        self.inner
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}

/// Fails every request in flight (their connection is gone).
fn fail_all(inner: &Inner, why: &str) {
    let waiters: Vec<_> = inner
        .waiters
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain()
        .collect();
    for (_, w) in waiters {
        let _ = w.send(Err(IpcError::Transport(why.to_string())));
    }
}

/// Dials, shakes hands, then writes queued requests and routes replies until the connection
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
        // Reading runs in a task of its own: a read cut off half-way would lose the stream's
        // framing, and select! would cut it off whenever a request is queued.
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
            Some(i) => fail_all(&i, &format!("connection to the server lost: {why}")),
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

/// Routes replies to their waiters until the connection fails; returns why it ended.
async fn read_replies(r: tokio::net::unix::OwnedReadHalf, inner: std::sync::Weak<Inner>) -> String {
    let mut r = tokio::io::BufReader::new(r);
    let mut buf = Vec::with_capacity(256);
    loop {
        if let Err(e) = sp::read_frame(&mut r, &mut buf).await {
            return e.to_string();
        }
        let Some(inner) = inner.upgrade() else {
            return "client dropped".into();
        };
        if buf.len() < 4 {
            return "reply without a request id".into();
        }
        let id = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let waiter = inner
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if let Some(w) = waiter {
            let msg = serde_json::from_slice::<Msg>(&buf[4..])
                .map_err(|e| IpcError::Decode(e.to_string()));
            let _ = w.send(msg);
        }
    }
}
