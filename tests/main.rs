//! Integration tests: one binary that starts the real `bkjs` in temporary homes and talks to it
//! over HTTP and signals, like a user would.

mod harness;

mod cache;
mod config;
mod db;
mod lifecycle;
mod operations;
mod rolling;
mod supervision;
