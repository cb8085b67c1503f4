//! The [`Driver`] of every async SQL database, written once: an async SQL driver (PostgreSQL,
//! MySQL) implements only [`SqlBackend`] (how to run a statement, fetch rows, run a write and a
//! read in one transaction, and its schema and native-query specifics), and gets every
//! operation from here, built with the shared statements of [`super::ops`].

use super::dialect::{Dialect, Sql};
use super::ops::{self, written, SelectPlan};
use crate::driver::{paged_prefixes, Driver};
use crate::error::DbError;
use crate::options::Options;
use crate::query::{disjoint_prefixes, prefix_column, prefix_ranges, select_columns};
use crate::schema::{Column, Table};
use crate::types::{Res, Row};
use serde_json::Value;

/// What [`SqlBackend::in_tx`] returns: the affected rows and the row read back.
pub(crate) type Written = (u64, Option<Row>);

/// What an async SQL driver specialises.
#[async_trait::async_trait]
pub(crate) trait SqlBackend: Send + Sync {
    /// The driver's name ([`Driver::name`]).
    const NAME: &'static str;
    /// The SQL flavour its statements are built in.
    const DIALECT: Dialect;
    /// Creates missing tables, columns and indexes ([`Driver::init`]).
    async fn create(&self, tables: &[Table]) -> Result<(), DbError>;
    /// Runs a statement without a result set; returns the affected rows.
    async fn execute(&self, s: &Sql) -> Result<u64, DbError>;
    /// Runs a select whose result columns are `cols`, in order.
    async fn fetch(&self, s: &Sql, cols: &[&Column]) -> Result<Vec<Row>, DbError>;
    /// Runs a `COUNT(*)` select.
    async fn count(&self, s: &Sql) -> Result<i64, DbError>;
    /// Runs `write`, then the select `read` (result columns `cols`), in one transaction; returns
    /// the affected rows and the first row read.
    async fn in_tx(&self, write: &Sql, read: &Sql, cols: &[&Column]) -> Result<Written, DbError>;
    /// A driver-native statement with bound parameters ([`Driver::query`]).
    async fn native(&self, text: &str, params: &[Value]) -> Result<Res, DbError>;
    /// The rows of every range `[start, end)` of `col` (result columns `cols`) in one statement,
    /// when the database can ([`crate::Driver::select_prefixes`]); None: the paged select.
    async fn fetch_ranges(
        &self,
        _t: &Table,
        _col: &Column,
        _cols: &[&Column],
        _ranges: &[(String, String)],
    ) -> Option<Result<Vec<Row>, DbError>> {
        None
    }
    /// The rows a `put` or `incr` reports for the affected count the database gave.
    fn upserted(affected: u64) -> u64 {
        affected
    }
}

#[async_trait::async_trait]
impl<B: SqlBackend> Driver for B {
    fn name(&self) -> &'static str {
        B::NAME
    }

    async fn init(&self, tables: &[Table]) -> Result<(), DbError> {
        self.create(tables).await
    }

    async fn get(&self, table: &Table, key: &Row, opts: &Options) -> Result<Option<Row>, DbError> {
        let (s, cols) = ops::get(B::DIALECT, table, key, opts)?;
        Ok(self.fetch(&s, &cols).await?.into_iter().next())
    }

    async fn put(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        let s = ops::put(B::DIALECT, table, row, opts)?;
        Ok(written(B::upserted(self.execute(&s).await?)))
    }

    async fn add(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        let s = ops::add(B::DIALECT, table, row, opts)?;
        Ok(written(self.execute(&s).await?))
    }

    async fn update(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        let s = ops::update(B::DIALECT, table, row, opts)?;
        ops::updated(self.execute(&s).await?)
    }

    async fn incr(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        let s = ops::incr(B::DIALECT, table, row, opts)?;
        let (read, cols) = ops::get(B::DIALECT, table, row, opts)?;
        let (affected, new) = self.in_tx(&s, &read, &cols).await?;
        Ok(Res {
            rows: new.into_iter().collect(),
            ..written(B::upserted(affected))
        })
    }

    async fn del(&self, table: &Table, key: &Row, _opts: &Options) -> Result<Res, DbError> {
        let s = ops::del(B::DIALECT, table, key)?;
        Ok(written(self.execute(&s).await?))
    }

    async fn select(&self, table: &Table, query: &Row, opts: &Options) -> Result<Res, DbError> {
        let plan = SelectPlan::new(B::DIALECT, table, query, opts)?;
        let rows = self.fetch(&plan.rows, &plan.cols).await?;
        let total = match &plan.count {
            Some(cs) => Some(self.count(cs).await?),
            None => None,
        };
        Ok(plan.result(rows, total))
    }

    async fn query(&self, text: &str, params: &[Value], _opts: &Options) -> Result<Res, DbError> {
        self.native(text, params).await
    }

    async fn select_prefixes(
        &self,
        table: &Table,
        column: &str,
        prefixes: &[String],
        opts: &Options,
    ) -> Result<Vec<Row>, DbError> {
        let col = prefix_column(table, column)?;
        if prefixes.is_empty() {
            return Ok(Vec::new());
        }
        let ranges: Option<Vec<(String, String)>> =
            prefix_ranges(disjoint_prefixes(prefixes.to_vec()))
                .into_iter()
                .map(|(start, end)| end.map(|e| (start, e)))
                .collect();
        // A range without an end (the empty prefix) is rare: the paged select reads it.
        if let Some(ranges) = ranges {
            let cols = select_columns(table, opts);
            if let Some(r) = self.fetch_ranges(table, col, &cols, &ranges).await {
                return r;
            }
        }
        paged_prefixes(self, table, column, prefixes, opts).await
    }
}
