//! What several groups do with other accounts: check an account id given as a parameter, and
//! keep the `autoincr` counters of `bk_counter` that connections and messages increment.

use super::rows::row;
use crate::error::ApiError;
use bkjs_db::{Db, Options};
use serde_json::json;

/// An account id as a parameter: non-empty, no separators or control characters.
pub(crate) fn check_id(name: &str, id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id
            .chars()
            .any(|c| c.is_control() || matches!(c, ':' | '|' | '/' | '\\'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad(format!(
            "{name} must be 1-128 characters without : | / \\ or control characters"
        )))
    }
}

/// Adds `n` to counter `col` of account `id` when `bk_counter` has it as an `autoincr` column.
/// A failure is logged, never returned: the write the counter follows has happened.
pub(crate) async fn auto_counter(db: &Db, id: &str, col: &str, n: i64) {
    let Ok(table) = db.table("bk_counter") else {
        return;
    };
    if !table.column(col).is_some_and(|c| c.autoincr) {
        return;
    }
    let mut r = row(&[("id", id)]);
    r.insert(col.into(), json!(n));
    if let Err(e) = db.incr("bk_counter", &r, &Options::default()).await {
        tracing::warn!("counter {col} of {id} by {n}: {e}");
    }
}
