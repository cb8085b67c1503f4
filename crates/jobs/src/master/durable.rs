//! The master's side of the durable queue (docs/jobs.md): jobs on their way into `bk_job_queue`
//! and the answer once they are committed, claims for the free slots, heartbeats for the jobs the
//! master holds, the requeue of expired leases, failures with their backoff, the batched record
//! of finished server jobs, and the queue's metrics. The rows and their SQL are in `store`.

use super::{Ctl, State};
use crate::queue::Submitted;
use crate::store::{self, Enqueue, Store};
use crate::{Job, JobError, JobType, QueueRef};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// A job on its way into the durable queue, with what its source decides beyond its arguments.
pub(super) struct Pending {
    pub(super) job: Job,
    /// Overrides the unique key (a crontab tick).
    pub(super) key: Option<String>,
    /// The host that must run it (a job from `bk_jobs`).
    pub(super) target: String,
}

impl Pending {
    pub(super) fn of(job: Job) -> Pending {
        Pending {
            job,
            key: None,
            target: String::new(),
        }
    }
}

/// The queue's counters and lag histogram, in the master's metrics registry (`jobs.*`).
pub(super) struct Metrics {
    pub(super) enqueued: Arc<bkjs_base::metrics::Counter>,
    pub(super) started: Arc<bkjs_base::metrics::Counter>,
    pub(super) done: Arc<bkjs_base::metrics::Counter>,
    pub(super) failed: Arc<bkjs_base::metrics::Counter>,
    pub(super) dead: Arc<bkjs_base::metrics::Counter>,
    pub(super) lag: Arc<bkjs_base::metrics::Histogram>,
}

impl Metrics {
    pub(super) fn new() -> Metrics {
        let r = bkjs_base::metrics::Registry::global();
        Metrics {
            enqueued: r.counter("jobs.enqueued"),
            started: r.counter("jobs.started"),
            done: r.counter("jobs.done"),
            failed: r.counter("jobs.failed"),
            dead: r.counter("jobs.dead"),
            lag: r.histogram("jobs.lag_ms"),
        }
    }

    pub(super) fn json(&self) -> Value {
        let lag = self.lag.snapshot().stats();
        json!({"enqueued": self.enqueued.get(), "started": self.started.get(),
               "done": self.done.get(), "failed": self.failed.get(), "dead": self.dead.get(),
               "lag_ms": {"count": lag.count, "p50": lag.median, "p99": lag.p99, "max": lag.max}})
    }

    /// Counts a failed attempt and, when it was the last one, a dead job.
    pub(super) fn failure(&self, state: Option<&str>) {
        self.failed.inc();
        if state == Some("dead") {
            self.dead.inc();
        }
    }
}

impl State {
    /// Queues jobs from any source: into the durable queue (a `skipqueue` job straight into the
    /// master's queue, as before the durable queue); answers, through `reply`, once every row is
    /// committed: `{"id", "ids", "queued": [names], "skipped": [{name, reason, id?}]}`.
    pub(super) fn submit(&mut self, items: Vec<Pending>, reply: Option<oneshot::Sender<Value>>) {
        let mut skipped = Vec::new();
        let mut queued = Vec::new();
        let mut durable = Vec::new();
        let now = bkjs_base::time::now_ms();
        let max = self.cfg.int("jobs-max-attempts");
        for p in items {
            let job = p.job;
            let name = job.name.clone();
            if let Err(e) = self.registry.check(std::slice::from_ref(&job)) {
                skipped.push(json!({"name": name, "reason": e.to_string()}));
                continue;
            }
            if self.stopping {
                skipped.push(json!({"name": name, "reason": "the master is stopping"}));
                continue;
            }
            if job.options().is_ok_and(|o| o.skipqueue) {
                match self.queue.submit(job, self.free_slots()) {
                    Submitted::Queued => queued.push(json!(name)),
                    Submitted::Skipped(why) => {
                        skipped.push(json!({"name": name, "reason": why}));
                    }
                }
                continue;
            }
            match Enqueue::from_job(&job, now, max) {
                Ok(mut e) => {
                    if p.key.is_some() {
                        e.unique_key = p.key;
                    }
                    e.target = p.target;
                    durable.push((job, e));
                }
                Err(e) => skipped.push(json!({"name": name, "reason": e.to_string()})),
            }
        }
        self.dispatch();
        let (store, tx, metrics) = (self.store_task(), self.tx.clone(), self.metrics.clone());
        self.server_rt.spawn(async move {
            let mut ids = Vec::new();
            let mut first_due = None;
            let r: Result<(), JobError> = async {
                if durable.is_empty() {
                    return Ok(());
                }
                let store = store.await?;
                let mut rows = Vec::with_capacity(durable.len());
                for (job, e) in durable {
                    let tick = e.unique_key.as_deref().is_some_and(|k| k.starts_with(store::TICK));
                    if tick
                        && !job.options().is_ok_and(|o| o.runalways)
                        && store.active(&job.name).await?
                    {
                        skipped.push(json!({"name": job.name,
                            "reason": format!("{} is already queued or running", job.name)}));
                        continue;
                    }
                    rows.push((job, e));
                }
                let done = store.enqueue_many(&rows).await?;
                for ((job, e), (id, new)) in rows.iter().zip(done) {
                    ids.push(json!(id));
                    if new {
                        first_due = Some(first_due.map_or(e.run_at, |d: i64| d.min(e.run_at)));
                        metrics.enqueued.inc();
                        queued.push(json!(job.name));
                    } else {
                        skipped.push(json!({"name": job.name, "id": id,
                            "reason": format!("{} is already queued or running (job {id})", job.name)}));
                    }
                }
                Ok(())
            }
            .await;
            let out = match r {
                Ok(()) => json!({"id": ids.first(), "ids": ids, "queued": queued, "skipped": skipped}),
                Err(e) => {
                    tracing::error!("jobs: cannot queue: {e}");
                    json!({"status": 503, "message": e.to_string(), "ids": ids})
                }
            };
            if let Some(at) = first_due {
                let _ = tx.send(Ctl::Heard(store::listen::Heard::Due(at)));
            }
            match reply {
                Some(r) => {
                    let _ = r.send(out);
                }
                None => tracing::debug!("jobs queued: {out}"),
            }
        });
    }

    /// The channel of the task that records server jobs done, many rows per statement: under load
    /// one UPDATE per batch instead of one per job.
    pub(super) fn finisher(&mut self) -> mpsc::UnboundedSender<QueueRef> {
        if let Some(tx) = &self.finished {
            return tx.clone();
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<QueueRef>();
        let (store, metrics, ctl) = (self.store_task(), self.metrics.clone(), self.tx.clone());
        self.server_rt.spawn(async move {
            let Ok(store) = store.await else { return };
            let mut batch = Vec::new();
            while rx.recv_many(&mut batch, 500).await > 0 {
                match store.done_many(&batch).await {
                    Ok(n) => {
                        metrics.done.add(n as i64);
                        if (n as usize) < batch.len() {
                            tracing::info!(
                                "jobs: {} finished server jobs were not recorded: a newer attempt owns them",
                                batch.len() - n as usize
                            );
                        }
                    }
                    Err(e) => tracing::error!(
                        "jobs: cannot record {} finished server jobs (they run again when their lease expires): {e}",
                        batch.len()
                    ),
                }
                batch.clear();
                let _ = ctl.send(Ctl::Wake);
            }
        });
        self.finished = Some(tx.clone());
        tx
    }

    /// The durable queue, opened (and its table created) on first use.
    pub(super) fn store_task(&self) -> impl std::future::Future<Output = Result<Store, JobError>> {
        let (cell, cfg) = (self.store.clone(), self.cfg.clone());
        async move {
            cell.get_or_try_init(|| async { Store::open(&cfg).await })
                .await
                .cloned()
        }
    }

    /// Claims due jobs for the free local slots and server job places, at most one round at a
    /// time (a wake-up during a round runs another one after it).
    pub(super) fn claim(&mut self) {
        if self.stopping || !self.ready() {
            return;
        }
        if self.claiming {
            self.claim_again = true;
            return;
        }
        let waiting_local = self
            .queue
            .waiting()
            .filter(|j| j.kind == JobType::Local)
            .count();
        let n_local = if waiting_local < 64 {
            self.free_slots()
        } else {
            0
        };
        let server_busy = self.runs.values().filter(|r| r.task.is_some()).count()
            + self
                .queue
                .waiting()
                .filter(|j| j.kind == JobType::Server)
                .count();
        let n_server =
            (self.cfg.int("jobs-server-concurrency").max(1) as usize).saturating_sub(server_busy);
        self.last_claim = Instant::now();
        if n_local == 0 && n_server == 0 {
            return;
        }
        self.claiming = true;
        let (store, tx, node, metrics) = (
            self.store_task(),
            self.tx.clone(),
            self.node.clone(),
            self.metrics.clone(),
        );
        let lease = self.cfg.duration("jobs-lease");
        self.server_rt.spawn(async move {
            let r: Result<Vec<Job>, JobError> = async {
                let store = store.await?;
                let mut out = Vec::new();
                for (kind, n) in [(JobType::Server, n_server), (JobType::Local, n_local)] {
                    for c in store.claim(&node, &node, kind, n, lease).await? {
                        metrics
                            .lag
                            .update((bkjs_base::time::now_ms() - c.run_at).max(0) as f64);
                        out.push(c.job);
                    }
                }
                Ok(out)
            }
            .await;
            let jobs = r.unwrap_or_else(|e| {
                tracing::warn!("jobs: claim: {e}");
                Vec::new()
            });
            let _ = tx.send(Ctl::Claimed(jobs));
        });
    }

    /// Heartbeats for the claimed jobs this master runs itself or holds waiting (a job worker
    /// sends its own), the requeue of expired leases, and the pruning of old rows.
    pub(super) fn leases(&mut self) {
        let lease = self.cfg.duration("jobs-lease");
        if self.last_heartbeat.elapsed() >= lease / 3 {
            self.last_heartbeat = Instant::now();
            let mine: Vec<QueueRef> = self
                .runs
                .values()
                .filter(|r| r.task.is_some())
                .map(|r| &r.job)
                .chain(self.queue.waiting())
                .filter_map(|j| j.queued)
                .collect();
            if !mine.is_empty() {
                let store = self.store_task();
                self.server_rt.spawn(async move {
                    let Ok(store) = store.await else { return };
                    for q in mine {
                        match store.heartbeat(q.id, q.attempt, lease).await {
                            Ok(true) => {}
                            Ok(false) => tracing::warn!(
                                "job {} attempt {}: its lease was lost (it runs again elsewhere)",
                                q.id,
                                q.attempt
                            ),
                            Err(e) => tracing::warn!("jobs: heartbeat: {e}"),
                        }
                    }
                });
            }
        }
        let every = (lease / 4).max(Duration::from_millis(100));
        if !self.reaping && self.ready() && self.last_reap.elapsed() >= every {
            self.last_reap = Instant::now();
            self.reaping = true;
            let prune = self.last_prune.elapsed() >= Duration::from_secs(600);
            if prune {
                self.last_prune = Instant::now();
            }
            let keep = self.cfg.duration("jobs-keep");
            let (store, tx, metrics) = (self.store_task(), self.tx.clone(), self.metrics.clone());
            self.server_rt.spawn(async move {
                if let Ok(store) = store.await {
                    match store.requeue_expired().await {
                        Ok(rows) => {
                            for (id, name, state) in &rows {
                                metrics.failure(Some(state.as_str()));
                                tracing::warn!("job {name} ({id}): its lease expired; now {state}");
                            }
                            if !rows.is_empty() {
                                let _ = tx.send(Ctl::Wake);
                            }
                        }
                        Err(e) => tracing::warn!("jobs: lease check: {e}"),
                    }
                    if prune {
                        match store.prune(keep).await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!("jobs: {n} finished jobs deleted"),
                            Err(e) => tracing::warn!("jobs: prune: {e}"),
                        }
                    }
                }
                let _ = tx.send(Ctl::Reaped);
            });
        }
    }

    /// Records a failed attempt (fenced) with its backoff, and logs what the job became.
    pub(super) fn record_failure(&self, name: String, q: QueueRef, why: String) {
        let delay = store::backoff(
            q.attempt,
            self.cfg.duration("jobs-backoff"),
            self.cfg.duration("jobs-backoff-max"),
        );
        let (store, metrics, tx) = (self.store_task(), self.metrics.clone(), self.tx.clone());
        self.server_rt.spawn(async move {
            let r = async {
                let store = store.await?;
                if let Some((state, at)) = store.failed(q.id, q.attempt, &why, delay).await? {
                    return Ok((Some(state), Some(at), true));
                }
                // The job worker recorded its own failure (its metrics die with it): what it
                // made of the job is read back, so a job it buried counts as dead here too,
                // and its next attempt's time is known.
                let Some(j) = store.get(q.id).await? else {
                    return Ok((None, None, false));
                };
                if j["attempts"] != json!(q.attempt) {
                    return Ok((None, None, false));
                }
                let at = (j["state"] == json!("queued")).then(|| j["run_at"].as_i64().unwrap_or(0));
                let buried = j["state"] == json!("dead");
                Ok::<_, JobError>((buried.then(|| "dead".to_string()), at, false))
            }
            .await;
            match r {
                Ok((state, at, here)) => {
                    metrics.failure(state.as_deref());
                    if let Some(at) = at.filter(|_| state.as_deref() != Some("dead")) {
                        let _ = tx.send(Ctl::Heard(store::listen::Heard::Due(at)));
                    }
                    if let (Some(state), true) = (state, here) {
                        tracing::warn!(
                            "job {name} ({}) attempt {} failed: {why}; now {state}",
                            q.id,
                            q.attempt
                        );
                    }
                }
                Err(e) => tracing::error!("job {name} ({}): cannot record its failure: {e}", q.id),
            }
        });
    }
}
