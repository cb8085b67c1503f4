//! The [`BlockingDriver`] operations of [`SledDriver`]: reads, writes as row changes applied by
//! [`SledDriver::modify`], and selects paged as SQLite pages them.

use super::index::{described_indexes, read_meta, Index, IndexDef, TableState};
use super::scan::matching;
use super::storage;
use super::store::{Change, SledDriver};
use crate::driver::BlockingDriver;
use crate::error::DbError;
use crate::kv::codec::{
    add_params, build_row, enc_params, page_of, parse_row, project, set_stored, stored_param,
    write_key,
};
use crate::kv::filter::{compile, Test};
use crate::options::Options;
use crate::query::{order_columns, select_columns};
use crate::schema::Table;
use crate::types::{Res, Row};
use crate::write::{key_params, prepare_write, WriteMode};
use serde_json::Value;
use std::sync::Arc;

impl BlockingDriver for SledDriver {
    fn name(&self) -> &'static str {
        "sled"
    }

    fn init(&self, tables: &[Table]) -> Result<(), DbError> {
        let mut map = self.tables.write();
        for t in tables {
            let tree = self
                .db
                .open_tree(format!("t:{}", t.name()))
                .map_err(storage)?;
            let (old_columns, old) = match self.meta.get(t.name()).map_err(storage)? {
                Some(b) => read_meta(&b),
                None => (Vec::new(), Vec::new()),
            };
            if !old_columns.is_empty() {
                // Rows are schemaless JSON: a new column needs nothing for existing rows.
                for c in t
                    .columns()
                    .iter()
                    .filter(|c| !old_columns.contains(&c.name))
                {
                    tracing::info!(table = t.name(), column = c.name, "db: adding column");
                }
            }
            let wanted = described_indexes(t);
            // Index trees no longer described (or whose column types changed) go first, so the
            // meta tree never lists a tree that is not complete.
            let mut done: Vec<IndexDef> =
                old.iter().filter(|d| wanted.contains(d)).cloned().collect();
            self.save_meta(t, &done)?;
            for d in old.iter().filter(|d| !wanted.contains(d)) {
                if !wanted.iter().any(|w| w.name == d.name) {
                    self.db.drop_tree(&d.name).map_err(storage)?;
                }
            }
            let mut indexes = Vec::new();
            for def in &done {
                let itree = self.db.open_tree(&def.name).map_err(storage)?;
                indexes.push(Index {
                    def: def.clone(),
                    tree: itree,
                });
            }
            let mut failed = None;
            let missing: Vec<IndexDef> = wanted.into_iter().filter(|d| !done.contains(d)).collect();
            for def in missing {
                tracing::info!(table = t.name(), index = def.name, "db: building index");
                let itree = self.db.open_tree(&def.name).map_err(storage)?;
                itree.clear().map_err(storage)?;
                if let Err(e) = Self::backfill(&tree, &def, &itree) {
                    itree.clear().map_err(storage)?;
                    failed = Some(e);
                    break;
                }
                done.push(def.clone());
                self.save_meta(t, &done)?;
                indexes.push(Index { def, tree: itree });
            }
            // Writes maintain exactly the complete index trees, even when one could not be built.
            map.insert(t.name().to_string(), Arc::new(TableState { tree, indexes }));
            if let Some(e) = failed {
                return Err(e);
            }
        }
        self.db.flush().map_err(storage)?;
        Ok(())
    }

    fn get(&self, table: &Table, key: &Row, opts: &Options) -> Result<Option<Row>, DbError> {
        let cols = select_columns(table, opts);
        let keys = key_params(table, key)?;
        let pk = enc_params(keys.iter().map(|(_, p)| p));
        let tables = self.tables();
        let st = Self::state(&tables, table)?;
        match st.tree.get(pk).map_err(storage)? {
            Some(bytes) => Ok(Some(project(&parse_row(&bytes)?, &cols))),
            None => Ok(None),
        }
    }

    fn put(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        let vals = prepare_write(table, row, opts, WriteMode::Insert)?;
        let pk = write_key(table, &vals)?;
        let new = build_row(&vals);
        self.modify(table, &pk, |_| Ok(Change::Put(new.clone())))?;
        Ok(Res {
            affected: 1,
            ..Res::default()
        })
    }

    fn add(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        let vals = prepare_write(table, row, opts, WriteMode::Insert)?;
        let pk = write_key(table, &vals)?;
        let new = build_row(&vals);
        self.modify(table, &pk, |old| match old {
            Some(_) => Err(DbError::Exists),
            None => Ok(Change::Put(new.clone())),
        })?;
        Ok(Res {
            affected: 1,
            ..Res::default()
        })
    }

    fn update(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        let keys = key_params(table, row)?;
        let vals = prepare_write(table, row, opts, WriteMode::Update)?;
        let pk = enc_params(keys.iter().map(|(_, p)| p));
        self.modify(table, &pk, |old| {
            let mut r = old.ok_or(DbError::NotFound)?;
            for (c, p) in vals.iter().filter(|(c, _)| c.primary == 0) {
                set_stored(&mut r, c, p);
            }
            Ok(Change::Put(r))
        })?;
        Ok(Res {
            affected: 1,
            ..Res::default()
        })
    }

    fn incr(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        let vals = prepare_write(table, row, opts, WriteMode::Incr)?;
        let pk = write_key(table, &vals)?;
        let (_, new) = self.modify(table, &pk, |old| {
            let Some(mut r) = old else {
                return Ok(Change::Put(build_row(&vals)));
            };
            for (c, p) in vals.iter().filter(|(c, _)| c.primary == 0) {
                if c.kind.is_numeric() {
                    let sum = add_params(stored_param(c.kind, r.get(&c.name)), p);
                    set_stored(&mut r, c, &sum);
                } else {
                    set_stored(&mut r, c, p);
                }
            }
            Ok(Change::Put(r))
        })?;
        let cols = select_columns(table, opts);
        Ok(Res {
            rows: new.map(|r| project(&r, &cols)).into_iter().collect(),
            affected: 1,
            ..Res::default()
        })
    }

    fn del(&self, table: &Table, key: &Row, _opts: &Options) -> Result<Res, DbError> {
        let keys = key_params(table, key)?;
        let pk = enc_params(keys.iter().map(|(_, p)| p));
        let (existed, _) = self.modify(table, &pk, |old| {
            Ok(if old.is_some() {
                Change::Delete
            } else {
                Change::Keep
            })
        })?;
        Ok(Res {
            affected: existed as u64,
            ..Res::default()
        })
    }

    fn select(&self, table: &Table, query: &Row, opts: &Options) -> Result<Res, DbError> {
        let offset = opts.offset()?;
        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
        let count = opts.page_size();
        let cols = select_columns(table, opts);
        let conds = compile(table, query, opts)?;
        if conds.is_empty() && opts.noscan {
            return Err(DbError::NoCondition);
        }
        let order = order_columns(table, opts)?;
        let tables = self.tables();
        let st = Self::state(&tables, table)?;
        let rows = if conds.iter().any(|c| matches!(c.test, Test::Const(false))) {
            Vec::new()
        } else {
            let limit = (!opts.total).then(|| offset.saturating_add(count).saturating_add(1));
            matching(st, table, &conds, &order, opts.desc, limit)?
        };
        Ok(page_of(&rows, &cols, offset, count, opts.total))
    }

    fn query(&self, _text: &str, _params: &[Value], _opts: &Options) -> Result<Res, DbError> {
        Err(DbError::Unsupported(
            "native queries on sled (a key-value store)".into(),
        ))
    }
}
