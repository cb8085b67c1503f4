//! bkjs: a supervised, multi-process web backend in one binary.
//!
//! An application is a Rust binary that calls [`run`] with its [`App`]; the same binary becomes
//! whichever role it is started as (monitor, master, server, web worker, shell), so an
//! application's routes and parameters exist in every process without any registration protocol.
//! Modules, one concern each: [`config`], [`process`], [`ipc`], [`api`], [`log`], [`metrics`],
//! [`msg`] (pub/sub), [`jobs`], `shell`, `doc`, [`app`].

#![deny(unsafe_op_in_unsafe_fn, rust_2018_idioms)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod app;
mod cli;
pub(crate) mod doc;
mod init_app;
pub(crate) mod shell;

pub use bkjs_api as api;
pub use bkjs_api::{geo, image};
pub use bkjs_base::{cluster, config, faults, log, metrics, sys, testing, time};
pub use bkjs_cache as cache;
pub use bkjs_db as db;
pub use bkjs_ipc as ipc;
pub use bkjs_jobs as jobs;
pub use bkjs_msg as msg;
pub use bkjs_process as process;

pub use app::{run, shell_main, App};
pub use sys::Boot;
