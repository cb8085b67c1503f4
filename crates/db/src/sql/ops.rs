//! The statements of each driver operation, from a row and options to SQL, and the results they
//! give: what every SQL driver would otherwise write again. A driver prepares the statement here,
//! runs it its own way (blocking or async, on a connection or in a transaction) and hands the
//! outcome back here to become a [`Res`].

use super::dialect::{Dialect, Sql};
use super::dml::{self, Conflict};
use super::texts::InsertTexts;
use crate::error::DbError;
use crate::options::{page, Options};
use crate::query::select_columns;
use crate::schema::{Column, Table};
use crate::types::{Res, Row};
use crate::write::{key_params, prepare_write, WriteMode};

/// `put`: inserts the row or replaces the whole stored one.
pub(crate) fn put(d: Dialect, t: &Table, row: &Row, opts: &Options) -> Result<Sql, DbError> {
    let vals = prepare_write(t, row, opts, WriteMode::Insert)?;
    Ok(dml::insert(d, t, vals, Conflict::Replace))
}

/// `add`: inserts the row; the database refuses an existing key.
pub(crate) fn add(d: Dialect, t: &Table, row: &Row, opts: &Options) -> Result<Sql, DbError> {
    let vals = prepare_write(t, row, opts, WriteMode::Insert)?;
    Ok(dml::insert(d, t, vals, Conflict::Fail))
}

/// `incr`: inserts the row or adds its numbers to the stored ones (the driver then reads the
/// row back, in the same transaction).
pub(crate) fn incr(d: Dialect, t: &Table, row: &Row, opts: &Options) -> Result<Sql, DbError> {
    let vals = prepare_write(t, row, opts, WriteMode::Incr)?;
    Ok(dml::insert(d, t, vals, Conflict::Incr))
}

/// [`put`], [`add`] (`replace` false) and [`incr`] with the statement text from `texts`.
pub(crate) fn insert_cached(
    texts: &InsertTexts,
    t: &Table,
    row: &Row,
    opts: &Options,
    conflict: Conflict,
) -> Result<Sql, DbError> {
    let mode = if conflict == Conflict::Incr {
        WriteMode::Incr
    } else {
        WriteMode::Insert
    };
    let vals = prepare_write(t, row, opts, mode)?;
    Ok(texts.insert(t, vals, conflict))
}

/// `update`: sets the given columns of the row with this key.
pub(crate) fn update(d: Dialect, t: &Table, row: &Row, opts: &Options) -> Result<Sql, DbError> {
    let keys = key_params(t, row)?;
    let vals = prepare_write(t, row, opts, WriteMode::Update)?;
    Ok(dml::update(d, t, vals, keys))
}

/// `del`: deletes the row with this key.
pub(crate) fn del(d: Dialect, t: &Table, key: &Row) -> Result<Sql, DbError> {
    Ok(dml::delete(d, t, key_params(t, key)?))
}

/// `get`: the row with this key, and the columns the statement returns, in order.
pub(crate) fn get<'t>(
    d: Dialect,
    t: &'t Table,
    key: &Row,
    opts: &Options,
) -> Result<(Sql, Vec<&'t Column>), DbError> {
    let cols = select_columns(t, opts);
    let s = dml::get(d, t, &cols, key_params(t, key)?);
    Ok((s, cols))
}

/// The result of a write that changed `affected` rows.
pub(crate) fn written(affected: u64) -> Res {
    Res {
        affected,
        ..Res::default()
    }
}

/// The result of an update: [`DbError::NotFound`] when no row has the key.
pub(crate) fn updated(affected: u64) -> Result<Res, DbError> {
    if affected == 0 {
        return Err(DbError::NotFound);
    }
    Ok(written(affected))
}

/// A paged select: the statement of the page ([`SelectPlan::rows`], up to one row more than
/// the page, to tell whether another follows), the `COUNT(*)` statement when `opts.total` asks
/// for it, and the columns the rows come back with.
pub(crate) struct SelectPlan<'t> {
    pub(crate) rows: Sql,
    /// The count of all matching rows, when `opts.total` asked for it.
    pub(crate) count: Option<Sql>,
    pub(crate) cols: Vec<&'t Column>,
    offset: u64,
    page_size: usize,
}

impl<'t> SelectPlan<'t> {
    /// Refuses a malformed paging token, a select without conditions when `opts.noscan` is on,
    /// unknown `ops` keys and an unknown sort column.
    pub(crate) fn new(
        d: Dialect,
        t: &'t Table,
        query: &Row,
        opts: &Options,
    ) -> Result<SelectPlan<'t>, DbError> {
        let offset = opts.offset()?;
        let cols = select_columns(t, opts);
        let (rows, count) = dml::select(d, t, &cols, query, opts, offset)?;
        Ok(SelectPlan {
            rows,
            count,
            cols,
            offset,
            page_size: opts.page_size(),
        })
    }

    /// The page of the fetched `rows` with the token of the next page, and the count the
    /// [`SelectPlan::count`] statement returned.
    pub(crate) fn result(&self, rows: Vec<Row>, total: Option<i64>) -> Res {
        let (rows, next_token) = page(rows, self.page_size, self.offset);
        Res {
            rows,
            affected: 0,
            next_token,
            total: total.map(|n| n.max(0) as u64),
        }
    }
}
