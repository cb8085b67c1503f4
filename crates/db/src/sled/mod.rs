//! The sled driver (docs/data.md, issue 4): an embedded key-value store behind the same
//! [`crate::BlockingDriver`] interface as SQLite, answering every call with the same result
//! SQLite would. sled is unmaintained upstream, so nothing of it leaks out of this folder:
//! callers see only [`SledDriver`] and the driver traits.
//!
//! Layout: one sled tree per table (`t:NAME`) holding each row as a JSON object, keyed by an
//! order-preserving encoding of its primary key values, so a key prefix or range answers
//! conditions on the leading key columns and rows come out sorted by primary key; one tree per
//! described index (`i:NAME:COLS`, key = index values + primary key) and per unique column
//! (`u:NAME:COL`, key = the value), kept in the same sled transaction as the row write; and a
//! meta tree recording which index trees exist and are complete. Conditions a key or an index
//! cannot answer are evaluated in memory with SQLite's semantics (three-valued logic for NULL,
//! `LIKE` with `%`/`_`, case-sensitive unless `ilike`); `regexp` uses the `regex` crate.
//!
//! Files: [`index`] (index trees and the meta record), [`store`] (opening and transactional writes), [`scan`] (the rows of a select), [`ops`] (the
//! [`crate::BlockingDriver`] operations).

mod index;
mod ops;
mod scan;
mod store;
#[cfg(test)]
mod tests;

pub use store::SledDriver;

/// A sled error as the DB API reports it.
fn storage(e: ::sled::Error) -> crate::error::DbError {
    crate::error::DbError::Driver(format!("sled: {e}"))
}
