//! Why an IPC request failed, and whether trying again can help.

/// Why an IPC request failed, and whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    /// No reply within `-ipc-timeout`: the server is busy or restarting; a retry may succeed.
    #[error("no reply from the server within {0:?} (it may be busy or restarting)")]
    Timeout(std::time::Duration),
    /// The transport failed; the socket reconnects by itself, so a later retry may succeed.
    #[error("IPC transport error: {0}")]
    Transport(String),
    /// A message that does not decode: a bug or a version mismatch; retrying will not help.
    #[error("undecodable IPC message: {0}")]
    Decode(String),
    /// The client was shut down.
    #[error("IPC client is closed")]
    Closed,
}
