//! Jobs (docs/jobs.md): named handlers an application registers through `App::job`, run by the master
//! on a schedule (`etc/crontab`, reloaded when it changes), on demand (`/system/jobs`, `bksh
//! -run-job`, `-server-job BASE64` at start) or when another host sends one through the
//! `bk_jobs` table.
//!
//! Every job goes through the durable queue (`store`: the table `bk_job_queue` in `-jobs-pool`,
//! leases, fenced attempts, retries with backoff, dead jobs), so nothing acknowledged is lost.
//! A job of type `local` runs in a job worker: the same binary started again with `-worker`,
//! titled `bkjs: worker NAME`, one process per job, so a crashing job cannot take the master
//! down and a worker never sits idle (it exits when its job is done); `server` jobs run inside
//! the master. The master keeps the queue (`queue`): at most `-server-job-workers` workers at
//! once, options runalways, runlast, runone, runafter and skipqueue, and kills a job that runs
//! longer than `-server-job-max-time`. The pieces: `crontab` (parsing and schedules),
//! `queue`, `master` (the master's side), `worker` (the job worker role), [`control`] (the
//! master's socket that `/system/jobs` talks to).

#![deny(unsafe_op_in_unsafe_fn, rust_2018_idioms)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod control;
mod control_conn;
mod crontab;
mod master;
mod queue;
mod store;
mod worker;

pub use master::Jobs;
pub use worker::run_worker;

use bkjs_base::config::{Config, Kind, Param};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Job parameters.
pub static PARAMS: &[Param] = &[
    Param::new(
        "server-job-workers",
        Kind::Int { min: 0, max: 1024 },
        "1",
        "job worker processes running at once; more jobs wait in the master's queue (0 = local jobs only wait)",
    ),
    Param::new(
        "server-job",
        Kind::List,
        "",
        "a job the master queues when it starts: base64 of its JSON, e.g. {\"name\":{\"arg\":1}} (repeatable)",
    ).accumulating(),
    Param::new(
        "server-job-max-time",
        Kind::Duration,
        "1h",
        "a job running longer than this is killed and logged",
    ),
    Param::new(
        "server-jobs-interval",
        Kind::Duration,
        "30s",
        "how often the master looks in bk_jobs for jobs sent to this host (0 = never)",
    ),
    Param::new(
        "jobs-pool",
        Kind::String,
        "",
        "the DB pool holding the durable job queue (table bk_job_queue): sqlite, pgsql or mysql (MariaDB 10.6+); nodes sharing a pgsql or mysql pool share the queue; empty: -db-pool",
    ),
    Param::new(
        "jobs-lease",
        Kind::Duration,
        "30s",
        "how long a running job's claim lasts without a heartbeat (sent every third of it); an expired job runs again",
    ),
    Param::new(
        "jobs-poll-interval",
        Kind::Duration,
        "200ms",
        "how often an idle master looks for due jobs in the queue (jobs queued through it start at once); on PostgreSQL only while its LISTEN connection is down",
    ),
    Param::new(
        "jobs-queue-limits",
        Kind::Map,
        "",
        "at most N running jobs of a queue (a job's queue option) across all nodes sharing the job queue, as queue:N,... (every node should list the same)",
    ),
    Param::new(
        "jobs-listen",
        Kind::Bool,
        "true",
        "on PostgreSQL, wake idle masters with LISTEN/NOTIFY when a job is queued (one connection per master); the queue is then polled only every -jobs-poll-fallback",
    ),
    Param::new(
        "jobs-poll-fallback",
        Kind::Duration,
        "2s",
        "how often a master that LISTENs for queued jobs (PostgreSQL) still looks for due jobs, in case a notification was missed",
    ),
    Param::new(
        "jobs-backoff",
        Kind::Duration,
        "1s",
        "the delay before the second attempt of a failed job; doubled at each attempt, with up to 25% jitter",
    ),
    Param::new(
        "jobs-backoff-max",
        Kind::Duration,
        "1h",
        "the longest delay between two attempts of a failed job",
    ),
    Param::new(
        "jobs-max-attempts",
        Kind::Int { min: 1, max: 1000 },
        "20",
        "attempts of a job before it is dead (a job's max_attempts argument overrides it)",
    ),
    Param::new(
        "jobs-server-concurrency",
        Kind::Int { min: 1, max: 10000 },
        "64",
        "server jobs one master runs at once",
    ),
    Param::new(
        "jobs-keep",
        Kind::Duration,
        "1d",
        "how long done and cancelled jobs stay in the queue table before they are deleted",
    ),
    Param::new(
        "server-jobs-host",
        Kind::String,
        "",
        "this machine's name in the host column of bk_jobs; empty: the host name",
    ),
];

/// Why a job could not be queued or run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobError {
    /// The caller's fault: a job spec that does not parse, an unknown name, a bad option.
    #[error("bad job: {0}")]
    Bad(String),
    /// The master (or the database holding bk_jobs) cannot be reached; a retry may help.
    #[error("jobs unavailable: {0}")]
    Unavailable(String),
    /// No job has this id.
    #[error("{0}")]
    NotFound(String),
    /// The job is in a state the request does not apply to.
    #[error("{0}")]
    Conflict(String),
    /// The job itself failed.
    #[error("{0}")]
    Failed(String),
}

impl JobError {
    pub fn failed(msg: impl Into<String>) -> JobError {
        JobError::Failed(msg.into())
    }
}

impl From<bkjs_db::DbError> for JobError {
    fn from(e: bkjs_db::DbError) -> JobError {
        JobError::Failed(format!("database: {e}"))
    }
}

impl From<String> for JobError {
    fn from(e: String) -> JobError {
        JobError::Failed(e)
    }
}

/// Where a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum JobType {
    /// In a job worker process.
    #[default]
    Local,
    /// Inside the master.
    Server,
}

impl JobType {
    pub fn parse(s: &str) -> Result<JobType, JobError> {
        match s {
            "" | "local" => Ok(JobType::Local),
            "server" => Ok(JobType::Server),
            other => Err(JobError::Bad(format!(
                "type must be local or server, not {other:?}"
            ))),
        }
    }
}

/// One job to run: a registered name and its arguments (which also carry the queue options).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub name: String,
    #[serde(default)]
    pub args: Value,
    #[serde(default, rename = "type")]
    pub kind: JobType,
    /// The queue row and attempt this run is (none when run outside the queue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<QueueRef>,
}

/// A job's row in the durable queue and the attempt being run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRef {
    pub id: i64,
    pub attempt: i64,
}

/// The queue options of docs/jobs.md, read from a job's arguments.
#[derive(Debug, Clone, Default)]
pub(crate) struct JobOptions {
    /// Queue it even when a job of the same name runs or waits.
    pub runalways: bool,
    /// Run only when nothing else runs or waits.
    pub runlast: bool,
    /// Wait while a job whose name matches runs.
    pub runone: Option<regex::Regex>,
    /// Wait while a job whose name matches runs or waits.
    pub runafter: Option<regex::Regex>,
    /// Never wait: start now or not at all.
    pub skipqueue: bool,
}

fn flag(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => matches!(s.as_str(), "1" | "true" | "yes"),
        _ => false,
    }
}

fn pattern(args: &Value, name: &str) -> Result<Option<regex::Regex>, JobError> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => regex::Regex::new(s)
            .map(Some)
            .map_err(|e| JobError::Bad(format!("{name} is not a valid regexp: {e}"))),
        Some(_) => Err(JobError::Bad(format!("{name} must be a regexp string"))),
    }
}

impl Job {
    /// The options in the arguments; a bad regexp is the caller's error.
    pub(crate) fn options(&self) -> Result<JobOptions, JobError> {
        Ok(JobOptions {
            runalways: flag(self.args.get("runalways")),
            runlast: flag(self.args.get("runlast")),
            runone: pattern(&self.args, "runone")?,
            runafter: pattern(&self.args, "runafter")?,
            skipqueue: flag(self.args.get("skipqueue")),
        })
    }
}

/// Whether `name` may name a job: 1 to 128 letters, digits and `_ . : -`.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// The jobs of a JOB spec: `"name"`, `{"name": {args}, "$name": {...}}` (leading `$`s let one spec
/// hold the same job twice), or a list of those. Every name must be valid and its options must
/// parse.
pub fn parse_spec(spec: &Value, kind: JobType) -> Result<Vec<Job>, JobError> {
    let mut out = Vec::new();
    collect(spec, kind, &mut out)?;
    if out.is_empty() {
        return Err(JobError::Bad("the job spec names no job".into()));
    }
    for j in &out {
        j.options()?;
    }
    Ok(out)
}

fn collect(spec: &Value, kind: JobType, out: &mut Vec<Job>) -> Result<(), JobError> {
    let named = |raw: &str| -> Result<String, JobError> {
        let name = raw.trim_start_matches('$');
        if valid_name(name) {
            Ok(name.to_string())
        } else {
            Err(JobError::Bad(format!(
                "{raw:?} is not a job name (letters, digits, _ . : -)"
            )))
        }
    };
    match spec {
        Value::String(s) => out.push(Job {
            name: named(s)?,
            args: json!({}),
            kind,
            queued: None,
        }),
        Value::Object(m) => {
            for (k, v) in m {
                let args = match v {
                    Value::Object(_) => v.clone(),
                    Value::Null | Value::Bool(true) => json!({}),
                    _ => {
                        return Err(JobError::Bad(format!(
                            "the arguments of {k} must be an object"
                        )))
                    }
                };
                out.push(Job {
                    name: named(k)?,
                    args,
                    kind,
                    queued: None,
                });
            }
        }
        Value::Array(a) => {
            for v in a {
                collect(v, kind, out)?;
            }
        }
        _ => {
            return Err(JobError::Bad(
                "a job spec is a name, an object of name: arguments, or a list of those".into(),
            ))
        }
    }
    Ok(())
}

/// A job spec given as text: JSON (`{"a":{}}`, `["a","b"]`, `"a"`) or a bare name.
pub fn parse_text(text: &str, kind: JobType) -> Result<Vec<Job>, JobError> {
    let text = text.trim();
    match serde_json::from_str::<Value>(text) {
        Ok(v) => parse_spec(&v, kind),
        Err(_) if valid_name(text.trim_start_matches('$')) => {
            parse_spec(&Value::String(text.to_string()), kind)
        }
        Err(e) => Err(JobError::Bad(format!("not a job name nor JSON: {e}"))),
    }
}

/// The JSON spec of some jobs, as `bk_jobs` stores it and `parse_spec` reads it back.
pub(crate) fn to_spec(jobs: &[Job]) -> Value {
    Value::Array(
        jobs.iter()
            .map(|j| {
                let mut m = serde_json::Map::new();
                m.insert(j.name.clone(), j.args.clone());
                Value::Object(m)
            })
            .collect(),
    )
}

/// What a job handler gets.
#[derive(Clone)]
pub struct JobContext {
    pub name: String,
    /// The arguments of the spec (queue options included).
    pub args: Value,
    pub cfg: Config,
    /// The database pools, as a web worker has them (writes invalidate the cache when the server
    /// runs).
    pub db: Arc<bkjs_db::Db>,
    /// The job's id in the queue (0 when run outside it, e.g. by `bksh -run-job`).
    pub id: i64,
    /// Which attempt this is, from 1 (0 outside the queue).
    pub attempt: i64,
}

/// A boxed future returned by job handlers.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
/// A job handler.
pub type Handler = Arc<dyn Fn(JobContext) -> BoxFuture<Result<(), JobError>> + Send + Sync>;

/// The jobs an application registers, by name.
#[derive(Clone, Default)]
pub struct Registry {
    jobs: BTreeMap<String, Handler>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.jobs.keys()).finish()
    }
}

impl Registry {
    /// Registers `f` as job `name`; a bad or duplicate name is the application's error.
    pub fn add<F, Fut>(&mut self, name: &str, f: F) -> Result<(), JobError>
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), JobError>> + Send + 'static,
    {
        if !valid_name(name) {
            return Err(JobError::Bad(format!(
                "job {name:?}: a name is 1 to 128 letters, digits and _ . : -"
            )));
        }
        if self.jobs.contains_key(name) {
            return Err(JobError::Bad(format!("job {name} is registered twice")));
        }
        self.jobs
            .insert(name.to_string(), Arc::new(move |ctx| Box::pin(f(ctx))));
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<Handler> {
        self.jobs.get(name).cloned()
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.jobs.keys().cloned().collect()
    }

    /// Fails on the first job of `jobs` that is not registered.
    pub fn check(&self, jobs: &[Job]) -> Result<(), JobError> {
        match jobs.iter().find(|j| !self.jobs.contains_key(&j.name)) {
            Some(j) => Err(JobError::Bad(format!(
                "unknown job {}; registered: {}",
                j.name,
                self.names().join(", ")
            ))),
            None => Ok(()),
        }
    }
}

/// Opens the database pools for jobs (the master's server jobs, a job worker); with `with_cache`
/// it reaches the server's cache over IPC so that writes invalidate it like a web worker's would
/// (no cache when the server cannot be reached).
pub(crate) async fn open_db(
    cfg: &Config,
    tables: Vec<bkjs_db::Table>,
    with_cache: bool,
) -> Result<bkjs_db::Db, bkjs_db::DbError> {
    let cache = if with_cache {
        bkjs_ipc::Client::connect(&bkjs_ipc::hub_url(cfg), cfg.duration("ipc-timeout"))
            .ok()
            .and_then(|c| bkjs_cache::Cache::new(cfg, c).ok())
    } else {
        None
    };
    bkjs_db::Db::open(cfg, tables, cache).await
}

/// This machine's name in `bk_jobs`.
pub fn host_name(cfg: &Config) -> String {
    match cfg.str("server-jobs-host") {
        "" => nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "localhost".into()),
        h => h.to_string(),
    }
}

/// Whether `host` can name a machine: what `hostname` may return, nothing a query could
/// widen or a log line could be forged with.
pub fn valid_host(host: &str) -> bool {
    (1..=253).contains(&host.len())
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Queues `jobs` for `host` in `bk_jobs`; the master of that host picks them up within
/// `-server-jobs-interval`. Answers the row's id.
pub async fn submit_to_host(
    db: &bkjs_db::Db,
    host: &str,
    jobs: &[Job],
) -> Result<String, JobError> {
    if !valid_host(host) {
        return Err(JobError::Bad(
            "host must be a host name: 1 to 253 letters, digits, '-', '_' and '.'".into(),
        ));
    }
    let kind = jobs.first().map(|j| j.kind).unwrap_or_default();
    let id = hex::encode(rand::random::<[u8; 16]>());
    let mut row = bkjs_db::Row::new();
    row.insert("id".into(), json!(id));
    row.insert(
        "tag".into(),
        json!(jobs
            .iter()
            .map(|j| j.name.as_str())
            .collect::<Vec<_>>()
            .join(",")),
    );
    row.insert(
        "type".into(),
        json!(if kind == JobType::Server {
            "server"
        } else {
            "local"
        }),
    );
    row.insert("job".into(), to_spec(jobs));
    row.insert("host".into(), json!(host));
    row.insert("args".into(), json!(bkjs_base::time::now_ms().to_string()));
    db.add("bk_jobs", &row, &bkjs_db::Options::default())
        .await
        .map_err(|e| JobError::Unavailable(format!("bk_jobs: {e}")))?;
    Ok(id)
}

/// The built-in `jobs.noop` (does nothing), and the jobs that exist only for tests (debug
/// builds with `BKJS_TEST_FAULTS=1`):
/// `test.write` (args `name`, optional `sleep` ms) puts a `bk_property` row `name` whose value
/// records the pid, the process title, the host, the queue id and attempt and when the job
/// started and ended (`fail_attempt: N` makes attempt N fail instead, `count: true` also adds 1
/// to the `bk_counter` row `name`); `test.crash` aborts its process; `test.fail` returns an
/// error (with `name`, after putting a row `name.ATTEMPT`).
pub fn test_jobs(reg: &mut Registry) {
    // Built in, in every build: a job that does nothing, for checking the queue end to end
    // and for bench/jobs.
    let _ = reg.add("jobs.noop", |_ctx: JobContext| async move { Ok(()) });
    if !bkjs_base::faults::enabled() {
        return;
    }
    let _ = reg.add("test.write", |ctx: JobContext| async move {
        let start = bkjs_base::time::now_ms();
        let name = ctx
            .args
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("test.write")
            .to_string();
        if let Some(ms) = ctx.args.get("sleep").and_then(Value::as_u64) {
            // Tests wait for this line: the handler runs (its pools are open).
            tracing::info!("test job {name}: attempt {} sleeps {ms} ms", ctx.attempt);
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        if ctx.args.get("fail_attempt").and_then(Value::as_i64) == Some(ctx.attempt) {
            return Err(JobError::failed(format!(
                "test job: attempt {} fails on purpose",
                ctx.attempt
            )));
        }
        if flag(ctx.args.get("count")) {
            let mut row = bkjs_db::Row::new();
            row.insert("id".into(), json!(name));
            row.insert("ping".into(), json!(1));
            ctx.db
                .incr("bk_counter", &row, &bkjs_db::Options::default())
                .await?;
        }
        let title = std::fs::read("/proc/self/cmdline")
            .ok()
            .and_then(|b| {
                b.split(|c| *c == 0)
                    .next()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
            })
            .unwrap_or_default();
        let value = json!({
            "pid": std::process::id(),
            "title": title,
            "host": host_name(&ctx.cfg),
            "start": start,
            "end": bkjs_base::time::now_ms(),
            "args": ctx.args,
            "id": ctx.id,
            "attempt": ctx.attempt,
        });
        let mut row = bkjs_db::Row::new();
        row.insert("name".into(), json!(name));
        row.insert("value".into(), json!(value.to_string()));
        ctx.db
            .put("bk_property", &row, &bkjs_db::Options::default())
            .await?;
        Ok(())
    });
    let _ = reg.add("test.crash", |_ctx: JobContext| async move {
        tracing::warn!("test job: aborting this process");
        std::process::abort();
    });
    let _ = reg.add("test.fail", |ctx: JobContext| async move {
        // With `name`, each attempt leaves a row NAME.ATTEMPT holding when it started.
        if let Some(name) = ctx.args.get("name").and_then(Value::as_str) {
            let mut row = bkjs_db::Row::new();
            row.insert("name".into(), json!(format!("{name}.{}", ctx.attempt)));
            row.insert(
                "value".into(),
                json!(
                    json!({"start": bkjs_base::time::now_ms(), "pid": std::process::id()})
                        .to_string()
                ),
            );
            ctx.db
                .put("bk_property", &row, &bkjs_db::Options::default())
                .await?;
        }
        Err(JobError::failed("test job: failing on purpose"))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_names_args_and_dollars() {
        let jobs = parse_text(r#"{"a.b":{"x":1},"$a.b":{"x":2}}"#, JobType::Local).expect("spec");
        assert_eq!(jobs.len(), 2);
        assert!(jobs.iter().all(|j| j.name == "a.b"));
        let mut xs: Vec<_> = jobs.iter().map(|j| j.args["x"].clone()).collect();
        xs.sort_by_key(|v| v.as_i64());
        assert_eq!(xs, [json!(1), json!(2)]);
        let jobs = parse_text("plain.name", JobType::Server).expect("bare name");
        assert_eq!(
            (jobs[0].name.as_str(), jobs[0].kind),
            ("plain.name", JobType::Server)
        );
        let jobs = parse_text(r#"["a", {"b": null}]"#, JobType::Local).expect("list");
        assert_eq!(jobs.len(), 2);
        assert_eq!(
            parse_spec(&to_spec(&jobs), JobType::Local).expect("round trip"),
            jobs
        );
        for bad in [
            r#"{"a b":{}}"#,
            "{}",
            "[]",
            "42",
            r#"{"a":5}"#,
            "{oops",
            r#"{"a":{"runone":"("}}"#,
            r#"{"a":{"runafter":3}}"#,
        ] {
            assert!(
                matches!(parse_text(bad, JobType::Local), Err(JobError::Bad(_))),
                "{bad}"
            );
        }
        let o = parse_text(
            r#"{"a":{"runalways":1,"runlast":true,"runone":"^x","runafter":"y","skipqueue":"1"}}"#,
            JobType::Local,
        )
        .expect("options")[0]
            .options()
            .expect("options");
        assert!(o.runalways && o.runlast && o.skipqueue);
        assert!(o.runone.expect("runone").is_match("xz"));
        assert!(o.runafter.expect("runafter").is_match("ay"));
    }

    #[test]
    fn registry_refuses_bad_and_duplicate_names() {
        let mut r = Registry::default();
        r.add("a.b", |_c| async { Ok(()) }).expect("add");
        assert!(r.add("a.b", |_c| async { Ok(()) }).is_err());
        assert!(r.add("bad name", |_c| async { Ok(()) }).is_err());
        let jobs = parse_text("zzz", JobType::Local).expect("spec");
        assert!(r
            .check(&jobs)
            .unwrap_err()
            .to_string()
            .contains("unknown job zzz"));
        assert!(r
            .check(&parse_text("a.b", JobType::Local).expect("spec"))
            .is_ok());
    }
}
