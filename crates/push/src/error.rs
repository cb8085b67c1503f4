//! Why push could not start (configuration, at start) and why one send failed (per device), the
//! latter saying what the caller should do: drop the token, retry later, or give up.

use std::time::Duration;

/// The push configuration cannot be used: a missing or malformed key, a bad file. Raised at
/// start so a deployment fails loudly, never at the first message.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{0}")]
    Config(String),
}

/// Why one notification to one device was not delivered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SendError {
    /// The service says the token is no longer valid (APNs 410 Unregistered, FCM UNREGISTERED,
    /// Web Push 404/410): remove it from the account; retrying will never help.
    #[error("device token is gone: {0}")]
    Gone(String),
    /// Throttled (429), a service error (5xx), a timeout or a network failure: retry later,
    /// after `after` when the service said so.
    #[error("retryable: {reason}")]
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// The service refused this message for good (bad payload, bad credentials, a malformed
    /// token): the sender's fault; retrying the same message will not help.
    #[error("rejected: {0}")]
    Rejected(String),
    /// No credentials are configured for the device's service.
    #[error("push service {0} is not configured")]
    NotConfigured(&'static str),
}

impl SendError {
    pub fn retryable(&self) -> bool {
        matches!(self, SendError::Retry { .. })
    }
}
