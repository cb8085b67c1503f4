//! The PostgreSQL wake-up of idle masters (docs/jobs.md, "Wake-up"): every statement that makes a
//! job due (an enqueue, a retry) also runs `pg_notify` on the queue's channel, delivered at
//! commit, with the earliest `run_at` it queued as payload; each master keeps one connection of
//! its own that LISTENs on that channel and hands the times to the master's loop, so a job queued
//! on any node starts within milliseconds while the poll of the table is only a slow fallback
//! (`-jobs-poll-fallback`). A dropped connection is logged and made again with a growing delay;
//! meanwhile the master polls every `-jobs-poll-interval`.

use bkjs_base::config::Config;
use futures_util::StreamExt;
use std::time::Duration;
use tokio_postgres::{AsyncMessage, NoTls};

/// The channel of the queue in the schema the connection works in: nodes that share the table
/// share the channel (the channel namespace is per database, so the schema is part of it).
pub(super) const CHANNEL_SQL: &str = "'bk_job_queue.' || current_schema()";

/// What the listener tells the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Heard {
    /// Listening (again): notifications arrive; the poll may slow down.
    Up,
    /// The connection dropped or cannot be made: poll every `-jobs-poll-interval`.
    Down,
    /// Jobs were queued; the earliest is due at this time (ms).
    Due(i64),
}

/// How often the listening connection is checked (a server that vanished without closing it).
const PING: Duration = Duration::from_secs(10);

/// Runs until `tx` is closed: connects, LISTENs, forwards notifications; after a failure,
/// reports `Down`, waits (1 s doubling to 30 s) and connects again. `node` names the
/// connection (`application_name`), so an operator can tell the listeners apart.
pub(crate) async fn run(cfg: Config, node: String, tx: impl Fn(Heard) -> bool) {
    let mut delay = Duration::from_secs(1);
    let mut was_up = false;
    let mut failures = 0u32;
    loop {
        match session(&cfg, &node, &tx, &mut was_up).await {
            Ok(()) => return,
            Err(e) => {
                if !tx(Heard::Down) {
                    return;
                }
                failures += 1;
                if was_up {
                    tracing::warn!(
                        "jobs: the LISTEN connection to PostgreSQL dropped ({e}); polling every {} until it is back",
                        humantime::format_duration(cfg.duration("jobs-poll-interval"))
                    );
                    was_up = false;
                    delay = Duration::from_secs(1);
                } else if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(
                        "jobs: cannot LISTEN on PostgreSQL ({e}; try {failures}); polling every {}",
                        humantime::format_duration(cfg.duration("jobs-poll-interval"))
                    );
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// One connection: Ok when the master is gone (`tx` closed), Err when the connection failed.
async fn session(
    cfg: &Config,
    node: &str,
    tx: &impl Fn(Heard) -> bool,
    was_up: &mut bool,
) -> Result<(), String> {
    let mut pg: tokio_postgres::Config = cfg
        .str("db-pgsql-pool")
        .parse()
        .map_err(|e| format!("bad -db-pgsql-pool: {e}"))?;
    pg.connect_timeout(Duration::from_secs(5));
    let name: String = format!("bkjs jobs listen {node}")
        .chars()
        .take(63)
        .collect();
    pg.application_name(&name);
    let schema = cfg.str("db-pgsql-schema");
    if !schema.is_empty() {
        let opts = match pg.get_options() {
            Some(o) if !o.trim().is_empty() => format!("{o} -c search_path={schema}"),
            _ => format!("-c search_path={schema}"),
        };
        pg.options(opts);
    }
    let (client, mut conn) = pg.connect(NoTls).await.map_err(|e| e.to_string())?;
    let (heard_tx, mut heard) = tokio::sync::mpsc::unbounded_channel::<Heard>();
    // The connection is driven by its own task, which forwards notifications; it ends with the
    // connection's error (or None when it closed cleanly).
    let mut driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) => {
                    let due = n.payload().trim().parse().unwrap_or(0);
                    if heard_tx.send(Heard::Due(due)).is_err() {
                        return None;
                    }
                }
                Ok(_) => {}
                Err(e) => return Some(e.to_string()),
            }
        }
        Some("the server closed the connection".to_string())
    });
    let channel = client
        .query_one(&format!("SELECT {CHANNEL_SQL}"), &[])
        .await
        .map_err(|e| e.to_string())?
        .try_get::<_, String>(0)
        .map_err(|e| e.to_string())?;
    client
        .batch_execute(&format!("LISTEN \"{}\"", channel.replace('"', "\"\"")))
        .await
        .map_err(|e| e.to_string())?;
    if !tx(Heard::Up) {
        return Ok(());
    }
    tracing::info!("jobs: listening for queued jobs on PostgreSQL channel {channel}");
    *was_up = true;
    let mut ping = tokio::time::interval(PING);
    ping.tick().await;
    loop {
        tokio::select! {
            h = heard.recv() => match h {
                Some(h) => if !tx(h) { return Ok(()) },
                // The driver task ended: its result says why.
                None => return Err((&mut driver).await.ok().flatten()
                    .unwrap_or_else(|| "the connection ended".into())),
            },
            end = &mut driver => {
                return Err(end.ok().flatten().unwrap_or_else(|| "the connection ended".into()));
            }
            _ = ping.tick() => {
                match tokio::time::timeout(PING, client.simple_query("")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(e.to_string()),
                    Err(_) => return Err(format!("no answer within {PING:?}")),
                }
            }
        }
    }
}
