//! The select of the Redis driver: the table's key set walked over the key ranges the
//! conditions allow (ZRANGEBYLEX, in batches, rows fetched by pipelined HGETALL), conditions
//! evaluated in memory with SQLite's semantics, sorted and paged as the sled driver does.

use super::driver::{RedisDriver, BATCH};
use super::keys::{decode, pairs};
use super::redis_err;
use crate::error::DbError;
use crate::kv::codec::page_of;
use crate::kv::filter::{compile, matches, sort_rows, Cond, Test};
use crate::kv::ranges::{key_order, key_ranges};
use crate::options::Options;
use crate::query::{order_columns, select_columns};
use crate::schema::{Column, Table};
use crate::types::{Res, Row};

pub(super) async fn select(
    d: &RedisDriver,
    table: &Table,
    query: &Row,
    opts: &Options,
) -> Result<Res, DbError> {
    d.check_table(table).await?;
    let offset = usize::try_from(opts.offset()?).unwrap_or(usize::MAX);
    let count = opts.page_size();
    let cols = select_columns(table, opts);
    let conds = compile(table, query, opts)?;
    if conds.is_empty() && opts.noscan {
        return Err(DbError::NoCondition);
    }
    let order = order_columns(table, opts)?;
    let rows = if conds.iter().any(|c| matches!(c.test, Test::Const(false))) {
        Vec::new()
    } else {
        let limit = (!opts.total).then(|| offset.saturating_add(count).saturating_add(1));
        matching(d, table, &conds, &order, opts.desc, limit).await?
    };
    Ok(page_of(&rows, &cols, offset, count, opts.total))
}

/// A ZRANGEBYLEX bound: `[` inclusive, `(` exclusive, `-`/`+` unbounded.
fn lex(tag: u8, key: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(key.len() + 1);
    b.push(tag);
    b.extend_from_slice(key);
    b
}

/// The rows matching `conds`, in the select's order, at most `limit` when given.
async fn matching(
    d: &RedisDriver,
    table: &Table,
    conds: &[Cond<'_>],
    order: &[&Column],
    desc: bool,
    limit: Option<usize>,
) -> Result<Vec<Row>, DbError> {
    let pks = table.primary_keys();
    let key_order = key_order(&pks, conds, order);
    // Without a condition on the leading key column: every key.
    let mut ranges = key_ranges(&pks, conds).unwrap_or_else(|| vec![(Vec::new(), None)]);
    if desc {
        ranges.reverse();
    }
    let limit = limit.filter(|_| key_order);
    let set = d.keys.set(table);
    let mut out = Vec::new();
    'ranges: for (lo, hi) in &ranges {
        let mut min = if lo.is_empty() {
            b"-".to_vec()
        } else {
            lex(b'[', lo)
        };
        let mut max = hi.as_ref().map_or_else(|| b"+".to_vec(), |h| lex(b'(', h));
        loop {
            let batch = limit.map_or(BATCH, |l| l.saturating_sub(out.len()).clamp(16, BATCH));
            let mut cmd = redis::cmd(if desc {
                "ZREVRANGEBYLEX"
            } else {
                "ZRANGEBYLEX"
            });
            cmd.arg(&set);
            if desc {
                cmd.arg(&max).arg(&min);
            } else {
                cmd.arg(&min).arg(&max);
            }
            cmd.arg("LIMIT").arg(0).arg(batch);
            let keys: Vec<Vec<u8>> = d.run(&cmd).await?;
            if keys.is_empty() {
                break;
            }
            let mut get = redis::pipe();
            for pk in &keys {
                get.cmd("HGETALL").arg(d.keys.row(table, pk));
            }
            let replies: Vec<redis::Value> =
                get.query_async(&mut d.conn()).await.map_err(redis_err)?;
            for reply in replies {
                // A row deleted since its key was read is skipped.
                let Some(row) = decode(table, pairs(reply)?)? else {
                    continue;
                };
                if matches(conds, &row) {
                    out.push(row);
                    if limit.is_some_and(|l| out.len() >= l) {
                        break 'ranges;
                    }
                }
            }
            let last = &keys[keys.len() - 1];
            if keys.len() < batch {
                break;
            }
            if desc {
                max = lex(b'(', last);
            } else {
                min = lex(b'(', last);
            }
        }
    }
    if !key_order {
        sort_rows(&mut out, order, desc);
    }
    Ok(out)
}
