//! The rows a select matches, in its order: through a key range of the table tree, an index tree,
//! or a full scan, stopping early when the key order is the select's order.

use super::index::TableState;
use super::storage;
use crate::error::DbError;
use crate::kv::codec::parse_row;
use crate::kv::filter::{matches, sort_rows, Cond, Test};
use crate::kv::ranges::{bounds, key_ranges};
use crate::schema::{Column, Table};
use crate::types::{Op, Param, Row};

/// The rows matching `conds`, in the select's order, at most `limit` when given.
pub(super) fn matching(
    st: &TableState,
    table: &Table,
    conds: &[Cond<'_>],
    order: &[&Column],
    desc: bool,
    limit: Option<usize>,
) -> Result<Vec<Row>, DbError> {
    let pks = table.primary_keys();
    // Rows come out of the table tree in primary key order, which is the select's order when
    // the sort column is the first key column not fixed by `=`.
    let fixed = |c: &Column| {
        conds.iter().any(|x| {
            x.col.name == c.name && matches!(&x.test, Test::Cmp(Op::Eq, p) if *p != Param::Null)
        })
    };
    let key_order = match order.first() {
        Some(s) if s.primary == 0 => false,
        Some(s) => pks
            .iter()
            .take_while(|k| k.name != s.name)
            .all(|k| fixed(k)),
        None => true,
    };
    let mut ranges = match key_ranges(&pks, conds) {
        Some(ranges) => ranges,
        None => {
            if let Some(rows) = by_index(st, table, conds, order, desc)? {
                return Ok(rows);
            }
            // A full scan: one range over every key.
            vec![(Vec::new(), None)]
        }
    };
    if desc {
        ranges.reverse();
    }
    let limit = limit.filter(|_| key_order);
    let mut out = Vec::new();
    'ranges: for r in &ranges {
        let iter = st.tree.range(bounds(r));
        let iter: Box<dyn Iterator<Item = _>> = if desc {
            Box::new(iter.rev())
        } else {
            Box::new(iter)
        };
        for item in iter {
            let (_, bytes) = item.map_err(storage)?;
            let row = parse_row(&bytes)?;
            if matches(conds, &row) {
                out.push(row);
                if limit.is_some_and(|l| out.len() >= l) {
                    break 'ranges;
                }
            }
        }
    }
    if !key_order {
        sort_rows(&mut out, order, desc);
    }
    Ok(out)
}

/// The rows matching `conds` through the first index tree whose columns they constrain, sorted;
/// None when no index helps.
fn by_index(
    st: &TableState,
    table: &Table,
    conds: &[Cond<'_>],
    order: &[&Column],
    desc: bool,
) -> Result<Option<Vec<Row>>, DbError> {
    for ix in &st.indexes {
        let cols: Option<Vec<&Column>> = ix
            .def
            .cols
            .iter()
            .map(|(n, k)| table.column(n).filter(|c| c.kind == *k))
            .collect();
        let Some(ranges) = cols.and_then(|cols| key_ranges(&cols, conds)) else {
            continue;
        };
        let mut out = Vec::new();
        for r in &ranges {
            for item in ix.tree.range(bounds(r)) {
                let (_, pk) = item.map_err(storage)?;
                if let Some(bytes) = st.tree.get(&pk).map_err(storage)? {
                    let row = parse_row(&bytes)?;
                    if matches(conds, &row) {
                        out.push(row);
                    }
                }
            }
        }
        sort_rows(&mut out, order, desc);
        return Ok(Some(out));
    }
    Ok(None)
}
