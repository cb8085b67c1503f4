//! `init` of the Redis driver: each table's description recorded in the meta hash, and the index
//! of a column that became unique built from the existing rows (refused while two rows share a
//! value), so a schema upgrade keeps the data (rows are schemaless hashes).

use super::driver::{RedisDriver, BATCH};
use super::keys::{hidden, unique_entry_of};
use super::redis_err;
use crate::error::DbError;
use crate::kv::codec::no_table;
use crate::schema::{Column, Table};
use serde_json::Value;
use std::collections::HashMap;

impl RedisDriver {
    /// Records each description and builds the index of every unique column that has none yet
    /// (rows are schemaless hashes: new columns need nothing). Meant for startup: a write from
    /// another process while an index is being built may be missed by it.
    pub(super) async fn init_tables(&self, tables: &[Table]) -> Result<(), DbError> {
        for t in tables {
            let old = self.read_meta(t).await?;
            let wanted: Vec<(String, String)> = t
                .columns()
                .iter()
                .filter(|c| c.unique)
                .map(|c| (c.name.clone(), kind_name(c)))
                .collect();
            let mut complete: Vec<(String, String)> =
                old.iter().filter(|u| wanted.contains(u)).cloned().collect();
            self.save_meta(t, &complete).await?;
            for (name, _) in old.iter().filter(|u| !wanted.contains(u)) {
                self.run::<()>(redis::cmd("DEL").arg(self.keys.unique(t, name)))
                    .await?;
            }
            self.known.write().insert(t.name().to_string());
            let missing: Vec<_> = wanted.iter().filter(|u| !complete.contains(u)).collect();
            for u in missing {
                let c = t.column(&u.0).ok_or_else(|| no_table(t))?;
                tracing::info!(
                    table = t.name(),
                    column = c.name,
                    "db: building unique index"
                );
                self.backfill(t, c).await?;
                complete.push(u.clone());
                self.save_meta(t, &complete).await?;
            }
        }
        Ok(())
    }

    /// The recorded description of `t` and its complete unique indexes (column, type).
    async fn read_meta(&self, t: &Table) -> Result<Vec<(String, String)>, DbError> {
        let meta: Option<String> = self
            .run(redis::cmd("HGET").arg(self.keys.meta()).arg(t.name()))
            .await?;
        let v: Value = meta
            .and_then(|m| serde_json::from_str(&m).ok())
            .unwrap_or(Value::Null);
        Ok(v.get("unique")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|u| {
                        Some((
                            u.get(0)?.as_str()?.to_string(),
                            u.get(1)?.as_str()?.to_string(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn save_meta(&self, t: &Table, unique: &[(String, String)]) -> Result<(), DbError> {
        let v = serde_json::json!({
            "columns": t
                .columns()
                .iter()
                .map(|c| serde_json::json!([c.name, kind_name(c), c.primary]))
                .collect::<Vec<_>>(),
            "unique": unique.iter().map(|(n, k)| serde_json::json!([n, k])).collect::<Vec<_>>(),
        });
        self.run::<()>(
            redis::cmd("HSET")
                .arg(self.keys.meta())
                .arg(t.name())
                .arg(v.to_string()),
        )
        .await
    }

    /// Builds the index of unique column `c` from the rows of `t` (the index is emptied
    /// first); [`DbError::Exists`] when two rows hold the same value.
    async fn backfill(&self, t: &Table, c: &Column) -> Result<(), DbError> {
        let ukey = self.keys.unique(t, &c.name);
        self.run::<()>(redis::cmd("DEL").arg(&ukey)).await?;
        let mut seen: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        let mut min = b"-".to_vec();
        loop {
            let pks: Vec<Vec<u8>> = self
                .run(
                    redis::cmd("ZRANGEBYLEX")
                        .arg(self.keys.set(t))
                        .arg(&min)
                        .arg("+")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(BATCH),
                )
                .await?;
            if pks.is_empty() {
                return Ok(());
            }
            let mut get = redis::pipe();
            for pk in &pks {
                get.cmd("HGET").arg(self.keys.row(t, pk)).arg(&c.name);
            }
            let vals: Vec<Option<Vec<u8>>> =
                get.query_async(&mut self.conn()).await.map_err(redis_err)?;
            let mut set = redis::pipe();
            for (pk, v) in pks.iter().zip(vals) {
                let v: Option<Value> = v.and_then(|b| serde_json::from_slice(&b).ok());
                let entry = unique_entry_of(c.kind, v.as_ref());
                if entry[0] != b'+' {
                    continue;
                }
                let entry = entry[1..].to_vec();
                if seen.insert(entry.clone(), pk.clone()).is_some() {
                    self.run::<()>(redis::cmd("DEL").arg(&ukey)).await?;
                    return Err(DbError::Exists);
                }
                set.cmd("HSET").arg(&ukey).arg(&entry).arg(pk).ignore();
                set.cmd("HSET")
                    .arg(self.keys.row(t, pk))
                    .arg(hidden(&c.name))
                    .arg(&entry)
                    .ignore();
            }
            if !set.is_empty() {
                set.query_async::<()>(&mut self.conn())
                    .await
                    .map_err(redis_err)?;
            }
            match pks.last() {
                Some(last) if pks.len() == BATCH => {
                    min = [b"(".as_slice(), last].concat();
                }
                _ => return Ok(()),
            }
        }
    }
}

/// A column's type as the recorded description names it.
fn kind_name(c: &Column) -> String {
    format!("{:?}", c.kind).to_lowercase()
}
