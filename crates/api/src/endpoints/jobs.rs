//! `/system/jobs` (admin, docs/api.md, §9, docs/jobs.md): without `job`, the master's queue (running
//! and waiting jobs, the crontab, counts by state, the last failures); with `job=NAME` or
//! `job=JSON` (also a JSON body's `job` field) it queues the job in the durable queue through this
//! machine's master and answers its id once committed, or with `host=H` for another host through
//! `bk_jobs`. `type=server` runs it inside the master instead of a job worker. `id=ID` shows one
//! job; `retry=ID` and `cancel=ID` retry a dead or cancelled job and cancel one.

use crate::api::{Req, Routes};

use crate::error::ApiError;

use crate::reply::Out;
use bkjs_jobs::{control, host_name, parse_spec, parse_text, JobError, JobType};
use hyper::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;

pub(crate) fn register(r: &mut Routes) -> Result<(), crate::route::RouteError> {
    r.add(
        "*",
        "/system/jobs",
        "admin: the job queue; job=NAME|JSON [type=local|server] [delay=MS] [priority=N] [unique=KEY] [max_attempts=N] [host=H] queues a job and answers its id; id=ID shows it; retry=ID, cancel=ID",
        jobs,
    )
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> ApiError {
        match e {
            JobError::Bad(_) => ApiError::bad(e.to_string()),
            JobError::Unavailable(_) => {
                tracing::warn!("{e}");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            JobError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
            JobError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            JobError::Failed(_) => ApiError::internal(e.to_string()),
        }
    }
}

async fn jobs(req: Arc<Req>) -> Result<Out, ApiError> {
    let cfg = &req.api.cfg;
    let spec = match req.params.json("job") {
        Some(v) => Some(v.clone()),
        None => req
            .param("job")
            .filter(|s| !s.trim().is_empty())
            .map(|s| Value::String(s.to_string())),
    };
    let kind = JobType::parse(req.param("type").unwrap_or(""))?;
    for op in ["retry", "cancel", "id"] {
        if let Some(id) = req.param(op).filter(|s| !s.trim().is_empty()) {
            let op = if op == "id" { "get" } else { op };
            let id: i64 = id
                .trim()
                .parse()
                .ok()
                .filter(|i| *i > 0)
                .ok_or_else(|| ApiError::bad(format!("{op}: {id:?} is not a job id")))?;
            return Ok(Out::Json(
                control::request(cfg, &json!({"op": op, "id": id})).await?,
            ));
        }
    }
    let Some(spec) = spec else {
        return Ok(Out::Json(
            control::request(cfg, &json!({"op": "status"})).await?,
        ));
    };
    match req.param("host").filter(|h| !h.is_empty()) {
        Some(host) if host != host_name(cfg) => {
            let jobs = match &spec {
                Value::String(s) => parse_text(s, kind)?,
                v => parse_spec(v, kind)?,
            };
            let db = req
                .api
                .db
                .as_ref()
                .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no database"))?;
            let id = bkjs_jobs::submit_to_host(db, host, &jobs).await?;
            let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
            Ok(Out::Json(json!({"host": host, "id": id, "queued": names})))
        }
        _ => {
            let kind = if kind == JobType::Server {
                "server"
            } else {
                "local"
            };
            let mut run = json!({"op": "run", "job": spec, "type": kind});
            for k in ["delay", "run_at", "priority", "max_attempts"] {
                if let Some(v) = req.param(k).filter(|s| !s.trim().is_empty()) {
                    let n: i64 = v
                        .trim()
                        .parse()
                        .map_err(|_| ApiError::bad(format!("{k} must be an integer, not {v:?}")))?;
                    run[k] = json!(n);
                }
            }
            if let Some(v) = req.param("unique").filter(|s| !s.is_empty()) {
                run["unique"] = json!(v);
            }
            let r = control::request(cfg, &run).await?;
            Ok(Out::Json(r))
        }
    }
}
