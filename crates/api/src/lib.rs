//! The HTTP API served by every web worker: hyper 1.x on the inherited listening socket, with a
//! graceful drain (stop accepting, finish in-flight requests, close idle keep-alive connections,
//! hard deadline), path access rules and JSON replies.

#![deny(unsafe_op_in_unsafe_fn, rust_2018_idioms)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod access;
pub mod api;
pub mod auth;
mod config;
pub mod endpoints;
pub mod error;
pub mod geo;
pub mod hooks;
pub mod image;
pub mod params;
mod paths;
pub mod reply;
pub mod route;
mod router;
mod serve;
pub mod websocket;

pub use api::{Api, Req, Routes};
pub use auth::Account;
pub use config::PARAMS;
pub use error::ApiError;
pub use reply::{error_full, Out, Reply};
pub use router::router_hang;
pub use serve::serve;
