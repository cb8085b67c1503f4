//! Why a request is not authenticated: one error type for every step of the check, with the
//! HTTP status and message of its reply, so the HTTP layer maps failures without knowing where
//! they came from.

/// Why a request is not authenticated. Every variant but [`AuthError::NoServerKey`] is the
/// client's fault (4xx); [`AuthError::status`] and [`AuthError::message`] give the reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Client, 400: the value is not `VERSION|APPDATA|LOGIN|SIGNATURE|EXPIRES|CHECKSUM|`
    /// (field count, length, characters).
    #[error("Invalid signature: {0}")]
    Malformed(&'static str),
    /// Client, 400: a required field (version, login, signature, expires) is empty or the
    /// request carries no signature at all.
    #[error("Invalid signature: missing {0}")]
    MissingField(&'static str),
    /// Client, 400: VERSION is not 1, 2, 3 or 4.
    #[error("Invalid signature: unsupported version")]
    BadVersion,
    /// Client, 400: EXPIRES is not a positive integer of milliseconds that fits in an i64.
    #[error("Invalid signature: EXPIRES is not a positive integer")]
    BadExpires,
    /// Client, 400: a session (v2) signature outside the session cookie, or a request signature
    /// (v1, v3, v4) inside it.
    #[error("Invalid signature: version not allowed here")]
    WrongSource,
    /// Client, 406: EXPIRES is not in the future.
    #[error("Expired request")]
    Expired,
    /// Client, 406: EXPIRES is further ahead than `-api-max-expire` allows (bkjs).
    #[error("Expiration too far in the future")]
    TooFarAhead,
    /// Client, 401: the body does not match a non-empty CHECKSUM, so the body is not covered by the
    /// signature.
    #[error("Body checksum mismatch")]
    BadChecksum,
    /// Client, 401: HMAC mismatch, and also an unknown login (same answer, so logins cannot be
    /// probed).
    #[error("Not authenticated")]
    NotAuthenticated,
    /// Client, 412: the account's `expires` has passed.
    #[error("Account expired")]
    AccountExpired,
    /// Client, 403: `acl_deny` matches or `acl_allow` does not.
    #[error("Access denied")]
    Denied,
    /// Server, 500: session cookies are requested but no server key is configured.
    #[error("Session signing key is not configured")]
    NoServerKey,
}

impl AuthError {
    /// HTTP status of the reply.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Malformed(_)
            | AuthError::MissingField(_)
            | AuthError::BadVersion
            | AuthError::BadExpires
            | AuthError::WrongSource => 400,
            AuthError::BadChecksum | AuthError::NotAuthenticated => 401,
            AuthError::Denied => 403,
            AuthError::Expired | AuthError::TooFarAhead => 406,
            AuthError::AccountExpired => 412,
            AuthError::NoServerKey => 500,
        }
    }

    /// Message of the reply `{ "status": …, "message": … }`; never contains a secret.
    pub fn message(&self) -> String {
        self.to_string()
    }

    /// The request was wrong (4xx); otherwise the server is misconfigured (5xx).
    pub fn is_client_error(&self) -> bool {
        self.status() < 500
    }
}
