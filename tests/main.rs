//! Integration tests: one binary that starts the real `bkjs` in temporary homes and talks to it
//! over HTTP and signals, like a user would.

mod harness;

mod api;
mod cache;
mod config;
mod console;
mod db;
mod first_run;
mod group_commit;
mod init_app;
mod jobs;
mod jobs_queue;
mod lifecycle;
mod operations;
mod packaging;
mod push;
mod read_path;
mod realtime;
mod rolling;
mod sec_auth;
mod sec_cluster;
mod sec_supervisor;
mod sec_web;
mod security;
mod seed_semantics;
mod shell;
mod single;
mod social;
mod supervision;
mod tls;
