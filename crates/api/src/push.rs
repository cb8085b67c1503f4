//! The push path: what `_notify=1` of `/message/add` and `/connection/add` queues, and the
//! `push.send` job that delivers it (docs/api.md, "Push notifications").
//!
//! A notification to an account is one job in the durable queue, answered only once it is
//! committed; the job fans out into one `push.send` job per device of the account
//! (`bk_account.device_id`, see `bkjs_push::Device`), so a device whose service throttles or
//! fails is retried with the queue's backoff without sending twice to the others. A token the
//! service reports gone is removed from the account; a message the service refuses for good is
//! logged and counted, not retried. The services are configured once per process, from the first
//! job's configuration (the master validated it at start).

use bkjs_base::config::Config;
use bkjs_db::{Options, Row};
use bkjs_jobs::{JobContext, JobError, JobType, Registry};
use bkjs_push::{Device, Notification, Push, SendError};
use serde_json::{json, Value};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The job's name.
pub const JOB: &str = "push.send";

/// Attempts of one device's send before the job is dead (about a day with the queue's backoff).
const MAX_ATTEMPTS: i64 = 15;

static SERVICES: OnceLock<Result<Option<Arc<Push>>, String>> = OnceLock::new();

/// The push services of this process; a configuration error is kept and reported by every job.
pub fn services(cfg: &Config) -> Result<Option<Arc<Push>>, String> {
    SERVICES
        .get_or_init(|| {
            Push::from_config(cfg)
                .map(|p| p.map(Arc::new))
                .map_err(|e| e.to_string())
        })
        .clone()
}

/// Checks the push configuration at start: a missing or malformed key stops the process.
pub fn check_config(cfg: &Config) -> Result<(), String> {
    Push::from_config(cfg)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Registers the `push.send` job.
pub fn register(reg: &mut Registry) -> Result<(), JobError> {
    reg.add(JOB, run)
}

/// What a notification says, for the job's arguments.
pub(crate) fn spec(to: &str, unique: &str, n: &Notification) -> Value {
    json!({JOB: {
        "account": to,
        "title": n.title,
        "body": n.body,
        "data": n.data,
        "collapse_id": n.collapse_id,
        "urgent": n.urgent,
        "unique": unique,
        "max_attempts": MAX_ATTEMPTS,
    }})
}

/// Queues a notification to account `to` (the write it reports is stored already): an error to
/// queue is logged, and the reply does not change.
pub(crate) async fn notify(cfg: &Config, to: &str, unique: &str, n: Notification) {
    if let Err(e) = bkjs_jobs::control::enqueue(cfg, spec(to, unique, &n), JobType::Server).await {
        tracing::warn!("push: cannot queue the notification to {to}: {e}");
    }
}

fn notification(args: &Value) -> Notification {
    let s = |k: &str| {
        args.get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    Notification {
        title: s("title"),
        body: s("body"),
        data: args
            .get("data")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        collapse_id: args
            .get("collapse_id")
            .and_then(Value::as_str)
            .map(str::to_string),
        urgent: args.get("urgent").and_then(Value::as_bool).unwrap_or(true),
        ttl: args
            .get("ttl")
            .and_then(Value::as_u64)
            .map(Duration::from_secs),
        badge: args.get("badge").and_then(Value::as_i64),
        sound: args
            .get("sound")
            .and_then(Value::as_str)
            .map(str::to_string),
    }
}

fn key(id: &str) -> Row {
    let mut r = Row::new();
    r.insert("id".into(), json!(id));
    r
}

async fn devices_of(ctx: &JobContext, id: &str) -> Result<String, JobError> {
    Ok(ctx
        .db
        .get("bk_account", &key(id), &Options::default())
        .await?
        .and_then(|r| {
            r.get("device_id")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_default())
}

async fn run(ctx: JobContext) -> Result<(), JobError> {
    let Some(push) = services(&ctx.cfg).map_err(JobError::Failed)? else {
        tracing::warn!(
            "push: no push service is configured (-push-apns-key-file, -push-fcm-service-account, -push-vapid-key); notification dropped"
        );
        return Ok(());
    };
    let account = ctx
        .args
        .get("account")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| JobError::Bad("push.send needs account".into()))?
        .to_string();
    let Some(entry) = ctx.args.get("device").and_then(Value::as_str) else {
        return fan_out(&ctx, &account).await;
    };
    let device = match Device::parse(entry) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!("push: account {account}: device {entry:?}: {e}; not sent");
            return Ok(());
        }
    };
    let r = push.send(&device, &notification(&ctx.args)).await;
    let outcome = match &r {
        Ok(()) => "push.sent",
        Err(SendError::Gone(_)) => "push.gone",
        Err(SendError::Retry { .. }) => "push.retried",
        Err(_) => "push.rejected",
    };
    bkjs_base::metrics::Registry::global()
        .counter(outcome)
        .inc();
    match r {
        Ok(()) => Ok(()),
        Err(SendError::Gone(why)) => {
            tracing::info!(
                "push: account {account}: {why}; the device is removed from the account"
            );
            remove_device(&ctx, &account, entry).await
        }
        Err(e @ SendError::Retry { .. }) => Err(JobError::failed(format!(
            "account {account}, {} device: {e}",
            device.service.name()
        ))),
        Err(e) => {
            tracing::error!(
                "push: account {account}, {} device: {e}; not retried",
                device.service.name()
            );
            Ok(())
        }
    }
}

/// One job per device of the account, each with the notification.
async fn fan_out(ctx: &JobContext, account: &str) -> Result<(), JobError> {
    let devices = devices_of(ctx, account).await?;
    let unique = ctx
        .args
        .get("unique")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("{}:{}", account, ctx.id));
    let mut jobs = Vec::new();
    for (i, d) in Device::parse_list(&devices).into_iter().enumerate() {
        match d {
            Ok(d) => {
                let mut args = ctx.args.clone();
                args["device"] = json!(d.entry);
                args["unique"] = json!(format!("{unique}:{i}"));
                jobs.push(json!({JOB: args}));
            }
            Err(e) => tracing::warn!("push: account {account}: a device entry is skipped: {e}"),
        }
    }
    if jobs.is_empty() {
        return Ok(());
    }
    bkjs_jobs::control::enqueue(&ctx.cfg, Value::Array(jobs), JobType::Server)
        .await
        .map(|_| ())
}

/// Drops `entry` from the account's devices (re-read, so a device added meanwhile stays).
async fn remove_device(ctx: &JobContext, account: &str, entry: &str) -> Result<(), JobError> {
    let devices = devices_of(ctx, account).await?;
    let left = bkjs_push::remove_entry(&devices, entry);
    if left == devices {
        return Ok(());
    }
    let mut row = key(account);
    row.insert("device_id".into(), json!(left));
    ctx.db
        .update("bk_account", &row, &Options::default())
        .await
        .map(|_| ())
        .or_else(|e| match e {
            bkjs_db::DbError::NotFound => Ok(()),
            e => Err(e.into()),
        })
}
