//! The queue table's SQLite dialect: the DDL. The claim (`claim_sql` in mod.rs) is one
//! `UPDATE ... RETURNING` statement, which SQLite runs under its single writer lock (the
//! `BEGIN IMMEDIATE` of a one statement transaction), so one machine's masters and workers never
//! claim a row twice.

/// The statements creating the table and its indexes (each run alone, idempotent).
pub(super) const DDL: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS bk_job_queue (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        args TEXT NOT NULL DEFAULT '{}',
        kind TEXT NOT NULL DEFAULT 'local',
        state TEXT NOT NULL DEFAULT 'queued',
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL DEFAULT 20,
        run_at INTEGER NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0,
        unique_key TEXT UNIQUE,
        queue TEXT NOT NULL DEFAULT '',
        target TEXT NOT NULL DEFAULT '',
        one INTEGER NOT NULL DEFAULT 0,
        node TEXT,
        pid INTEGER,
        lease_until INTEGER,
        started INTEGER,
        error TEXT,
        ctime INTEGER NOT NULL,
        mtime INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS bk_job_queue_due ON bk_job_queue (kind, priority DESC, run_at, id) WHERE state = 'queued'",
    "CREATE INDEX IF NOT EXISTS bk_job_queue_lease ON bk_job_queue (lease_until) WHERE state = 'running'",
    "CREATE INDEX IF NOT EXISTS bk_job_queue_mtime ON bk_job_queue (mtime)",
];

/// SQLite numbers its placeholders `?N`.
pub(super) fn text(sql: &str) -> String {
    sql.replace('$', "?")
}
