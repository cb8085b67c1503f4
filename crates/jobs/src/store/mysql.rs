//! The queue table's MySQL dialect (MariaDB 10.6 or later, for `SKIP LOCKED` and
//! `INSERT ... RETURNING`): the DDL, the `$N` placeholders of the shared statements turned into
//! MySQL's positional `?`, and the statements MySQL cannot run as written (an `UPDATE` has no
//! `RETURNING` and cannot select from the table it updates): each becomes a short transaction
//! that locks the rows it changes (`FOR UPDATE SKIP LOCKED`), updates them by id and reads them
//! back. Constrained claims (`runone`, limited queues) first lock the one row of
//! `bk_job_queue_lock`, so they run one at a time across nodes, as PostgreSQL's advisory lock
//! makes them there.

use super::{JobError, CLAIM_COLUMNS, CLAIM_SET};
use bkjs_base::config::Config;
use bkjs_db::mysql::MysqlDriver;
use bkjs_db::{DbError, Res, Row};
use serde_json::{json, Value};
use std::sync::Arc;

/// The statements creating the tables (each run alone, idempotent). MySQL has no partial
/// indexes: the state leads the indexes instead.
pub(super) const DDL: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS bk_job_queue (
        id BIGINT AUTO_INCREMENT PRIMARY KEY,
        name VARCHAR(255) NOT NULL,
        args LONGTEXT NOT NULL,
        kind VARCHAR(16) NOT NULL DEFAULT 'local',
        state VARCHAR(16) NOT NULL DEFAULT 'queued',
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL DEFAULT 20,
        run_at BIGINT NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0,
        unique_key VARCHAR(768) UNIQUE,
        queue VARCHAR(128) NOT NULL DEFAULT '',
        target VARCHAR(255) NOT NULL DEFAULT '',
        one INTEGER NOT NULL DEFAULT 0,
        node VARCHAR(255),
        pid INTEGER,
        lease_until BIGINT,
        started BIGINT,
        error TEXT,
        ctime BIGINT NOT NULL,
        mtime BIGINT NOT NULL,
        INDEX bk_job_queue_due (state, kind, priority, run_at, id),
        INDEX bk_job_queue_lease (state, lease_until),
        INDEX bk_job_queue_mtime (mtime)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS bk_job_queue_lock (id INTEGER PRIMARY KEY) ENGINE=InnoDB",
    "INSERT IGNORE INTO bk_job_queue_lock (id) VALUES (1)",
];

/// A shared statement (`$N` placeholders, each used any number of times) with its parameters
/// as MySQL binds them: one `?` per use, the values in the order of use. PostgreSQL's casts
/// become MySQL's, and `a || b` (string concatenation in SQL, `OR` in MySQL) is refused here:
/// statements that need it are written for MySQL.
pub(super) fn bind(sql: &str, params: &[Value]) -> Result<(String, Vec<Value>), DbError> {
    if sql.contains("||") {
        return Err(DbError::Driver(
            "job queue: a statement with || reached MySQL".into(),
        ));
    }
    let sql = sql
        .replace("AS TEXT)", "AS CHAR)")
        .replace("AS BIGINT)", "AS SIGNED)");
    let mut out = String::with_capacity(sql.len());
    let mut values = Vec::new();
    let mut chars = sql.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let mut n = 0usize;
        let mut digits = 0;
        while let Some(&(_, d)) = chars.peek() {
            match d.to_digit(10) {
                Some(v) => {
                    n = n * 10 + v as usize;
                    digits += 1;
                    chars.next();
                }
                None => break,
            }
        }
        let value = (digits > 0 && n >= 1)
            .then(|| params.get(n - 1))
            .flatten()
            .ok_or_else(|| DbError::Driver(format!("job queue: no parameter ${n}")))?;
        out.push('?');
        values.push(value.clone());
    }
    Ok((out, values))
}

/// `requeue_expired`'s error text, built with `CONCAT`.
pub(super) const LEASE_ERROR: &str =
    "CONCAT('the lease of attempt ', attempts, ' on ', COALESCE(node, '?'), ' expired')";

/// `IN (?, ?, ...)` for `n` ids (n >= 1).
pub(super) fn in_list(n: usize) -> String {
    let marks: Vec<&str> = (0..n).map(|_| "?").collect();
    format!("({})", marks.join(", "))
}

/// The oldest MariaDB with what the queue needs: `SKIP LOCKED` (10.6) and `INSERT ... RETURNING`
/// (10.5). MySQL has no `RETURNING` at all.
const MIN_MARIADB: (u32, u32) = (10, 6);

/// Opens the pool `-db-mysql-pool` as the queue uses it, and checks the server can run it.
pub(super) async fn connect(cfg: &Config) -> Result<Arc<MysqlDriver>, JobError> {
    let url = cfg.str("db-mysql-pool");
    if url.is_empty() {
        return Err(JobError::Bad(
            "-db-mysql-pool: a mysql:// URL is required".into(),
        ));
    }
    let failed = |e: DbError| JobError::Unavailable(format!("the job queue's pool mysql: {e}"));
    let my = MysqlDriver::connect(url, cfg.int("db-mysql-max") as usize).map_err(failed)?;
    let r = my
        .query_stateless("SELECT VERSION() AS v", &[])
        .await
        .map_err(failed)?;
    let version = r
        .rows
        .first()
        .and_then(|row| row.get("v"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if !supported(&version) {
        return Err(JobError::Bad(format!(
            "-jobs-pool mysql: the job queue needs MariaDB {}.{} or later (SKIP LOCKED, INSERT ... RETURNING); the server is {version}",
            MIN_MARIADB.0, MIN_MARIADB.1
        )));
    }
    Ok(Arc::new(my))
}

/// Whether a server version string (`10.11.19-MariaDB-0+deb12u1`) can run the queue.
fn supported(version: &str) -> bool {
    if !version.contains("MariaDB") {
        return false;
    }
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    match (parts.next(), parts.next()) {
        (Some(major), Some(minor)) => (major, minor) >= MIN_MARIADB,
        _ => false,
    }
}

fn ids_of(r: &Res) -> Vec<Value> {
    r.rows
        .iter()
        .filter_map(|row| row.get("id").cloned())
        .collect()
}

/// A claim: the ids `pick` selects (locked with `SKIP LOCKED`; a constrained claim first takes
/// the claim lock row), marked running for this node and read back, in one transaction.
/// `params` are the claim's ($1 node, $2 lease end, $3 now, ...).
pub(super) async fn claim(
    my: &MysqlDriver,
    pick: &str,
    params: &[Value],
    constrained: bool,
) -> Result<Vec<Row>, DbError> {
    let mut tx = my.begin().await?;
    if constrained {
        tx.query(
            "SELECT id FROM bk_job_queue_lock WHERE id = 1 FOR UPDATE",
            &[],
        )
        .await?;
    }
    let (text, values) = bind(pick, params)?;
    let ids = ids_of(&tx.query(&text, &values).await?);
    if ids.is_empty() {
        tx.commit().await?;
        return Ok(Vec::new());
    }
    let (set, mut values) = bind(CLAIM_SET, params)?;
    values.extend(ids.iter().cloned());
    let list = in_list(ids.len());
    tx.query(
        &format!("{set} WHERE state = 'queued' AND id IN {list}"),
        &values,
    )
    .await?;
    let mut values = ids;
    values.extend([params[0].clone(), params[2].clone()]);
    let rows = tx
        .query(
            &format!(
                "SELECT {CLAIM_COLUMNS} FROM bk_job_queue WHERE id IN {list}
                    AND state = 'running' AND node = ? AND started = ?"
            ),
            &values,
        )
        .await?
        .rows;
    tx.commit().await?;
    Ok(rows)
}

/// `update` (a shared statement on the row `id`, `$N` placeholders) and then `columns` of the
/// row when the update matched it: what `UPDATE ... RETURNING columns` answers elsewhere.
pub(super) async fn update_returning(
    my: &MysqlDriver,
    update: &str,
    params: &[Value],
    columns: &str,
    id: i64,
) -> Result<Res, DbError> {
    let mut tx = my.begin().await?;
    let (text, values) = bind(update, params)?;
    let r = tx.query(&text, &values).await?;
    if r.affected == 0 {
        tx.commit().await?;
        return Ok(Res::default());
    }
    let r = tx
        .query(
            &format!("SELECT {columns} FROM bk_job_queue WHERE id = ?"),
            &[json!(id)],
        )
        .await?;
    tx.commit().await?;
    Ok(r)
}

/// Requeues (or buries) the running jobs whose lease ended before `now`: `set` is the shared
/// `UPDATE ... SET` ($1 = now); answers their id, name and new state.
pub(super) async fn requeue_expired(my: &MysqlDriver, set: &str, now: i64) -> Result<Res, DbError> {
    let mut tx = my.begin().await?;
    let ids = ids_of(
        &tx.query(
            "SELECT id FROM bk_job_queue WHERE state = 'running' AND lease_until < ?
                FOR UPDATE SKIP LOCKED",
            &[json!(now)],
        )
        .await?,
    );
    if ids.is_empty() {
        tx.commit().await?;
        return Ok(Res::default());
    }
    let list = in_list(ids.len());
    let (set, mut values) = bind(set, &[json!(now)])?;
    values.extend(ids.iter().cloned());
    tx.query(
        &format!("{set} WHERE state = 'running' AND id IN {list}"),
        &values,
    )
    .await?;
    let r = tx
        .query(
            &format!("SELECT id, name, state FROM bk_job_queue WHERE id IN {list}"),
            &ids,
        )
        .await?;
    tx.commit().await?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn placeholders_are_repeated_in_order_of_use() {
        let (sql, vals) = bind(
            "UPDATE t SET a = $2, b = $1 WHERE c = $2 AND d = CAST($3 AS TEXT) AND e = $10",
            &(1..=10).map(|i| json!(i)).collect::<Vec<_>>(),
        )
        .expect("bind");
        assert_eq!(
            sql,
            "UPDATE t SET a = ?, b = ? WHERE c = ? AND d = CAST(? AS CHAR) AND e = ?"
        );
        assert_eq!(
            vals,
            vec![json!(2), json!(1), json!(2), json!(3), json!(10)]
        );
        assert!(bind("SELECT $4", &[json!(1)]).is_err());
        assert!(bind("SELECT 'a' || 'b'", &[]).is_err());
    }

    #[test]
    fn only_mariadb_from_10_6_runs_the_queue() {
        assert!(supported("10.11.19-MariaDB-0+deb12u1"));
        assert!(supported("11.4.2-MariaDB"));
        assert!(supported("10.6.0-MariaDB-log"));
        assert!(!supported("10.5.9-MariaDB"));
        assert!(!supported("8.0.36"));
        assert!(!supported(""));
    }
}
