//! [`RedisDriver`]: connecting, key lookups, and the writes, each one Lua script
//! ([`super::scripts`]) or, for a plain put, one MULTI/EXEC; `init` is in [`super::init`].

use super::keys::{decode, hidden, pairs, unique_entry, write_value, Keys};
use super::scripts::Scripts;
use super::{redis_err, scan};
use crate::driver::Driver;
use crate::error::DbError;
use crate::kv::codec::{build_row, enc_params, no_table, project, write_key};
use crate::options::Options;
use crate::query::select_columns;
use crate::schema::{Column, Table};
use crate::types::{Param, Res, Row};
use crate::write::{key_params, prepare_write, WriteMode};
use parking_lot::RwLock;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Keys read per round trip when walking a table's key set.
pub(super) const BATCH: usize = 1000;

/// A DB pool kept in one Redis server (docs/data.md, "Redis").
pub struct RedisDriver {
    conns: Vec<ConnectionManager>,
    next: AtomicUsize,
    pub(super) keys: Keys,
    scripts: Scripts,
    /// Tables whose description is recorded in Redis (by this or another process's `init`).
    pub(super) known: RwLock<HashSet<String>>,
}

/// The write a script is asked for, with its own arguments.
type Args = Vec<Vec<u8>>;

impl RedisDriver {
    /// Connects `max` multiplexed connections to the Redis at `url` (`redis://HOST:PORT/N`);
    /// every key the driver uses starts with `prefix`.
    pub async fn connect(url: &str, prefix: &str, max: usize) -> Result<RedisDriver, DbError> {
        let client = redis::Client::open(url)
            .map_err(|e| DbError::bad_value("db-redis-pool", format!("{url}: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(30)))
            .set_number_of_retries(3);
        let mut conns = Vec::with_capacity(max.max(1));
        for _ in 0..max.max(1) {
            let c = ConnectionManager::new_with_config(client.clone(), config.clone())
                .await
                .map_err(|e| DbError::Driver(format!("redis: -db-redis-pool {url}: {e}")))?;
            conns.push(c);
        }
        Ok(RedisDriver {
            conns,
            next: AtomicUsize::new(0),
            keys: Keys {
                prefix: prefix.to_string(),
            },
            scripts: Scripts::new(),
            known: RwLock::new(HashSet::new()),
        })
    }

    /// The next connection (round robin); cloning a multiplexed connection is cheap.
    pub(super) fn conn(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        self.conns[i].clone()
    }

    pub(super) async fn run<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, DbError> {
        cmd.query_async(&mut self.conn()).await.map_err(redis_err)
    }

    /// Fails with "no such table" (as SQLite) unless `init` recorded the table, here or in
    /// another process sharing the Redis.
    pub(super) async fn check_table(&self, t: &Table) -> Result<(), DbError> {
        if self.known.read().contains(t.name()) {
            return Ok(());
        }
        let there: bool = self
            .run(redis::cmd("HEXISTS").arg(self.keys.meta()).arg(t.name()))
            .await?;
        if !there {
            return Err(no_table(t));
        }
        self.known.write().insert(t.name().to_string());
        Ok(())
    }

    /// Runs one write script on the row `pk` of `t`: `unique` holds what the write wants in
    /// each unique column's index (in table order), `args` the script's own arguments.
    async fn write(
        &self,
        script: &redis::Script,
        t: &Table,
        pk: &[u8],
        unique: &[(&Column, Vec<u8>)],
        args: Args,
    ) -> Result<redis::Value, DbError> {
        let mut inv = script.prepare_invoke();
        inv.key(self.keys.row(t, pk)).key(self.keys.set(t));
        for (c, _) in unique {
            inv.key(self.keys.unique(t, &c.name));
        }
        inv.arg(pk);
        for (c, want) in unique {
            inv.arg(hidden(&c.name)).arg(want.as_slice());
        }
        for a in &args {
            inv.arg(a.as_slice());
        }
        inv.invoke_async(&mut self.conn()).await.map_err(redis_err)
    }

    async fn put_or_add(
        &self,
        t: &Table,
        row: &Row,
        opts: &Options,
        add: bool,
    ) -> Result<Res, DbError> {
        self.check_table(t).await?;
        let vals = prepare_write(t, row, opts, WriteMode::Insert)?;
        let pk = write_key(t, &vals)?;
        let unique = unique_wants(t, &vals, b"-");
        let mut args: Args = vec![if add {
            b"add".to_vec()
        } else {
            b"put".to_vec()
        }];
        for (c, p) in &vals {
            if let Some(v) = write_value(c, p) {
                args.push(c.name.as_bytes().to_vec());
                args.push(v);
            }
        }
        if unique.is_empty() && !add {
            // The most frequent write, without checks: one MULTI/EXEC (atomic, cheaper for
            // Redis than a script).
            let row = self.keys.row(t, &pk);
            let mut tx = redis::pipe();
            tx.atomic().del(&row).ignore();
            tx.cmd("HSET").arg(&row).arg(&args[1..]).ignore();
            tx.zadd(self.keys.set(t), &pk, 0).ignore();
            tx.query_async::<()>(&mut self.conn())
                .await
                .map_err(redis_err)?;
            return Ok(Res {
                affected: 1,
                ..Res::default()
            });
        }
        let script = if unique.is_empty() {
            &self.scripts.put_plain
        } else {
            &self.scripts.put
        };
        let reply = self.write(script, t, &pk, &unique, args).await?;
        done(reply)
    }
}

/// What a write wants in each unique column's index: the given value's entry, or `absent` when
/// the write does not give the column (`-`: none, `=`: keep the row's).
fn unique_wants<'t>(
    t: &'t Table,
    vals: &[(&Column, Param)],
    absent: &[u8],
) -> Vec<(&'t Column, Vec<u8>)> {
    t.columns()
        .iter()
        .filter(|c| c.unique)
        .map(|c| {
            let want = vals
                .iter()
                .find(|(v, _)| v.name == c.name)
                .map_or_else(|| absent.to_vec(), |(c, p)| unique_entry(c, p));
            (c, want)
        })
        .collect()
}

/// The result of a script answering 1 (done), 0 (no row), -1/-2 (exists).
fn code(reply: &redis::Value) -> Result<i64, DbError> {
    match reply {
        redis::Value::Int(-1 | -2) => Err(DbError::Exists),
        redis::Value::Int(n) => Ok(*n),
        other => Err(DbError::Driver(format!(
            "redis: unexpected script reply {other:?}"
        ))),
    }
}

fn done(reply: redis::Value) -> Result<Res, DbError> {
    code(&reply)?;
    Ok(Res {
        affected: 1,
        ..Res::default()
    })
}

/// One increment for the incr script: (`i` integer / `f` real / `n` NULL, amount).
fn increment(p: &Param) -> (&'static [u8], Vec<u8>) {
    match p {
        Param::Int(i) => (b"i", i.to_string().into_bytes()),
        Param::Real(f) if f.is_finite() => (b"f", format!("{f:?}").into_bytes()),
        Param::Text(s) => match s.trim().parse::<f64>() {
            Ok(f) if f.is_finite() => (b"f", format!("{f:?}").into_bytes()),
            Ok(_) => (b"n", Vec::new()),
            Err(_) => (b"f", b"0".to_vec()),
        },
        // SQLite keeps NaN as NULL, and infinities end up as NULL in the row.
        Param::Real(_) | Param::Null => (b"n", Vec::new()),
    }
}

#[async_trait::async_trait]
impl Driver for RedisDriver {
    fn name(&self) -> &'static str {
        "redis"
    }

    /// Records each description and builds the missing unique indexes ([`super::init`]).
    async fn init(&self, tables: &[Table]) -> Result<(), DbError> {
        self.init_tables(tables).await
    }

    async fn get(&self, t: &Table, key: &Row, opts: &Options) -> Result<Option<Row>, DbError> {
        self.check_table(t).await?;
        let keys = key_params(t, key)?;
        let pk = enc_params(keys.iter().map(|(_, p)| p));
        let reply: redis::Value = self
            .run(redis::cmd("HGETALL").arg(self.keys.row(t, &pk)))
            .await?;
        let cols = select_columns(t, opts);
        Ok(decode(t, pairs(reply)?)?.map(|r| project(&r, &cols)))
    }

    async fn put(&self, t: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        self.put_or_add(t, row, opts, false).await
    }

    async fn add(&self, t: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        self.put_or_add(t, row, opts, true).await
    }

    async fn update(&self, t: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        self.check_table(t).await?;
        let keys = key_params(t, row)?;
        let vals = prepare_write(t, row, opts, WriteMode::Update)?;
        let vals: Vec<_> = vals.into_iter().filter(|(c, _)| c.primary == 0).collect();
        let pk = enc_params(keys.iter().map(|(_, p)| p));
        let unique = unique_wants(t, &vals, b"=");
        let (set, unset) = split_nulls(&vals);
        let mut args: Args = vec![(set.len() / 2).to_string().into_bytes()];
        args.extend(set);
        args.extend(unset);
        let reply = self
            .write(&self.scripts.update, t, &pk, &unique, args)
            .await?;
        match code(&reply)? {
            0 => Err(DbError::NotFound),
            _ => done(reply),
        }
    }

    /// Numeric columns are added to (HINCRBY for integers, SQLite's arithmetic otherwise, all
    /// in one script); others are set. A unique numeric column cannot be incremented (its
    /// index entry would have to be computed inside Redis).
    async fn incr(&self, t: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        self.check_table(t).await?;
        let vals = prepare_write(t, row, opts, WriteMode::Incr)?;
        let pk = write_key(t, &vals)?;
        if let Some((c, _)) = vals
            .iter()
            .find(|(c, _)| c.unique && c.primary == 0 && c.kind.is_numeric())
        {
            return Err(DbError::Unsupported(format!(
                "incr of the unique column {} on redis",
                c.name
            )));
        }
        let unique = unique_wants(t, &vals, b"=");
        let created = build_row(&vals);
        let mut args: Args = vec![created.len().to_string().into_bytes()];
        for (name, v) in &created {
            args.push(name.as_bytes().to_vec());
            args.push(super::keys::field_value(v));
        }
        let others: Vec<_> = vals.iter().filter(|(c, _)| c.primary == 0).collect();
        let numeric: Vec<_> = others.iter().filter(|(c, _)| c.kind.is_numeric()).collect();
        args.push(numeric.len().to_string().into_bytes());
        for (c, p) in &numeric {
            let (kind, amount) = increment(p);
            args.push(c.name.as_bytes().to_vec());
            args.push(kind.to_vec());
            args.push(amount);
        }
        let plain: Vec<(&Column, Param)> = others
            .iter()
            .filter(|(c, _)| !c.kind.is_numeric())
            .map(|(c, p)| (*c, p.clone()))
            .collect();
        let (set, unset) = split_nulls(&plain);
        args.push((set.len() / 2).to_string().into_bytes());
        args.extend(set);
        args.extend(unset);
        let reply = self
            .write(&self.scripts.incr, t, &pk, &unique, args)
            .await?;
        if let redis::Value::Int(_) = reply {
            code(&reply)?;
        }
        let cols = select_columns(t, opts);
        let new = decode(t, pairs(reply)?)?;
        Ok(Res {
            rows: new.map(|r| project(&r, &cols)).into_iter().collect(),
            affected: 1,
            ..Res::default()
        })
    }

    async fn del(&self, t: &Table, key: &Row, _opts: &Options) -> Result<Res, DbError> {
        self.check_table(t).await?;
        let keys = key_params(t, key)?;
        let pk = enc_params(keys.iter().map(|(_, p)| p));
        let unique = unique_wants(t, &[], b"-");
        let reply = self
            .write(&self.scripts.del, t, &pk, &unique, Vec::new())
            .await?;
        Ok(Res {
            affected: code(&reply)?.max(0) as u64,
            ..Res::default()
        })
    }

    async fn select(&self, t: &Table, query: &Row, opts: &Options) -> Result<Res, DbError> {
        scan::select(self, t, query, opts).await
    }

    /// Native statements are refused: Redis commands are not a query language, and running
    /// arbitrary ones would bypass the layout (indexes, key set) the driver keeps.
    async fn query(&self, _text: &str, _params: &[Value], _opts: &Options) -> Result<Res, DbError> {
        Err(DbError::Unsupported(
            "native queries on redis (a key-value store): use the DB API".into(),
        ))
    }
}

/// The field/value pairs of the non-NULL values, and the names of the NULL ones (removed).
fn split_nulls(vals: &[(&Column, Param)]) -> (Args, Args) {
    let (mut set, mut unset) = (Vec::new(), Vec::new());
    for (c, p) in vals {
        match write_value(c, p) {
            Some(v) => {
                set.push(c.name.as_bytes().to_vec());
                set.push(v);
            }
            None => unset.push(c.name.as_bytes().to_vec()),
        }
    }
    (set, unset)
}
