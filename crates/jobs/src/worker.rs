//! The job worker role (`-worker`): started by the master for one job (in `_BKJS_JOB`), titled
//! `bkjs: worker NAME`; it drops privileges like a web worker, opens the database pools (and
//! reaches the server's cache when one runs), runs the job's handler and exits: 0 when the job
//! succeeded, 1 when it failed (the reason is logged here; the master logs the exit).

use super::master::JOB_ENV;
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
        let ctx = JobContext {
            name: job.name.clone(),
            args: job.args.clone(),
            cfg,
            db,
        };
        match handler(ctx).await {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!("job {} failed: {e}", job.name);
                1
            }
        }
    })
}
