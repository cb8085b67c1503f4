//! The DB API as applications and endpoints use it: named pools from the configuration, the
//! registry of described tables and which pool holds each, cached reads (`get_cached`, keys
//! `TABLE|pk1|pk2...`) with invalidation on every write, row hooks, and the operations built on
//! the driver primitives (`del_all`, `replace`, `batch`, `scan`).
//!
//! Only the server (and `bksh`) call [`Db::init`]; web workers open the same pools and never
//! change schemas.
//!
//! Files: [`db`] (the [`Db`] operations), [`pools`] (parameters and opening pools), `placement`
//! (which pool holds each table), `cache` (cached reads and their parsed rows), `replace`
//! (conditional writes on any driver).

mod cache;
mod db;
mod placement;
mod pools;
mod replace;
#[cfg(test)]
mod tests;

pub use db::{Db, RowHook};
pub use pools::{open_pool, PARAMS};
#[cfg(test)]
pub(crate) use replace::replace_on;
