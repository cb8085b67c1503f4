//! [`InsertTexts`]: the text of each insert statement a driver ran, kept per table, conflict
//! handling and set of given columns, so a write builds only its parameters (a `/data/put` built
//! its whole `INSERT ... ON CONFLICT ... DO UPDATE SET` text again every time).

use super::dialect::{Dialect, Sql};
use super::dml::{self, Conflict};
use crate::schema::{Column, ColumnType, Table};
use crate::types::Param;
use parking_lot::Mutex;
use std::collections::HashMap;

/// What an insert's text depends on besides the given columns: the table's columns (the
/// upsert sets every non-key one) with their key positions and types (numbers are added).
type Shape = Vec<(String, u8, ColumnType)>;

fn shape(t: &Table) -> impl Iterator<Item = (&str, u8, ColumnType)> {
    t.columns()
        .iter()
        .map(|c| (c.name.as_str(), c.primary, c.kind))
}

/// One cached text: the table as it was described, the conflict, which columns were given (bit
/// `i` for the table's column `i`) and the statement.
struct Entry {
    shape: Shape,
    conflict: Conflict,
    given: u128,
    text: String,
}

/// Insert texts of one driver (one dialect), by table name.
pub(crate) struct InsertTexts {
    dialect: Dialect,
    by_table: Mutex<HashMap<String, Vec<Entry>>>,
}

/// The most texts kept per table (a table written with ever new column sets stops caching).
const PER_TABLE: usize = 32;

impl InsertTexts {
    pub(crate) fn new(dialect: Dialect) -> InsertTexts {
        InsertTexts {
            dialect,
            by_table: Mutex::new(HashMap::new()),
        }
    }

    /// The insert of `vals` (columns of `t` in table order, as [`crate::write::prepare_write`]
    /// gives them): the same statement [`dml::insert`] builds, its text from the cache.
    pub(crate) fn insert(&self, t: &Table, vals: Vec<(&Column, Param)>, conflict: Conflict) -> Sql {
        let Some(given) = given_mask(t, &vals) else {
            return dml::insert(self.dialect, t, vals, conflict);
        };
        let same = |e: &Entry| {
            e.conflict == conflict
                && e.given == given
                && e.shape.len() == t.columns().len()
                && e.shape
                    .iter()
                    .zip(shape(t))
                    .all(|(a, b)| a.0 == b.0 && a.1 == b.1 && a.2 == b.2)
        };
        let cached = self
            .by_table
            .lock()
            .get(t.name())
            .and_then(|v| v.iter().find(|e| same(e)).map(|e| e.text.clone()));
        if let Some(text) = cached {
            return Sql {
                dialect: self.dialect,
                text,
                params: vals.into_iter().map(|(_, p)| p).collect(),
            };
        }
        let s = dml::insert(self.dialect, t, vals, conflict);
        let mut all = self.by_table.lock();
        let entries = all.entry(t.name().to_string()).or_default();
        // A table described again (a schema upgrade) replaces its texts.
        entries.retain(|e| {
            e.shape.len() == t.columns().len()
                && e.shape
                    .iter()
                    .zip(shape(t))
                    .all(|(a, b)| a.0 == b.0 && a.1 == b.1 && a.2 == b.2)
        });
        if entries.len() < PER_TABLE {
            entries.push(Entry {
                shape: shape(t).map(|(n, p, k)| (n.to_string(), p, k)).collect(),
                conflict,
                given,
                text: s.text.clone(),
            });
        }
        s
    }
}

/// Bit `i` set for each given column, `i` its position in `t`; None for a column past the
/// 128th or not of `t` (such writes are built every time).
fn given_mask(t: &Table, vals: &[(&Column, Param)]) -> Option<u128> {
    let cols = t.columns();
    let mut mask = 0u128;
    let mut from = 0;
    for (c, _) in vals {
        // In table order: each search goes on from the last column found.
        let i = from + cols[from..].iter().position(|x| std::ptr::eq(x, *c))?;
        if i >= 128 {
            return None;
        }
        mask |= 1 << i;
        from = i + 1;
    }
    Some(mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Column;

    fn table(extra: bool) -> Table {
        let mut cols = vec![
            Column::text("id").primary(1),
            Column::text("value"),
            Column::bigint("n"),
        ];
        if extra {
            cols.push(Column::text("more"));
        }
        Table::new("t", cols).expect("a valid table")
    }

    fn vals<'t>(t: &'t Table, names: &[&str]) -> Vec<(&'t Column, Param)> {
        t.columns()
            .iter()
            .filter(|c| names.contains(&c.name.as_str()))
            .map(|c| (c, Param::Text(c.name.clone())))
            .collect()
    }

    #[test]
    fn cached_texts_are_the_built_ones() {
        for d in [Dialect::Sqlite, Dialect::Postgres, Dialect::Mysql] {
            let texts = InsertTexts::new(d);
            for extra in [false, true, false] {
                let t = table(extra);
                for names in [&["id", "value"][..], &["id", "value", "n"], &["id"]] {
                    for conflict in [Conflict::Fail, Conflict::Replace, Conflict::Incr] {
                        for _ in 0..2 {
                            let got = texts.insert(&t, vals(&t, names), conflict);
                            let want = dml::insert(d, &t, vals(&t, names), conflict);
                            assert_eq!(got.text, want.text, "{d:?} {names:?} {conflict:?}");
                            assert_eq!(got.params, want.params);
                        }
                    }
                }
            }
        }
    }
}
