//! `/system/*`: rolling restart and the cache (admin-only once authentication exists; until then
//! reachable where `-api-allow-path` allows).

use crate::api::params::Params;
use crate::api::router::{error, ok, Api, Reply};
use crate::cache::Cache;
use crate::ipc::Msg;
use hyper::StatusCode;
use serde_json::json;

/// Dispatches `/system/...`; `None` for a path that is not one of these endpoints.
pub async fn handle(api: &Api, path: &str, params: &Params) -> Option<Reply> {
    Some(match path {
        "/system/restart" => restart(api).await,
        _ => match path.strip_prefix("/system/cache/") {
            Some(op) => cache(api, op, params).await?,
            None => return None,
        },
    })
}

async fn restart(api: &Api) -> Reply {
    let Some(ipc) = &api.ipc else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no server to restart");
    };
    match ipc
        .request(Msg::Restart {
            pid: std::process::id(),
        })
        .await
    {
        Ok(Msg::Ok) => ok(json!({})),
        Ok(other) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("unexpected reply {other:?}"),
        ),
        Err(e) => {
            tracing::error!("/system/restart: {e}");
            error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
        }
    }
}

fn name(params: &Params) -> Result<String, Reply> {
    match params.get("name") {
        Some(n) if !n.is_empty() => Ok(n.to_string()),
        _ => Err(error(StatusCode::BAD_REQUEST, "name is required")),
    }
}

fn failed(op: &str, e: crate::cache::CacheError) -> Reply {
    tracing::error!("cache {op}: {e}");
    error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
}

async fn cache(api: &Api, op: &str, params: &Params) -> Option<Reply> {
    let Some(cache) = &api.cache else {
        return Some(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no cache in this process",
        ));
    };
    Some(match run(cache, op, params).await? {
        Ok(r) | Err(r) => r,
    })
}

async fn run(cache: &Cache, op: &str, params: &Params) -> Option<Result<Reply, Reply>> {
    let r = match op {
        "stats" => match cache.stats().await {
            Ok(s) => Ok(ok(json!(s))),
            Err(e) => Err(failed(op, e)),
        },
        "keys" => match cache
            .keys(params.get("name").unwrap_or("").to_string())
            .await
        {
            Ok(keys) => Ok(ok(json!({"count": keys.len(), "data": keys}))),
            Err(e) => Err(failed(op, e)),
        },
        "get" => {
            let names: Vec<String> = params
                .all("name")
                .into_iter()
                .filter(|n| !n.is_empty())
                .collect();
            if names.is_empty() {
                return Some(Err(error(StatusCode::BAD_REQUEST, "name is required")));
            }
            let many = names.len() > 1;
            let values = cache.get(names).await;
            Ok(ok(if many {
                // Several names: one value (or null) per name, in order.
                json!({ "value": values })
            } else {
                match values.into_iter().next().flatten() {
                    Some(v) => json!({ "value": v }),
                    None => json!({}),
                }
            }))
        }
        "put" | "set" => {
            let key = match name(params) {
                Ok(k) => k,
                Err(r) => return Some(Err(r)),
            };
            let value = params.get("value").unwrap_or("").to_string();
            match cache.put(key, value).await {
                Ok(()) => Ok(ok(json!({}))),
                Err(e) => Err(failed(op, e)),
            }
        }
        "incr" => {
            let key = match name(params) {
                Ok(k) => k,
                Err(r) => return Some(Err(r)),
            };
            let delta = match params.get("value").filter(|v| !v.is_empty()) {
                None => 1,
                Some(v) => match v.trim().parse::<i64>() {
                    Ok(d) => d,
                    Err(_) => {
                        return Some(Err(error(
                            StatusCode::BAD_REQUEST,
                            &format!("value must be an integer, not {v:?}"),
                        )))
                    }
                },
            };
            match cache.incr(key, delta).await {
                Ok(v) => Ok(ok(json!({ "value": v }))),
                Err(e) => Err(failed(op, e)),
            }
        }
        "del" => {
            let key = match name(params) {
                Ok(k) => k,
                Err(r) => return Some(Err(r)),
            };
            match cache.del(key).await {
                Ok(()) => Ok(ok(json!({}))),
                Err(e) => Err(failed(op, e)),
            }
        }
        "exists" => {
            let key = match name(params) {
                Ok(k) => k,
                Err(r) => return Some(Err(r)),
            };
            match cache.exists(key).await {
                Ok(b) => Ok(ok(json!({ "value": b }))),
                Err(e) => Err(failed(op, e)),
            }
        }
        "clear" => match cache.clear().await {
            Ok(()) => Ok(ok(json!({}))),
            Err(e) => Err(failed(op, e)),
        },
        _ => return None,
    };
    Some(r)
}
