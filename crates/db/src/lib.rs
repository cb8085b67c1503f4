//! The DB API (docs/data.md) and its drivers. This file only declares the modules and re-exports
//! what other crates use; every file depends only on files below it in this list:
//!
//! - leaf types: [`DbError`] (`error.rs`), rows, operators, results and bound parameters
//!   (`types.rs`), [`Options`] and paging tokens (`options.rs`), table descriptions ([`schema`]);
//! - `write.rs`: the write preparation every driver must apply identically (defaults, `now`,
//!   `join`, allowed values, type coercion); `query.rs`: what a select means (columns,
//!   conditions, order) for every driver;
//! - `driver.rs`: the async [`Driver`] trait every storage backend implements, and
//!   [`BlockingDriver`] for blocking ones, run on tokio's blocking pool through [`Blocking`];
//! - `sql/`: the SQL layer the SQL drivers only specialise, `kv/`: what the key-value drivers
//!   share (key encoding, in-memory conditions, key ranges); the drivers [`sqlite`], [`pgsql`],
//!   [`mysql`] (SQL), [`sled`], [`redis`] and [`dynamodb`] (key-value), which never use each other;
//! - `seal.rs`: the key and the AES-GCM sealing of columns stored encrypted at rest;
//! - [`front`]: [`Db`], the front applications use (pools, placement, cached reads), with
//!   `metered.rs` counting every pool's calls.

#![deny(unsafe_op_in_unsafe_fn, rust_2018_idioms)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod driver;
pub mod dynamodb;
mod error;
pub mod front;
pub(crate) mod kv;
mod metered;
pub mod mysql;
mod options;
pub mod pgsql;
mod query;
pub mod redis;
pub mod schema;
pub mod seal;
pub mod sled;
pub(crate) mod sql;
pub mod sqlite;
mod types;
mod write;

#[cfg(test)]
pub(crate) mod conformance;
#[cfg(test)]
mod tests;

pub use driver::{Blocking, BlockingDriver, Driver, Pending, WriteKind};
pub use error::DbError;
pub use front::Db;
pub use options::Options;
pub use schema::{builtin_tables, Column, ColumnType, Table};
pub use sqlite::SqliteDriver;
pub use types::{Op, Res, Row};
