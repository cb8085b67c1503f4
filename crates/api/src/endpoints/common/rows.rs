//! Rows as endpoints read and answer them: the database of a request, key rows, text columns,
//! flags, list replies, the column filters of replies and account details merged into rows.
//! Every endpoint group needs some of these, so they are kept apart from all of them.

use crate::api::Req;

use crate::error::ApiError;
use bkjs_db::{Db, DbError, Op, Options, Row, Table};
use serde_json::Value;
use std::sync::Arc;

/// Keeps only the columns other accounts may see (`pub`).
pub(crate) fn public_only(table: &Table, row: &mut Row) {
    row.retain(|k, _| table.column(k).is_some_and(|c| c.public));
}

/// Drops what no client sees (`priv`, `writeonly`) and, for non-admins, `admin` columns.
/// Names the row has that the table does not describe are kept.
pub(crate) fn for_client(table: &Table, row: &mut Row, admin: bool) {
    // By the table's hidden columns, a few map lookups, rather than a column search per name.
    for c in table.columns() {
        if c.private || c.writeonly || (c.admin && !admin) {
            row.remove(&c.name);
        }
    }
}

/// The database, or 503 in a process that has none.
pub(crate) fn db_of(req: &Req) -> Result<&Arc<Db>, ApiError> {
    req.api
        .db
        .as_ref()
        .ok_or_else(|| ApiError::new(hyper::StatusCode::SERVICE_UNAVAILABLE, "no database"))
}

/// A row of text columns: `row(&[("id", id), ("type", t)])`.
pub(crate) fn row(pairs: &[(&str, &str)]) -> Row {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect()
}

/// A text column of a row ("" when missing or not text).
pub(crate) fn text<'a>(row: &'a Row, col: &str) -> &'a str {
    row.get(col).and_then(Value::as_str).unwrap_or("")
}

/// Whether a control parameter is on (`1`, `true`, `yes`, `on`).
pub(crate) fn flag(req: &Req, name: &str) -> bool {
    matches!(req.param(name), Some("1" | "true" | "yes" | "on"))
}

/// `{count, data, next_token}`, the token only when more rows follow. Built by moving the rows
/// in: `json!` would serialize them into a copy (a third of a 50-row select's instructions).
pub(crate) fn list(rows: Vec<Row>, next_token: Option<String>) -> Value {
    let mut v = Row::new();
    v.insert("count".into(), Value::from(rows.len()));
    v.insert(
        "data".into(),
        Value::Array(rows.into_iter().map(Value::Object).collect()),
    );
    if let Some(t) = next_token {
        v.insert("next_token".into(), Value::String(t));
    }
    Value::Object(v)
}

/// Merges into every row the public bk_account columns of the account its `key` column names
/// (`_details=1`); the row's own values win.
pub(crate) async fn details(db: &Db, rows: &mut [Row], key: &str) -> Result<(), ApiError> {
    let ids: Vec<Value> = rows
        .iter()
        .map(|r| text(r, key).to_string())
        .filter(|id| !id.is_empty())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(Value::String)
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    let table = db.table("bk_account")?;
    let opts = Options {
        count: ids.len(),
        ..Options::default()
    };
    let accounts = db.list("bk_account", ids, &opts).await?;
    let by_id: std::collections::HashMap<String, Row> = accounts
        .rows
        .into_iter()
        .map(|mut a| {
            public_only(&table, &mut a);
            (text(&a, "id").to_string(), a)
        })
        .collect();
    for r in rows.iter_mut() {
        if let Some(a) = by_id.get(text(r, key)) {
            for (k, v) in a {
                if k != "id" {
                    r.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
    }
    Ok(())
}

/// Every row of `table` owned by `id` whose type begins with `prefix`.
pub(crate) async fn rows_of_type(
    db: &Db,
    table: &str,
    id: &str,
    prefix: &str,
) -> Result<Vec<Row>, DbError> {
    let opts = Options {
        count: 500,
        ..Options::default()
    }
    .op("type", Op::BeginsWith);
    let mut rows = Vec::new();
    db.scan(
        table,
        &row(&[("id", id), ("type", prefix)]),
        &opts,
        |page| {
            rows.extend(page);
            Ok(())
        },
    )
    .await?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bkjs_db::{Column, ColumnType};
    use serde_json::json;

    #[test]
    fn client_and_public_views_of_a_row() {
        let t = Table::new(
            "t",
            vec![
                Column::new("id", ColumnType::Text).primary(1).pub_(),
                Column::new("name", ColumnType::Text),
                Column::new("secret", ColumnType::Text).priv_(),
                Column::new("password", ColumnType::Text).writeonly(),
                Column::new("flags", ColumnType::Text).admin(),
            ],
        )
        .expect("a valid table");
        let full: Row = serde_json::from_value(json!({
            "id": "1", "name": "n", "secret": "s", "password": "p", "flags": "f", "extra": "x"
        }))
        .expect("a row");
        let mut own = full.clone();
        for_client(&t, &mut own, false);
        assert_eq!(
            Value::Object(own),
            json!({"id": "1", "name": "n", "extra": "x"}),
            "private, write-only and admin columns hidden; undescribed names kept"
        );
        let mut admin = full.clone();
        for_client(&t, &mut admin, true);
        assert_eq!(
            Value::Object(admin),
            json!({"id": "1", "name": "n", "flags": "f", "extra": "x"})
        );
        let mut public = full;
        public_only(&t, &mut public);
        assert_eq!(Value::Object(public), json!({"id": "1"}));
    }
}
