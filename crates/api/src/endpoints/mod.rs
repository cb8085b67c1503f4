//! Built-in endpoint groups, one file each, and their registration: [`builtin`] asks every group
//! to register its routes and hooks. Groups never use each other; what several of them need is
//! in `common`.

pub(crate) mod common;

pub mod account;
mod connection;
mod counter;
mod data;
mod events;
mod file;
mod icon;
mod jobs;
pub mod location;
mod message;
mod status;
mod system;

use bkjs_base::config::{Kind, Param};

/// Parameters of the built-in endpoint groups.
pub static PARAMS: &[Param] = &[
    Param::new(
        "api-status-interval",
        Kind::Duration,
        "15m",
        "an account whose status was put within this long is online (/status/get)",
    ),
    Param::new(
        "api-icon-limit",
        Kind::Map,
        "",
        "how many icons of one prefix an account may keep, by the type being added: TYPE:N,...; * for any type (empty: no limit)",
    ),
];

use crate::api::Routes;

use crate::error::ApiError;

use crate::reply::{Out, Reply};

use crate::route::RouteError;
use serde_json::json;

/// The built-in groups, registered after the application's routes.
pub fn builtin() -> Routes {
    let mut r = Routes::new();
    register(&mut r).expect("the built-in routes are valid");
    r
}

/// Dispatches to a group's handler that answers `None` for a path it does not know.
async fn dispatch(reply: Option<Reply>) -> Result<Out, ApiError> {
    match reply {
        Some(reply) => Ok(Out::Reply(reply)),
        None => Err(ApiError::not_found("Not found")),
    }
}

fn register(r: &mut Routes) -> Result<(), RouteError> {
    r.add(
        "*",
        "/ping",
        "answers {} (open only where allowed)",
        |_req| async { Ok(Out::Json(json!({}))) },
    )?;
    account::register(r)?;
    events::register(r)?;
    jobs::register(r)?;
    r.add(
        "*",
        "/system/restart",
        "admin: rolling restart of the web workers",
        |req| async move { dispatch(system::handle(&req.api, &req.path, &req.params).await).await },
    )?;
    r.add(
        "*",
        "/system/cache/{op}",
        "admin: cache stats|keys|get|put|set|incr|del|exists|clear with name, value",
        |req| async move { dispatch(system::handle(&req.api, &req.path, &req.params).await).await },
    )?;
    r.add(
        "GET",
        "/system/stats",
        "admin: metrics of every worker of this machine (docs/stats.md)",
        |req| async move { system::machine_stats(&req.api, false).await.map(Out::Reply) },
    )?;
    r.add(
        "GET",
        "/system/stats/get",
        "admin: same as /system/stats",
        |req| async move { system::machine_stats(&req.api, false).await.map(Out::Reply) },
    )?;
    r.add(
        "GET",
        "/metrics",
        "admin: /system/stats as Prometheus text",
        |req| async move { system::machine_stats(&req.api, true).await.map(Out::Reply) },
    )?;
    r.add(
        "*",
        "/data/columns",
        "admin: every table's columns",
        |req| async move { dispatch(data::handle(&req.api, &req.path, &req.params).await).await },
    )?;
    r.add(
        "*",
        "/data/{op}/{table}",
        "admin: columns|keys|get|select|search|list|add|put|update|del|incr|replace on TABLE",
        |req| async move { dispatch(data::handle(&req.api, &req.path, &req.params).await).await },
    )?;
    connection::register(r)?;
    counter::register(r)?;
    status::register(r)?;
    message::register(r)?;
    location::register(r)?;
    icon::register(r)?;
    file::register(r)?;
    Ok(())
}
