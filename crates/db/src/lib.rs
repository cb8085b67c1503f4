//! The DB API (SPEC §8), driver-independent part: rows, operators, options, results, errors and the
//! [`Driver`] trait every storage backend implements, plus the write preparation (defaults, `now`,
//! `join`, allowed values, type coercion) that every driver must apply identically. Table
//! descriptions live in [`schema`], SQL text building shared by SQL drivers in [`sql`], the SQLite
//! driver in [`sqlite`].
//!
//! The [`Driver`] trait is async; blocking drivers implement [`BlockingDriver`] and run on tokio's
//! blocking pool through [`Blocking`]. The front that applications use is [`Db`] in [`front`].

#![deny(unsafe_op_in_unsafe_fn, rust_2018_idioms)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod driver;
mod error;
pub mod front;
mod metered;
pub mod mysql;
mod options;
pub mod pgsql;
mod query;
pub mod schema;
pub mod sled;
pub(crate) mod sql;
pub mod sqlite;
mod types;
mod write;

#[cfg(test)]
pub(crate) mod conformance;
#[cfg(test)]
mod tests;

pub use driver::{Blocking, BlockingDriver, Driver};
pub use error::DbError;
pub use front::Db;
pub use options::{decode_token, encode_token, page, Options, MAX_COUNT};
pub use schema::{builtin_tables, Column, ColumnType, Table};
pub use sqlite::SqliteDriver;
pub use types::{Op, Param, Res, Row};
pub use write::{encode, key_params, prepare_write, query_param, WriteMode};
