//! The worker side of IPC: a REQ socket that dials the server's hub and reconnects by itself.
//! Every request runs in an nng context of its own, so many requests from one worker are in
//! flight at once; each completes through an aio callback that wakes the awaiting task. A request
//! that gets no reply within `-ipc-timeout` fails with [`IpcError::Timeout`], it never hangs.

use super::{IpcError, Msg};
use nng::options::{Options, ReconnectMaxTime, ReconnectMinTime};
use nng::{Aio, AioResult, Context, Socket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

/// Requests in flight at once from one worker; more wait for a free context.
const MAX_IN_FLIGHT: usize = 256;

type Reply = oneshot::Sender<Result<Msg, IpcError>>;

/// One context with its aio and the request it is serving.
struct Slot {
    ctx: Context,
    aio: Aio,
    state: Arc<Mutex<Pending>>,
}

#[derive(Default)]
struct Pending {
    reply: Option<Reply>,
    permit: Option<OwnedSemaphorePermit>,
    /// Keeps the aio alive while its operation runs (dropping the last handle would cancel it).
    hold: Option<Aio>,
}

struct Inner {
    socket: Socket,
    timeout: Duration,
    free: Mutex<Vec<Slot>>,
    permits: Arc<Semaphore>,
    /// Log the first failure of a streak and the recovery, not every heartbeat.
    failing: AtomicBool,
}

/// A handle to the worker's IPC socket; cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// Dials `url` in the background; requests fail with a timeout until the server is there.
    pub fn connect(url: &str, timeout: Duration) -> Result<Client, IpcError> {
        let t = |e: nng::Error| IpcError::Transport(e.to_string());
        let socket = Socket::new(nng::Protocol::Req0).map_err(t)?;
        socket
            .set_opt::<ReconnectMinTime>(Some(Duration::from_millis(10)))
            .map_err(t)?;
        socket
            .set_opt::<ReconnectMaxTime>(Some(Duration::from_millis(500)))
            .map_err(t)?;
        socket.dial_async(url).map_err(t)?;
        Ok(Client {
            inner: Arc::new(Inner {
                socket,
                timeout,
                free: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
                failing: AtomicBool::new(false),
            }),
        })
    }

    /// Sends a message whose reply nobody waits for (heartbeats).
    pub fn send(&self, msg: Msg) {
        let me = self.clone();
        tokio::spawn(async move {
            let _ = me.request(msg).await;
        });
    }

    /// Sends a message and waits for the server's reply, at most `-ipc-timeout` per direction.
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
        let bytes = serde_json::to_vec(&msg).map_err(|e| IpcError::Decode(e.to_string()))?;
        let permit = self
            .inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| IpcError::Closed)?;
        let slot = match self.take_slot() {
            Ok(s) => s,
            Err(e) => return Err(e),
        };
        let (tx, rx) = oneshot::channel();
        {
            let mut p = slot.state.lock().unwrap_or_else(|e| e.into_inner());
            p.reply = Some(tx);
            p.permit = Some(permit);
            p.hold = Some(slot.aio.clone());
        }
        slot.aio
            .set_timeout(Some(self.inner.timeout))
            .map_err(|e| IpcError::Transport(e.to_string()))?;
        if let Err((_, e)) = slot.ctx.send(&slot.aio, &bytes[..]) {
            let mut p = slot.state.lock().unwrap_or_else(|e| e.into_inner());
            p.reply = None;
            p.permit = None;
            p.hold = None;
            drop(p);
            self.put_slot(slot);
            return Err(map_err(e, self.inner.timeout));
        }
        // The callback completes the request and puts a handle to the slot back in the pool.
        drop(slot);
        rx.await.map_err(|_| IpcError::Closed)?
    }

    fn take_slot(&self) -> Result<Slot, IpcError> {
        if let Some(s) = self
            .inner
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
        {
            return Ok(s);
        }
        let ctx =
            Context::new(&self.inner.socket).map_err(|e| IpcError::Transport(e.to_string()))?;
        let state = Arc::new(Mutex::new(Pending::default()));
        let weak = Arc::downgrade(&self.inner);
        let (cb_ctx, cb_state) = (ctx.clone(), state.clone());
        let timeout = self.inner.timeout;
        let aio = Aio::new(move |aio, res| {
            let done = |aio: Aio, r: Result<Msg, IpcError>| {
                let mut p = cb_state.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(tx) = p.reply.take() {
                    let _ = tx.send(r);
                }
                p.permit = None;
                p.hold = None;
                drop(p);
                // Back to the pool, unless the client is gone.
                if let Some(inner) = weak.upgrade() {
                    inner
                        .free
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Slot {
                            ctx: cb_ctx.clone(),
                            aio,
                            state: cb_state.clone(),
                        });
                }
            };
            match res {
                AioResult::Send(Ok(())) => {
                    if let Err(e) = cb_ctx.recv(&aio) {
                        done(aio, Err(map_err(e, timeout)));
                    }
                }
                AioResult::Send(Err((_, e)))
                | AioResult::Recv(Err(e))
                | AioResult::Sleep(Err(e)) => done(aio, Err(map_err(e, timeout))),
                AioResult::Recv(Ok(m)) => done(
                    aio,
                    serde_json::from_slice::<Msg>(&m).map_err(|e| IpcError::Decode(e.to_string())),
                ),
                AioResult::Sleep(Ok(())) => {}
            }
        })
        .map_err(|e| IpcError::Transport(e.to_string()))?;
        Ok(Slot { ctx, aio, state })
    }

    fn put_slot(&self, slot: Slot) {
        self.inner
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(slot);
    }
}

fn map_err(e: nng::Error, timeout: Duration) -> IpcError {
    match e {
        nng::Error::TimedOut => IpcError::Timeout(timeout),
        nng::Error::Closed => IpcError::Closed,
        e => IpcError::Transport(e.to_string()),
    }
}
