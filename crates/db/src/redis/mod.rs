//! The Redis driver (`-db-pool redis`, docs/data.md "Redis", issue 22): tables kept in one Redis
//! server, answering every call of the DB API as SQLite would, with the key encoding, in-memory
//! conditions and key ranges the key-value drivers share ([`crate::kv`]).
//!
//! Each row is a hash (a field per column, values in stored form as JSON text), the table's
//! primary keys a sorted set walked with ZRANGEBYLEX in key order, a unique column an index hash
//! (layout in [`keys`]). Every write is one Lua script ([`scripts`]), so its checks and changes
//! are atomic also with writers on other machines (a put on a table without unique columns,
//! which checks nothing, is one MULTI/EXEC); `incr` uses HINCRBY. Selects ([`scan`]) read
//! key ranges when the leading key column is constrained, else the whole key set; secondary
//! indexes are not kept (a select on other columns scans the table). Native queries are refused.
//! Durability is the server's (AOF/RDB settings); Redis Cluster is not supported (a write's keys
//! may live in different slots).
//!
//! Files: [`keys`] (layout, row form), [`scripts`] (the Lua writes), [`driver`] (connection,
//! get and writes), [`init`] (recorded descriptions, unique indexes built), [`scan`] (select).

mod driver;
mod init;
mod keys;
mod scan;
mod scripts;
#[cfg(test)]
mod tests;

pub use driver::RedisDriver;

/// A Redis error as the DB API reports it: a lost or refused connection or a timeout is
/// transient ([`crate::DbError::Busy`]), anything else a driver failure.
fn redis_err(e: ::redis::RedisError) -> crate::error::DbError {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        crate::error::DbError::Busy(format!("redis: {e}"))
    } else {
        crate::error::DbError::Driver(format!("redis: {e}"))
    }
}
