//! `/system/*`: rolling restart and the cache (admin-only once authentication exists; until then
//! reachable where `-api-allow-path` allows).

use crate::api::Api;
use crate::params::Params;
use crate::reply::{error, ok, Reply};
use bkjs_cache::Cache;
use hyper::StatusCode;
use serde_json::{json, Value};

/// Dispatches `/system/...`; `None` for a path that is not one of these endpoints.
pub(crate) async fn handle(api: &Api, path: &str, params: &Params) -> Option<Reply> {
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
        .request(bkjs_ipc::Request::Restart {
            pid: std::process::id(),
        })
        .await
    {
        Ok(bkjs_ipc::Reply::Ok) => ok(json!({})),
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

/// A refusal: the status and the message the client gets.
struct Refusal(StatusCode, String);

impl Refusal {
    fn bad(msg: impl Into<String>) -> Refusal {
        Refusal(StatusCode::BAD_REQUEST, msg.into())
    }
}

impl From<bkjs_cache::CacheError> for Refusal {
    fn from(e: bkjs_cache::CacheError) -> Refusal {
        if let bkjs_cache::CacheError::Refused(m) = e {
            return Refusal::bad(m);
        }
        tracing::error!("cache: {e}");
        Refusal(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

fn name(params: &Params) -> Result<String, Refusal> {
    match params.get("name") {
        Some(n) if !n.is_empty() => Ok(n.to_string()),
        _ => Err(Refusal::bad("name is required")),
    }
}

async fn cache(api: &Api, op: &str, params: &Params) -> Option<Reply> {
    let Some(cache) = &api.cache else {
        return Some(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no cache in this process",
        ));
    };
    Some(match run(cache, op, params).await? {
        Ok(v) => ok(v),
        Err(Refusal(status, message)) => error(status, &message),
    })
}

async fn run(cache: &Cache, op: &str, params: &Params) -> Option<Result<Value, Refusal>> {
    Some(match op {
        "init" => cache
            .init()
            .await
            .map(|kind| json!({ "type": kind }))
            .map_err(Refusal::from),
        "stats" => stats(cache).await,
        "keys" => keys(cache, params).await,
        "get" => get(cache, params).await,
        "put" | "set" => put(cache, params).await,
        "incr" => incr(cache, params).await,
        "del" => del(cache, params).await,
        "exists" => exists(cache, params).await,
        "clear" => cache
            .clear()
            .await
            .map(|()| json!({}))
            .map_err(Refusal::from),
        _ => return None,
    })
}

async fn stats(cache: &Cache) -> Result<Value, Refusal> {
    Ok(json!(cache.stats().await?))
}

async fn keys(cache: &Cache, params: &Params) -> Result<Value, Refusal> {
    let keys = cache
        .keys(params.get("name").unwrap_or("").to_string())
        .await?;
    Ok(json!({"count": keys.len(), "data": keys}))
}

/// One name answers `{"value": v}` or `{}` for a miss; several answer one value or null each.
async fn get(cache: &Cache, params: &Params) -> Result<Value, Refusal> {
    let names: Vec<&str> = params
        .pairs()
        .iter()
        .filter(|(n, v)| n == "name" && !v.is_empty())
        .map(|(_, v)| v.as_str())
        .collect();
    Ok(match names[..] {
        [] => return Err(Refusal::bad("name is required")),
        // The common case: one key, read without building a key list.
        [one] => match cache.get_one(one).await {
            Some(v) => json!({ "value": &*v }),
            None => json!({}),
        },
        _ => {
            let values = cache
                .get(names.iter().map(|n| n.to_string()).collect())
                .await;
            json!({ "value": values })
        }
    })
}

async fn put(cache: &Cache, params: &Params) -> Result<Value, Refusal> {
    let key = name(params)?;
    cache
        .put(key, params.get("value").unwrap_or("").to_string())
        .await?;
    Ok(json!({}))
}

async fn incr(cache: &Cache, params: &Params) -> Result<Value, Refusal> {
    let key = name(params)?;
    let delta = match params.get("value").filter(|v| !v.is_empty()) {
        None => 1,
        Some(v) => v
            .trim()
            .parse::<i64>()
            .map_err(|_| Refusal::bad(format!("value must be an integer, not {v:?}")))?,
    };
    Ok(json!({ "value": cache.incr(key, delta).await? }))
}

async fn del(cache: &Cache, params: &Params) -> Result<Value, Refusal> {
    cache.del(name(params)?).await?;
    Ok(json!({}))
}

async fn exists(cache: &Cache, params: &Params) -> Result<Value, Refusal> {
    Ok(json!({ "value": cache.exists(name(params)?).await? }))
}

/// `/system/stats` (JSON) and `/metrics` (Prometheus text): the server's machine-wide view.
pub(crate) async fn machine_stats(
    api: &Api,
    prometheus: bool,
) -> Result<Reply, crate::error::ApiError> {
    use crate::error::ApiError;
    let ipc = api
        .ipc
        .as_ref()
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no server"))?;
    // This worker's latest figures first, so the reply includes the requests just made.
    let _ = ipc
        .request(bkjs_ipc::Request::Metrics {
            pid: std::process::id(),
            snapshot: bkjs_base::metrics::Registry::global().snapshot(),
        })
        .await;
    match ipc
        .request(bkjs_ipc::Request::SystemStats { prometheus })
        .await
    {
        Ok(bkjs_ipc::Reply::Text { text }) => {
            let ct = if prometheus {
                "text/plain; version=0.0.4"
            } else {
                "application/json"
            };
            let mut r = hyper::Response::new(http_body_util::Either::Left(
                http_body_util::Full::new(bytes::Bytes::from(text)),
            ));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(ct),
            );
            Ok(r)
        }
        Ok(other) => Err(ApiError::internal(format!(
            "stats: unexpected reply {other:?}"
        ))),
        Err(e) => {
            tracing::error!("/system/stats: {e}");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                e.to_string(),
            ))
        }
    }
}
