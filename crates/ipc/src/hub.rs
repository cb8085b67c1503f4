//! The server side of worker IPC: a REP endpoint on `ipc://var/ipc/NAME-server.sock` served by a
//! runtime of its own. Each worker connection is read in a task; every request is answered inline
//! by the handler (cache operations in place, control messages forwarded to the supervisor loop),
//! so requests from one worker are pipelined and answered in order without thread hand-offs.
//!
//! The hub also pushes messages to every connected worker ([`Pushes`]): cache invalidations,
//! written straight into each worker's socket, from whichever thread changed the cache, before
//! the write that caused them is answered. A worker whose socket cannot take a push right away is
//! disconnected rather than left with a copy that might be stale; it reconnects by itself with an
//! empty near cache. After each push the [`PushCounter`] next to the socket is bumped, which
//! lets a worker skip reading its socket when nothing was pushed.

use super::pushcount::{counter_path, PushCounter};
use super::sp;
use super::{IpcError, Push, Reply, Request};
use nix::sys::socket::MsgFlags;
use parking_lot::Mutex;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::Interest;
use tokio::net::UnixStream;

/// Answers one message.
pub type Handler = Arc<dyn Fn(Request) -> Reply + Send + Sync>;

/// The server's listening IPC socket; closed and its file removed when dropped.
pub struct Hub {
    path: PathBuf,
    /// Removed on drop only while it is still this hub's socket (not a successor's).
    file: Option<bkjs_base::sys::SocketFile>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One worker connection's outgoing side, shared by its own task (replies) and by pushes.
struct Conn {
    id: u64,
    /// A duplicate of the socket's descriptor, so a push from another thread never writes to a
    /// descriptor number that was closed and reused.
    fd: OwnedFd,
    out: Mutex<Out>,
}

#[derive(Default)]
struct Out {
    /// Bytes not yet written: replies batched by the connection's task.
    buf: Vec<u8>,
    /// Shut down after a push that did not fit; nothing more is written.
    dead: bool,
}

impl Conn {
    fn out(&self) -> parking_lot::MutexGuard<'_, Out> {
        self.out.lock()
    }

    /// Writes as much of `out.buf` as the socket takes now; true when all of it went.
    fn write_now(&self, out: &mut Out) -> std::io::Result<bool> {
        let mut sent = 0;
        let res = loop {
            if sent == out.buf.len() {
                break Ok(true);
            }
            match nix::sys::socket::send(
                self.fd.as_raw_fd(),
                &out.buf[sent..],
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(n) => sent += n,
                Err(nix::errno::Errno::EAGAIN) => break Ok(false),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => break Err(std::io::Error::from(e)),
            }
        };
        out.buf.drain(..sent);
        res
    }

    /// Appends `frame` and writes everything pending now; false when the worker could not take
    /// it and was disconnected.
    fn push(&self, frame: &[u8]) -> bool {
        let mut out = self.out();
        if out.dead {
            return false;
        }
        out.buf.extend_from_slice(frame);
        match self.write_now(&mut out) {
            Ok(true) => true,
            other => {
                out.dead = true;
                let why = match other {
                    Err(e) => e.to_string(),
                    _ => "its socket is full".to_string(),
                };
                tracing::warn!(
                    "ipc hub: dropping worker connection {}: cannot push an invalidation ({why}); it reconnects with an empty near cache",
                    self.id
                );
                let _ = nix::sys::socket::shutdown(
                    self.fd.as_raw_fd(),
                    nix::sys::socket::Shutdown::Both,
                );
                false
            }
        }
    }
}

/// The connected workers, for messages the server pushes to all of them.
#[derive(Default)]
pub struct Pushes {
    conns: Mutex<Vec<Arc<Conn>>>,
    next_id: AtomicU64,
    /// Bumped after every push, once the hub has mapped it ([`Hub::start`]).
    counter: std::sync::OnceLock<PushCounter>,
}

impl Pushes {
    pub fn new() -> Arc<Pushes> {
        Arc::new(Pushes::default())
    }

    fn conns(&self) -> parking_lot::MutexGuard<'_, Vec<Arc<Conn>>> {
        self.conns.lock()
    }

    /// Writes `msg` into every worker's socket now (it is there when this returns); a worker
    /// that cannot take it is disconnected.
    pub fn push(&self, msg: &Push) {
        let mut conns = self.conns();
        if !conns.is_empty() {
            // Strings, numbers and enum tags only: JSON encoding cannot fail.
            let body = serde_json::to_vec(msg).expect("an IPC message always encodes");
            let mut frame = Vec::with_capacity(body.len() + 13);
            // A push carries id 0: no high bit, so it can never be taken for a reply.
            sp::frame(&mut frame, &[0, 0, 0, 0], &body);
            conns.retain(|c| c.push(&frame));
        }
        // Still under the lock, so the counter moves in the order the pushes were written.
        if let Some(c) = self.counter.get() {
            c.bump();
        }
    }

    /// Connected workers.
    pub fn len(&self) -> usize {
        self.conns().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn add(&self, fd: OwnedFd) -> Arc<Conn> {
        let c = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            fd,
            out: Mutex::new(Out::default()),
        });
        self.conns().push(c.clone());
        c
    }

    fn remove(&self, id: u64) {
        self.conns().retain(|c| c.id != id);
    }
}

impl Hub {
    /// Listens on `path` (the file of `ipc://PATH`) and answers every message with `handler`;
    /// `pushes` learns of every worker connection.
    pub fn start(path: PathBuf, handler: Handler, pushes: Arc<Pushes>) -> Result<Hub, IpcError> {
        // Mapped before anyone can connect; bumped once so that workers still holding values of
        // a previous server read their socket before trusting them again.
        let counter_file = counter_path(&path);
        let counter = PushCounter::create(&counter_file).map_err(|e| {
            IpcError::Transport(format!("push counter {}: {e}", counter_file.display()))
        })?;
        counter.bump();
        let _ = pushes.counter.set(counter);
        // Bound under a private name and renamed over a socket left by a killed (or a still
        // draining) server; mode 0600.
        let (std_listener, file) = bkjs_base::sys::bind_unix(&path)
            .map_err(|e| IpcError::Transport(format!("listen ipc://{}: {e}", path.display())))?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| IpcError::Transport(e.to_string()))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| IpcError::Transport(e.to_string()))?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("ipc-hub".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match tokio::net::UnixListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!("ipc hub: {e}");
                            return;
                        }
                    };
                    loop {
                        tokio::select! {
                            r = listener.accept() => match r {
                                Ok((s, _)) => {
                                    tokio::spawn(serve(s, handler.clone(), pushes.clone()));
                                }
                                Err(e) => {
                                    tracing::warn!("ipc hub accept: {e}");
                                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                                }
                            },
                            _ = &mut stopped => return,
                        }
                    }
                });
            })
            .map_err(|e| IpcError::Transport(e.to_string()))?;
        Ok(Hub {
            path,
            file: Some(file),
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The socket file, for changing its owner when workers drop privileges.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The push counter file workers map (it stays when the hub is dropped; see [`PushCounter`]).
    pub fn counter_path(&self) -> PathBuf {
        counter_path(&self.path)
    }
}

async fn serve(mut s: UnixStream, handler: Handler, pushes: Arc<Pushes>) {
    if let Err(e) = sp::handshake(&mut s, sp::REP0, sp::REQ0).await {
        tracing::warn!("ipc hub: a client failed the handshake: {e}");
        return;
    }
    let fd = match s.as_fd().try_clone_to_owned() {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!("ipc hub: cannot keep a worker connection: {e}");
            return;
        }
    };
    let conn = pushes.add(fd);
    // Forget the connection however this task ends (also when the hub's runtime is dropped), so
    // the duplicate descriptor closes with it and the worker sees the connection end.
    struct Registered(Arc<Pushes>, u64);
    impl Drop for Registered {
        fn drop(&mut self) {
            self.0.remove(self.1);
        }
    }
    let _registered = Registered(pushes, conn.id);
    let (r, w) = s.into_split();
    let mut r = tokio::io::BufReader::new(r);
    let mut buf = Vec::with_capacity(256);
    let mut reply = Vec::with_capacity(256);
    loop {
        if sp::read_frame(&mut r, &mut buf).await.is_err() {
            break; // the worker went away
        }
        let Some((header, body)) = sp::split_backtrace(&buf) else {
            tracing::warn!("ipc hub: a request without a request id");
            break;
        };
        let answer = match serde_json::from_slice::<Request>(body) {
            Ok(m) => handler(m),
            Err(e) => {
                tracing::warn!("ipc hub: undecodable message: {e}");
                Reply::Error {
                    message: format!("undecodable message: {e}"),
                }
            }
        };
        let body = serde_json::to_vec(&answer).unwrap_or_default();
        reply.clear();
        sp::frame(&mut reply, header, &body);
        conn.out().buf.extend_from_slice(&reply);
        // Answer at once unless another whole request is already buffered: then the replies go
        // out together (never wait on a partial frame with replies unsent).
        if !sp::has_frame(r.buffer()) && flush(&conn, w.as_ref()).await.is_err() {
            break;
        }
    }
}

/// Writes the connection's pending replies, waiting for room in the socket when needed.
async fn flush(conn: &Conn, stream: &UnixStream) -> std::io::Result<()> {
    loop {
        // `try_io` clears tokio's write readiness when the closure reports WouldBlock, so
        // `writable()` then waits for room instead of spinning.
        let r = stream.try_io(Interest::WRITABLE, || {
            let mut out = conn.out();
            if out.dead {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            match conn.write_now(&mut out)? {
                true => Ok(()),
                false => Err(std::io::ErrorKind::WouldBlock.into()),
            }
        });
        match r {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => stream.writable().await?,
            Err(e) => return Err(e),
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        // When this returns every worker connection is closed (the runtime and its tasks are
        // gone), so no worker can keep trusting what this hub told it.
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        drop(self.file.take());
    }
}
