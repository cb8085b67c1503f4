//! PostgreSQL and pool errors mapped onto [`DbError`]: SQLSTATE classes decide between the
//! caller's fault, a retryable busy state and a driver failure.

use super::types::BadParam;
use crate::error::DbError;
use deadpool_postgres::PoolError;
use std::error::Error as StdError;
use tokio_postgres::error::SqlState;

/// Whether `e` or one of its sources is of type `T`.
pub(super) fn caused_by<'e, T: StdError + 'static>(
    e: &'e (dyn StdError + 'static),
) -> Option<&'e T> {
    let mut cur = Some(e);
    while let Some(x) = cur {
        if let Some(t) = x.downcast_ref::<T>() {
            return Some(t);
        }
        cur = x.source();
    }
    None
}

pub(super) fn map_err(e: tokio_postgres::Error) -> DbError {
    if let Some(db) = e.as_db_error() {
        let mut text = db.message().to_string();
        if let Some(detail) = db.detail() {
            text.push_str(": ");
            text.push_str(detail);
        }
        let code = db.code();
        if *code == SqlState::UNIQUE_VIOLATION {
            return DbError::Exists;
        }
        let class = code.code().get(..2).unwrap_or("");
        return match class {
            // Data exceptions and integrity violations: the value was wrong.
            "22" | "23" => DbError::BadValue {
                column: db.column().unwrap_or_default().to_string(),
                reason: text,
            },
            // Serialization failure / deadlock, too many connections, connection trouble, lock
            // not available, server starting or shutting down: a retry may succeed.
            "40" | "53" | "08" | "55" | "57" => DbError::Busy(text),
            _ => DbError::Driver(text),
        };
    }
    let text = match e.source() {
        Some(s) => format!("{e}: {s}"),
        None => e.to_string(),
    };
    if let Some(b) = caused_by::<BadParam>(&e) {
        return DbError::BadValue {
            column: String::new(),
            reason: b.to_string(),
        };
    }
    if e.is_closed()
        || caused_by::<std::io::Error>(&e).is_some()
        || text.contains("timeout")
        || text.contains("connect")
    {
        return DbError::Busy(text);
    }
    DbError::Driver(text)
}

pub(super) fn map_pool_err(e: PoolError) -> DbError {
    match e {
        PoolError::Timeout(_) => DbError::Busy(format!("postgresql pool: {e}")),
        PoolError::Backend(e) => map_err(e),
        other => DbError::Driver(format!("postgresql pool: {other}")),
    }
}
