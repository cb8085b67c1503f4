//! What a select means, independent of how a driver answers it: the columns it returns, its
//! conditions (which keys count, the operator rewriting `= null` → `null`, `= [..]` → `in`, which
//! operators need text, how `in`/`between` lists are written), its order and its `begins_with`
//! range. The SQL layer turns these into SQL, the sled driver evaluates them in memory; both get
//! them from here so that every driver answers the same select the same way.

use crate::error::DbError;
use crate::options::Options;
use crate::schema::{Column, ColumnType, Table};
use crate::types::{Op, Row};
use crate::write::scalar_text;
use serde_json::Value;

/// The columns a read returns: `opts.select` restricted to known columns, or all.
pub(crate) fn select_columns<'t>(t: &'t Table, opts: &Options) -> Vec<&'t Column> {
    let cols: Vec<&Column> = t
        .columns()
        .iter()
        .filter(|c| opts.select.iter().any(|s| s == &c.name))
        .collect();
    if cols.is_empty() {
        t.columns().iter().collect()
    } else {
        cols
    }
}

/// One condition of a select: a column, its operator (already rewritten by [`effective_op`]) and
/// the value (JSON null for unary operators).
pub(crate) struct Condition<'t, 'q> {
    pub(crate) col: &'t Column,
    pub(crate) op: Op,
    pub(crate) value: &'q Value,
}

/// The conditions of a select: table columns present in `query` (unknown keys ignored) plus
/// unary `ops`, in table order; an `ops` key that is not a column is refused.
pub(crate) fn conditions<'t, 'q>(
    t: &'t Table,
    query: &'q Row,
    opts: &Options,
) -> Result<Vec<Condition<'t, 'q>>, DbError> {
    if let Some(bad) = opts.ops.keys().find(|k| t.column(k).is_none()) {
        return Err(DbError::BadName(format!("{}.{bad}", t.name())));
    }
    let mut out = Vec::new();
    for c in t.columns() {
        let op = opts.ops.get(&c.name).copied().unwrap_or(Op::Eq);
        let v = query.get(&c.name);
        if v.is_none() && !op.is_unary() {
            continue;
        }
        let value = v.unwrap_or(&Value::Null);
        out.push(Condition {
            col: c,
            op: effective_op(op, value),
            value,
        });
    }
    Ok(out)
}

/// The operator a condition really applies: `=`/`<>` with null test for NULL, with a list test
/// membership.
fn effective_op(op: Op, v: &Value) -> Op {
    match (op, v) {
        (Op::Eq, Value::Null) => Op::Null,
        (Op::Ne, Value::Null) => Op::NotNull,
        (Op::Eq, Value::Array(_)) => Op::In,
        (Op::Ne, Value::Array(_)) => Op::NotIn,
        (op, _) => op,
    }
}

impl Condition<'_, '_> {
    /// Text operators (`begins_with`, `like`, `contains`, `regexp`) refuse non-text columns.
    pub(crate) fn need_text(&self) -> Result<(), DbError> {
        if matches!(self.col.kind, ColumnType::Text | ColumnType::Json) {
            Ok(())
        } else {
            Err(DbError::bad_value(
                &self.col.name,
                format!("{:?} needs a text column", self.op),
            ))
        }
    }

    /// The value as text (text operators).
    pub(crate) fn text(&self) -> String {
        scalar_text(self.value)
    }

    /// The prefixes of a `begins_with`: one, or any of a JSON array's (a row matches when its
    /// value begins with any of them). Sorted, without duplicates and without a prefix that an
    /// earlier one already covers, so their key ranges are ordered and disjoint.
    pub(crate) fn prefixes(&self) -> Vec<String> {
        let Value::Array(items) = self.value else {
            return vec![self.text()];
        };
        disjoint_prefixes(items.iter().map(scalar_text).collect())
    }

    /// The values of an `in`/`between` condition: a JSON array or comma-separated text.
    pub(crate) fn list(&self) -> Vec<Value> {
        match self.value {
            Value::Array(a) => a.clone(),
            Value::String(s) => s.split(',').map(|x| Value::String(x.to_string())).collect(),
            other => vec![other.clone()],
        }
    }

    /// The two values of a `between`.
    pub(crate) fn pair(&self) -> Result<(Value, Value), DbError> {
        match <[Value; 2]>::try_from(self.list()) {
            Ok([lo, hi]) => Ok((lo, hi)),
            Err(_) => Err(DbError::bad_value(
                &self.col.name,
                "between needs two values",
            )),
        }
    }

    /// The compiled pattern of a `regexp` (refused clearly when it is not a valid one).
    pub(crate) fn regex(&self) -> Result<regex::Regex, DbError> {
        regex::Regex::new(&self.text())
            .map_err(|e| DbError::bad_value(&self.col.name, format!("bad regexp: {e}")))
    }
}

/// `all` sorted, without duplicates and without a prefix that an earlier one already covers, so
/// their key ranges are ordered and disjoint.
pub(crate) fn disjoint_prefixes(mut all: Vec<String>) -> Vec<String> {
    all.sort_unstable();
    let mut out: Vec<String> = Vec::with_capacity(all.len());
    for p in all {
        if !out.last().is_some_and(|last| p.starts_with(last.as_str())) {
            out.push(p);
        }
    }
    out
}

/// The key ranges `[start, end)` of sorted, disjoint prefixes ([`disjoint_prefixes`]), a range
/// that ends where the next one starts merged with it (neighbouring geohash cells often do). An
/// end of None: no end (the empty prefix, or one of only U+10FFFF).
pub(crate) fn prefix_ranges(prefixes: Vec<String>) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = Vec::with_capacity(prefixes.len());
    for p in prefixes {
        let end = prefix_end(&p);
        match out.last_mut() {
            Some((_, last_end)) if last_end.as_deref() == Some(p.as_str()) => *last_end = end,
            _ => out.push((p, end)),
        }
    }
    out
}

/// The column of a prefix read ([`crate::Driver::select_prefixes`]): a text column of `t`.
pub(crate) fn prefix_column<'t>(t: &'t Table, column: &str) -> Result<&'t Column, DbError> {
    let c = t
        .column(column)
        .ok_or_else(|| DbError::BadName(format!("{}.{column}", t.name())))?;
    if matches!(c.kind, ColumnType::Text | ColumnType::Json) {
        Ok(c)
    } else {
        Err(DbError::bad_value(
            column,
            format!("{:?} needs a text column", Op::BeginsWith),
        ))
    }
}

/// The most rows a select may skip (`start`) or return and still count as short.
const SHORT_ROWS: u64 = 1000;

/// Whether a select reads a bounded slice of the primary key: its first key column is fixed by
/// `=` or `in`, or bounded by `begins_with` non-empty prefixes, and it asks no total, sorts by key
/// columns only, and skips and returns at most a thousand rows. Such a select takes about as long
/// as a few key lookups, so a blocking driver may run it where it runs those
/// ([`crate::driver::BlockingDriver::begin_now`]).
pub(crate) fn short_select(t: &Table, query: &Row, opts: &Options) -> bool {
    let Some(first) = t.primary_keys().first().map(|c| c.name.as_str()) else {
        return false;
    };
    let sorted_by_key = opts
        .sort
        .as_deref()
        .is_none_or(|s| t.column(s).is_some_and(|c| c.primary > 0));
    if opts.total
        || !sorted_by_key
        || opts.page_size() as u64 > SHORT_ROWS
        || !opts.offset().is_ok_and(|o| o <= SHORT_ROWS)
    {
        return false;
    }
    let Ok(conds) = conditions(t, query, opts) else {
        return false;
    };
    conds.iter().any(|c| {
        c.col.name == first
            && match c.op {
                Op::Eq => !c.value.is_null(),
                Op::In => c.value.is_array() || c.value.is_string(),
                Op::BeginsWith => match c.value {
                    Value::Array(items) => {
                        !items.is_empty() && items.iter().all(|p| !scalar_text(p).is_empty())
                    }
                    other => !scalar_text(other).is_empty(),
                },
                _ => false,
            }
    })
}

/// The columns a select sorts by: the `sort` column (an unknown one is refused), then the
/// primary key, all in the same direction.
pub(crate) fn order_columns<'t>(t: &'t Table, opts: &Options) -> Result<Vec<&'t Column>, DbError> {
    let mut order: Vec<&Column> = Vec::new();
    if let Some(sort) = &opts.sort {
        order.push(
            t.column(sort)
                .ok_or_else(|| DbError::BadName(format!("{}.{sort}", t.name())))?,
        );
    }
    for k in t.primary_keys() {
        if !order.iter().any(|c| c.name == k.name) {
            order.push(k);
        }
    }
    Ok(order)
}

/// The smallest string greater than every string starting with `prefix` (code point order, which
/// is the byte order of UTF-8); None when there is none (empty prefix or all U+10FFFF).
pub(crate) fn prefix_end(prefix: &str) -> Option<String> {
    // The common case (geohashes, ids, `type:` keys): the last character is ASCII below DEL,
    // and the end is the same bytes with that one incremented.
    if let Some(&last) = prefix.as_bytes().last() {
        if last < 0x7f {
            let mut end = String::with_capacity(prefix.len());
            end.push_str(&prefix[..prefix.len() - 1]);
            end.push(char::from(last + 1));
            return Some(end);
        }
    }
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut n = last as u32 + 1;
        if (0xD800..0xE000).contains(&n) {
            n = 0xE000;
        }
        if let Some(c) = char::from_u32(n) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end("9q8yy").as_deref(), Some("9q8yz"));
        assert_eq!(prefix_end("like:").as_deref(), Some("like;"));
        assert_eq!(prefix_end("a~").as_deref(), Some("a\u{7f}"));
        assert_eq!(prefix_end("a\u{7f}").as_deref(), Some("a\u{80}"));
        assert_eq!(prefix_end("é").as_deref(), Some("ê"));
        assert_eq!(prefix_end("a\u{d7ff}").as_deref(), Some("a\u{e000}"));
        assert_eq!(prefix_end("a\u{10ffff}").as_deref(), Some("b"));
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("\u{10ffff}"), None);
    }
}
