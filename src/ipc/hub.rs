//! The server side of worker IPC: a REP socket whose messages become supervisor events.

use super::{IpcError, Msg};
use crate::process::Event;
use std::path::PathBuf;
use std::sync::mpsc::Sender;

/// The server's listening IPC socket; closed and its file removed when dropped.
pub struct Hub {
    socket: nng::Socket,
    path: PathBuf,
}

impl Hub {
    /// Listens on `url` (file `path`) and forwards every decoded message to `tx`.
    pub fn start(url: &str, path: PathBuf, tx: Sender<Event>) -> Result<Hub, IpcError> {
        // A socket file left by a killed server would make listen fail.
        let _ = std::fs::remove_file(&path);
        let socket = nng::Socket::new(nng::Protocol::Rep0)
            .map_err(|e| IpcError::Transport(e.to_string()))?;
        socket
            .listen(url)
            .map_err(|e| IpcError::Transport(format!("listen {url}: {e}")))?;
        let s = socket.clone();
        std::thread::Builder::new()
            .name("ipc-hub".into())
            .spawn(move || serve(s, tx))
            .map_err(|e| IpcError::Transport(e.to_string()))?;
        Ok(Hub { socket, path })
    }

    /// The socket file, for changing its owner when workers drop privileges.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

fn serve(socket: nng::Socket, tx: Sender<Event>) {
    loop {
        let msg = match socket.recv() {
            Ok(m) => m,
            Err(nng::Error::Closed) => return,
            Err(e) => {
                tracing::warn!("ipc hub receive: {e}");
                continue;
            }
        };
        let reply = match serde_json::from_slice::<Msg>(&msg) {
            Ok(m) => {
                if tx.send(Event::Ipc(m)).is_err() {
                    return;
                }
                Msg::Ok
            }
            Err(e) => {
                tracing::warn!("ipc hub: undecodable message: {e}");
                Msg::Error {
                    message: format!("undecodable message: {e}"),
                }
            }
        };
        let bytes = serde_json::to_vec(&reply).unwrap_or_default();
        if let Err((_, e)) = socket.send(&bytes[..]) {
            tracing::debug!("ipc hub reply: {e}");
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.socket.close();
        let _ = std::fs::remove_file(&self.path);
    }
}
