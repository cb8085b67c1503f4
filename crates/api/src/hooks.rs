//! Hooks one endpoint group runs for events of another, registered with the routes so the group
//! that runs them does not know which groups exist. Today there is one such event: deleting an
//! account, whose rows live in the tables of many groups (`/account/del`, `bksh -account-del`).

use bkjs_db::{Db, DbError};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;

/// The account being deleted, as an account-deletion hook sees it.
pub struct AccountDeletion<'a> {
    pub db: &'a Db,
    /// Where icons and message images are stored.
    pub images: &'a Path,
    /// Where `/file` files are stored, under each owner's id.
    pub files: &'a Path,
    /// The account's id.
    pub id: &'a str,
    /// Tables to leave alone.
    pub keep: &'a [String],
}

impl AccountDeletion<'_> {
    /// Whether `table` is to be left alone.
    pub fn kept(&self, table: &str) -> bool {
        self.keep.iter().any(|k| k == table)
    }
}

/// What an account-deletion hook returns.
pub type HookFuture<'a> = Pin<Box<dyn Future<Output = Result<(), DbError>> + Send + 'a>>;

/// Removes the rows of a deleted account that need more than a delete by id (rows keyed by
/// something else, the other side's rows, files). Run before the account's rows keyed by id go.
pub type AccountDeleteHook = for<'a> fn(&'a AccountDeletion<'a>) -> HookFuture<'a>;
