//! Support for tests that need something outside the process: a database server, a broker, root.
//!
//! Outside CI such a test may skip when the service is missing; it then says so on stderr and
//! appends the reason to the file named by `BKJS_SKIP_LOG`, which `scripts/test` counts and
//! prints at the end of the run, so a skip is never silent. Under `CI=true` a missing service
//! fails the test instead.

use std::io::Write;
use std::time::Duration;

/// Records that the calling test skipped, and why.
pub fn skip(reason: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    eprintln!("skipped: {test}: {reason}");
    if let Ok(path) = std::env::var("BKJS_SKIP_LOG") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{test}: {reason}");
        }
    }
}

/// True when something accepts TCP connections on 127.0.0.1:`port`. When nothing does, the test
/// fails under `CI=true`; elsewhere the skip is recorded ([`skip`]) and this returns false.
pub fn service_up(port: u16, what: &str) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    if std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
        return true;
    }
    required(&format!("{what} is not running on 127.0.0.1:{port}"));
    false
}

/// A test cannot run here because of `why`: a failure under `CI=true`, a recorded skip
/// elsewhere.
pub fn required(why: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why} (required under CI=true)");
    }
    skip(why);
}
