//! Test-only fault switches, in one place every crate can see.
//!
//! A debug build started with `BKJS_TEST_FAULTS=1` accepts requests that break things on purpose
//! (hang a worker, drop a peer broadcast, fail a job), so the integration tests can prove the
//! recovery paths. Release builds compile every switch to `false`.

/// True in a debug build started with `BKJS_TEST_FAULTS=1`.
pub fn enabled() -> bool {
    cfg!(debug_assertions) && std::env::var("BKJS_TEST_FAULTS").as_deref() == Ok("1")
}
