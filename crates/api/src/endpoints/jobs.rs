//! `/system/jobs` (admin, docs/api.md, §9): without `job`, the master's queue (running and waiting
//! jobs, the crontab); with `job=NAME` or `job=JSON` (also a JSON body's `job` field) it queues
//! the job at this machine's master, or with `host=H` for another host through `bk_jobs`.
//! `type=server` runs it inside the master instead of a job worker.

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
        "admin: the job queue; job=NAME|JSON [type=local|server] [host=H] runs a job on demand (on host H through bk_jobs)",
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
            let r = control::request(cfg, &json!({"op": "run", "job": spec, "type": kind})).await?;
            Ok(Out::Json(r))
        }
    }
}
