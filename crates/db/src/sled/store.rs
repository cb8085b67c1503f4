//! The sled database of one directory: opening it (waiting for a previous process's lock), the
//! table states loaded from the meta tree, and the one transactional write path every write
//! goes through (row and index entries together).

use super::storage;
use crate::kv::codec::{no_table, parse_row};

use super::index::{kind_name, read_meta, Index, IndexDef, TableState};
use crate::error::DbError;
use crate::schema::Table;
use crate::types::Row;
use ::sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use ::sled::Tree;
use parking_lot::{RwLock, RwLockReadGuard};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

/// The tree recording each table's index trees: table name → JSON list of [`IndexDef`].
pub(super) const META: &str = "__bkjs_meta";

/// The sled driver over one database directory.
pub struct SledDriver {
    pub(super) db: ::sled::Db,
    pub(super) meta: Tree,
    /// Tables created by `init` (loaded from the meta tree on open). Writes hold the read lock
    /// for their transaction, `init` the write lock, so an index is never built while a write
    /// could miss it.
    pub(super) tables: RwLock<HashMap<String, Arc<TableState>>>,
    /// Flush to disk before a write returns (default on), so that an acknowledged write survives
    /// a crash of the process as with SQLite; off, sled flushes every 500 ms.
    sync: bool,
}

pub(super) type Tables<'a> = RwLockReadGuard<'a, HashMap<String, Arc<TableState>>>;

/// What a write does to the row it read.
pub(super) enum Change {
    Put(Row),
    Delete,
    Keep,
}

impl SledDriver {
    /// Opens (creating) the database directory at `path`. Writes are flushed before they
    /// return; see [`SledDriver::sync_writes`].
    pub fn open(path: impl AsRef<Path>) -> Result<SledDriver, DbError> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| DbError::Driver(format!("{}: {e}", dir.display())))?;
        }
        // sled releases its directory lock from a background thread after the last handle is
        // dropped: a quick reopen (a restarted process, a test) waits for it a little.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let db = loop {
            match ::sled::Config::new().path(path).open() {
                Ok(db) => break db,
                // sled reports the held lock as an I/O error whose kind is not always WouldBlock.
                Err(::sled::Error::Io(e))
                    if (e.kind() == std::io::ErrorKind::WouldBlock
                        || e.to_string().contains("could not acquire lock"))
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(DbError::Driver(format!("sled: {}: {e}", path.display()))),
            }
        };
        let meta = db.open_tree(META).map_err(storage)?;
        let mut tables = HashMap::new();
        for item in meta.iter() {
            let (name, defs) = item.map_err(storage)?;
            let name = String::from_utf8_lossy(&name).into_owned();
            let tree = db.open_tree(format!("t:{name}")).map_err(storage)?;
            let mut indexes = Vec::new();
            for def in read_meta(&defs).1 {
                let tree = db.open_tree(&def.name).map_err(storage)?;
                indexes.push(Index { def, tree });
            }
            tables.insert(name, Arc::new(TableState { tree, indexes }));
        }
        Ok(SledDriver {
            db,
            meta,
            tables: RwLock::new(tables),
            sync: true,
        })
    }

    /// Whether writes wait for their flush to disk (default true). Off trades the last ~500 ms of
    /// acknowledged writes on a crash for write throughput.
    pub fn sync_writes(mut self, on: bool) -> SledDriver {
        self.sync = on;
        self
    }

    pub(super) fn tables(&self) -> Tables<'_> {
        self.tables.read()
    }

    pub(super) fn state<'a>(
        tables: &'a Tables<'_>,
        t: &Table,
    ) -> Result<&'a Arc<TableState>, DbError> {
        tables.get(t.name()).ok_or_else(|| no_table(t))
    }

    /// Reads the row at `pk`, applies `f` and writes the result with its index entries, all in
    /// one sled transaction (retried on conflict, so `f` may run more than once). Returns
    /// whether the row existed and the row as written.
    pub(super) fn modify<F>(
        &self,
        table: &Table,
        pk: &[u8],
        f: F,
    ) -> Result<(bool, Option<Row>), DbError>
    where
        F: Fn(Option<Row>) -> Result<Change, DbError>,
    {
        let tables = self.tables();
        let st = Self::state(&tables, table)?;
        let mut trees: Vec<Tree> = Vec::with_capacity(st.indexes.len() + 1);
        trees.push(st.tree.clone());
        trees.extend(st.indexes.iter().map(|i| i.tree.clone()));
        let sync = self.sync;
        let abort = ConflictableTransactionError::Abort;
        let result = trees.as_slice().transaction(|tx| {
            let old = match tx[0].get(pk)? {
                Some(b) => Some(parse_row(&b).map_err(abort)?),
                None => None,
            };
            let existed = old.is_some();
            let new = match f(old.clone()).map_err(abort)? {
                Change::Put(r) => Some(r),
                Change::Delete if existed => None,
                Change::Delete | Change::Keep => return Ok((existed, old)),
            };
            for (ix, t) in st.indexes.iter().zip(&tx[1..]) {
                let old_k = old.as_ref().and_then(|r| ix.def.key(r, pk));
                let new_k = new.as_ref().and_then(|r| ix.def.key(r, pk));
                if old_k == new_k {
                    continue;
                }
                if let Some(k) = &old_k {
                    t.remove(k.as_slice())?;
                }
                if let Some(k) = &new_k {
                    if ix.def.unique && t.get(k.as_slice())?.is_some_and(|other| other != pk) {
                        return Err(abort(DbError::Exists));
                    }
                    t.insert(k.as_slice(), pk)?;
                }
            }
            match &new {
                Some(r) => {
                    let bytes = serde_json::to_vec(r)
                        .map_err(|e| abort(DbError::Driver(format!("sled: {e}"))))?;
                    tx[0].insert(pk, bytes)?;
                }
                None => {
                    tx[0].remove(pk)?;
                }
            }
            if sync {
                tx[0].flush();
            }
            Ok((existed, new))
        });
        result.map_err(|e| match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => storage(e),
        })
    }

    /// Builds the index tree of `def` from the rows of `table` (the tree must be empty).
    pub(super) fn backfill(table: &Tree, def: &IndexDef, tree: &Tree) -> Result<(), DbError> {
        let mut batch = ::sled::Batch::default();
        let mut seen = HashSet::new();
        for item in table.iter() {
            let (pk, bytes) = item.map_err(storage)?;
            let row = parse_row(&bytes)?;
            if let Some(k) = def.key(&row, &pk) {
                if def.unique && !seen.insert(k.clone()) {
                    return Err(DbError::Exists);
                }
                batch.insert(k, pk);
            }
        }
        tree.apply_batch(batch).map_err(storage)
    }

    /// Records the description of `t` with the index trees that are complete.
    pub(super) fn save_meta(&self, t: &Table, defs: &[IndexDef]) -> Result<(), DbError> {
        let v = serde_json::json!({
            "columns": t
                .columns()
                .iter()
                .map(|c| serde_json::json!([c.name, kind_name(c.kind), c.primary]))
                .collect::<Vec<_>>(),
            "indexes": defs.iter().map(IndexDef::to_json).collect::<Vec<_>>(),
        });
        self.meta
            .insert(t.name(), v.to_string().into_bytes())
            .map_err(storage)?;
        Ok(())
    }
}
