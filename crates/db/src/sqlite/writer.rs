//! Group commit for the SQLite driver (docs/data.md, "Durability and group commit"): one writer
//! thread per process owns the write connection and runs every queued write of the process in
//! one `BEGIN IMMEDIATE ... COMMIT`, each write under its own `SAVEPOINT` so that a failing write
//! (a duplicate `add`, a constraint) fails only its own caller. Callers get their result only
//! after `COMMIT` returned, so an answered write is as durable as before. A write that finds the
//! writer idle is flushed at once, alone; writes that arrive while a flush runs are queued and go
//! together into the next one (at most `max` of them; with a `delay`, the writer waits up to that
//! long for more while writes keep arriving concurrently).

use super::{execute, map_err, read_rows, NO_WAIT};
use crate::error::DbError;
use crate::schema::ColumnType;
use crate::sql::{self, Sql};
use crate::types::Res;
use parking_lot::{Condvar, Mutex};
use rusqlite::Connection;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// One write, its SQL already built on the caller's thread.
pub(crate) enum Op {
    /// A statement; the function turns its affected row count into the result.
    Exec(Sql, fn(u64) -> Result<Res, DbError>),
    /// `incr`: the upsert, then the resulting row read back in the same transaction.
    Incr {
        write: Sql,
        get: Sql,
        /// Name and type of each column `get` returns, in order.
        cols: Vec<(String, ColumnType)>,
    },
}

impl Op {
    /// Runs the write on `conn` (inside a transaction or savepoint the caller manages).
    pub(crate) fn run(&self, conn: &Connection) -> Result<Res, DbError> {
        match self {
            Op::Exec(s, finish) => finish(execute(conn, s)?),
            Op::Incr { write, get, cols } => {
                let affected = execute(conn, write)?;
                let mut stmt = conn.prepare_cached(&get.text).map_err(map_err)?;
                let mut rows = read_rows(&mut stmt, &get.params, cols.len(), |i| {
                    (cols[i].0.as_str(), Some(cols[i].1))
                })?;
                rows.truncate(1);
                Ok(Res {
                    rows,
                    ..sql::written(affected)
                })
            }
        }
    }
}

/// How writes are grouped (`-db-sqlite-batch-max`, `-db-sqlite-batch-delay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Writes per transaction at most; 0 turns group commit off (every write commits alone on a
    /// pool connection, as before).
    pub max: usize,
    /// How long a flush waits for more writes when the one before it held several (writes are
    /// arriving concurrently); never spent on a write that arrives alone.
    pub delay: Duration,
}

impl Default for Batching {
    fn default() -> Batching {
        Batching {
            max: 256,
            delay: Duration::ZERO,
        }
    }
}

type Reply = oneshot::Sender<Result<Res, DbError>>;

/// What [`Writer::write`] did with a write.
pub(crate) enum Done {
    /// Committed (or failed) on the caller's thread.
    Now(Result<Res, DbError>),
    /// Queued: the result arrives once the writer thread's transaction holding it ended.
    Later(oneshot::Receiver<Result<Res, DbError>>),
}

struct Queue {
    jobs: VecDeque<(Op, Reply)>,
    /// The write connection while nobody flushes; taken by the flusher (a caller writing alone
    /// or the writer thread).
    conn: Option<Connection>,
    /// The writer sleeps on `ready`: a new job must wake it (a wake is a system call, skipped
    /// while the writer is busy flushing).
    asleep: bool,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    /// Transactions committed (or failed) so far, and the writes they held.
    flushes: AtomicU64,
    writes: AtomicU64,
}

/// The writer thread of one [`super::SqliteDriver`]; stopped (after draining its queue) on drop.
pub(crate) struct Writer {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Group-commit counters: transactions run and writes they held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupStats {
    pub flushes: u64,
    pub writes: u64,
    /// Writes queued and not yet taken into a flush.
    pub queued: usize,
}

impl Writer {
    /// Starts the writer thread on `conn`, the connection it alone writes with.
    pub(crate) fn start(conn: Connection, batching: Batching) -> Result<Writer, DbError> {
        conn.busy_handler(Some(busy_wait)).map_err(map_err)?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                conn: Some(conn),
                asleep: false,
                closed: false,
            }),
            ready: Condvar::new(),
            flushes: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(&s, batching))
            .map_err(|e| DbError::Driver(format!("sqlite writer thread: {e}")))?;
        Ok(Writer {
            shared,
            thread: Some(thread),
        })
    }

    /// Runs `op`: committed alone on this thread when the write connection is idle and nothing is
    /// queued ([`Done::Now`]), otherwise queued for the writer thread ([`Done::Later`]). On a
    /// runtime thread ([`NO_WAIT`]) a lock held by another process is not waited for: the write
    /// then goes to the writer thread too.
    pub(crate) fn write(&self, op: Op) -> Done {
        let mut q = self.shared.queue.lock();
        if q.jobs.is_empty() && !q.closed {
            if let Some(conn) = q.conn.take() {
                drop(q);
                let r = flush_one(&conn, &op);
                let busy = matches!(r, Err(DbError::Busy(_))) && NO_WAIT.get();
                let mut q = self.shared.queue.lock();
                q.conn = Some(conn);
                if !busy {
                    self.shared.flushes.fetch_add(1, Ordering::Relaxed);
                    self.shared.writes.fetch_add(1, Ordering::Relaxed);
                    // Writes queued meanwhile: the writer thread flushes them now.
                    let wake = !q.jobs.is_empty() && q.asleep;
                    drop(q);
                    if wake {
                        self.shared.ready.notify_one();
                    }
                    return Done::Now(r);
                }
                // Nothing was written (the lock was taken): the writer thread waits for it.
                return Done::Later(self.enqueue(q, op));
            }
        }
        Done::Later(self.enqueue(q, op))
    }

    /// Queues `op` for the writer thread, whatever the connection is doing.
    pub(crate) fn enqueue_only(&self, op: Op) -> oneshot::Receiver<Result<Res, DbError>> {
        self.enqueue(self.shared.queue.lock(), op)
    }

    fn enqueue(
        &self,
        mut q: parking_lot::MutexGuard<'_, Queue>,
        op: Op,
    ) -> oneshot::Receiver<Result<Res, DbError>> {
        let (tx, rx) = oneshot::channel();
        if q.closed {
            drop(q);
            let _ = tx.send(Err(DbError::Driver("sqlite writer stopped".into())));
            return rx;
        }
        q.jobs.push_back((op, tx));
        let wake = q.asleep && q.conn.is_some();
        drop(q);
        if wake {
            self.shared.ready.notify_one();
        }
        rx
    }

    pub(crate) fn stats(&self) -> GroupStats {
        GroupStats {
            flushes: self.shared.flushes.load(Ordering::Relaxed),
            writes: self.shared.writes.load(Ordering::Relaxed),
            queued: self.shared.queue.lock().jobs.len(),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shared.queue.lock().closed = true;
        self.shared.ready.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The busy handler of the write connection: another process (the other web worker) holds the
/// write lock for a few hundred microseconds at most, so poll briefly first instead of SQLite's
/// default first sleep of a whole millisecond; give up after about 5 s (`DbError::Busy`). A
/// runtime thread does not wait at all.
fn busy_wait(n: i32) -> bool {
    if NO_WAIT.get() {
        // A runtime thread writing alone: the writer thread will wait instead.
        return false;
    }
    let pause = match n {
        0..=49 => Duration::from_micros(20),
        50..=199 => Duration::from_micros(200),
        200..=2700 => Duration::from_millis(2),
        _ => return false,
    };
    std::thread::sleep(pause);
    true
}

/// The writer thread: when the connection is free and writes are queued, take them, flush them
/// in one transaction, answer, repeat.
fn run(shared: &Shared, b: Batching) {
    let max = b.max.max(1);
    let mut batch: Vec<(Op, Reply)> = Vec::with_capacity(max.min(1024));
    let mut company = false;
    loop {
        let conn = {
            let mut q = shared.queue.lock();
            while q.jobs.is_empty() || q.conn.is_none() {
                if q.closed && q.jobs.is_empty() {
                    return;
                }
                q.asleep = true;
                shared.ready.wait(&mut q);
                q.asleep = false;
            }
            if company && !b.delay.is_zero() {
                let deadline = Instant::now() + b.delay;
                while q.jobs.len() < max && !q.closed {
                    q.asleep = true;
                    let waited = shared.ready.wait_until(&mut q, deadline);
                    q.asleep = false;
                    if waited.timed_out() {
                        break;
                    }
                }
            }
            let n = q.jobs.len().min(max);
            batch.extend(q.jobs.drain(..n));
            q.conn.take()
        };
        let Some(conn) = conn else {
            // Taken by a caller during the delay: its flush ends soon, then this one runs.
            for job in batch.drain(..).rev() {
                shared.queue.lock().jobs.push_front(job);
            }
            continue;
        };
        company = batch.len() > 1;
        let results = match flush(&conn, &batch) {
            Ok(r) => r,
            Err(e) => {
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                vec![Err(e); batch.len()]
            }
        };
        shared.queue.lock().conn = Some(conn);
        shared.flushes.fetch_add(1, Ordering::Relaxed);
        shared
            .writes
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        for ((_, reply), r) in batch.drain(..).zip(results) {
            let _ = reply.send(r);
        }
    }
}

/// One write alone: a single statement commits by itself (autocommit, as without group commit);
/// an `incr` (a write and a read) gets a transaction.
fn flush_one(conn: &Connection, op: &Op) -> Result<Res, DbError> {
    if let Op::Exec(..) = op {
        return op.run(conn);
    }
    let r = (|| {
        control(conn, "BEGIN IMMEDIATE")?;
        let r = op.run(conn);
        abort_if_rolled_back(conn, &r)?;
        control(conn, "COMMIT")?;
        r
    })();
    if r.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    r
}

fn control(conn: &Connection, text: &str) -> Result<(), DbError> {
    conn.prepare_cached(text)
        .and_then(|mut s| s.execute([]))
        .map(|_| ())
        .map_err(map_err)
}

/// Runs `batch` in one transaction: the result of each write, or the error that failed the whole
/// transaction (then nothing of it was committed).
fn flush(conn: &Connection, batch: &[(Op, Reply)]) -> Result<Vec<Result<Res, DbError>>, DbError> {
    if let [(op, _)] = batch {
        return Ok(vec![flush_one(conn, op)]);
    }
    control(conn, "BEGIN IMMEDIATE")?;
    let mut out = Vec::with_capacity(batch.len());
    for (op, _) in batch {
        control(conn, "SAVEPOINT w")?;
        let r = op.run(conn);
        abort_if_rolled_back(conn, &r)?;
        if r.is_err() {
            control(conn, "ROLLBACK TO w")?;
        }
        control(conn, "RELEASE w")?;
        out.push(r);
    }
    control(conn, "COMMIT")?;
    Ok(out)
}

/// Some errors (I/O, a full disk) make SQLite roll the whole transaction back: then the batch
/// failed, with that error for every write in it.
fn abort_if_rolled_back(conn: &Connection, r: &Result<Res, DbError>) -> Result<(), DbError> {
    match r {
        Err(e) if conn.is_autocommit() => Err(e.clone()),
        _ => Ok(()),
    }
}
