//! The PostgreSQL driver (docs/data.md, `-db-pgsql-pool postgresql://...`): natively asynchronous over
//! tokio-postgres with a bounded deadpool pool, so a worker's runtime never waits on a thread for
//! the database. Its operations come from the shared SQL layer ([`super::sql`], Postgres dialect:
//! quoted identifiers from the [`crate::Table`] only, `$n` placeholders); this folder runs the
//! statements, binds every `Param` with the Rust type the server expects for that placeholder
//! (PostgreSQL does not coerce a bound `int8` into an `int4` or `bool` column), converts results
//! back to JSON by type, and maps server errors onto [`crate::DbError`]. An optional schema
//! isolates a pool (one schema per test run).
//!
//! Files: [`driver`] (the pool and the operations), [`types`] (binding parameters and decoding
//! results by PostgreSQL type), [`errors`] (server errors onto [`crate::DbError`]).

mod driver;
mod errors;
#[cfg(test)]
mod tests;
mod types;

pub use driver::PgsqlDriver;
