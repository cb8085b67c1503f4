//! The durable job queue (docs/jobs.md): one table, `bk_job_queue`, in the pool `-jobs-pool`. A job
//! is a row from the moment it is acknowledged until it is done, dead or cancelled, so a master,
//! worker or machine that dies loses nothing: its rows' leases expire and any master requeues
//! them. Every write of a running job is fenced by its attempt number (`WHERE id AND attempts AND
//! state = 'running'`), so a stale worker that resumes late cannot overwrite a newer attempt.
//!
//! The SQL is shared except where the dialects differ (`pgsql`, `sqlite`, `mysql`): the DDL, the
//! claim, and on MySQL every statement that needs `UPDATE ... RETURNING`. The table is created here with native statements rather than through the generic
//! schema because it needs a nullable unique key and partial indexes.

pub(crate) mod listen;
mod mysql;
mod pgsql;
mod sqlite;

use super::{Job, JobError, JobType, QueueRef};
use bkjs_base::config::Config;
use bkjs_db::{DbError, Driver, Options, Res, Row};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// The states of a queued job.
pub(crate) const STATES: &[&str] = &["queued", "running", "done", "dead", "cancelled"];

/// A unique key that stays on the row once the job is over (a crontab tick must never run
/// twice); other keys are released when the job ends so that the name can be queued again.
pub(crate) const TICK: &str = "tick:";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Pgsql,
    Sqlite,
    Mysql,
}

/// How a job is queued: the options of docs/jobs.md, validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Enqueue {
    pub run_at: i64,
    pub priority: i64,
    pub unique_key: Option<String>,
    pub max_attempts: i64,
    pub queue: String,
    /// The host that must run it (a job sent with `host=H`); empty: any node.
    pub target: String,
    /// `runone`: at most one running job of this name across all nodes.
    pub one: bool,
}

fn int_arg(args: &Value, name: &str) -> Result<Option<i64>, JobError> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| JobError::Bad(format!("{name} must be an integer"))),
        Some(Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| JobError::Bad(format!("{name} must be an integer, not {s:?}"))),
        Some(v) => Err(JobError::Bad(format!("{name} must be an integer, not {v}"))),
    }
}

impl Enqueue {
    /// Reads the queue options from a job's arguments: `delay` (ms, >= 0) or `run_at` (ms since
    /// the epoch), `priority`, `unique` (a key), `max_attempts` (1..1000), `queue`. Without
    /// `unique` and without `runalways` the job's name is its unique key (a job whose name is
    /// queued or running is not queued twice) until its first attempt ends.
    pub(crate) fn from_job(job: &Job, now: i64, default_max: i64) -> Result<Enqueue, JobError> {
        let a = &job.args;
        let opts = job.options()?;
        let mut run_at = now;
        if let Some(d) = int_arg(a, "delay")? {
            if d < 0 {
                return Err(JobError::Bad(format!(
                    "delay must be 0 or more milliseconds, not {d}"
                )));
            }
            run_at = now.saturating_add(d);
        }
        if let Some(t) = int_arg(a, "run_at")? {
            if t < 0 {
                return Err(JobError::Bad(format!(
                    "run_at must be milliseconds since the epoch, not {t}"
                )));
            }
            run_at = t;
        }
        let priority = int_arg(a, "priority")?.unwrap_or(0);
        if !(-1000..=1000).contains(&priority) {
            return Err(JobError::Bad(format!(
                "priority must be between -1000 and 1000, not {priority}"
            )));
        }
        let max_attempts = int_arg(a, "max_attempts")?.unwrap_or(default_max);
        if !(1..=1000).contains(&max_attempts) {
            return Err(JobError::Bad(format!(
                "max_attempts must be between 1 and 1000, not {max_attempts}"
            )));
        }
        let unique_key = match a.get("unique") {
            None | Some(Value::Null) => (!opts.runalways).then(|| format!("name:{}", job.name)),
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 512 => {
                Some(format!("key:{}:{s}", job.name))
            }
            Some(_) => {
                return Err(JobError::Bad(
                    "unique must be a string of 1 to 512 characters".into(),
                ))
            }
        };
        let queue = match a.get("queue") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) if s.len() <= 128 => s.clone(),
            Some(_) => return Err(JobError::Bad("queue must be a short string".into())),
        };
        Ok(Enqueue {
            run_at,
            priority,
            unique_key,
            max_attempts,
            queue,
            target: String::new(),
            one: opts.runone.is_some(),
        })
    }
}

/// A job a node claimed (its row id and attempt in `job.queued`).
#[derive(Debug, Clone)]
pub(crate) struct Claimed {
    pub job: Job,
    /// When it was due (the lag is start - due).
    pub run_at: i64,
}

/// The exponential backoff after failed attempt `attempt` (1-based): `base * 2^(attempt-1)`,
/// at most `max`, plus up to a quarter more of jitter.
pub(crate) fn backoff(attempt: i64, base: Duration, max: Duration) -> Duration {
    let exp = attempt.clamp(1, 40) - 1;
    let d = base
        .checked_mul(1u32 << exp.min(31))
        .unwrap_or(max)
        .min(max);
    let jitter = rand::random::<f64>() * 0.25;
    d + d.mul_f64(jitter)
}

/// The queue table on its pool.
#[derive(Clone)]
pub(crate) struct Store {
    pool: Arc<dyn Driver>,
    /// The same pool when it is PostgreSQL: the constrained claim needs a transaction.
    pg: Option<Arc<bkjs_db::pgsql::PgsqlDriver>>,
    /// The same pool when it is MySQL: claims and `RETURNING` statements are transactions.
    my: Option<Arc<bkjs_db::mysql::MysqlDriver>>,
    dialect: Dialect,
    /// `-jobs-queue-limits`: at most N running jobs of a queue across all nodes.
    limits: Arc<Vec<(String, i64)>>,
}

/// `-jobs-queue-limits`, validated: `queue:N` items, N from 1.
pub(crate) fn queue_limits(cfg: &Config) -> Result<Vec<(String, i64)>, String> {
    cfg.map("jobs-queue-limits")
        .iter()
        .map(|(q, n)| match n.parse::<i64>() {
            Ok(n) if n >= 1 && !q.is_empty() && q.len() <= 128 => Ok((q.clone(), n)),
            _ => Err(format!(
                "invalid value for -jobs-queue-limits: {q}:{n} (a queue name and a limit from 1)"
            )),
        })
        .collect()
}

/// Advisory lock key serialising the constrained claims of PostgreSQL nodes ("bkjsjobq").
const CLAIM_LOCK: i64 = 0x626b_6a73_6a6f_6271;

/// The claim statement. Parameters: `$1` node, `$2` lease end, `$3` now, `$4` kind, `$5` host,
/// `$6` batch size, then the limited queues (`$7`, `$8`, ...; the plain claim) or the limited
/// queues and their limits in pairs (`$7`, `$8`, ...; the constrained claim).
///
/// The plain claim takes jobs with no constraint (not `runone`, not in a limited queue): on
/// PostgreSQL with `FOR UPDATE SKIP LOCKED`, so nodes take disjoint batches without waiting. The
/// constrained claim takes at most one job per `runone` name and none while one of that name
/// runs anywhere, and no more jobs of a limited queue than its limit less those running
/// anywhere; it is exact because it runs alone: under SQLite's single writer lock, or on
/// PostgreSQL in a transaction that first takes an advisory lock (so its snapshot sees every
/// earlier constrained claim), while plain claims never take constrained jobs.
fn claim_sql(dialect: Dialect, limited: usize, constrained: bool) -> String {
    format!(
        "{CLAIM_SET} WHERE state = 'queued' AND id IN ({}) RETURNING {CLAIM_COLUMNS}",
        claim_pick(dialect, limited, constrained)
    )
}

/// What a claim writes on the rows it takes (parameters as in [`claim_sql`]).
const CLAIM_SET: &str = "UPDATE bk_job_queue SET state = 'running', attempts = attempts + 1,
        node = $1, lease_until = $2, started = $3, mtime = $3, pid = NULL";

/// What a claim answers of each row it took.
const CLAIM_COLUMNS: &str = "id, name, args, kind, attempts, max_attempts, run_at, started";

/// The ids a claim takes (parameters as in [`claim_sql`]).
fn claim_pick(dialect: Dialect, limited: usize, constrained: bool) -> String {
    let due = "state = 'queued' AND run_at <= $3 AND kind = $4 AND (target = '' OR target = $5)";
    if !constrained {
        let names: Vec<String> = (0..limited).map(|i| format!("${}", 7 + i)).collect();
        let not_limited = if limited == 0 {
            String::new()
        } else {
            format!("AND queue NOT IN ({})", names.join(", "))
        };
        let lock = match dialect {
            Dialect::Pgsql | Dialect::Mysql => "FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        return format!(
            "SELECT id FROM bk_job_queue WHERE {due}
                AND one = 0 {not_limited} ORDER BY priority DESC, run_at, id LIMIT $6 {lock}"
        );
    }
    let (in_limited, queue_cap) = if limited == 0 {
        (String::new(), "1 = 1".to_string())
    } else {
        let whens: String = (0..limited)
            .map(|i| {
                format!(
                    " WHEN CAST(${} AS TEXT) THEN CAST(${} AS BIGINT)",
                    7 + 2 * i,
                    8 + 2 * i
                )
            })
            .collect();
        let names: Vec<String> = (0..limited)
            .map(|i| format!("CAST(${} AS TEXT)", 7 + 2 * i))
            .collect();
        (
            format!("OR queue IN ({})", names.join(", ")),
            format!(
                "(CASE c.queue{whens} END) IS NULL OR c.qn <= (CASE c.queue{whens} END)
                    - (SELECT COUNT(*) FROM bk_job_queue r WHERE r.state = 'running' AND r.queue = c.queue)"
            ),
        )
    };
    format!(
        "SELECT c.id FROM (
            SELECT id, name, one, queue, priority, run_at,
                ROW_NUMBER() OVER (PARTITION BY queue ORDER BY priority DESC, run_at, id) AS qn,
                ROW_NUMBER() OVER (PARTITION BY name, one ORDER BY priority DESC, run_at, id) AS nn
            FROM bk_job_queue WHERE {due} AND (one = 1 {in_limited})) c
            WHERE (c.one = 0 OR (c.nn = 1 AND NOT EXISTS (SELECT 1 FROM bk_job_queue r
                    WHERE r.state = 'running' AND r.name = c.name)))
                AND ({queue_cap})
            ORDER BY c.priority DESC, c.run_at, c.id LIMIT $6"
    )
}

fn num(row: &Row, k: &str) -> i64 {
    match row.get(k) {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

fn text(row: &Row, k: &str) -> String {
    match row.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

/// A row's JSON `args` column, parsed (the drivers may hand back text or JSON).
fn args_of(row: &Row) -> Value {
    match row.get("args") {
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(json!({})),
        Some(v @ Value::Object(_)) => v.clone(),
        _ => json!({}),
    }
}

impl Store {
    /// Opens the pool `-jobs-pool` (empty: `-db-pool`) and creates the table when missing.
    pub(crate) async fn open(cfg: &Config) -> Result<Store, JobError> {
        let store = Self::connect(cfg).await?;
        store.init().await?;
        Ok(store)
    }

    async fn connect(cfg: &Config) -> Result<Store, JobError> {
        let name = match cfg.str("jobs-pool") {
            "" => cfg.str("db-pool").to_string(),
            p => p.to_string(),
        };
        let dialect = match name.as_str() {
            "pgsql" => Dialect::Pgsql,
            "sqlite" => Dialect::Sqlite,
            "mysql" => Dialect::Mysql,
            other => {
                return Err(JobError::Bad(format!(
                    "-jobs-pool: the job queue needs a sqlite, pgsql or mysql pool, not {other}"
                )))
            }
        };
        let limits = Arc::new(queue_limits(cfg).map_err(JobError::Bad)?);
        let failed =
            |e: DbError| JobError::Unavailable(format!("the job queue's pool {name}: {e}"));
        if dialect == Dialect::Pgsql {
            // As front::open_pool opens it, kept typed for the claim's transaction.
            let url = cfg.str("db-pgsql-pool");
            if url.is_empty() {
                return Err(JobError::Bad(
                    "-db-pgsql-pool: a postgresql:// URL is required".into(),
                ));
            }
            let schema = Some(cfg.str("db-pgsql-schema")).filter(|s| !s.is_empty());
            let pg =
                bkjs_db::pgsql::PgsqlDriver::connect(url, cfg.int("db-pgsql-max") as usize, schema)
                    .await
                    .map_err(failed)?;
            let pg = Arc::new(pg);
            return Ok(Store {
                pool: pg.clone(),
                pg: Some(pg),
                my: None,
                dialect,
                limits,
            });
        }
        if dialect == Dialect::Mysql {
            let my = mysql::connect(cfg).await?;
            return Ok(Store {
                pool: my.clone(),
                pg: None,
                my: Some(my),
                dialect,
                limits,
            });
        }
        let pool = bkjs_db::front::open_pool(&name, cfg)
            .await
            .map_err(failed)?;
        Ok(Store {
            pool,
            pg: None,
            my: None,
            dialect,
            limits,
        })
    }

    /// Opens the pool of a queue whose table exists (a job worker's).
    pub(crate) async fn open_existing(cfg: &Config) -> Result<Store, JobError> {
        Self::connect(cfg).await
    }

    async fn init(&self) -> Result<(), JobError> {
        let ddl = match self.dialect {
            Dialect::Pgsql => pgsql::DDL,
            Dialect::Sqlite => sqlite::DDL,
            Dialect::Mysql => mysql::DDL,
        };
        for stmt in ddl {
            // Two nodes creating the table at once: one of them may lose the race in the
            // catalog; the second try finds the table.
            if let Err(e) = self.q(stmt, &[]).await {
                tokio::time::sleep(Duration::from_millis(200)).await;
                self.q(stmt, &[]).await.map_err(|e2| {
                    JobError::Unavailable(format!("cannot create bk_job_queue: {e}; {e2}"))
                })?;
            }
        }
        Ok(())
    }

    async fn q(&self, sql: &str, params: &[Value]) -> Result<Res, DbError> {
        let text = match self.dialect {
            Dialect::Pgsql => pgsql::text(sql),
            Dialect::Sqlite => sqlite::text(sql),
            Dialect::Mysql => {
                let (text, values) = mysql::bind(sql, params)?;
                let my = self.my.as_ref().expect("a mysql store holds its driver");
                return my.query_stateless(&text, &values).await;
            }
        };
        self.pool.query(&text, params, &Options::default()).await
    }

    /// [`Store::q`] for the enqueue's INSERT (one text per batch size), which on PostgreSQL is
    /// prepared once per connection rather than parsed on every call. Only the INSERT: the
    /// other statements' plans depend on their parameters, and a cached statement may switch to
    /// a generic plan (a drain on one node ran 15 times slower with every statement cached).
    async fn q_insert(&self, sql: &str, params: &[Value]) -> Result<Res, DbError> {
        match &self.pg {
            Some(pg) => pg.query_cached(&pgsql::text(sql), params).await,
            None => self.q(sql, params).await,
        }
    }

    /// Inserts jobs, up to 500 rows per statement (one commit for a request's batch); answers,
    /// for each in order, its id and whether it is new (false: a job with the same unique key is
    /// queued or running, and its id is answered). Ids follow the order of the rows.
    pub(crate) async fn enqueue_many(
        &self,
        jobs: &[(Job, Enqueue)],
    ) -> Result<Vec<(i64, bool)>, JobError> {
        let mut out = Vec::with_capacity(jobs.len());
        for chunk in jobs.chunks(500) {
            let now = bkjs_base::time::now_ms();
            let mut params = Vec::with_capacity(chunk.len() * 11 + 1);
            params.push(json!(now));
            let mut values = Vec::with_capacity(chunk.len());
            for (job, e) in chunk {
                let n = params.len();
                values.push(format!(
                    "(${}, ${}, ${}, 'queued', ${}, ${}, ${}, ${}, ${}, ${}, ${}, $1, $1)",
                    n + 1,
                    n + 2,
                    n + 3,
                    n + 4,
                    n + 5,
                    n + 6,
                    n + 7,
                    n + 8,
                    n + 9,
                    n + 10
                ));
                params.extend([
                    json!(job.name),
                    json!(job.args.to_string()),
                    json!(kind_name(job.kind)),
                    json!(e.max_attempts),
                    json!(e.run_at),
                    json!(e.priority),
                    e.unique_key.as_ref().map_or(Value::Null, |k| json!(k)),
                    json!(e.queue),
                    json!(e.target),
                    json!(i64::from(e.one)),
                ]);
            }
            // MySQL: IGNORE skips only the duplicate keys here, every value being validated
            // (and within its column's length) before.
            let (ignore, conflict) = match self.dialect {
                Dialect::Mysql => ("IGNORE ", ""),
                _ => ("", " ON CONFLICT (unique_key) DO NOTHING"),
            };
            let mut sql = format!(
                "INSERT {ignore}INTO bk_job_queue (name, args, kind, state, max_attempts, run_at,
                    priority, unique_key, queue, target, one, ctime, mtime)
                 VALUES {}{conflict} RETURNING id, unique_key",
                values.join(", ")
            );
            if self.dialect == Dialect::Pgsql {
                // The wake-up of idle masters (listen.rs), in the same statement: delivered when
                // the rows commit, with the earliest due time as payload.
                sql = format!(
                    "WITH ins AS ({sql}, run_at) SELECT ins.id, ins.unique_key FROM ins,
                        (SELECT pg_notify({}, MIN(run_at)::text) FROM ins) n",
                    listen::CHANNEL_SQL
                );
            }
            let r = self.q_insert(&sql, &params).await.map_err(unavailable)?;
            let mut keyless: Vec<i64> = Vec::new();
            let mut keyed = std::collections::HashMap::new();
            for row in &r.rows {
                match row.get("unique_key") {
                    Some(Value::String(k)) => {
                        keyed.insert(k.clone(), num(row, "id"));
                    }
                    _ => keyless.push(num(row, "id")),
                }
            }
            keyless.sort_unstable();
            let mut keyless = keyless.into_iter();
            for (_, e) in chunk {
                match &e.unique_key {
                    None => out.push((keyless.next().unwrap_or(0), true)),
                    Some(k) => match keyed.remove(k) {
                        Some(id) => out.push((id, true)),
                        None => {
                            let r = self
                                .q(
                                    "SELECT id FROM bk_job_queue WHERE unique_key = $1",
                                    &[json!(k)],
                                )
                                .await
                                .map_err(unavailable)?;
                            out.push((r.rows.first().map_or(0, |row| num(row, "id")), false));
                        }
                    },
                }
            }
        }
        Ok(out)
    }

    /// Whether a job named `name` is queued or running (a crontab tick of a job without
    /// `runalways` is skipped then, as it always was).
    pub(crate) async fn active(&self, name: &str) -> Result<bool, JobError> {
        let r = self
            .q(
                "SELECT id FROM bk_job_queue WHERE name = $1 AND state IN ('queued', 'running') LIMIT 1",
                &[json!(name)],
            )
            .await
            .map_err(unavailable)?;
        Ok(!r.rows.is_empty())
    }

    /// Claims up to `n` due jobs of `kind` for `node` (a host name `host`), with a lease.
    pub(crate) async fn claim(
        &self,
        node: &str,
        host: &str,
        kind: JobType,
        n: usize,
        lease: Duration,
    ) -> Result<Vec<Claimed>, JobError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let now = bkjs_base::time::now_ms();
        let mut params = vec![
            json!(node),
            json!(now + lease.as_millis() as i64),
            json!(now),
            json!(kind_name(kind)),
            json!(host),
            json!(n as i64),
        ];
        let limited = self.limits.len();
        let mut p = params.clone();
        p.extend(self.limits.iter().map(|(q, _)| json!(q)));
        let mut rows = match &self.my {
            Some(my) => mysql::claim(my, &claim_pick(self.dialect, limited, false), &p, false)
                .await
                .map_err(unavailable)?,
            None => {
                let plain = claim_sql(self.dialect, limited, false);
                self.q(&plain, &p).await.map_err(unavailable)?.rows
            }
        };
        for (q, max) in self.limits.iter() {
            params.extend([json!(q), json!(max)]);
        }
        if rows.len() < n && self.constrained_due(&params).await? {
            params[5] = json!((n - rows.len()) as i64);
            let sql = claim_sql(self.dialect, limited, true);
            let more = match (&self.pg, &self.my) {
                (Some(pg), _) => self.claim_locked(pg, &sql, &params, limited).await?,
                (_, Some(my)) => {
                    mysql::claim(my, &claim_pick(self.dialect, limited, true), &params, true)
                        .await
                        .map_err(unavailable)?
                }
                _ => self.q(&sql, &params).await.map_err(unavailable)?.rows,
            };
            rows.extend(more);
        }
        let r = Res {
            rows,
            ..Res::default()
        };
        let mut out: Vec<Claimed> = r
            .rows
            .iter()
            .map(|row| Claimed {
                run_at: num(row, "run_at"),
                job: Job {
                    name: text(row, "name"),
                    args: args_of(row),
                    kind: JobType::parse(&text(row, "kind")).unwrap_or_default(),
                    queued: Some(QueueRef {
                        id: num(row, "id"),
                        attempt: num(row, "attempts"),
                    }),
                },
            })
            .collect();
        out.sort_by_key(|c| c.job.queued.map(|q| q.id));
        Ok(out)
    }

    /// Whether a due job is constrained (`runone`, or in a limited queue), given the claim's
    /// parameters: most claim rounds find none and run no constrained claim (no lock, no write).
    async fn constrained_due(&self, claim: &[Value]) -> Result<bool, JobError> {
        let limited = self.limits.len();
        let names: Vec<String> = (0..limited).map(|k| format!("${}", 4 + k)).collect();
        let sql = format!(
            "SELECT id FROM bk_job_queue WHERE state = 'queued' AND run_at <= $1 AND kind = $2
                AND (target = '' OR target = $3) AND (one = 1{}) LIMIT 1",
            if limited == 0 {
                String::new()
            } else {
                format!(" OR queue IN ({})", names.join(", "))
            }
        );
        let params: Vec<Value> = claim[2..5]
            .iter()
            .cloned()
            .chain((0..limited).map(|k| claim[6 + 2 * k].clone()))
            .collect();
        Ok(!self
            .q(&sql, &params)
            .await
            .map_err(unavailable)?
            .rows
            .is_empty())
    }

    /// The constrained claim on PostgreSQL: in a transaction holding the claim lock.
    async fn claim_locked(
        &self,
        pg: &bkjs_db::pgsql::PgsqlDriver,
        sql: &str,
        params: &[Value],
        limited: usize,
    ) -> Result<Vec<Row>, JobError> {
        let pgerr = |e: tokio_postgres::Error| JobError::Unavailable(format!("job queue: {e}"));
        let mut client = pg
            .pool()
            .get()
            .await
            .map_err(|e| JobError::Unavailable(format!("job queue: {e}")))?;
        let s = |i: usize| params[i].as_str().unwrap_or_default().to_string();
        let i = |i: usize| params[i].as_i64().unwrap_or_default();
        let (node, until, now, kind, host, n) = (s(0), i(1), i(2), s(3), s(4), i(5));
        let mut limits: Vec<(String, i64)> = Vec::with_capacity(limited);
        for k in 0..limited {
            limits.push((s(6 + 2 * k), i(7 + 2 * k)));
        }
        let tx = client.transaction().await.map_err(pgerr)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CLAIM_LOCK])
            .await
            .map_err(pgerr)?;
        let mut pp: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            vec![&node, &until, &now, &kind, &host, &n];
        for (q, max) in &limits {
            pp.push(q);
            pp.push(max);
        }
        let got = tx.query(sql, &pp).await.map_err(pgerr)?;
        tx.commit().await.map_err(pgerr)?;
        let mut out = Vec::with_capacity(got.len());
        for r in got {
            let mut row = Row::new();
            let get_i = |c: &str| -> Result<i64, JobError> {
                match r.try_get::<_, i64>(c) {
                    Ok(v) => Ok(v),
                    Err(_) => r
                        .try_get::<_, i32>(c)
                        .map(i64::from)
                        .map_err(|e| JobError::Unavailable(format!("job queue: {c}: {e}"))),
                }
            };
            for c in ["id", "attempts", "max_attempts", "run_at", "started"] {
                row.insert(c.into(), json!(get_i(c)?));
            }
            for c in ["name", "args", "kind"] {
                let v: String = r.try_get(c).map_err(pgerr)?;
                row.insert(c.into(), json!(v));
            }
            out.push(row);
        }
        Ok(out)
    }

    /// Extends the lease of a running attempt; false when the attempt is no longer the current
    /// one (requeued after its lease expired, cancelled).
    pub(crate) async fn heartbeat(
        &self,
        id: i64,
        attempt: i64,
        lease: Duration,
    ) -> Result<bool, JobError> {
        let until = bkjs_base::time::now_ms() + lease.as_millis() as i64;
        let r = self
            .q(
                "UPDATE bk_job_queue SET lease_until = $1 WHERE id = $2 AND attempts = $3 AND state = 'running'",
                &[json!(until), json!(id), json!(attempt)],
            )
            .await
            .map_err(unavailable)?;
        Ok(r.affected == 1)
    }

    /// Records the process that runs an attempt.
    pub(crate) async fn set_pid(&self, id: i64, attempt: i64, pid: u32) -> Result<(), JobError> {
        self.q(
            "UPDATE bk_job_queue SET pid = $1 WHERE id = $2 AND attempts = $3 AND state = 'running'",
            &[json!(pid), json!(id), json!(attempt)],
        )
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    /// Marks an attempt done; false when it was not the current attempt (nothing written).
    pub(crate) async fn done(&self, id: i64, attempt: i64) -> Result<bool, JobError> {
        let r = self
            .q(
                "UPDATE bk_job_queue SET state = 'done', lease_until = NULL, mtime = $1, error = NULL,
                    unique_key = CASE WHEN unique_key LIKE 'tick:%' THEN unique_key END
                 WHERE id = $2 AND attempts = $3 AND state = 'running'",
                &[json!(bkjs_base::time::now_ms()), json!(id), json!(attempt)],
            )
            .await
            .map_err(unavailable)?;
        Ok(r.affected == 1)
    }

    /// Marks many attempts done in one statement (server jobs finishing together); answers how
    /// many were still the current attempt.
    pub(crate) async fn done_many(&self, runs: &[QueueRef]) -> Result<u64, JobError> {
        if runs.is_empty() {
            return Ok(0);
        }
        let mut params = vec![json!(bkjs_base::time::now_ms())];
        let mut terms = Vec::with_capacity(runs.len());
        for q in runs {
            let n = params.len();
            terms.push(format!("(id = ${} AND attempts = ${})", n + 1, n + 2));
            params.push(json!(q.id));
            params.push(json!(q.attempt));
        }
        let sql = format!(
            "UPDATE bk_job_queue SET state = 'done', lease_until = NULL, mtime = $1, error = NULL,
                unique_key = CASE WHEN unique_key LIKE 'tick:%' THEN unique_key END
             WHERE state = 'running' AND ({})",
            terms.join(" OR ")
        );
        let r = self.q(&sql, &params).await.map_err(unavailable)?;
        Ok(r.affected)
    }

    /// Puts a claimed job that never started back in the queue, its attempt not counted.
    pub(crate) async fn release(&self, q: QueueRef) -> Result<bool, JobError> {
        let r = self
            .q(
                "UPDATE bk_job_queue SET state = 'queued', attempts = attempts - 1, lease_until = NULL,
                    node = NULL, mtime = $1
                 WHERE id = $2 AND attempts = $3 AND state = 'running'",
                &[json!(bkjs_base::time::now_ms()), json!(q.id), json!(q.attempt)],
            )
            .await
            .map_err(unavailable)?;
        Ok(r.affected == 1)
    }

    /// Records a failed attempt: queued again after `delay`, or dead after its last attempt.
    /// Answers the new state and its `run_at`, None when it was not the current attempt
    /// (nothing written).
    pub(crate) async fn failed(
        &self,
        id: i64,
        attempt: i64,
        error: &str,
        delay: Duration,
    ) -> Result<Option<(String, i64)>, JobError> {
        let now = bkjs_base::time::now_ms();
        let error: String = error.chars().take(2000).collect();
        let update = "UPDATE bk_job_queue SET
                    state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END,
                    unique_key = CASE WHEN unique_key LIKE 'name:%' THEN NULL
                        WHEN attempts >= max_attempts AND unique_key NOT LIKE 'tick:%'
                        THEN NULL ELSE unique_key END,
                    run_at = $1, error = $2, lease_until = NULL, mtime = $3
                 WHERE id = $4 AND attempts = $5 AND state = 'running'";
        let params = [
            json!(now + delay.as_millis() as i64),
            json!(error),
            json!(now),
            json!(id),
            json!(attempt),
        ];
        let r = match &self.my {
            Some(my) => mysql::update_returning(my, update, &params, "state, run_at", id).await,
            None => {
                self.q(&format!("{update} RETURNING state, run_at"), &params)
                    .await
            }
        }
        .map_err(unavailable)?;
        let out = r
            .rows
            .first()
            .map(|row| (text(row, "state"), num(row, "run_at")));
        if let Some((state, run_at)) = &out {
            if state == "queued" {
                // Any idle node may take the next attempt when it is due, not only this one.
                self.notify(*run_at).await?;
            }
        }
        Ok(out)
    }

    /// Requeues (or buries after their last attempt) the running jobs whose lease expired: their
    /// worker, master or machine died or stopped. Answers (id, name, new state) of each.
    pub(crate) async fn requeue_expired(&self) -> Result<Vec<(i64, String, String)>, JobError> {
        let now = bkjs_base::time::now_ms();
        let set = |error: &str| {
            format!(
                "UPDATE bk_job_queue SET
                    state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END,
                    unique_key = CASE WHEN unique_key LIKE 'name:%' THEN NULL
                        WHEN attempts >= max_attempts AND unique_key NOT LIKE 'tick:%'
                        THEN NULL ELSE unique_key END,
                    error = {error}, lease_until = NULL, run_at = $1, mtime = $1"
            )
        };
        let r = match &self.my {
            Some(my) => mysql::requeue_expired(my, &set(mysql::LEASE_ERROR), now).await,
            None => {
                let error = "'the lease of attempt ' || attempts || ' on ' || COALESCE(node, '?') || ' expired'";
                self.q(
                    &format!(
                        "{} WHERE state = 'running' AND lease_until < $1 RETURNING id, name, state",
                        set(error)
                    ),
                    &[json!(now)],
                )
                .await
            }
        }
        .map_err(unavailable)?;
        let out: Vec<(i64, String, String)> = r
            .rows
            .iter()
            .map(|row| (num(row, "id"), text(row, "name"), text(row, "state")))
            .collect();
        if out.iter().any(|(_, _, state)| state == "queued") {
            self.notify(now).await?;
        }
        Ok(out)
    }

    /// Whether idle masters can be woken by LISTEN/NOTIFY (PostgreSQL) rather than by polling.
    pub(crate) fn can_listen(&self) -> bool {
        self.dialect == Dialect::Pgsql
    }

    /// Wakes the masters listening on this queue (PostgreSQL; a no-op elsewhere): a job is due
    /// at `run_at`.
    pub(crate) async fn notify(&self, run_at: i64) -> Result<(), JobError> {
        if self.dialect == Dialect::Pgsql {
            self.q(
                &format!("SELECT pg_notify({}, $1)::text AS n", listen::CHANNEL_SQL),
                &[json!(run_at.to_string())],
            )
            .await
            .map_err(unavailable)?;
        }
        Ok(())
    }

    /// Queues a dead or cancelled job again now (one more attempt when it had used them all).
    pub(crate) async fn retry(&self, id: i64) -> Result<bool, JobError> {
        let now = bkjs_base::time::now_ms();
        let r = self
            .q(
                "UPDATE bk_job_queue SET state = 'queued', run_at = $1, mtime = $1,
                    max_attempts = CASE WHEN attempts >= max_attempts THEN attempts + 1 ELSE max_attempts END
                 WHERE id = $2 AND state IN ('dead', 'cancelled')",
                &[json!(now), json!(id)],
            )
            .await
            .map_err(unavailable)?;
        Ok(r.affected == 1)
    }

    /// Cancels a queued, running or dead job (a running attempt can no longer record its result).
    pub(crate) async fn cancel(&self, id: i64) -> Result<bool, JobError> {
        let r = self
            .q(
                "UPDATE bk_job_queue SET state = 'cancelled', lease_until = NULL, mtime = $1,
                    unique_key = CASE WHEN unique_key LIKE 'tick:%' THEN unique_key END
                 WHERE id = $2 AND state IN ('queued', 'running', 'dead')",
                &[json!(bkjs_base::time::now_ms()), json!(id)],
            )
            .await
            .map_err(unavailable)?;
        Ok(r.affected == 1)
    }

    /// One job as `/system/jobs?id=` shows it.
    pub(crate) async fn get(&self, id: i64) -> Result<Option<Value>, JobError> {
        let r = self
            .q(
                "SELECT id, name, state, attempts, max_attempts, node, pid, error, run_at, priority,
                    kind, args, ctime, mtime FROM bk_job_queue WHERE id = $1",
                &[json!(id)],
            )
            .await
            .map_err(unavailable)?;
        Ok(r.rows.first().map(|row| {
            json!({
                "id": num(row, "id"), "name": text(row, "name"), "state": text(row, "state"),
                "attempts": num(row, "attempts"), "max_attempts": num(row, "max_attempts"),
                "node": row.get("node").cloned().unwrap_or(Value::Null),
                "pid": row.get("pid").cloned().unwrap_or(Value::Null),
                "error": row.get("error").cloned().unwrap_or(Value::Null),
                "run_at": num(row, "run_at"), "priority": num(row, "priority"),
                "type": text(row, "kind"), "args": args_of(row),
                "ctime": num(row, "ctime"), "mtime": num(row, "mtime"),
            })
        }))
    }

    /// Counts by state (every state present, 0 when none) and the last failures.
    pub(crate) async fn summary(&self) -> Result<(Value, Value), JobError> {
        let r = self
            .q(
                "SELECT state, COUNT(*) AS n FROM bk_job_queue GROUP BY state",
                &[],
            )
            .await
            .map_err(unavailable)?;
        let mut counts = serde_json::Map::new();
        for s in STATES {
            counts.insert((*s).into(), json!(0));
        }
        for row in &r.rows {
            counts.insert(text(row, "state"), json!(num(row, "n")));
        }
        let r = self
            .q(
                "SELECT id, name, state, attempts, error, node, mtime FROM bk_job_queue
                 WHERE error IS NOT NULL ORDER BY mtime DESC, id DESC LIMIT 10",
                &[],
            )
            .await
            .map_err(unavailable)?;
        let failures: Vec<Value> = r
            .rows
            .iter()
            .map(|row| {
                json!({"id": num(row, "id"), "name": text(row, "name"), "state": text(row, "state"),
                       "attempts": num(row, "attempts"), "error": text(row, "error"),
                       "node": row.get("node").cloned().unwrap_or(Value::Null),
                       "mtime": num(row, "mtime")})
            })
            .collect();
        Ok((Value::Object(counts), Value::Array(failures)))
    }

    /// Due queued jobs this host could run, first to run first (at most 100).
    pub(crate) async fn due(&self, host: &str) -> Result<Vec<(i64, Job)>, JobError> {
        let r = self
            .q(
                "SELECT id, name, args, kind FROM bk_job_queue WHERE state = 'queued' AND run_at <= $1
                    AND (target = '' OR target = $2) ORDER BY priority DESC, run_at, id LIMIT 100",
                &[json!(bkjs_base::time::now_ms()), json!(host)],
            )
            .await
            .map_err(unavailable)?;
        Ok(r.rows
            .iter()
            .map(|row| {
                (
                    num(row, "id"),
                    Job {
                        name: text(row, "name"),
                        args: args_of(row),
                        kind: JobType::parse(&text(row, "kind")).unwrap_or_default(),
                        queued: None,
                    },
                )
            })
            .collect())
    }

    /// Deletes finished rows (done, cancelled) older than `keep`.
    pub(crate) async fn prune(&self, keep: Duration) -> Result<u64, JobError> {
        let before = bkjs_base::time::now_ms() - keep.as_millis() as i64;
        let r = self
            .q(
                "DELETE FROM bk_job_queue WHERE state IN ('done', 'cancelled') AND mtime < $1",
                &[json!(before)],
            )
            .await
            .map_err(unavailable)?;
        Ok(r.affected)
    }
}

pub(crate) fn kind_name(k: JobType) -> &'static str {
    match k {
        JobType::Local => "local",
        JobType::Server => "server",
    }
}

fn unavailable(e: DbError) -> JobError {
    JobError::Unavailable(format!("job queue: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(args: Value) -> Job {
        Job {
            name: "a.b".into(),
            args,
            kind: JobType::Local,
            queued: None,
        }
    }

    #[test]
    fn options_are_validated() {
        let e = Enqueue::from_job(&job(json!({})), 1000, 20).expect("plain");
        assert_eq!(
            (e.run_at, e.unique_key.as_deref(), e.max_attempts),
            (1000, Some("name:a.b"), 20)
        );
        let e = Enqueue::from_job(
            &job(json!({"delay": "500", "runalways": 1, "priority": 3, "max_attempts": 2})),
            1000,
            20,
        )
        .expect("options");
        assert_eq!(
            (e.run_at, e.unique_key, e.priority, e.max_attempts),
            (1500, None, 3, 2)
        );
        for bad in [
            json!({"delay": -1}),
            json!({"delay": "soon"}),
            json!({"run_at": -5}),
            json!({"max_attempts": 0}),
            json!({"priority": 5000}),
            json!({"unique": 5}),
        ] {
            assert!(
                matches!(
                    Enqueue::from_job(&job(bad.clone()), 0, 20),
                    Err(JobError::Bad(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for a in 1..=3 {
            let d = backoff(a, base, max);
            let want = base * (1 << (a - 1));
            assert!(d >= want && d <= want + want / 4, "{a}: {d:?}");
        }
        assert!(backoff(30, base, max) <= max + max / 4);
    }
}
