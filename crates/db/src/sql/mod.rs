//! The SQL layer shared by the SQL drivers (SQLite, PostgreSQL, MySQL): the drivers only run what
//! it builds. The differences between databases (identifier quoting, placeholders, column types,
//! upsert syntax, a few operators and functions) are confined to [`Dialect`]. Identifiers come
//! only from a [`crate::Table`] and are always quoted; every value becomes a bound parameter
//! ([`Sql::params`]), so neither names nor values from requests can change a statement's meaning.
//!
//! Files: [`dialect`] (the dialect and the statement builder), [`ddl`] (tables, columns,
//! indexes), [`dml`] (insert, update, delete, get, select with its conditions, order and
//! paging), [`ops`] (the statements of each driver operation and the results they give), [`backend`]
//! (the whole [`crate::Driver`] of an async SQL driver, which only implements [`SqlBackend`]),
//! [`texts`] (insert statement texts kept per table and column set).

mod backend;
mod ddl;
mod dialect;
mod dml;
mod ops;
mod texts;

pub(crate) use backend::{SqlBackend, Written};
pub(crate) use ddl::{add_column, create_indexes, create_table, index_defs};
pub(crate) use dialect::{is_keyed, Dialect, Sql};
pub(crate) use dml::Conflict;
#[cfg(test)]
pub(crate) use dml::{delete, insert};
pub(crate) use dml::{range_select, ranges_select_pg};
pub(crate) use ops::{del, get, insert_cached, update, updated, written, SelectPlan};
pub(crate) use texts::InsertTexts;
