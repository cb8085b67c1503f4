//! The HTTP API served by every web worker: hyper 1.x on the inherited listening socket, with a
//! graceful drain (stop accepting, finish in-flight requests, close idle keep-alive connections,
//! hard deadline), path access rules and JSON replies.
//!
//! This file only declares the modules and re-exports what other crates use. Dependencies between
//! the modules point one way: `error`, `reply`, `params`, `paths`, `hooks`, `auth`, `geo` and
//! `image` use no other module of the crate; `console` (the built-in web console) uses `reply`;
//! `route` (the route table, generic over the request) uses those; `api` (the worker state, the request, `Routes`) uses `route`; `access`,
//! `websocket` and `endpoints` use `api`; `router` uses all of them; `serve` uses `router`. `fuzzing`
//! (the entries of the fuzz targets in `fuzz/`) uses `access`, `auth` and `params`.

#![deny(unsafe_op_in_unsafe_fn, rust_2018_idioms)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod access;
mod api;
pub mod auth;
mod config;
pub mod conn_limit;
mod console;
pub mod endpoints;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod geo;
pub mod hooks;
pub mod image;
pub mod params;
mod paths;
pub mod push;
mod quota;
mod reply;
pub mod route;
mod router;
mod serve;
pub mod tls;
mod websocket;

pub use api::{Api, Req, Routes};
pub use auth::Account;
pub use config::PARAMS;
pub use error::ApiError;
pub use reply::{error_full, Body, Out, Reply};
pub use router::router_hang;
pub use serve::{handshake_timeout, max_headers, serve, H2Limits, Https};
