//! The DB parameters (`-db-*`) and the opening of one driver's pool from them: the one place that
//! knows every driver, so that the drivers never know each other.

use crate::driver::{Blocking, Driver};
use crate::dynamodb::{DynamoConfig, DynamoDriver};
use crate::error::DbError;
use crate::mysql::MysqlDriver;
use crate::pgsql::PgsqlDriver;
use crate::redis::RedisDriver;
use crate::sled::SledDriver;
use crate::sqlite::{Batching, Commit, SqliteDriver};
use bkjs_base::config::{Config, Kind, Param};
use std::sync::Arc;

/// The drivers a pool can use.
pub(crate) const DRIVERS: &[&str] = &["sqlite", "pgsql", "mysql", "sled", "redis", "dynamodb"];

/// DB parameters.
pub static PARAMS: &[Param] = &[
    Param::new(
        "db-pool",
        Kind::Enum(DRIVERS),
        "sqlite",
        "the default pool: tables not pinned elsewhere live there",
    ),
    Param::new(
        "db-sqlite-pool",
        Kind::Path,
        "var/bkjs.db",
        "SQLite database file",
    ),
    Param::new(
        "db-sqlite-max",
        Kind::Int { min: 1, max: 256 },
        "4",
        "connections of the SQLite pool per process",
    ),
    Param::new(
        "db-sqlite-inline",
        Kind::Bool,
        "true",
        "key lookups (and single-row writes with -db-sqlite-batch-max 0) that need not wait (idle connection, no lock held) run on the worker's thread, microseconds; 0 sends every call to the blocking pool",
    ),
    Param::new(
        "db-sqlite-batch-max",
        Kind::Int { min: 0, max: 10000 },
        "256",
        "group commit: writes of this process committed together in one transaction at most; 0 commits every write alone",
    ),
    Param::new(
        "db-sqlite-batch-delay",
        Kind::Int { min: 0, max: 100000 },
        "0",
        "group commit: microseconds a flush waits for more writes while writes arrive concurrently (never for a write that comes alone)",
    ),
    Param::new(
        "db-sqlite-sync",
        Kind::Enum(&["normal", "full"]),
        "normal",
        "SQLite synchronous level: normal survives a crash of any process, full also a power loss (every commit waits for the disk)",
    ),
    Param::new(
        "db-sqlite-tables",
        Kind::List,
        "",
        "tables kept in the SQLite pool whatever -db-pool says",
    ),
    Param::new(
        "db-pgsql-pool",
        Kind::String,
        "",
        "PostgreSQL URL, e.g. postgresql://user@host:5432/db",
    ),
    Param::new(
        "db-pgsql-max",
        Kind::Int { min: 1, max: 1024 },
        "8",
        "connections of the PostgreSQL pool per process",
    ),
    Param::new(
        "db-pgsql-schema",
        Kind::String,
        "",
        "PostgreSQL schema (created when missing; default: the server's search_path)",
    ),
    Param::new(
        "db-pgsql-tables",
        Kind::List,
        "",
        "tables kept in the PostgreSQL pool",
    ),
    Param::new(
        "db-mysql-pool",
        Kind::String,
        "",
        "MySQL/MariaDB URL, e.g. mysql://root@host:3306/db",
    ),
    Param::new(
        "db-mysql-max",
        Kind::Int { min: 1, max: 1024 },
        "8",
        "connections of the MySQL pool per process",
    ),
    Param::new(
        "db-mysql-tables",
        Kind::List,
        "",
        "tables kept in the MySQL pool",
    ),
    Param::new(
        "db-sled-pool",
        Kind::Path,
        "",
        "sled database directory (embedded key-value store)",
    ),
    Param::new(
        "db-sled-tables",
        Kind::List,
        "",
        "tables kept in the sled pool",
    ),
    Param::new(
        "db-redis-pool",
        Kind::String,
        "redis://127.0.0.1:6379/0",
        "Redis URL of the redis pool, redis://[:PASSWORD@]HOST:PORT/DB (rediss:// for TLS is not built in)",
    ),
    Param::new(
        "db-redis-prefix",
        Kind::String,
        "bk:",
        "prefix of every key the redis pool uses, so several pools (or the cache) can share one Redis",
    ),
    Param::new(
        "db-redis-max",
        Kind::Int { min: 1, max: 64 },
        "1",
        "multiplexed connections of the redis pool per process (each pipelines any number of concurrent calls)",
    ),
    Param::new(
        "db-redis-tables",
        Kind::List,
        "",
        "tables kept in the redis pool",
    ),
    Param::new(
        "db-dynamodb-pool",
        Kind::String,
        "",
        "DynamoDB endpoint URL, e.g. https://dynamodb.us-east-1.amazonaws.com or http://127.0.0.1:8000 (a local DynamoDB)",
    ),
    Param::new(
        "db-dynamodb-region",
        Kind::String,
        "us-east-1",
        "AWS region requests to DynamoDB are signed for",
    ),
    Param::new(
        "db-dynamodb-key",
        Kind::String,
        "",
        "AWS access key id for DynamoDB (default: the AWS_ACCESS_KEY_ID environment variable)",
    ),
    Param::new(
        "db-dynamodb-secret",
        Kind::String,
        "",
        "AWS secret access key for DynamoDB (default: the AWS_SECRET_ACCESS_KEY environment variable); never logged",
    ),
    Param::new(
        "db-dynamodb-prefix",
        Kind::String,
        "",
        "prefix of every DynamoDB table name (several applications or tests in one account)",
    ),
    Param::new(
        "db-dynamodb-tables",
        Kind::List,
        "",
        "tables kept in the DynamoDB pool",
    ),
    Param::new(
        "db-caching",
        Kind::List,
        "bk_counter",
        "tables whose gets go through the cache by default (the list replaces the default: keep bk_counter in it to keep counters cached)",
    ),
    Param::new(
        "db-seal-key",
        Kind::String,
        "",
        "64 hex digits: the AES-256 key of columns sealed at rest (account secrets); empty: the file etc/seal.key of the home, made on first use. Every machine sharing a database needs the same key",
    ),
];

/// Opens the pool of one driver from the configuration.
pub async fn open_pool(driver: &str, cfg: &Config) -> Result<Arc<dyn Driver>, DbError> {
    match driver {
        "sqlite" => {
            let path = cfg
                .path("db-sqlite-pool")
                .ok_or_else(|| DbError::bad_value("db-sqlite-pool", "a file is required"))?;
            let max = cfg.int("db-sqlite-max") as usize;
            let commit = Commit {
                batching: Batching {
                    max: cfg.int("db-sqlite-batch-max") as usize,
                    delay: std::time::Duration::from_micros(cfg.int("db-sqlite-batch-delay") as u64),
                },
                sync_full: cfg.str("db-sqlite-sync") == "full",
            };
            let d = tokio::task::spawn_blocking(move || SqliteDriver::open_with(path, max, commit))
                .await
                .map_err(|e| DbError::Driver(e.to_string()))??;
            d.set_inline(cfg.bool("db-sqlite-inline"));
            Ok(Arc::new(Blocking(Arc::new(d))))
        }
        "pgsql" => {
            let url = cfg.str("db-pgsql-pool");
            if url.is_empty() {
                return Err(DbError::bad_value(
                    "db-pgsql-pool",
                    "a postgresql:// URL is required",
                ));
            }
            let schema = Some(cfg.str("db-pgsql-schema")).filter(|s| !s.is_empty());
            let d = PgsqlDriver::connect(url, cfg.int("db-pgsql-max") as usize, schema).await?;
            Ok(Arc::new(d))
        }
        "mysql" => {
            let url = cfg.str("db-mysql-pool");
            if url.is_empty() {
                return Err(DbError::bad_value(
                    "db-mysql-pool",
                    "a mysql:// URL is required",
                ));
            }
            Ok(Arc::new(MysqlDriver::connect(
                url,
                cfg.int("db-mysql-max") as usize,
            )?))
        }
        "sled" => {
            let path = cfg
                .path("db-sled-pool")
                .unwrap_or_else(|| cfg.dir("var").join("bkjs.sled"));
            let d = tokio::task::spawn_blocking(move || SledDriver::open(path))
                .await
                .map_err(|e| DbError::Driver(e.to_string()))?
                .map_err(|e| {
                    // sled locks its directory to one process.
                    DbError::Driver(format!("{e} (a sled database is used by one process at a time: run a sled pool with -server-web-workers 1)"))
                })?;
            Ok(Arc::new(Blocking(Arc::new(d))))
        }
        "redis" => {
            let url = cfg.str("db-redis-pool");
            if url.is_empty() {
                return Err(DbError::bad_value(
                    "db-redis-pool",
                    "a redis:// URL is required",
                ));
            }
            let d = RedisDriver::connect(
                url,
                cfg.str("db-redis-prefix"),
                cfg.int("db-redis-max") as usize,
            )
            .await?;
            Ok(Arc::new(d))
        }
        "dynamodb" => {
            let url = cfg.str("db-dynamodb-pool");
            if url.is_empty() {
                return Err(DbError::bad_value(
                    "db-dynamodb-pool",
                    "an http:// or https:// endpoint URL is required",
                ));
            }
            let from_env = |param: &str, var: &str| match cfg.str(param) {
                "" => std::env::var(var).unwrap_or_default(),
                v => v.to_string(),
            };
            let d = DynamoDriver::new(&DynamoConfig {
                url: url.to_string(),
                region: cfg.str("db-dynamodb-region").to_string(),
                key: from_env("db-dynamodb-key", "AWS_ACCESS_KEY_ID"),
                secret: from_env("db-dynamodb-secret", "AWS_SECRET_ACCESS_KEY"),
                prefix: cfg.str("db-dynamodb-prefix").to_string(),
            })?;
            Ok(Arc::new(d))
        }
        other => Err(DbError::Unsupported(format!("unknown driver {other}"))),
    }
}
