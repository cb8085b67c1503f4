//! The web console end to end: headless Chromium (Debian's chromium and chromium-driver, which
//! `scripts/setup` installs) driven over WebDriver by tests/console.py opens `/api.html` from a
//! tree started as a newcomer would (`bkjs run-backend`, a fresh home, no flag: the console is
//! the copy built into the binary), checks its signer against the test vectors of docs/auth.md and tests/sign.py, adds an account,
//! signs in and gets it (plain and scrambled secrets), and saves a screenshot.

use crate::harness::*;
use std::path::Path;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/console.py");

#[test]
fn console_signs_in_adds_an_account_and_gets_it_in_chromium() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let driver = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
    if !Path::new(&chromium).exists() || !Path::new(&driver).exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{chromium} or {driver} is missing: run scripts/setup (apt-get install chromium chromium-driver)"
        );
        eprintln!("SKIPPED: {chromium} or {driver} is missing (scripts/setup installs them)");
        return;
    }
    let t = Tree::start_plain("run-backend", &[]);
    t.ready_at("/api.html");
    assert!(
        !t.home.path().join("web/api.html").exists(),
        "the console must come from the binary, not from files in the home"
    );
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console.png");
    let _ = std::fs::remove_file(&shot);
    let out = std::process::Command::new("python3")
        .arg(SCRIPT)
        .arg(t.url(""))
        .arg(&shot)
        .env("CHROMIUM", &chromium)
        .env("CHROMEDRIVER", &driver)
        .output()
        .expect("python3 tests/console.py");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).expect("screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        png.len() > 10_000,
        "a real page, not a blank image: {} bytes",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());
}
