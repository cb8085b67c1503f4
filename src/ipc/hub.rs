//! The server side of worker IPC: a REP endpoint on `ipc://var/NAME-server.sock` served by a
//! runtime of its own. Each worker connection is read in a task; every request is answered inline
//! by the handler (cache operations in place, control messages forwarded to the supervisor loop),
//! so requests from one worker are pipelined and answered in order without thread hand-offs.

use super::sp;
use super::{IpcError, Msg};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::UnixStream;

/// Answers one message.
pub type Handler = Arc<dyn Fn(Msg) -> Msg + Send + Sync>;

/// The server's listening IPC socket; closed and its file removed when dropped.
pub struct Hub {
    path: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Hub {
    /// Listens on `path` (the file of `ipc://PATH`) and answers every message with `handler`.
    pub fn start(path: PathBuf, handler: Handler) -> Result<Hub, IpcError> {
        // A socket file left by a killed server would make bind fail.
        let _ = std::fs::remove_file(&path);
        let std_listener = std::os::unix::net::UnixListener::bind(&path)
            .map_err(|e| IpcError::Transport(format!("listen ipc://{}: {e}", path.display())))?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| IpcError::Transport(e.to_string()))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| IpcError::Transport(e.to_string()))?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
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
                                    tokio::spawn(serve(s, handler.clone()));
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
            stop: Some(stop),
        })
    }

    /// The socket file, for changing its owner when workers drop privileges.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

async fn serve(mut s: UnixStream, handler: Handler) {
    if let Err(e) = sp::handshake(&mut s, sp::REP0, sp::REQ0).await {
        tracing::warn!("ipc hub: a client failed the handshake: {e}");
        return;
    }
    let (r, w) = s.into_split();
    let mut r = tokio::io::BufReader::new(r);
    let mut w = tokio::io::BufWriter::new(w);
    let mut buf = Vec::with_capacity(256);
    let mut out = Vec::with_capacity(256);
    loop {
        if sp::read_frame(&mut r, &mut buf).await.is_err() {
            return; // the worker went away
        }
        let Some((header, body)) = sp::split_backtrace(&buf) else {
            tracing::warn!("ipc hub: a request without a request id");
            return;
        };
        let reply = match serde_json::from_slice::<Msg>(body) {
            Ok(m) => handler(m),
            Err(e) => {
                tracing::warn!("ipc hub: undecodable message: {e}");
                Msg::Error {
                    message: format!("undecodable message: {e}"),
                }
            }
        };
        let body = serde_json::to_vec(&reply).unwrap_or_default();
        out.clear();
        sp::frame(&mut out, header, &body);
        if tokio::io::AsyncWriteExt::write_all(&mut w, &out)
            .await
            .is_err()
        {
            return;
        }
        // Answer at once unless another whole request is already buffered: then the replies go
        // out together (never wait on a partial frame with replies unsent).
        if !sp::has_frame(r.buffer()) && tokio::io::AsyncWriteExt::flush(&mut w).await.is_err() {
            return;
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
