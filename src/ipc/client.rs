//! The worker side of IPC: one thread owns a REQ socket that dials the server's hub and
//! reconnects by itself; callers queue messages and, when they want one, await the reply.

use super::{IpcError, Msg};
use nng::options::{Options, ReconnectMaxTime, ReconnectMinTime, RecvTimeout, SendTimeout};
use std::sync::mpsc;
use std::time::Duration;
use tokio::sync::oneshot;

type Reply = oneshot::Sender<Result<Msg, IpcError>>;

/// A handle to the worker's IPC thread; cheap to clone.
#[derive(Clone)]
pub struct Client {
    tx: mpsc::Sender<(Msg, Option<Reply>)>,
}

impl Client {
    /// Dials `url` in the background; messages queue until the server is there.
    pub fn connect(url: &str, timeout: Duration) -> Result<Client, IpcError> {
        let t = |e: nng::Error| IpcError::Transport(e.to_string());
        let socket = nng::Socket::new(nng::Protocol::Req0).map_err(t)?;
        socket.set_opt::<RecvTimeout>(Some(timeout)).map_err(t)?;
        socket.set_opt::<SendTimeout>(Some(timeout)).map_err(t)?;
        socket
            .set_opt::<ReconnectMinTime>(Some(Duration::from_millis(10)))
            .map_err(t)?;
        socket
            .set_opt::<ReconnectMaxTime>(Some(Duration::from_millis(500)))
            .map_err(t)?;
        socket.dial_async(url).map_err(t)?;
        let (tx, rx) = mpsc::channel::<(Msg, Option<Reply>)>();
        std::thread::Builder::new()
            .name("ipc-client".into())
            .spawn(move || {
                // Log the first failure of a streak, and the recovery, not every heartbeat.
                let mut failing = false;
                while let Ok((msg, reply)) = rx.recv() {
                    let result = round_trip(&socket, &msg, timeout);
                    match (&result, failing) {
                        (Err(e), false) => {
                            tracing::warn!("ipc to the server failed: {e}");
                            failing = true;
                        }
                        (Ok(_), true) => {
                            tracing::info!("ipc to the server works again");
                            failing = false;
                        }
                        _ => {}
                    }
                    if let Some(r) = reply {
                        let _ = r.send(result);
                    }
                }
            })
            .map_err(|e| IpcError::Transport(e.to_string()))?;
        Ok(Client { tx })
    }

    /// Queues a message whose reply nobody waits for.
    pub fn send(&self, msg: Msg) {
        let _ = self.tx.send((msg, None));
    }

    /// Sends a message and waits for the server's reply (at most `-ipc-timeout` once it is sent).
    pub async fn request(&self, msg: Msg) -> Result<Msg, IpcError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((msg, Some(tx)))
            .map_err(|_| IpcError::Closed)?;
        rx.await.map_err(|_| IpcError::Closed)?
    }
}

fn round_trip(socket: &nng::Socket, msg: &Msg, timeout: Duration) -> Result<Msg, IpcError> {
    let bytes = serde_json::to_vec(msg).map_err(|e| IpcError::Decode(e.to_string()))?;
    let map = |e: nng::Error| match e {
        nng::Error::TimedOut => IpcError::Timeout(timeout),
        nng::Error::Closed => IpcError::Closed,
        e => IpcError::Transport(e.to_string()),
    };
    socket.send(&bytes[..]).map_err(|(_, e)| map(e))?;
    let reply = socket.recv().map_err(map)?;
    serde_json::from_slice(&reply).map_err(|e| IpcError::Decode(e.to_string()))
}
