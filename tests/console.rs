//! The web console end to end: headless Chromium (Debian's chromium and chromium-driver, which
//! `scripts/setup` installs) driven over WebDriver by tests/console.py opens `/api.html` from a
//! tree started as a newcomer would (`./scripts/run-backend` with no argument, so the home is
//! the default `~/.bkjs`, under a temporary `HOME`; the port comes from `BKJS_PORT` so that tests
//! can run side by side, `BKJS_BIN` the binary under test; the console is the copy built into
//! the binary), checks its signer against the test vectors of docs/auth.md and tests/sign.py, adds an account,
//! signs in and gets it (plain and scrambled secrets), and saves a screenshot.

use crate::harness::*;
use std::path::Path;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/console.py");
const RUN_BACKEND: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/run-backend");

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
    let home = tempfile::Builder::new()
        .prefix("bkjs-t")
        .tempdir()
        .expect("HOME");
    let user_home = home.path().to_path_buf();
    let t = Tree::spawn_in(home, free_port(), "run-backend", &[], |cmd| {
        let port = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .skip_while(|a| a != "-port")
            .nth(1)
            .expect("the harness's port");
        let (mut c, _) = command_of(Path::new("bash"), &user_home, &[RUN_BACKEND.to_string()]);
        // The binary under test, not a build of the script's own (scripts/bkjs).
        c.env("HOME", &user_home)
            .env("BKJS_BIN", BIN)
            .env("BKJS_PORT", port)
            .env("BKJS_BIND", "127.0.0.1");
        *cmd = c;
    });
    let ready = wait_for(std::time::Duration::from_secs(60), || {
        t.get("/api.html").status == 200
    });
    assert!(
        ready,
        "scripts/run-backend never served /api.html:\n{}",
        t.log()
    );
    let bkjs_home = t.home.path().join(".bkjs");
    assert!(
        bkjs_home.join("etc").is_dir(),
        "the default home is ~/.bkjs"
    );
    assert!(
        !bkjs_home.join("web/api.html").exists(),
        "the console must come from the binary, not from files in the home"
    );
    assert_ne!(t.get("/ping").status, 200, "/ping stays closed by default");
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
