//! Per-account quotas by account type (docs/security.md): a request rate (`-api-quota-rate`
//! requests per `-api-quota-window`, counted in the server's cache so that every worker of the
//! machine shares one count) and the bytes of `/file/*` storage an account may hold
//! (`-api-quota-storage`). Over either, the answer is 429 with a JSON message. Types are
//! `bk_auth.type` values; `*` stands for every type not listed; 0 or no entry means no quota.

use crate::auth::Account;
use crate::error::ApiError;
use bkjs_base::config::Config;
use hyper::StatusCode;
use serde_json::Value;
use std::path::Path;

/// The limit of `account`'s type in map parameter `name`, read by `parse` (`None`: no quota).
fn limit_of(
    cfg: &Config,
    name: &str,
    account: &Account,
    parse: fn(&str) -> Option<u64>,
) -> Option<u64> {
    let kind = account
        .auth
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("");
    let map = cfg.map(name);
    let find = |k: &str| map.iter().find(|(t, _)| t == k).map(|(_, v)| v.as_str());
    let text = find(kind).or_else(|| find("*"))?;
    match parse(text) {
        Some(0) => None,
        Some(n) => Some(n),
        None => {
            tracing::error!("-{name}: {text:?} for type {kind:?} is not a number: no quota");
            None
        }
    }
}

fn too_many(message: String) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, message)
}

/// Counts one request of `account` in the current window; 429 once over its type's rate. A cache
/// that cannot be reached does not refuse anybody (logged).
pub(crate) async fn check_rate(
    cfg: &Config,
    cache: Option<&bkjs_cache::Cache>,
    account: &Account,
) -> Result<(), ApiError> {
    let Some(max) = limit_of(cfg, "api-quota-rate", account, |t| t.trim().parse().ok()) else {
        return Ok(());
    };
    let Some(cache) = cache else {
        return Ok(());
    };
    let window = cfg.duration("api-quota-window").as_millis().max(1) as i64;
    let slot = bkjs_base::time::now_ms() / window;
    let key = format!("bk:quota:{}:{slot}", account.id());
    match cache.incr(key, 1).await {
        Ok(n) if n > max as i64 => {
            if n == max as i64 + 1 {
                tracing::info!(
                    "quota: account {} is over -api-quota-rate ({max} per {window} ms)",
                    account.id()
                );
            }
            Err(too_many(format!(
                "Too many requests: at most {max} per {} s for this account (-api-quota-rate)",
                window as f64 / 1000.0
            )))
        }
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::warn!("quota: cannot count a request of {}: {e}", account.id());
            Ok(())
        }
    }
}

/// The storage quota of `account`'s type, in bytes.
pub(crate) fn storage_limit(cfg: &Config, account: &Account) -> Option<u64> {
    limit_of(cfg, "api-quota-storage", account, |t| {
        bkjs_base::config::parse_size(t)
            .ok()
            .and_then(|n| u64::try_from(n).ok())
    })
}

/// Bytes of the regular files under `dir` (0 when it does not exist), leaving out `except`
/// (the file about to be replaced). Blocking: run it on the blocking pool.
pub(crate) fn usage(dir: &Path, except: &Path) -> u64 {
    let mut total = 0u64;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(path),
                Ok(t) if t.is_file() && path != except => {
                    total += e.metadata().map(|m| m.len()).unwrap_or(0);
                }
                _ => {}
            }
        }
    }
    total
}

/// Refuses storing `size` bytes at `path` under the owner's directory `dir` when the owner would
/// then hold more than the quota of `account`'s type.
pub(crate) async fn check_storage(
    cfg: &Config,
    account: &Account,
    dir: &Path,
    path: &Path,
    size: u64,
) -> Result<(), ApiError> {
    let Some(max) = storage_limit(cfg, account) else {
        return Ok(());
    };
    let (d, p) = (dir.to_path_buf(), path.to_path_buf());
    let used = tokio::task::spawn_blocking(move || usage(&d, &p))
        .await
        .map_err(|e| ApiError::internal(format!("storage quota: {e}")))?;
    if used.saturating_add(size) > max {
        tracing::info!(
            "quota: account {} would hold {} bytes, over -api-quota-storage ({max})",
            account.id(),
            used + size
        );
        return Err(too_many(format!(
            "Storage quota exceeded: {used} bytes stored, {size} more would pass {max} (-api-quota-storage)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_sums_the_files_below_a_directory_but_the_replaced_one() {
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path().join("owner");
        std::fs::create_dir_all(root.join("a/b")).expect("dirs");
        std::fs::write(root.join("x"), [0u8; 10]).expect("x");
        std::fs::write(root.join("a/b/y"), [0u8; 5]).expect("y");
        assert_eq!(usage(&root, Path::new("/nowhere")), 15);
        assert_eq!(usage(&root, &root.join("a/b/y")), 10, "the file replaced");
        assert_eq!(usage(&dir.path().join("missing"), Path::new("/")), 0);
    }
}
