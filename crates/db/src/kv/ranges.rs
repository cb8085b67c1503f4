//! The key ranges that hold every row a select can match: `=` and `in` on leading key columns
//! fix prefixes, a range condition bounds the next column; used on the table tree (primary key)
//! and on index trees.

use super::codec::{enc, enc_params, enc_text_body, successor, TAG_TEXT};
use super::filter::{Cond, Test};
use crate::schema::Column;
use crate::types::{Op, Param};
use std::ops::Bound;

/// The most key ranges one select probes (`in` lists multiply them); beyond it, a wider range.
pub(crate) const MAX_RANGES: usize = 1024;

pub(crate) type Range = (Vec<u8>, Option<Vec<u8>>);

/// The bounds one condition puts on a key column after a fixed prefix: the start suffix (None:
/// the prefix itself) and the end suffix with whether the end lies past every key starting with
/// it (None: past every key starting with the prefix).
pub(crate) type Bounds = (Option<Vec<u8>>, Option<(Vec<u8>, bool)>);

/// The key ranges of a composite key over `cols` that hold every row the conditions can match:
/// `=` and `in` on leading columns fix prefixes, then one range condition may bound the next
/// column. None when the first column is not constrained.
pub(crate) fn key_ranges(cols: &[&Column], conds: &[Cond<'_>]) -> Option<Vec<Range>> {
    let mut prefixes: Vec<Vec<u8>> = vec![Vec::new()];
    let mut used = false;
    for col in cols {
        let Some(cond) = conds.iter().find(|c| c.col.name == col.name) else {
            break;
        };
        match &cond.test {
            Test::Cmp(Op::Eq, p) if *p != Param::Null => {
                for pre in &mut prefixes {
                    enc(pre, p);
                }
                used = true;
                continue;
            }
            Test::In(items)
                if !items.contains(&Param::Null) && prefixes.len() * items.len() <= MAX_RANGES =>
            {
                let mut encoded: Vec<Vec<u8>> = items.iter().map(|p| enc_params([p])).collect();
                encoded.sort();
                encoded.dedup();
                prefixes = prefixes
                    .iter()
                    .flat_map(|pre| {
                        encoded.iter().map(move |e| {
                            let mut k = pre.clone();
                            k.extend_from_slice(e);
                            k
                        })
                    })
                    .collect();
                used = true;
                continue;
            }
            _ => {}
        }
        // Ranges on this column: (start suffix, end) where end is exclusive after the suffix
        // (`true`: past every key starting with it); several for a `begins_with` of several
        // prefixes, in key order and disjoint.
        let bounds: Option<Vec<Bounds>> = match &cond.test {
            Test::Cmp(Op::Gt | Op::Ge, p) if *p != Param::Null => {
                Some(vec![(Some(enc_params([p])), None)])
            }
            Test::Cmp(Op::Lt, p) if *p != Param::Null => {
                Some(vec![(None, Some((enc_params([p]), false)))])
            }
            Test::Cmp(Op::Le, p) if *p != Param::Null => {
                Some(vec![(None, Some((enc_params([p]), true)))])
            }
            Test::Between(lo, hi) if *lo != Param::Null && *hi != Param::Null => Some(vec![(
                Some(enc_params([lo])),
                Some((enc_params([hi]), true)),
            )]),
            Test::Prefix(ps) if prefixes.len() * ps.len() <= MAX_RANGES => Some(
                ps.iter()
                    .map(|s| {
                        let mut b = vec![TAG_TEXT];
                        enc_text_body(&mut b, s);
                        (Some(b.clone()), Some((b, true)))
                    })
                    .collect(),
            ),
            _ => None,
        };
        if let Some(bounds) = bounds {
            let ranges = prefixes
                .iter()
                .flat_map(|pre| bounds.iter().map(move |b| (pre, b)))
                .filter_map(|(pre, (start, end))| {
                    let mut lo = pre.clone();
                    if let Some(s) = start {
                        lo.extend_from_slice(s);
                    }
                    let hi = match end {
                        None => successor(pre),
                        Some((e, past)) => {
                            let mut h = pre.clone();
                            h.extend_from_slice(e);
                            if *past {
                                successor(&h)
                            } else {
                                Some(h)
                            }
                        }
                    };
                    match &hi {
                        Some(h) if *h <= lo => None,
                        _ => Some((lo, hi)),
                    }
                })
                .collect();
            return Some(ranges);
        }
        break;
    }
    used.then(|| {
        prefixes
            .into_iter()
            .map(|p| {
                let hi = successor(&p);
                (p, hi)
            })
            .collect()
    })
}

pub(crate) fn bounds(r: &Range) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    (
        Bound::Included(r.0.clone()),
        r.1.clone().map_or(Bound::Unbounded, Bound::Excluded),
    )
}

/// Whether rows read in primary key order (`pks`) come out in the select's `order`: when the
/// sort column is the first key column not fixed by `=` (or there is no sort).
pub(crate) fn key_order(pks: &[&Column], conds: &[Cond<'_>], order: &[&Column]) -> bool {
    let fixed = |c: &Column| {
        conds.iter().any(|x| {
            x.col.name == c.name && matches!(&x.test, Test::Cmp(Op::Eq, p) if *p != Param::Null)
        })
    };
    match order.first() {
        Some(s) if s.primary == 0 => false,
        Some(s) => pks
            .iter()
            .take_while(|k| k.name != s.name)
            .all(|k| fixed(k)),
        None => true,
    }
}
