//! Why a cache operation failed, and whether a retry helps.

/// Why a cache write failed, and whether a retry helps.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The server or Redis did not answer in time or the connection failed; a retry may help.
    #[error("cache unavailable: {0}")]
    Unavailable(String),
    /// The configuration does not allow the cache to start (e.g. peers but no cluster secret).
    #[error("{0}")]
    Config(String),
    /// The backend cannot hold this key or value (memcached: a key over 250 bytes, a value over
    /// its item size): the caller's fault; retrying will not help.
    #[error("{0}")]
    Refused(String),
    /// An answer that makes no sense for the request: a bug; retrying will not help.
    #[error("unexpected cache reply: {0}")]
    Protocol(String),
}
