//! The server side of worker IPC: a REP socket served by several nng contexts at once, each
//! looping receive → handle → reply in aio callbacks, so one slow request does not hold up the
//! others. What a message means is up to the handler the server passes in (cache operations are
//! answered in place, control messages go to the supervisor loop).

use super::{IpcError, Msg};
use nng::{Aio, AioResult, Context, Socket};
use std::path::PathBuf;
use std::sync::Arc;

/// Contexts receiving at once.
const CONTEXTS: usize = 16;

/// Answers one message.
pub type Handler = Arc<dyn Fn(Msg) -> Msg + Send + Sync>;

/// The server's listening IPC socket; closed and its file removed when dropped.
pub struct Hub {
    socket: Socket,
    path: PathBuf,
    /// The contexts' aios; dropping them stops the callbacks.
    aios: Vec<Aio>,
}

impl Hub {
    /// Listens on `url` (file `path`) and answers every message with `handler`.
    pub fn start(url: &str, path: PathBuf, handler: Handler) -> Result<Hub, IpcError> {
        let t = |e: nng::Error| IpcError::Transport(e.to_string());
        // A socket file left by a killed server would make listen fail.
        let _ = std::fs::remove_file(&path);
        let socket = Socket::new(nng::Protocol::Rep0).map_err(t)?;
        socket
            .listen(url)
            .map_err(|e| IpcError::Transport(format!("listen {url}: {e}")))?;
        let mut aios = Vec::with_capacity(CONTEXTS);
        for _ in 0..CONTEXTS {
            let ctx = Context::new(&socket).map_err(t)?;
            let cb_ctx = ctx.clone();
            let h = handler.clone();
            let aio = Aio::new(move |aio, res| serve(&cb_ctx, &aio, res, &h)).map_err(t)?;
            ctx.recv(&aio).map_err(t)?;
            aios.push(aio);
        }
        Ok(Hub { socket, path, aios })
    }

    /// The socket file, for changing its owner when workers drop privileges.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

fn serve(ctx: &Context, aio: &Aio, res: AioResult, handler: &Handler) {
    match res {
        AioResult::Recv(Ok(msg)) => {
            let reply = match serde_json::from_slice::<Msg>(&msg) {
                Ok(m) => handler(m),
                Err(e) => {
                    tracing::warn!("ipc hub: undecodable message: {e}");
                    Msg::Error {
                        message: format!("undecodable message: {e}"),
                    }
                }
            };
            let bytes = serde_json::to_vec(&reply).unwrap_or_default();
            if let Err((_, e)) = ctx.send(aio, &bytes[..]) {
                tracing::debug!("ipc hub reply: {e}");
                let _ = ctx.recv(aio);
            }
        }
        AioResult::Send(_) => {
            // Replied (or the requester went away): wait for the next request.
            let _ = ctx.recv(aio);
        }
        AioResult::Recv(Err(nng::Error::Closed)) => {}
        AioResult::Recv(Err(e)) => {
            tracing::debug!("ipc hub receive: {e}");
            let _ = ctx.recv(aio);
        }
        AioResult::Sleep(_) => {}
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.socket.close();
        self.aios.clear();
        let _ = std::fs::remove_file(&self.path);
    }
}
