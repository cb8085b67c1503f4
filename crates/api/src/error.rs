//! The error every handler, hook and check returns: an HTTP status and a message, answered as
//! `{status, message}`. Kept apart from routing and replies so every module can return it.

use bkjs_db::DbError;
use hyper::StatusCode;

/// An error reply `{status, message}`: whose fault it is follows from the status (4xx the
/// caller's, 5xx ours; 503 means a retry may help).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// 400: the caller sent something wrong.
    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 403: the caller may not do this.
    pub fn denied(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// 500, logged: a fault of ours.
    pub fn internal(message: impl Into<String>) -> ApiError {
        let message = message.into();
        tracing::error!("{message}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

/// The status a DB error answers with.
pub(crate) fn status_of(e: &DbError) -> StatusCode {
    match e {
        DbError::NotFound => StatusCode::NOT_FOUND,
        DbError::Exists => StatusCode::CONFLICT,
        DbError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
        DbError::Driver(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> ApiError {
        let status = status_of(&e);
        if status.is_server_error() {
            tracing::error!("db: {e}");
        }
        ApiError::new(status, e.to_string())
    }
}
