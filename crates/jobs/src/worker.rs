//! The job worker role (`-worker`): started by the master for one job (in `_BKJS_JOB`), titled
//! `bkjs: worker NAME`; it drops privileges like a web worker, opens the database pools (and
//! reaches the server's cache when one runs), runs the job's handler and exits: 0 when the job
//! succeeded, 1 when it failed (the reason is logged here; the master logs the exit). A job from
//! the durable queue extends its lease while it runs and records its own result, fenced by its
//! attempt number.

use super::master::JOB_ENV;
use super::store::Store;
use super::{Job, JobContext, Registry};
use bkjs_base::config::Config;
use bkjs_base::sys::Boot;
use std::sync::Arc;

/// Runs the job this process was started for; returns the exit code.
pub fn run_worker(
    cfg: Config,
    _boot: &Boot,
    tables: Vec<bkjs_db::Table>,
    registry: Arc<Registry>,
) -> i32 {
    let job: Job = match std::env::var(JOB_ENV)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(j) => j,
        Err(e) => {
            tracing::error!("a job worker is started by the master with its job in {JOB_ENV}: {e}");
            return bkjs_base::config::EXIT_USAGE;
        }
    };
    // The seal key file belongs to the user the tree started as.
    if let Err(e) = bkjs_db::seal::SealKey::preload(&cfg) {
        tracing::error!("cannot load the seal key: {e}");
        return bkjs_base::sys::EXIT_BOOT;
    }
    if let Err(e) = bkjs_base::sys::drop_privileges(&cfg) {
        tracing::error!("cannot drop privileges: {e}");
        return bkjs_base::sys::EXIT_BOOT;
    }
    let Some(handler) = registry.get(&job.name) else {
        tracing::error!("job {}: no such job is registered", job.name);
        return 1;
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return bkjs_base::sys::EXIT_BOOT;
        }
    };
    rt.block_on(async move {
        // Writes invalidate the server's cache like a web worker's would, when a server runs.
        let with_cache = cfg.str("cache-type") != "local" || bkjs_ipc::hub_path(&cfg).exists();
        let db = match super::open_db(&cfg, tables, with_cache).await {
            Ok(db) => Arc::new(db),
            Err(e) => {
                tracing::error!("job {}: cannot open the database: {e}", job.name);
                return 1;
            }
        };
        // The queue row: heartbeats while the handler runs, then the result, fenced by the
        // attempt (a worker that was stopped past its lease cannot overwrite a newer attempt).
        let queued = match job.queued {
            Some(q) => match Store::open_existing(&cfg).await {
                Ok(s) => Some((s, q)),
                Err(e) => {
                    tracing::error!("job {}: {e}", job.name);
                    return 1;
                }
            },
            None => None,
        };
        let lease = cfg.duration("jobs-lease");
        let beat = queued.clone().map(|(store, q)| {
            let name = job.name.clone();
            tokio::spawn(async move {
                // The first beat at once: the claim's lease started before this process did.
                let mut first = true;
                loop {
                    if !first {
                        tokio::time::sleep(lease / 3).await;
                    }
                    first = false;
                    match store.heartbeat(q.id, q.attempt, lease).await {
                        Ok(true) => {}
                        Ok(false) => tracing::warn!(
                            "job {name} ({}) attempt {}: the lease was lost; a newer attempt owns the job",
                            q.id,
                            q.attempt
                        ),
                        Err(e) => tracing::warn!("job {name}: heartbeat: {e}"),
                    }
                }
            })
        });
        let backoff = (cfg.duration("jobs-backoff"), cfg.duration("jobs-backoff-max"));
        let ctx = JobContext {
            name: job.name.clone(),
            args: job.args.clone(),
            cfg,
            db,
            id: job.queued.map_or(0, |q| q.id),
            attempt: job.queued.map_or(0, |q| q.attempt),
        };
        let r = handler(ctx).await;
        if let Some(b) = beat {
            b.abort();
        }
        let Some((store, q)) = queued else {
            return match r {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!("job {} failed: {e}", job.name);
                    1
                }
            };
        };
        match r {
            Ok(()) => match store.done(q.id, q.attempt).await {
                Ok(true) => 0,
                Ok(false) => {
                    tracing::warn!(
                        "job {} ({}) attempt {} finished, but a newer attempt owns the job: its result is not recorded",
                        job.name,
                        q.id,
                        q.attempt
                    );
                    0
                }
                Err(e) => {
                    tracing::error!("job {} ({}): cannot record that it is done: {e}", job.name, q.id);
                    1
                }
            },
            Err(e) => {
                tracing::error!("job {} ({}) attempt {} failed: {e}", job.name, q.id, q.attempt);
                let delay = super::store::backoff(q.attempt, backoff.0, backoff.1);
                if let Err(e) = store.failed(q.id, q.attempt, &e.to_string(), delay).await {
                    tracing::error!("job {} ({}): cannot record its failure: {e}", job.name, q.id);
                }
                1
            }
        }
    })
}
