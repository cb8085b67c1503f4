//! The queue table's PostgreSQL dialect: the DDL (partial indexes on what the master scans). The
//! claim (`claim_sql` in mod.rs) locks the rows it takes with `FOR UPDATE SKIP LOCKED` so that
//! several nodes claim disjoint batches without waiting on each other.

/// The statements creating the table and its indexes (each run alone, idempotent).
pub(super) const DDL: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS bk_job_queue (
        id BIGSERIAL PRIMARY KEY,
        name TEXT NOT NULL,
        args TEXT NOT NULL DEFAULT '{}',
        kind TEXT NOT NULL DEFAULT 'local',
        state TEXT NOT NULL DEFAULT 'queued',
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL DEFAULT 20,
        run_at BIGINT NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0,
        unique_key TEXT UNIQUE,
        queue TEXT NOT NULL DEFAULT '',
        target TEXT NOT NULL DEFAULT '',
        one INTEGER NOT NULL DEFAULT 0,
        node TEXT,
        pid INTEGER,
        lease_until BIGINT,
        started BIGINT,
        error TEXT,
        ctime BIGINT NOT NULL,
        mtime BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS bk_job_queue_due ON bk_job_queue (kind, priority DESC, run_at, id) WHERE state = 'queued'",
    "CREATE INDEX IF NOT EXISTS bk_job_queue_lease ON bk_job_queue (lease_until) WHERE state = 'running'",
    "CREATE INDEX IF NOT EXISTS bk_job_queue_mtime ON bk_job_queue (mtime)",
];

/// Placeholders are `$N` already.
pub(super) fn text(sql: &str) -> String {
    sql.to_string()
}
