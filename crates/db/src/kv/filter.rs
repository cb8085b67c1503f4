//! Select conditions evaluated in memory on stored rows with SQLite's semantics (three-valued
//! logic for NULL, `LIKE` with `%`/`_`, numbers before text), for what keys and indexes cannot
//! answer.

use super::codec::stored_param;
use crate::error::DbError;
use crate::options::Options;
use crate::query::{conditions, Condition};
use crate::schema::{Column, Table};
use crate::types::{Op, Param, Row};
use crate::write::encode;
use std::cmp::Ordering;

/// One compiled condition of a select, evaluated on the stored value as SQLite would.
pub(crate) enum Test {
    Null,
    NotNull,
    /// `=`, `<>`, `>`, `>=`, `<`, `<=`.
    Cmp(Op, Param),
    In(Vec<Param>),
    NotIn(Vec<Param>),
    Between(Param, Param),
    NotBetween(Param, Param),
    /// Begins with any of these (sorted, disjoint: [`Condition::prefixes`]).
    Prefix(Vec<String>),
    /// Pattern, case-insensitive (`ilike`).
    Like(String, bool),
    Contains(String),
    NotContains(String),
    Regexp(regex::Regex),
    Const(bool),
}

pub(crate) struct Cond<'t> {
    pub(crate) col: &'t Column,
    pub(crate) test: Test,
}

/// SQLite's comparison of two values; None when either is NULL. Numbers sort before text.
pub(crate) fn compare(a: &Param, b: &Param) -> Option<Ordering> {
    let rank = |p: &Param| match p {
        Param::Null => 0,
        Param::Int(_) | Param::Real(_) => 1,
        Param::Text(_) => 2,
    };
    Some(match (a, b) {
        (Param::Null, _) | (_, Param::Null) => return None,
        (Param::Int(x), Param::Int(y)) => x.cmp(y),
        (Param::Text(x), Param::Text(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Param::Int(x), Param::Real(y)) => (*x as f64).partial_cmp(y)?,
        (Param::Real(x), Param::Int(y)) => x.partial_cmp(&(*y as f64))?,
        (Param::Real(x), Param::Real(y)) => x.partial_cmp(y)?,
        _ => rank(a).cmp(&rank(b)),
    })
}

/// SQLite's `ORDER BY` order: NULL first, then numbers, then text.
pub(crate) fn sort_order(a: &Param, b: &Param) -> Ordering {
    match (a, b) {
        (Param::Null, Param::Null) => Ordering::Equal,
        (Param::Null, _) => Ordering::Less,
        (_, Param::Null) => Ordering::Greater,
        _ => compare(a, b).unwrap_or(Ordering::Equal),
    }
}

pub(crate) fn and3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

/// The text SQLite's text functions see for a value; None for NULL.
pub(crate) fn text(v: &Param) -> Option<String> {
    match v {
        Param::Null => None,
        Param::Text(s) => Some(s.clone()),
        Param::Int(i) => Some(i.to_string()),
        Param::Real(f) => Some(f.to_string()),
    }
}

/// SQL `LIKE`: `%` any run of characters, `_` one character, no escape character.
pub(crate) fn like(pattern: &[char], s: &[char]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match pattern.get(pi) {
            Some('%') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == '_' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    pattern[pi..].iter().all(|&c| c == '%')
}

impl Test {
    pub(crate) fn eval(&self, v: &Param) -> Option<bool> {
        let eq = |p: &Param| compare(v, p).map(|o| o == Ordering::Equal);
        let is_in = |items: &[Param]| {
            let mut unknown = false;
            for p in items {
                match eq(p) {
                    Some(true) => return Some(true),
                    None => unknown = true,
                    _ => {}
                }
            }
            if unknown {
                None
            } else {
                Some(false)
            }
        };
        let between = |lo: &Param, hi: &Param| {
            and3(
                compare(v, lo).map(|o| o != Ordering::Less),
                compare(v, hi).map(|o| o != Ordering::Greater),
            )
        };
        match self {
            Test::Null => Some(*v == Param::Null),
            Test::NotNull => Some(*v != Param::Null),
            Test::Cmp(op, p) => compare(v, p).map(|o| match op {
                Op::Eq => o == Ordering::Equal,
                Op::Ne => o != Ordering::Equal,
                Op::Gt => o == Ordering::Greater,
                Op::Ge => o != Ordering::Less,
                Op::Lt => o == Ordering::Less,
                _ => o != Ordering::Greater,
            }),
            Test::In(items) => is_in(items),
            Test::NotIn(items) => is_in(items).map(|b| !b),
            Test::Between(lo, hi) => between(lo, hi),
            Test::NotBetween(lo, hi) => between(lo, hi).map(|b| !b),
            Test::Prefix(ps) => match v {
                Param::Null => None,
                Param::Text(s) => Some(ps.iter().any(|p| s.starts_with(p.as_str()))),
                // Numbers sort before text: `num >= 'p'` is false.
                _ => Some(false),
            },
            Test::Like(p, ci) => {
                let s = text(v)?;
                let chars = |x: &str| -> Vec<char> {
                    if *ci {
                        x.to_ascii_lowercase().chars().collect()
                    } else {
                        x.chars().collect()
                    }
                };
                Some(like(&chars(p), &chars(&s)))
            }
            Test::Contains(n) => Some(text(v)?.contains(n.as_str())),
            Test::NotContains(n) => Some(!text(v)?.contains(n.as_str())),
            Test::Regexp(re) => Some(re.is_match(&text(v)?)),
            Test::Const(b) => Some(*b),
        }
    }
}

/// One condition compiled to its in-memory test, with the same refusals as the SQL drivers.
fn compile_one(c: &Condition<'_, '_>) -> Result<Test, DbError> {
    let (col, op, v) = (c.col, c.op, c.value);
    Ok(match op {
        Op::Null => Test::Null,
        Op::NotNull => Test::NotNull,
        Op::Eq | Op::Ne | Op::Gt | Op::Ge | Op::Lt | Op::Le => Test::Cmp(op, encode(col, v)?),
        Op::In | Op::NotIn => {
            let items = c.list();
            if items.is_empty() {
                return Ok(Test::Const(op == Op::NotIn));
            }
            let items = items
                .iter()
                .map(|x| encode(col, x))
                .collect::<Result<Vec<_>, _>>()?;
            if op == Op::In {
                Test::In(items)
            } else {
                Test::NotIn(items)
            }
        }
        Op::Between | Op::NotBetween => {
            let (lo, hi) = c.pair()?;
            let (lo, hi) = (encode(col, &lo)?, encode(col, &hi)?);
            if op == Op::Between {
                Test::Between(lo, hi)
            } else {
                Test::NotBetween(lo, hi)
            }
        }
        Op::BeginsWith => {
            c.need_text()?;
            Test::Prefix(c.prefixes())
        }
        Op::Like | Op::Ilike => {
            c.need_text()?;
            Test::Like(c.text(), op == Op::Ilike)
        }
        Op::Contains => {
            c.need_text()?;
            Test::Contains(c.text())
        }
        Op::NotContains => {
            c.need_text()?;
            Test::NotContains(c.text())
        }
        Op::Regexp => {
            c.need_text()?;
            Test::Regexp(c.regex()?)
        }
    })
}

/// The compiled conditions of a select ([`conditions`]).
pub(crate) fn compile<'t>(
    t: &'t Table,
    query: &Row,
    opts: &Options,
) -> Result<Vec<Cond<'t>>, DbError> {
    conditions(t, query, opts)?
        .iter()
        .map(|c| {
            Ok(Cond {
                col: c.col,
                test: compile_one(c)?,
            })
        })
        .collect()
}

pub(crate) fn matches(conds: &[Cond<'_>], row: &Row) -> bool {
    conds
        .iter()
        .all(|c| c.test.eval(&stored_param(c.col.kind, row.get(&c.col.name))) == Some(true))
}

/// Sorts by the `order` columns with SQLite's `ORDER BY` semantics, all descending when `desc`.
pub(crate) fn sort_rows(rows: &mut [Row], order: &[&Column], desc: bool) {
    rows.sort_by(|a, b| {
        for c in order {
            let o = sort_order(
                &stored_param(c.kind, a.get(&c.name)),
                &stored_param(c.kind, b.get(&c.name)),
            );
            if o != Ordering::Equal {
                return if desc { o.reverse() } else { o };
            }
        }
        Ordering::Equal
    });
}
