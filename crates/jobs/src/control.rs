//! The master's control socket, `var/ipc/NAME-jobs.sock`: a JSON request line, a JSON reply
//! line, any number of times on one connection (web workers keep theirs open between requests,
//! `control_conn.rs`). Web workers use it for `/system/jobs` (queue a job, read the queue's
//! state); it is separate from the server's IPC hub because the queue lives in the master.
//!
//! Requests: `{"op": "run", "job": JOB, "type": "local"|"server", "delay"?, "priority"?,
//! "unique"?, "max_attempts"?}` answered once the jobs are committed to the durable queue with
//! `{"id", "ids", "queued": [names], "skipped": [{"name", "reason", "id"?}]}`; `{"op": "get"|
//! "retry"|"cancel", "id": ID}` answered with the job's row; `{"op": "status"}` answered with the
//! running and waiting jobs, the crontab, counts by state and the last failures. A refused
//! request is answered `{"status": 400|404|409|503, "message": ...}`.

use super::JobError;
use bkjs_base::config::Config;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// The socket file of this home's master (in the private `var/ipc/`).
pub(crate) fn socket_path(cfg: &Config) -> PathBuf {
    bkjs_base::sys::socket_dir(cfg).join(format!("{}-jobs.sock", cfg.str("name")))
}

/// The longest request or reply line.
pub(crate) const MAX_LINE: usize = 1 << 20;

/// Sends one request to the master and returns its reply; a refusal is [`JobError::Bad`].
pub async fn request(cfg: &Config, req: &Value) -> Result<Value, JobError> {
    let path = socket_path(cfg);
    let down = |e: &dyn std::fmt::Display| {
        JobError::Unavailable(format!(
            "the master at {} does not answer: {e}",
            path.display()
        ))
    };
    let mut line = req.to_string();
    line.push('\n');
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        super::control_conn::exchange(&path, &line),
    )
    .await
    .map_err(|_| down(&"no reply within 5 s"))?
    .map_err(|e| down(&e))?;
    let v = serde_json::from_str::<Value>(&reply).map_err(|e| down(&e))?;
    let message = || {
        v.get("message")
            .and_then(Value::as_str)
            .unwrap_or("refused")
            .to_string()
    };
    match v.get("status").and_then(Value::as_u64) {
        Some(400) => Err(JobError::Bad(message())),
        Some(404) => Err(JobError::NotFound(message())),
        Some(409) => Err(JobError::Conflict(message())),
        Some(503) => Err(JobError::Unavailable(message())),
        _ => Ok(v),
    }
}

/// Queues the jobs of `spec` (a JOB spec, docs/jobs.md) in the durable queue through this
/// machine's master, as `/system/jobs?job=` does (the App API for a route or a hook): answers
/// the ids once the rows are committed.
pub async fn enqueue(
    cfg: &Config,
    spec: Value,
    kind: super::JobType,
) -> Result<Vec<i64>, JobError> {
    let kind = match kind {
        super::JobType::Local => "local",
        super::JobType::Server => "server",
    };
    let v = request(
        cfg,
        &serde_json::json!({"op": "run", "job": spec, "type": kind}),
    )
    .await?;
    Ok(v.get("ids")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default())
}
