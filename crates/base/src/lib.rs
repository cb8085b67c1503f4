//! bkjs-base: what every other bkjs crate stands on, and nothing that knows about them.
//!
//! - [`cluster`]: the cluster secret and the signed frames servers exchange over TCP.
//! - [`config`]: the typed parameter registry mechanism and the loader (`etc/config`,
//!   `etc/config.local`, environment, command line). Each upper crate declares its own `PARAMS`;
//!   the application assembles them with [`config::registry`].
//! - [`log`]: logging sinks (stderr, files, syslog) over `tracing`.
//! - [`metrics`]: counters, gauges and histograms, snapshots and the Prometheus text form.
//! - [`sys`]: how a process was started ([`sys::Boot`]), spawning, signalling and reaping children,
//!   dropping privileges.
//! - [`time`]: the platform's clock (milliseconds since the epoch).
//! - [`faults`]: test-only fault switches; [`testing`]: service checks and recorded skips for tests.

#![deny(unsafe_op_in_unsafe_fn, rust_2018_idioms)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod cluster;
pub mod config;
pub mod faults;
pub mod log;
pub mod metrics;
pub mod sys;
pub mod testing;
pub mod time;
