//! [`DbError`], the one error type of the DB API: it lives apart so that every other file (types,
//! drivers, the front) depends on it and it depends on nothing in the crate.

/// Why an operation failed: whose fault it is ([`DbError::is_caller_error`]) and whether a retry
/// may help ([`DbError::is_retryable`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DbError {
    /// Caller: a table, column or index name that is invalid or not described.
    #[error("bad name: {0}")]
    BadName(String),
    /// Caller: a value that does not fit its column or operator.
    #[error("bad value for {column}: {reason}")]
    BadValue { column: String, reason: String },
    /// Caller: an operator that is not one of docs/data.md.
    #[error("unknown operator: {0}")]
    BadOp(String),
    /// Caller: the row does not exist (update).
    #[error("not found")]
    NotFound,
    /// Caller: a row with this key (or unique value) exists already (add).
    #[error("already exists")]
    Exists,
    /// Caller: a select without any condition while `noscan` is on.
    #[error("select without a condition refused (noscan)")]
    NoCondition,
    /// Caller: the operation or operator is not supported by this driver.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// Transient: the database is locked or the pool is exhausted; a retry may help.
    #[error("database busy: {0}")]
    Busy(String),
    /// Driver or database failure (I/O, corruption, SQL bug); a retry will probably not help.
    #[error("database error: {0}")]
    Driver(String),
}

impl DbError {
    /// The request was wrong (4xx); otherwise the server is at fault (5xx).
    pub fn is_caller_error(&self) -> bool {
        !matches!(self, DbError::Busy(_) | DbError::Driver(_))
    }

    /// Trying the same operation again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, DbError::Busy(_))
    }

    pub fn bad_value(column: &str, reason: impl Into<String>) -> DbError {
        DbError::BadValue {
            column: column.to_string(),
            reason: reason.into(),
        }
    }
}
