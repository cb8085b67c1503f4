//! The master's answers to control requests (`control.rs`): queue jobs (answered once
//! committed), show, retry or cancel one job by id, and the status (running and waiting jobs, the
//! crontab, counts by state, the last failures, the metrics).

use super::durable::Pending;
use super::{Ctl, State};
use crate::store::Enqueue;
use crate::{parse_spec, JobError, JobType};
use bkjs_base::sys::kill_group;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use tokio::sync::oneshot;

impl State {
    /// A control request (see `control.rs`); the reply is sent once it is known (after the
    /// commit, for queued jobs).
    pub(super) fn request(&mut self, req: &Value, reply: oneshot::Sender<Value>) {
        let refuse = |e: JobError| json!({"status": 400, "message": e.to_string()});
        let id = || -> Result<i64, JobError> {
            match req.get("id") {
                Some(Value::Number(n)) => n.as_i64(),
                Some(Value::String(s)) => s.trim().parse().ok(),
                _ => None,
            }
            .filter(|id| *id > 0)
            .ok_or_else(|| JobError::Bad("id must be a job id (a positive integer)".into()))
        };
        match req.get("op").and_then(Value::as_str) {
            Some("run") => {
                let kind =
                    match JobType::parse(req.get("type").and_then(Value::as_str).unwrap_or("")) {
                        Ok(k) => k,
                        Err(e) => return drop(reply.send(refuse(e))),
                    };
                let spec = req.get("job").cloned().unwrap_or(Value::Null);
                let jobs = match &spec {
                    Value::String(s) => crate::parse_text(s, kind),
                    v => parse_spec(v, kind),
                };
                let mut jobs = match jobs.and_then(|j| self.registry.check(&j).map(|()| j)) {
                    Ok(j) => j,
                    Err(e) => return drop(reply.send(refuse(e))),
                };
                // Queue options given beside the spec apply to each job that has none.
                for job in &mut jobs {
                    for k in [
                        "delay",
                        "run_at",
                        "priority",
                        "unique",
                        "max_attempts",
                        "queue",
                    ] {
                        if let (Some(v), Value::Object(m)) = (req.get(k), &mut job.args) {
                            m.entry(k.to_string()).or_insert_with(|| v.clone());
                        }
                    }
                }
                // Every job is valid, or nothing is queued.
                let now = bkjs_base::time::now_ms();
                let max = self.cfg.int("jobs-max-attempts");
                if let Some(e) = jobs
                    .iter()
                    .find_map(|j| Enqueue::from_job(j, now, max).err())
                {
                    return drop(reply.send(refuse(e)));
                }
                self.submit(jobs.into_iter().map(Pending::of).collect(), Some(reply));
            }
            Some(op @ ("get" | "retry" | "cancel")) => {
                let id = match id() {
                    Ok(id) => id,
                    Err(e) => return drop(reply.send(refuse(e))),
                };
                if op == "cancel" {
                    // A run of this node stops now; its row can no longer be marked done.
                    for run in self.runs.values_mut() {
                        if run.job.queued.is_some_and(|q| q.id == id) {
                            run.killed = true;
                            if let Some(pid) = run.pid {
                                kill_group(pid, Signal::SIGKILL);
                            }
                            if let Some(t) = &run.task {
                                t.abort();
                            }
                        }
                    }
                }
                let (store, tx, op) = (self.store_task(), self.tx.clone(), op.to_string());
                self.server_rt.spawn(async move {
                    let r: Result<Value, JobError> = async {
                        let store = store.await?;
                        let changed = match op.as_str() {
                            "retry" => {
                                let done = store.retry(id).await?;
                                if done {
                                    // Other nodes' idle masters too.
                                    store.notify(bkjs_base::time::now_ms()).await?;
                                }
                                Some(done)
                            }
                            "cancel" => Some(store.cancel(id).await?),
                            _ => None,
                        };
                        match store.get(id).await? {
                            None => Ok(json!({"status": 404, "message": format!("no job {id}")})),
                            Some(mut v) => {
                                if changed == Some(false) {
                                    let state = v["state"].as_str().unwrap_or("?");
                                    let rule = if op == "retry" {
                                        "only a dead or cancelled job can be retried"
                                    } else {
                                        "only a queued, running or dead job can be cancelled"
                                    };
                                    return Ok(json!({"status": 409,
                                        "message": format!("job {id} is {state}: {rule}")}));
                                }
                                if let Some(c) = changed {
                                    v["changed"] = json!(c);
                                }
                                Ok(v)
                            }
                        }
                    }
                    .await;
                    if op == "retry" {
                        let _ = tx.send(Ctl::Wake);
                    }
                    let _ = reply.send(
                        r.unwrap_or_else(|e| json!({"status": 503, "message": e.to_string()})),
                    );
                });
            }
            Some("status") => {
                let running: Vec<Value> = self
                    .runs
                    .values()
                    .map(|r| {
                        json!({"name": r.job.name, "type": r.job.kind, "pid": r.pid,
                               "started": r.started_ms, "args": r.job.args,
                               "id": r.job.queued.map(|q| q.id),
                               "attempt": r.job.queued.map(|q| q.attempt)})
                    })
                    .collect();
                let mut waiting: Vec<Value> = self
                    .queue
                    .waiting()
                    .map(|j| {
                        json!({"name": j.name, "type": j.kind, "args": j.args,
                                    "id": j.queued.map(|q| q.id)})
                    })
                    .collect();
                let crontab: Vec<Value> = self
                    .crontab
                    .iter()
                    .map(|(e, next)| {
                        json!({"cron": e.cron, "id": e.id, "per_node": e.per_node,
                               "jobs": e.jobs.iter().map(|j| j.name.clone()).collect::<Vec<_>>(),
                               "next": next.map(|t| t.timestamp_millis())})
                    })
                    .collect();
                let mut out = json!({"host": self.node, "running": running,
                       "crontab": crontab, "registered": self.registry.names(),
                       "metrics": self.metrics.json()});
                let (store, node) = (self.store_task(), self.node.clone());
                self.server_rt.spawn(async move {
                    let r: Result<(), JobError> = async {
                        let store = store.await?;
                        let (counts, failures) = store.summary().await?;
                        for (id, j) in store.due(&node).await? {
                            waiting.push(json!({"name": j.name, "type": j.kind, "args": j.args,
                                                "id": id}));
                        }
                        out["counts"] = counts;
                        out["failures"] = failures;
                        Ok(())
                    }
                    .await;
                    if let Err(e) = r {
                        out["queue_error"] = json!(e.to_string());
                    }
                    out["waiting"] = Value::Array(waiting);
                    let _ = reply.send(out);
                });
            }
            _ => drop(reply.send(refuse(JobError::Bad(
                "op must be run, status, get, retry or cancel".into(),
            )))),
        }
    }
}
