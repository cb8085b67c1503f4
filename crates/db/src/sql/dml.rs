//! Row statements: insert (with the upsert of `put` and `incr`), update, delete, the key lookup
//! and the paged select with its conditions and order.

use super::dialect::{Dialect, Sql};
use crate::error::DbError;
use crate::options::Options;
use crate::query::{conditions, order_columns, prefix_ranges, Condition};
use crate::schema::{Column, Table};
use crate::types::{Op, Param, Row};
use crate::write::encode;

/// What an insert does when the key exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Conflict {
    /// Fail (add).
    Fail,
    /// Replace every non-key column (put).
    Replace,
    /// Add the given numeric columns, set the other given columns (incr).
    Incr,
}

/// An insert of `vals` (which include the key).
pub(crate) fn insert(
    d: Dialect,
    t: &Table,
    vals: Vec<(&Column, Param)>,
    conflict: Conflict,
) -> Sql {
    let mut s = Sql::new(d);
    s.push("INSERT INTO ");
    s.ident(t.name());
    s.push(" (");
    s.idents(vals.iter().map(|(c, _)| c.name.as_str()));
    s.push(") VALUES (");
    let given: Vec<&Column> = vals.iter().map(|(c, _)| *c).collect();
    for (i, (_, p)) in vals.into_iter().enumerate() {
        if i > 0 {
            s.push(", ");
        }
        s.bind(p);
    }
    s.push(")");
    let sets: Vec<String> = match conflict {
        Conflict::Fail => return s,
        // Columns not inserted get their default (NULL) from `excluded`: a whole-row replace.
        Conflict::Replace => t
            .columns()
            .iter()
            .filter(|c| c.primary == 0)
            .map(|c| {
                let q = d.quote(&c.name);
                format!("{q} = {}", d.excluded(&q))
            })
            .collect(),
        Conflict::Incr => given
            .iter()
            .filter(|c| c.primary == 0)
            .map(|c| {
                let q = d.quote(&c.name);
                if c.kind.is_numeric() {
                    format!(
                        "{q} = COALESCE({}.{q}, 0) + {}",
                        d.quote(t.name()),
                        d.excluded(&q)
                    )
                } else {
                    format!("{q} = {}", d.excluded(&q))
                }
            })
            .collect(),
    };
    let keys: Vec<&Column> = t.primary_keys();
    match d {
        Dialect::Mysql => s.push(" ON DUPLICATE KEY UPDATE "),
        _ => {
            s.push(" ON CONFLICT (");
            s.idents(keys.iter().map(|c| c.name.as_str()));
            s.push(if sets.is_empty() {
                ") DO NOTHING"
            } else {
                ") DO UPDATE SET "
            });
        }
    }
    if sets.is_empty() && d == Dialect::Mysql {
        // MySQL has no DO NOTHING: a no-op assignment of the first key.
        let q = d.quote(&keys[0].name);
        s.push(&format!("{q} = {q}"));
    }
    s.push(&sets.join(", "));
    s
}

fn push_key(s: &mut Sql, keys: Vec<(&Column, Param)>) {
    s.push(" WHERE ");
    for (i, (c, p)) in keys.into_iter().enumerate() {
        if i > 0 {
            s.push(" AND ");
        }
        s.ident(&c.name);
        s.push(" = ");
        s.bind(p);
    }
}

/// `UPDATE ... SET` the given non-key columns `WHERE` key; with nothing to set, a no-op
/// assignment so the affected count still tells whether the row exists.
pub(super) fn update(
    d: Dialect,
    t: &Table,
    sets: Vec<(&Column, Param)>,
    keys: Vec<(&Column, Param)>,
) -> Sql {
    let mut s = Sql::new(d);
    s.push("UPDATE ");
    s.ident(t.name());
    s.push(" SET ");
    let sets: Vec<_> = sets.into_iter().filter(|(c, _)| c.primary == 0).collect();
    if sets.is_empty() {
        let q = d.quote(&keys[0].0.name);
        s.push(&format!("{q} = {q}"));
    }
    for (i, (c, p)) in sets.into_iter().enumerate() {
        if i > 0 {
            s.push(", ");
        }
        s.ident(&c.name);
        s.push(" = ");
        s.bind(p);
    }
    push_key(&mut s, keys);
    s
}

/// `DELETE ... WHERE` key.
pub(crate) fn delete(d: Dialect, t: &Table, keys: Vec<(&Column, Param)>) -> Sql {
    let mut s = Sql::new(d);
    s.push("DELETE FROM ");
    s.ident(t.name());
    push_key(&mut s, keys);
    s
}

/// `SELECT cols FROM table` (no condition yet).
fn select_from(s: &mut Sql, t: &Table, cols: &[&Column]) {
    s.push("SELECT ");
    s.idents(cols.iter().map(|c| c.name.as_str()));
    s.push(" FROM ");
    s.ident(t.name());
}

/// `SELECT cols FROM table WHERE col >= ? [AND col < ?]`: the rows of one key range of `col`,
/// its bounds bound by the caller (`bounded`: with an end). A prefix read runs it once per range
/// ([`crate::Driver::select_prefixes`]): no order and no OR of ranges for the database to sort
/// and deduplicate.
pub(crate) fn range_select(
    d: Dialect,
    t: &Table,
    cols: &[&Column],
    col: &Column,
    bounded: bool,
) -> String {
    let mut s = Sql::new(d);
    select_from(&mut s, t, cols);
    s.push(" WHERE ");
    s.ident(&col.name);
    s.push(" >= ");
    s.dialect.placeholder_into(&mut s.text, 1);
    if bounded {
        s.push(" AND ");
        s.ident(&col.name);
        s.push(" < ");
        s.dialect.placeholder_into(&mut s.text, 2);
    }
    s.text
}

/// PostgreSQL: the rows of every range `[lo, hi)` of `col` in one statement, the bounds bound as
/// two text arrays (`$1`, `$2`). The subquery is kept apart (`OFFSET 0`: not flattened into a
/// join) so each range is read by its own index scan, as SQLite reads them one by one.
pub(crate) fn ranges_select_pg(t: &Table, cols: &[&Column], col: &Column) -> String {
    let mut s = Sql::new(Dialect::Postgres);
    s.push("SELECT bk_rows_.* FROM unnest($1::text[], $2::text[]) AS bk_range_(lo, hi) ");
    s.push("CROSS JOIN LATERAL (");
    select_from(&mut s, t, cols);
    s.push(" WHERE ");
    s.ident(&col.name);
    s.push(" >= bk_range_.lo AND ");
    s.ident(&col.name);
    s.push(" < bk_range_.hi OFFSET 0) AS bk_rows_");
    s.text
}

/// The row with this key.
pub(super) fn get(d: Dialect, t: &Table, cols: &[&Column], keys: Vec<(&Column, Param)>) -> Sql {
    let mut s = Sql::new(d);
    select_from(&mut s, t, cols);
    push_key(&mut s, keys);
    s
}

/// Appends one condition.
fn push_condition(s: &mut Sql, c: &Condition<'_, '_>) -> Result<(), DbError> {
    let d = s.dialect;
    let (col, op, v) = (c.col, c.op, c.value);
    let q = d.quote(&col.name);
    match op {
        Op::Null => s.push(&format!("{q} IS NULL")),
        Op::NotNull => s.push(&format!("{q} IS NOT NULL")),
        Op::Eq | Op::Ne | Op::Gt | Op::Ge | Op::Lt | Op::Le => {
            let sym = match op {
                Op::Eq => "=",
                Op::Ne => "<>",
                Op::Gt => ">",
                Op::Ge => ">=",
                Op::Lt => "<",
                _ => "<=",
            };
            s.push(&format!("{q} {sym} "));
            s.bind(encode(col, v)?);
        }
        Op::In | Op::NotIn => {
            let items = c.list();
            if items.is_empty() {
                s.push(if op == Op::In { "1 = 0" } else { "1 = 1" });
                return Ok(());
            }
            s.push(&format!(
                "{q} {} (",
                if op == Op::In { "IN" } else { "NOT IN" }
            ));
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    s.push(", ");
                }
                s.bind(encode(col, x)?);
            }
            s.push(")");
        }
        Op::Between | Op::NotBetween => {
            let (lo, hi) = c.pair()?;
            s.push(&format!(
                "{q} {} ",
                if op == Op::Between {
                    "BETWEEN"
                } else {
                    "NOT BETWEEN"
                }
            ));
            s.bind(encode(col, &lo)?);
            s.push(" AND ");
            s.bind(encode(col, &hi)?);
        }
        Op::BeginsWith => {
            c.need_text()?;
            // Ranges, not LIKE: exact, case-sensitive and able to use an index.
            let ranges = prefix_ranges(c.prefixes());
            if ranges.is_empty() {
                s.push("1 = 0");
                return Ok(());
            }
            // Several ranges are padded to a multiple of 8 by repeating the last one, so a
            // statement cache sees a few texts per column, not one per number of ranges (a
            // repeated range costs one more index probe, so not to a power of two).
            let n = if ranges.len() == 1 {
                1
            } else {
                ranges.len().next_multiple_of(8)
            };
            for i in 0..n {
                let (start, end) = &ranges[i.min(ranges.len() - 1)];
                if i > 0 {
                    s.push(" OR ");
                }
                if n > 1 {
                    s.push("(");
                }
                s.push(&q);
                s.push(" >= ");
                s.bind(Param::Text(start.clone()));
                if let Some(end) = end {
                    s.push(" AND ");
                    s.push(&q);
                    s.push(" < ");
                    s.bind(Param::Text(end.clone()));
                }
                if n > 1 {
                    s.push(")");
                }
            }
        }
        Op::Like | Op::Ilike => {
            c.need_text()?;
            match (op, d) {
                (Op::Ilike, Dialect::Postgres) => s.push(&format!("{q} ILIKE ")),
                (Op::Ilike, _) => s.push(&format!("LOWER({q}) LIKE LOWER(")),
                _ => s.push(&format!("{q} LIKE ")),
            }
            s.bind(Param::Text(c.text()));
            if op == Op::Ilike && d != Dialect::Postgres {
                s.push(")");
            }
        }
        Op::Contains | Op::NotContains => {
            c.need_text()?;
            s.params.push(Param::Text(c.text()));
            let ph = d.placeholder(s.params.len());
            let expr = d.contains(&q, &ph);
            s.push(&if op == Op::Contains {
                expr
            } else {
                format!("NOT ({expr})")
            });
        }
        Op::Regexp => {
            c.need_text()?;
            match d {
                Dialect::Sqlite => {
                    // The pattern is compiled by the regex crate: refuse a bad one here, clearly.
                    c.regex()?;
                    s.push(&format!("{q} REGEXP "))
                }
                Dialect::Postgres => s.push(&format!("{q} ~ ")),
                Dialect::Mysql => s.push(&format!("{q} REGEXP ")),
            }
            s.bind(Param::Text(c.text()));
        }
    }
    Ok(())
}

/// Whether a select has a `begins_with` of several prefixes: SQLite then sorts the matching
/// rows rather than walking the whole key index in order (which it would pick to avoid the
/// sort). Prefixes that merge into one range are sorted too: the same rows, in the same order.
fn several_ranges(t: &Table, query: &Row, opts: &Options) -> Result<bool, DbError> {
    Ok(conditions(t, query, opts)?
        .iter()
        .any(|c| c.op == Op::BeginsWith && c.value.as_array().is_some_and(|a| a.len() > 1)))
}

/// Appends ` WHERE ...` for the conditions of a select ([`conditions`]); returns how many there
/// are.
fn push_where(s: &mut Sql, t: &Table, query: &Row, opts: &Options) -> Result<usize, DbError> {
    let conds = conditions(t, query, opts)?;
    for (n, c) in conds.iter().enumerate() {
        s.push(if n == 0 { " WHERE " } else { " AND " });
        s.push("(");
        push_condition(s, c)?;
        s.push(")");
    }
    Ok(conds.len())
}

/// A paged select: the statement fetches up to `count + 1` rows from `offset` so the caller can
/// tell whether another page exists; also the matching `COUNT(*)` statement when `opts.total`
/// asks for it. Refuses a select without conditions when `opts.noscan` is on, and an unknown
/// sort column.
pub(super) fn select(
    d: Dialect,
    t: &Table,
    cols: &[&Column],
    query: &Row,
    opts: &Options,
    offset: u64,
) -> Result<(Sql, Option<Sql>), DbError> {
    let mut s = Sql::new(d);
    select_from(&mut s, t, cols);
    let n = push_where(&mut s, t, query, opts)?;
    let cs = if opts.total {
        let mut cs = Sql::new(d);
        cs.push("SELECT COUNT(*) FROM ");
        cs.ident(t.name());
        push_where(&mut cs, t, query, opts)?;
        Some(cs)
    } else {
        None
    };
    if n == 0 && opts.noscan {
        return Err(DbError::NoCondition);
    }
    let dir = if opts.desc { " DESC" } else { "" };
    // `+col` is the same value and order, but no index provides it (SQLite only).
    let unary = d == Dialect::Sqlite && several_ranges(t, query, opts)?;
    s.push(" ORDER BY ");
    for (i, c) in order_columns(t, opts)?.iter().enumerate() {
        if i > 0 {
            s.push(", ");
        }
        if unary {
            s.push("+");
        }
        s.ident(&c.name);
        s.push(dir);
    }
    s.push(&format!(" LIMIT {} OFFSET {offset}", opts.page_size() + 1));
    Ok((s, cs))
}
